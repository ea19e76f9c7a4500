//! Revoked sessions, known in memory by every service, so a revoked session's access tokens stop
//! being accepted within about a second and no request costs a database call.
//!
//! `auth` writes a `session.revoked` event into its outbox in the same transaction as the
//! revocation (logout, refresh-token reuse, password change, email change); its relay moves it to
//! the Redis Stream [`stream_key`] (`{redis.key_prefix}auth:revoked_sessions`). Every service runs
//! [`follow`] at start-up: it reads that stream from its beginning (entries whose tokens would have
//! expired anyway are skipped), then blocks on it for new entries, and wraps the service's
//! [`TokenMaker`] so that `verify` refuses a revoked session's tokens with
//! [`TokenError::Revoked`]. The wrapper sits outside the remembered-token cache
//! ([`crate::token::Verified`]), so a remembered token is checked against revocations every time.
//!
//! An entry names a session, an [`Effect`] and `until` (the latest expiry of a token it concerns;
//! the entry is dropped after it):
//! - [`Effect::Revoked`] (logout, refresh-token reuse, password change): every token of the
//!   session is refused;
//! - [`Effect::EmailUnverified`] (email change): the session's tokens issued at or before
//!   `issued_before` are taken as `email_verified = false`, whatever they say; so they stop moving
//!   money where a verified email is required, and everything else (auth's resend, reads) goes on.
//!   Token `iat` is in whole seconds, so a token renewed within the same second is downgraded too,
//!   which is harmless: a renew after the change says unverified anyway.
//!
//! When Redis cannot be read, revocations already known stay enforced and new ones are not seen
//! (fail open: the stream is not a second authority over tokens, and money keeps moving for
//! sessions nobody revoked); every failure is logged at ERROR and counted in
//! `token_revocations_feed_errors_total`, and `token_revocations_feed_up` is 0 while it lasts.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    Shutdown,
    config::RevocationsConfig,
    token::{Claims, TokenError, TokenMaker},
};

/// The event type auth writes for a revoked session (and the relay routes to [`stream_key`]).
pub const EVENT_TYPE: &str = "session.revoked";

/// The stream of revoked sessions under a Redis key prefix.
pub fn stream_key(prefix: &str) -> String {
    format!("{prefix}auth:revoked_sessions")
}

/// What an entry does to a session's tokens (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Revoked,
    EmailUnverified,
}

/// The payload of a [`EVENT_TYPE`] event (the stream entry's `payload` field, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub session_id: Uuid,
    pub effect: Effect,
    /// The tokens concerned were issued at or before this instant.
    pub issued_before: DateTime<Utc>,
    /// When the last such token expires; the entry is forgotten then.
    pub until: DateTime<Utc>,
}

/// What the known entries say about one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Accept, but its email is not verified any more.
    EmailUnverified,
    Refuse,
}

/// The revoked sessions this process knows, at most `max_sessions` entries.
pub struct Revoked {
    sessions: RwLock<HashMap<(Uuid, Effect), Revocation>>,
    max_sessions: usize,
}

impl Revoked {
    pub fn new(max_sessions: usize) -> Self {
        Self {
            sessions: RwLock::new(HashMap::new()),
            max_sessions,
        }
    }

    /// Remembers `r` unless it is already over; a session marked twice keeps the wider entry.
    /// When full, the entries past their end go first, then the ones ending soonest (logged: the
    /// bound is sized so that this does not happen).
    pub fn insert(&self, r: Revocation) {
        let now = Utc::now();
        if r.until <= now {
            return;
        }
        let mut sessions = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = sessions.get_mut(&(r.session_id, r.effect)) {
            known.issued_before = known.issued_before.max(r.issued_before);
            known.until = known.until.max(r.until);
            return;
        }
        if sessions.len() >= self.max_sessions {
            sessions.retain(|_, e| e.until > now);
        }
        if sessions.len() >= self.max_sessions
            && let Some(soonest) = sessions
                .values()
                .min_by_key(|e| e.until)
                .map(|e| (e.session_id, e.effect))
        {
            tracing::error!(
                max_sessions = self.max_sessions,
                "token.revocations.max_sessions reached: forgetting the entry ending soonest"
            );
            sessions.remove(&soonest);
        }
        sessions.insert((r.session_id, r.effect), r);
    }

