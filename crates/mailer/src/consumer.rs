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
use lettre::message::Mailbox;
use platform::Shutdown;
use redis::{
    AsyncConnectionConfig, Value,
    aio::MultiplexedConnection,
    from_redis_value_ref,
    streams::{
        StreamAutoClaimReply, StreamId, StreamInfoConsumersReply, StreamInfoGroupsReply,
        StreamReadReply,
    },
};
use tokio::{sync::Semaphore, task::JoinSet};
use tracing::Instrument;

use crate::{
    config::Config,
    event::{self, Parsed, UserEvent},
    render,
    transport::Transport,
};

/// Extra lease time on top of the send timeout, for the Redis round trips around the send.
const LEASE_MARGIN_MS: u64 = 5_000;
/// Cap on the wait between attempts to reach Redis again after an error.
const REDIS_RETRY_MAX_MS: u64 = 5_000;

/// Everything a message task needs.
struct Ctx {
    cfg: Config,
    pool: Pool,
    transport: Transport,
    from: Mailbox,
    stream: String,
    dead: String,
    shutdown: Shutdown,
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

/// Creates the consumer group (and the stream) if missing; an existing group is fine. New groups
/// start at the beginning of the stream, so events published before the first mailer started are
/// sent too.
pub async fn ensure_group(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
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
    let from: Mailbox = cfg.from.parse().context("parsing `from`")?;
    let client = redis::Client::open(cfg.redis.url.as_str()).context("redis url")?;
    let ctx = Arc::new(Ctx {
        stream: cfg.stream_key(),
        dead: cfg.dead_letter_key(),
        cfg,
        pool,
        transport,
        from,
        shutdown: shutdown.clone(),
    });
    tracing::info!(
        stream = %ctx.stream, group = %ctx.cfg.group, consumer = %ctx.cfg.consumer_name,
        "mailer consumer starting"
    );
    // aborted when `run` ends or is dropped (e.g. the task running it is aborted)
    let _stats = AbortOnDrop(tokio::spawn(stats_loop(ctx.clone())));

    let slots = Arc::new(Semaphore::new(ctx.cfg.read_count));
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = JoinSet::new();
    let mut reader: Option<MultiplexedConnection> = None;
    let mut claim_cursor = "0-0".to_owned();
    let mut next_claim = Instant::now();
    let mut redis_failures = 0u32;

    while !shutdown.is_triggered() {
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "message task panicked");
            }
        }
        // Read only as many messages as there are free slots: the bound on emails in flight.
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.wait() => break,
        };
        let mut permits = vec![first];
        while permits.len() < ctx.cfg.read_count {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }

        let conn = match reader.as_mut() {
            Some(c) => c,
            None => match connect_reader(&client, &ctx).await {
                Ok(c) => reader.insert(c),
                Err(e) => {
                    redis_failures += 1;
                    tracing::warn!(error = %e, "cannot reach Redis; retrying");
                    pause(&shutdown, redis_retry_delay(redis_failures)).await;
                    continue;
                }
            },
        };

        let fetched = if Instant::now() >= next_claim {
            autoclaim(conn, &ctx, &claim_cursor, permits.len())
                .await
                .map(|(next, entries)| {
                    if next == "0-0" {
                        // one full pass over the pending list done; the next after half an idle
                        // period, so a dead consumer's messages wait at most 1.5 × claim_idle_ms
                        next_claim =
                            Instant::now() + Duration::from_millis(ctx.cfg.claim_idle_ms / 2);
                    }
                    claim_cursor = next;
                    entries
                })
        } else {
            read_new(conn, &ctx, permits.len()).await
        };

        match fetched {
            Ok(entries) => {
                redis_failures = 0;
                for entry in entries {
                    // COUNT was the number of permits, so there is one for each entry
                    let Some(permit) = permits.pop() else {
                        break;
                    };
                    let Some(mark) = InFlight::mark(&in_flight, &entry.id) else {
                        continue; // already being handled here (e.g. finishing a send)
                    };
                    let ctx = ctx.clone();
                    tasks.spawn(async move {
                        handle(&ctx, entry).await;
                        drop((mark, permit));
                    });
                }
            }
            Err(e) => {
                redis_failures += 1;
                tracing::warn!(error = %e, "reading the stream failed; reconnecting");
                reader = None; // also re-creates the group if Redis lost it (NOGROUP)
                pause(&shutdown, redis_retry_delay(redis_failures)).await;
            }
        }
    }

    let grace = Duration::from_secs(ctx.cfg.shutdown_grace_secs);
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
    tracing::info!("mailer consumer stopped");
    Ok(())
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

