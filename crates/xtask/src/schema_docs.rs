//! `cargo xtask schema-docs`: writes `docs/schema.md` from the live schema. It creates a scratch
//! database on the server of `DATABASE_URL`, applies the migrations, reads the catalog (tables,
//! columns, constraints, indexes, foreign keys, triggers, functions and every comment) of the
//! schemas `auth` and `ledger`, renders one Markdown document with a Mermaid entity-relationship
//! diagram per schema, and drops the scratch database again, also when something failed.
//!
//! `--check` writes nothing: it fails, listing the differing lines, when the file is not what the
//! migrations generate (CI runs it, so the document never drifts). Either way the command fails,
//! naming `schema.table.column`, when a table, column or function has no comment: the comments
//! are the documentation, so an undocumented column is a failed build, not an empty cell.
//!
//! The output depends only on the catalog: sorted, no timestamps, no scratch database name.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::{self, Write as _},
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use sqlx::{
    ConnectOptions, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// The schemas the project owns; every table, column and function in them must have a comment.
pub const SCHEMAS: [&str; 4] = ["auth", "ledger", "mailer", "webhooks"];

/// Where the document lives, from the workspace root.
const DOC_PATH: &str = "docs/schema.md";

/// At most this many differing lines are printed by `--check`; the count of the rest follows.
const MAX_DIFF_LINES: usize = 60;

/// Above this many cells (lines × lines of the changed middle) `--check` lists the changed
/// middle whole instead of computing a line-by-line difference.
const MAX_DIFF_CELLS: usize = 4_000_000;

#[derive(Args, Debug)]
pub struct SchemaDocsArgs {
    /// Write nothing; fail when the file differs from what the migrations generate.
    #[arg(long)]
    check: bool,
    /// The document to write or check (default: docs/schema.md of the workspace).
    #[arg(long)]
    file: Option<PathBuf>,
    /// The PostgreSQL server to make the scratch database on (its database part is not used).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
}

pub async fn run(args: SchemaDocsArgs) -> anyhow::Result<()> {
    let path = args.file.unwrap_or_else(|| crate::root().join(DOC_PATH));
    let generated = generate(&args.database_url).await?;
    if args.check {
        let committed = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}; run `cargo xtask schema-docs` to write it",
                path.display()
            )
        })?;
        if let Some(diff) = diff_lines(&committed, &generated) {
            bail!(
                "{} differs from what the migrations generate; run `cargo xtask schema-docs` and \
                 commit the result.\n(- the file, + generated)\n{diff}",
                path.display()
            );
        }
        println!("xtask: {} is up to date", path.display());
    } else {
        std::fs::write(&path, &generated)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("xtask: wrote {}", path.display());
    }
    Ok(())
}

/// The document for the schema the migrations build, from a scratch database on `server_url`'s
/// server that is dropped again whatever happens in between.
pub async fn generate(server_url: &str) -> anyhow::Result<String> {
    let scratch = ScratchDb::create(server_url).await?;
    let pool = scratch.pool.clone();
    // a task of its own, so that a panic while reading comes back as an error and the scratch
    // database is still dropped
    let outcome = tokio::spawn(async move {
        platform::db::migrate(&pool)
            .await
            .context("cannot apply the migrations to the scratch database")?;
        document(&pool, &SCHEMAS).await
    })
    .await;
    let dropped = scratch.drop_database().await;
    let markdown = outcome.map_err(|e| anyhow!("reading the schema failed: {e}"))??;
    dropped?;
    Ok(markdown)
}

/// Reads `schemas` from the database of `pool`, refuses objects without a comment and renders the
/// document.
pub async fn document(pool: &PgPool, schemas: &[&str]) -> anyhow::Result<String> {
    let catalog = read_catalog(pool, schemas).await?;
    let missing = missing_comments(&catalog);
    if !missing.is_empty() {
        bail!(
            "{} without a comment; every table, column and function of {} needs one (add \
             COMMENT ON ... IS '...' to a migration):\n  {}",
            if missing.len() == 1 {
                "1 object".to_owned()
            } else {
                format!("{} objects", missing.len())
            },
            schemas.join(", "),
            missing.join("\n  ")
        );
    }
    Ok(render(&catalog))
}

// --- the scratch database ---------------------------------------------------------------------

struct ScratchDb {
    pool: PgPool,
    name: String,
    admin: PgConnectOptions,
}

impl ScratchDb {
    async fn create(server_url: &str) -> anyhow::Result<Self> {
        let admin = server_url
            .parse::<PgConnectOptions>()
            .with_context(|| format!("DATABASE_URL={server_url} is not a valid URL"))?
            .database("postgres");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("xtask_schema_docs_{}_{nanos}", std::process::id());
        let mut conn = admin.connect().await.with_context(|| {
            format!("cannot reach PostgreSQL at {server_url} (set DATABASE_URL)")
        })?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create the scratch database {name}"))?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(admin.clone().database(&name));
        Ok(Self { pool, name, admin })
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        self.pool.close().await;
        let mut conn = self.admin.connect().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot drop the scratch database {}", self.name))?;
        Ok(())
    }
}