    /// What the known entries say about a token with these claims.
    pub fn verdict(&self, claims: &Claims) -> Verdict {
        let now = Utc::now();
        let sessions = self.sessions.read().unwrap_or_else(|p| p.into_inner());
        let applies = |effect| {
            sessions
                .get(&(claims.sid, effect))
                .is_some_and(|e| claims.iat <= e.issued_before && now < e.until)
        };
        if applies(Effect::Revoked) {
            Verdict::Refuse
        } else if applies(Effect::EmailUnverified) {
            Verdict::EmailUnverified
        } else {
            Verdict::Accept
        }
    }

    /// Drops the entries past their end.
    pub fn purge(&self) {
        let now = Utc::now();
        let mut sessions = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, e| e.until > now);
        metrics::gauge!("token_revocations_known").set(sessions.len() as f64);
    }

    pub fn len(&self) -> usize {
        self.sessions.read().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A [`TokenMaker`] whose `verify` also refuses the tokens of revoked sessions.
pub struct Guarded {
    inner: Arc<dyn TokenMaker>,
    revoked: Arc<Revoked>,
}

impl Guarded {
    pub fn new(inner: Arc<dyn TokenMaker>, revoked: Arc<Revoked>) -> Self {
        Self { inner, revoked }
    }
}

impl TokenMaker for Guarded {
    fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        self.inner.sign(claims)
    }

    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut claims = self.inner.verify(token)?;
        match self.revoked.verdict(&claims) {
            Verdict::Accept => {}
            Verdict::EmailUnverified => claims.email_verified = false,
            Verdict::Refuse => {
                metrics::counter!("token_revoked_refused_total").increment(1);
                return Err(TokenError::Revoked);
            }
        }
        Ok(claims)
    }
}

/// Starts following the revocation stream of `cfg.redis` (a background task until `shutdown`)
/// and returns `tokens` guarded by what it learns. The one line a service's start-up needs.
pub fn follow(
    tokens: Arc<dyn TokenMaker>,
    cfg: &RevocationsConfig,
    shutdown: Shutdown,
) -> anyhow::Result<Arc<dyn TokenMaker>> {
    let revoked = Arc::new(Revoked::new(cfg.max_sessions));
    let client =
        crate::redis::client(&cfg.redis).map_err(|e| anyhow::anyhow!("token.revocations.{e:#}"))?;
    tokio::spawn(run(
        client,
        stream_key(&cfg.redis.key_prefix),
        Duration::from_millis(cfg.block_ms),
        Duration::from_millis(cfg.redis.timeout_ms),
        revoked.clone(),
        shutdown,
    ));
    Ok(Arc::new(Guarded::new(tokens, revoked)))
}

/// Entries read per XREAD.
const READ_COUNT: usize = 1_000;

