//! Dead letters: an event that cannot be sent (invalid, unrenderable, or out of attempts) moves
//! to `{prefix}events:users:dead` with why, and leaves the group. Replaying one is XADDing its
//! `event_id`, `event_type` and `payload` back onto the stream.

use redis::{Value, from_redis_value_ref, streams::StreamId};

use super::mailer::Mailer;
use crate::store::{self, EventKeys};

/// Moves `entry` to the dead-letter stream with `error` and acknowledges it (one MULTI); an
/// event's keys are cleared with it.
pub async fn dead_letter(
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
