use platform::ApiError;

/// A business failure the ledger's SQL reports for one request (in the `error` column of
/// `ledger.transfer_batch`, as `failure := '<reason>'` in its source). [`Refusal::ALL`] with
/// [`Refusal::reason`] is the one table of these reasons: parsing goes through it, and a test
/// reads the SQL function's source and checks that every reason it can report is in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AccountNotFound,
    NotAccountOwner,
    SameAccount,
    CurrencyMismatch,
    AccountFrozen,
    InsufficientFunds,
    AmountOverLimit,
    InvalidAmount,
    /// A kind other than transfer/deposit/withdrawal reached the SQL: the service never sends
    /// one, so it surfaces as an internal error.
    InvalidKind,
    IdempotencyKeyReused,
    /// No such hold, or not one the caller may end (only its creator or a banker).
    HoldNotFound,
    /// The hold was already posted, voided or expired: each hold ends exactly once.
    HoldNotPending,
    /// The hold's timeout passed; the sweep releases it.
    HoldExpired,
    /// An expiry of a hold whose timeout has not passed (only the sweep sends these).
    HoldNotExpired,
    /// A post of more than the hold reserved.
    AmountExceedsHold,
    /// No such transfer, or not one the caller may see (either side's owner or a banker).
    TransferNotFound,
    /// A reversal of a transfer that moved no money (a hold, a void) or is itself a reversal.
    TransferNotReversible,
    /// A reversal of more than what is left of the transfer after its earlier reversals.
    AmountExceedsReversible,
}

impl Refusal {
    /// Every refusal, for parsing and for the agreement test.
    pub const ALL: [Refusal; 18] = [
        Refusal::AccountNotFound,
        Refusal::NotAccountOwner,
        Refusal::SameAccount,
        Refusal::CurrencyMismatch,
        Refusal::AccountFrozen,
        Refusal::InsufficientFunds,
        Refusal::AmountOverLimit,
        Refusal::InvalidAmount,
        Refusal::InvalidKind,
        Refusal::IdempotencyKeyReused,
        Refusal::HoldNotFound,
        Refusal::HoldNotPending,
        Refusal::HoldExpired,
        Refusal::HoldNotExpired,
        Refusal::AmountExceedsHold,
        Refusal::TransferNotFound,
        Refusal::TransferNotReversible,
        Refusal::AmountExceedsReversible,
    ];

