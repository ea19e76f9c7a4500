//! A money movement: what is asked ([`Command`] with its [`Operation`]), what it did
//! ([`Outcome`]), and how both are counted in metrics and logs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use ledger_model::{AccountId, Currency};

use super::{amount::Amount, error::LedgerError, memo::Memo};

/// The `kind` column of `ledger.transfers`: what a transfer row is, whatever its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Between two customer accounts (also holds and what ends them).
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

/// The `status` column of `ledger.transfers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Money moved (two entries).
    Posted,
    /// An open hold.
    Pending,
    Voided,
    Expired,
}

impl TryFrom<String> for Status {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "posted" => Ok(Status::Posted),
            "pending" => Ok(Status::Pending),
            "voided" => Ok(Status::Voided),
            "expired" => Ok(Status::Expired),
            _ => Err(format!("unknown transfer status `{value}`")),
        }
    }
}

/// A transfer id named by a request (the hold a post or void ends). Positive; whether it exists
/// is the database's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(i64);

impl TransferId {
    pub fn parse(id: i64, field: &str) -> Result<Self, platform::ApiError> {
        if id > 0 {
            Ok(Self(id))
        } else {
            Err(platform::ApiError::invalid_field(
                field,
                "must be a positive transfer id",
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// What a request asks the ledger to do, each with exactly what it needs.
#[derive(Debug, Clone)]
pub enum Operation {
    /// From the caller's account to another customer account.
    Transfer {
        from: AccountId,
        to: AccountId,
        amount: Amount,
        currency: Currency,
    },
    /// From the currency's system account (banker).
    Deposit {
        to: AccountId,
        amount: Amount,
        currency: Currency,
    },
    /// To the currency's system account (banker).
    Withdrawal {
        from: AccountId,
        amount: Amount,
        currency: Currency,
    },
    /// Like a transfer, but pending: reserves the amount until posted, voided or expired.
    Hold {
        from: AccountId,
        to: AccountId,
        amount: Amount,
        currency: Currency,
        expires_at: Option<DateTime<Utc>>,
    },
    /// Ends a hold by moving its amount, or less (`None`: all of it).
    Post {
        hold: TransferId,
        amount: Option<Amount>,
    },
    /// Ends a hold by releasing it.
    Void { hold: TransferId },
    /// Ends a hold whose timeout passed (the expiry sweep).
    Expire { hold: TransferId },
    /// Moves money of a posted transfer back, from its destination to its source (`None`: all
    /// of it not yet reversed). Its receiver (a refund) or a banker (a chargeback).
    Reverse {
        transfer: TransferId,
        amount: Option<Amount>,
    },
    /// A multi-leg transaction: 2 to `transactions.max_legs` transfers applied all or nothing.
    Transaction { legs: Vec<Leg> },
}

/// One leg of a multi-leg transaction: a transfer between two customer accounts.
#[derive(Debug, Clone)]
pub struct Leg {
    pub from: AccountId,
    pub to: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    /// The leg's own description (`None`: the transaction's).
    pub description: Option<String>,
}

impl Operation {
    /// The operation's name: in `ledger.transfer_batch`'s `p_operations` and the `kind` label of
    /// the `transfers_total` metric.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Transfer { .. } => "transfer",
            Operation::Deposit { .. } => "deposit",
            Operation::Withdrawal { .. } => "withdrawal",
            Operation::Hold { .. } => "hold",
            Operation::Post { .. } => "post",
            Operation::Void { .. } => "void",
            Operation::Expire { .. } => "expire",
            Operation::Reverse { .. } => "reverse",
            Operation::Transaction { .. } => "transaction",
        }
    }

    /// How many transfers (elements of `ledger.transfer_batch`'s arrays) the operation makes.
    pub fn leg_count(&self) -> usize {
        match self {
            Operation::Transaction { legs } => legs.len(),
            _ => 1,
        }
    }

    /// The transfer a reversal names.
    pub fn reversed(&self) -> Option<TransferId> {
        match self {
            Operation::Reverse { transfer, .. } => Some(*transfer),
            _ => None,
        }
    }

    /// The source account named by the request (`None`: found by the ledger).
    pub fn from(&self) -> Option<AccountId> {
        match self {
            Operation::Transfer { from, .. }
            | Operation::Withdrawal { from, .. }
            | Operation::Hold { from, .. } => Some(*from),
            _ => None,
        }
    }

    /// The destination account named by the request (`None`: found by the ledger).
    pub fn to(&self) -> Option<AccountId> {
        match self {
            Operation::Transfer { to, .. }
            | Operation::Deposit { to, .. }
            | Operation::Hold { to, .. } => Some(*to),
            _ => None,
        }
    }

    pub fn amount(&self) -> Option<Amount> {
        match self {
            Operation::Transfer { amount, .. }
            | Operation::Deposit { amount, .. }
            | Operation::Withdrawal { amount, .. }
            | Operation::Hold { amount, .. } => Some(*amount),
            Operation::Post { amount, .. } | Operation::Reverse { amount, .. } => *amount,
            Operation::Void { .. } | Operation::Expire { .. } | Operation::Transaction { .. } => {
                None
            }
        }
    }

    /// The currency named by the request (a post, void or expiry takes its hold's).
    pub fn currency(&self) -> Option<&Currency> {
        match self {
            Operation::Transfer { currency, .. }
            | Operation::Deposit { currency, .. }
            | Operation::Withdrawal { currency, .. }
            | Operation::Hold { currency, .. } => Some(currency),
            _ => None,
        }
    }

    /// The hold a post, void or expiry ends.
    pub fn hold(&self) -> Option<TransferId> {
        match self {
            Operation::Post { hold, .. }
            | Operation::Void { hold }
            | Operation::Expire { hold } => Some(*hold),
            _ => None,
        }
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Operation::Hold { expires_at, .. } => *expires_at,
            _ => None,
        }
    }
}

/// A parsed, authorised request to move money.
#[derive(Debug, Clone)]
pub struct Command {
    /// Who asks: ownership and idempotency keys are keyed by this user id.
    pub user_id: Uuid,
    /// The caller's username, recorded on the transfer for display.
    pub username: String,
    /// A banker may post or void any hold, reverse any transfer and use any source in a
    /// transaction; others only their own.
    pub as_banker: bool,
    pub op: Operation,
    /// Without a key there is no deduplication: every request moves money.
    pub idempotency_key: Option<String>,
    /// The client's description and metadata (part of the digest).
    pub memo: Memo,
}

impl Command {
    /// A digest of everything that makes two requests "the same request" for idempotency. The
    /// first three operations keep the digest they had before holds existed, and every request
    /// without a description or metadata the one it had before those existed, so keys stored
    /// then still replay.
    pub fn request_hash(&self) -> Vec<u8> {
        let id = |a: Option<AccountId>| a.map(AccountId::get).unwrap_or(0);
        let amount = self
            .op
            .amount()
            .map(|a| a.get().to_string())
            .unwrap_or_default();
        let currency = self.op.currency().map(Currency::as_str).unwrap_or_default();
        let hold = self.op.hold().map(TransferId::get).unwrap_or(0);
        let canonical = match &self.op {
            Operation::Transfer { .. }
            | Operation::Deposit { .. }
            | Operation::Withdrawal { .. } => {
                format!(
                    "v1\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{amount}\u{1f}{currency}",
                    self.op.name(),
                    id(self.op.from()),
                    id(self.op.to()),
                )
            }
            Operation::Hold { expires_at, .. } => format!(
                "v1\u{1f}hold\u{1f}{}\u{1f}{}\u{1f}{amount}\u{1f}{currency}\u{1f}{}",
                id(self.op.from()),
                id(self.op.to()),
                expires_at.map(|t| t.timestamp_micros()).unwrap_or(0)
            ),
            Operation::Post { .. } | Operation::Void { .. } | Operation::Expire { .. } => {
                format!("v1\u{1f}{}\u{1f}{hold}\u{1f}{amount}", self.op.name())
            }
            Operation::Reverse { transfer, .. } => {
                format!("v1\u{1f}reverse\u{1f}{}\u{1f}{amount}", transfer.get())
            }
            Operation::Transaction { legs } => {
                let mut text = String::from("v1\u{1f}transaction");
                for leg in legs {
                    // the leg's description is JSON-quoted: no two legs share a canonical form
                    let description = serde_json::to_string(&leg.description).unwrap_or_default();
                    text.push_str(&format!(
                        "\u{1f}leg\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{description}",
                        leg.from.get(),
                        leg.to.get(),
                        leg.amount.get(),
                        leg.currency.as_str()
                    ));
                }
                text
            }
        };
        let canonical = canonical + &self.memo.digest_part();
        Sha256::digest(canonical.as_bytes()).to_vec()
    }
}

/// One side of a transfer on one account: the entry id, its signed amount, the balance after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryLine {
    pub id: i64,
    pub amount: i64,
    pub balance_after: i64,
}

/// One movement's answer: the transfer, both entries when money moved, and whether it is a
/// replay.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub transfer_id: i64,
    pub from_account_id: i64,
    pub to_account_id: i64,
    pub amount: i64,
    pub currency: String,
    pub kind: Kind,
    pub status: Status,
    pub hold: bool,
    pub hold_id: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    /// On a reversal: the transfer it reverses, that transfer's amount and how much of it its
    /// reversals have moved back, this one included.
    pub reverses: Option<Reversed>,
    /// How much of this transfer reversals have moved back (0 for a new one).
    pub reversed_amount: i64,
    /// The multi-leg transaction it is a leg of.
    pub transaction_id: Option<i64>,
    pub description: Option<String>,
    pub metadata: HashMap<String, String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// The debit on the source and the credit on the destination; `None` when no money moved
    /// (a hold, a void, an expiry).
    pub entries: Option<(EntryLine, EntryLine)>,
    pub replayed: bool,
}

