//! The free-text inputs of the accounts API, parsed once ("parse, don't validate").

use platform::{ApiError, Caller};

/// Longest freeze/unfreeze reason kept.
const REASON_MAX_CHARS: usize = 200;
/// Longest owner filter accepted (usernames are at most 32 characters).
const OWNER_MAX_CHARS: usize = 64;

/// Why a banker froze or unfroze an account: trimmed, at most 200 characters; required to
/// freeze, optional to unfreeze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReason(String);

impl StatusReason {
    pub fn parse(text: &str, required: bool) -> Result<Self, ApiError> {
        platform::text::reject_control_chars("reason", text)?;
        let text = text.trim();
        if required && text.is_empty() {
            return Err(ApiError::invalid_field("reason", "required"));
        }
        if text.chars().count() > REASON_MAX_CHARS {
            return Err(ApiError::invalid_field(
                "reason",
                format!("at most {REASON_MAX_CHARS} characters"),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StatusReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whose accounts to list: the caller's own (empty filter or their name), by their user id, or
/// (bankers only) those opened under a username, by any user who had that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Caller(uuid::Uuid),
    Username(String),
}

impl Owner {
    pub fn parse(filter: &str, caller: &Caller) -> Result<Self, ApiError> {
        platform::text::reject_control_chars("owner", filter)?;
        let owner = filter.trim();
        if owner.is_empty() || owner == caller.username {
            return Ok(Self::Caller(caller.user_id));
        }
        caller.require_banker()?;
        if owner.chars().count() > OWNER_MAX_CHARS {
            return Err(ApiError::invalid_field(
                "owner",
                format!("at most {OWNER_MAX_CHARS} characters"),
            ));
        }
        Ok(Self::Username(owner.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freeze_needs_a_short_reason_an_unfreeze_may_omit_it() {
        assert!(StatusReason::parse("  ", true).is_err());
        assert_eq!(StatusReason::parse("  ", false).unwrap().as_str(), "");
        assert_eq!(
            StatusReason::parse(" fraud ", true).unwrap().as_str(),
            "fraud"
        );
        assert!(StatusReason::parse(&"x".repeat(201), false).is_err());
        assert_eq!(
            StatusReason::parse("fraud\u{0}", true).unwrap_err().reason,
            "invalid_text",
            "PostgreSQL refuses NUL in text: a 400, never a 500"
        );
    }
}
