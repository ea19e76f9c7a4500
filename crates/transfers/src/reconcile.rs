//! Proves the ledger balances: per currency Σ balances = 0, each balance = Σ of its entries, each
//! transfer has exactly two entries (−amount on the source, +amount on the destination).
//!
//! All checks read one snapshot (REPEATABLE READ, read only), so transfers committing meanwhile
//! cannot make a sound ledger look unsound.

use sqlx::PgPool;

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
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let mut report = Report::default();

    let totals: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT currency, COALESCE(SUM(balance), 0)::bigint, COUNT(*)
         FROM ledger.accounts GROUP BY currency ORDER BY currency",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (currency, total_balance, accounts) in totals {
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

    report.accounts_checked = sqlx::query_scalar("SELECT COUNT(*) FROM ledger.accounts")
        .fetch_one(&mut *tx)
        .await?;
    let accounts: Vec<(i64, i64, i64, bool)> = sqlx::query_as(
        "SELECT a.id, a.balance, COALESCE(e.total, 0)::bigint,
                a.kind = 'customer' AND a.balance < 0
         FROM ledger.accounts a
         LEFT JOIN (SELECT account_id, SUM(amount) AS total FROM ledger.entries GROUP BY account_id) e
                ON e.account_id = a.id
         WHERE a.balance <> COALESCE(e.total, 0) OR (a.kind = 'customer' AND a.balance < 0)
         ORDER BY a.id LIMIT $1",
    )
    .bind(MAX_VIOLATIONS_PER_CHECK)
    .fetch_all(&mut *tx)
    .await?;
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

    report.transfers_checked = sqlx::query_scalar("SELECT COUNT(*) FROM ledger.transfers")
        .fetch_one(&mut *tx)
        .await?;
    let transfers: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT t.id, COUNT(e.id), COALESCE(SUM(e.amount), 0)::bigint
         FROM ledger.transfers t
         LEFT JOIN ledger.entries e ON e.transfer_id = t.id
         GROUP BY t.id
         HAVING COUNT(e.id) <> 2
             OR COALESCE(SUM(e.amount), 0) <> 0
             OR COUNT(*) FILTER (WHERE e.account_id = t.from_account_id AND e.amount = -t.amount) <> 1
             OR COUNT(*) FILTER (WHERE e.account_id = t.to_account_id AND e.amount = t.amount) <> 1
         ORDER BY t.id LIMIT $1",
    )
    .bind(MAX_VIOLATIONS_PER_CHECK)
    .fetch_all(&mut *tx)
    .await?;
    for (id, entries, sum) in transfers {
        report.violations.push(format!(
            "transfer {id}: {entries} entries summing to {sum}; want -amount on its source and +amount on its destination"
        ));
    }
    tx.commit().await?;
    Ok(report)
}