/// What a reversal says of the transfer it reverses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reversed {
    pub id: i64,
    pub amount: i64,
    pub reversed_amount: i64,
}

impl Outcome {
    /// Whether this transfer moves money (and so has two entries): a posted one that is not a
    /// hold.
    pub fn moves_money(&self) -> bool {
        self.status == Status::Posted && !self.hold
    }

    /// The second half of the pair assertions made in SQL: two entries summing to zero exactly
    /// when money moved, the debit on the source, and a customer source never below zero.
    pub fn check(&self) -> Result<(), LedgerError> {
        let broken = |what: &str| {
            Err(LedgerError::Invariant(format!(
                "transfer {}: {what}",
                self.transfer_id
            )))
        };
        if self.amount <= 0 {
            return broken("amount not positive");
        }
        match (self.moves_money(), self.entries) {
            (true, Some((debit, credit))) => {
                if debit.amount.checked_add(credit.amount) != Some(0) {
                    return broken("entries do not sum to zero");
                }
                if debit.amount != -self.amount {
                    return broken("debit entry does not match the amount");
                }
                if self.kind != Kind::Deposit && debit.balance_after < 0 {
                    return broken("customer balance below zero");
                }
            }
            (false, None) => {}
            (true, None) => return broken("moved money without entries"),
            (false, Some(_)) => return broken("entries on a transfer that moves no money"),
        }
        if self.reversed_amount < 0 || self.reversed_amount > self.amount {
            return broken("reversed beyond its amount");
        }
        // the reversals of a transfer never sum past its amount (the SQL's CHECK and lock)
        if let Some(original) = self.reverses
            && (original.reversed_amount > original.amount
                || original.reversed_amount < self.amount
                || !self.moves_money())
        {
            return broken("a reversal beyond the transfer it reverses");
        }
        Ok(())
    }
}

