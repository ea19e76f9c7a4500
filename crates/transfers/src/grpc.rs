//! gRPC handlers: authenticate → parse into domain types → call the ledger or the store → map.

use std::sync::Arc;

use platform::{ApiError, Caller, caller::RpcResult, token::TokenMaker};
use proto::timestamp;
use proto::transfers::v1::{
    CreateTransferRequest, CurrencyTotal, DepositRequest, Entry, GetTransferRequest,
    ListEntriesRequest, ListEntriesResponse, ListTransfersRequest, ListTransfersResponse,
    ReconcileRequest, ReconcileResponse, Transfer, TransferKind, TransferResult, WithdrawRequest,
    transfers_service_server::TransfersService,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        AccountId, Amount, Command, Currencies, Kind, Ledger, LedgerError, Outcome, PageSize,
        PageToken, Reads, Refusal, movement, reconcile,
    },
    store::{EntryRow, TransferRow},
};

pub struct TransfersApi {
    /// For the reconciliation's snapshot.
    pub db: PgPool,
    pub ledger: Ledger,
    pub reads: Reads,
    pub tokens: Arc<dyn TokenMaker>,
    pub currencies: Currencies,
    pub max_transfer_amount: i64,
    pub require_verified_email: bool,
    /// The server's per-request timeout: a request still queued after it is not applied.
    pub request_timeout: std::time::Duration,
}

impl TransfersApi {
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        Ok(platform::caller::authenticate(
            request.metadata(),
            &self.tokens,
        )?)
    }

    /// Moves money and answers with the transfer, both entries and the source's new balance.
    /// A request refused before it reaches the ledger is counted in the same metric.
    async fn apply(
        &self,
        kind: Kind,
        parsed: Result<Command, ApiError>,
    ) -> RpcResult<TransferResult> {
        let cmd = parsed.inspect_err(|e| movement::record_refusal(kind, e.reason))?;
        // The client's grpc-timeout is enforced by the server dropping this future, which the
        // batcher sees (the answer channel closes); the server's own timeout is checked here too.
        let deadline = std::time::Instant::now() + self.request_timeout;
        let outcome = self
            .ledger
            .apply(cmd, Some(deadline))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(result_to_proto(outcome)))
    }

    fn parse_transfer(
        &self,
        request: &Request<CreateTransferRequest>,
    ) -> Result<Command, ApiError> {
        let caller = platform::caller::authenticate(request.metadata(), &self.tokens)?;
        if self.require_verified_email && !caller.email_verified {
            return Err(ApiError::permission_denied(
                "email_not_verified",
                "verify your email address before moving money (then renew your token)",
            ));
        }
        let req = request.get_ref();
        let from = AccountId::parse(req.from_account_id, "from_account_id")?;
        let to = AccountId::parse(req.to_account_id, "to_account_id")?;
        if from == to {
            return Err(LedgerError::from(Refusal::SameAccount).into());
        }
        Ok(Command {
            username: caller.username,
            kind: Kind::Transfer,
            from: Some(from),
            to: Some(to),
            amount: Amount::parse(req.amount, self.max_transfer_amount)?,
            currency: self.currencies.parse(&req.currency, "currency")?,
            idempotency_key: platform::caller::idempotency_key(
                request.metadata(),
                &req.request_id,
            )?,
        })
    }

    /// A banker's deposit or withdrawal on one customer account.
    fn parse_cash<T>(
        &self,
        request: &Request<T>,
        kind: Kind,
        (account_id, amount, currency, request_id): (i64, i64, &str, &str),
    ) -> Result<Command, ApiError> {
        let caller = platform::caller::authenticate(request.metadata(), &self.tokens)?;
        caller.require_banker()?;
        let account = Some(AccountId::parse(account_id, "account_id")?);
        let (from, to) = match kind {
            Kind::Withdrawal => (account, None),
            _ => (None, account),
        };
        Ok(Command {
            username: caller.username,
            kind,
            from,
            to,
            amount: Amount::parse(amount, self.max_transfer_amount)?,
            currency: self.currencies.parse(currency, "currency")?,
            idempotency_key: platform::caller::idempotency_key(request.metadata(), request_id)?,
        })
    }
}

#[tonic::async_trait]
impl TransfersService for TransfersApi {
    async fn create_transfer(
        &self,
        request: Request<CreateTransferRequest>,
    ) -> RpcResult<TransferResult> {
        self.apply(Kind::Transfer, self.parse_transfer(&request))
            .await
    }

    async fn get_transfer(&self, request: Request<GetTransferRequest>) -> RpcResult<Transfer> {
        let caller = self.caller(&request)?;
        let id = request.get_ref().id;
        if id <= 0 {
            return Err(ApiError::invalid_field("id", "must be a positive transfer id").into());
        }
        let transfer = self.reads.transfer(&caller, id).await?;
        Ok(Response::new(transfer_to_proto(transfer)))
    }

