//! Copying a whole database to another one, of either backend (`chatd migrate`): SQLite to
//! PostgreSQL, PostgreSQL to SQLite, or to another database of the same backend.
//!
//! Every table of the data model ([`TABLES`]) is read in key order, [`CHUNK`] rows at a time,
//! inside one read transaction on the source (one consistent snapshot, even if a server
//! still writes to it), and written as multi-row INSERTs inside one transaction on the
//! target, so a copy that fails anywhere leaves the target as empty as it found it. Every
//! id and value arrives unchanged; flags travel as 0/1 on SQLite and BOOLEAN on PostgreSQL.
//! Before committing, the copy is verified (row counts of every table and the highest
//! message id, on both sides; the `meta` values key by key), and the id allocators of the
//! target are moved past every id the source ever handed out: PostgreSQL's identity
//! sequences and `id_counter` (`last_id`, `last_sent_at`), SQLite's `sqlite_sequence`.
//!
//! The target must be empty: no account, device, room, message, membership span or read
//! marker ([`TransferError::TargetNotEmpty`]). What a fresh database already holds is
//! replaced: its `meta` counters by the source's, its login-proof key and failures (they
//! belong to accounts it does not have) by the source's. PostgreSQL's node registry
//! (`cluster_nodes`) is not copied: nodes announce themselves. The full-text index is
//! derived data, never copied: SQLite's index file and PostgreSQL's `message_search` are
//! emptied here, and an indexer rebuilds them from the messages when a server starts.
//!
//! The copy is meant for a stopped server: messages a server stores on the source after the
//! snapshot is taken are not copied (the report names a server holding a SQLite source).
//! A server cannot start on a SQLite target during the copy (the copy holds its lock).

use std::path::Path;

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Postgres, QueryBuilder, Row, Sqlite, Transaction};

use super::lock::{DbLock, Holder, LockError};
use super::pg::PostgresStore;
use super::seam::DbTarget;
use super::{Durability, SqliteStore, StoreError};

/// Rows per read and per multi-row INSERT.
const CHUNK: usize = 1000;

/// The kind of value a column holds, the same on both backends but for flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A 64-bit integer (SQLite INTEGER, PostgreSQL BIGINT).
    Int,
    /// A flag: 0/1 INTEGER on SQLite, BOOLEAN on PostgreSQL.
    Flag,
    Text,
    /// A message body: TEXT on both, stored escaped on PostgreSQL when it holds U+0000
    /// (`pg::body`).
    Body,
    /// SQLite BLOB, PostgreSQL BYTEA.
    Blob,
}

/// How a table's rows meet what a fresh target already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The target must have none: rows are inserted.
    Fresh,
    /// The target's rows are deleted first (they belong to accounts it does not have).
    Replace,
    /// Rows are inserted or, by key, overwritten; rows of the target's own stay.
    Merge,
}

/// One table of the data model: its columns, the first `key` of which order its rows
/// uniquely.
#[derive(Debug)]
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    key: usize,
    mode: Mode,
}

use Kind::{Blob, Body, Flag, Int, Text};

