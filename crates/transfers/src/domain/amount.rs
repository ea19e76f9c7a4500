use platform::ApiError;
use tonic::Code;

/// A positive amount in minor units, at most the configured per-transfer limit.
/// The ledger function checks the same bounds again (pair assertion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(i64);

impl Amount {
    pub fn parse(minor_units: i64, max: i64) -> Result<Self, ApiError> {
        if minor_units <= 0 {
            return Err(ApiError::new(
                Code::InvalidArgument,
                "invalid_amount",
                "amount: must be a positive number of minor units",
            )
            .with_violation("amount", "must be > 0"));
        }
        if minor_units > max {
            return Err(ApiError::new(
                Code::InvalidArgument,
                "amount_over_limit",
                format!("amount: at most {max} minor units per transfer"),
            )
            .with_violation("amount", format!("must be <= {max}")));
        }
        Ok(Self(minor_units))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_amounts_up_to_the_limit_parse() {
        assert_eq!(Amount::parse(1, 10).unwrap().get(), 1);
        assert_eq!(Amount::parse(10, 10).unwrap().get(), 10);
        assert_eq!(Amount::parse(0, 10).unwrap_err().reason, "invalid_amount");
        assert_eq!(Amount::parse(-5, 10).unwrap_err().reason, "invalid_amount");
        assert_eq!(
            Amount::parse(11, 10).unwrap_err().reason,
            "amount_over_limit"
        );
    }
}