fn redis_retry_delay(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << failures.min(10));
    Duration::from_millis(ms.min(REDIS_RETRY_MAX_MS))
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
    ctx: &Ctx,
) -> anyhow::Result<MultiplexedConnection> {
    let timeout = Duration::from_millis(ctx.cfg.redis.timeout_ms);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(Duration::from_millis(ctx.cfg.block_ms) + timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    ensure_group(&mut conn, &ctx.stream, &ctx.cfg.group).await?;
    Ok(conn)
}

async fn read_new(
    conn: &mut MultiplexedConnection,
    ctx: &Ctx,
    count: usize,
) -> redis::RedisResult<Vec<StreamId>> {
    let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&ctx.cfg.group)
        .arg(&ctx.cfg.consumer_name)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(ctx.cfg.block_ms)
        .arg("STREAMS")
        .arg(&ctx.stream)
        .arg(">")
        .query_async(conn)
        .await?;
    Ok(reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default())
}

/// One XAUTOCLAIM step from `cursor`: (next cursor, claimed entries).
async fn autoclaim(
    conn: &mut MultiplexedConnection,
    ctx: &Ctx,
    cursor: &str,
    count: usize,
) -> redis::RedisResult<(String, Vec<StreamId>)> {
    let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
        .arg(&ctx.stream)
        .arg(&ctx.cfg.group)
        .arg(&ctx.cfg.consumer_name)
        .arg(ctx.cfg.claim_idle_ms)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
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
    Ok((reply.next_stream_id, reply.claimed))
}

/// Handles one entry; Redis errors leave it pending (it is reclaimed and retried later).
async fn handle(ctx: &Ctx, entry: StreamId) {
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
    let result = handle_entry(ctx, &entry, parsed).instrument(span).await;
    if let Err(e) = result {
        tracing::warn!(stream_id = %entry.id, error = %e, "could not finish handling; the message stays pending");
    }
}

async fn handle_entry(
    ctx: &Ctx,
    entry: &StreamId,
    parsed: Result<Parsed, event::InvalidEvent>,
) -> anyhow::Result<()> {
    match parsed {
        Err(invalid) => {
            tracing::error!(error = %invalid, "invalid event; dead-lettering it");
            dead_letter(ctx, entry, None, &invalid.to_string(), 0, "invalid_event").await
        }
        Ok(Parsed::Ignored {
            event_id,
            event_type,
        }) => {
            tracing::debug!(%event_id, %event_type, "event type needs no email; skipping");
            metrics::counter!("mailer_events_skipped_total", "reason" => "ignored_type")
                .increment(1);
            ack(ctx, &entry.id).await
        }
        Ok(Parsed::Event(ev)) => deliver(ctx, entry, &ev).await,
    }
}

