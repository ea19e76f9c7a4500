//! Proves the ledger balances: per currency Σ balances = 0, each balance = Σ of its entries, each
//! transfer has exactly two entries (−amount on the source, +amount on the destination), every
//! hold ended at most once, every multi-leg transaction has all its legs, and no transfer is
//! reversed beyond its amount.
//!
//! All checks read one snapshot (REPEATABLE READ), so transfers committing meanwhile cannot make
//! a sound ledger look unsound.
//!
//! # Full and incremental
//!
//! Summing every entry of the history grows with the history (seconds at ten million
//! transfers). A clean run therefore leaves a checkpoint (ledger.reconcile_checkpoint and
//! ledger.reconcile_account_totals): per account, the sum of its entries up to an entry id
//! watermark, and the transfer and transaction ids up to which the per-row rules were checked.
//!
//! - [`Mode::Full`] sums every entry again (it rebuilds the totals from the snapshot), checks
//!   every transfer, hold, transaction and reversal, and writes a fresh checkpoint when clean.
//! - [`Mode::Incremental`] (the default; a full run when there is no checkpoint yet) checks
//!   **every** account's balance, pending debits and credits against the checkpoint's total plus
//!   the entries above the watermark and the open holds, Σ balances = 0 per currency, and the
//!   per-row rules of the transfers, holds, transactions and reversals made since the
//!   watermarks (and the older holds and transfers those end or reverse); then advances the
//!   checkpoint. Its cost is the number of accounts plus what was written since the last run.
//!   It detects: a balance (or pending amount) changed by hand, an entry added, changed or
//!   removed above the watermark (the balance then disagrees), any rule broken by a row written
//!   since. It does **not** detect a change to rows at or below the watermarks that keeps the
//!   balances consistent with the totals: an entry (or transfer) at or below the watermark
//!   changed or deleted by hand, or the checkpoint tables themselves changed; only the next full
//!   run sees those. Run the full check periodically (e.g. nightly) for that.
//!
//! # Why the watermark is safe while money moves
//!
//! Ids come from sequences when a transaction asks (`nextval`), not when it commits: a batch can
//! take entry id 100, another 101, and the second commit first. A snapshot that shows 101 may
//! not show 100 yet, and 100 appears later. So the watermark must never pass an id that may
//! still commit. The run reads each sequence's head H first (CACHE 1, so no session holds
//! values below H for later: checked, else the checkpoint is not advanced), then lists every
//! transaction open in the database (their virtual transaction ids from pg_locks: held from a
//! transaction's first statement to its end, even before it writes), and waits until all of
//! them have ended (as CREATE INDEX CONCURRENTLY waits for older transactions), polling, at most
//! [`SETTLE_TIMEOUT`]. Any transaction that got an id ≤ H got it before H was read, so it was
//! open then and is in the list, or had already ended: once the list is gone, each id ≤ H is
//! committed or will never exist. The snapshot taken after that sees every id ≤ H that will
//! ever exist, so H is the new watermark. Writers are never blocked (no lock on the ledger's
//! tables); a transaction left open (idle in transaction) only means the checkpoint does not
//! advance this time (the check itself is still exact: it compares balances with the totals
//! plus every entry above the old watermark that the snapshot shows). Two runs at once: one
//! takes the checkpoint's advisory lock (without waiting), the other checks without advancing;
//! should the checkpoint still change under a run (a serialization failure), it reports its
//! findings without advancing.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::store;

/// At most this many violations of each kind are reported.
const MAX_VIOLATIONS_PER_CHECK: i64 = 100;

