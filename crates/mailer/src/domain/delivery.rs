//! Sending one email per event: once per success, acknowledged after it. The verification emails
//! of user events start here ([`handle`]); the "money received" emails of ledger events
//! ([`super::money`]) render their message and go through the same [`Delivery`].
//!
//! # How one event is handled
//! 1. XREADGROUP (new messages; after a (re)start first this consumer's own pending list) or
//!    XAUTOCLAIM (messages another consumer read but did not acknowledge within `claim_idle_ms`,
//!    i.e. a crashed or stuck replica) hands us an entry.
//! 2. `SET {prefix}mailer:event:{event_id} sending:<consumer>:<token> NX PX <lease_ms>` takes a
//!    lease on the event (`<token>` is new for every attempt). If the key already says `sent`, the
//!    event was sent before (a redelivery, or the relay published it twice): acknowledge, do not
//!    send. If another lease holds it, leave the message pending: the consumer loop hands its own
//!    pending entries out again every 500 ms while some are not in hand, others come back with
//!    XAUTOCLAIM.
//! 3. `HINCRBY {prefix}mailer:attempts:{event_id} attempts 1` counts the attempt for all replicas.
//! 4. Send, while [`Delivery::keep_lease`] renews the lease every `lease_ms / 3` (a script:
//!    `PEXPIRE` only if the key still holds our token) until the `sent` marker is written. On
//!    success, one MULTI sets the key to `sent` (TTL `dedupe_ttl_secs`), XACKs and drops the
//!    counter. On failure the error is stored, the lease released, and after an exponential
//!    backoff the next attempt starts at 2 (during the wait, XCLAIM keeps the message ours so no
//!    other replica takes it over). After `max_attempts`, one MULTI XADDs the entry with its last
//!    error to `{prefix}events:users:dead`, clears the key and XACKs. Replaying a dead letter is
//!    XADDing its `event_id`, `event_type` and `payload` back onto the stream.
//!
//! # Why two live consumers never both send one event
//! A send runs only under a lease, and a lease is only taken with `SET NX` (nobody holds the key)
//! and only kept by a renewal that finds our own token: two consumers cannot hold it at once. The
//! danger is a holder that goes on sending after its lease expired in Redis, so the sender
//! checks the time against its own clock: a `SET`/renewal sent at `t` keeps the key until at
//! least `t + lease_ms` on Redis' side (the expiry is set after the command arrived), and a
//! sender that has no confirmed renewal sent later than `t` drops its send at `t + ¾ lease_ms`
//! (`LeaseLost::Unconfirmed`; `TakenOver` if a renewal finds the key gone or another's). The
//! send future is dropped there and then (nothing it had not yet written is written: a message
//! whose final `.` was not sent is never accepted), a quarter of the lease before anyone else
//! can take it. This holds
//! whatever the consumers are called, also for two processes under one `consumer_name` (a
//! misconfiguration; each reads the other's pending entries at start and finds them leased).
//! What it assumes: the two clocks run at rates within 25 % of each other over a lease, and a
//! process is not frozen (SIGSTOP, a VM pause) between writing the end of DATA and the check.
//!
//! # Why a killed mailer's email goes out within seconds of its restart
//! A process that dies mid-send stops renewing: its lease is gone at most `lease_ms` (3 s) after
//! its last renewal. The restarted process under the same `consumer_name` (the pod name) reads
//! its own pending list at once, finds the entry leased, and hands it out again every 500 ms, so
//! it takes the lease and sends within `lease_ms` + 0.5 s of the kill. Nothing needs to know
//! that the predecessor is dead: its lease simply stops being renewed. Another replica takes
//! over a dead consumer's entries only after `claim_idle_ms`.
//!
//! # Crash windows (what a crash at each point does)
//! - After XREADGROUP, before the lease: the message stays pending; the restarted consumer reads
//!   it at once (its own pending list), another consumer reclaims it after `claim_idle_ms`; it
//!   is sent once.
//! - Holding the lease, before or during the send: the lease expires at most `lease_ms` after its
//!   last renewal; the next holder then sends. If the SMTP server had already accepted the message,
//!   this is the one duplicate the design allows ("at most one resend after a crash"). SMTP has no
//!   idempotent submit, so no design can close this window.
//! - After the send, before the `sent` MULTI: same as above: a possible single resend. (A Redis
//!   error at this point is not a crash: the live consumer retries the MULTI until it lands,
//!   renewing the lease meanwhile; only if Redis stays away longer than the lease can another
//!   consumer take the event over and resend it.)
//! - After the MULTI: nothing left to do; the key and the ack were written together.
//! - After the last failed attempt, before the dead-letter MULTI: the reclaimer finds the counter
//!   above `max_attempts` and dead-letters with the stored last error, without sending again.
//! - The SMTP server accepted but its reply was lost (timeout), or the send was abandoned when
//!   its lease could not be renewed after the end of DATA had been written: counted as a failure
//!   and retried, a possible duplicate.
//! - The `sent` marker expires (`dedupe_ttl_secs`) before a redelivery of the same event: only
//!   possible if an entry stays pending, or is re-published, for longer than that window.
//! - Redis itself loses data (no persistence, failover): the markers and the stream go together.
//!
//! While a message waits out its backoff no lease is held; should a consumer reclaim it anyway
//! (the heartbeat failed), it may attempt it too: the shared counter keeps the total number of
//! attempts bounded and the `sent` marker still stops any second send after a success.

