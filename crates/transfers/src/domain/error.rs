use platform::ApiError;

/// Why a money movement was refused. The ledger function raises SQLSTATE `LD000` with the
/// reason as its message; [`LedgerError::from_db`] turns that back into one of these.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("account_not_found")]
    AccountNotFound,
    #[error("not_account_owner")]
    NotAccountOwner,
    #[error("same_account")]
    SameAccount,
    #[error("currency_mismatch")]
    CurrencyMismatch,
    #[error("account_frozen")]
    AccountFrozen,
    #[error("insufficient_funds")]
    InsufficientFunds,
    #[error("amount_over_limit")]
    AmountOverLimit,
    #[error("invalid_amount")]
    InvalidAmount,
    #[error("idempotency_key_reused")]
    IdempotencyKeyReused,
    /// Two requests with one key got past the per-key lock (should not happen): the key's
    /// primary key refused the second. Retrying replays the first.
    #[error("idempotency_conflict")]
    IdempotencyConflict,
    /// A deadlock or serialisation failure. The ordered locking makes this unexpected; it is
    /// still safe to retry.
    #[error("conflict")]
    Conflict,
    /// The batch queue is full: refused at once instead of queueing without end.
    #[error("transfer_queue_full")]
    QueueFull,
    /// The request's deadline passed while it waited in the queue; it was not applied.
    #[error("deadline_exceeded")]
    DeadlineExceeded,
    /// The batcher is gone (the service is shutting down); nothing was applied.
    #[error("ledger_unavailable")]
    Unavailable,
    /// The connection failed while a batch was in flight, so whether it committed is unknown.
    /// Requests with an idempotency key are retried automatically; others get this answer.
    #[error("outcome_unknown")]
    OutcomeUnknown,
    #[error(transparent)]
    Database(sqlx::Error),
    /// The database answered something that breaks a ledger invariant.
    #[error("ledger invariant broken: {0}")]
    Invariant(String),
}

/// SQLSTATE of the ledger function's business failures.
pub const LEDGER_SQLSTATE: &str = "LD000";

impl LedgerError {
    pub fn from_db(e: sqlx::Error) -> Self {
        let Some(db) = e.as_database_error() else {
            return Self::Database(e);
        };
        match db.code().as_deref() {
            Some(LEDGER_SQLSTATE) => Self::from_reason(db.message()),
            // unique_violation on ledger.idempotency_keys' primary key
            Some("23505") if db.constraint() == Some("idempotency_keys_pkey") => {
                Self::IdempotencyConflict
            }
            Some("40P01" | "40001") => Self::Conflict,
            _ => Self::Database(e),
        }
    }

    /// A business failure reported by the ledger's SQL by its reason.
    pub fn from_reason(reason: &str) -> Self {
        match reason {
            "account_not_found" => Self::AccountNotFound,
            "not_account_owner" => Self::NotAccountOwner,
            "same_account" => Self::SameAccount,
            "currency_mismatch" => Self::CurrencyMismatch,
            "account_frozen" => Self::AccountFrozen,
            "insufficient_funds" => Self::InsufficientFunds,
            "amount_over_limit" => Self::AmountOverLimit,
            "invalid_amount" => Self::InvalidAmount,
            "idempotency_key_reused" => Self::IdempotencyKeyReused,
            other => Self::Invariant(format!("unknown ledger failure `{other}`")),
        }
    }

    /// True when the failed call certainly moved no money: the database reported the error (so
    /// the statement, and with it its implicit transaction, was rolled back) or no connection
    /// was ever used. False when a connection broke mid-call and a commit may have happened.
    pub fn certainly_not_applied(&self) -> bool {
        match self {
            Self::Database(e) => {
                e.as_database_error().is_some()
                    || matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
            }
            Self::Conflict | Self::IdempotencyConflict => true,
            _ => false,
        }
    }

    /// The stable label used in metrics (`transfers_total{outcome}`) and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::AccountNotFound => "account_not_found",
            Self::NotAccountOwner => "not_account_owner",
            Self::SameAccount => "same_account",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::AccountFrozen => "account_frozen",
            Self::InsufficientFunds => "insufficient_funds",
            Self::AmountOverLimit => "amount_over_limit",
            Self::InvalidAmount => "invalid_amount",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::Conflict => "conflict",
            Self::QueueFull => "transfer_queue_full",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Unavailable => "ledger_unavailable",
            Self::OutcomeUnknown => "outcome_unknown",
            Self::Database(_) => "database_error",
            Self::Invariant(_) => "invariant_broken",
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        let reason = e.reason();
        match e {
            LedgerError::AccountNotFound => ApiError::not_found(reason, "no such account"),
            LedgerError::NotAccountOwner => ApiError::permission_denied(
                reason,
                "you can only move money out of your own account",
            ),
            LedgerError::SameAccount => ApiError::new(
                tonic::Code::InvalidArgument,
                reason,
                "from and to are the same account",
            )
            .with_violation("to_account_id", "must differ from from_account_id"),
            LedgerError::CurrencyMismatch => ApiError::failed_precondition(
                reason,
                "both accounts and the request must be in the same currency",
            ),
            LedgerError::AccountFrozen => {
                ApiError::failed_precondition(reason, "one of the accounts is frozen")
            }
            LedgerError::InsufficientFunds => {
                ApiError::failed_precondition(reason, "the source account has too little money")
            }
            LedgerError::AmountOverLimit => ApiError::new(
                tonic::Code::InvalidArgument,
                reason,
                "amount is over the per-transfer limit",
            )
            .with_violation("amount", "over the per-transfer limit"),
            LedgerError::InvalidAmount => ApiError::new(
                tonic::Code::InvalidArgument,
                reason,
                "amount must be positive",
            )
            .with_violation("amount", "must be > 0"),
            LedgerError::IdempotencyKeyReused => ApiError::failed_precondition(
                reason,
                "this idempotency key was used for a different request; use a new key",
            ),
            LedgerError::IdempotencyConflict | LedgerError::Conflict => ApiError::new(
                tonic::Code::Aborted,
                reason,
                "a concurrent request conflicted; retry with the same idempotency key",
            ),
            LedgerError::QueueFull => ApiError::unavailable(
                reason,
                "too many transfers are waiting; retry shortly with the same idempotency key",
            )
            .with_retry_after(1),
            LedgerError::DeadlineExceeded => ApiError::new(
                tonic::Code::DeadlineExceeded,
                reason,
                "the request's deadline passed before it was applied; nothing was moved",
            ),
            LedgerError::Unavailable => ApiError::unavailable(
                reason,
                "the service is shutting down; nothing was moved, retry",
            ),
            LedgerError::OutcomeUnknown => ApiError::unavailable(
                reason,
                "the database connection failed; the transfer may or may not have been applied \
                 (send an idempotency key to retry safely)",
            ),
            LedgerError::Database(e) => ApiError::from(e),
            LedgerError::Invariant(what) => ApiError::internal(what),
        }
    }
}
