//! The consumer-group loop: read user events, send each email once, acknowledge after success.
//!
//! # How one event is handled
//! 1. XREADGROUP (new messages) or XAUTOCLAIM (messages another consumer read but did not
//!    acknowledge within `claim_idle_ms`, i.e. a crashed or stuck replica) hands us an entry.
//! 2. `SET {prefix}mailer:event:{event_id} sending:<consumer>:<token> NX PX <lease>` takes a lease on
//!    the event. If the key already says `sent`, the event was sent before (a redelivery, or the
//!    relay published it twice): acknowledge, do not send. If another lease
//!    holds it, leave the message pending; XAUTOCLAIM brings it back after `claim_idle_ms`.
//! 3. `HINCRBY {prefix}mailer:attempts:{event_id} attempts 1` counts the attempt for all replicas.
//! 4. Send. On success, one MULTI sets the key to `sent` (TTL `dedupe_ttl_secs`), XACKs and drops
//!    the counter. On failure the error is stored, the lease released, and after an exponential
//!    backoff the next attempt starts at 2 (during the wait, XCLAIM keeps the message ours so no
//!    other replica takes it over). After `max_attempts`, one MULTI XADDs the entry with its last
//!    error to `{prefix}events:users:dead`, clears the key and XACKs. Replaying a dead letter is
//!    XADDing its `event_id`, `event_type` and `payload` back onto the stream.
//!
//! # Crash windows (what a crash at each point does)
//! - After XREADGROUP, before the lease: the message stays pending; another consumer (or this one
//!   after restart) reclaims it after `claim_idle_ms` and sends it once.
//! - Holding the lease, before or during the send: the lease expires after
//!   `transport.send_timeout_ms` + 5 s; the reclaimer then sends. If the SMTP server had already
//!   accepted the message, this is the one duplicate the design allows ("at most one resend after
//!   a crash"). SMTP has no idempotent submit, so no design can close this window.
//! - After the send, before the `sent` MULTI: same as above: a possible single resend. (A Redis
//!   error at this point is not a crash: the live consumer retries the MULTI until it lands.)
//! - After the MULTI: nothing left to do; the key and the ack were written together.
//! - After the last failed attempt, before the dead-letter MULTI: the reclaimer finds the counter
//!   above `max_attempts` and dead-letters with the stored last error, without sending again.
//! - The SMTP server accepted but its reply was lost (timeout): counted as a failure and retried,
//!   a possible duplicate.
//! - The `sent` marker expires (`dedupe_ttl_secs`) before a redelivery of the same event: only
//!   possible if an entry stays pending, or is re-published, for longer than that window.
//! - Redis itself loses data (no persistence, failover): the markers and the stream go together.
//!
//! While a message waits out its backoff no lease is held; should a consumer reclaim it anyway
//! (the heartbeat failed), it may attempt it too: the shared counter keeps the total number of
//! attempts bounded and the `sent` marker still stops any second send after a success.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use deadpool_redis::Pool;
use lettre::{Message, message::Mailbox};
use platform::Shutdown;
use redis::{
    AsyncConnectionConfig, Value, aio::MultiplexedConnection, from_redis_value_ref,
    streams::StreamId,
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tracing::Instrument;

use crate::{
    config::Config,
    event::{self, Parsed, UserEvent},
    render,
    store::{self, EventKeys, Group},
    transport::{SendError, Transport},
};

/// Extra lease time on top of the send timeout, for the Redis round trips around the send.
const LEASE_MARGIN_MS: u64 = 5_000;

/// Everything a message task needs.
struct Mailer {
    cfg: Config,
    pool: Pool,
    transport: Transport,
    from: Mailbox,
    group: Group,
    dead: String,
    shutdown: Shutdown,
}

impl Mailer {
    fn new(
        cfg: Config,
        pool: Pool,
        transport: Transport,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let from: Mailbox = cfg.from.parse().context("parsing `from`")?;
        Ok(Self {
            group: Group {
                stream: cfg.stream_key(),
                group: cfg.group.clone(),
                consumer: cfg.consumer_name.clone(),
            },
            dead: cfg.dead_letter_key(),
            cfg,
            pool,
            transport,
            from,
            shutdown,
        })
    }

    /// A fresh lease token: `sending:<consumer>:<random>`.
    fn new_lease(&self) -> String {
        format!(
            "sending:{}:{}",
            self.cfg.consumer_name,
            uuid::Uuid::new_v4().simple()
        )
    }

    fn event_keys(&self, event_id: &str) -> EventKeys {
        EventKeys {
            state: self.cfg.event_state_key(event_id),
            attempts: self.cfg.attempts_key(event_id),
        }
    }
}

/// Describes the metrics once, so `/metrics` carries HELP lines.
pub fn describe_metrics() {
    metrics::describe_counter!("emails_sent_total", "Emails handed to the transport");
    metrics::describe_counter!(
        "emails_failed_total",
        "Failed send attempts (each is retried until max_attempts)"
    );
    metrics::describe_counter!(
        "emails_dead_lettered_total",
        "Events moved to the dead-letter stream, by reason"
    );
    metrics::describe_counter!(
        "mailer_events_skipped_total",
        "Entries acknowledged without sending: already sent (duplicate) or a type the mailer ignores"
    );
    metrics::describe_counter!(
        "mailer_stream_entries_lost_total",
        "Pending entries trimmed from the stream before they were handled"
    );
    metrics::describe_gauge!(
        "mailer_stream_pending",
        "Entries read by the group but not yet acknowledged"
    );
    metrics::describe_gauge!(
        "mailer_stream_lag",
        "Entries in the stream not yet delivered to the group"
    );
}

/// Runs the consumer until `shutdown`, then lets in-flight sends finish within
/// `shutdown_grace_secs`.
pub async fn run(
    cfg: Config,
    pool: Pool,
    transport: Transport,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    describe_metrics();
    let client = redis::Client::open(cfg.redis.url.as_str()).context("redis url")?;
    let mailer = Arc::new(Mailer::new(cfg, pool, transport, shutdown.clone())?);
    tracing::info!(
        stream = %mailer.group.stream, group = %mailer.group.group, consumer = %mailer.group.consumer,
        "mailer consumer starting"
    );
    // aborted when `run` ends or is dropped (e.g. the task running it is aborted)
    let _stats = AbortOnDrop(tokio::spawn(stats_loop(mailer.clone())));

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
        match reader.fetch(&mailer, permits.len()).await {
            Ok(entries) => {
                for (entry, permit) in entries.into_iter().zip(permits) {
                    spawn_handler(&mailer, &mut tasks, &in_flight, entry, permit);
                }
            }
            Err(wait) => pause(&shutdown, wait).await,
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
        handle(&mailer, entry).await;
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
}

impl Reader {
    fn new(client: redis::Client) -> Self {
        Self {
            client,
            conn: None,
            claim_cursor: "0-0".to_owned(),
            next_claim: Instant::now(),
            failures: 0,
        }
    }

    /// Up to `count` messages: a reclaim step when one is due, else new messages. After a Redis
    /// failure, `Err` holds the wait before the next try (the connection is made anew then).
    async fn fetch(&mut self, mailer: &Mailer, count: usize) -> Result<Vec<StreamId>, Duration> {
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => match connect_reader(&self.client, mailer).await {
                Ok(c) => self.conn.insert(c),
                Err(e) => {
                    self.failures += 1;
                    tracing::warn!(error = %e, "cannot reach Redis; retrying");
                    return Err(store::redis_retry_delay(self.failures));
                }
            },
        };
        let fetched = if Instant::now() >= self.next_claim {
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
    store::create_group(&mut conn, &mailer.group.stream, &mailer.group.group).await?;
    Ok(conn)
}

// ---- delivery ----

/// Handles one entry; Redis errors leave it pending (it is reclaimed and retried later).
async fn handle(mailer: &Mailer, entry: StreamId) {
    let parsed = event::parse(|k| entry.get::<String>(k));
    let span = tracing::info_span!(
        "mailer.event",
        stream_id = %entry.id,
        event_id = tracing::field::Empty,
        event_type = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    // The span continues the trace of the request that caused the event (auth stores the
    // `traceparent` with the outbox row), so the email shows up under the sign-up in a trace.
    let traceparent = match &parsed {
        Ok(Parsed::Event(ev)) => {
            span.record("event_id", ev.event_id.as_str());
            span.record("event_type", ev.event_type.as_str());
            ev.traceparent.clone()
        }
        _ => entry.get::<String>("traceparent"),
    };
    platform::telemetry::continue_trace(&span, traceparent.as_deref(), None);
    let result = handle_entry(mailer, &entry, parsed).instrument(span).await;
    if let Err(e) = result {
        tracing::warn!(stream_id = %entry.id, error = %e, "could not finish handling; the message stays pending");
    }
}

async fn handle_entry(
    mailer: &Mailer,
    entry: &StreamId,
    parsed: Result<Parsed, event::InvalidEvent>,
) -> anyhow::Result<()> {
    match parsed {
        Err(invalid) => {
            tracing::error!(error = %invalid, "invalid event; dead-lettering it");
            dead_letter(
                mailer,
                entry,
                None,
                &invalid.to_string(),
                0,
                "invalid_event",
            )
            .await
        }
        Ok(Parsed::Ignored {
            event_id,
            event_type,
        }) => {
            tracing::debug!(%event_id, %event_type, "event type needs no email; skipping");
            metrics::counter!("mailer_events_skipped_total", "reason" => "ignored_type")
                .increment(1);
            ack(mailer, &entry.id).await
        }
        Ok(Parsed::Event(ev)) => {
            let delivery = Delivery {
                mailer,
                entry,
                keys: mailer.event_keys(&ev.event_id),
                event: &ev,
            };
            delivery.run().await
        }
    }
}

/// One event being delivered: its stream entry, the parsed event and its Redis keys.
struct Delivery<'a> {
    mailer: &'a Mailer,
    entry: &'a StreamId,
    event: &'a UserEvent,
    keys: EventKeys,
}

/// What taking the lease on an event found.
enum Lease {
    /// The lease is ours: send.
    Taken,
    /// Sent before (a redelivery, or the relay published it twice): acknowledge, do not send.
    AlreadySent,
    /// Another consumer is sending it: leave it pending.
    HeldByAnother,
    /// The other lease expired between the SET and the GET.
    Vanished,
}

/// How the start of an attempt went.
enum Begin {
    /// The lease is ours and the attempt counted: send.
    Attempt(u32),
    /// Nothing (more) to do here: acknowledged as a duplicate, held by another consumer, or
    /// dead-lettered after attempts a crashed consumer made.
    Done,
    /// The other lease expired between the SET and the GET.
    LostRace,
}

impl Delivery<'_> {
    /// Renders the email, then attempts it until it is sent, dead-lettered or left to another
    /// consumer.
    async fn run(&self) -> anyhow::Result<()> {
        let mailer = self.mailer;
        let message = match render::render(&mailer.cfg.public_base_url, &mailer.from, self.event) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "event cannot be rendered; dead-lettering it");
                return self.dead_letter(&e.to_string(), 0, "unrenderable").await;
            }
        };
        let mut lost_races = 0;
        loop {
            let lease = mailer.new_lease();
            let attempt = match self.begin_attempt(&lease).await? {
                Begin::Attempt(n) => n,
                Begin::LostRace if lost_races < 3 => {
                    lost_races += 1; // the lease expired between SET and GET: try again
                    continue;
                }
                Begin::LostRace | Begin::Done => return Ok(()),
            };
            let Err(e) = self.send(message.clone()).await else {
                self.sent(attempt).await;
                return Ok(());
            };
            if !self.failed(&lease, attempt, e).await? {
                return Ok(()); // dead-lettered, or shutdown during the backoff
            }
        }
    }

    /// Takes the lease and counts the attempt, on one pooled connection that is given back before
    /// the send.
    async fn begin_attempt(&self, lease: &str) -> anyhow::Result<Begin> {
        let mailer = self.mailer;
        let mut conn = mailer.pool.get().await?;
        match self.take_lease(&mut conn, lease).await? {
            Lease::Taken => {}
            Lease::AlreadySent => {
                drop(conn);
                ack(mailer, &self.entry.id).await?;
                return Ok(Begin::Done);
            }
            Lease::HeldByAnother => return Ok(Begin::Done),
            Lease::Vanished => return Ok(Begin::LostRace),
        }
        let attempt = store::increment_attempts(&mut conn, &self.keys).await?;
        let ttl_secs = mailer.cfg.dedupe_ttl_secs;
        store::expire_attempts(&mut conn, &self.keys, ttl_secs).await?;
        if attempt > mailer.cfg.max_attempts {
            self.dead_letter_unfinished(conn, attempt).await?;
            return Ok(Begin::Done);
        }
        drop(conn); // do not hold a pooled connection across the (slow) send
        Ok(Begin::Attempt(attempt))
    }

    /// `SET NX` of the lease; if the key is taken, what it holds.
    async fn take_lease(
        &self,
        conn: &mut MultiplexedConnection,
        lease: &str,
    ) -> anyhow::Result<Lease> {
        let lease_ms = self.mailer.cfg.transport.send_timeout_ms + LEASE_MARGIN_MS;
        if store::take_lease(conn, &self.keys, lease, lease_ms).await? {
            return Ok(Lease::Taken);
        }
        let state = store::read_event_state(conn, &self.keys).await?;
        Ok(match state.as_deref() {
            Some("sent") => {
                tracing::info!(state = ?state, "event already handled; acknowledging without sending");
                metrics::counter!("mailer_events_skipped_total", "reason" => "duplicate")
                    .increment(1);
                Lease::AlreadySent
            }
            Some(other) => {
                tracing::info!(
                    lease = other,
                    "another consumer is sending this event; leaving it pending"
                );
                Lease::HeldByAnother
            }
            None => Lease::Vanished,
        })
    }

    /// Every attempt was made, but the consumer that made the last one died before it could
    /// dead-letter the event (or died mid-send each time): dead-letter it with the stored error.
    async fn dead_letter_unfinished(
        &self,
        mut conn: deadpool_redis::Connection,
        attempt: u32,
    ) -> anyhow::Result<()> {
        let last = store::read_last_error(&mut conn, &self.keys).await?;
        drop(conn);
        let error = last.unwrap_or_else(|| "consumer stopped during the attempt".into());
        self.dead_letter(&error, attempt - 1, "max_attempts").await
    }

    /// One send, as the `mailer.send_email` client span.
    async fn send(&self, message: Message) -> Result<(), SendError> {
        let event_type = self.event.event_type.as_str();
        let send_span = tracing::info_span!(
            "smtp",
            otel.name = "mailer.send_email",
            otel.kind = "client",
            event_type
        );
        self.mailer
            .transport
            .send(message)
            .instrument(send_span)
            .await
    }

    async fn sent(&self, attempt: u32) {
        let event_type = self.event.event_type.as_str();
        metrics::counter!("emails_sent_total", "event_type" => event_type).increment(1);
        // the address itself stays out of logs (personal data); the domain helps with
        // delivery problems
        let to_domain = self
            .event
            .payload
            .email
            .rsplit_once('@')
            .map_or("", |(_, d)| d);
        tracing::info!(attempt, to_domain, "email sent");
        record_sent_until_it_lands(self.mailer, &self.entry.id, &self.keys).await;
    }

    /// After a failed attempt: stores the error, then dead-letters the event (the last attempt)
    /// or releases the lease and waits out the backoff. `Ok(true)`: try again.
    async fn failed(&self, lease: &str, attempt: u32, e: SendError) -> anyhow::Result<bool> {
        let mailer = self.mailer;
        let error = e.to_string();
        let event_type = self.event.event_type.as_str();
        metrics::counter!("emails_failed_total", "event_type" => event_type).increment(1);
        tracing::warn!(attempt, max_attempts = mailer.cfg.max_attempts, error = %error, "send failed");
        let mut conn = mailer.pool.get().await?;
        store::record_last_error(&mut conn, &self.keys, &error).await?;
        if attempt >= mailer.cfg.max_attempts {
            drop(conn);
            self.dead_letter(&error, attempt, "max_attempts").await?;
            return Ok(false);
        }
        store::release_lease(&mut conn, &self.keys, lease).await?;
        drop(conn);
        // `false` on shutdown: left pending, a consumer picks it up later
        Ok(wait_backoff(mailer, &self.entry.id, mailer.cfg.backoff(attempt)).await)
    }

    async fn dead_letter(
        &self,
        error: &str,
        attempts: u32,
        reason: &'static str,
    ) -> anyhow::Result<()> {
        dead_letter(
            self.mailer,
            self.entry,
            Some(&self.keys),
            error,
            attempts,
            reason,
        )
        .await
    }
}