// --- the catalog ------------------------------------------------------------------------------

/// What the document shows, read from pg_catalog, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub schemas: Vec<Schema>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Schema {
    pub name: String,
    pub comment: Option<String>,
    /// By name.
    #[sqlx(skip)]
    pub tables: Vec<Table>,
    /// By name, then arguments.
    #[sqlx(skip)]
    pub functions: Vec<Function>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// `table`, `partitioned table`, `view`, `materialized view` or `foreign table`.
    pub kind: String,
    pub comment: Option<String>,
    /// In the table's column order.
    #[sqlx(skip)]
    pub columns: Vec<Column>,
    /// Primary key, unique, check and exclusion constraints, in that order, then by name.
    #[sqlx(skip)]
    pub constraints: Vec<Constraint>,
    /// By name; the indexes of the primary key and unique constraints are not listed here.
    #[sqlx(skip)]
    pub indexes: Vec<Index>,
    /// By name.
    #[sqlx(skip)]
    pub foreign_keys: Vec<ForeignKey>,
    /// By name; only user triggers.
    #[sqlx(skip)]
    pub triggers: Vec<Trigger>,
    /// Column sets no two rows share: the primary key, unique constraints and unique indexes
    /// without expressions (for the diagram's cardinalities).
    #[sqlx(skip)]
    pub unique_column_sets: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Column {
    pub name: String,
    pub data_type: String,
    pub not_null: bool,
    pub default: Option<String>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub name: String,
    /// `primary key`, `unique`, `check` or `exclusion`.
    pub kind: String,
    pub columns: Vec<String>,
    pub definition: String,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub name: String,
    pub unique: bool,
    /// Method, keys and predicate, e.g. `btree (owner, id DESC)`.
    pub definition: String,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub referenced_schema: String,
    pub referenced_table: String,
    pub referenced_columns: Vec<String>,
    /// `no action`, `restrict`, `cascade`, `set null` or `set default`.
    pub on_delete: String,
    pub on_update: String,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Trigger {
    pub name: String,
    pub definition: String,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Function {
    pub schema: String,
    pub name: String,
    /// `function` or `procedure`.
    pub kind: String,
    /// The argument types that identify it, e.g. `p_currency text`.
    pub identity_arguments: String,
    /// The arguments with modes and defaults.
    pub arguments: String,
    /// The return type, e.g. `bigint` or `TABLE(idx integer, ...)`; empty for a procedure.
    pub result: String,
    pub language: String,
    /// `immutable`, `stable` or `volatile`.
    pub volatility: String,
    pub security_definer: bool,
    pub comment: Option<String>,
}

/// A row that belongs to a table: the table's schema and name, then the row itself.
#[derive(sqlx::FromRow)]
struct OfTable<T> {
    schema: String,
    table: String,
    #[sqlx(flatten)]
    item: T,
}

/// A constraint as the catalog query returns it; `kind` is pg_constraint.contype.
#[derive(sqlx::FromRow)]
struct ConstraintRow {
    name: String,
    kind: String,
    columns: Vec<String>,
    definition: String,
    comment: Option<String>,
    referenced_schema: Option<String>,
    referenced_table: Option<String>,
    referenced_columns: Vec<String>,
    on_delete: String,
    on_update: String,
}

/// An index as the catalog query returns it.
#[derive(sqlx::FromRow)]
struct IndexRow {
    name: String,
    create_statement: String,
    unique: bool,
    of_constraint: bool,
    key_columns: Vec<String>,
    predicate: Option<String>,
    has_expressions: bool,
    comment: Option<String>,
}

type Tables = BTreeMap<(String, String), Table>;

/// Reads the catalog of `schemas`; a schema that does not exist is an error.
pub async fn read_catalog(pool: &PgPool, schemas: &[&str]) -> anyhow::Result<Catalog> {
    let names: Vec<String> = schemas.iter().map(|s| (*s).to_owned()).collect();
    let mut found: BTreeMap<String, Schema> = fetch::<Schema>(pool, SCHEMAS_SQL, &names)
        .await?
        .into_iter()
        .map(|schema| (schema.name.clone(), schema))
        .collect();
    if let Some(absent) = names.iter().find(|n| !found.contains_key(*n)) {
        bail!("the database has no schema {absent}");
    }
    let mut tables: Tables = fetch::<Table>(pool, TABLES_SQL, &names)
        .await?
        .into_iter()
        .map(|table| ((table.schema.clone(), table.name.clone()), table))
        .collect();
    for row in fetch::<OfTable<Column>>(pool, COLUMNS_SQL, &names).await? {
        if let Some(table) = tables.get_mut(&(row.schema, row.table)) {
            table.columns.push(row.item);
        }
    }
    for row in fetch::<OfTable<ConstraintRow>>(pool, CONSTRAINTS_SQL, &names).await? {
        if let Some(table) = tables.get_mut(&(row.schema, row.table)) {
            add_constraint(table, row.item);
        }
    }
    for row in fetch::<OfTable<IndexRow>>(pool, INDEXES_SQL, &names).await? {
        if let Some(table) = tables.get_mut(&(row.schema, row.table)) {
            add_index(table, row.item);
        }
    }
    for row in fetch::<OfTable<Trigger>>(pool, TRIGGERS_SQL, &names).await? {
        if let Some(table) = tables.get_mut(&(row.schema, row.table)) {
            table.triggers.push(row.item);
        }
    }
    let kind_order = |kind: &str| CONSTRAINT_KINDS.iter().position(|(_, k)| *k == kind);
    for mut table in tables.into_values() {
        table
            .constraints
            .sort_by(|a, b| (kind_order(&a.kind), &a.name).cmp(&(kind_order(&b.kind), &b.name)));
        if let Some(schema) = found.get_mut(&table.schema) {
            schema.tables.push(table);
        }
    }
    for function in fetch::<Function>(pool, FUNCTIONS_SQL, &names).await? {
        if let Some(schema) = found.get_mut(&function.schema) {
            schema.functions.push(function);
        }
    }
    Ok(Catalog {
        schemas: found.into_values().collect(),
    })
}

/// Runs one catalog query with the schema names as `$1`.
async fn fetch<T>(pool: &PgPool, sql: &'static str, names: &[String]) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as::<_, T>(sql)
        .bind(names)
        .fetch_all(pool)
        .await
}

/// pg_constraint.contype → the name the document uses, in the document's order.
const CONSTRAINT_KINDS: [(&str, &str); 4] = [
    ("p", "primary key"),
    ("u", "unique"),
    ("c", "check"),
    ("x", "exclusion"),
];

fn add_constraint(table: &mut Table, row: ConstraintRow) {
    if row.kind == "f" {
        table.foreign_keys.push(ForeignKey {
            name: row.name,
            columns: row.columns,
            referenced_schema: row.referenced_schema.unwrap_or_default(),
            referenced_table: row.referenced_table.unwrap_or_default(),
            referenced_columns: row.referenced_columns,
            on_delete: row.on_delete,
            on_update: row.on_update,
            comment: row.comment,
        });
        return;
    }
    let Some((_, kind)) = CONSTRAINT_KINDS.iter().find(|(code, _)| *code == row.kind) else {
        return;
    };
    if row.kind == "p" || row.kind == "u" {
        table.unique_column_sets.push(row.columns.clone());
    }
    table.constraints.push(Constraint {
        name: row.name,
        kind: (*kind).to_owned(),
        columns: row.columns,
        definition: row.definition,
        comment: row.comment,
    });
}

fn add_index(table: &mut Table, row: IndexRow) {
    // NULLs never collide, so a unique index on one column `WHERE column IS NOT NULL` is as
    // unique as one without the predicate
    let only_skips_nulls = match (&row.predicate, row.key_columns.as_slice()) {
        (None, _) => true,
        (Some(predicate), [column]) => *predicate == format!("({column} IS NOT NULL)"),
        _ => false,
    };
    if row.unique && !row.of_constraint && !row.has_expressions && only_skips_nulls {
        table.unique_column_sets.push(row.key_columns);
    }
    // the index of a primary key or unique constraint is shown as that constraint
    if row.of_constraint {
        return;
    }
    let definition = match row.create_statement.split_once(" USING ") {
        Some((_, method_and_keys)) => method_and_keys.to_owned(),
        None => row.create_statement,
    };
    table.indexes.push(Index {
        name: row.name,
        unique: row.unique,
        definition,
        comment: row.comment,
    });
}

const SCHEMAS_SQL: &str = "
    SELECT n.nspname::text AS name, obj_description(n.oid, 'pg_namespace') AS comment
    FROM pg_namespace n WHERE n.nspname = ANY($1)";

/// Relations with columns, partitions left out (their parent is documented).
const TABLES_SQL: &str = "
    SELECT n.nspname::text AS schema, c.relname::text AS name,
           CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table'
                WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'foreign table' END AS kind,
           obj_description(c.oid, 'pg_class') AS comment
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition";

const COLUMNS_SQL: &str = "
    SELECT n.nspname::text AS schema, c.relname::text AS table, a.attname::text AS name,
           format_type(a.atttypid, a.atttypmod) AS data_type, a.attnotnull AS not_null,
           CASE WHEN a.attidentity = 'a' THEN 'generated always as identity'
                WHEN a.attidentity = 'd' THEN 'generated by default as identity'
                WHEN a.attgenerated = 's'
                     THEN 'generated always as (' || pg_get_expr(d.adbin, d.adrelid) || ') stored'
                ELSE pg_get_expr(d.adbin, d.adrelid) END AS default,
           col_description(c.oid, a.attnum) AS comment
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY n.nspname, c.relname, a.attnum";

/// Every constraint but NOT NULL (a column property here) and constraint triggers.
const CONSTRAINTS_SQL: &str = "
    SELECT n.nspname::text AS schema, c.relname::text AS table, k.conname::text AS name,
           k.contype::text AS kind,
           ARRAY(SELECT a.attname::text
                 FROM unnest(k.conkey) WITH ORDINALITY AS key(attnum, position)
                 JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = key.attnum
                 ORDER BY key.position) AS columns,
           pg_get_constraintdef(k.oid, true) AS definition,
           obj_description(k.oid, 'pg_constraint') AS comment,
           rn.nspname::text AS referenced_schema, rc.relname::text AS referenced_table,
           ARRAY(SELECT a.attname::text
                 FROM unnest(k.confkey) WITH ORDINALITY AS key(attnum, position)
                 JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = key.attnum
                 ORDER BY key.position) AS referenced_columns,
           CASE k.confdeltype WHEN 'r' THEN 'restrict' WHEN 'c' THEN 'cascade'
                WHEN 'n' THEN 'set null' WHEN 'd' THEN 'set default' ELSE 'no action' END AS on_delete,
           CASE k.confupdtype WHEN 'r' THEN 'restrict' WHEN 'c' THEN 'cascade'
                WHEN 'n' THEN 'set null' WHEN 'd' THEN 'set default' ELSE 'no action' END AS on_update
    FROM pg_constraint k
    JOIN pg_class c ON c.oid = k.conrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_class rc ON rc.oid = k.confrelid
    LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
    WHERE n.nspname = ANY($1) AND k.contype IN ('p', 'u', 'c', 'x', 'f')
    ORDER BY n.nspname, c.relname, k.conname";

const INDEXES_SQL: &str = "
    SELECT n.nspname::text AS schema, c.relname::text AS table, i.relname::text AS name,
           pg_get_indexdef(i.oid) AS create_statement, x.indisunique AS unique,
           EXISTS (SELECT 1 FROM pg_constraint k
                   WHERE k.conindid = i.oid AND k.conrelid = c.oid AND k.contype IN ('p', 'u', 'x'))
               AS of_constraint,
           ARRAY(SELECT a.attname::text
                 FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS key(attnum, position)
                 JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = key.attnum
                 WHERE key.position <= x.indnkeyatts
                 ORDER BY key.position) AS key_columns,
           pg_get_expr(x.indpred, x.indrelid) AS predicate,
           x.indexprs IS NOT NULL AS has_expressions,
           obj_description(i.oid, 'pg_class') AS comment
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class c ON c.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY($1)
    ORDER BY n.nspname, c.relname, i.relname";

const TRIGGERS_SQL: &str = "
    SELECT n.nspname::text AS schema, c.relname::text AS table, t.tgname::text AS name,
           pg_get_triggerdef(t.oid, true) AS definition,
           obj_description(t.oid, 'pg_trigger') AS comment
    FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY($1) AND NOT t.tgisinternal
    ORDER BY n.nspname, c.relname, t.tgname";

/// Functions and procedures (aggregates and window functions have no such signature).
const FUNCTIONS_SQL: &str = "
    SELECT n.nspname::text AS schema, p.proname::text AS name,
           CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END AS kind,
           pg_get_function_identity_arguments(p.oid) AS identity_arguments,
           pg_get_function_arguments(p.oid) AS arguments,
           COALESCE(pg_get_function_result(p.oid), '') AS result,
           l.lanname::text AS language,
           CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END
               AS volatility,
           p.prosecdef AS security_definer,
           obj_description(p.oid, 'pg_proc') AS comment
    FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    JOIN pg_language l ON l.oid = p.prolang
    WHERE n.nspname = ANY($1) AND p.prokind IN ('f', 'p')
    ORDER BY n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)";

// --- the comment rule -------------------------------------------------------------------------

/// Every table, column and function without a comment, as `schema.table`, `schema.table.column`
/// or `schema.function(arguments)` with what it is, in document order.
pub fn missing_comments(catalog: &Catalog) -> Vec<String> {
    let blank = |comment: &Option<String>| comment.as_deref().is_none_or(|c| c.trim().is_empty());
    let mut missing = Vec::new();
    for schema in &catalog.schemas {
        for table in &schema.tables {
            if blank(&table.comment) {
                missing.push(format!("{}.{} ({})", table.schema, table.name, table.kind));
            }
            for column in table.columns.iter().filter(|c| blank(&c.comment)) {
                missing.push(format!(
                    "{}.{}.{} (column)",
                    table.schema, table.name, column.name
                ));
            }
        }
        for function in schema.functions.iter().filter(|f| blank(&f.comment)) {
            missing.push(format!(
                "{}.{}({}) ({})",
                function.schema, function.name, function.identity_arguments, function.kind
            ));
        }
    }
    missing
}

// --- rendering --------------------------------------------------------------------------------

/// The Markdown document of `catalog`.
pub fn render(catalog: &Catalog) -> String {
    let mut out = String::new();
    write_document(&mut out, catalog).expect("formatting into a String does not fail");
    out
}

fn write_document(out: &mut String, catalog: &Catalog) -> fmt::Result {
    writeln!(out, "# Database schema")?;
    writeln!(out)?;
    writeln!(
        out,
        "<!-- Generated by `cargo xtask schema-docs`; do not edit. Change the schema or its \
         COMMENT ON statements in a new migration, then run the command again. -->"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Generated by `cargo xtask schema-docs` from the schema that the migrations in \
         [`migrations/`](../migrations) build; every description is the object's own comment \
         (`COMMENT ON`) in the database. To change this page, change the schema or its comments in \
         a new migration and run the command again: CI (`.ci/checks/schema-docs.sh`) fails when \
         this file differs from what the migrations generate, and the command fails when a table, \
         column or function has no comment."
    )?;
    writeln!(out)?;
    for schema in &catalog.schemas {
        write!(out, "- [Schema `{0}`](#schema-{0})", schema.name)?;
        let tables: Vec<String> = schema
            .tables
            .iter()
            .map(|t| format!("[{}](#{})", t.name, anchor(&t.schema, &t.name)))
            .collect();
        if !tables.is_empty() {
            write!(out, ": {}", tables.join(", "))?;
        }
        writeln!(out)?;
    }
    for schema in &catalog.schemas {
        write_schema(out, schema)?;
    }
    Ok(())
}

fn write_schema(out: &mut String, schema: &Schema) -> fmt::Result {
    writeln!(out)?;
    writeln!(out, "## Schema `{}`", schema.name)?;
    if let Some(comment) = &schema.comment {
        writeln!(out)?;
        writeln!(out, "{}", paragraph(comment))?;
    }
    if !schema.tables.is_empty() {
        writeln!(out)?;
        writeln!(out, "### Diagram of `{}`", schema.name)?;
        writeln!(out)?;
        write_diagram(out, schema)?;
    }
    for table in &schema.tables {
        write_table(out, table)?;
    }
    if !schema.functions.is_empty() {
        writeln!(out)?;
        writeln!(out, "### Functions of `{}`", schema.name)?;
        for function in &schema.functions {
            write_function(out, function)?;
        }
    }
    Ok(())
}

fn write_table(out: &mut String, table: &Table) -> fmt::Result {
    writeln!(out)?;
    writeln!(out, "### `{}.{}`", table.schema, table.name)?;
    writeln!(out)?;
    if table.kind != "table" {
        writeln!(out, "*{}*", table.kind)?;
        writeln!(out)?;
    }
    if let Some(comment) = &table.comment {
        writeln!(out, "{}", paragraph(comment))?;
        writeln!(out)?;
    }
    writeln!(out, "| column | type | null | default | comment |")?;
    writeln!(out, "|---|---|---|---|---|")?;
    for column in &table.columns {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            code(&column.name),
            code(&column.data_type),
            if column.not_null { "not null" } else { "null" },
            column.default.as_deref().map(code).unwrap_or_default(),
            cell(column.comment.as_deref().unwrap_or_default())
        )?;
    }
    let constraints = table.constraints.iter().map(|c| {
        let cells = vec![code(&c.name), c.kind.clone(), code(&c.definition)];
        (cells, c.comment.as_deref())
    });
    write_list(
        out,
        "Constraints",
        &["name", "kind", "definition"],
        constraints,
    )?;
    let indexes = table.indexes.iter().map(|i| {
        let unique = if i.unique { "unique" } else { "" }.to_owned();
        (
            vec![code(&i.name), unique, code(&i.definition)],
            i.comment.as_deref(),
        )
    });
    write_list(
        out,
        "Indexes (besides those of the primary key and unique constraints)",
        &["name", "unique", "definition"],
        indexes,
    )?;
    let foreign_keys = table.foreign_keys.iter().map(|k| {
        let target = format!("{}.{}", k.referenced_schema, k.referenced_table);
        let references = format!(
            "[{}](#{}) {}",
            code(&target),
            anchor(&k.referenced_schema, &k.referenced_table),
            code(&format!("({})", k.referenced_columns.join(", ")))
        );
        let cells = vec![
            code(&k.name),
            code(&k.columns.join(", ")),
            references,
            k.on_delete.clone(),
            k.on_update.clone(),
        ];
        (cells, k.comment.as_deref())
    });
    write_list(
        out,
        "Foreign keys",
        &["name", "columns", "references", "on delete", "on update"],
        foreign_keys,
    )?;
    let triggers = table.triggers.iter().map(|t| {
        (
            vec![code(&t.name), code(&t.definition)],
            t.comment.as_deref(),
        )
    });
    write_list(out, "Triggers", &["name", "definition"], triggers)
}

