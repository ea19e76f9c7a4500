//! The run's pgbench scripts, written from the templates in `bench/` with the bench set's account
//! ids, owners and owners' user ids filled in as array literals. In a prepared statement
//! (`pgbench -M prepared`) those are constants parsed once per connection, so no call looks an
//! account up: the ids are resolved here, outside the timed loop.

use std::{fmt::Write as _, path::PathBuf};

use anyhow::{Context, bail};
use sqlx::PgPool;

/// The bench accounts in index order (index 1 is loadgen's party 0, the hot account).
pub struct BenchSet {
    ids: Vec<i64>,
    owners: Vec<String>,
    owner_ids: Vec<Option<String>>,
}

impl BenchSet {
    /// Reads `public.bench_accounts` (written by `bench/setup.sql`).
    pub async fn load(pool: &PgPool) -> anyhow::Result<Self> {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT id, owner, owner_id::text FROM public.bench_accounts ORDER BY idx",
        )
        .fetch_all(pool)
        .await
        .context("read bench_accounts")?;
        if rows.len() < 2 {
            bail!(
                "the bench set has {} accounts, at least 2 needed",
                rows.len()
            );
        }
        Ok(Self {
            ids: rows.iter().map(|r| r.0).collect(),
            owners: rows.iter().map(|r| r.1.clone()).collect(),
            owner_ids: rows.into_iter().map(|r| r.2).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    fn fill(&self, template: &str) -> String {
        let ids = format!(
            "'{{{}}}'",
            self.ids
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        // usernames are [a-z0-9_] (auth.users CHECK): nothing to quote inside the literal
        let owners = format!("'{{{}}}'", self.owners.join(","));
        let owner_ids = format!(
            "'{{{}}}'",
            self.owner_ids
                .iter()
                .map(|u| u.as_deref().unwrap_or("NULL"))
                .collect::<Vec<_>>()
                .join(",")
        );
        template
            .replace("@IDS@", &ids)
            .replace("@OWNERS@", &owners)
            .replace("@OWNER_IDS@", &owner_ids)
            .replace("@N@", &self.len().to_string())
    }
}

/// Where the run's scripts go, and the templates they come from.
pub struct Scripts {
    dir: PathBuf,
}

impl Scripts {
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// `bench/transfer_batch.sql` for `size` transfers per call, uniform or hot: its path.
    pub fn batch(&self, set: &BenchSet, size: usize, hot: bool) -> anyhow::Result<PathBuf> {
        let text = batch_statement(set, size, hot)?;
        let path = self.dir.join(format!(
            "transfer_batch_{size}_{}.sql",
            if hot { "hot" } else { "uniform" }
        ));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// The same statement without the call: only what it builds per call (the generator's own
    /// cost, subtracted nowhere but reported beside the database limit).
    pub fn generator_only(&self, set: &BenchSet, size: usize) -> anyhow::Result<PathBuf> {
        let text = batch_statement(set, size, false)?;
        let call = text.find(", LATERAL ledger.transfer_batch(").context(
            "bench/transfer_batch.sql: the call is not `, LATERAL ledger.transfer_batch(`",
        )?;
        let body = text[..call].replacen("SELECT r.*", "SELECT cardinality(g.froms)", 1);
        let path = self.dir.join(format!("generator_{size}.sql"));
        std::fs::write(&path, format!("{body};\n"))?;
        Ok(path)
    }

    /// `bench/naive.sql` filled in (hot or uniform is its pgbench variable `hot`).
    pub fn naive(&self, set: &BenchSet) -> anyhow::Result<PathBuf> {
        let template =
            std::fs::read_to_string("bench/naive.sql").context("read bench/naive.sql")?;
        let path = self.dir.join("naive.sql");
        std::fs::write(&path, set.fill(&template))?;
        Ok(path)
    }
}

/// `bench/growth.sql` for `count` transfers of history.
pub fn growth(set: &BenchSet, count: u64) -> anyhow::Result<String> {
    let template = std::fs::read_to_string("bench/growth.sql").context("read bench/growth.sql")?;
    Ok(set.fill(&template).replace("@COUNT@", &count.to_string()))
}

/// `bench/transfer_batch.sql` with its placeholders filled, comments dropped (pgbench sends a
/// statement's comment lines too).
fn batch_statement(set: &BenchSet, size: usize, hot: bool) -> anyhow::Result<String> {
    if size == 0 {
        bail!("a batch has at least one transfer");
    }
    let template = std::fs::read_to_string("bench/transfer_batch.sql")
        .context("read bench/transfer_batch.sql")?;
    let n = set.len();
    // 1-based indexes into the constant arrays; in the hot mix every transfer touches index 1,
    // half from it, half to it (as loadgen's `hot`)
    let pick = if hot {
        format!(
            "SELECT CASE WHEN d THEN o ELSE 1 END AS a, CASE WHEN d THEN 1 ELSE o END AS b, m \
             FROM (SELECT random() < 0.5 AS d, 2 + floor(random() * {})::int AS o, \
             1 + floor(random() * 100)::bigint AS m FROM generate_series(1, {size})) p",
            n - 1
        )
    } else {
        format!(
            "SELECT u AS a, (u + o - 2) % {n} + 1 AS b, m \
             FROM (SELECT 1 + floor(random() * {n})::int AS u, 2 + floor(random() * {})::int AS o, \
             1 + floor(random() * 100)::bigint AS m FROM generate_series(1, {size})) p",
            n - 1
        )
    };
    let mut out = String::new();
    for line in template
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
    {
        let _ = writeln!(out, "{line}");
    }
    // pgbench takes a statement up to its `;`, lines joined: make it one line
    let one_line = out.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(format!(
        "{}\n",
        set.fill(&one_line)
            .replace("@SIZE@", &size.to_string())
            .replace("@PICK@", &pick)
    ))
}
