//! gRPC handlers: authenticate → parse into domain types → call the ledger or the store → map.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use platform::{ApiError, Caller, caller::RpcResult, token::TokenMaker};
use proto::timestamp;
use proto::transfers::v1::{
    Balance, BulkTransferResult, CreateTransactionRequest, CreateTransferRequest,
    CreateTransfersRequest, CreateTransfersResponse, CurrencyTotal, DepositRequest, Entry,
    FieldViolation, GetBalanceRequest, GetTransactionRequest, GetTransferRequest, ItemError,
    ListEntriesRequest, ListEntriesResponse, ListTransfersRequest, ListTransfersResponse,
    PostTransferRequest, ReconcileRequest, ReconcileResponse, ReverseTransferRequest, Transaction,
    TransactionResult, Transfer, TransferKind, TransferResult, TransferStatus, VoidTransferRequest,
    WithdrawRequest, bulk_transfer_result, transfers_service_server::TransfersService,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use std::collections::HashMap;

use crate::{
    config::MetadataConfig,
    domain::{
        AccountId, Amount, Command, Currencies, EntryLine, Kind, Ledger, LedgerError, Leg, Memo,
        Operation, Outcome, PageSize, PageToken, Reads, Refusal, Status as TransferState,
        TimeRange, TransferId, memo::metadata_from_json, movement, reconcile,
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
    /// The longest timeout a hold may ask for.
    pub max_hold_timeout: Duration,
    pub require_verified_email: bool,
    /// The server's per-request timeout: a request still queued after it is not applied.
    pub request_timeout: Duration,
    /// Bounds of descriptions and metadata.
    pub metadata_limits: MetadataConfig,
    /// Most legs of a multi-leg transaction.
    pub max_legs: usize,
    /// Most items of one CreateTransfers request.
    pub max_bulk_items: usize,
}

impl TransfersApi {
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        Ok(platform::caller::authenticate(
            request.metadata(),
            &self.tokens,
        )?)
    }

    /// A caller who may move money out of an account: signed in with a verified email.
    fn spender<T>(&self, request: &Request<T>) -> Result<Caller, ApiError> {
        let caller = platform::caller::authenticate(request.metadata(), &self.tokens)?;
        if self.require_verified_email && !caller.email_verified {
            return Err(ApiError::permission_denied(
                "email_not_verified",
                "verify your email address before moving money (then renew your token)",
            ));
        }
        Ok(caller)
    }

    /// Moves money and answers with the transfer, both entries and the source's new balance.
    /// A request refused before it reaches the ledger is counted in the same metric.
    async fn apply(
        &self,
        operation: &'static str,
        parsed: Result<Command, ApiError>,
        deadline: std::time::Instant,
    ) -> RpcResult<TransferResult> {
        let cmd = parsed.inspect_err(|e| movement::record_refusal(operation, e.reason))?;
        let outcome = self
            .ledger
            .apply(cmd, Some(deadline))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(result_to_proto(outcome)))
    }

    /// When the call must be answered: `server.request_timeout_ms` from now, or the caller's
    /// `grpc-timeout` if sooner. The batcher bounds the lock waits of the call's batch by it and
    /// drops the request unapplied once it has passed, so a caller whose own deadline ran out
    /// (tonic answers DEADLINE_EXCEEDED and drops the call) is not applied later.
    fn deadline_of<T>(&self, request: &Request<T>) -> std::time::Instant {
        let timeout = platform::grpc::call_timeout(
            request
                .metadata()
                .get(platform::grpc::GRPC_TIMEOUT)
                .map(|v| v.as_encoded_bytes()),
            self.request_timeout,
        );
        std::time::Instant::now() + timeout
    }

    fn memo(
        &self,
        description: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<Memo, ApiError> {
        Memo::parse(description, metadata, &self.metadata_limits)
    }

    /// A multi-leg transaction: 2 to `max_legs` legs, each a transfer between two accounts.
    fn parse_transaction(
        &self,
        request: &Request<CreateTransactionRequest>,
    ) -> Result<Command, ApiError> {
        let caller = self.spender(request)?;
        let req = request.get_ref();
        if req.legs.len() < 2 || req.legs.len() > self.max_legs {
            return Err(ApiError::invalid_field(
                "legs",
                format!("2 to {} legs", self.max_legs),
            ));
        }
        let memo = self.memo(&req.description, &req.metadata)?;
        let legs = req
            .legs
            .iter()
            .enumerate()
            .map(|(i, leg)| {
                let field = |name: &str| format!("legs[{i}].{name}");
                let from = AccountId::parse(leg.from_account_id, &field("from_account_id"))?;
                let to = AccountId::parse(leg.to_account_id, &field("to_account_id"))?;
                if from == to {
                    return Err(LedgerError::LegRefused {
                        leg: i + 1,
                        refusal: Refusal::SameAccount,
                    }
                    .into());
                }
                let amount =
                    Amount::parse(leg.amount, self.max_transfer_amount).map_err(|e| ApiError {
                        field_violations: e
                            .field_violations
                            .into_iter()
                            .map(|mut v| {
                                v.field = field(&v.field);
                                v
                            })
                            .collect(),
                        ..e
                    })?;
                let currency = self.currencies.parse(&leg.currency, &field("currency"))?;
                let description = match leg.description.as_str() {
                    "" => None,
                    text => {
                        let one = Memo::parse(text, &HashMap::new(), &self.metadata_limits)
                            .map_err(|_| {
                                ApiError::invalid_field(
                                    &field("description"),
                                    format!(
                                        "at most {} characters, no control characters",
                                        self.metadata_limits.max_description_chars
                                    ),
                                )
                            })?;
                        one.description
                    }
                };
                Ok(Leg {
                    from,
                    to,
                    amount,
                    currency,
                    description,
                })
            })
            .collect::<Result<Vec<Leg>, ApiError>>()?;
        Ok(Command {
            as_banker: caller.is_banker(),
            user_id: caller.user_id,
            username: caller.username,
            op: Operation::Transaction { legs },
            idempotency_key: platform::caller::idempotency_key(
                request.metadata(),
                &req.request_id,
            )?,
            memo,
        })
    }

    /// A reversal of a posted transfer, by its receiver or a banker (the ledger checks which).
    fn parse_reversal(
        &self,
        request: &Request<ReverseTransferRequest>,
    ) -> Result<Command, ApiError> {
        let caller = self.spender(request)?;
        let req = request.get_ref();
        let transfer = TransferId::parse(req.id, "id")?;
        let amount = match req.amount {
            0 => None,
            amount => Some(Amount::parse(amount, self.max_transfer_amount)?),
        };
        Ok(Command {
            as_banker: caller.is_banker(),
            user_id: caller.user_id,
            username: caller.username,
            op: Operation::Reverse { transfer, amount },
            idempotency_key: platform::caller::idempotency_key(
                request.metadata(),
                &req.request_id,
            )?,
            memo: self.memo(&req.description, &req.metadata)?,
        })
    }

    fn parse_transfer(
        &self,
        request: &Request<CreateTransferRequest>,
    ) -> Result<Command, ApiError> {
        let caller = self.spender(request)?;
        let req = request.get_ref();
        let key = platform::caller::idempotency_key(request.metadata(), &req.request_id);
        self.transfer_command(&caller, req, key)
    }

    /// A transfer or hold of `caller`, checked in the order CreateTransfer always has (the
    /// idempotency key's own error after the accounts, amount and currency).
    fn transfer_command(
        &self,
        caller: &Caller,
        req: &CreateTransferRequest,
        key: Result<Option<String>, ApiError>,
    ) -> Result<Command, ApiError> {
        let from = AccountId::parse(req.from_account_id, "from_account_id")?;
        let to = AccountId::parse(req.to_account_id, "to_account_id")?;
        if from == to {
            return Err(LedgerError::from(Refusal::SameAccount).into());
        }
        let amount = Amount::parse(req.amount, self.max_transfer_amount)?;
        let currency = self.currencies.parse(&req.currency, "currency")?;
        let op = if req.pending {
            Operation::Hold {
                from,
                to,
                amount,
                currency,
                expires_at: self.hold_expiry(req.hold_timeout_secs)?,
            }
        } else if req.hold_timeout_secs != 0 {
            return Err(ApiError::invalid_field(
                "hold_timeout_secs",
                "only a pending transfer (a hold) has a timeout",
            ));
        } else {
            Operation::Transfer {
                from,
                to,
                amount,
                currency,
            }
        };
        Ok(Command {
            as_banker: caller.is_banker(),
            user_id: caller.user_id,
            username: caller.username.clone(),
            op,
            idempotency_key: key?,
            memo: self.memo(&req.description, &req.metadata)?,
        })
    }

    /// The request-wide checks of a bulk request (the caller, the item count, one distinct
    /// `request_id` per item, no `idempotency-key` metadata), then each item parsed on its own:
    /// its command with its key, or the error CreateTransfer would answer for it alone.
    #[allow(clippy::type_complexity)]
    fn parse_bulk(
        &self,
        request: &Request<CreateTransfersRequest>,
    ) -> Result<Vec<(String, Result<Command, ApiError>)>, ApiError> {
        let caller = self.spender(request)?;
        if request
            .metadata()
            .contains_key(platform::caller::IDEMPOTENCY_KEY)
        {
            return Err(ApiError::invalid_field(
                "idempotency-key",
                "not used by a bulk request: give each item its own request_id",
            ));
        }
        let items = &request.get_ref().items;
        if items.is_empty() || items.len() > self.max_bulk_items {
            return Err(ApiError::new(
                tonic::Code::InvalidArgument,
                "bulk_items_out_of_range",
                format!(
                    "a bulk request carries 1 to {} items, not {}",
                    self.max_bulk_items,
                    items.len()
                ),
            )
            .with_violation("items", format!("1 to {} items", self.max_bulk_items)));
        }
        let no_metadata = tonic::metadata::MetadataMap::new();
        let mut missing = Vec::new();
        let mut first_of: HashMap<String, usize> = HashMap::with_capacity(items.len());
        let mut duplicates = Vec::new();
        let keys: Vec<Result<Option<String>, ApiError>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let key = platform::caller::idempotency_key(&no_metadata, &item.request_id);
                match &key {
                    Ok(None) => missing.push(i),
                    Ok(Some(k)) => {
                        if let Some(first) = first_of.get(k) {
                            duplicates.push((i, *first));
                        } else {
                            first_of.insert(k.clone(), i);
                        }
                    }
                    Err(_) => {}
                }
                key
            })
            .collect();
        if !missing.is_empty() {
            let mut e = ApiError::new(
                tonic::Code::InvalidArgument,
                "request_id_required",
                format!(
                    "every item of a bulk request needs its own request_id (its idempotency \
                     key); {} have none",
                    missing.len()
                ),
            );
            for i in missing {
                e = e.with_violation(&format!("items[{i}].request_id"), "required");
            }
            return Err(e);
        }
        if !duplicates.is_empty() {
            let mut e = ApiError::new(
                tonic::Code::InvalidArgument,
                "duplicate_request_id",
                format!(
                    "each item of a bulk request needs a request_id of its own; {} repeat an \
                     earlier item's",
                    duplicates.len()
                ),
            );
            for (i, first) in duplicates {
                e = e.with_violation(
                    &format!("items[{i}].request_id"),
                    format!("the same as items[{first}].request_id"),
                );
            }
            return Err(e);
        }
        Ok(items
            .iter()
            .zip(keys)
            .enumerate()
            .map(|(i, (item, key))| {
                let key = key.map_err(|e| rename_key_field(e, i));
                let shown = key.as_ref().ok().cloned().flatten().unwrap_or_default();
                let cmd = self
                    .transfer_command(&caller, item, key)
                    .map_err(|e| item_fields(e, i));
                (shown, cmd)
            })
            .collect())
    }

    /// When a hold asking for `timeout_secs` expires (`None`: never).
    fn hold_expiry(&self, timeout_secs: i64) -> Result<Option<DateTime<Utc>>, ApiError> {
        let max = self.max_hold_timeout.as_secs();
        match u64::try_from(timeout_secs) {
            Ok(0) => Ok(None),
            Ok(secs) if secs <= max => {
                let timeout = chrono::Duration::seconds(timeout_secs);
                Ok(Some(Utc::now() + timeout))
            }
            _ => Err(ApiError::invalid_field(
                "hold_timeout_secs",
                format!("between 0 (no timeout) and {max} seconds"),
            )),
        }
    }

    /// A post or void of a hold, by its creator or a banker (the ledger checks which).
    fn parse_end<T>(
        &self,
        request: &Request<T>,
        (id, amount, request_id): (i64, Option<i64>, &str),
        memo: (&str, &HashMap<String, String>),
    ) -> Result<Command, ApiError> {
        let caller = self.spender(request)?;
        let hold = TransferId::parse(id, "id")?;
        let op = match amount {
            None => Operation::Void { hold },
            Some(0) => Operation::Post { hold, amount: None },
            Some(amount) => Operation::Post {
                hold,
                amount: Some(Amount::parse(amount, self.max_transfer_amount)?),
            },
        };
        Ok(Command {
            as_banker: caller.is_banker(),
            user_id: caller.user_id,
            username: caller.username,
            op,
            idempotency_key: platform::caller::idempotency_key(request.metadata(), request_id)?,
            memo: self.memo(memo.0, memo.1)?,
        })
    }

    /// A banker's deposit or withdrawal on one customer account.
    fn parse_cash<T>(
        &self,
        request: &Request<T>,
        withdrawal: bool,
        (account_id, amount, currency, request_id): (i64, i64, &str, &str),
        memo: (&str, &HashMap<String, String>),
    ) -> Result<Command, ApiError> {
        let caller = platform::caller::authenticate(request.metadata(), &self.tokens)?;
        caller.require_banker()?;
        let account = AccountId::parse(account_id, "account_id")?;
        let amount = Amount::parse(amount, self.max_transfer_amount)?;
        let currency = self.currencies.parse(currency, "currency")?;
        let op = if withdrawal {
            Operation::Withdrawal {
                from: account,
                amount,
                currency,
            }
        } else {
            Operation::Deposit {
                to: account,
                amount,
                currency,
            }
        };
        Ok(Command {
            as_banker: true,
            user_id: caller.user_id,
            username: caller.username,
            op,
            idempotency_key: platform::caller::idempotency_key(request.metadata(), request_id)?,
            memo: self.memo(memo.0, memo.1)?,
        })
    }
}