/// A titled Markdown table of `rows` (cells, comment); nothing when there are none. The comment
/// column appears only when a row has a comment.
fn write_list<'a>(
    out: &mut String,
    title: &str,
    headers: &[&str],
    rows: impl Iterator<Item = (Vec<String>, Option<&'a str>)>,
) -> fmt::Result {
    let rows: Vec<_> = rows.collect();
    if rows.is_empty() {
        return Ok(());
    }
    let commented = rows.iter().any(|(_, comment)| comment.is_some());
    let mut headers = headers.to_vec();
    if commented {
        headers.push("comment");
    }
    writeln!(out)?;
    writeln!(out, "{title}:")?;
    writeln!(out)?;
    writeln!(out, "| {} |", headers.join(" | "))?;
    writeln!(out, "|{}", "---|".repeat(headers.len()))?;
    for (mut cells, comment) in rows {
        if commented {
            cells.push(cell(comment.unwrap_or_default()));
        }
        writeln!(out, "| {} |", cells.join(" | "))?;
    }
    Ok(())
}

fn write_function(out: &mut String, function: &Function) -> fmt::Result {
    writeln!(out)?;
    writeln!(out, "#### `{}.{}`", function.schema, function.name)?;
    writeln!(out)?;
    if let Some(comment) = &function.comment {
        writeln!(out, "{}", paragraph(comment))?;
        writeln!(out)?;
    }
    writeln!(out, "```sql")?;
    write!(
        out,
        "{} {}.{}({})",
        function.kind.to_uppercase(),
        function.schema,
        function.name,
        list_block(&function.arguments)
    )?;
    if !function.result.is_empty() {
        match function
            .result
            .strip_prefix("TABLE(")
            .and_then(|r| r.strip_suffix(')'))
        {
            Some(columns) => write!(out, " RETURNS TABLE({})", list_block(columns))?,
            None => write!(out, " RETURNS {}", function.result)?,
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "LANGUAGE {} {}{}",
        function.language,
        function.volatility.to_uppercase(),
        if function.security_definer {
            " SECURITY DEFINER"
        } else {
            ""
        }
    )?;
    writeln!(out, "```")
}

/// A comma-separated list for inside parentheses: as is when short, else one item a line.
fn list_block(list: &str) -> String {
    let items = split_top_level(list);
    if list.len() <= 60 {
        return items.join(", ");
    }
    format!("\n    {}\n", items.join(",\n    "))
}

/// Splits at the commas outside parentheses, brackets and quotes.
fn split_top_level(list: &str) -> Vec<String> {
    let mut items = Vec::new();
    let (mut depth, mut quoted, mut current) = (0_i32, false, String::new());
    for ch in list.chars() {
        match ch {
            '\'' => quoted = !quoted,
            '(' | '[' if !quoted => depth += 1,
            ')' | ']' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                items.push(current.trim().to_owned());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(ch);
    }
    if !current.trim().is_empty() {
        items.push(current.trim().to_owned());
    }
    items
}

/// The schema's tables, their columns with key markers, and one line per foreign key, as a
/// Mermaid `erDiagram` (entities named by table; a table of another schema as `schema_table`).
fn write_diagram(out: &mut String, schema: &Schema) -> fmt::Result {
    writeln!(out, "```mermaid")?;
    writeln!(out, "erDiagram")?;
    for table in &schema.tables {
        write_entity(out, table)?;
    }
    for table in &schema.tables {
        for key in &table.foreign_keys {
            write_relationship(out, &schema.name, table, key)?;
        }
    }
    writeln!(out, "```")
}

/// A table as an entity: each column's type and name, with PK, FK and UK (unique on its own).
fn write_entity(out: &mut String, table: &Table) -> fmt::Result {
    let of_kind = |kind: &'static str| {
        table
            .constraints
            .iter()
            .filter(move |c| c.kind == kind)
            .map(|c| c.columns.as_slice())
    };
    let primary: BTreeSet<&String> = of_kind("primary key").flatten().collect();
    let unique: BTreeSet<&String> = of_kind("unique")
        .filter_map(|columns| match columns {
            [column] => Some(column),
            _ => None,
        })
        .collect();
    let foreign: BTreeSet<&String> = table.foreign_keys.iter().flat_map(|k| &k.columns).collect();
    writeln!(out, "    {} {{", mermaid_word(&table.name))?;
    for column in &table.columns {
        write!(
            out,
            "        {} {}",
            mermaid_type(&column.data_type),
            mermaid_word(&column.name)
        )?;
        let keys: Vec<&str> = [("PK", &primary), ("FK", &foreign), ("UK", &unique)]
            .into_iter()
            .filter(|(_, columns)| columns.contains(&column.name))
            .map(|(marker, _)| marker)
            .collect();
        if !keys.is_empty() {
            write!(out, " {}", keys.join(", "))?;
        }
        writeln!(out)?;
    }
    writeln!(out, "    }}")
}

/// A foreign key as `parent ||--o{ child : "columns"`: exactly one parent when the columns are
/// NOT NULL (else zero or one), at most one child when they are unique (else any number).
fn write_relationship(
    out: &mut String,
    schema: &str,
    table: &Table,
    key: &ForeignKey,
) -> fmt::Result {
    let parent = if key.referenced_schema == schema {
        mermaid_word(&key.referenced_table)
    } else {
        mermaid_word(&format!(
            "{}_{}",
            key.referenced_schema, key.referenced_table
        ))
    };
    let all_not_null = key
        .columns
        .iter()
        .all(|name| table.columns.iter().any(|c| &c.name == name && c.not_null));
    let child_unique = table
        .unique_column_sets
        .iter()
        .any(|set| set.len() == key.columns.len() && set.iter().all(|c| key.columns.contains(c)));
    writeln!(
        out,
        "    {parent} {}--{} {} : \"{}\"",
        if all_not_null { "||" } else { "|o" },
        if child_unique { "o|" } else { "o{" },
        mermaid_word(&table.name),
        key.columns.join(", ").replace('"', "'")
    )
}

/// A column type as Mermaid accepts it: a letter, then letters, digits, `_`, `-`, `()` or `[]`.
fn mermaid_type(data_type: &str) -> String {
    let short = data_type
        .replace("timestamp with time zone", "timestamptz")
        .replace("timestamp without time zone", "timestamp")
        .replace("time with time zone", "timetz")
        .replace("time without time zone", "time")
        .replace("character varying", "varchar")
        .replace("double precision", "float8");
    let word = mermaid_word(&short);
    if word.starts_with(|c: char| c.is_ascii_alphabetic()) {
        word
    } else {
        format!("t_{word}")
    }
}

fn mermaid_word(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-()[]".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The anchor GitHub and GitLab give the heading "### `schema.table`".
fn anchor(schema: &str, table: &str) -> String {
    format!("{schema}{table}").to_lowercase()
}

/// A comment as a Markdown paragraph: its own line breaks kept as breaks.
fn paragraph(text: &str) -> String {
    text.trim()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("  \n")
}

/// Text for a table cell: one line, `|` escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// Text as inline code in a table cell: one line, `|` escaped, fenced so backticks inside stay.
fn code(text: &str) -> String {
    let text = cell(text);
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

// --- the check --------------------------------------------------------------------------------

/// `None` when the texts are equal; else their differing lines, `-` from `old` and `+` from
/// `new`, each with its line number, at most [`MAX_DIFF_LINES`] of them.
pub fn diff_lines(old: &str, new: &str) -> Option<String> {
    if old == new {
        return None;
    }
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    let prefix = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (a, b) = (
        &old[prefix..old.len() - suffix],
        &new[prefix..new.len() - suffix],
    );
    let mut lines = Vec::new();
    if a.len() * b.len() > MAX_DIFF_CELLS {
        lines.extend(
            a.iter()
                .enumerate()
                .map(|(i, l)| format!("-{:>5} {l}", prefix + i + 1)),
        );
        lines.extend(
            b.iter()
                .enumerate()
                .map(|(j, l)| format!("+{:>5} {l}", prefix + j + 1)),
        );
    } else {
        // longest common subsequence of the changed middle, then walk it
        let width = b.len() + 1;
        let mut common = vec![0_u32; (a.len() + 1) * width];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                common[i * width + j] = if a[i] == b[j] {
                    common[(i + 1) * width + j + 1] + 1
                } else {
                    common[(i + 1) * width + j].max(common[i * width + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if i < a.len() && j < b.len() && a[i] == b[j] {
                i += 1;
                j += 1;
            } else if i < a.len()
                && (j == b.len() || common[(i + 1) * width + j] >= common[i * width + j + 1])
            {
                lines.push(format!("-{:>5} {}", prefix + i + 1, a[i]));
                i += 1;
            } else {
                lines.push(format!("+{:>5} {}", prefix + j + 1, b[j]));
                j += 1;
            }
        }
    }
    if lines.is_empty() {
        // only the line endings differ (e.g. a missing final newline)
        lines.push("(the files differ only in line endings or the final newline)".to_owned());
    }
    let more = lines.len().saturating_sub(MAX_DIFF_LINES);
    lines.truncate(MAX_DIFF_LINES);
    if more > 0 {
        lines.push(format!("... and {more} more differing lines"));
    }
    Some(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::TestDb;

    /// Two tables with a foreign key, a CHECK, a unique constraint, an index, a function and
    /// comments on all of them.
    const SHOP: &str = r#"
        CREATE SCHEMA shop;
        COMMENT ON SCHEMA shop IS 'A test shop.';
        CREATE TABLE shop.customers (
            id    bigint PRIMARY KEY,
            email text   NOT NULL UNIQUE
        );
        CREATE TABLE shop.orders (
            id          bigserial PRIMARY KEY,
            customer_id bigint    NOT NULL REFERENCES shop.customers (id) ON DELETE CASCADE,
            total       bigint    NOT NULL DEFAULT 0,
            CONSTRAINT total_not_negative CHECK (total >= 0)
        );
        CREATE INDEX orders_by_customer ON shop.orders (customer_id, id DESC);
        COMMENT ON TABLE shop.customers IS 'Who buys.';
        COMMENT ON COLUMN shop.customers.id IS 'Customer id.';
        COMMENT ON COLUMN shop.customers.email IS 'Where receipts go | unique.';
        COMMENT ON TABLE shop.orders IS 'What they bought.';
        COMMENT ON COLUMN shop.orders.id IS 'Order id.';
        COMMENT ON COLUMN shop.orders.customer_id IS 'Who ordered.';
        COMMENT ON COLUMN shop.orders.total IS 'Minor units, never negative.';
        CREATE FUNCTION shop.order_count(p_customer bigint) RETURNS bigint
            LANGUAGE sql STABLE AS $$ SELECT count(*) FROM shop.orders WHERE customer_id = p_customer $$;
        COMMENT ON FUNCTION shop.order_count(bigint) IS 'How many orders a customer made.';
    "#;

    async fn shop() -> TestDb {
        let db = TestDb::empty().await;
        sqlx::raw_sql(SHOP)
            .execute(&db.pool)
            .await
            .expect("create the shop schema");
        db
    }

    #[tokio::test]
    async fn the_document_of_a_small_schema_shows_its_tables_columns_constraints_and_comments() {
        let db = shop().await;
        let doc = document(&db.pool, &["shop"]).await.expect("document");
        for expected in [
            "## Schema `shop`",
            "A test shop.",
            "### `shop.customers`",
            "Who buys.",
            "### `shop.orders`",
            "What they bought.",
            "| `email` | `text` | not null |  | Where receipts go \\| unique. |",
            "| `total` | `bigint` | not null | `0` | Minor units, never negative. |",
            "| `id` | `bigint` | not null | `nextval('shop.orders_id_seq'::regclass)` | Order id. |",
            "| `orders_pkey` | primary key | `PRIMARY KEY (id)` |",
            "| `customers_email_key` | unique | `UNIQUE (email)` |",
            "| `total_not_negative` | check | `CHECK (total >= 0)` |",
            "| `orders_by_customer` |  | `btree (customer_id, id DESC)` |",
            "| `orders_customer_id_fkey` | `customer_id` | [`shop.customers`](#shopcustomers) `(id)` | cascade | no action |",
            "```mermaid\nerDiagram\n    customers {\n        bigint id PK\n        text email UK\n    }",
            "        bigint customer_id FK\n",
            "    customers ||--o{ orders : \"customer_id\"",
            "#### `shop.order_count`",
            "How many orders a customer made.",
            "FUNCTION shop.order_count(p_customer bigint) RETURNS bigint\nLANGUAGE sql STABLE",
        ] {
            assert!(
                doc.contains(expected),
                "the document lacks {expected:?}:\n{doc}"
            );
        }
        // the pkey index is shown as the constraint only
        assert!(!doc.contains("| `customers_pkey` |  |"), "{doc}");
        assert!(
            !doc.contains(&db.name),
            "the document names the database:\n{doc}"
        );
        let again = document(&db.pool, &["shop"]).await.expect("document again");
        assert_eq!(doc, again, "the same schema gives the same document");
    }

    #[tokio::test]
    async fn a_column_added_without_a_comment_fails_naming_it() {
        let db = shop().await;
        sqlx::query("ALTER TABLE shop.orders ADD COLUMN note text")
            .execute(&db.pool)
            .await
            .unwrap();
        let error = document(&db.pool, &["shop"]).await.unwrap_err().to_string();
        assert!(error.contains("shop.orders.note (column)"), "{error}");
        assert!(error.contains("1 object without a comment"), "{error}");
    }

    #[tokio::test]
    async fn a_migration_adding_an_uncommented_column_to_the_ledger_fails_naming_it() {
        let db = TestDb::new().await;
        document(&db.pool, &SCHEMAS)
            .await
            .expect("every table, column and function of the migrations has a comment");
        sqlx::query("ALTER TABLE ledger.accounts ADD COLUMN nickname text")
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE auth.audit (id bigint PRIMARY KEY)")
            .execute(&db.pool)
            .await
            .unwrap();
        let error = document(&db.pool, &SCHEMAS).await.unwrap_err().to_string();
        for named in [
            "ledger.accounts.nickname (column)",
            "auth.audit (table)",
            "auth.audit.id (column)",
        ] {
            assert!(error.contains(named), "{named} missing from: {error}");
        }
    }

    #[tokio::test]
    async fn a_schema_that_does_not_exist_is_an_error() {
        let db = TestDb::empty().await;
        let error = document(&db.pool, &["nowhere"])
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("no schema nowhere"), "{error}");
    }

    #[test]
    fn the_diff_names_the_changed_line_with_its_number() {
        let old = "a\nb\nc\nd\n";
        let new = "a\nb\nC\nd\ne\n";
        let diff = diff_lines(old, new).expect("they differ");
        assert_eq!(diff, "-    3 c\n+    3 C\n+    5 e", "{diff}");
        assert_eq!(diff_lines(old, old), None);
        assert!(
            diff_lines("a\n", "a").is_some(),
            "a missing final newline differs"
        );
    }

    #[test]
    fn a_long_diff_is_cut_and_counts_the_rest() {
        let old: String = (0..100).map(|i| format!("{i}\n")).collect();
        let diff = diff_lines(&old, "").expect("they differ");
        assert_eq!(diff.lines().count(), MAX_DIFF_LINES + 1, "{diff}");
        assert!(diff.ends_with("... and 40 more differing lines"), "{diff}");
    }

    #[test]
    fn mermaid_types_are_single_words() {
        assert_eq!(mermaid_type("timestamp with time zone"), "timestamptz");
        assert_eq!(mermaid_type("text[]"), "text[]");
        assert_eq!(mermaid_type("numeric(12,2)"), "numeric(12_2)");
        assert_eq!(mermaid_type("\"char\""), "t__char_");
    }

    #[test]
    fn long_argument_lists_get_one_line_each() {
        assert_eq!(list_block("p_currency text"), "p_currency text");
        let long = "p_usernames text[], p_amounts bigint[], p_note text DEFAULT 'a, b', p_max_amount bigint";
        assert_eq!(
            list_block(long),
            "\n    p_usernames text[],\n    p_amounts bigint[],\n    p_note text DEFAULT 'a, b',\n    p_max_amount bigint\n"
        );
    }
}
