//! Group commit: concurrent money movements are collected into batches and each batch is applied
//! by ONE call of `ledger.transfer_batch` (one statement, one round trip, one transaction).
//!
//! Why: on a hot account every transfer in its own transaction waits for the previous one's row
//! lock and leaves a dead row version behind; a batch locks, updates and commits the row once.
//!
//! The flow: [`super::ledger::Ledger::apply`] puts a [`Pending`] on a bounded queue (full →
//! `transfer_queue_full` at once) and awaits its own oneshot answer. The collector task takes
//! the first waiting request, then more for at most `batch.window_us` or until `batch.max_size`,
//! waits for one of `batch.max_in_flight` slots, and hands the batch to [`Executor::run`].
//! With `batch.hold_conflicting` (off by default; see its docs) a batch that would lock an account a batch in
//! flight holds (the hot account, a currency's system account) is held back until that batch has
//! finished, and keeps taking new requests meanwhile: it would only wait for the same row lock
//! inside PostgreSQL, holding a connection and a handful of transfers, so the hot account is
//! updated by one big batch after another instead of by several small ones queued on its lock.
//! Then:
//! - requests whose caller is gone (deadline hit, cancelled) or whose deadline passed are
//!   answered `deadline_exceeded` and not applied;
//! - the rest go to the database in arrival order; each gets its own result (one transfer's
//!   insufficient funds does not fail the others);
//! - every call's lock waits are bounded (`batch.lock_timeout_ms`, and never past the batch's
//!   earliest deadline), so a row held by someone else cannot stall the batch and everything
//!   queued behind it; a batch that runs out is split around the accounts found locked, which
//!   stay suspect until a request on them goes through: their requests go alone, each waiting
//!   for the held row before it locks anything else, and are answered `account_busy` (nothing
//!   moved) while it stays held (see [`Executor::try_suspect`]);
//! - if the call itself fails (not a business failure), the whole batch was rolled back (the
//!   database reported it) and its requests are retried alone, side by side, each caller
//!   answered from its own retry (one that runs out of lock time again: `account_busy`, nothing
//!   moved). If the connection broke so that a commit may have happened, only requests with an
//!   idempotency key are retried (a replay is safe); the others get `outcome_unknown`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use ledger_model::{AccountId, Currency};
use sqlx::PgPool;
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    time::Instant as TokioInstant,
};

use super::{
    error::LedgerError,
    memo::metadata_from_json,
    movement::{
        Command, EntryLine, Kind, Operation, Outcome, Reversed, Status, TransferId, record,
    },
};
use crate::{
    config::BatchConfig,
    store::{self, BatchRow},
};

/// A request's answer: its transfer, or every leg of a multi-leg transaction, in order.
pub type Answer = Result<Vec<Outcome>, LedgerError>;

/// A queued request and where its answer goes.
pub struct Pending {
    pub cmd: Command,
    /// Not applied once this has passed.
    pub deadline: Option<std::time::Instant>,
    pub enqueued: std::time::Instant,
    pub reply: oneshot::Sender<Answer>,
}

/// Starts the collector task; returns the queue's sending side. The task ends when every
/// sender is dropped (the service stopped), after the batches in flight finish.
pub(crate) fn start(exec: Executor, cfg: &BatchConfig) -> mpsc::Sender<Pending> {
    let (tx, rx) = mpsc::channel(cfg.queue_capacity);
    tokio::spawn(collect(rx, exec, cfg.clone()));
    tx
}

