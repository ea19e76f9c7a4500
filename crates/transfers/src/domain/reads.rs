//! The ledger's reads: a transfer, an account's transfers and its statement, each only for who
//! may see them (the owner of an account on either side, or a banker).

use chrono::{DateTime, Utc};
use ledger_model::{Account, AccountId, AccountKind, PageSize, PageToken};
use platform::{ApiError, Caller};
use sqlx::PgPool;

use super::error::{LedgerError, Refusal};
use crate::store::{self, EntryRow, TransferRow, TransferWithOwners};

/// A half-open range of instants, either end optional; `start < end` when both are given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

impl TimeRange {
    pub fn parse(
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Self, ApiError> {
        if let (Some(start), Some(end)) = (start, end)
            && start >= end
        {
            return Err(ApiError::invalid_field(
                "end_time",
                "must be after start_time",
            ));
        }
        Ok(Self { start, end })
    }
}

/// Whether the caller may see a transfer: a banker, or the owner of a customer account on
/// either side.
fn visible(caller: &Caller, t: &TransferWithOwners) -> bool {
    let owns = |owner: uuid::Uuid, kind: AccountKind| {
        kind == AccountKind::Customer && owner == caller.user_id
    };
    caller.is_banker() || owns(t.from_owner, t.from_kind) || owns(t.to_owner, t.to_kind)
}

/// The reads and their pools. `replica` (`database.read_url`, else the primary itself) serves
/// GetTransfer, GetTransaction, ListTransfers and ListEntries: what they show may lag the primary
/// by the replica's lag (a transfer just made may be missing for that long; docs/scaling.md).
/// GetBalance reads `db`, the primary: it answers "the balance as of" an instant (now by
/// default), and a lagging replica would state an old balance as the current one, the read a
/// client makes right after moving money to see it moved.
#[derive(Clone)]
pub struct Reads {
    pub db: PgPool,
    pub replica: PgPool,
}

impl Reads {
    /// The transfer if the caller owns one of its accounts or is a banker; NOT_FOUND otherwise.
    pub async fn transfer(&self, caller: &Caller, id: i64) -> Result<TransferRow, ApiError> {
        store::get_transfer(&self.replica, id)
            .await?
            .filter(|t| visible(caller, t))
            .map(|t| t.transfer)
            .ok_or_else(|| LedgerError::from(Refusal::TransferNotFound).into())
    }

    /// Every leg of a multi-leg transaction, in order, if the caller may see one of them (the
    /// owner of an account of any leg, or a banker); NOT_FOUND otherwise.
    pub async fn transaction(
        &self,
        caller: &Caller,
        id: i64,
    ) -> Result<Vec<TransferRow>, ApiError> {
        let legs = store::get_transaction(&self.replica, id).await?;
        if legs.is_empty() || !legs.iter().any(|t| visible(caller, t)) {
            return Err(ApiError::not_found(
                "transaction_not_found",
                "no such transaction",
            ));
        }
        Ok(legs.into_iter().map(|t| t.transfer).collect())
    }

    /// One page of the account's transfers (either direction), newest first, and the next
    /// page's token.
    ///
    /// With `metadata`, only the transfers that carry that key with that value.
    pub async fn transfers(
        &self,
        caller: &Caller,
        account: AccountId,
        metadata: Option<(String, String)>,
        size: PageSize,
        token: PageToken,
    ) -> Result<(Vec<TransferRow>, String), ApiError> {
        self.readable_account(&self.replica, caller, account)
            .await?;
        let filter = metadata.map(|(key, value)| serde_json::json!({ key: value }));
        let mut rows = store::list_transfers(&self.replica, account, filter, size, token).await?;
        let next_page_token = PageToken::paginate(&mut rows, size, |r| r.id);
        Ok((rows, next_page_token))
    }

    /// One page of the account's statement written in `range` (from, inclusive; until,
    /// exclusive), newest first, and the next page's token.
    pub async fn entries(
        &self,
        caller: &Caller,
        account: AccountId,
        range: TimeRange,
        size: PageSize,
        token: PageToken,
    ) -> Result<(Vec<EntryRow>, String), ApiError> {
        self.readable_account(&self.replica, caller, account)
            .await?;
        let mut rows = store::list_entries(
            &self.replica,
            account,
            (range.start, range.end),
            size,
            token,
        )
        .await?;
        let next_page_token = PageToken::paginate(&mut rows, size, |r| r.id);
        Ok((rows, next_page_token))
    }

    /// The account's posted balance at `as_of`: the balance after its last entry at or before it
    /// (0 before its first), with that entry's id (0 when none).
    pub async fn balance_at(
        &self,
        caller: &Caller,
        account: AccountId,
        as_of: DateTime<Utc>,
    ) -> Result<(Account, i64, i64), ApiError> {
        let row = self.readable_account(&self.db, caller, account).await?;
        let (entry_id, balance) = store::get_balance_at(&self.db, account, as_of)
            .await?
            .unwrap_or((0, 0));
        Ok((row, balance, entry_id))
    }

    /// The account (read on `pool`), if the caller may read it (owner or banker); NOT_FOUND
    /// otherwise.
    async fn readable_account(
        &self,
        pool: &PgPool,
        caller: &Caller,
        id: AccountId,
    ) -> Result<Account, ApiError> {
        ledger_model::store::get_account(pool, id)
            .await?
            .filter(|account| account.visible_to(caller))
            .ok_or_else(|| LedgerError::from(Refusal::AccountNotFound).into())
    }
}