    /// The stable reason: in the SQL, in the API's `ErrorInfo`, in metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::AccountNotFound => "account_not_found",
            Refusal::NotAccountOwner => "not_account_owner",
            Refusal::SameAccount => "same_account",
            Refusal::CurrencyMismatch => "currency_mismatch",
            Refusal::AccountFrozen => "account_frozen",
            Refusal::InsufficientFunds => "insufficient_funds",
            Refusal::AmountOverLimit => "amount_over_limit",
            Refusal::InvalidAmount => "invalid_amount",
            Refusal::InvalidKind => "invalid_kind",
            Refusal::IdempotencyKeyReused => "idempotency_key_reused",
            Refusal::HoldNotFound => "hold_not_found",
            Refusal::HoldNotPending => "hold_not_pending",
            Refusal::HoldExpired => "hold_expired",
            Refusal::HoldNotExpired => "hold_not_expired",
            Refusal::AmountExceedsHold => "amount_exceeds_hold",
            Refusal::TransferNotFound => "transfer_not_found",
            Refusal::TransferNotReversible => "transfer_not_reversible",
            Refusal::AmountExceedsReversible => "amount_exceeds_reversible",
        }
    }

    pub fn from_reason(reason: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.reason() == reason)
    }

    fn to_api(self) -> ApiError {
        let reason = self.reason();
        match self {
            Refusal::AccountNotFound => ApiError::not_found(reason, "no such account"),
            Refusal::NotAccountOwner => ApiError::permission_denied(
                reason,
                "you can only move money out of your own account",
            ),
            Refusal::SameAccount => ApiError::new(
                tonic::Code::InvalidArgument,
                reason,
                "from and to are the same account",
            )
            .with_violation("to_account_id", "must differ from from_account_id"),
            Refusal::CurrencyMismatch => ApiError::failed_precondition(
                reason,
                "both accounts and the request must be in the same currency",
            ),
            Refusal::AccountFrozen => {
                ApiError::failed_precondition(reason, "one of the accounts is frozen")
            }
            Refusal::InsufficientFunds => {
                ApiError::failed_precondition(reason, "the source account has too little money")
            }
            Refusal::AmountOverLimit => ApiError::new(
                tonic::Code::InvalidArgument,
                reason,
                "amount is over the per-transfer limit",
            )
            .with_violation("amount", "over the per-transfer limit"),
            Refusal::InvalidAmount => ApiError::new(
                tonic::Code::InvalidArgument,
                reason,
                "amount must be positive",
            )
            .with_violation("amount", "must be > 0"),
            Refusal::InvalidKind => ApiError::internal("the ledger was sent an unknown kind"),
            Refusal::IdempotencyKeyReused => ApiError::failed_precondition(
                reason,
                "this idempotency key was used for a different request; use a new key",
            ),
            Refusal::HoldNotFound => ApiError::not_found(reason, "no such hold"),
            Refusal::HoldNotPending => ApiError::failed_precondition(
                reason,
                "the hold has already ended (posted, voided or expired)",
            ),
            Refusal::HoldExpired => {
                ApiError::failed_precondition(reason, "the hold has expired and is released")
            }
            Refusal::HoldNotExpired => {
                ApiError::failed_precondition(reason, "the hold has not expired")
            }
            Refusal::AmountExceedsHold => ApiError::failed_precondition(
                reason,
                "a post may move at most the amount the hold reserved",
            )
            .with_violation("amount", "at most the hold's amount"),
            Refusal::TransferNotFound => ApiError::not_found(reason, "no such transfer"),
            Refusal::TransferNotReversible => ApiError::failed_precondition(
                reason,
                "only a posted transfer that moved money, and is not itself a reversal, can be reversed",
            ),
            Refusal::AmountExceedsReversible => ApiError::failed_precondition(
                reason,
                "the reversals of a transfer never sum past its amount",
            )
            .with_violation("amount", "at most what is left to reverse"),
        }
    }
}

/// Why a money movement was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A business failure reported by the ledger's SQL (or found by the service first).
    #[error("{}", .0.reason())]
    Refused(Refusal),
    /// A leg of a multi-leg transaction failed (`leg` counts from 1): nothing of it applied.
    #[error("leg {leg}: {}", .refusal.reason())]
    LegRefused { leg: usize, refusal: Refusal },
    /// Two requests with one key got past the per-key lock (should not happen): the key's
    /// primary key refused the second. Retrying replays the first.
    #[error("idempotency_conflict")]
    IdempotencyConflict,
    /// A deadlock or serialisation failure. The ordered locking makes this unexpected; it is
    /// still safe to retry.
    #[error("conflict")]
    Conflict,
    /// An account the request touches stayed locked by another transaction (an operator's
    /// session, a stuck batch) past the lock timeout; nothing was applied.
    #[error("account_busy")]
    AccountBusy,
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
    /// No connection to the database could be had for the call (the pool timed out, or the
    /// connect failed, e.g. while the pool's circuit breaker is open): nothing was sent, so
    /// nothing was applied.
    #[error("database_unavailable: {0}")]
    NotConnected(sqlx::Error),
    /// The database answered something that breaks a ledger invariant.
    #[error("ledger invariant broken: {0}")]
    Invariant(String),
}