async fn collect(mut rx: mpsc::Receiver<Pending>, exec: Executor, cfg: BatchConfig) {
    let window = Duration::from_micros(cfg.window_us);
    let max = cfg.max_size;
    let slots = Arc::new(Semaphore::new(cfg.max_in_flight));
    let busy = Arc::new(Busy::default());
    loop {
        let mut batch = Vec::with_capacity(max);
        if rx.recv_many(&mut batch, max).await == 0 {
            return; // every sender is gone
        }
        let until = TokioInstant::now() + window;
        while batch.len() < max {
            let room = max - batch.len();
            match tokio::time::timeout_at(until, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // requests that arrived while every slot was busy join this batch
        while batch.len() < max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if cfg.hold_conflicting {
            hold_while_conflicting(&mut batch, &mut rx, &busy, max).await;
        }
        let locks = Busy::take(&busy, &batch);
        let exec = exec.clone();
        tokio::spawn(async move {
            // the slot goes back before any retry of its requests alone (see `retry_alone`)
            exec.run(batch, Some(slot)).await;
            drop(locks); // also when `run` panics: a stuck mark would hold later batches back
        });
    }
}

/// While `batch` would lock an account that a batch in flight holds, waits for batches to
/// finish, taking newly arrived requests into `batch` meanwhile (up to `max`). Gives up holding
/// when the batch is full, the queue closed or after [`HOLD_AT_MOST`]: the database's row locks
/// keep it correct anyway; holding only spares a connection and makes the next batch bigger.
async fn hold_while_conflicting(
    batch: &mut Vec<Pending>,
    rx: &mut mpsc::Receiver<Pending>,
    busy: &Busy,
    max: usize,
) {
    let mut held = false;
    let until = TokioInstant::now() + HOLD_AT_MOST;
    while batch.len() < max {
        // registered before the check, so a batch finishing in between is not missed
        let finished = busy.finished.notified();
        tokio::pin!(finished);
        finished.as_mut().enable();
        if !busy.conflicts(batch) {
            break;
        }
        held = true;
        tokio::select! {
            () = &mut finished => {}
            () = tokio::time::sleep_until(until) => break,
            n = rx.recv_many(batch, max - batch.len()) => {
                if n == 0 {
                    break;
                }
            }
        }
    }
    if held {
        metrics::counter!("transfer_batches_held_total").increment(1);
    }
}

/// Requests of a failed batch retried alone at the same time (each holds a connection).
const RETRIES_AT_ONCE: usize = 8;

/// A suspect account not found locked again for this long is forgotten (only bounds the map;
/// its next request would find out anew).
const SUSPECT_FORGOTTEN_AFTER: Duration = Duration::from_secs(600);

/// The longest a batch is held back for a conflicting one.
const HOLD_AT_MOST: Duration = Duration::from_millis(250);

/// What a batch locks: an account by id, or a currency's system account (deposits and
/// withdrawals name it only by currency).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum LockKey {
    Account(AccountId),
    System(Currency),
    /// A post, void or expiry names only its hold, a reversal only the transfer it reverses;
    /// their accounts are found in the database.
    Hold(TransferId),
}

impl LockKey {
    fn of(cmd: &Command) -> Vec<LockKey> {
        use LockKey::{Account, Hold, System};
        match &cmd.op {
            Operation::Transfer { from, to, .. } | Operation::Hold { from, to, .. } => {
                vec![Account(*from), Account(*to)]
            }
            Operation::Deposit { to, currency, .. } => vec![System(currency.clone()), Account(*to)],
            Operation::Withdrawal { from, currency, .. } => {
                vec![Account(*from), System(currency.clone())]
            }
            Operation::Post { hold, .. }
            | Operation::Void { hold }
            | Operation::Expire { hold }
            | Operation::Reverse { transfer: hold, .. } => vec![Hold(*hold)],
            Operation::Transaction { legs } => legs
                .iter()
                .flat_map(|leg| [Account(leg.from), Account(leg.to)])
                .collect(),
        }
    }
}

/// The accounts locked by batches in flight (with how many batches lock each), and a signal
/// raised whenever one finishes.
#[derive(Default)]
struct Busy {
    locked: Mutex<HashMap<LockKey, u32>>,
    finished: Notify,
}

impl Busy {
    fn conflicts(&self, batch: &[Pending]) -> bool {
        let locked = self.locked.lock().unwrap_or_else(|e| e.into_inner());
        !locked.is_empty()
            && batch
                .iter()
                .flat_map(|p| LockKey::of(&p.cmd))
                .any(|k| locked.contains_key(&k))
    }

    /// Marks the batch's accounts as locked until the returned guard is dropped.
    fn take(busy: &Arc<Busy>, batch: &[Pending]) -> Locks {
        let mut keys: Vec<LockKey> = batch.iter().flat_map(|p| LockKey::of(&p.cmd)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut locked = busy.locked.lock().unwrap_or_else(|e| e.into_inner());
        for k in &keys {
            *locked.entry(k.clone()).or_insert(0) += 1;
        }
        Locks {
            busy: busy.clone(),
            keys,
        }
    }
}

/// A batch's marks in [`Busy`]; dropping it clears them and wakes held batches.
struct Locks {
    busy: Arc<Busy>,
    keys: Vec<LockKey>,
}

impl Drop for Locks {
    fn drop(&mut self) {
        {
            let mut locked = self.busy.locked.lock().unwrap_or_else(|e| e.into_inner());
            for k in &self.keys {
                if let Some(n) = locked.get_mut(k) {
                    *n -= 1;
                    if *n == 0 {
                        locked.remove(k);
                    }
                }
            }
        }
        self.busy.finished.notify_waiters();
    }
}

/// Applies batches: the one place that calls `ledger.transfer_batch`.
#[derive(Clone)]
pub struct Executor {
    db: PgPool,
    max_transfer_amount: i64,
    /// The longest one call may wait for a row lock (`batch.lock_timeout_ms`).
    lock_timeout: Duration,
    /// Accounts found locked by someone else after a batch ran out of lock time (with when they
    /// were last found so): requests that need one go alone ([`Self::try_suspects`]), so they
    /// cannot make another whole batch wait out a lock timeout. An account stays suspect until
    /// a request on it goes through, however long the row is held (a timer would let it back
    /// into mixed batches while still held, each of which would then wait a lock timeout again).
    suspects: Arc<Mutex<HashMap<LockKey, std::time::Instant>>>,
    /// Turns of requests on suspect accounts: at most this many wait on held rows at once, each
    /// with a connection, so the batches of other accounts always find connections in the pool.
    suspect_turns: Arc<Semaphore>,
}

impl Executor {
    pub fn new(db: PgPool, max_transfer_amount: i64, lock_timeout: Duration) -> Self {
        let connections = usize::try_from(db.options().get_max_connections()).unwrap_or(1);
        Self {
            db,
            max_transfer_amount,
            lock_timeout,
            suspects: Arc::default(),
            suspect_turns: Arc::new(Semaphore::new((connections / 4).clamp(1, RETRIES_AT_ONCE))),
        }
    }

    /// The keys of a request that are suspect (found locked by someone else, not yet seen free).
    fn suspect_keys(&self, p: &Pending) -> Vec<LockKey> {
        let suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        if suspects.is_empty() {
            return Vec::new();
        }
        LockKey::of(&p.cmd)
            .into_iter()
            .filter(|k| suspects.contains_key(k))
            .collect()
    }

    /// Whether a request needs an account that was found locked by someone else.
    fn is_suspect(&self, p: &Pending) -> bool {
        !self.suspect_keys(p).is_empty()
    }

    /// Marks keys as suspect (again). Marks older than [`SUSPECT_FORGOTTEN_AFTER`] are dropped
    /// here, which only bounds the map: an account's requests normally clear its mark.
    fn suspect(&self, keys: impl IntoIterator<Item = LockKey>) {
        let now = std::time::Instant::now();
        let mut suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        suspects.retain(|_, at| now.duration_since(*at) < SUSPECT_FORGOTTEN_AFTER);
        for key in keys {
            suspects.insert(key, now);
        }
    }

    /// A request on these keys went through: their rows are free, their requests batch again.
    fn clear_suspects(&self, keys: &[LockKey]) {
        let mut suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            suspects.remove(key);
        }
    }

    /// Applies a batch and answers every request in it (see the module docs). `slot` is the
    /// batch's place among those in flight, given back once its own call is done.
    pub async fn run(&self, items: Vec<Pending>, slot: Option<OwnedSemaphorePermit>) {
        let now = std::time::Instant::now();
        let mut live: Vec<Pending> = Vec::with_capacity(items.len());
        for p in items {
            if p.reply.is_closed() || p.deadline.is_some_and(|d| d <= now) {
                answer(p, Err(LedgerError::DeadlineExceeded));
            } else {
                metrics::histogram!("transfer_queue_wait_seconds")
                    .record(now.duration_since(p.enqueued).as_secs_f64());
                live.push(p);
            }
        }
        if live.is_empty() {
            return;
        }
        metrics::histogram!("transfer_batch_size").record(live.len() as f64);
        // also a batch of one: tried as part of a batch it would lock its other accounts and
        // then wait on the held row, holding them
        if live.iter().any(|p| self.is_suspect(p)) {
            let (suspect, normal): (Vec<Pending>, Vec<Pending>) =
                live.into_iter().partition(|p| self.is_suspect(p));
            drop(slot);
            let alone = self.try_suspects(suspect);
            let together = self.run_together(normal);
            futures::join!(alone, together);
            return;
        }
        let started = std::time::Instant::now();
        let result = self.call_noting_lock(&live).await;
        metrics::histogram!("transfer_batch_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(results) => {
                for (p, r) in live.into_iter().zip(results) {
                    answer(p, r);
                }
            }
            Err((e, waited_on)) => {
                // retries must not keep later batches out: one that waits on a locked row again
                // would hold the slot for another lock timeout
                if matches!(e, LedgerError::AccountBusy) && live.len() > 1 {
                    self.split_around_locked(live, slot, waited_on).await;
                } else {
                    drop(slot);
                    self.retry_alone(live, e).await;
                }
            }
        }
    }

    /// One call for `items` (no slot of its own: it runs beside suspects retried alone).
    async fn run_together(&self, items: Vec<Pending>) {
        if items.is_empty() {
            return;
        }
        match self.call_noting_lock(&items).await {
            Ok(results) => {
                for (p, r) in items.into_iter().zip(results) {
                    answer(p, r);
                }
            }
            Err((LedgerError::AccountBusy, waited_on)) if items.len() > 1 => {
                self.split_around_locked(items, None, waited_on).await
            }
            Err((e, _)) => self.retry_alone(items, e).await,
        }
    }

    /// After a batch ran out of lock time (nothing of it applied): finds the account it gave up
    /// on and, if someone else still holds it, marks it suspect; the requests that need it are
    /// tried alone
    /// ([`Self::try_suspects`]: one still locked out is answered `account_busy`, nothing moved,
    /// the caller retries with its key; one that only met another batch's lock goes through),
    /// and the others are applied as one batch again at once, beside them. So one row held
    /// elsewhere delays the rest by one lock timeout, once per hold. The batch's slot is given
    /// back once the suspects are marked, so the next batch already sends their requests alone.
    ///
    /// The account it gave up on is the row named in the error (`waited_on`, see
    /// [`store::account_tuple_waited_on`]), not every account of the batch that is locked at
    /// this instant: those include the rows other batches of ours hold for a few milliseconds,
    /// or for a lock timeout while they too wait on the held row, and marking them sent their
    /// requests alone to wait behind that chain (and some were answered `account_busy` though
    /// their own accounts were never held by anyone else). Only when the error names no row is
    /// every locked account of the batch taken for suspect.
    async fn split_around_locked(
        &self,
        live: Vec<Pending>,
        slot: Option<OwnedSemaphorePermit>,
        waited_on: Option<String>,
    ) {
        let mut ids: Vec<i64> = Vec::new();
        let mut currencies: Vec<String> = Vec::new();
        for p in &live {
            for key in LockKey::of(&p.cmd) {
                match key {
                    LockKey::Account(id) => ids.push(id.get()),
                    LockKey::System(currency) => {
                        if !currencies.iter().any(|c| c == currency.as_str()) {
                            currencies.push(currency.as_str().to_owned());
                        }
                    }
                    LockKey::Hold(_) => {}
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let currencies: Vec<&str> = currencies.iter().map(String::as_str).collect();
        let culprit = match &waited_on {
            Some(tid) => store::locked_account_at_tuple(&self.db, tid)
                .await
                .map_err(
                    |e| tracing::warn!(error = %e, "cannot tell whether the row is still locked"),
                )
                .ok(),
            None => None,
        };
        let found = match culprit {
            // still held: that account alone is suspect
            Some(Some((id, system, currency))) => {
                let currencies = if system { vec![currency] } else { Vec::new() };
                Ok((vec![id], currencies))
            }
            // free again (or a newer version of it): a short lock of another batch stopped this
            // one; nothing is suspect and the batch goes again as it is
            Some(None) => Ok((Vec::new(), Vec::new())),
            None => store::find_locked_accounts(&self.db, &ids, &currencies).await,
        };
        let (locked_ids, locked_currencies) = match found {
            Ok(locked) => locked,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell which accounts are locked");
                drop(slot);
                return self.retry_alone(live, LedgerError::AccountBusy).await;
            }
        };
        let needs_locked = |p: &Pending| {
            LockKey::of(&p.cmd).iter().any(|key| match key {
                LockKey::Account(id) => locked_ids.contains(&id.get()),
                LockKey::System(currency) => {
                    locked_currencies.iter().any(|c| c == currency.as_str())
                }
                LockKey::Hold(_) => false,
            })
        };
        let (busy, rest): (Vec<Pending>, Vec<Pending>) = live.into_iter().partition(needs_locked);
        tracing::warn!(
            locked_accounts = ?locked_ids,
            locked_system_currencies = ?locked_currencies,
            alone = busy.len(),
            together = rest.len(),
            "batch ran out of lock time; requests on locked accounts tried alone"
        );
        metrics::counter!("transfer_batch_failures_total").increment(1);
        self.suspect(
            locked_ids
                .iter()
                .filter_map(|id| AccountId::parse(*id, "id").ok())
                .map(LockKey::Account)
                .chain(
                    busy.iter()
                        .flat_map(|p| LockKey::of(&p.cmd))
                        .filter(|k| matches!(k, LockKey::System(c) if locked_currencies.iter().any(|l| l == c.as_str()))),
                ),
        );
        drop(slot);
        let together = async {
            if let Some((rest, e)) = self.call_rest(rest).await {
                self.retry_alone(rest, e).await;
            }
        };
        futures::join!(self.try_suspects(busy), together);
    }

    /// Tries each request on a suspect account alone, side by side, and answers it from its own
    /// try ([`Self::try_suspect`]).
    async fn try_suspects(&self, items: Vec<Pending>) {
        futures::future::join_all(items.into_iter().map(|p| async move {
            let r = self.try_suspect(&p).await;
            answer(p, r);
        }))
        .await;
    }

    /// One request on a suspect account, alone: it waits for a turn (see `suspect_turns`) and
    /// then for the suspect rows, together at most one lock timeout (and never past its
    /// deadline), in a transaction that locks the suspect rows first and only then calls
    /// `ledger.transfer_batch` for it. So while it waits it holds no other account's row: a
    /// partner with a lower id would otherwise stay locked behind the held row, and its own
    /// transfers with it. Still locked out (or no turn in time): `account_busy`, nothing moved,
    /// and the account stays suspect. Through: the account is free again and leaves suspicion.
    async fn try_suspect(&self, p: &Pending) -> Answer {
        let items = std::slice::from_ref(p);
        let until = std::time::Instant::now()
            + Duration::from_millis(u64::try_from(self.lock_timeout_ms(items)).unwrap_or(1));
        let turn = tokio::time::timeout_at(until.into(), self.suspect_turns.acquire()).await;
        let Ok(Ok(_turn)) = turn else {
            // as many requests are waiting on held rows already: this one's lock time ran out
            // waiting behind them, with nothing sent
            return Err(LedgerError::AccountBusy);
        };
        if p.reply.is_closed() {
            return Err(LedgerError::DeadlineExceeded);
        }
        // none left if another request on them went through meanwhile: then nothing is locked
        // first
        let suspects = self.suspect_keys(p);
        let wait = until.saturating_duration_since(std::time::Instant::now());
        let r = self.call_after_locking(p, &suspects, wait).await;
        match &r {
            Ok(_) => self.clear_suspects(&suspects),
            Err(SuspectError::StillLocked) => self.suspect(suspects),
            Err(SuspectError::Call(_)) => {}
        }
        match r {
            Ok(answer) => answer,
            Err(SuspectError::StillLocked) => Err(LedgerError::AccountBusy),
            Err(SuspectError::Call(e)) => Err(e),
        }
    }

    /// [`Self::call`] for one request in a transaction that first locks `suspects`' rows,
    /// waiting at most `wait` for them. The transfer's answer when through (also a business
    /// refusal: the rows were free). Before the commit nothing of it is applied whatever
    /// fails; a commit that fails without an answer is `outcome_unknown`.
    async fn call_after_locking(
        &self,
        p: &Pending,
        suspects: &[LockKey],
        wait: Duration,
    ) -> Result<Answer, SuspectError> {
        let mut ids: Vec<i64> = Vec::new();
        let mut currencies: Vec<&str> = Vec::new();
        for key in suspects {
            match key {
                LockKey::Account(id) => ids.push(id.get()),
                LockKey::System(currency) => currencies.push(currency.as_str()),
                LockKey::Hold(_) => {}
            }
        }
        let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
        let mut conn = self
            .db
            .acquire()
            .await
            .map_err(|e| SuspectError::Call(LedgerError::NotConnected(e)))?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(|e| SuspectError::Call(LedgerError::NotConnected(e)))?;
        // (what fails before the commit was rolled back: a broken connection's `Database`
        // error is answered `database_unavailable`, nothing moved, as is true here)
        if let Err(e) = store::lock_accounts(&mut tx, &ids, &currencies, wait_ms).await {
            return Err(match LedgerError::from_db(e) {
                LedgerError::AccountBusy => SuspectError::StillLocked,
                e => SuspectError::Call(e),
            });
        }
        let cmds = [&p.cmd];
        let lock_timeout_ms = Some(self.lock_timeout_ms(std::slice::from_ref(p)));
        let rows = store::apply_batch(&mut tx, &cmds, self.max_transfer_amount, lock_timeout_ms)
            .await
            .map_err(|e| SuspectError::Call(LedgerError::from_db(e)))?;
        let answer = answers_of(&cmds, rows)
            .map_err(SuspectError::Call)?
            .into_iter()
            .next()
            .unwrap_or(Err(missing(0)));
        tx.commit().await.map_err(|e| {
            // a commit the database refused rolled back; one without an answer may have happened
            SuspectError::Call(
                if e.as_database_error().is_some() && !platform::db::ended_by_server(&e) {
                    LedgerError::from_db(e)
                } else {
                    LedgerError::OutcomeUnknown
                },
            )
        })?;
        Ok(answer)
    }

    /// Applies what is left after a split as one batch; on a failure of the whole call hands the
    /// requests back with the error (a second split is not tried).
    async fn call_rest(&self, rest: Vec<Pending>) -> Option<(Vec<Pending>, LedgerError)> {
        if rest.is_empty() {
            return None;
        }
        match self.call(&rest).await {
            Ok(results) => {
                for (p, r) in rest.into_iter().zip(results) {
                    answer(p, r);
                }
                None
            }
            Err(e) => Some((rest, e)),
        }
    }

    /// After a call that failed as a whole (not a business failure of one request). If the
    /// database reported the failure, nothing of the batch applied: a batch of one gets that
    /// answer; a larger batch's requests are retried alone, side by side, so those that do not
    /// meet the cause (an account locked elsewhere) go through at once, and each is answered from
    /// its own retry. If the connection broke so that a commit may have happened, only requests
    /// with an idempotency key are retried (a replay is safe) and the rest are answered
    /// `outcome_unknown` — as is a retry that cannot tell either (it fails without an answer).
    async fn retry_alone(&self, live: Vec<Pending>, e: LedgerError) {
        let rolled_back = e.certainly_not_applied();
        if rolled_back && live.len() == 1 {
            if let Some(p) = live.into_iter().next() {
                answer(p, Err(e));
            }
            return;
        }
        tracing::warn!(
            error = %e,
            size = live.len(),
            rolled_back,
            "batch failed; retrying its requests alone"
        );
        metrics::counter!("transfer_batch_failures_total").increment(1);
        let retries = live.into_iter().map(|p| async move {
            // a caller that left will retry with its key (or not at all)
            let gone =
                p.reply.is_closed() || p.deadline.is_some_and(|d| d <= std::time::Instant::now());
            if !rolled_back && (gone || p.cmd.idempotency_key.is_none()) {
                return answer(p, Err(LedgerError::OutcomeUnknown));
            }
            if gone {
                return answer(p, Err(LedgerError::DeadlineExceeded));
            }
            let r = self
                .call(std::slice::from_ref(&p))
                .await
                .and_then(|v| v.into_iter().next().unwrap_or(Err(missing(0))));
            let r = match r {
                // the first attempt may have committed, or this retry may have (its own
                // connection broke after sending): only an answer of the ledger tells
                Err(e)
                    if (!rolled_back || !e.certainly_not_applied())
                        && !matches!(
                            e,
                            LedgerError::Refused(_) | LedgerError::LegRefused { .. }
                        ) =>
                {
                    Err(LedgerError::OutcomeUnknown)
                }
                r => r,
            };
            answer(p, r);
        });
        futures::stream::iter(retries)
            .buffer_unordered(RETRIES_AT_ONCE)
            .collect::<Vec<()>>()
            .await;
    }

    /// How long this call may wait for a row lock: the configured bound, and never past the
    /// earliest deadline among its requests (a request answered `deadline_exceeded` must not be
    /// applied later).
    fn lock_timeout_ms(&self, items: &[Pending]) -> i32 {
        let now = std::time::Instant::now();
        let bound = items
            .iter()
            .filter_map(|p| p.deadline)
            .map(|d| d.saturating_duration_since(now))
            .fold(self.lock_timeout, Duration::min);
        i32::try_from(bound.as_millis()).unwrap_or(i32::MAX).max(1)
    }

    /// One call of `ledger.transfer_batch` (`store::apply_batch`): `Ok` with each command's own
    /// result, in order, or `Err` when the whole call failed (nothing of it committed if the
    /// database reported it). A command of several legs has one row per leg, consecutive.
    async fn call(&self, items: &[Pending]) -> Result<Vec<Answer>, LedgerError> {
        self.call_noting_lock(items).await.map_err(|(e, _)| e)
    }

    /// [`Self::call`], and when it fails the row of `ledger.accounts` it gave up waiting on, if
    /// the error names one (its tuple id; see [`store::account_tuple_waited_on`]).
    async fn call_noting_lock(
        &self,
        items: &[Pending],
    ) -> Result<Vec<Answer>, (LedgerError, Option<String>)> {
        let cmds: Vec<&Command> = items.iter().map(|p| &p.cmd).collect();
        let lock_timeout_ms = Some(self.lock_timeout_ms(items));
        // a connection first: failing to get one sends nothing, so it applied nothing (an
        // answer of `database_unavailable`, not `outcome_unknown`)
        let mut conn = self
            .db
            .acquire()
            .await
            .map_err(|e| (LedgerError::NotConnected(e), None))?;
        let rows = store::apply_batch(&mut conn, &cmds, self.max_transfer_amount, lock_timeout_ms)
            .await
            .map_err(|e| {
                let waited_on = store::account_tuple_waited_on(&e);
                (LedgerError::from_db(e), waited_on)
            })?;
        answers_of(&cmds, rows).map_err(|e| (e, None))
    }
}

/// How a request on a suspect account failed as a whole.
enum SuspectError {
    /// Its suspect rows were still held by someone else when its lock time ran out.
    StillLocked,
    Call(LedgerError),
}

/// Each command's own answer from the rows of one `ledger.transfer_batch` call, in order (a
/// command of several legs has one row per leg, consecutive); `Err` when the rows do not match
/// the commands.
fn answers_of(cmds: &[&Command], rows: Vec<BatchRow>) -> Result<Vec<Answer>, LedgerError> {
    // element (0-based) → (command, leg)
    let mut owner_of: Vec<(usize, usize)> = Vec::with_capacity(rows.len());
    for (i, c) in cmds.iter().enumerate() {
        owner_of.extend((0..c.op.leg_count()).map(|leg| (i, leg)));
    }
    let mut legs: Vec<Vec<Option<BatchRow>>> = cmds
        .iter()
        .map(|c| (0..c.op.leg_count()).map(|_| None).collect())
        .collect();
    for row in rows {
        let slot = usize::try_from(row.idx)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| owner_of.get(i).copied());
        match slot {
            Some((i, leg)) => legs[i][leg] = Some(row),
            None => {
                return Err(LedgerError::Invariant(format!(
                    "transfer_batch answered element {} of {}",
                    row.idx,
                    owner_of.len()
                )));
            }
        }
    }
    Ok(legs
        .into_iter()
        .enumerate()
        .map(|(i, rows)| answer_of(i, rows))
        .collect())
}

/// One command's answer from its rows (one per leg): the first row's error is the request's
/// (every row of a failed request carries it), else every leg's outcome, checked.
fn answer_of(i: usize, rows: Vec<Option<BatchRow>>) -> Answer {
    let rows: Vec<BatchRow> = rows
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| missing(i))?;
    if let Some(first) = rows.first()
        && let Some(reason) = &first.error
    {
        return Err(match (first.failed_leg, LedgerError::from_reason(reason)) {
            (Some(leg), LedgerError::Refused(refusal)) => LedgerError::LegRefused {
                leg: usize::try_from(leg).unwrap_or(0).max(1),
                refusal,
            },
            (_, e) => e,
        });
    }
    let legs = rows
        .into_iter()
        .map(outcome_of)
        .collect::<Result<Vec<Outcome>, LedgerError>>()?;
    if legs.len() > 1 {
        let transaction = legs[0].transaction_id;
        if transaction.is_none() || legs.iter().any(|o| o.transaction_id != transaction) {
            return Err(LedgerError::Invariant(format!(
                "transfer_batch item {}: legs without one transaction",
                i + 1
            )));
        }
    }
    Ok(legs)
}

