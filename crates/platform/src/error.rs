//! One error type for every client-visible failure, and its one mapping to `tonic::Status`.
//!
//! Each status carries `google.rpc.ErrorInfo` with a stable machine-readable `reason`
//! (e.g. `insufficient_funds`) and, for bad input, `google.rpc.BadRequest` field violations.
//! The gateway turns both into the HTTP JSON error body.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `domain` of every ErrorInfo this API emits.
pub const ERROR_DOMAIN: &str = "transactions.api";

/// A client-visible error: gRPC code, stable reason, human message, optional field violations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ApiError {
    pub code: Code,
    pub reason: &'static str,
    pub message: String,
    pub field_violations: Vec<FieldViolation>,
    pub retry_after_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl ApiError {
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            field_violations: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// INVALID_ARGUMENT for one field.
    pub fn invalid_field(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        Self::new(
            Code::InvalidArgument,
            "invalid_argument",
            format!("{field}: {description}"),
        )
        .with_violation(field, description)
    }

    pub fn with_violation(mut self, field: &str, description: impl Into<String>) -> Self {
        self.field_violations.push(FieldViolation {
            field: field.to_owned(),
            description: description.into(),
        });
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, reason, message)
    }

    pub fn permission_denied(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, reason, message)
    }

    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, reason, message)
    }

    pub fn already_exists(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, reason, message)
    }

    pub fn failed_precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, reason, message)
    }

    pub fn unavailable(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, reason, message)
    }

    /// An unexpected failure. The cause is logged here; the client sees only a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(Code::Internal, "internal", "internal error")
    }

    pub fn into_status(self) -> Status {
        let mut details = ErrorDetails::with_error_info(self.reason, ERROR_DOMAIN, []);
        if !self.field_violations.is_empty() {
            details.set_bad_request(
                self.field_violations
                    .into_iter()
                    .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            details.set_retry_info(Some(std::time::Duration::from_secs(secs)));
        }
        Status::with_error_details(self.code, self.message, details)
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        e.into_status()
    }
}

/// The stable reason carried by a status, if any.
pub fn reason_of(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|i| i.reason)
}

/// Database errors no client can cause: logged, answered as INTERNAL (or UNAVAILABLE when the
/// pool cannot hand out a connection or the server ended the session, which a retry may cure).
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // (also a session the server ended, by a shutdown, a crash or an administrator: not the
        // client's fault and not a bug; the database is going away)
        match e {
            e if matches!(
                e,
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
            ) || crate::db::ended_by_server(&e) =>
            {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable(
                    "database_unavailable",
                    "the database is unavailable; retry later",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_reason_and_field_violations() {
        let status =
            ApiError::invalid_field("username", "must match ^[a-z0-9_]{3,32}$").into_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(reason_of(&status).as_deref(), Some("invalid_argument"));
        let bad = status
            .get_details_bad_request()
            .expect("bad request details");
        assert_eq!(bad.field_violations[0].field, "username");
    }

    #[test]
    fn internal_errors_hide_the_cause() {
        let status = ApiError::internal("password column missing").into_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("password"));
    }
}
