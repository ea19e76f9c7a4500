//! Parse, don't validate: the only way to get one of these is `parse`, so code that holds one
//! never checks it again.

use std::fmt;

/// A field that failed to parse: (field name, what is wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: &'static str,
    pub description: String,
}

impl Violation {
    pub fn new(field: &'static str, description: impl Into<String>) -> Self {
        Self {
            field,
            description: description.into(),
        }
    }
}

/// `^[a-z0-9_]{3,32}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Self, Violation> {
        let ok = (3..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Violation::new(
                "username",
                "3 to 32 of lowercase letters, digits and underscore",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 1 to 100 printable characters (any script: "Zoë O'Neil-Smith"); surrounding spaces trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    pub fn parse(s: &str) -> Result<Self, Violation> {
        let s = s.trim();
        let n = s.chars().count();
        if n == 0 || n > 100 {
            return Err(Violation::new("full_name", "1 to 100 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(Violation::new(
                "full_name",
                "must not contain control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A syntactically valid address (RFC 5322 addr-spec via `email_address`) whose domain has a dot,
/// at most 254 characters. Case is kept; uniqueness is case-insensitive (in SQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, Violation> {
        let s = s.trim();
        let bad = || Violation::new("email", "must be a valid email address");
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let addr: email_address::EmailAddress = s.parse().map_err(|_| bad())?;
        let domain = addr.domain();
        // "user@localhost" and "user@[10.0.0.1]" are valid addr-specs but not deliverable here.
        if !domain.contains('.')
            || domain.starts_with('[')
            || domain.ends_with('.')
            || !addr.display_part().is_empty()
        {
            return Err(bad());
        }
        Ok(Self(addr.email().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// 8 to 128 characters. Never logged: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn parse(s: &str) -> Result<Self, Violation> {
        let n = s.chars().count();
        if (8..=128).contains(&n) {
            Ok(Self(s.to_owned()))
        } else {
            Err(Violation::new("password", "8 to 128 characters"))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_pattern() {
        for ok in ["abc", "a_1", &"x".repeat(32)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "Abc", "a-b", "a b", "", &"x".repeat(33), "zoë"] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn full_names_allow_any_script_but_not_control_characters() {
        assert_eq!(
            FullName::parse("  Zoë O'Neil-Smith ").unwrap().as_str(),
            "Zoë O'Neil-Smith"
        );
        assert!(FullName::parse("李小龍").is_ok());
        assert!(FullName::parse(&"é".repeat(100)).is_ok());
        assert!(FullName::parse(&"é".repeat(101)).is_err());
        assert!(FullName::parse("   ").is_err());
        assert!(FullName::parse("a\nb").is_err());
    }

    #[test]
    fn emails_must_be_real_addresses() {
        assert!(Email::parse("zoe@example.com").is_ok());
        assert!(Email::parse("Zoe.O+bank@mail.example.co.uk").is_ok());
        for bad in [
            "",
            "zoe",
            "zoe@",
            "@example.com",
            "zoe@localhost",
            "zoe@example..com",
            "zoe @example.com",
            "Zoe <zoe@example.com>",
            "zoe@[127.0.0.1]",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_8_to_128_characters_and_hidden_in_debug() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"ü".repeat(128)).is_ok());
        assert!(Password::parse(&"a".repeat(129)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("secret-pw").unwrap()),
            "Password(***)"
        );
    }
}
