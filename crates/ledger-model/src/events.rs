//! Ledger events: what the transfers service relays and the webhooks service reads. The rows are
//! written by triggers into `ledger.outbox` in the transaction of each change
//! (`migrations/20261202000300_ledger_events.up.sql`); their shapes are in `docs/events.md`.

use platform::outbox::Outbox;

/// The ledger's outbox: its table, the channel its trigger notifies on commit, the relay's lock.
pub const OUTBOX: Outbox = Outbox {
    table: "ledger.outbox",
    channel: "ledger_outbox",
    lock_key: 0x6c65_6467_7265_6c61, // "ledgrela"
};

/// The Redis Stream of ledger events for a key prefix (`txn:` → `txn:events:ledger`).
pub fn stream_key(prefix: &str) -> String {
    format!("{prefix}events:ledger")
}

/// The version of the payloads the triggers write (`payload.version`).
pub const PAYLOAD_VERSION: i64 = 1;

/// Every event type the triggers write.
pub const EVENT_TYPES: [&str; 11] = [
    "transfer.posted",
    "deposit.posted",
    "withdrawal.posted",
    "hold.created",
    "hold.posted",
    "hold.voided",
    "hold.expired",
    "transfer.reversed",
    "account.opened",
    "account.frozen",
    "account.unfrozen",
];