fn missing(i: usize) -> LedgerError {
    LedgerError::Invariant(format!("transfer_batch gave no answer for item {}", i + 1))
}

fn answer(p: Pending, result: Answer) {
    record(&p.cmd, &result);
    // the caller may have gone (timeout, cancelled); the outcome is recorded all the same
    let _ = p.reply.send(result);
}

/// Element `row.idx`'s own result, checked against the ledger's invariants (pair assertion).
fn outcome_of(row: BatchRow) -> Result<Outcome, LedgerError> {
    if let Some(reason) = row.error {
        return Err(LedgerError::from_reason(&reason));
    }
    let idx = row.idx;
    let need = || LedgerError::Invariant(format!("transfer_batch item {idx}: missing column"));
    let line = |id: Option<i64>, amount: Option<i64>, balance_after: Option<i64>| match (
        id,
        amount,
        balance_after,
    ) {
        (Some(id), Some(amount), Some(balance_after)) => Ok(Some(EntryLine {
            id,
            amount,
            balance_after,
        })),
        (None, None, None) => Ok(None),
        _ => Err(need()),
    };
    let debit = line(
        row.from_entry_id,
        row.from_entry_amount,
        row.from_balance_after,
    )?;
    let credit = line(row.to_entry_id, row.to_entry_amount, row.to_balance_after)?;
    let entries = match (debit, credit) {
        (Some(debit), Some(credit)) => Some((debit, credit)),
        (None, None) => None,
        _ => return Err(need()),
    };
    let decode = |what: Option<String>| what.ok_or_else(need);
    let outcome = Outcome {
        transfer_id: row.transfer_id.ok_or_else(need)?,
        from_account_id: row.from_account_id.ok_or_else(need)?,
        to_account_id: row.to_account_id.ok_or_else(need)?,
        amount: row.amount.ok_or_else(need)?,
        currency: row.currency.ok_or_else(need)?,
        kind: Kind::try_from(decode(row.kind)?).map_err(LedgerError::Invariant)?,
        status: Status::try_from(decode(row.status)?).map_err(LedgerError::Invariant)?,
        hold: row.hold.ok_or_else(need)?,
        hold_id: row.hold_id,
        expires_at: row.expires_at,
        reverses: match (
            row.reverses_id,
            row.original_amount,
            row.original_reversed_amount,
        ) {
            (Some(id), Some(amount), Some(reversed_amount)) => Some(Reversed {
                id,
                amount,
                reversed_amount,
            }),
            (None, None, None) => None,
            _ => return Err(need()),
        },
        reversed_amount: row.reversed_amount.ok_or_else(need)?,
        transaction_id: row.transaction_id,
        description: row.description,
        metadata: metadata_from_json(row.metadata.as_ref()),
        created_by: row.created_by.ok_or_else(need)?,
        created_at: row.created_at.ok_or_else(need)?,
        entries,
        replayed: row.replayed.ok_or_else(need)?,
    };
    outcome.check().map(|()| outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Amount, Currencies};

    fn pending(from: Option<i64>, to: Option<i64>, currency: &str) -> Pending {
        let currencies = Currencies::from_config(&["USD".into(), "EUR".into()]).unwrap();
        let id = |a: i64| AccountId::parse(a, "id").unwrap();
        let amount = Amount::parse(1, 100).unwrap();
        let currency = currencies.parse(currency, "currency").unwrap();
        let op = match (from, to) {
            (None, Some(to)) => Operation::Deposit {
                to: id(to),
                amount,
                currency,
            },
            (Some(from), None) => Operation::Withdrawal {
                from: id(from),
                amount,
                currency,
            },
            (Some(from), Some(to)) => Operation::Transfer {
                from: id(from),
                to: id(to),
                amount,
                currency,
            },
            (None, None) => unreachable!(),
        };
        Pending {
            cmd: Command {
                user_id: uuid::Uuid::nil(),
                username: "alice".into(),
                as_banker: false,
                op,
                idempotency_key: None,
                memo: Default::default(),
            },
            deadline: None,
            enqueued: std::time::Instant::now(),
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_batch_conflicts_with_one_in_flight_only_through_a_shared_account() {
        let busy = Arc::new(Busy::default());
        let in_flight = [
            pending(Some(1), Some(2), "USD"),
            pending(None, Some(3), "USD"),
        ];
        assert!(!busy.conflicts(&in_flight), "nothing is in flight yet");
        let locks = Busy::take(&busy, &in_flight);

        assert!(
            busy.conflicts(&[pending(Some(4), Some(2), "USD")]),
            "shares account 2"
        );
        assert!(
            busy.conflicts(&[pending(Some(5), None, "USD")]),
            "USD system account"
        );
        assert!(
            !busy.conflicts(&[pending(Some(5), None, "EUR")]),
            "EUR system account is free"
        );
        assert!(
            !busy.conflicts(&[pending(Some(4), Some(5), "USD")]),
            "disjoint accounts"
        );

        let second = Busy::take(&busy, &[pending(Some(2), Some(6), "USD")]);
        drop(locks);
        assert!(
            busy.conflicts(&[pending(Some(7), Some(2), "USD")]),
            "2 is still held"
        );
        assert!(
            !busy.conflicts(&[pending(Some(1), None, "USD")]),
            "1 and USD system are free"
        );
        drop(second);
        assert!(
            busy.locked.lock().unwrap().is_empty(),
            "every mark is cleared"
        );
    }

    #[tokio::test]
    async fn a_held_batch_takes_new_requests_and_goes_when_the_conflicting_one_finishes() {
        let busy = Arc::new(Busy::default());
        let locks = Busy::take(&busy, &[pending(Some(1), Some(2), "USD")]);
        let (tx, mut rx) = mpsc::channel(16);
        let mut batch = vec![pending(Some(3), Some(1), "USD")];
        let holding = {
            let busy = busy.clone();
            tokio::spawn(async move {
                hold_while_conflicting(&mut batch, &mut rx, &busy, 10).await;
                batch.len()
            })
        };
        tx.send(pending(Some(4), Some(1), "USD")).await.unwrap();
        tx.send(pending(Some(5), Some(6), "USD")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!holding.is_finished(), "held while account 1 is in flight");
        drop(locks);
        let size = tokio::time::timeout(Duration::from_secs(5), holding)
            .await
            .expect("released when the conflicting batch finished")
            .unwrap();
        assert_eq!(
            size, 3,
            "the requests that arrived meanwhile joined the batch"
        );
    }
}
