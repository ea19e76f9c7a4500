//! gRPC handlers: extract and parse → call the domain → map the result.

use std::sync::Arc;

use platform::{Caller, caller::RpcResult, token::TokenMaker};
use proto::accounts::v1::{
    self as pb, CreateAccountRequest, FreezeAccountRequest, GetAccountRequest, ListAccountsRequest,
    ListAccountsResponse, UnfreezeAccountRequest, accounts_service_server::AccountsService,
};
use tonic::{Request, Response, Status};

use crate::domain::{
    Account, AccountId, AccountKind, AccountStatus, Accounts, Currencies, Owner, PageSize,
    PageToken, StatusReason,
};

pub struct AccountsApi {
    /// Opening, freezing, unfreezing: the primary.
    pub accounts: Accounts,
    /// GetAccount and ListAccounts: on `database.read_url` (a replica) when set, else the
    /// primary. A replica may lag: an account just opened can be NOT_FOUND there, and balances
    /// and statuses can be older, for the replica's lag (docs/scaling.md).
    pub reads: Accounts,
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

#[tonic::async_trait]
impl AccountsService for AccountsApi {
    async fn create_account(
        &self,
        request: Request<CreateAccountRequest>,
    ) -> RpcResult<pb::Account> {
        let caller = self.caller(&request)?;
        let currency = self
            .currencies
            .parse(&request.get_ref().currency, "currency")?;
        let account = self.accounts.open(&caller, &currency).await?;
        Ok(Response::new(to_proto(account)))
    }

    async fn get_account(&self, request: Request<GetAccountRequest>) -> RpcResult<pb::Account> {
        let caller = self.caller(&request)?;
        let id = AccountId::parse(request.get_ref().id, "id")?;
        let account = self.reads.get(&caller, id).await?;
        Ok(Response::new(to_proto(account)))
    }

    async fn list_accounts(
        &self,
        request: Request<ListAccountsRequest>,
    ) -> RpcResult<ListAccountsResponse> {
        let caller = self.caller(&request)?;
        let req = request.get_ref();
        let size = PageSize::parse(req.page_size)?;
        let token = PageToken::parse(&req.page_token)?;
        let owner = Owner::parse(&req.owner, &caller)?;
        let (accounts, next_page_token) = self.reads.list(&caller, &owner, size, token).await?;
        Ok(Response::new(ListAccountsResponse {
            accounts: accounts.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn freeze_account(
        &self,
        request: Request<FreezeAccountRequest>,
    ) -> RpcResult<pb::Account> {
        let caller = self.caller(&request)?;
        caller.require_banker()?;
        let req = request.get_ref();
        let id = AccountId::parse(req.id, "id")?;
        let reason = StatusReason::parse(&req.reason, true)?;
        let account = self.accounts.set_frozen(&caller, id, true, &reason).await?;
        Ok(Response::new(to_proto(account)))
    }

    async fn unfreeze_account(
        &self,
        request: Request<UnfreezeAccountRequest>,
    ) -> RpcResult<pb::Account> {
        let caller = self.caller(&request)?;
        caller.require_banker()?;
        let req = request.get_ref();
        let id = AccountId::parse(req.id, "id")?;
        let reason = StatusReason::parse(&req.reason, false)?;
        let account = self
            .accounts
            .set_frozen(&caller, id, false, &reason)
            .await?;
        Ok(Response::new(to_proto(account)))
    }
}

fn to_proto(account: Account) -> pb::Account {
    let status = match account.status {
        AccountStatus::Frozen => pb::AccountStatus::Frozen,
        AccountStatus::Active => pb::AccountStatus::Active,
    };
    let kind = match account.kind {
        AccountKind::System => pb::AccountKind::System,
        AccountKind::Customer => pb::AccountKind::Customer,
    };
    let available_balance = account.available_balance();
    pb::Account {
        id: account.id,
        owner: account.owner,
        currency: account.currency,
        balance: account.balance,
        pending_debits: account.pending_debits,
        pending_credits: account.pending_credits,
        available_balance,
        status: status as i32,
        kind: kind as i32,
        frozen_reason: account.frozen_reason.unwrap_or_default(),
        created_at: Some(proto::timestamp(account.created_at)),
    }
}