use std::time::Duration;

use lettre::Message;
use redis::{aio::MultiplexedConnection, streams::StreamId};
use tracing::Instrument;

use super::{
    dead_letter::dead_letter,
    event::{self, Parsed},
    mailer::Mailer,
    render,
};
use crate::{
    store::{self, EventKeys},
    transport::SendError,
};

/// Why a sender stopped trusting its lease (see [`Delivery::keep_lease`]).
#[derive(Debug, Clone, Copy)]
enum LeaseLost {
    /// The renewal found the key no longer ours: it expired, and another consumer may hold it.
    TakenOver,
    /// No renewal was confirmed in time (Redis slow or away): it may expire any moment.
    Unconfirmed,
}

impl LeaseLost {
    fn as_str(self) -> &'static str {
        match self {
            Self::TakenOver => "taken_over",
            Self::Unconfirmed => "unconfirmed",
        }
    }
}

/// Handles one entry; Redis errors leave it pending (it is reclaimed and retried later).
pub async fn handle(mailer: &Mailer, entry: StreamId) {
    let parsed = event::parse(|k| entry.get::<String>(k));
    if matches!(parsed, Ok(Parsed::Ignored { .. })) {
        // no email: no span in the trace of the request that wrote it (a sign-up's
        // `user.contact_updated` is for the recipients table, not for this group)
        if let Err(e) = handle_entry(mailer, &entry, parsed).await {
            tracing::warn!(stream_id = %entry.id, error = %e, "could not acknowledge a skipped event; the message stays pending");
        }
        return;
    }
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
            let delivery = Delivery::new(mailer, entry, &ev.event_id, ev.event_type.as_str());
            let message = match render::render(&mailer.cfg.public_base_url, &mailer.from, &ev) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, "event cannot be rendered; dead-lettering it");
                    return delivery
                        .dead_letter(&e.to_string(), 0, "unrenderable")
                        .await;
                }
            };
            delivery.run(message, domain_of(&ev.payload.email)).await
        }
    }
}

/// The domain of an address, for logs (the address itself is personal data).
pub(crate) fn domain_of(email: &str) -> &str {
    email.rsplit_once('@').map_or("", |(_, d)| d)
}

/// One event being delivered: its stream entry, its type and its Redis keys.
pub(crate) struct Delivery<'a> {
    mailer: &'a Mailer,
    entry: &'a StreamId,
    event_type: &'static str,
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
    /// The lease is ours (taken by a SET sent at the instant given) and the attempt counted: send.
    Attempt(u32, tokio::time::Instant),
    /// Nothing (more) to do here: acknowledged as a duplicate, held by another consumer, or
    /// dead-lettered after attempts a crashed consumer made.
    Done,
    /// The other lease expired between the SET and the GET.
    LostRace,
}

impl<'a> Delivery<'a> {
    pub(crate) fn new(
        mailer: &'a Mailer,
        entry: &'a StreamId,
        event_id: &str,
        event_type: &'static str,
    ) -> Self {
        Self {
            mailer,
            entry,
            event_type,
            keys: mailer.event_keys(event_id),
        }
    }

    /// Attempts `message` until it is sent, dead-lettered or left to another consumer.
    /// `to_domain` names the recipient's domain in the log line of the send.
    pub(crate) async fn run(&self, message: Message, to_domain: &str) -> anyhow::Result<()> {
        let mailer = self.mailer;
        let mut lost_races = 0;
        loop {
            let lease = mailer.new_lease();
            let (attempt, taken_at) = match self.begin_attempt(&lease).await? {
                Begin::Attempt(n, at) => (n, at),
                Begin::LostRace if lost_races < 3 => {
                    lost_races += 1; // the lease expired between SET and GET: try again
                    continue;
                }
                Begin::LostRace | Begin::Done => return Ok(()),
            };
            // The lease is renewed beside the send; the send is dropped (abandoned) the moment
            // the lease can no longer be vouched for, before it can have expired in Redis.
            let keeper = self.keep_lease(&lease, taken_at);
            tokio::pin!(keeper);
            let sent = tokio::select! {
                biased;
                lost = &mut keeper => Err(self.abandoned(lost)),
                r = self.send(message.clone()) => r.map_err(|e| e.to_string()),
            };
            let error = match sent {
                Ok(()) => {
                    self.sent(attempt, to_domain, keeper).await;
                    return Ok(());
                }
                Err(error) => error,
            };
            if !self.failed(&lease, attempt, error).await? {
                return Ok(()); // dead-lettered, or shutdown during the backoff
            }
        }
    }

