//! Every Redis command of the mailer, one function each: the stream and its consumer group, the
//! per-event lease/`sent` marker, the shared attempt counter and the dead-letter stream.
//!
//! What each key holds, and why the steps come in this order, is told in `domain::delivery`.
//! These functions only speak Redis; they take a connection so a caller can keep one for a run of
//! short commands (and give it back before a slow send).

use redis::{
    RedisResult,
    aio::MultiplexedConnection,
    streams::{StreamAutoClaimReply, StreamId, StreamInfoConsumersReply, StreamInfoGroupsReply},
};

/// A stream as this replica reads it: every group command names the first three.
#[derive(Debug, Clone)]
pub struct Group {
    /// `{prefix}events:users` or `{prefix}events:ledger`.
    pub stream: String,
    /// The consumer group every mailer replica joins.
    pub group: String,
    /// This replica's name in the group.
    pub consumer: String,
    /// Where a new group starts: `0` (everything in the stream) or `$` (only what comes next).
    pub start: &'static str,
}

/// The two keys the mailer keeps per event (see `Config::event_state_key` / `attempts_key`).
#[derive(Debug, Clone)]
pub struct EventKeys {
    /// `sending:<consumer>:<token>` (a lease while one consumer sends) or `sent`.
    pub state: String,
    /// A hash: `attempts` (a counter shared by all replicas) and `last_error`.
    pub attempts: String,
}

/// Creates the consumer group (and the stream) if missing; an existing group is fine. A new group
/// starts at `group.start`: the user-events groups at the beginning of the stream (`0`), so events
/// published before the first mailer started are sent too; the ledger group at its end (`$`), so
/// a first start does not mail the ledger's history.
pub async fn create_group(conn: &mut MultiplexedConnection, group: &Group) -> RedisResult<()> {
    let created: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&group.stream)
        .arg(&group.group)
        .arg(group.start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// XREADGROUP `>`: up to `count` messages no consumer of the group has seen, waiting at most
/// `block_ms` for the first.
pub async fn read_new_messages(
    conn: &mut MultiplexedConnection,
    group: &Group,
    count: usize,
    block_ms: u64,
) -> RedisResult<Vec<StreamId>> {
    let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&group.group)
        .arg(&group.consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(&group.stream)
        .arg(">")
        .query_async(conn)
        .await?;
    Ok(reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default())
}

/// This consumer's own pending entries (read before, never acknowledged: a previous process
/// under the same consumer name died with them), oldest first, at most `count`: XREADGROUP with
/// id `0` instead of `>` returns the consumer's pending list rather than new messages.
pub async fn read_own_pending(
    conn: &mut MultiplexedConnection,
    group: &Group,
    count: usize,
) -> RedisResult<Vec<StreamId>> {
    let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&group.group)
        .arg(&group.consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(&group.stream)
        .arg("0")
        .query_async(conn)
        .await?;
    Ok(reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default())
}

/// One XAUTOCLAIM step from `cursor`: messages pending for at least `min_idle_ms` become ours.
pub async fn claim_idle_messages(
    conn: &mut MultiplexedConnection,
    group: &Group,
    min_idle_ms: u64,
    cursor: &str,
    count: usize,
) -> RedisResult<StreamAutoClaimReply> {
    redis::cmd("XAUTOCLAIM")
        .arg(&group.stream)
        .arg(&group.group)
        .arg(&group.consumer)
        .arg(min_idle_ms)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
}

/// `SET state lease NX PX lease_ms`: `true` if the lease is ours, `false` if the key was set.
pub async fn take_lease(
    conn: &mut MultiplexedConnection,
    keys: &EventKeys,
    lease: &str,
    lease_ms: u64,
) -> RedisResult<bool> {
    let acquired: Option<String> = redis::cmd("SET")
        .arg(&keys.state)
        .arg(lease)
        .arg("NX")
        .arg("PX")
        .arg(lease_ms)
        .query_async(conn)
        .await?;
    Ok(acquired.is_some())
}

/// Extends the lease to `lease_ms` from now only if it is still ours (`GET` = `lease`, then
/// `PEXPIRE`, in one script): `true` if extended, `false` if it expired or another holds it.
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "mailer.renew_lease", otel.kind = "client", db.system = "redis"))]
pub async fn renew_lease(
    conn: &mut MultiplexedConnection,
    keys: &EventKeys,
    lease: &str,
    lease_ms: u64,
) -> RedisResult<bool> {
    let script = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
    );
    let renewed: i64 = script
        .key(&keys.state)
        .arg(lease)
        .arg(lease_ms)
        .invoke_async(conn)
        .await?;
    Ok(renewed == 1)
}

