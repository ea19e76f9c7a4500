use platform::ApiError;

/// A syntactically valid account id (positive). Whether it exists is the database's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(i64);

impl AccountId {
    /// `field` names the request field in the error.
    pub fn parse(id: i64, field: &str) -> Result<Self, ApiError> {
        if id > 0 {
            Ok(Self(id))
        } else {
            Err(ApiError::invalid_field(
                field,
                "must be a positive account id",
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_positive_ids_parse() {
        assert_eq!(AccountId::parse(7, "id").unwrap().get(), 7);
        assert!(AccountId::parse(0, "id").is_err());
        assert!(AccountId::parse(-1, "id").is_err());
    }
}