/// Every copied table, in an order that satisfies the foreign keys.
const TABLES: &[Table] = &[
    Table {
        name: "users",
        columns: &[
            ("id", Int),
            ("name", Text),
            ("password_hash", Text),
            ("disabled", Flag),
            ("deleted", Flag),
            ("acked_upto", Int),
            ("created_at", Int),
        ],
        key: 1,
        mode: Mode::Fresh,
    },
    Table {
        name: "devices",
        columns: &[
            ("id", Int),
            ("user_id", Int),
            ("token_hash", Blob),
            ("name", Text),
            ("cursor", Int),
            ("created_at", Int),
            ("last_seen_at", Int),
            ("irc_name", Text),
        ],
        key: 1,
        mode: Mode::Fresh,
    },
    Table {
        name: "rooms",
        columns: &[
            ("id", Int),
            ("name", Text),
            ("created_at", Int),
            ("owner_id", Int),
            ("private", Flag),
            ("deleted", Flag),
        ],
        key: 1,
        mode: Mode::Fresh,
    },
    Table {
        name: "messages",
        columns: &[
            ("id", Int),
            ("sender_id", Int),
            ("sender_device_id", Int),
            ("recipient_id", Int),
            ("room_id", Int),
            ("body", Body),
            ("sent_at", Int),
            ("client_key", Text),
            ("kind", Text),
            ("member_id", Int),
            ("action", Flag),
        ],
        key: 1,
        mode: Mode::Fresh,
    },
    Table {
        name: "room_spans",
        columns: &[
            ("room_id", Int),
            ("user_id", Int),
            ("joined_id", Int),
            ("left_id", Int),
        ],
        key: 3,
        mode: Mode::Fresh,
    },
    Table {
        name: "read_markers",
        columns: &[("user_id", Int), ("conversation", Text), ("upto", Int)],
        key: 2,
        mode: Mode::Fresh,
    },
    Table {
        name: "meta",
        columns: &[("key", Text), ("value", Int)],
        key: 1,
        mode: Mode::Merge,
    },
    Table {
        name: "server_secrets",
        columns: &[("name", Text), ("value", Blob)],
        key: 1,
        mode: Mode::Replace,
    },
    Table {
        name: "login_proof_failures",
        columns: &[("nonce", Blob), ("failures", Int), ("expires_at", Int)],
        key: 1,
        mode: Mode::Replace,
    },
];

/// The tables whose ids come from an allocator (SQLite AUTOINCREMENT, PostgreSQL identity).
const ALLOCATED: &[&str] = &["users", "devices", "rooms"];

/// One value of a row; `None` is SQL NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(i64),
    Flag(bool),
    Text(String),
    Blob(Vec<u8>),
}

type Values = Vec<Option<Value>>;

/// How one table compares after a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    /// Rows in the source's snapshot.
    pub source: u64,
    /// Rows in the target after the copy (for `meta`: the source's keys found there with the
    /// source's values).
    pub target: u64,
}

/// What a finished copy found and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReport {
    /// Every copied table, in copy order.
    pub tables: Vec<TableCount>,
    /// The highest message id of the source (0 without messages); the target's is the same.
    pub max_message_id: i64,
    /// A server that held the SQLite source while it was copied (what it stored after the
    /// snapshot is not in the target).
    pub source_in_use: Option<Holder>,
}

/// Why a copy was refused or failed. A failed copy leaves the target empty.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("the source and the target are the same database")]
    SameDatabase,
    #[error("no database at {0}")]
    NoSource(String),
    #[error(
        "the target database is not empty ({rows} row(s) in {table}); migrate copies into an \
         empty database only"
    )]
    TargetNotEmpty { table: &'static str, rows: u64 },
    #[error(
        "verification failed: {table} has {in_source} row(s) in the source, {in_target} in the \
         target"
    )]
    CountMismatch {
        table: &'static str,
        in_source: u64,
        in_target: u64,
    },
    #[error(
        "verification failed: the newest message id is {in_source} in the source, {in_target} in \
         the target"
    )]
    MaxIdMismatch { in_source: i64, in_target: i64 },
    #[error("{table}.{column} holds {value}, which is not a flag (0 or 1)")]
    BadFlag {
        table: &'static str,
        column: &'static str,
        value: i64,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for TransferError {
    fn from(e: sqlx::Error) -> Self {
        TransferError::Store(e.into())
    }
}

/// Copies everything in the database `from` into the empty database `to` (created, and
/// brought to the current schema, when needed; so is the source), verifies the copy and
/// reports the counts. See the module docs for what is copied and what is refused.
pub async fn transfer(from: &DbTarget, to: &DbTarget) -> Result<TransferReport, TransferError> {
    if let (DbTarget::Sqlite(a), DbTarget::Sqlite(b)) = (from, to) {
        if same_file(a, b) {
            return Err(TransferError::SameDatabase);
        }
    }
    let source_in_use = match from {
        DbTarget::Sqlite(path) if !path.is_file() => {
            return Err(TransferError::NoSource(path.display().to_string()))
        }
        DbTarget::Sqlite(path) => super::lock::holder(path),
        DbTarget::Postgres(_) => None,
    };
    // No server may start on a SQLite target while it is filled.
    let _lock = match to {
        DbTarget::Sqlite(path) => Some(DbLock::acquire(path)?),
        DbTarget::Postgres(_) => None,
    };
    let source = Side::open(from).await?;
    let target = match Side::open(to).await {
        Ok(target) => target,
        Err(e) => {
            source.close().await;
            return Err(e);
        }
    };
    let result = copy(&source, &target).await;
    source.close().await;
    target.close().await;
    let (tables, max_message_id) = result?;
    Ok(TransferReport {
        tables,
        max_message_id,
        source_in_use,
    })
}

/// Whether two paths name one existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return a.dev() == b.dev() && a.ino() == b.ino();
        }
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