/// Counts a request refused before it reached the ledger (bad input, not allowed).
pub fn record_refusal(operation: &'static str, reason: &'static str) {
    metrics::counter!("transfers_total", "outcome" => reason, "kind" => operation).increment(1);
}

pub fn record(cmd: &Command, result: &Result<Vec<Outcome>, LedgerError>) {
    let operation = cmd.op.name();
    let outcome = match result {
        Ok(legs) if legs.iter().any(|o| o.replayed) => {
            metrics::counter!("idempotent_replays_total").increment(1);
            "replayed"
        }
        Ok(legs) => {
            for o in legs {
                if o.moves_money() {
                    metrics::counter!("transfer_amount_minor_total", "currency" => o.currency.clone())
                        .increment(o.amount.unsigned_abs());
                }
                tracing::info!(
                    transfer_id = o.transfer_id,
                    kind = operation,
                    from = o.from_account_id,
                    to = o.to_account_id,
                    amount = o.amount,
                    currency = %o.currency,
                    hold_id = o.hold_id,
                    reverses_id = o.reverses.map(|r| r.id),
                    transaction_id = o.transaction_id,
                    by = %cmd.username,
                    "{}",
                    match cmd.op {
                        Operation::Hold { .. } => "money held",
                        Operation::Void { .. } => "hold voided",
                        Operation::Expire { .. } => "hold expired",
                        Operation::Reverse { .. } => "money moved back",
                        _ => "money moved",
                    }
                );
            }
            "ok"
        }
        Err(e) => e.reason(),
    };
    metrics::counter!("transfers_total", "outcome" => outcome, "kind" => operation).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_model::Currencies;

    fn transfer(amount: i64) -> Operation {
        let currencies = Currencies::from_config(&["USD".into()]).unwrap();
        Operation::Transfer {
            from: AccountId::parse(1, "from").unwrap(),
            to: AccountId::parse(2, "to").unwrap(),
            amount: Amount::parse(amount, 1_000).unwrap(),
            currency: currencies.parse("usd", "currency").unwrap(),
        }
    }

    fn cmd(op: Operation) -> Command {
        Command {
            user_id: Uuid::nil(),
            username: "alice".into(),
            as_banker: false,
            op,
            idempotency_key: Some("k".into()),
            memo: Memo::default(),
        }
    }

    #[test]
    fn request_hash_covers_the_parameters_but_not_the_key() {
        assert_eq!(
            cmd(transfer(5)).request_hash(),
            cmd(transfer(5)).request_hash()
        );
        assert_ne!(
            cmd(transfer(5)).request_hash(),
            cmd(transfer(6)).request_hash()
        );
        let mut other_key = cmd(transfer(5));
        other_key.idempotency_key = Some("other".into());
        assert_eq!(other_key.request_hash(), cmd(transfer(5)).request_hash());
        let Operation::Transfer {
            to,
            amount,
            currency,
            ..
        } = transfer(5)
        else {
            unreachable!()
        };
        let deposit = cmd(Operation::Deposit {
            to,
            amount,
            currency,
        });
        assert_ne!(deposit.request_hash(), cmd(transfer(5)).request_hash());
    }

    #[test]
    fn a_description_or_metadata_changes_the_digest() {
        let plain = cmd(transfer(5));
        let mut described = cmd(transfer(5));
        described.memo.description = Some("rent".into());
        let mut tagged = cmd(transfer(5));
        tagged.memo.metadata.insert("order".into(), "42".into());
        let mut other_tag = cmd(transfer(5));
        other_tag.memo.metadata.insert("order".into(), "43".into());
        let digests = [
            plain.request_hash(),
            described.request_hash(),
            tagged.request_hash(),
            other_tag.request_hash(),
        ];
        for (i, a) in digests.iter().enumerate() {
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn the_digest_of_a_transfer_is_the_one_keys_were_stored_with_before_holds() {
        let expected = Sha256::digest("v1\u{1f}transfer\u{1f}1\u{1f}2\u{1f}5\u{1f}USD".as_bytes());
        assert_eq!(cmd(transfer(5)).request_hash(), expected.to_vec());
    }

    #[test]
    fn a_hold_a_post_and_a_void_digest_differently_from_a_transfer_and_each_other() {
        let Operation::Transfer {
            from,
            to,
            amount,
            currency,
        } = transfer(5)
        else {
            unreachable!()
        };
        let hold = TransferId::parse(9, "id").unwrap();
        let digests = [
            cmd(transfer(5)).request_hash(),
            cmd(Operation::Hold {
                from,
                to,
                amount,
                currency,
                expires_at: None,
            })
            .request_hash(),
            cmd(Operation::Post {
                hold,
                amount: Some(amount),
            })
            .request_hash(),
            cmd(Operation::Post { hold, amount: None }).request_hash(),
            cmd(Operation::Void { hold }).request_hash(),
        ];
        for (i, a) in digests.iter().enumerate() {
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
