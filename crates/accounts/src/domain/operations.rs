//! What the accounts service does: open, read, list, freeze and unfreeze accounts.

use platform::{ApiError, Caller};
use sqlx::PgPool;

use ledger_model::{Account, AccountId, Currency, PageSize, PageToken};

use super::reason::{Owner, StatusReason};
use crate::store;

/// The accounts service's operations over its database.
#[derive(Clone)]
pub struct Accounts {
    pub db: PgPool,
}

fn account_not_found() -> ApiError {
    ApiError::not_found("account_not_found", "no such account")
}

impl Accounts {
    /// Opens the caller's account in `currency`; one per owner and currency.
    pub async fn open(&self, caller: &Caller, currency: &Currency) -> Result<Account, ApiError> {
        let account = store::insert_account(&self.db, caller.user_id, &caller.username, currency)
            .await?
            .ok_or_else(|| {
                ApiError::already_exists(
                    "account_exists",
                    format!("you already have a {currency} account"),
                )
            })?;
        tracing::info!(account_id = account.id, owner = %account.owner, %currency, "account opened");
        Ok(account)
    }

    /// The account if the caller may see it; NOT_FOUND otherwise (ids cannot be probed).
    pub async fn get(&self, caller: &Caller, id: AccountId) -> Result<Account, ApiError> {
        ledger_model::store::get_account(&self.db, id)
            .await?
            .filter(|account| account.visible_to(caller))
            .ok_or_else(account_not_found)
    }

    /// One page of `owner`'s accounts, newest first, and the next page's token: the caller's own
    /// by user id, or (a banker's filter) those opened under a username, by whichever user had
    /// it. System accounts only ever show to bankers.
    pub async fn list(
        &self,
        caller: &Caller,
        owner: &Owner,
        size: PageSize,
        token: PageToken,
    ) -> Result<(Vec<Account>, String), ApiError> {
        let owned = match owner {
            Owner::Caller(id) => store::Owned::ById(*id),
            Owner::Username(name) => store::Owned::ByUsername(name),
        };
        let mut rows =
            store::list_accounts(&self.db, owned, caller.is_banker(), size, token).await?;
        let next_page_token = PageToken::paginate(&mut rows, size, |r| r.id);
        Ok((rows, next_page_token))
    }

    /// Freezes (`frozen = true`) or unfreezes a customer account; bankers only.
    pub async fn set_frozen(
        &self,
        caller: &Caller,
        id: AccountId,
        frozen: bool,
        reason: &StatusReason,
    ) -> Result<Account, ApiError> {
        caller.require_banker()?;
        let frozen_reason = frozen.then_some(reason.as_str());
        let account = store::update_account_status(&self.db, id, frozen_reason)
            .await?
            .ok_or_else(account_not_found)?;
        let what = if frozen {
            "account frozen"
        } else {
            "account unfrozen"
        };
        tracing::info!(account_id = account.id, banker = %caller.username, %reason, "{what}");
        Ok(account)
    }
}
