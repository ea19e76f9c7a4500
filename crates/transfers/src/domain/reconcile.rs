//! Proves the ledger balances: per currency Σ balances = 0, each balance = Σ of its entries, each
//! transfer has exactly two entries (−amount on the source, +amount on the destination), every
//! hold ended at most once, every multi-leg transaction has all its legs, and no transfer is
//! reversed beyond its amount.
//!
//! All checks read one snapshot (REPEATABLE READ, read only), so transfers committing meanwhile
//! cannot make a sound ledger look unsound.

use sqlx::PgPool;

use crate::store;

/// At most this many violations of each kind are reported.
const MAX_VIOLATIONS_PER_CHECK: i64 = 100;

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
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Human-readable lines for the CLI.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
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
        out
    }
}

pub async fn run(pool: &PgPool) -> Result<Report, sqlx::Error> {
    let mut tx = store::begin_snapshot(pool).await?;
    let mut report = Report::default();

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
    let accounts = store::find_unbalanced_accounts(&mut tx, MAX_VIOLATIONS_PER_CHECK).await?;
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

    report.transfers_checked = store::count_transfers(&mut tx).await?;
    let transfers = store::find_unbalanced_transfers(&mut tx, MAX_VIOLATIONS_PER_CHECK).await?;
    for (id, entries, sum) in transfers {
        report.violations.push(format!(
            "transfer {id}: {entries} entries summing to {sum}; want -amount on its source and +amount on its destination"
        ));
    }
    check_holds(&mut tx, &mut report).await?;
    check_transactions_and_reversals(&mut tx, &mut report).await?;
    tx.commit().await?;
    Ok(report)
}

/// Each account's pending debits and credits equal the open holds on it, no customer's available
/// balance is negative, and every hold ended at most once, as its status says, by a post no
/// larger than itself.
async fn check_holds(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    report.holds_checked = store::count_holds(tx).await?;
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
        store::find_holds_ended_wrongly(tx, MAX_VIOLATIONS_PER_CHECK).await?
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
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    report.transactions_checked = store::count_transactions(tx).await?;
    for (id, leg_count, found, posted) in
        store::find_incomplete_transactions(tx, MAX_VIOLATIONS_PER_CHECK).await?
    {
        report.violations.push(format!(
            "transaction {id}: {leg_count} legs, but {found} found of which {posted} posted"
        ));
    }
    report.reversals_checked = store::count_reversed_transfers(tx).await?;
    for (id, amount, reversed, sum, not_mirrored) in
        store::find_transfers_reversed_wrongly(tx, MAX_VIOLATIONS_PER_CHECK).await?
    {
        report.violations.push(format!(
            "transfer {id} (amount {amount}): reversed_amount {reversed}, its reversals sum to {sum}, {not_mirrored} of them do not mirror it"
        ));
    }
    Ok(())
}