/// The longest a run waits for the transactions open when it read the sequences to end; past
/// it the run still checks, but does not advance the checkpoint.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a run checks (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Checkpoint + what was written since; a full run when there is no checkpoint yet.
    #[default]
    Incremental,
    /// Every entry and row of the history.
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencyTotal {
    pub currency: String,
    pub total_balance: i64,
    pub accounts: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub totals: Vec<CurrencyTotal>,
    pub accounts_checked: i64,
    pub transfers_checked: i64,
    pub holds_checked: i64,
    pub transactions_checked: i64,
    pub reversals_checked: i64,
    pub violations: Vec<String>,
    /// True when the run summed every entry (asked for, or no checkpoint yet).
    pub full: bool,
    /// How many entries the run summed (all of them when full; those above the checkpoint's
    /// watermark otherwise).
    pub entries_checked: i64,
    /// The entry watermark the run started from (0 when full).
    pub since_entry_id: i64,
    /// The checkpoint's entry watermark after the run, and whether this run moved it.
    pub entry_watermark: i64,
    pub checkpoint_advanced: bool,
    /// Why the checkpoint was not advanced, when it was not.
    pub checkpoint_note: Option<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Human-readable lines for the CLI.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.push(if self.full {
            format!("full check: every entry summed ({})", self.entries_checked)
        } else {
            format!(
                "incremental check: checkpoint totals up to entry {} + {} entries since",
                self.since_entry_id, self.entries_checked
            )
        });
        for t in &self.totals {
            out.push(format!(
                "currency {}: {} accounts, balances sum to {}",
                t.currency, t.accounts, t.total_balance
            ));
        }
        out.push(format!(
            "accounts checked against their entries: {}",
            self.accounts_checked
        ));
        out.push(format!(
            "transfers checked for two entries summing to zero: {}",
            self.transfers_checked
        ));
        out.push(format!(
            "holds checked (ended at most once, reserved = pending amounts): {}",
            self.holds_checked
        ));
        out.push(format!(
            "multi-leg transactions checked for all their legs: {}",
            self.transactions_checked
        ));
        out.push(format!(
            "reversed transfers and reversals checked (never past the amount): {}",
            self.reversals_checked
        ));
        for v in &self.violations {
            out.push(format!("VIOLATION: {v}"));
        }
        out.push(if self.ok() {
            "ledger OK".into()
        } else {
            format!("ledger BROKEN: {} violation(s)", self.violations.len())
        });
        out.push(match (&self.checkpoint_note, self.checkpoint_advanced) {
            (_, true) => format!("checkpoint advanced to entry {}", self.entry_watermark),
            (Some(note), false) => format!(
                "checkpoint not advanced (stays at entry {}): {note}",
                self.entry_watermark
            ),
            (None, false) => format!("checkpoint stays at entry {}", self.entry_watermark),
        });
        out
    }
}

pub async fn run(pool: &PgPool, mode: Mode) -> Result<Report, sqlx::Error> {
    // The sequences' heads first, then the transactions open now, then wait for those to end:
    // see "Why the watermark is safe" above. The order matters: listing first could miss a
    // transaction that starts between the list and the read and takes an id below the head.
    let (entries_head, transfers_head, transactions_head, cache_one) =
        store::sequence_heads(pool).await?;
    let mut settled = if cache_one {
        wait_for_open_transactions(pool).await?
    } else {
        Err("a ledger sequence caches more than one value per session".to_owned())
    };

    let mut tx = store::begin_snapshot(pool).await?;
    // One run at a time writes the checkpoint; a run that finds another under way checks
    // without writing (it does not wait: its snapshot is already taken).
    if !store::try_lock_checkpoint(&mut tx).await? && settled.is_ok() {
        settled = Err("another reconcile is running".to_owned());
    }
    let previous = store::read_checkpoint(&mut tx).await?;
    let checkpoint = match mode {
        Mode::Full => None,
        Mode::Incremental => previous,
    };
    let mut report = Report {
        full: checkpoint.is_none(),
        ..Report::default()
    };
    // (entries, transfers, transactions) ids above which rows are checked.
    let since = match checkpoint {
        Some((e, t, x, _, _)) => {
            if entries_head < e || transfers_head < t || transactions_head < x {
                settled = Err("a sequence reads below the checkpoint".to_owned());
            }
            (e, t, x)
        }
        None => {
            // The totals again from every entry up to the head; the balance check below adds the
            // ones above it that the snapshot shows, so together it sums every entry.
            report.entries_checked = store::rebuild_account_totals(&mut tx, entries_head).await?;
            (entries_head, 0, 0)
        }
    };
    report.since_entry_id = if report.full { 0 } else { since.0 };
    report.entries_checked += store::count_entries_since(&mut tx, since.0).await?;

    for (currency, total_balance, accounts) in store::sum_balances_by_currency(&mut tx).await? {
        if total_balance != 0 {
            report.violations.push(format!(
                "currency {currency}: balances sum to {total_balance}, not 0"
            ));
        }
        report.totals.push(CurrencyTotal {
            currency,
            total_balance,
            accounts,
        });
    }

    report.accounts_checked = store::count_accounts(&mut tx).await?;
    let accounts =
        store::find_unbalanced_accounts(&mut tx, since.0, MAX_VIOLATIONS_PER_CHECK).await?;
    for (id, balance, entries, negative) in accounts {
        if balance != entries {
            report.violations.push(format!(
                "account {id}: balance {balance} but its entries sum to {entries}"
            ));
        }
        if negative {
            report.violations.push(format!(
                "account {id}: customer balance {balance} below zero"
            ));
        }
    }

    report.transfers_checked = store::count_transfers(&mut tx, since.1).await?;
    let transfers =
        store::find_unbalanced_transfers(&mut tx, since.1, MAX_VIOLATIONS_PER_CHECK).await?;
    for (id, entries, sum) in transfers {
        report.violations.push(format!(
            "transfer {id}: {entries} entries summing to {sum}; want -amount on its source and +amount on its destination"
        ));
    }
    check_holds(&mut tx, since.1, &mut report).await?;
    check_transactions_and_reversals(&mut tx, since, &mut report).await?;

    report.entry_watermark = previous.map(|c| c.0).unwrap_or(0);
    if !report.ok() {
        settled = Err("violations found".to_owned());
    }
    if let Err(note) = settled {
        report.checkpoint_note = Some(note);
        tx.rollback().await?;
        return Ok(report);
    }
    let heads = (entries_head, transfers_head, transactions_head);
    let written = async {
        store::write_checkpoint(&mut tx, heads, report.full).await?;
        if !report.full {
            store::advance_account_totals(&mut tx, since.0, entries_head).await?;
        }
        tx.commit().await
    };
    match written.await {
        Ok(()) => {
            report.entry_watermark = entries_head;
            report.checkpoint_advanced = true;
        }
        // Another run advanced the checkpoint first (could not serialize): our findings stand.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("40001") => {
            report.checkpoint_note = Some("another reconcile advanced it meanwhile".to_owned());
        }
        Err(e) => return Err(e),
    }
    Ok(report)
}