async fn deliver(ctx: &Ctx, entry: &StreamId, ev: &UserEvent) -> anyhow::Result<()> {
    let event_type = ev.event_type.as_str();
    let message = match render::render(&ctx.cfg.public_base_url, &ctx.from, ev) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "event cannot be rendered; dead-lettering it");
            return dead_letter(
                ctx,
                entry,
                Some(&ev.event_id),
                &e.to_string(),
                0,
                "unrenderable",
            )
            .await;
        }
    };
    let state_key = ctx.cfg.event_state_key(&ev.event_id);
    let attempts_key = ctx.cfg.attempts_key(&ev.event_id);
    let lease_ms = ctx.cfg.transport.send_timeout_ms + LEASE_MARGIN_MS;
    let mut lost_races = 0;

    loop {
        let lease = format!(
            "sending:{}:{}",
            ctx.cfg.consumer_name,
            uuid::Uuid::new_v4().simple()
        );
        let mut conn = ctx.pool.get().await?;
        let acquired: Option<String> = redis::cmd("SET")
            .arg(&state_key)
            .arg(&lease)
            .arg("NX")
            .arg("PX")
            .arg(lease_ms)
            .query_async(&mut *conn)
            .await?;
        if acquired.is_none() {
            let state: Option<String> = redis::cmd("GET")
                .arg(&state_key)
                .query_async(&mut *conn)
                .await?;
            match state.as_deref() {
                Some("sent") => {
                    tracing::info!(state = ?state, "event already handled; acknowledging without sending");
                    metrics::counter!("mailer_events_skipped_total", "reason" => "duplicate")
                        .increment(1);
                    drop(conn);
                    return ack(ctx, &entry.id).await;
                }
                Some(other) => {
                    tracing::info!(
                        lease = other,
                        "another consumer is sending this event; leaving it pending"
                    );
                    return Ok(());
                }
                None if lost_races < 3 => {
                    lost_races += 1; // the lease expired between SET and GET: try again
                    continue;
                }
                None => return Ok(()),
            }
        }

        let attempt: u32 = redis::cmd("HINCRBY")
            .arg(&attempts_key)
            .arg("attempts")
            .arg(1)
            .query_async(&mut *conn)
            .await?;
        let _: () = redis::cmd("EXPIRE")
            .arg(&attempts_key)
            .arg(ctx.cfg.dedupe_ttl_secs)
            .query_async(&mut *conn)
            .await?;
        if attempt > ctx.cfg.max_attempts {
            // Every attempt was made, but the consumer that made the last one died before it
            // could dead-letter the event (or died mid-send each time).
            let last: Option<String> = redis::cmd("HGET")
                .arg(&attempts_key)
                .arg("last_error")
                .query_async(&mut *conn)
                .await?;
            drop(conn);
            let error = last.unwrap_or_else(|| "consumer stopped during the attempt".into());
            return dead_letter(
                ctx,
                entry,
                Some(&ev.event_id),
                &error,
                attempt - 1,
                "max_attempts",
            )
            .await;
        }
        drop(conn); // do not hold a pooled connection across the (slow) send

        let send_span = tracing::info_span!(
            "smtp",
            otel.name = "mailer.send_email",
            otel.kind = "client",
            event_type
        );
        match ctx
            .transport
            .send(message.clone())
            .instrument(send_span)
            .await
        {
            Ok(()) => {
                metrics::counter!("emails_sent_total", "event_type" => event_type).increment(1);
                // the address itself stays out of logs (personal data); the domain helps with
                // delivery problems
                let to_domain = ev.payload.email.rsplit_once('@').map_or("", |(_, d)| d);
                tracing::info!(attempt, to_domain, "email sent");
                record_sent(ctx, &entry.id, &state_key, &attempts_key).await;
                return Ok(());
            }
            Err(e) => {
                let error = e.to_string();
                metrics::counter!("emails_failed_total", "event_type" => event_type).increment(1);
                tracing::warn!(attempt, max_attempts = ctx.cfg.max_attempts, error = %error, "send failed");
                let mut conn = ctx.pool.get().await?;
                let _: () = redis::cmd("HSET")
                    .arg(&attempts_key)
                    .arg("last_error")
                    .arg(&error)
                    .query_async(&mut *conn)
                    .await?;
                if attempt >= ctx.cfg.max_attempts {
                    drop(conn);
                    return dead_letter(
                        ctx,
                        entry,
                        Some(&ev.event_id),
                        &error,
                        attempt,
                        "max_attempts",
                    )
                    .await;
                }
                release_lease(&mut conn, &state_key, &lease).await?;
                drop(conn);
                if !wait_backoff(ctx, &entry.id, ctx.cfg.backoff(attempt)).await {
                    return Ok(()); // shutdown: left pending, a consumer picks it up later
                }
            }
        }
    }
}