/// Records a successful send (the `sent` marker, the XACK and the counter's removal in one MULTI).
/// The email is out, so giving up here would only invite a resend: while this process lives it
/// keeps trying (a Redis blip must not cost a duplicate), with the entry still marked in flight so
/// this process does not pick it up again. Only if Redis stays away longer than the lease can
/// another replica take the event over and resend it.
async fn record_sent_until_it_lands(mailer: &Mailer, id: &str, keys: &EventKeys) {
    let mut failures = 0u32;
    loop {
        let recorded: anyhow::Result<()> = async {
            let mut conn = mailer.pool.get().await?;
            let ttl_secs = mailer.cfg.dedupe_ttl_secs;
            store::record_sent(&mut conn, &mailer.group, id, keys, ttl_secs).await?;
            Ok(())
        }
        .await;
        let Err(e) = recorded else { return };
        failures += 1;
        if mailer.shutdown.is_triggered() && failures > 3 {
            tracing::error!(error = %e, "email sent but not recorded as sent before shutdown; it may be sent again");
            return;
        }
        tracing::warn!(error = %e, "email sent but recording it failed; retrying");
        tokio::time::sleep(store::redis_retry_delay(failures)).await;
    }
}

/// Waits out a backoff while keeping the message ours: every half `claim_idle_ms` an XCLAIM
/// (JUSTID, min idle 0) resets its idle time, so other replicas do not reclaim a message this
/// live consumer is merely waiting on. Returns `false` if shutdown started.
async fn wait_backoff(mailer: &Mailer, id: &str, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let beat = Duration::from_millis((mailer.cfg.claim_idle_ms / 2).max(1));
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.min(now + beat)) => {},
            _ = mailer.shutdown.wait() => return false,
        }
        if tokio::time::Instant::now() < deadline
            && let Err(e) = heartbeat(mailer, id).await
        {
            tracing::debug!(error = %e, "could not refresh the message's idle time");
        }
    }
}

