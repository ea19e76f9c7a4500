//! The consumer-group loop, one per stream the mailer reads (user events for verification emails,
//! user events for the recipients table, ledger events for "money received"): read events (new ones with XREADGROUP, this consumer's own
//! pending ones first after a (re)start, ones another consumer left pending with XAUTOCLAIM) and
//! hand each to a task that handles it
//! ([`crate::domain::handle`]), at most `read_count` at a time. Redis going away drops the
//! reader connection; it is made anew (and the group re-created if lost) with a capped backoff.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use platform::Shutdown;
use redis::{AsyncConnectionConfig, aio::MultiplexedConnection, streams::StreamId};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};

use crate::{domain::Mailer, store};

/// Runs the consumer until shutdown, then lets in-flight sends finish within
/// `shutdown_grace_secs`. `client` makes the reader connection.
pub async fn run(mailer: Arc<Mailer>, client: redis::Client) -> anyhow::Result<()> {
    tracing::info!(
        stream = %mailer.group.stream, group = %mailer.group.group, consumer = %mailer.group.consumer,
        "mailer consumer starting"
    );
    let shutdown = &mailer.shutdown;
    let slots = Arc::new(Semaphore::new(mailer.cfg.read_count));
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = JoinSet::new();
    let mut reader = Reader::new(client);
    while !shutdown.is_triggered() {
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "message task panicked");
            }
        }
        let Some(permits) = free_slots(&slots, &mailer).await else {
            break;
        };
        match reader.fetch(&mailer, &in_flight, permits.len()).await {
            Ok(entries) => {
                for (entry, permit) in entries.into_iter().zip(permits) {
                    spawn_handler(&mailer, &mut tasks, &in_flight, entry, permit);
                }
            }
            Err(wait) => pause(shutdown, wait).await,
        }
    }
    drain(tasks, Duration::from_secs(mailer.cfg.shutdown_grace_secs)).await;
    tracing::info!("mailer consumer stopped");
    Ok(())
}

/// Waits for a free slot, then takes every other free one too: read only as many messages as
/// there are free slots, the bound on emails in flight. `None` once shutdown started.
async fn free_slots(slots: &Arc<Semaphore>, mailer: &Mailer) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        _ = mailer.shutdown.wait() => return None,
    };
    let mut permits = vec![first];
    while permits.len() < mailer.cfg.read_count {
        match slots.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    Some(permits)
}

/// Hands `entry` to a task of its own, holding `permit` until it is done; skipped if a task of
/// this process already handles it (e.g. finishing a send).
fn spawn_handler(
    mailer: &Arc<Mailer>,
    tasks: &mut JoinSet<()>,
    in_flight: &Arc<Mutex<HashSet<String>>>,
    entry: StreamId,
    permit: OwnedSemaphorePermit,
) {
    let Some(mark) = InFlight::mark(in_flight, &entry.id) else {
        return;
    };
    let mailer = mailer.clone();
    tasks.spawn(async move {
        crate::domain::handle(&mailer, entry).await;
        drop((mark, permit));
    });
}

/// Lets the tasks finish within `grace`; aborts what is left (their messages stay pending).
async fn drain(mut tasks: JoinSet<()>, grace: Duration) {
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "sends still in flight at the end of the grace period; their messages stay pending and \
             another consumer reclaims them"
        );
        tasks.abort_all();
    }
}

/// Where the next messages come from: the reader connection and the reclaim schedule.
struct Reader {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    claim_cursor: String,
    next_claim: Instant,
    failures: u32,
    /// This consumer's own pending entries are to be read (again) at `next_own`: set when the
    /// reader connects, so a mailer restarted under the same name (the pod name) sends what its
    /// previous process left pending at once, not after `claim_idle_ms`. Cleared once every own
    /// pending entry is in hand here.
    own_pending: bool,
    next_own: Instant,
}

/// How often the own pending entries are read again while some are not in hand: one still leased
/// by the previous process (it died mid-send) is taken within this of that lease's expiry, which
/// comes at most `lease_ms` after the kill (its renewals stop with the process).
const OWN_PENDING_RECHECK: Duration = Duration::from_millis(500);

/// Own pending entries looked at per read: the bound on one XREADGROUP 0.
const OWN_PENDING_PAGE: usize = 1_000;

impl Reader {
    fn new(client: redis::Client) -> Self {
        Self {
            client,
            conn: None,
            claim_cursor: "0-0".to_owned(),
            next_claim: Instant::now(),
            failures: 0,
            own_pending: true,
            next_own: Instant::now(),
        }
    }