async fn copy(source: &Side, target: &Side) -> Result<(Vec<TableCount>, i64), TransferError> {
    if let (Some(a), Some(b)) = (source.identity().await?, target.identity().await?) {
        if a == b {
            return Err(TransferError::SameDatabase);
        }
    }
    let mut from = source.begin_read().await?;
    let mut into = target.begin_write().await?;
    for table in TABLES.iter().filter(|t| t.mode == Mode::Fresh) {
        let rows = into.count(table.name).await?;
        if rows > 0 {
            return Err(TransferError::TargetNotEmpty {
                table: table.name,
                rows,
            });
        }
    }
    match target {
        // Whatever index file a database of this name left behind describes other messages.
        Side::Sqlite(store) => reset_search_index(store).await?,
        // The index is derived: the indexer builds it from the copied messages.
        Side::Postgres(_) => {
            into.execute("DELETE FROM message_search").await?;
            into.execute("UPDATE search_state SET indexed_upto = 0")
                .await?;
        }
    }
    let mut counts = Vec::new();
    for table in TABLES {
        if table.mode == Mode::Replace {
            into.execute(&format!("DELETE FROM {}", table.name)).await?;
        }
        let source_rows = from.count(table.name).await?;
        let mut copied = 0u64;
        let mut merged = Vec::new();
        let mut after: Option<Values> = None;
        loop {
            let rows = from.read_chunk(table, after.as_deref()).await?;
            if rows.is_empty() {
                break;
            }
            into.insert(table, &rows).await?;
            copied += rows.len() as u64;
            let full = rows.len() == CHUNK;
            if table.mode == Mode::Merge {
                merged.extend(rows.iter().cloned());
            }
            after = rows.into_iter().last().map(|mut r| {
                r.truncate(table.key);
                r
            });
            if !full {
                break;
            }
        }
        check_count(table.name, source_rows, copied)?;
        let target_rows = match table.mode {
            Mode::Merge => into.matching(table, &merged).await?,
            Mode::Fresh | Mode::Replace => into.count(table.name).await?,
        };
        check_count(table.name, source_rows, target_rows)?;
        counts.push(TableCount {
            table: table.name,
            source: source_rows,
            target: target_rows,
        });
    }
    let source_max = from.max_message_id().await?;
    let target_max = into.max_message_id().await?;
    if source_max != target_max {
        return Err(TransferError::MaxIdMismatch {
            in_source: source_max,
            in_target: target_max,
        });
    }
    for table in ALLOCATED {
        let issued = from.issued(table).await?.max(from.max_id(table).await?);
        into.set_issued(table, issued).await?;
    }
    into.set_last_message_id(target_max).await?;
    into.commit().await?;
    from.finish().await?;
    Ok((counts, target_max))
}

fn check_count(table: &'static str, source: u64, target: u64) -> Result<(), TransferError> {
    if source == target {
        Ok(())
    } else {
        Err(TransferError::CountMismatch {
            table,
            in_source: source,
            in_target: target,
        })
    }
}

