//! What a client attaches to a money movement: a short description and a bounded map of
//! key → value (its order id, an invoice number), stored with the transfer, returned in every
//! read, part of the idempotency digest, and searchable by one key and value.

use std::collections::{BTreeMap, HashMap};

use platform::ApiError;

use crate::config::MetadataConfig;

/// A parsed description and metadata, within the configured limits (`metadata.*`). Empty
/// metadata and no description are stored as NULL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memo {
    pub description: Option<String>,
    /// Sorted by key, so the digest does not depend on the order a client sent them in.
    pub metadata: BTreeMap<String, String>,
}

impl Memo {
    /// Checks the description and metadata of a request against the limits; each breach is a
    /// field violation (`description`, `metadata`, `metadata[KEY]`).
    pub fn parse(
        description: &str,
        metadata: &HashMap<String, String>,
        limits: &MetadataConfig,
    ) -> Result<Self, ApiError> {
        let description = match description {
            "" => None,
            text => {
                platform::text::reject_control_chars("description", text)?;
                if text.chars().count() > limits.max_description_chars {
                    return Err(ApiError::invalid_field(
                        "description",
                        format!("at most {} characters", limits.max_description_chars),
                    ));
                }
                Some(text.to_owned())
            }
        };
        if metadata.len() > limits.max_keys {
            return Err(ApiError::invalid_field(
                "metadata",
                format!("at most {} keys", limits.max_keys),
            ));
        }
        let mut sorted = BTreeMap::new();
        for (key, value) in metadata {
            let field = format!("metadata[{key:?}]");
            platform::text::reject_control_chars("metadata", key)?;
            platform::text::reject_control_chars(&field, value)?;
            let key_chars = key.chars().count();
            if key_chars == 0 || key_chars > limits.max_key_chars {
                return Err(ApiError::invalid_field(
                    "metadata",
                    format!("keys are 1 to {} characters", limits.max_key_chars),
                ));
            }
            if value.chars().count() > limits.max_value_chars {
                return Err(ApiError::invalid_field(
                    &field,
                    format!("at most {} characters", limits.max_value_chars),
                ));
            }
            sorted.insert(key.clone(), value.clone());
        }
        Ok(Self {
            description,
            metadata: sorted,
        })
    }

    /// The metadata as stored: a JSON object, or NULL when there is none.
    pub fn metadata_json(&self) -> Option<serde_json::Value> {
        (!self.metadata.is_empty()).then(|| {
            serde_json::Value::Object(
                self.metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
            )
        })
    }

    /// What the digest covers: empty when there is nothing, so requests without a description
    /// or metadata keep the digest they had before either existed (stored keys still replay).
    pub fn digest_part(&self) -> String {
        if self.description.is_none() && self.metadata.is_empty() {
            return String::new();
        }
        // JSON strings quote and escape, so no two memos share a canonical form
        let description = serde_json::to_string(&self.description).unwrap_or_default();
        let metadata = serde_json::to_string(&self.metadata).unwrap_or_default();
        format!("\u{1f}memo\u{1f}{description}\u{1f}{metadata}")
    }
}

/// Stored metadata back as a map (a NULL or anything but an object of strings: empty; the
/// column's CHECK and the batch function write only objects of strings).
pub fn metadata_from_json(value: Option<&serde_json::Value>) -> HashMap<String, String> {
    match value {
        Some(serde_json::Value::Object(map)) => map
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect(),
        _ => HashMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> MetadataConfig {
        MetadataConfig {
            max_keys: 2,
            max_key_chars: 5,
            max_value_chars: 6,
            max_description_chars: 8,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_limit_is_a_field_violation_naming_the_field() {
        let field = |r: Result<Memo, ApiError>| r.unwrap_err().field_violations[0].field.clone();
        assert_eq!(
            field(Memo::parse("123456789", &map(&[]), &limits())),
            "description"
        );
        assert_eq!(
            field(Memo::parse(
                "",
                &map(&[("a", "1"), ("b", "2"), ("c", "3")]),
                &limits()
            )),
            "metadata"
        );
        assert_eq!(
            field(Memo::parse("", &map(&[("toolong", "1")]), &limits())),
            "metadata"
        );
        assert_eq!(
            field(Memo::parse("", &map(&[("", "1")]), &limits())),
            "metadata"
        );
        assert_eq!(
            field(Memo::parse("", &map(&[("k", "1234567")]), &limits())),
            "metadata[\"k\"]"
        );
        let control = Memo::parse("", &map(&[("k", "a\u{0}")]), &limits()).unwrap_err();
        assert_eq!(control.reason, platform::text::INVALID_TEXT);
        let ok = Memo::parse("rent", &map(&[("k", "123456"), ("order", "")]), &limits()).unwrap();
        assert_eq!(ok.description.as_deref(), Some("rent"));
        assert_eq!(ok.metadata.len(), 2);
    }

    #[test]
    fn the_digest_part_is_empty_without_a_memo_and_tells_memos_apart() {
        assert_eq!(Memo::default().digest_part(), "");
        let parts: Vec<String> = [
            ("", map(&[("a", "b")])),
            ("", map(&[("a", "b"), ("c", "d")])),
            ("", map(&[("ab", "")])),
            ("a", map(&[])),
            ("a", map(&[("a", "b")])),
        ]
        .iter()
        .map(|(d, m)| Memo::parse(d, m, &limits()).unwrap().digest_part())
        .collect();
        for (i, a) in parts.iter().enumerate() {
            assert_ne!(a, "");
            for b in &parts[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