/// Waits until every transaction open in the database now has ended: `Ok(Ok(()))`, or
/// `Ok(Err(why))` when some are still open after [`SETTLE_TIMEOUT`].
async fn wait_for_open_transactions(pool: &PgPool) -> Result<Result<(), String>, sqlx::Error> {
    let open = store::open_transactions(pool).await?;
    let started = Instant::now();
    let mut wait = Duration::from_millis(2);
    loop {
        if open.is_empty() {
            return Ok(Ok(()));
        }
        let left = store::still_open(pool, &open).await?;
        if left == 0 {
            return Ok(Ok(()));
        }
        if started.elapsed() >= SETTLE_TIMEOUT {
            return Ok(Err(format!(
                "{left} transaction(s) open since before the run did not end within {} ms",
                SETTLE_TIMEOUT.as_millis()
            )));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(50));
    }
}

/// Each account's pending debits and credits equal the open holds on it, no customer's available
/// balance is negative, and every hold ended at most once, as its status says, by a post no
/// larger than itself.
async fn check_holds(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    since: i64,
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    report.holds_checked = store::count_holds(tx, since).await?;
    for (id, debits, held_from, credits, held_to, negative) in
        store::find_accounts_off_their_holds(tx, MAX_VIOLATIONS_PER_CHECK).await?
    {
        if debits != held_from || credits != held_to {
            report.violations.push(format!(
                "account {id}: pending debits {debits} / credits {credits} but open holds reserve {held_from} / {held_to}"
            ));
        }
        if negative {
            report.violations.push(format!(
                "account {id}: customer available balance below zero"
            ));
        }
    }
    for (id, ends, status, ended_as, ended_amount, amount) in
        store::find_holds_ended_wrongly(tx, since, MAX_VIOLATIONS_PER_CHECK).await?
    {
        report.violations.push(format!(
            "hold {id} ({status}, amount {amount}): ended {ends} time(s), as {ended_as:?}, for {ended_amount:?}"
        ));
    }
    Ok(())
}

/// Every multi-leg transaction has all its legs, each posted; every transfer's reversals sum to
/// its `reversed_amount`, never past its amount, and each mirrors it.
async fn check_transactions_and_reversals(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    since: (i64, i64, i64),
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    report.transactions_checked = store::count_transactions(tx, since.2).await?;
    for (id, leg_count, found, posted) in
        store::find_incomplete_transactions(tx, since.2, MAX_VIOLATIONS_PER_CHECK).await?
    {
        report.violations.push(format!(
            "transaction {id}: {leg_count} legs, but {found} found of which {posted} posted"
        ));
    }
    report.reversals_checked = store::count_reversed_transfers(tx, since.1).await?;
    for (id, amount, reversed, sum, not_mirrored) in
        store::find_transfers_reversed_wrongly(tx, since.1, MAX_VIOLATIONS_PER_CHECK).await?
    {
        report.violations.push(format!(
            "transfer {id} (amount {amount}): reversed_amount {reversed}, its reversals sum to {sum}, {not_mirrored} of them do not mirror it"
        ));
    }
    Ok(())
}