#[tonic::async_trait]
impl TransfersService for TransfersApi {
    async fn create_transfer(
        &self,
        request: Request<CreateTransferRequest>,
    ) -> RpcResult<TransferResult> {
        let operation = if request.get_ref().pending {
            "hold"
        } else {
            "transfer"
        };
        self.apply(
            operation,
            self.parse_transfer(&request),
            self.deadline_of(&request),
        )
        .await
    }

    async fn create_transfers(
        &self,
        request: Request<CreateTransfersRequest>,
    ) -> RpcResult<CreateTransfersResponse> {
        let items = self
            .parse_bulk(&request)
            .inspect_err(|e| movement::record_refusal("bulk", e.reason))?;
        let deadline = self.deadline_of(&request);
        // every item is queued at once (in the order of the request), so the batcher takes them
        // into as few batches as `batch.max_size` allows
        let answers = futures::future::join_all(items.into_iter().map(|(request_id, cmd)| {
            let operation = match &cmd {
                Ok(Command {
                    op: Operation::Hold { .. },
                    ..
                }) => "hold",
                _ => "transfer",
            };
            async move {
                let outcome = match cmd {
                    Ok(cmd) => self
                        .ledger
                        .apply(cmd, Some(deadline))
                        .await
                        .map_err(ApiError::from),
                    Err(e) => {
                        movement::record_refusal(operation, e.reason);
                        Err(e)
                    }
                };
                (request_id, outcome)
            }
        }))
        .await;
        let results = answers
            .into_iter()
            .enumerate()
            .map(|(i, (request_id, outcome))| BulkTransferResult {
                request_id,
                outcome: Some(match outcome {
                    Ok(o) => bulk_transfer_result::Outcome::Result(result_to_proto(o)),
                    Err(e) => bulk_transfer_result::Outcome::Error(item_error(item_fields(e, i))),
                }),
            })
            .collect();
        Ok(Response::new(CreateTransfersResponse { results }))
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
        let metadata = match (req.metadata_key.as_str(), req.metadata_value.as_str()) {
            ("", "") => None,
            ("", _) => {
                return Err(ApiError::invalid_field(
                    "metadata_key",
                    "required with metadata_value",
                )
                .into());
            }
            (key, value) => {
                platform::text::reject_control_chars("metadata_key", key)?;
                platform::text::reject_control_chars("metadata_value", value)?;
                Some((key.to_owned(), value.to_owned()))
            }
        };
        let (rows, next_page_token) = self
            .reads
            .transfers(&caller, account, metadata, size, token)
            .await?;
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
        let range = TimeRange::parse(
            instant(req.start_time.as_ref(), "start_time")?,
            instant(req.end_time.as_ref(), "end_time")?,
        )?;
        let (rows, next_page_token) = self
            .reads
            .entries(&caller, account, range, size, token)
            .await?;
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
        let memo = (r.description.as_str(), &r.metadata);
        self.apply(
            "deposit",
            self.parse_cash(&request, false, args, memo),
            self.deadline_of(&request),
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
        let memo = (r.description.as_str(), &r.metadata);
        self.apply(
            "withdrawal",
            self.parse_cash(&request, true, args, memo),
            self.deadline_of(&request),
        )
        .await
    }

    async fn post_transfer(
        &self,
        request: Request<PostTransferRequest>,
    ) -> RpcResult<TransferResult> {
        let r = request.get_ref();
        let args = (r.id, Some(r.amount), r.request_id.as_str());
        let memo = (r.description.as_str(), &r.metadata);
        self.apply(
            "post",
            self.parse_end(&request, args, memo),
            self.deadline_of(&request),
        )
        .await
    }

    async fn void_transfer(
        &self,
        request: Request<VoidTransferRequest>,
    ) -> RpcResult<TransferResult> {
        let r = request.get_ref();
        let args = (r.id, None, r.request_id.as_str());
        let memo = (r.description.as_str(), &r.metadata);
        self.apply(
            "void",
            self.parse_end(&request, args, memo),
            self.deadline_of(&request),
        )
        .await
    }

    async fn reverse_transfer(
        &self,
        request: Request<ReverseTransferRequest>,
    ) -> RpcResult<TransferResult> {
        self.apply(
            "reverse",
            self.parse_reversal(&request),
            self.deadline_of(&request),
        )
        .await
    }

    async fn create_transaction(
        &self,
        request: Request<CreateTransactionRequest>,
    ) -> RpcResult<TransactionResult> {
        let cmd = self
            .parse_transaction(&request)
            .inspect_err(|e| movement::record_refusal("transaction", e.reason))?;
        let deadline = self.deadline_of(&request);
        let legs = self
            .ledger
            .apply_all(cmd, Some(deadline))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(TransactionResult {
            transaction_id: legs.first().and_then(|o| o.transaction_id).unwrap_or(0),
            replayed: legs.iter().any(|o| o.replayed),
            legs: legs.into_iter().map(result_to_proto).collect(),
        }))
    }