    async fn list_transfers(
        &self,
        request: Request<ListTransfersRequest>,
    ) -> RpcResult<ListTransfersResponse> {
        let caller = self.caller(&request)?;
        let req = request.get_ref();
        let account = AccountId::parse(req.account_id, "account_id")?;
        let size = PageSize::parse(req.page_size)?;
        let token = PageToken::parse(&req.page_token)?;
        let (rows, next_page_token) = self.reads.transfers(&caller, account, size, token).await?;
        Ok(Response::new(ListTransfersResponse {
            transfers: rows.into_iter().map(transfer_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn list_entries(
        &self,
        request: Request<ListEntriesRequest>,
    ) -> RpcResult<ListEntriesResponse> {
        let caller = self.caller(&request)?;
        let req = request.get_ref();
        let account = AccountId::parse(req.account_id, "account_id")?;
        let size = PageSize::parse(req.page_size)?;
        let token = PageToken::parse(&req.page_token)?;
        let (rows, next_page_token) = self.reads.entries(&caller, account, size, token).await?;
        Ok(Response::new(ListEntriesResponse {
            entries: rows.into_iter().map(entry_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn deposit(&self, request: Request<DepositRequest>) -> RpcResult<TransferResult> {
        let r = request.get_ref();
        let args = (
            r.account_id,
            r.amount,
            r.currency.as_str(),
            r.request_id.as_str(),
        );
        self.apply(
            Kind::Deposit,
            self.parse_cash(&request, Kind::Deposit, args),
        )
        .await
    }

    async fn withdraw(&self, request: Request<WithdrawRequest>) -> RpcResult<TransferResult> {
        let r = request.get_ref();
        let args = (
            r.account_id,
            r.amount,
            r.currency.as_str(),
            r.request_id.as_str(),
        );
        self.apply(
            Kind::Withdrawal,
            self.parse_cash(&request, Kind::Withdrawal, args),
        )
        .await
    }

    async fn reconcile(&self, request: Request<ReconcileRequest>) -> RpcResult<ReconcileResponse> {
        let caller = self.caller(&request)?;
        caller.require_banker()?;
        let report = reconcile::run(&self.db).await.map_err(ApiError::from)?;
        if !report.ok() {
            tracing::error!(violations = ?report.violations, "reconcile found violations");
        }
        Ok(Response::new(ReconcileResponse {
            ok: report.ok(),
            totals: report
                .totals
                .into_iter()
                .map(|t| CurrencyTotal {
                    currency: t.currency,
                    total_balance: t.total_balance,
                    accounts: t.accounts,
                })
                .collect(),
            accounts_checked: report.accounts_checked,
            transfers_checked: report.transfers_checked,
            violations: report.violations,
        }))
    }
}

fn kind_to_proto(kind: Kind) -> TransferKind {
    match kind {
        Kind::Deposit => TransferKind::Deposit,
        Kind::Withdrawal => TransferKind::Withdrawal,
        Kind::Transfer => TransferKind::Transfer,
    }
}

fn transfer_to_proto(t: TransferRow) -> Transfer {
    Transfer {
        id: t.id,
        from_account_id: t.from_account_id,
        to_account_id: t.to_account_id,
        amount: t.amount,
        currency: t.currency,
        kind: kind_to_proto(t.kind) as i32,
        created_by: t.created_by,
        created_at: Some(timestamp(t.created_at)),
    }
}

fn entry_to_proto(e: EntryRow) -> Entry {
    Entry {
        id: e.id,
        account_id: e.account_id,
        transfer_id: e.transfer_id,
        amount: e.amount,
        balance_after: e.balance_after,
        created_at: Some(timestamp(e.created_at)),
    }
}

fn result_to_proto(o: Outcome) -> TransferResult {
    let created_at = Some(timestamp(o.created_at));
    TransferResult {
        from_entry: Some(Entry {
            id: o.from_entry_id,
            account_id: o.from_account_id,
            transfer_id: o.transfer_id,
            amount: o.from_entry_amount,
            balance_after: o.from_balance_after,
            created_at,
        }),
        to_entry: Some(Entry {
            id: o.to_entry_id,
            account_id: o.to_account_id,
            transfer_id: o.transfer_id,
            amount: o.to_entry_amount,
            balance_after: o.to_balance_after,
            created_at,
        }),
        from_account_balance: o.from_balance_after,
        replayed: o.replayed,
        transfer: Some(Transfer {
            id: o.transfer_id,
            from_account_id: o.from_account_id,
            to_account_id: o.to_account_id,
            amount: o.amount,
            currency: o.currency,
            kind: kind_to_proto(o.kind) as i32,
            created_by: o.created_by,
            created_at,
        }),
    }
}