    /// Up to `count` messages: a reclaim step when one is due, else new messages. After a Redis
    /// failure, `Err` holds the wait before the next try (the connection is made anew then).
    async fn fetch(
        &mut self,
        mailer: &Mailer,
        in_flight: &Mutex<HashSet<String>>,
        count: usize,
    ) -> Result<Vec<StreamId>, Duration> {
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => match connect_reader(&self.client, mailer).await {
                Ok(c) => {
                    (self.own_pending, self.next_own) = (true, Instant::now());
                    self.conn.insert(c)
                }
                Err(e) => {
                    self.failures += 1;
                    tracing::warn!(error = %e, "cannot reach Redis; retrying");
                    return Err(store::redis_retry_delay(self.failures));
                }
            },
        };
        let fetched = if self.own_pending && Instant::now() >= self.next_own {
            store::read_own_pending(conn, &mailer.group, OWN_PENDING_PAGE)
                .await
                .map(|entries| {
                    let in_hand = in_flight.lock().unwrap();
                    let mut fresh: Vec<StreamId> = entries
                        .into_iter()
                        .filter(|e| !in_hand.contains(&e.id))
                        .collect();
                    if fresh.is_empty() {
                        self.own_pending = false;
                    } else {
                        tracing::info!(
                            count = fresh.len(),
                            "own pending messages of a previous process picked up"
                        );
                        self.next_own = Instant::now() + OWN_PENDING_RECHECK;
                        fresh.truncate(count);
                    }
                    fresh
                })
        } else if Instant::now() >= self.next_claim {
            reclaim(
                conn,
                mailer,
                &mut self.claim_cursor,
                &mut self.next_claim,
                count,
            )
            .await
        } else {
            let (group, block_ms) = (&mailer.group, mailer.cfg.block_ms);
            store::read_new_messages(conn, group, count, block_ms).await
        };
        match fetched {
            Ok(entries) => {
                self.failures = 0;
                Ok(entries)
            }
            Err(e) => {
                self.failures += 1;
                tracing::warn!(error = %e, "reading the stream failed; reconnecting");
                self.conn = None; // also re-creates the group if Redis lost it (NOGROUP)
                Err(store::redis_retry_delay(self.failures))
            }
        }
    }
}

/// One XAUTOCLAIM step from `cursor`, moving it on. After a full pass over the pending list the
/// next starts after half an idle period, so a dead consumer's messages wait at most
/// 1.5 × claim_idle_ms.
async fn reclaim(
    conn: &mut MultiplexedConnection,
    mailer: &Mailer,
    cursor: &mut String,
    next_claim: &mut Instant,
    count: usize,
) -> redis::RedisResult<Vec<StreamId>> {
    let idle_ms = mailer.cfg.claim_idle_ms;
    let reply = store::claim_idle_messages(conn, &mailer.group, idle_ms, cursor, count).await?;
    if !reply.deleted_ids.is_empty() {
        // Trimmed from the stream (MAXLEN) while pending: the event is gone and cannot be sent.
        tracing::error!(ids = ?reply.deleted_ids, "pending entries were trimmed from the stream before delivery");
        metrics::counter!("mailer_stream_entries_lost_total")
            .increment(reply.deleted_ids.len() as u64);
    }
    if !reply.claimed.is_empty() {
        tracing::info!(
            count = reply.claimed.len(),
            "reclaimed messages left pending by another consumer"
        );
    }
    if reply.next_stream_id == "0-0" {
        *next_claim = Instant::now() + Duration::from_millis(idle_ms / 2);
    }
    *cursor = reply.next_stream_id;
    Ok(reply.claimed)
}

/// Marks a stream entry as handled by a task of this process; unmarked when dropped (also when
/// the task panics), so the entry can be picked up again.
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl InFlight {
    fn mark(set: &Arc<Mutex<HashSet<String>>>, id: &str) -> Option<Self> {
        set.lock().unwrap().insert(id.to_owned()).then(|| Self {
            set: set.clone(),
            id: id.to_owned(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.id);
        }
    }
}

/// Sleeps for `d` or until shutdown, whichever comes first.
async fn pause(shutdown: &Shutdown, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {},
        _ = shutdown.wait() => {},
    }
}

/// A connection of its own for the blocking XREADGROUP, so a read that waits `block_ms` never
/// holds up the short commands of the message tasks (those use the pool).
async fn connect_reader(
    client: &redis::Client,
    mailer: &Mailer,
) -> anyhow::Result<MultiplexedConnection> {
    let timeout = Duration::from_millis(mailer.cfg.redis.timeout_ms);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(Duration::from_millis(mailer.cfg.block_ms) + timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    store::create_group(&mut conn, &mailer.group).await?;
    Ok(conn)
}