/// The event's state: `sent`, someone's lease, or `None` (no key).
pub async fn read_event_state(
    conn: &mut MultiplexedConnection,
    keys: &EventKeys,
) -> RedisResult<Option<String>> {
    redis::cmd("GET").arg(&keys.state).query_async(conn).await
}

/// Counts one more attempt (for all replicas); returns the new count.
pub async fn increment_attempts(
    conn: &mut MultiplexedConnection,
    keys: &EventKeys,
) -> RedisResult<u32> {
    redis::cmd("HINCRBY")
        .arg(&keys.attempts)
        .arg("attempts")
        .arg(1)
        .query_async(conn)
        .await
}

/// Lets the attempt counter expire `ttl_secs` from now.
pub async fn expire_attempts(
    conn: &mut MultiplexedConnection,
    keys: &EventKeys,
    ttl_secs: u64,
) -> RedisResult<()> {
    redis::cmd("EXPIRE")
        .arg(&keys.attempts)
        .arg(ttl_secs)
        .query_async(conn)
        .await
}

/// The error of the last failed attempt, if one was stored.
pub async fn read_last_error(
    conn: &mut MultiplexedConnection,
    keys: &EventKeys,
) -> RedisResult<Option<String>> {
    redis::cmd("HGET")
        .arg(&keys.attempts)
        .arg("last_error")
        .query_async(conn)
        .await
}

/// Stores the error of a failed attempt (it goes with the event if it is dead-lettered).
pub async fn record_last_error(
    conn: &mut MultiplexedConnection,
    keys: &EventKeys,
    error: &str,
) -> RedisResult<()> {
    redis::cmd("HSET")
        .arg(&keys.attempts)
        .arg("last_error")
        .arg(error)
        .query_async(conn)
        .await
}

/// Deletes the lease only if it is still ours (it may have expired and been taken by another).
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "mailer.release_lease", otel.kind = "client", db.system = "redis"))]
pub async fn release_lease(
    conn: &mut MultiplexedConnection,
    keys: &EventKeys,
    lease: &str,
) -> RedisResult<()> {
    let script = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    );
    let _: i64 = script
        .key(&keys.state)
        .arg(lease)
        .invoke_async(conn)
        .await?;
    Ok(())
}

/// Records a successful send: the `sent` marker (kept `dedupe_ttl_secs`), the XACK and the
/// counter's removal in one MULTI.
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "mailer.record_sent", otel.kind = "client", db.system = "redis"))]
pub async fn record_sent(
    conn: &mut MultiplexedConnection,
    group: &Group,
    id: &str,
    keys: &EventKeys,
    dedupe_ttl_secs: u64,
) -> RedisResult<()> {
    redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&keys.state)
        .arg("sent")
        .arg("EX")
        .arg(dedupe_ttl_secs)
        .ignore()
        .cmd("XACK")
        .arg(&group.stream)
        .arg(&group.group)
        .arg(id)
        .ignore()
        .cmd("DEL")
        .arg(&keys.attempts)
        .ignore()
        .query_async(conn)
        .await
}

