//! gRPC handlers: extract and parse → call the store → map the result.

use std::sync::Arc;

use platform::{ApiError, Caller, caller::RpcResult, token::TokenMaker};
use proto::accounts::v1::{
    Account, AccountKind, AccountStatus, CreateAccountRequest, FreezeAccountRequest,
    GetAccountRequest, ListAccountsRequest, ListAccountsResponse, UnfreezeAccountRequest,
    accounts_service_server::AccountsService,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    domain::{AccountId, Currencies, PageSize, PageToken},
    store::{self, AccountRow},
};

/// Longest freeze/unfreeze reason kept.
const REASON_MAX_CHARS: usize = 200;
/// Longest owner filter accepted (usernames are at most 32 characters).
const OWNER_MAX_CHARS: usize = 64;

pub struct AccountsApi {
    pub db: PgPool,
    pub tokens: Arc<dyn TokenMaker>,
    pub currencies: Currencies,
}

impl AccountsApi {
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        Ok(platform::caller::authenticate(
            request.metadata(),
            &self.tokens,
        )?)
    }
}

/// The owner or a banker sees an account; anyone else is told it does not exist, so account ids
/// cannot be probed. System accounts show to bankers only.
pub fn visible_to(caller: &Caller, row: &AccountRow) -> bool {
    caller.is_banker() || (row.kind == "customer" && row.owner == caller.username)
}

fn account_not_found() -> ApiError {
    ApiError::not_found("account_not_found", "no such account")
}

fn reason(text: &str, required: bool) -> Result<String, ApiError> {
    let text = text.trim();
    if required && text.is_empty() {
        return Err(ApiError::invalid_field("reason", "required"));
    }
    if text.chars().count() > REASON_MAX_CHARS {
        return Err(ApiError::invalid_field(
            "reason",
            format!("at most {REASON_MAX_CHARS} characters"),
        ));
    }
    Ok(text.to_owned())
}

#[tonic::async_trait]
impl AccountsService for AccountsApi {
    async fn create_account(&self, request: Request<CreateAccountRequest>) -> RpcResult<Account> {
        let caller = self.caller(&request)?;
        let currency = self
            .currencies
            .parse(&request.get_ref().currency, "currency")?;
        let row = store::create(&self.db, &caller.username, &currency)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| {
                ApiError::already_exists(
                    "account_exists",
                    format!("you already have a {currency} account"),
                )
            })?;
        tracing::info!(account_id = row.id, owner = %row.owner, %currency, "account opened");
        Ok(Response::new(to_proto(row)))
    }

    async fn get_account(&self, request: Request<GetAccountRequest>) -> RpcResult<Account> {
        let caller = self.caller(&request)?;
        let id = AccountId::parse(request.get_ref().id, "id")?;
        let row = store::get(&self.db, id)
            .await
            .map_err(ApiError::from)?
            .filter(|row| visible_to(&caller, row))
            .ok_or_else(account_not_found)?;
        Ok(Response::new(to_proto(row)))
    }

    async fn list_accounts(
        &self,
        request: Request<ListAccountsRequest>,
    ) -> RpcResult<ListAccountsResponse> {
        let caller = self.caller(&request)?;
        let req = request.get_ref();
        let size = PageSize::parse(req.page_size)?;
        let token = PageToken::parse(&req.page_token)?;
        let owner = req.owner.trim();
        let owner = if owner.is_empty() || owner == caller.username {
            caller.username.clone()
        } else {
            caller.require_banker()?;
            if owner.chars().count() > OWNER_MAX_CHARS {
                return Err(ApiError::invalid_field(
                    "owner",
                    format!("at most {OWNER_MAX_CHARS} characters"),
                )
                .into());
            }
            owner.to_owned()
        };
        let mut rows = store::list(&self.db, &owner, caller.is_banker(), size, token)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = PageToken::paginate(&mut rows, size, |r| r.id);
        Ok(Response::new(ListAccountsResponse {
            accounts: rows.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn freeze_account(&self, request: Request<FreezeAccountRequest>) -> RpcResult<Account> {
        let caller = self.caller(&request)?;
        caller.require_banker()?;
        let req = request.get_ref();
        let id = AccountId::parse(req.id, "id")?;
        let reason = reason(&req.reason, true)?;
        let row = store::set_status(&self.db, id, Some(&reason))
            .await
            .map_err(ApiError::from)?
            .ok_or_else(account_not_found)?;
        tracing::info!(account_id = row.id, banker = %caller.username, %reason, "account frozen");
        Ok(Response::new(to_proto(row)))
    }

    async fn unfreeze_account(
        &self,
        request: Request<UnfreezeAccountRequest>,
    ) -> RpcResult<Account> {
        let caller = self.caller(&request)?;
        caller.require_banker()?;
        let req = request.get_ref();
        let id = AccountId::parse(req.id, "id")?;
        let reason = reason(&req.reason, false)?;
        let row = store::set_status(&self.db, id, None)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(account_not_found)?;
        tracing::info!(account_id = row.id, banker = %caller.username, %reason, "account unfrozen");
        Ok(Response::new(to_proto(row)))
    }
}

pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn to_proto(row: AccountRow) -> Account {
    let status = match row.status.as_str() {
        "frozen" => AccountStatus::Frozen,
        _ => AccountStatus::Active,
    };
    let kind = match row.kind.as_str() {
        "system" => AccountKind::System,
        _ => AccountKind::Customer,
    };
    Account {
        id: row.id,
        owner: row.owner,
        currency: row.currency,
        balance: row.balance,
        status: status as i32,
        kind: kind as i32,
        frozen_reason: row.frozen_reason.unwrap_or_default(),
        created_at: Some(timestamp(row.created_at)),
    }
}
