//! Everything that can go wrong in auth, and its one mapping to a client-visible [`ApiError`].

use platform::ApiError;
use tonic::Code;

use super::types::Violation;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid input")]
    Invalid(Vec<Violation>),
    #[error("username taken")]
    UsernameTaken,
    #[error("email taken")]
    EmailTaken,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many failed attempts")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("unknown refresh token")]
    RefreshTokenUnknown,
    #[error("refresh token reused")]
    RefreshTokenReused,
    /// Presented again within the retry window, but the first renew's answer cannot be had.
    #[error("refresh token just renewed")]
    RefreshTokenJustRenewed,
    #[error("session blocked")]
    SessionBlocked,
    #[error("session expired")]
    SessionExpired,
    #[error("user not found")]
    UserNotFound,
    #[error("not allowed")]
    Forbidden,
    /// The password confirming a self-deletion is not the user's.
    #[error("wrong password")]
    WrongPassword,
    /// A banker asked to delete another banker (the operator's job).
    #[error("bankers are not deleted through the API")]
    BankerNotDeletable,
    #[error("verification not found")]
    VerificationNotFound,
    #[error("verification expired")]
    VerificationExpired,
    #[error("verification used")]
    VerificationUsed,
    #[error("verification superseded")]
    VerificationSuperseded,
    #[error("already verified")]
    AlreadyVerified,
    /// An error already in client form (e.g. from `platform::caller::authenticate`).
    #[error("{0}")]
    Api(ApiError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl AuthError {
    pub fn invalid(v: Violation) -> Self {
        Self::Invalid(vec![v])
    }

    /// A unique violation named by its constraint (never by the database's message text).
    pub fn from_insert_user(e: sqlx::Error) -> Self {
        match constraint_of(&e) {
            Some("users_pkey") => Self::UsernameTaken,
            Some("users_email_key") => Self::EmailTaken,
            _ => Self::Db(e),
        }
    }
}

fn constraint_of(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => db.constraint(),
        _ => None,
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        use AuthError::*;
        match e {
            Invalid(violations) => {
                let msg = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                violations.into_iter().fold(
                    ApiError::new(Code::InvalidArgument, "invalid_argument", msg),
                    |err, v| err.with_violation(v.field, v.description),
                )
            }
            UsernameTaken => ApiError::already_exists("username_taken", "username already taken")
                .with_violation("username", "already taken"),
            EmailTaken => {
                ApiError::already_exists("email_taken", "email address already registered")
                    .with_violation("email", "already registered")
            }
            InvalidCredentials => {
                ApiError::unauthenticated("invalid_credentials", "wrong username or password")
            }
            TooManyAttempts { retry_after_secs } => ApiError::new(
                Code::ResourceExhausted,
                "too_many_attempts",
                format!("too many failed logins; retry in {retry_after_secs} s"),
            )
            .with_retry_after(retry_after_secs),
            TooManyRequests { retry_after_secs } => ApiError::new(
                Code::ResourceExhausted,
                "too_many_requests",
                format!("too many requests; retry in {retry_after_secs} s"),
            )
            .with_retry_after(retry_after_secs),
            RefreshTokenUnknown => {
                ApiError::unauthenticated("refresh_token_unknown", "unknown refresh token")
            }
            RefreshTokenReused => ApiError::unauthenticated(
                "refresh_token_reused",
                "this refresh token was already used; the session is revoked, log in again",
            ),
            RefreshTokenJustRenewed => ApiError::unauthenticated(
                "refresh_token_just_renewed",
                "this refresh token was renewed moments ago and that answer cannot be given \
                 again; use the tokens it returned, or log in again",
            ),
            SessionBlocked => ApiError::unauthenticated(
                "session_blocked",
                "the session has been revoked; log in again",
            ),
            SessionExpired => ApiError::unauthenticated(
                "session_expired",
                "the session has expired; log in again",
            ),
            UserNotFound => ApiError::not_found("user_not_found", "no such user"),
            Forbidden => ApiError::permission_denied(
                "forbidden",
                "a depositor may only read, update and delete themself",
            ),
            WrongPassword => ApiError::permission_denied(
                "wrong_password",
                "the password does not match; the user was not deleted",
            )
            .with_violation("password", "does not match"),
            BankerNotDeletable => ApiError::permission_denied(
                "banker_not_deletable",
                "a banker is removed by the operator, not through the API",
            ),
            VerificationNotFound => ApiError::not_found(
                "verification_not_found",
                "no verification with this id and code",
            ),
            VerificationExpired => ApiError::failed_precondition(
                "verification_expired",
                "the verification link has expired; request a new one",
            ),
            VerificationUsed => ApiError::failed_precondition(
                "verification_used",
                "the verification link was already used",
            ),
            VerificationSuperseded => ApiError::failed_precondition(
                "verification_superseded",
                "the email address was changed since this link was sent",
            ),
            AlreadyVerified => ApiError::failed_precondition(
                "already_verified",
                "the email address is already verified",
            ),
            Api(e) => e,
            Db(e) => ApiError::from(e),
            Internal(msg) => ApiError::internal(msg),
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        ApiError::from(e).into_status()
    }
}
