//! The one path by which money moves: [`Ledger::apply`] → the batcher ([`super::batch`]) → one
//! call of the SQL function `ledger.transfer_batch` (`store::apply_batch`) for a whole batch.

use std::time::Instant;

use sqlx::PgPool;
use tokio::sync::{
    mpsc::{self, error::TrySendError},
    oneshot,
};

use super::{
    batch::{self, Answer, Executor, Pending},
    error::LedgerError,
    movement::{Command, Outcome, record},
};
use crate::config::BatchConfig;

/// The ledger's write side: every money movement is queued for the batcher (see
/// [`crate::batch`]) and applied by one call of `ledger.transfer_batch` together with whatever
/// else arrived in the same window. With `batch.enabled = false` each request is applied at once
/// as a batch of one, through the same code.
#[derive(Clone)]
pub struct Ledger {
    exec: Executor,
    queue: Option<mpsc::Sender<Pending>>,
}

impl Ledger {
    /// Starts the batcher task (when enabled); call inside the Tokio runtime.
    pub fn new(db: PgPool, max_transfer_amount: i64, batch: &BatchConfig) -> Self {
        let lock_timeout = std::time::Duration::from_millis(batch.lock_timeout_ms);
        let exec = Executor::new(db, max_transfer_amount, lock_timeout);
        let queue = batch.enabled.then(|| batch::start(exec.clone(), batch));
        Self { exec, queue }
    }

    /// Applies one command of one transfer and answers with its outcome (see [`Self::apply_all`]).
    pub async fn apply(
        &self,
        cmd: Command,
        deadline: Option<Instant>,
    ) -> Result<Outcome, LedgerError> {
        self.apply_all(cmd, deadline)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| LedgerError::Invariant("the ledger answered no transfer".into()))
    }

    /// Applies one command and answers with its own outcome: its transfer, or every leg of a
    /// multi-leg transaction. `deadline`: if it passes while the command waits in the queue, the
    /// command is not applied (`deadline_exceeded`).
    pub async fn apply_all(&self, cmd: Command, deadline: Option<Instant>) -> Answer {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            cmd,
            deadline,
            enqueued: Instant::now(),
            reply,
        };
        match &self.queue {
            Some(queue) => match queue.try_send(pending) {
                Ok(()) => {}
                Err(TrySendError::Full(p)) => return refuse(p, LedgerError::QueueFull),
                Err(TrySendError::Closed(p)) => return refuse(p, LedgerError::Unavailable),
            },
            None => self.exec.run(vec![pending], None).await,
        }
        answer.await.unwrap_or(Err(LedgerError::Unavailable))
    }
}

fn refuse(p: Pending, e: LedgerError) -> Answer {
    let result = Err(e);
    record(&p.cmd, &result);
    result
}