    async fn get_transaction(
        &self,
        request: Request<GetTransactionRequest>,
    ) -> RpcResult<Transaction> {
        let caller = self.caller(&request)?;
        let id = request.get_ref().id;
        if id <= 0 {
            return Err(ApiError::invalid_field("id", "must be a positive transaction id").into());
        }
        let legs = self.reads.transaction(&caller, id).await?;
        Ok(Response::new(Transaction {
            id,
            legs: legs.into_iter().map(transfer_to_proto).collect(),
        }))
    }

    async fn get_balance(&self, request: Request<GetBalanceRequest>) -> RpcResult<Balance> {
        let caller = self.caller(&request)?;
        let req = request.get_ref();
        let account = AccountId::parse(req.account_id, "account_id")?;
        let as_of = instant(req.as_of.as_ref(), "as_of")?.unwrap_or_else(Utc::now);
        let (row, balance, last_entry_id) = self.reads.balance_at(&caller, account, as_of).await?;
        Ok(Response::new(Balance {
            account_id: row.id,
            currency: row.currency,
            as_of: Some(timestamp(as_of)),
            balance,
            last_entry_id,
        }))
    }

    async fn reconcile(&self, request: Request<ReconcileRequest>) -> RpcResult<ReconcileResponse> {
        let caller = self.caller(&request)?;
        caller.require_banker()?;
        let mode = if request.get_ref().full {
            reconcile::Mode::Full
        } else {
            reconcile::Mode::Incremental
        };
        let report = reconcile::run(&self.db, mode)
            .await
            .map_err(ApiError::from)?;
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
            holds_checked: report.holds_checked,
            transactions_checked: report.transactions_checked,
            reversals_checked: report.reversals_checked,
            violations: report.violations,
            full: report.full,
            entries_checked: report.entries_checked,
            entry_watermark: report.entry_watermark,
            checkpoint_advanced: report.checkpoint_advanced,
        }))
    }
}

