//! A money movement: what is asked ([`Command`]), what it did ([`Outcome`]), and how both are
//! counted in metrics and logs.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use ledger_model::{AccountId, Currency};

use super::{amount::Amount, error::LedgerError};

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

impl TryFrom<String> for Kind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "transfer" => Ok(Kind::Transfer),
            "deposit" => Ok(Kind::Deposit),
            "withdrawal" => Ok(Kind::Withdrawal),
            _ => Err(format!("unknown transfer kind `{value}`")),
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

/// One movement's answer: the transfer, both entries, and whether it is a replay.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub transfer_id: i64,
    pub from_account_id: i64,
    pub to_account_id: i64,
    pub amount: i64,
    pub currency: String,
    pub kind: Kind,
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
    pub fn check(&self) -> Result<(), LedgerError> {
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
        if self.kind != Kind::Deposit && self.from_balance_after < 0 {
            return broken("customer balance below zero");
        }
        Ok(())
    }
}

/// Counts a request refused before it reached the ledger (bad input, not allowed).
pub fn record_refusal(kind: Kind, reason: &'static str) {
    metrics::counter!("transfers_total", "outcome" => reason, "kind" => kind.as_str()).increment(1);
}

pub fn record(cmd: &Command, result: &Result<Outcome, LedgerError>) {
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
    use ledger_model::Currencies;

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