/// Records a successful send: the `sent` marker, the XACK and the counter's removal in one MULTI.
/// The email is out, so giving up here would only invite a resend: while this process lives it
/// keeps trying (a Redis blip must not cost a duplicate), with the entry still marked in flight so
/// this process does not pick it up again. Only if Redis stays away longer than the lease can
/// another replica take the event over and resend it.
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "mailer.record_sent", otel.kind = "client", db.system = "redis"))]
async fn record_sent(ctx: &Ctx, id: &str, state_key: &str, attempts_key: &str) {
    let mut failures = 0u32;
    loop {
        let recorded: anyhow::Result<()> = async {
            let mut conn = ctx.pool.get().await?;
            let _: () = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(state_key)
                .arg("sent")
                .arg("EX")
                .arg(ctx.cfg.dedupe_ttl_secs)
                .ignore()
                .cmd("XACK")
                .arg(&ctx.stream)
                .arg(&ctx.cfg.group)
                .arg(id)
                .ignore()
                .cmd("DEL")
                .arg(attempts_key)
                .ignore()
                .query_async(&mut *conn)
                .await?;
            Ok(())
        }
        .await;
        let Err(e) = recorded else { return };
        failures += 1;
        if ctx.shutdown.is_triggered() && failures > 3 {
            tracing::error!(error = %e, "email sent but not recorded as sent before shutdown; it may be sent again");
            return;
        }
        tracing::warn!(error = %e, "email sent but recording it failed; retrying");
        tokio::time::sleep(redis_retry_delay(failures)).await;
    }
}

/// Waits out a backoff while keeping the message ours: every half `claim_idle_ms` an XCLAIM
/// (JUSTID, min idle 0) resets its idle time, so other replicas do not reclaim a message this
/// live consumer is merely waiting on. Returns `false` if shutdown started.
async fn wait_backoff(ctx: &Ctx, id: &str, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let beat = Duration::from_millis((ctx.cfg.claim_idle_ms / 2).max(1));
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.min(now + beat)) => {},
            _ = ctx.shutdown.wait() => return false,
        }
        if tokio::time::Instant::now() < deadline
            && let Err(e) = heartbeat(ctx, id).await
        {
            tracing::debug!(error = %e, "could not refresh the message's idle time");
        }
    }
}

async fn heartbeat(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let mut conn = ctx.pool.get().await?;
    let _: Vec<String> = redis::cmd("XCLAIM")
        .arg(&ctx.stream)
        .arg(&ctx.cfg.group)
        .arg(&ctx.cfg.consumer_name)
        .arg(0)
        .arg(id)
        .arg("JUSTID")
        .query_async(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes the lease only if it is still ours (it may have expired and been taken by another).
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "mailer.release_lease", otel.kind = "client", db.system = "redis"))]
async fn release_lease(
    conn: &mut MultiplexedConnection,
    key: &str,
    lease: &str,
) -> redis::RedisResult<()> {
    let script = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    );
    let _: i64 = script.key(key).arg(lease).invoke_async(conn).await?;
    Ok(())
}

#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "mailer.ack", otel.kind = "client", db.system = "redis"))]
async fn ack(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let mut conn = ctx.pool.get().await?;
    let _: i64 = redis::cmd("XACK")
        .arg(&ctx.stream)
        .arg(&ctx.cfg.group)
        .arg(id)
        .query_async(&mut *conn)
        .await?;
    Ok(())
}