/// Empties a SQLite store's full-text index: a server rebuilds it from the messages. A
/// deferred transaction, which locks only the index file: the copy's own transaction holds
/// the main database.
async fn reset_search_index(store: &SqliteStore) -> Result<(), TransferError> {
    sqlx::query(
        "BEGIN; INSERT INTO search.fts (fts) VALUES ('delete-all'); \
         UPDATE search.state SET value = 0 WHERE key = 'indexed_upto'; COMMIT;",
    )
    .execute(&store.search.pool)
    .await?;
    Ok(())
}

/// An opened database of either backend.
enum Side {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Side {
    async fn open(target: &DbTarget) -> Result<Side, TransferError> {
        Ok(match target {
            DbTarget::Sqlite(path) => {
                Side::Sqlite(SqliteStore::open(path, Durability::Full).await?)
            }
            DbTarget::Postgres(pg) => {
                Side::Postgres(PostgresStore::open(pg, Durability::Full).await?)
            }
        })
    }

    async fn close(&self) {
        match self {
            Side::Sqlite(store) => store.close().await,
            Side::Postgres(store) => store.close().await,
        }
    }

    /// What tells two databases apart: for SQLite the file (by path, already compared),
    /// for PostgreSQL the server's start and the database's oid.
    async fn identity(&self) -> Result<Option<String>, TransferError> {
        match self {
            Side::Sqlite(_) => Ok(None),
            Side::Postgres(store) => {
                let row = sqlx::query(
                    "SELECT pg_postmaster_start_time()::text || '/' || oid::text || '/' || datname \
                     FROM pg_database WHERE datname = current_database()",
                )
                .fetch_one(&store.pool)
                .await?;
                Ok(Some(row.get(0)))
            }
        }
    }

    /// A read transaction: one snapshot of the whole database.
    async fn begin_read(&self) -> Result<Tx, TransferError> {
        Ok(match self {
            // A deferred transaction in WAL mode: its first read fixes the snapshot.
            Side::Sqlite(store) => Tx::Sqlite(store.pool.begin().await?),
            Side::Postgres(store) => Tx::Postgres(
                store
                    .pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?,
            ),
        })
    }

    /// The write transaction, holding off any other writer until it ends.
    async fn begin_write(&self) -> Result<Tx, TransferError> {
        Ok(match self {
            Side::Sqlite(store) => Tx::Sqlite(store.pool.begin_with("BEGIN IMMEDIATE").await?),
            Side::Postgres(store) => {
                let mut tx = store.pool.begin().await?;
                sqlx::query(
                    "LOCK TABLE users, devices, rooms, messages, room_spans, read_markers, meta, \
                     server_secrets, login_proof_failures, id_counter IN EXCLUSIVE MODE",
                )
                .execute(&mut *tx)
                .await?;
                Tx::Postgres(tx)
            }
        })
    }
}

/// A transaction on either backend.
enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    async fn execute(&mut self, sql: &str) -> Result<(), TransferError> {
        match self {
            Tx::Sqlite(tx) => sqlx::query(sql).execute(&mut **tx).await.map(drop)?,
            Tx::Postgres(tx) => sqlx::query(sql).execute(&mut **tx).await.map(drop)?,
        }
        Ok(())
    }

    async fn scalar(&mut self, sql: &str) -> Result<i64, TransferError> {
        Ok(match self {
            Tx::Sqlite(tx) => sqlx::query_scalar(sql).fetch_one(&mut **tx).await?,
            Tx::Postgres(tx) => sqlx::query_scalar(sql).fetch_one(&mut **tx).await?,
        })
    }

