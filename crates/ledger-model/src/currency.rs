use std::{collections::BTreeSet, fmt};

use platform::ApiError;
use tonic::Code;

/// The currencies accounts may be opened in and money may move in when none are configured.
pub fn default_currencies() -> Vec<String> {
    ["USD", "EUR", "GBP", "CAD", "JPY"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// An ISO 4217 code from the configured list, uppercase.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency(String);

impl Currency {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The configured currencies; the only way to make a [`Currency`].
#[derive(Debug, Clone)]
pub struct Currencies(BTreeSet<String>);

impl Currencies {
    /// From config: each entry must be three ASCII letters (any case). At least one.
    pub fn from_config(list: &[String]) -> anyhow::Result<Self> {
        let mut set = BTreeSet::new();
        for code in list {
            let code = code.trim().to_ascii_uppercase();
            anyhow::ensure!(
                code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()),
                "currencies: `{code}` is not an ISO 4217 code (three letters)"
            );
            set.insert(code);
        }
        anyhow::ensure!(!set.is_empty(), "currencies: configure at least one");
        Ok(Self(set))
    }

    /// Accepts any case; unknown or malformed → INVALID_ARGUMENT `unsupported_currency`.
    pub fn parse(&self, input: &str, field: &str) -> Result<Currency, ApiError> {
        let code = input.trim().to_ascii_uppercase();
        if self.0.contains(&code) {
            return Ok(Currency(code));
        }
        let supported = self.0.iter().cloned().collect::<Vec<_>>().join(", ");
        let description = if input.trim().is_empty() {
            format!("required; one of {supported}")
        } else {
            format!("`{}` is not supported; one of {supported}", input.trim())
        };
        Err(ApiError::new(
            Code::InvalidArgument,
            "unsupported_currency",
            format!("{field}: {description}"),
        )
        .with_violation(field, description))
    }

    pub fn iter(&self) -> impl Iterator<Item = Currency> + '_ {
        self.0.iter().cloned().map(Currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Currencies {
        Currencies::from_config(&["usd".into(), "EUR".into()]).unwrap()
    }

    #[test]
    fn any_case_in_uppercase_out() {
        assert_eq!(list().parse(" usd ", "currency").unwrap().as_str(), "USD");
        assert_eq!(list().parse("Eur", "currency").unwrap().as_str(), "EUR");
    }

    #[test]
    fn unknown_or_empty_is_unsupported_currency() {
        for bad in ["GBP", "", "US", "usdd"] {
            let err = list().parse(bad, "currency").unwrap_err();
            assert_eq!(
                (err.code, err.reason),
                (Code::InvalidArgument, "unsupported_currency")
            );
        }
    }

    #[test]
    fn config_rejects_non_codes() {
        assert!(Currencies::from_config(&["US1".into()]).is_err());
        assert!(Currencies::from_config(&[]).is_err());
    }
}