/// Moves `entry` to the dead-letter stream with `error` and acknowledges it, in one MULTI so a
/// crash cannot leave it half done.
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "mailer.dead_letter", otel.kind = "client", db.system = "redis"))]
async fn dead_letter(
    ctx: &Ctx,
    entry: &StreamId,
    event_id: Option<&str>,
    error: &str,
    attempts: u32,
    reason: &'static str,
) -> anyhow::Result<()> {
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
        ("consumer", &ctx.cfg.consumer_name),
        ("dead_lettered_at", &now),
    ] {
        fields.push((k.to_owned(), v.as_bytes().to_vec()));
    }
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("XADD")
        .arg(&ctx.dead)
        .arg("MAXLEN")
        .arg("~")
        .arg(ctx.cfg.dead_letter_maxlen)
        .arg("*");
    for (k, v) in &fields {
        pipe.arg(k).arg(v.as_slice());
    }
    pipe.ignore();
    if let Some(id) = event_id {
        // The state key is cleared, not set to a final value: replaying the dead letter (XADD its
        // fields back onto the stream) must send it, with a fresh attempt count.
        pipe.cmd("DEL")
            .arg(ctx.cfg.event_state_key(id))
            .ignore()
            .cmd("DEL")
            .arg(ctx.cfg.attempts_key(id))
            .ignore();
    }
    pipe.cmd("XACK")
        .arg(&ctx.stream)
        .arg(&ctx.cfg.group)
        .arg(&entry.id)
        .ignore();
    let mut conn = ctx.pool.get().await?;
    let _: () = pipe.query_async(&mut *conn).await?;
    metrics::counter!("emails_dead_lettered_total", "reason" => reason).increment(1);
    tracing::error!(attempts, error, reason, dead_letter_stream = %ctx.dead, "event dead-lettered");
    Ok(())
}

fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    from_redis_value_ref::<Vec<u8>>(v).ok()
}

/// Refreshes the pending and lag gauges every `stats_interval_ms`.
async fn stats_loop(ctx: Arc<Ctx>) {
    let every = Duration::from_millis(ctx.cfg.stats_interval_ms);
    loop {
        if let Err(e) = refresh_stats(&ctx).await {
            tracing::debug!(error = %e, "could not refresh stream gauges");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = ctx.shutdown.wait() => return,
        }
    }
}

async fn refresh_stats(ctx: &Ctx) -> anyhow::Result<()> {
    let mut conn = ctx.pool.get().await?;
    let groups: StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&ctx.stream)
        .query_async(&mut *conn)
        .await?;
    if let Some(g) = groups.groups.iter().find(|g| g.name == ctx.cfg.group) {
        metrics::gauge!("mailer_stream_pending").set(g.pending as f64);
        if let Some(lag) = g.lag {
            metrics::gauge!("mailer_stream_lag").set(lag as f64);
        }
    }
    forget_idle_consumers(ctx, &mut conn).await
}

/// Removes consumers that hold nothing and have been idle for `forget_idle_consumer_secs`.
/// Check and delete run in one script: XGROUP DELCONSUMER drops a consumer's pending entries,
/// so it must never hit one that just read something.
async fn forget_idle_consumers(ctx: &Ctx, conn: &mut MultiplexedConnection) -> anyhow::Result<()> {
    let consumers: StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&ctx.stream)
        .arg(&ctx.cfg.group)
        .query_async(conn)
        .await?;
    let idle_ms = ctx.cfg.forget_idle_consumer_secs.saturating_mul(1_000);
    let script = redis::Script::new(
        r"
        for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
            local f = {}
            for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
            if f['name'] == ARGV[2] and tonumber(f['pending']) == 0
                and tonumber(f['idle']) >= tonumber(ARGV[3]) then
                return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
            end
        end
        return -1
        ",
    );
    for c in consumers.consumers {
        if c.name == ctx.cfg.consumer_name || c.pending > 0 || (c.idle as u64) < idle_ms {
            continue;
        }
        let removed: i64 = script
            .key(&ctx.stream)
            .arg(&ctx.cfg.group)
            .arg(&c.name)
            .arg(idle_ms)
            .invoke_async(conn)
            .await?;
        if removed >= 0 {
            tracing::info!(consumer = %c.name, idle_ms = c.idle, "removed an idle consumer from the group");
        }
    }
    Ok(())
}