async fn run(
    client: redis::Client,
    stream: String,
    block: Duration,
    timeout: Duration,
    revoked: Arc<Revoked>,
    shutdown: Shutdown,
) {
    // from the beginning: what is still in the stream may still matter
    let mut last_id = "0-0".to_owned();
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut failing = false;
    while !shutdown.is_triggered() {
        let step = async {
            if conn.is_none() {
                conn = Some(client.get_multiplexed_async_connection().await?);
            }
            let c = conn.as_mut().expect("connected above");
            read(c, &stream, &mut last_id, block, &revoked).await
        };
        let outcome = tokio::select! {
            _ = shutdown.wait() => break,
            r = tokio::time::timeout(block + timeout, step) => r,
        };
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("timed out".to_owned()),
        };
        revoked.purge();
        match error {
            None => {
                if failing {
                    tracing::warn!(stream = %stream, "revoked-session feed is back");
                }
                failing = false;
                metrics::gauge!("token_revocations_feed_up").set(1.0);
            }
            Some(error) => {
                conn = None;
                failing = true;
                metrics::gauge!("token_revocations_feed_up").set(0.0);
                metrics::counter!("token_revocations_feed_errors_total").increment(1);
                tracing::error!(stream = %stream, %error,
                    "cannot read revoked sessions from Redis: sessions revoked from now on are \
                     not refused until it is back (known ones still are)");
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// One XREAD: new entries after `last_id` (blocking up to `block`) into `revoked`.
async fn read(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    last_id: &mut String,
    block: Duration,
    revoked: &Revoked,
) -> redis::RedisResult<()> {
    let opts = redis::streams::StreamReadOptions::default()
        .count(READ_COUNT)
        .block(block.as_millis() as usize);
    let reply: Option<redis::streams::StreamReadReply> =
        redis::AsyncCommands::xread_options(conn, &[stream], &[last_id.as_str()], &opts).await?;
    for key in reply.into_iter().flat_map(|r| r.keys) {
        for entry in key.ids {
            let payload: Option<String> = entry.get("payload");
            match payload.as_deref().map(serde_json::from_str::<Revocation>) {
                Some(Ok(r)) => revoked.insert(r),
                _ => tracing::warn!(id = %entry.id, "unreadable revoked-session entry skipped"),
            }
            *last_id = entry.id;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::TokenKind, token::Keys, token::Role};

    fn revocation(
        sid: Uuid,
        effect: Effect,
        issued_before: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Revocation {
        Revocation {
            session_id: sid,
            effect,
            issued_before,
            until,
        }
    }

    fn claims(sid: Uuid) -> Claims {
        Claims::access(
            "ann",
            Uuid::new_v4(),
            Role::Depositor,
            sid,
            true,
            Duration::from_secs(60),
        )
    }

    fn in_15_min() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::minutes(15)
    }

    #[test]
    fn a_revoked_sessions_remembered_token_is_refused() {
        let keys = Keys::generate();
        let revoked = Arc::new(Revoked::new(10));
        let tokens = Guarded::new(keys.maker(TokenKind::Paseto), revoked.clone());
        let c = claims(Uuid::new_v4());
        let token = tokens.sign(&c).unwrap();
        // verified once, so the inner maker remembers it
        assert!(tokens.verify(&token).is_ok());
        let until = in_15_min();
        revoked.insert(revocation(c.sid, Effect::Revoked, until, until));
        assert_eq!(tokens.verify(&token), Err(TokenError::Revoked));
        let other = tokens.sign(&claims(Uuid::new_v4())).unwrap();
        assert!(tokens.verify(&other).is_ok(), "another session is not");
    }

    #[test]
    fn an_email_change_downgrades_older_tokens_only() {
        let keys = Keys::generate();
        let revoked = Arc::new(Revoked::new(10));
        let tokens = Guarded::new(keys.maker(TokenKind::Paseto), revoked.clone());
        let c = claims(Uuid::new_v4());
        let token = tokens.sign(&c).unwrap();
        let mark = |issued_before| {
            revoked.insert(revocation(
                c.sid,
                Effect::EmailUnverified,
                issued_before,
                in_15_min(),
            ))
        };
        mark(c.iat - chrono::Duration::seconds(1));
        assert!(
            tokens.verify(&token).unwrap().email_verified,
            "issued after"
        );
        mark(c.iat);
        let seen = tokens.verify(&token).unwrap();
        assert!(!seen.email_verified, "issued at the change: unverified");
        assert_eq!(seen.sub, "ann", "otherwise accepted");
    }

    #[test]
    fn entries_past_their_end_are_dropped_and_the_bound_holds() {
        let revoked = Revoked::new(2);
        let now = Utc::now();
        let gone = now - chrono::Duration::seconds(1);
        revoked.insert(revocation(Uuid::new_v4(), Effect::Revoked, now, gone));
        assert!(revoked.is_empty(), "already over: not kept");
        let soon = now + chrono::Duration::seconds(5);
        let first = Uuid::new_v4();
        revoked.insert(revocation(first, Effect::Revoked, soon, soon));
        for _ in 0..3 {
            let later = in_15_min();
            revoked.insert(revocation(Uuid::new_v4(), Effect::Revoked, later, later));
        }
        assert_eq!(revoked.len(), 2);
        assert_eq!(
            revoked.verdict(&claims(first)),
            Verdict::Accept,
            "soonest went first"
        );
    }
}