/// The field paths of item `i`'s error made paths of the bulk request (`amount` →
/// `items[3].amount`); those already named from the request are left.
fn item_fields(mut e: ApiError, i: usize) -> ApiError {
    let prefix = format!("items[{i}].");
    for v in &mut e.field_violations {
        if !v.field.starts_with("items[") {
            v.field = format!("{prefix}{}", v.field);
        }
    }
    e
}

/// An item's key error names the item's `request_id` (there is no `idempotency-key` metadata per
/// item).
fn rename_key_field(mut e: ApiError, i: usize) -> ApiError {
    for v in &mut e.field_violations {
        if v.field == platform::caller::IDEMPOTENCY_KEY || v.field == "request_id" {
            v.field = format!("items[{i}].request_id");
        }
    }
    e.message = e
        .message
        .replacen(platform::caller::IDEMPOTENCY_KEY, "request_id", 1);
    e
}

fn item_error(e: ApiError) -> ItemError {
    ItemError {
        code: e.code as i32,
        reason: e.reason.to_owned(),
        message: e.message,
        field_violations: e
            .field_violations
            .into_iter()
            .map(|v| FieldViolation {
                field: v.field,
                description: v.description,
            })
            .collect(),
        retry_after_secs: e
            .retry_after_secs
            .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)),
    }
}