/// XCLAIM (JUSTID, min idle 0) of a message we already own: resets its idle time, so no other
/// replica's XAUTOCLAIM takes it over.
pub async fn refresh_claim(
    conn: &mut MultiplexedConnection,
    group: &Group,
    id: &str,
) -> RedisResult<()> {
    let _: Vec<String> = redis::cmd("XCLAIM")
        .arg(&group.stream)
        .arg(&group.group)
        .arg(&group.consumer)
        .arg(0)
        .arg(id)
        .arg("JUSTID")
        .query_async(conn)
        .await?;
    Ok(())
}

/// XACK: the message is done with and leaves the group's pending list.
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "mailer.ack", otel.kind = "client", db.system = "redis"))]
pub async fn ack_message(
    conn: &mut MultiplexedConnection,
    group: &Group,
    id: &str,
) -> RedisResult<()> {
    let _: i64 = redis::cmd("XACK")
        .arg(&group.stream)
        .arg(&group.group)
        .arg(id)
        .query_async(conn)
        .await?;
    Ok(())
}

/// XADDs `fields` to the dead-letter stream `dead` (approximate MAXLEN `maxlen`), clears the
/// event's keys and acknowledges message `id`, in one MULTI so a crash cannot leave it half done.
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "mailer.dead_letter", otel.kind = "client", db.system = "redis"))]
pub async fn move_to_dead_letter(
    conn: &mut MultiplexedConnection,
    group: &Group,
    id: &str,
    dead: &str,
    maxlen: usize,
    fields: &[(String, Vec<u8>)],
    event: Option<&EventKeys>,
) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("XADD")
        .arg(dead)
        .arg("MAXLEN")
        .arg("~")
        .arg(maxlen)
        .arg("*");
    for (k, v) in fields {
        pipe.arg(k).arg(v.as_slice());
    }
    pipe.ignore();
    if let Some(keys) = event {
        // The state key is cleared, not set to a final value: replaying the dead letter (XADD its
        // fields back onto the stream) must send it, with a fresh attempt count.
        pipe.cmd("DEL")
            .arg(&keys.state)
            .ignore()
            .cmd("DEL")
            .arg(&keys.attempts)
            .ignore();
    }
    pipe.cmd("XACK")
        .arg(&group.stream)
        .arg(&group.group)
        .arg(id)
        .ignore();
    pipe.query_async(conn).await
}

/// XINFO GROUPS: every group of `stream` with its pending count and lag.
pub async fn read_groups(
    conn: &mut MultiplexedConnection,
    stream: &str,
) -> RedisResult<StreamInfoGroupsReply> {
    redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
}

/// XINFO CONSUMERS: the consumers of the group with what they hold and how long they idled.
pub async fn read_consumers(
    conn: &mut MultiplexedConnection,
    group: &Group,
) -> RedisResult<StreamInfoConsumersReply> {
    redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&group.stream)
        .arg(&group.group)
        .query_async(conn)
        .await
}

/// Removes consumer `name` from the group if it holds nothing and has been idle `idle_ms`;
/// `true` if it was removed. Check and delete run in one script: XGROUP DELCONSUMER drops a
/// consumer's pending entries, so it must never hit one that just read something.
pub async fn remove_idle_consumer(
    conn: &mut MultiplexedConnection,
    group: &Group,
    name: &str,
    idle_ms: u64,
) -> RedisResult<bool> {
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
    let removed: i64 = script
        .key(&group.stream)
        .arg(&group.group)
        .arg(name)
        .arg(idle_ms)
        .invoke_async(conn)
        .await?;
    Ok(removed >= 0)
}

/// Cap on the wait between attempts to reach Redis again after an error.
const REDIS_RETRY_MAX_MS: u64 = 5_000;

/// The wait before trying Redis again after `failures` failures in a row: doubling from 200 ms,
/// capped at 5 s.
pub fn redis_retry_delay(failures: u32) -> std::time::Duration {
    let ms = 100u64.saturating_mul(1 << failures.min(10));
    std::time::Duration::from_millis(ms.min(REDIS_RETRY_MAX_MS))
}
