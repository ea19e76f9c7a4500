//! Cursor pagination: newest first, the token is the last id of the previous page, opaque to
//! clients (base64url of `v1:<id>`) so the encoding can change without breaking them.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use platform::ApiError;
use tonic::Code;

/// Rows per page: 0 means the default; above the maximum is lowered to it (AIP-158).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    pub const DEFAULT: u32 = 20;
    pub const MAX: u32 = 100;

    pub fn parse(page_size: i32) -> Result<Self, ApiError> {
        match page_size {
            n if n < 0 => Err(ApiError::invalid_field("page_size", "must not be negative")),
            0 => Ok(Self(Self::DEFAULT)),
            n => Ok(Self((n as u32).min(Self::MAX))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch_limit(self) -> i64 {
        i64::from(self.0) + 1
    }
}

/// Where a page starts: strictly below this id. `None` = from the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken(Option<i64>);

impl PageToken {
    pub fn parse(token: &str) -> Result<Self, ApiError> {
        let token = token.trim();
        if token.is_empty() {
            return Ok(Self(None));
        }
        let invalid = || {
            ApiError::new(
                Code::InvalidArgument,
                "invalid_page_token",
                "page_token: not a token this API returned",
            )
            .with_violation("page_token", "not a token this API returned")
        };
        let bytes = B64.decode(token).map_err(|_| invalid())?;
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
        let id = text
            .strip_prefix("v1:")
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(invalid)?;
        Ok(Self(Some(id)))
    }

    /// The id to continue below, as a bind parameter (`NULL` = from the newest).
    pub fn before_id(self) -> Option<i64> {
        self.0
    }

    /// The next page's token for a page whose last (oldest) row has `last_id`.
    pub fn encode(last_id: i64) -> String {
        B64.encode(format!("v1:{last_id}"))
    }

    /// Trims a fetched page (`fetch_limit` rows) to `size` and returns the next page's token.
    pub fn paginate<T>(rows: &mut Vec<T>, size: PageSize, id: impl Fn(&T) -> i64) -> String {
        if rows.len() > size.get() as usize {
            rows.truncate(size.get() as usize);
            rows.last().map(|r| Self::encode(id(r))).unwrap_or_default()
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_is_capped() {
        assert_eq!(PageSize::parse(0).unwrap().get(), 20);
        assert_eq!(PageSize::parse(7).unwrap().get(), 7);
        assert_eq!(PageSize::parse(1000).unwrap().get(), 100);
        assert!(PageSize::parse(-1).is_err());
    }

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let token = PageToken::encode(42);
        assert_eq!(PageToken::parse(&token).unwrap().before_id(), Some(42));
        assert_eq!(PageToken::parse("").unwrap().before_id(), None);
        for bad in ["%%%", "bm9wZQ", &B64.encode("v1:-3"), &B64.encode("v2:3")] {
            assert_eq!(
                PageToken::parse(bad).unwrap_err().reason,
                "invalid_page_token"
            );
        }
    }

    #[test]
    fn paginate_trims_the_extra_row() {
        let size = PageSize::parse(2).unwrap();
        let mut rows = vec![9, 8, 7];
        let next = PageToken::paginate(&mut rows, size, |r| *r);
        assert_eq!(rows, vec![9, 8]);
        assert_eq!(PageToken::parse(&next).unwrap().before_id(), Some(8));
        let mut rows = vec![9, 8];
        assert_eq!(PageToken::paginate(&mut rows, size, |r| *r), "");
    }
}