/// An optional instant of a request; out of range is a field violation.
fn instant(
    t: Option<&prost_types::Timestamp>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    t.map(|t| {
        u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
            .ok_or_else(|| ApiError::invalid_field(field, "not a valid instant"))
    })
    .transpose()
}

fn kind_to_proto(kind: Kind) -> TransferKind {
    match kind {
        Kind::Deposit => TransferKind::Deposit,
        Kind::Withdrawal => TransferKind::Withdrawal,
        Kind::Transfer => TransferKind::Transfer,
    }
}

fn status_to_proto(status: TransferState) -> TransferStatus {
    match status {
        TransferState::Posted => TransferStatus::Posted,
        TransferState::Pending => TransferStatus::Pending,
        TransferState::Voided => TransferStatus::Voided,
        TransferState::Expired => TransferStatus::Expired,
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
        status: status_to_proto(t.status) as i32,
        hold: t.hold,
        hold_id: t.hold_id.unwrap_or(0),
        expires_at: t.expires_at.map(timestamp),
        description: t.description.unwrap_or_default(),
        metadata: metadata_from_json(t.metadata.as_ref()),
        reverses_id: t.reverses_id.unwrap_or(0),
        reversed_amount: t.reversed_amount,
        transaction_id: t.transaction_id.unwrap_or(0),
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
    let entry = |account_id: i64, line: EntryLine| Entry {
        id: line.id,
        account_id,
        transfer_id: o.transfer_id,
        amount: line.amount,
        balance_after: line.balance_after,
        created_at,
    };
    let (from_entry, to_entry) = match o.entries {
        Some((debit, credit)) => (
            Some(entry(o.from_account_id, debit)),
            Some(entry(o.to_account_id, credit)),
        ),
        None => (None, None),
    };
    TransferResult {
        from_account_balance: from_entry.as_ref().map_or(0, |e| e.balance_after),
        from_entry,
        to_entry,
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
            status: status_to_proto(o.status) as i32,
            hold: o.hold,
            hold_id: o.hold_id.unwrap_or(0),
            expires_at: o.expires_at.map(timestamp),
            description: o.description.unwrap_or_default(),
            metadata: o.metadata,
            reverses_id: o.reverses.map_or(0, |r| r.id),
            reversed_amount: o.reversed_amount,
            transaction_id: o.transaction_id.unwrap_or(0),
        }),
    }
}