    async fn count(&mut self, table: &str) -> Result<u64, TransferError> {
        let n = self
            .scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn max_id(&mut self, table: &str) -> Result<i64, TransferError> {
        self.scalar(&format!("SELECT COALESCE(MAX(id), 0) FROM {table}"))
            .await
    }

    async fn max_message_id(&mut self) -> Result<i64, TransferError> {
        self.max_id("messages").await
    }

    /// The next `CHUNK` rows of `table` in key order, after the row whose key is `after`.
    async fn read_chunk(
        &mut self,
        table: &'static Table,
        after: Option<&[Option<Value>]>,
    ) -> Result<Vec<Values>, TransferError> {
        let head = select_head(table, after.is_some());
        let tail = select_tail(table);
        match self {
            Tx::Sqlite(tx) => {
                let mut q = QueryBuilder::<Sqlite>::new(head);
                if let Some(after) = after {
                    let mut sep = q.separated(", ");
                    for (value, (_, kind)) in after.iter().zip(table.columns) {
                        bind_sqlite(&mut sep, value, *kind);
                    }
                    q.push(")");
                }
                q.push(tail);
                let rows = q.build().fetch_all(&mut **tx).await?;
                rows.iter().map(|r| sqlite_values(table, r)).collect()
            }
            Tx::Postgres(tx) => {
                let mut q = QueryBuilder::<Postgres>::new(head);
                if let Some(after) = after {
                    let mut sep = q.separated(", ");
                    for (value, (_, kind)) in after.iter().zip(table.columns) {
                        bind_pg(&mut sep, value, *kind);
                    }
                    q.push(")");
                }
                q.push(tail);
                let rows = q.build().fetch_all(&mut **tx).await?;
                rows.iter().map(|r| pg_values(table, r)).collect()
            }
        }
    }

    /// Inserts `rows` (of `table`'s columns, in order) in one statement.
    async fn insert(&mut self, table: &Table, rows: &[Values]) -> Result<(), TransferError> {
        let head = insert_head(table);
        let tail = insert_tail(table);
        match self {
            Tx::Sqlite(tx) => {
                let mut q = QueryBuilder::<Sqlite>::new(head);
                q.push_values(rows, |mut sep, row| {
                    for (value, (_, kind)) in row.iter().zip(table.columns) {
                        bind_sqlite(&mut sep, value, *kind);
                    }
                });
                q.push(tail);
                q.build().execute(&mut **tx).await?;
            }
            Tx::Postgres(tx) => {
                let mut q = QueryBuilder::<Postgres>::new(head);
                q.push_values(rows, |mut sep, row| {
                    for (value, (_, kind)) in row.iter().zip(table.columns) {
                        bind_pg(&mut sep, value, *kind);
                    }
                });
                q.push(tail);
                q.build().execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// How many of `rows` the table holds exactly (every column equal).
    async fn matching(
        &mut self,
        table: &'static Table,
        rows: &[Values],
    ) -> Result<u64, TransferError> {
        let mut found = 0;
        for row in rows {
            let stored = self.read_one(table, &row[..table.key]).await?;
            if stored.as_ref() == Some(row) {
                found += 1;
            }
        }
        Ok(found)
    }

    /// The row of `table` with the given key, if any.
    async fn read_one(
        &mut self,
        table: &'static Table,
        key: &[Option<Value>],
    ) -> Result<Option<Values>, TransferError> {
        let sql = select_one(table);
        match self {
            Tx::Sqlite(tx) => {
                let mut q = QueryBuilder::<Sqlite>::new(sql);
                let mut sep = q.separated(", ");
                for (value, (_, kind)) in key.iter().zip(table.columns) {
                    bind_sqlite(&mut sep, value, *kind);
                }
                q.push(")");
                let row = q.build().fetch_optional(&mut **tx).await?;
                row.map(|r| sqlite_values(table, &r)).transpose()
            }
            Tx::Postgres(tx) => {
                let mut q = QueryBuilder::<Postgres>::new(sql);
                let mut sep = q.separated(", ");
                for (value, (_, kind)) in key.iter().zip(table.columns) {
                    bind_pg(&mut sep, value, *kind);
                }
                q.push(")");
                let row = q.build().fetch_optional(&mut **tx).await?;
                row.map(|r| pg_values(table, &r)).transpose()
            }
        }
    }

    /// The highest id the allocator of `table` has handed out (0 if none), deleted rows'
    /// included.
    async fn issued(&mut self, table: &str) -> Result<i64, TransferError> {
        Ok(match self {
            Tx::Sqlite(tx) => sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = ?")
                .bind(table)
                .fetch_optional(&mut **tx)
                .await?
                .unwrap_or(0),
            Tx::Postgres(tx) => sqlx::query_scalar::<_, Option<i64>>(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence($1, 'id')::regclass)",
            )
            .bind(table)
            .fetch_one(&mut **tx)
            .await?
            .unwrap_or(0),
        })
    }

    /// Makes the allocator of `table` hand out ids above `issued` next.
    async fn set_issued(&mut self, table: &str, issued: i64) -> Result<(), TransferError> {
        match self {
            Tx::Sqlite(tx) => {
                let updated = sqlx::query("UPDATE sqlite_sequence SET seq = ?1 WHERE name = ?2")
                    .bind(issued)
                    .bind(table)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                if updated == 0 && issued > 0 {
                    sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)")
                        .bind(table)
                        .bind(issued)
                        .execute(&mut **tx)
                        .await?;
                }
            }
            Tx::Postgres(tx) => {
                // A sequence cannot be set to 0: "1, not yet called" hands out 1 next.
                let (value, called) = if issued > 0 {
                    (issued, true)
                } else {
                    (1, false)
                };
                sqlx::query("SELECT setval(pg_get_serial_sequence($1, 'id'), $2, $3)")
                    .bind(table)
                    .bind(value)
                    .bind(called)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }

    /// Records the highest message id (and time) where the backend's writer takes the next
    /// one from: PostgreSQL's `id_counter`, whose `last_sent_at` keeps times growing with
    /// ids (and whose membership version moves, so a node that is running after all
    /// re-reads the rooms); SQLite's writer starts above the newest message on its own.
    async fn set_last_message_id(&mut self, id: i64) -> Result<(), TransferError> {
        if let Tx::Postgres(tx) = self {
            sqlx::query(
                "UPDATE id_counter SET last_id = $1, \
                 last_sent_at = (SELECT COALESCE(MAX(sent_at), 0) FROM messages), \
                 membership_version = membership_version + 1",
            )
            .bind(id)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn commit(self) -> Result<(), TransferError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// Ends a read transaction.
    async fn finish(self) -> Result<(), TransferError> {
        match self {
            Tx::Sqlite(tx) => tx.rollback().await?,
            Tx::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

fn column_list(table: &Table) -> String {
    let names: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

fn key_list(table: &Table) -> String {
    let names: Vec<&str> = table.columns[..table.key].iter().map(|(n, _)| *n).collect();
    names.join(", ")
}

/// `SELECT … FROM t` and, for a page after a key, `WHERE (k1, …) > (` (the key's values
/// and `)` follow).
fn select_head(table: &Table, after: bool) -> String {
    let mut sql = format!("SELECT {} FROM {}", column_list(table), table.name);
    if after {
        sql.push_str(&format!(" WHERE ({}) > (", key_list(table)));
    }
    sql
}

/// What follows [`select_head`] (and the key's values): the order and the page size.
fn select_tail(table: &Table) -> String {
    format!(" ORDER BY {} LIMIT {CHUNK}", key_list(table))
}

/// `SELECT … FROM t WHERE (k1, …) = (` (the key's values and `)` follow).
fn select_one(table: &Table) -> String {
    format!(
        "SELECT {} FROM {} WHERE ({}) = (",
        column_list(table),
        table.name,
        key_list(table)
    )
}

fn insert_head(table: &Table) -> String {
    format!("INSERT INTO {} ({}) ", table.name, column_list(table))
}

/// What follows the values: for a merged table, an overwrite of the row with the same key.
fn insert_tail(table: &Table) -> String {
    if table.mode != Mode::Merge {
        return String::new();
    }
    let set: Vec<String> = table.columns[table.key..]
        .iter()
        .map(|(name, _)| format!("{name} = excluded.{name}"))
        .collect();
    format!(
        " ON CONFLICT ({}) DO UPDATE SET {}",
        key_list(table),
        set.join(", ")
    )
}

/// A SQLite flag as a bool: 0 or 1, anything else refused.
fn flag_from_int(
    table: &'static str,
    column: &'static str,
    value: i64,
) -> Result<bool, TransferError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(TransferError::BadFlag {
            table,
            column,
            value,
        }),
    }
}

fn sqlite_values(table: &'static Table, row: &SqliteRow) -> Result<Values, TransferError> {
    let mut values = Vec::with_capacity(table.columns.len());
    for (i, (column, kind)) in table.columns.iter().enumerate() {
        values.push(match kind {
            Int => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
            Flag => match row.try_get::<Option<i64>, _>(i)? {
                Some(v) => Some(Value::Flag(flag_from_int(table.name, column, v)?)),
                None => None,
            },
            Text | Body => row.try_get::<Option<String>, _>(i)?.map(Value::Text),
            Blob => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Blob),
        });
    }
    Ok(values)
}

fn pg_values(table: &'static Table, row: &PgRow) -> Result<Values, TransferError> {
    let mut values = Vec::with_capacity(table.columns.len());
    for (i, (_, kind)) in table.columns.iter().enumerate() {
        values.push(match kind {
            Int => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
            Flag => row.try_get::<Option<bool>, _>(i)?.map(Value::Flag),
            Text => row.try_get::<Option<String>, _>(i)?.map(Value::Text),
            Body => row
                .try_get::<Option<String>, _>(i)?
                .map(|v| Value::Text(super::pg::body::decode(v))),
            Blob => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Blob),
        });
    }
    Ok(values)
}

/// Binds a value for SQLite: a flag as 0/1, NULL typed by its column.
fn bind_sqlite<'a>(
    sep: &mut sqlx::query_builder::Separated<'_, 'a, Sqlite, &'static str>,
    value: &Option<Value>,
    kind: Kind,
) {
    match (value, kind) {
        (Some(Value::Int(v)), _) => sep.push_bind(*v),
        (Some(Value::Flag(v)), _) => sep.push_bind(i64::from(*v)),
        (Some(Value::Text(v)), _) => sep.push_bind(v.clone()),
        (Some(Value::Blob(v)), _) => sep.push_bind(v.clone()),
        (None, Int | Flag) => sep.push_bind(None::<i64>),
        (None, Text | Body) => sep.push_bind(None::<String>),
        (None, Blob) => sep.push_bind(None::<Vec<u8>>),
    };
}

/// Binds a value for PostgreSQL: a flag as BOOLEAN, NULL typed by its column.
fn bind_pg<'a>(
    sep: &mut sqlx::query_builder::Separated<'_, 'a, Postgres, &'static str>,
    value: &Option<Value>,
    kind: Kind,
) {
    match (value, kind) {
        (Some(Value::Int(v)), _) => sep.push_bind(*v),
        (Some(Value::Flag(v)), _) => sep.push_bind(*v),
        (Some(Value::Text(v)), Body) => sep.push_bind(super::pg::body::encode(v).into_owned()),
        (Some(Value::Text(v)), _) => sep.push_bind(v.clone()),
        (Some(Value::Blob(v)), _) => sep.push_bind(v.clone()),
        (None, Int) => sep.push_bind(None::<i64>),
        (None, Flag) => sep.push_bind(None::<bool>),
        (None, Text | Body) => sep.push_bind(None::<String>),
        (None, Blob) => sep.push_bind(None::<Vec<u8>>),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_zero_or_one() {
        assert!(!flag_from_int("users", "disabled", 0).unwrap());
        assert!(flag_from_int("users", "disabled", 1).unwrap());
        let err = flag_from_int("users", "disabled", 2).unwrap_err();
        assert!(
            matches!(err, TransferError::BadFlag { value: 2, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "users.disabled holds 2, which is not a flag (0 or 1)"
        );
    }

    #[test]
    fn pages_follow_the_key() {
        let spans = TABLES.iter().find(|t| t.name == "room_spans").unwrap();
        assert_eq!(
            select_head(spans, false),
            "SELECT room_id, user_id, joined_id, left_id FROM room_spans"
        );
        assert_eq!(
            select_head(spans, true),
            "SELECT room_id, user_id, joined_id, left_id FROM room_spans \
             WHERE (room_id, user_id, joined_id) > ("
        );
        assert_eq!(
            select_tail(spans),
            " ORDER BY room_id, user_id, joined_id LIMIT 1000"
        );
    }

    #[test]
    fn only_meta_is_merged() {
        let meta = TABLES.iter().find(|t| t.name == "meta").unwrap();
        assert_eq!(
            insert_tail(meta),
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        );
        for table in TABLES.iter().filter(|t| t.name != "meta") {
            assert_eq!(insert_tail(table), "", "{}", table.name);
        }
    }

    /// Every table of both schemas is copied, with every column, except what only one
    /// backend has (PostgreSQL's id counter and node registry), derived data (PostgreSQL's
    /// search index) and SQLite's bookkeeping.
    #[test]
    fn every_table_and_column_is_copied() {
        // Every migration, in order.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let postgres: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        let not_copied = [
            "id_counter",
            "cluster_nodes",
            "message_search",
            "search_state",
        ];
        let mut tables: Vec<&str> = postgres
            .lines()
            .filter_map(|l| l.strip_prefix("CREATE TABLE "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|t| !not_copied.contains(t))
            .collect();
        tables.sort_unstable();
        let mut copied: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        copied.sort_unstable();
        assert_eq!(tables, copied);
        for table in TABLES {
            let start = postgres
                .find(&format!("CREATE TABLE {} (", table.name))
                .unwrap();
            let body = &postgres[start..start + postgres[start..].find(");").unwrap()];
            let columns: Vec<&str> = body
                .lines()
                .skip(1)
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("--"))
                .filter(|l| !l.starts_with("CHECK") && !l.starts_with("PRIMARY KEY"))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            let ours: Vec<&str> = table.columns.iter().map(|(n, _)| *n).collect();
            assert_eq!(columns, ours, "{}", table.name);
            for (name, kind) in table.columns {
                let line = body
                    .lines()
                    .map(str::trim)
                    .find(|l| l.split_whitespace().next() == Some(name))
                    .unwrap();
                let ty = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .trim_end_matches(',');
                let expected = match kind {
                    Int => "BIGINT",
                    Flag => "BOOLEAN",
                    Text | Body => "TEXT",
                    Blob => "BYTEA",
                };
                assert_eq!(ty, expected, "{}.{name}", table.name);
            }
        }
    }

    /// The SQLite schema (after every migration) has the same tables and columns, with
    /// flags as INTEGER.
    #[tokio::test]
    async fn the_sqlite_schema_has_the_same_columns() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("chatd.db"), Durability::Full)
            .await
            .unwrap();
        for table in TABLES {
            let rows = sqlx::query(&format!("PRAGMA table_info({})", table.name))
                .fetch_all(&store.pool)
                .await
                .unwrap();
            let mut columns: Vec<(String, String)> = rows
                .iter()
                .map(|r| (r.get::<String, _>("name"), r.get::<String, _>("type")))
                .collect();
            let mut ours: Vec<(String, String)> = table
                .columns
                .iter()
                .map(|(name, kind)| {
                    let ty = match kind {
                        Int | Flag => "INTEGER",
                        Text | Body => "TEXT",
                        Blob => "BLOB",
                    };
                    (name.to_string(), ty.to_string())
                })
                .collect();
            columns.sort();
            ours.sort();
            assert_eq!(columns, ours, "{}", table.name);
        }
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name NOT LIKE '_sqlx%' ORDER BY name",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let mut copied: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        copied.sort_unstable();
        assert_eq!(tables, copied);
        store.close().await;
    }

    #[test]
    fn the_same_file_is_the_same_database() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        std::fs::write(&a, b"").unwrap();
        let also_a = dir.path().join(".").join("a.db");
        assert!(same_file(&a, &also_a));
        assert!(!same_file(&a, &dir.path().join("b.db")));
    }
}