async fn heartbeat(mailer: &Mailer, id: &str) -> anyhow::Result<()> {
    let mut conn = mailer.pool.get().await?;
    store::refresh_claim(&mut conn, &mailer.group, id).await?;
    Ok(())
}

async fn ack(mailer: &Mailer, id: &str) -> anyhow::Result<()> {
    let mut conn = mailer.pool.get().await?;
    store::ack_message(&mut conn, &mailer.group, id).await?;
    Ok(())
}

/// Moves `entry` to the dead-letter stream with `error` and acknowledges it (one MULTI); an
/// event's keys are cleared with it.
async fn dead_letter(
    mailer: &Mailer,
    entry: &StreamId,
    event: Option<&EventKeys>,
    error: &str,
    attempts: u32,
    reason: &'static str,
) -> anyhow::Result<()> {
    let fields = dead_letter_fields(entry, &mailer.cfg.consumer_name, error, attempts, reason);
    let (dead, maxlen) = (&mailer.dead, mailer.cfg.dead_letter_maxlen);
    let mut conn = mailer.pool.get().await?;
    store::move_to_dead_letter(
        &mut conn,
        &mailer.group,
        &entry.id,
        dead,
        maxlen,
        &fields,
        event,
    )
    .await?;
    metrics::counter!("emails_dead_lettered_total", "reason" => reason).increment(1);
    tracing::error!(attempts, error, reason, dead_letter_stream = %dead, "event dead-lettered");
    Ok(())
}

