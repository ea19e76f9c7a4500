//! The one path by which money moves: [`Ledger::apply`] → one call of the SQL function
//! `ledger.transfer` (migrations/20261125000200_ledger_functions.up.sql).
//!
//! Every money movement (transfer, deposit, withdrawal) goes through here, so batching several
//! commands into one round trip (group commit) can later be added inside `apply` alone.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::domain::{AccountId, Amount, Currency, LedgerError};

/// What kind of movement; the `kind` column of `ledger.transfers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Between two customer accounts; the caller must own the source.
    Transfer,
    /// From the currency's system account to a customer account (banker).
    Deposit,
    /// From a customer account to the currency's system account (banker).
    Withdrawal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Transfer => "transfer",
            Kind::Deposit => "deposit",
            Kind::Withdrawal => "withdrawal",
        }
    }
}

/// A parsed, authorised request to move money.
#[derive(Debug, Clone)]
pub struct Command {
    /// Who asks; idempotency keys are scoped to this user.
    pub username: String,
    pub kind: Kind,
    /// The source account; `None` for a deposit (the system account is found by currency).
    pub from: Option<AccountId>,
    /// The destination account; `None` for a withdrawal.
    pub to: Option<AccountId>,
    pub amount: Amount,
    pub currency: Currency,
    /// Without a key there is no deduplication: every request moves money.
    pub idempotency_key: Option<String>,
}

impl Command {
    /// A digest of everything that makes two requests "the same request" for idempotency.
    pub fn request_hash(&self) -> Vec<u8> {
        let id = |a: Option<AccountId>| a.map(AccountId::get).unwrap_or(0);
        let canonical = format!(
            "v1\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.kind.as_str(),
            id(self.from),
            id(self.to),
            self.amount.get(),
            self.currency
        );
        Sha256::digest(canonical.as_bytes()).to_vec()
    }
}

/// The row `ledger.transfer` returns: the transfer, both entries, and whether it is a replay.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Outcome {
    pub transfer_id: i64,
    pub from_account_id: i64,
    pub to_account_id: i64,
    pub amount: i64,
    pub currency: String,
    pub kind: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub from_entry_id: i64,
    pub from_entry_amount: i64,
    pub from_balance_after: i64,
    pub to_entry_id: i64,
    pub to_entry_amount: i64,
    pub to_balance_after: i64,
    pub replayed: bool,
}

impl Outcome {
    /// The second half of the pair assertions made in SQL: two entries summing to zero, the
    /// debit on the source, and a customer source never below zero.
    fn check(&self) -> Result<(), LedgerError> {
        let broken = |what: &str| {
            Err(LedgerError::Invariant(format!(
                "transfer {}: {what}",
                self.transfer_id
            )))
        };
        if self.from_entry_amount.checked_add(self.to_entry_amount) != Some(0) {
            return broken("entries do not sum to zero");
        }
        if self.from_entry_amount != -self.amount || self.amount <= 0 {
            return broken("debit entry does not match the amount");
        }
        if self.kind != "deposit" && self.from_balance_after < 0 {
            return broken("customer balance below zero");
        }
        Ok(())
    }
}

/// The ledger's write side.
#[derive(Clone)]
pub struct Ledger {
    db: PgPool,
    max_transfer_amount: i64,
}

impl Ledger {
    pub fn new(db: PgPool, max_transfer_amount: i64) -> Self {
        Self {
            db,
            max_transfer_amount,
        }
    }

    /// Applies one command in one statement (one round trip; see the SQL function for why) and
    /// records the outcome in metrics.
    pub async fn apply(&self, cmd: &Command) -> Result<Outcome, LedgerError> {
        let hash = cmd.idempotency_key.as_ref().map(|_| cmd.request_hash());
        let result = sqlx::query_as::<_, Outcome>(
            "SELECT * FROM ledger.transfer($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&cmd.username)
        .bind(cmd.kind.as_str())
        .bind(cmd.from.map(AccountId::get))
        .bind(cmd.to.map(AccountId::get))
        .bind(cmd.amount.get())
        .bind(cmd.currency.as_str())
        .bind(self.max_transfer_amount)
        .bind(cmd.idempotency_key.as_deref())
        .bind(hash)
        .fetch_one(&self.db)
        .await
        .map_err(LedgerError::from_db)
        .and_then(|outcome| outcome.check().map(|()| outcome));
        record(cmd, &result);
        result
    }
}

/// Counts a request refused before it reached the ledger (bad input, not allowed).
pub fn record_refusal(kind: Kind, reason: &'static str) {
    metrics::counter!("transfers_total", "outcome" => reason, "kind" => kind.as_str()).increment(1);
}

fn record(cmd: &Command, result: &Result<Outcome, LedgerError>) {
    let outcome = match result {
        Ok(o) if o.replayed => {
            metrics::counter!("idempotent_replays_total").increment(1);
            "replayed"
        }
        Ok(o) => {
            metrics::counter!("transfer_amount_minor_total", "currency" => o.currency.clone())
                .increment(o.amount.unsigned_abs());
            tracing::info!(
                transfer_id = o.transfer_id,
                kind = cmd.kind.as_str(),
                from = o.from_account_id,
                to = o.to_account_id,
                amount = o.amount,
                currency = %o.currency,
                by = %cmd.username,
                "money moved"
            );
            "ok"
        }
        Err(e) => e.reason(),
    };
    metrics::counter!("transfers_total", "outcome" => outcome, "kind" => cmd.kind.as_str())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use accounts::domain::Currencies;

    fn cmd(amount: i64) -> Command {
        let currencies = Currencies::from_config(&["USD".into()]).unwrap();
        Command {
            username: "alice".into(),
            kind: Kind::Transfer,
            from: Some(AccountId::parse(1, "from").unwrap()),
            to: Some(AccountId::parse(2, "to").unwrap()),
            amount: Amount::parse(amount, 1_000).unwrap(),
            currency: currencies.parse("usd", "currency").unwrap(),
            idempotency_key: Some("k".into()),
        }
    }

    #[test]
    fn request_hash_covers_the_parameters_but_not_the_key() {
        assert_eq!(cmd(5).request_hash(), cmd(5).request_hash());
        assert_ne!(cmd(5).request_hash(), cmd(6).request_hash());
        let mut other_key = cmd(5);
        other_key.idempotency_key = Some("other".into());
        assert_eq!(other_key.request_hash(), cmd(5).request_hash());
        let mut deposit = cmd(5);
        deposit.kind = Kind::Deposit;
        assert_ne!(deposit.request_hash(), cmd(5).request_hash());
    }
}