impl From<Refusal> for LedgerError {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl LedgerError {
    pub fn from_db(e: sqlx::Error) -> Self {
        let Some(db) = e.as_database_error() else {
            return Self::Database(e);
        };
        match db.code().as_deref() {
            // unique_violation on ledger.idempotency_keys' primary key
            Some("23505") if db.constraint() == Some("idempotency_keys_pkey") => {
                Self::IdempotencyConflict
            }
            Some("40P01" | "40001") => Self::Conflict,
            // lock_not_available: transfer_batch's lock_timeout ran out
            Some("55P03") => Self::AccountBusy,
            _ => Self::Database(e),
        }
    }

    /// A business failure reported by the ledger's SQL by its reason.
    pub fn from_reason(reason: &str) -> Self {
        match Refusal::from_reason(reason) {
            Some(refusal) => Self::Refused(refusal),
            None => Self::Invariant(format!("unknown ledger failure `{reason}`")),
        }
    }

    /// True when the failed call certainly moved no money: the database refused the statement
    /// (so it, and with it its implicit transaction, was rolled back) or no connection was ever
    /// used. False when a connection broke mid-call or the server ended the session (shutdown,
    /// crash, `pg_terminate_backend`): a commit may have happened.
    pub fn certainly_not_applied(&self) -> bool {
        match self {
            // (a session the server ended may have committed first: see `ended_by_server`)
            Self::Database(e) => {
                (e.as_database_error().is_some() && !platform::db::ended_by_server(e))
                    || matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
            }
            Self::Conflict | Self::IdempotencyConflict | Self::AccountBusy => true,
            Self::NotConnected(_) => true,
            _ => false,
        }
    }

    /// The stable label used in metrics (`transfers_total{outcome}`) and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Refused(r) | Self::LegRefused { refusal: r, .. } => r.reason(),
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::Conflict => "conflict",
            Self::AccountBusy => "account_busy",
            Self::QueueFull => "transfer_queue_full",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Unavailable => "ledger_unavailable",
            Self::OutcomeUnknown => "outcome_unknown",
            Self::Database(_) => "database_error",
            Self::NotConnected(_) => "database_unavailable",
            Self::Invariant(_) => "invariant_broken",
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        let reason = e.reason();
        match e {
            LedgerError::Refused(r) => r.to_api(),
            LedgerError::LegRefused { leg, refusal } => {
                let mut e = refusal.to_api();
                e.message = format!(
                    "leg {leg} (legs[{}]): {}; nothing was applied",
                    leg - 1,
                    e.message
                );
                // the leg's own field paths (`amount` → `legs[0].amount`), and the leg itself
                for v in &mut e.field_violations {
                    v.field = format!("legs[{}].{}", leg - 1, v.field);
                }
                e.with_violation(&format!("legs[{}]", leg - 1), refusal.reason())
            }
            LedgerError::IdempotencyConflict | LedgerError::Conflict => ApiError::new(
                tonic::Code::Aborted,
                reason,
                "a concurrent request conflicted; retry with the same idempotency key",
            ),
            LedgerError::AccountBusy => ApiError::unavailable(
                reason,
                "an account of this request is locked by another transaction; nothing was moved, \
                 retry shortly with the same idempotency key",
            )
            .with_retry_after(1),
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
            LedgerError::NotConnected(e) => {
                tracing::warn!(error = %e, "no database connection for a batch");
                ApiError::unavailable(
                    reason,
                    "the database is unavailable; nothing was moved, retry later with the same \
                     idempotency key",
                )
                .with_retry_after(1)
            }
            LedgerError::Invariant(what) => ApiError::internal(what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_parses_back_from_its_reason_and_keeps_it_on_the_wire() {
        for refusal in Refusal::ALL {
            assert_eq!(Refusal::from_reason(refusal.reason()), Some(refusal));
            let e = LedgerError::from(refusal);
            assert_eq!(e.reason(), refusal.reason());
            assert_eq!(e.to_string(), refusal.reason());
            if refusal != Refusal::InvalidKind {
                assert_eq!(ApiError::from(e).reason, refusal.reason());
            }
        }
        assert!(matches!(
            LedgerError::from_reason("no_such_reason"),
            LedgerError::Invariant(_)
        ));
    }
}
