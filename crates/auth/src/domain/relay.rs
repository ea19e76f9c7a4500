//! The outbox relay of auth: platform's relay ([`platform::outbox`]) for `auth.outbox`, moving user
//! events to the Redis Stream `{redis.key_prefix}events:users` and revoked sessions to
//! `{redis.key_prefix}auth:revoked_sessions` (see `platform::revocations`). The mailer reads the
//! first and deduplicates by `event_id`; the relay's guarantees (outbox order, at least once, one
//! relay at a time across replicas, retention) are described in [`platform::outbox`].

use deadpool_redis::Pool;
use platform::{
    Shutdown,
    config::RedisConfig,
    outbox::{Outbox, Streams},
};
use sqlx::PgPool;

use crate::{config::RelayConfig, store};

/// The user-events stream key for a Redis key prefix.
pub use crate::store::stream_key;

/// auth's outbox: the table, the channel `store::insert_outbox` notifies, the relay's lock.
pub const OUTBOX: Outbox = Outbox {
    table: "auth.outbox",
    channel: store::OUTBOX_CHANNEL,
    lock_key: 0x6175_7468_7265_6c61, // "authrela"
};

/// Runs the relay until `shutdown`. `redis` is the pool of the Redis the stream lives in, built
/// from `redis_cfg` (whose key prefix names the stream and whose timeout bounds each publish).
/// Bad settings are refused here as at start-up (a zero poll interval would spin), never clamped.
pub async fn run(
    db: PgPool,
    redis: Pool,
    redis_cfg: RedisConfig,
    cfg: RelayConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let streams = Streams::single(stream_key(&redis_cfg.key_prefix)).route(
        platform::revocations::EVENT_TYPE,
        platform::revocations::stream_key(&redis_cfg.key_prefix),
    );
    platform::outbox::run(db, redis, redis_cfg, OUTBOX, streams, cfg, shutdown).await
}
