//! A row of `ledger.accounts`, with its `kind` and `status` columns decoded as enums (the
//! columns' CHECK constraints name the same values).

use chrono::{DateTime, Utc};
use platform::Caller;

/// The owner of every system (bank cash) account. `@` is not allowed in a username, so no user
/// can ever own or collide with it.
pub const SYSTEM_OWNER: &str = "@system";

/// `ledger.accounts.kind`: a customer's account, or a currency's system (bank cash) account,
/// the only kind whose balance may go below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    Customer,
    System,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::System => "system",
        }
    }
}

impl TryFrom<String> for AccountKind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "customer" => Ok(Self::Customer),
            "system" => Ok(Self::System),
            _ => Err(format!("unknown account kind `{value}`")),
        }
    }
}

/// `ledger.accounts.status`: money moves only between active accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Frozen,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Frozen => "frozen",
        }
    }
}

impl TryFrom<String> for AccountStatus {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "active" => Ok(Self::Active),
            "frozen" => Ok(Self::Frozen),
            _ => Err(format!("unknown account status `{value}`")),
        }
    }
}

/// A row of `ledger.accounts`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    pub id: i64,
    /// The owner's username when the account was opened (display, the banker's filter).
    pub owner: String,
    /// The owner's user id: who the account belongs to (the nil id for system accounts).
    pub owner_id: uuid::Uuid,
    pub currency: String,
    #[sqlx(try_from = "String")]
    pub kind: AccountKind,
    #[sqlx(try_from = "String")]
    pub status: AccountStatus,
    pub frozen_reason: Option<String>,
    /// The posted balance.
    pub balance: i64,
    /// What open holds reserve on this account (as their source).
    pub pending_debits: i64,
    /// What open holds would bring into this account.
    pub pending_credits: i64,
    pub created_at: DateTime<Utc>,
}

impl Account {
    /// The columns of [`Account`], in order, for `SELECT`/`RETURNING`.
    pub const COLUMNS: &'static str = "id, owner, owner_id, currency, kind, status, frozen_reason, balance, pending_debits, pending_credits, created_at";

    /// What the account can spend: the posted balance less what holds reserve.
    pub fn available_balance(&self) -> i64 {
        self.balance - self.pending_debits
    }

    /// The owner or a banker sees an account; anyone else is told it does not exist, so account
    /// ids cannot be probed. System accounts show to bankers only.
    pub fn visible_to(&self, caller: &Caller) -> bool {
        caller.is_banker()
            || (self.kind == AccountKind::Customer && self.owner_id == caller.user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_columns_decode_their_values_and_refuse_others() {
        for kind in [AccountKind::Customer, AccountKind::System] {
            assert_eq!(AccountKind::try_from(kind.as_str().to_owned()), Ok(kind));
        }
        for status in [AccountStatus::Active, AccountStatus::Frozen] {
            assert_eq!(
                AccountStatus::try_from(status.as_str().to_owned()),
                Ok(status)
            );
        }
        assert!(AccountKind::try_from("Customer".to_owned()).is_err());
        assert!(AccountStatus::try_from(String::new()).is_err());
    }
}