    /// Keeps `lease` (taken by a SET sent at `taken_at`) ours while a send is in progress: renews
    /// it every third of `lease_ms`. Returns only once this consumer can no longer be sure the
    /// lease is still its own: a renewal found another value (it had expired), or no renewal was
    /// confirmed within three quarters of `lease_ms` of the last one sent that was. A renewal
    /// sent at `t` and confirmed keeps the key until at least `t + lease_ms` on Redis' side, so
    /// giving up at `t + ¾ lease_ms` leaves a quarter of the lease as a margin for the send to
    /// be dropped and for clock rates to differ.
    async fn keep_lease(&self, lease: &str, taken_at: tokio::time::Instant) -> LeaseLost {
        let lease_ms = self.mailer.cfg.lease_ms;
        let period = Duration::from_millis(lease_ms / 3);
        let trusted_for = Duration::from_millis(lease_ms - lease_ms / 4);
        let mut confirmed = taken_at;
        loop {
            let deadline = confirmed + trusted_for;
            tokio::time::sleep_until((tokio::time::Instant::now() + period).min(deadline)).await;
            let sent_at = tokio::time::Instant::now();
            if sent_at >= deadline {
                return LeaseLost::Unconfirmed;
            }
            let renewal = async {
                let mut conn = self.mailer.pool.get().await?;
                let renewed = store::renew_lease(&mut conn, &self.keys, lease, lease_ms).await?;
                anyhow::Ok(renewed)
            };
            match tokio::time::timeout_at(deadline, renewal).await {
                Ok(Ok(true)) => confirmed = sent_at,
                Ok(Ok(false)) => return LeaseLost::TakenOver,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not renew the send's lease; trying again")
                }
                Err(_) => return LeaseLost::Unconfirmed,
            }
        }
    }

    /// The error of an attempt whose send was dropped because its lease was lost.
    fn abandoned(&self, lost: LeaseLost) -> String {
        let why = lost.as_str();
        metrics::counter!("mailer_leases_lost_total", "reason" => why).increment(1);
        tracing::warn!(
            reason = why,
            "the send's lease could not be kept; the send was abandoned (another consumer may \
             take the event over)"
        );
        format!("send abandoned: its lease was lost ({why})")
    }

    /// Takes the lease and counts the attempt, on one pooled connection that is given back before
    /// the send.
    async fn begin_attempt(&self, lease: &str) -> anyhow::Result<Begin> {
        let mailer = self.mailer;
        let mut conn = mailer.pool.get().await?;
        let taken_at = tokio::time::Instant::now(); // the lease lasts lease_ms from after this
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
        Ok(Begin::Attempt(attempt, taken_at))
    }

    /// `SET NX` of the lease; if the key is taken, what it holds.
    async fn take_lease(
        &self,
        conn: &mut MultiplexedConnection,
        lease: &str,
    ) -> anyhow::Result<Lease> {
        let lease_ms = self.mailer.cfg.lease_ms;
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
        let event_type = self.event_type;
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

    /// After a successful send: records it while `keeper` goes on renewing the lease, so no
    /// other consumer takes the event over before the `sent` marker is written.
    async fn sent(
        &self,
        attempt: u32,
        to_domain: &str,
        mut keeper: std::pin::Pin<&mut impl std::future::Future<Output = LeaseLost>>,
    ) {
        let event_type = self.event_type;
        metrics::counter!("emails_sent_total", "event_type" => event_type).increment(1);
        // the address itself stays out of logs (personal data); the domain helps with
        // delivery problems
        tracing::info!(attempt, to_domain, "email sent");
        let recording = record_sent_until_it_lands(self.mailer, &self.entry.id, &self.keys);
        tokio::pin!(recording);
        tokio::select! {
            biased;
            () = &mut recording => {}
            lost = &mut keeper => {
                metrics::counter!("mailer_leases_lost_total", "reason" => lost.as_str()).increment(1);
                tracing::warn!(reason = lost.as_str(), "the lease was lost before the send was recorded; another consumer may send the email again");
                recording.await;
            }
        }
    }

    /// After a failed attempt: stores the error, then dead-letters the event (the last attempt)
    /// or releases the lease and waits out the backoff. `Ok(true)`: try again.
    async fn failed(&self, lease: &str, attempt: u32, error: String) -> anyhow::Result<bool> {
        let mailer = self.mailer;
        let event_type = self.event_type;
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

    pub(crate) async fn dead_letter(
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
    // at least 1 ms: `Config::validate` refuses a claim_idle_ms not above send_timeout_ms (>= 1)
    let beat = Duration::from_millis(mailer.cfg.claim_idle_ms / 2);
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

pub(crate) async fn ack(mailer: &Mailer, id: &str) -> anyhow::Result<()> {
    let mut conn = mailer.pool.get().await?;
    store::ack_message(&mut conn, &mailer.group, id).await?;
    Ok(())
}