/// The entry's own fields (sorted by name), then why and when it was dead-lettered.
fn dead_letter_fields(
    entry: &StreamId,
    consumer: &str,
    error: &str,
    attempts: u32,
    reason: &str,
) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<(String, Vec<u8>)> = entry
        .map
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), value_bytes(v)?)))
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    let now = chrono::Utc::now().to_rfc3339();
    for (k, v) in [
        ("error", error),
        ("reason", reason),
        ("attempts", &attempts.to_string()),
        ("original_id", &entry.id),
        ("consumer", consumer),
        ("dead_lettered_at", &now),
    ] {
        fields.push((k.to_owned(), v.as_bytes().to_vec()));
    }
    fields
}

fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    from_redis_value_ref::<Vec<u8>>(v).ok()
}

// ---- stats ----

/// Refreshes the pending and lag gauges every `stats_interval_ms`.
async fn stats_loop(mailer: Arc<Mailer>) {
    let every = Duration::from_millis(mailer.cfg.stats_interval_ms);
    loop {
        if let Err(e) = refresh_stats(&mailer).await {
            tracing::debug!(error = %e, "could not refresh stream gauges");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = mailer.shutdown.wait() => return,
        }
    }
}

async fn refresh_stats(mailer: &Mailer) -> anyhow::Result<()> {
    let mut conn = mailer.pool.get().await?;
    let groups = store::read_groups(&mut conn, &mailer.group.stream).await?;
    if let Some(g) = groups.groups.iter().find(|g| g.name == mailer.group.group) {
        metrics::gauge!("mailer_stream_pending").set(g.pending as f64);
        if let Some(lag) = g.lag {
            metrics::gauge!("mailer_stream_lag").set(lag as f64);
        }
    }
    forget_idle_consumers(mailer, &mut conn).await
}

/// Removes consumers that hold nothing and have been idle for `forget_idle_consumer_secs`
/// (a replica that is gone, e.g. an old pod name), so the group does not grow forever.
async fn forget_idle_consumers(
    mailer: &Mailer,
    conn: &mut MultiplexedConnection,
) -> anyhow::Result<()> {
    let consumers = store::read_consumers(conn, &mailer.group).await?;
    let idle_ms = mailer.cfg.forget_idle_consumer_secs.saturating_mul(1_000);
    for c in consumers.consumers {
        if c.name == mailer.group.consumer || c.pending > 0 || (c.idle as u64) < idle_ms {
            continue;
        }
        if store::remove_idle_consumer(conn, &mailer.group, &c.name, idle_ms).await? {
            tracing::info!(consumer = %c.name, idle_ms = c.idle, "removed an idle consumer from the group");
        }
    }
    Ok(())
}
