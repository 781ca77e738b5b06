//! Storage: the only module that contains SQL, behind one seam.
//!
//! [`Store`] (module `seam`) is the one storage type the code above `store` uses: an enum
//! over the backends, each public method handed to the backend by one dispatch macro, so a
//! second backend adds a variant and one arm and the compiler lists what it must implement
//! (the module docs of `seam` say what a backend must provide). [`DbTarget`] names the
//! database to open: a path or `sqlite:` URL for SQLite, a `postgres://` URL for
//! PostgreSQL ([`PgTarget`], module `pg`: the second backend, served by any number of nodes,
//! whose module docs say what differs and why). Module `transfer` copies a database from one
//! backend to the other (`chatd migrate`).
//!
//! Shared by every backend: [`StoreError`], the typed records ([`UserRef`], [`RoomRef`],
//! [`Credentials`], [`DeviceRecord`], …), [`HistoryScope`], the writer's vocabulary
//! ([`Writer`], the handle: a bounded channel of operations; [`NewMessage`], [`Target`],
//! [`Committed`], [`Delivery`]) and the membership rules (module `membership`: pure
//! functions from the in-memory rooms and a [`RoomChange`] or a send to the events to store
//! or a typed [`Refusal`]), which every backend's writer task applies.
//!
//! The embedded default is SQLite, [`SqliteStore`]: the pool (WAL mode, `synchronous=FULL`
//! by default, see [`Durability`]), the embedded migrations and the queries (here and in
//! modules `messages`, `rooms`, `irc`, `proofs`). Message inserts and cursor moves do not go
//! through the store's methods: they go through the single writer task (module `writer`),
//! which batches them into one transaction per group commit and is the only place room
//! membership changes. Beside the writer run a WAL checkpointer (module `checkpoint`) and the
//! search indexer (module `search`: the full-text index is a derived database file of its
//! own). A serving process holds [`DbLock`] on the database file (module `lock`), so no
//! second server can write it. Nothing outside this module sees an sqlx type.

mod checkpoint;
mod irc;
mod lock;
mod membership;
mod messages;
mod pg;
mod proofs;
mod rooms;
mod seam;
mod search;
mod writer;

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::ids::{DeviceId, MessageId, UserId};
use crate::protocol::{format_timestamp, Username};

pub use lock::{holder as lock_holder, DbLock, Holder, LockError};
pub use membership::{Refusal, RoomAction, RoomChange};
pub use messages::HistoryScope;
pub use pg::{KeyConflict, PgTarget, LISTENER_NAME, PASSWORD_FILE_ENV};
pub use rooms::RoomRef;
pub use seam::{DbTarget, DbTargetError, Store};
pub use writer::{Audience, Committed, Delivery, NewMessage, Target, Writer};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How hard a SQLite commit tries to survive power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous=FULL`: a commit is on disk before any sender is told it is stored.
    #[default]
    Full,
    /// `synchronous=NORMAL`: may lose the last moments of commits on power loss (not on a
    /// process crash).
    Normal,
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            other => Err(format!(
                "unknown durability {other:?} (expected \"full\" or \"normal\")"
            )),
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Full => "full",
            Durability::Normal => "normal",
        })
    }
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user {0} already exists")]
    DuplicateUser(String),
    #[error("no such user: {0}")]
    NoSuchUser(String),
    #[error("cannot open database {path}: {reason}")]
    Open {
        path: String,
        reason: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("database migration failed: {0}")]
    Migrate(Box<dyn std::error::Error + Send + Sync>),
    // The inner error is shown in the message and deliberately not chained as a source:
    // sqlx's errors repeat their own source, which would print the cause three times.
    #[error("database error: {0}")]
    Database(Box<dyn std::error::Error + Send + Sync>),
    #[error("the message writer has stopped")]
    WriterGone,
    /// The membership rules refused a change or a send: a fact for the front end to put
    /// into words (the text here is for logs only).
    #[error("refused by the room rules: {0:?}")]
    Refused(Refusal),
    /// Another live node of the cluster serves a different TLS key.
    #[error(
        "node {} of this cluster serves the key {}: every node must serve the same key \
         (give each the same --tls-cert and --tls-key)", .0.node, .0.fingerprint
    )]
    KeyConflict(KeyConflict),
}

impl From<Refusal> for StoreError {
    fn from(refusal: Refusal) -> Self {
        StoreError::Refused(refusal)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(Box::new(e))
    }
}

/// Called with `(user, conversation, upto)` when another node of a cluster moved a user's
/// read marker, so this node can tell that user's connections (see
/// [`Store::on_remote_read_marker`]).
pub type ReadMarkerHook = Box<dyn Fn(UserId, String, MessageId) + Send + Sync>;

/// An account as the admin commands list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserInfo {
    pub name: String,
    pub disabled: bool,
    pub devices: i64,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// What login needs to know about an account.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: UserId,
    pub name: Username,
    /// The PHC string of the argon2id hash.
    pub password_hash: String,
    pub disabled: bool,
}

/// A live (not deleted) account, as a message recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub id: UserId,
    pub name: Username,
    pub disabled: bool,
}

/// A device found by its token.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    pub device_id: DeviceId,
    pub user_id: UserId,
    pub user_name: Username,
    pub cursor: MessageId,
    pub disabled: bool,
}

/// The SQLite backend behind [`Store`]: one database file served by one process. Cheap to
/// clone.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// How every connection is opened (the writer's checkpointer and indexer open more).
    options: SqliteConnectOptions,
    /// The full-text index, a derived database beside this one.
    search: search::SearchIndex,
}

impl SqliteStore {
    /// Opens (creating if needed, with mode 0600) the SQLite database at `path` and applies
    /// pending migrations.
    pub async fn open(path: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        let open_err = |reason: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        create_private_file(path).map_err(|e| open_err(Box::new(e)))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Checkpoints run on a thread of their own while the writer runs (see
            // `checkpoint`), never inside a commit; the last connection to close still
            // checkpoints and removes the log.
            .pragma("wal_autocheckpoint", "0")
            // A multi-row INSERT keeps the original of every page it changes in a statement
            // journal, in case it must undo itself half-way; past 64 KiB that journal spilled
            // into a new temporary file, created, written and deleted in every group commit
            // (half of the writer's pwrite calls). In memory it stays in memory.
            .pragma("temp_store", "memory")
            // Rows cross from SQLite's thread in batches this large: a 1,000-message backlog
            // page is one hand-off, not twenty.
            .row_buffer_size(1024);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| open_err(Box::new(e)))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(Box::new(e)))?;
        let search = search::SearchIndex::open(&options, path).await?;
        Ok(SqliteStore {
            pool,
            options,
            search,
        })
    }

    /// Closes the pool, waiting for connections to finish (checkpointing the WAL).
    pub async fn close(&self) {
        self.search.pool.close().await;
        self.pool.close().await;
    }

    /// Starts the single writer task. `on_commit` is called after every committed batch with
    /// the newly stored messages in id order (never with duplicates).
    pub async fn start_writer(
        &self,
        on_commit: writer::OnCommit,
    ) -> Result<(Writer, tokio::task::JoinHandle<()>), StoreError> {
        writer::start(self.pool.clone(), &self.options, &self.search, on_commit).await
    }

    // ----- accounts -------------------------------------------------------------------

    /// Creates an account.
    pub async fn create_user(
        &self,
        name: &Username,
        password_hash: &str,
    ) -> Result<UserId, StoreError> {
        let result = sqlx::query(
            "INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?) RETURNING id",
        )
        .bind(name.as_str())
        .bind(password_hash)
        .bind(now_micros())
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok(row) => Ok(UserId(row.get(0))),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::DuplicateUser(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Lists accounts that are not deleted, by name.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.name, u.disabled, u.created_at, \
                    (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.id) \
             FROM users u WHERE u.deleted = 0 ORDER BY u.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| UserInfo {
                name: r.get(0),
                disabled: r.get::<i64, _>(1) != 0,
                created_at: format_timestamp(r.get(2)),
                devices: r.get(3),
            })
            .collect())
    }

    /// Replaces a password and ends every session of the account.
    pub async fn set_password(
        &self,
        name: &Username,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        self.change_account(
            name,
            &[
                "UPDATE users SET password_hash = ?2 WHERE id = ?1",
                "DELETE FROM devices WHERE user_id = ?1",
            ],
            Some(password_hash),
        )
        .await
        .map(|_| ())
    }

    /// Disables or re-enables an account. Disabling closes its live connections (through the
    /// auth epoch) but keeps its devices, so re-enabling resumes where they were.
    pub async fn set_disabled(&self, name: &Username, disabled: bool) -> Result<(), StoreError> {
        let sql = if disabled {
            "UPDATE users SET disabled = 1 WHERE id = ?1"
        } else {
            "UPDATE users SET disabled = 0 WHERE id = ?1"
        };
        self.change_account(name, &[sql], None).await.map(|_| ())
    }

    /// Deletes an account: its credentials and devices go, its row stays (marked deleted) so
    /// that other users' history still names it. The name stays reserved.
    pub async fn delete_user(&self, name: &Username) -> Result<(), StoreError> {
        self.change_account(
            name,
            &[
                "UPDATE users SET deleted = 1, disabled = 1, password_hash = NULL WHERE id = ?1",
                "DELETE FROM devices WHERE user_id = ?1",
            ],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Ends every session (device token) of an account; returns how many there were.
    pub async fn revoke_user(&self, name: &Username) -> Result<u64, StoreError> {
        self.change_account(name, &["DELETE FROM devices WHERE user_id = ?1"], None)
            .await
    }

    /// Runs `statements` (with `?1` = the live account's id and `?2` = `value`) in one
    /// transaction that also bumps the auth epoch, so running servers re-check sessions.
    /// Returns the rows changed by the last statement.
    async fn change_account(
        &self,
        name: &Username,
        statements: &[&str],
        value: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let id = live_user_id(&mut tx, name).await?;
        let mut changed = 0;
        for sql in statements {
            changed = sqlx::query(sql)
                .bind(id.get())
                .bind(value)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        bump_epoch(&mut tx).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// The credentials of a live account, if it exists.
    pub async fn credentials(&self, name: &Username) -> Result<Option<Credentials>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, password_hash, disabled FROM users \
             WHERE name = ? AND deleted = 0 AND password_hash IS NOT NULL",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Credentials {
            user_id: UserId(r.get(0)),
            name: Username::from_stored(r.get(1)),
            password_hash: r.get(2),
            disabled: r.get::<i64, _>(3) != 0,
        }))
    }

    /// Finds a live account by name.
    pub async fn find_user(&self, name: &Username) -> Result<Option<UserRef>, StoreError> {
        let row =
            sqlx::query("SELECT id, name, disabled FROM users WHERE name = ? AND deleted = 0")
                .bind(name.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| UserRef {
            id: UserId(r.get(0)),
            name: Username::from_stored(r.get(1)),
            disabled: r.get::<i64, _>(2) != 0,
        }))
    }

    // ----- devices --------------------------------------------------------------------

    /// Registers a new device for a user. Its cursor starts at the highest id any device of
    /// the user has acknowledged, so its first delivery is everything no device has seen yet.
    pub async fn create_device(
        &self,
        user_id: UserId,
        token_hash: &[u8],
        name: &str,
    ) -> Result<DeviceId, StoreError> {
        self.create_device_capped(user_id, token_hash, name, u32::MAX)
            .await?
            .ok_or_else(|| StoreError::Database(format!("no account with id {user_id}").into()))
    }

    /// Registers a device unless the account already has `max` of them (checked in the
    /// same statement, so concurrent logins cannot overshoot). `None` when full.
    pub async fn create_device_capped(
        &self,
        user_id: UserId,
        token_hash: &[u8],
        name: &str,
        max: u32,
    ) -> Result<Option<DeviceId>, StoreError> {
        let now = now_micros();
        let row = sqlx::query(
            "INSERT INTO devices (user_id, token_hash, name, cursor, created_at, last_seen_at) \
             SELECT id, ?, ?, acked_upto, ?, ? FROM users WHERE id = ? \
             AND (SELECT COUNT(*) FROM devices WHERE user_id = ?) < ? RETURNING id",
        )
        .bind(token_hash)
        .bind(name)
        .bind(now)
        .bind(now)
        .bind(user_id.get())
        .bind(user_id.get())
        .bind(i64::from(max))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| DeviceId(r.get(0))))
    }

    /// Finds the device a token belongs to (the token's hash, that is).
    pub async fn device_by_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT d.id, d.user_id, u.name, d.cursor, u.disabled FROM devices d \
             JOIN users u ON u.id = d.user_id WHERE d.token_hash = ? AND u.deleted = 0",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let record = DeviceRecord {
            device_id: DeviceId(r.get(0)),
            user_id: UserId(r.get(1)),
            user_name: Username::from_stored(r.get(2)),
            cursor: MessageId(r.get(3)),
            disabled: r.get::<i64, _>(4) != 0,
        };
        sqlx::query("UPDATE devices SET last_seen_at = ? WHERE id = ?")
            .bind(now_micros())
            .bind(record.device_id.get())
            .execute(&self.pool)
            .await?;
        Ok(Some(record))
    }

    /// The current cursor of a device.
    pub async fn device_cursor(
        &self,
        device_id: DeviceId,
    ) -> Result<Option<MessageId>, StoreError> {
        let row = sqlx::query("SELECT cursor FROM devices WHERE id = ?")
            .bind(device_id.get())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| MessageId(r.get(0))))
    }

    /// Deletes one device (logout).
    pub async fn delete_device(&self, device_id: DeviceId) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM devices WHERE id = ?")
            .bind(device_id.get())
            .execute(&mut *tx)
            .await?;
        bump_epoch(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Of the given device ids, those that still exist and whose account is enabled.
    pub async fn valid_devices(&self, ids: &[DeviceId]) -> Result<HashSet<DeviceId>, StoreError> {
        let mut valid = HashSet::new();
        for chunk in ids.chunks(500) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT d.id FROM devices d JOIN users u ON u.id = d.user_id \
                 WHERE u.disabled = 0 AND u.deleted = 0 AND d.id IN (",
            );
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(id.get());
            }
            q.push(")");
            for row in q.build().fetch_all(&self.pool).await? {
                valid.insert(DeviceId(row.get(0)));
            }
        }
        Ok(valid)
    }

    /// The counter bumped by every change that can end sessions.
    pub async fn auth_epoch(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'auth_epoch'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    /// Number of stored messages (for tests, the bench and admin output).
    pub async fn message_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM messages")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    /// Runs `PRAGMA integrity_check`; returns its first line ("ok" when sound).
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        let row = sqlx::query("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }
}

async fn live_user_id(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    name: &Username,
) -> Result<UserId, StoreError> {
    let row = sqlx::query("SELECT id FROM users WHERE name = ? AND deleted = 0")
        .bind(name.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| UserId(r.get(0)))
        .ok_or_else(|| StoreError::NoSuchUser(name.to_string()))
}

async fn bump_epoch(tx: &mut sqlx::Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    sqlx::query("UPDATE meta SET value = value + 1 WHERE key = 'auth_epoch'")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Runs `task` on a thread of its own named `name`, with a single-threaded runtime and the
/// caller's log subscriber. The writer and the checkpointer live there: on the shared
/// runtime every wake-up of theirs would queue behind hundreds of busy sessions.
fn spawn_thread(
    name: &str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let logging = tracing::dispatcher::get_default(|d| d.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _logging = tracing::dispatcher::set_default(&logging);
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(task),
                Err(e) => tracing::error!(error = %e, "cannot start a runtime for a store thread"),
            }
        })
        .map_err(|e| StoreError::Database(format!("cannot start thread {name}: {e}").into()))
}

/// A store thread that runs until told to stop: [`StoppableThread::stop`] (or dropping it)
/// signals its task and waits for the thread to end.
pub(crate) struct StoppableThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StoppableThread {
    /// Starts `task` (given the stop signal) on a thread of its own, as [`spawn_thread`].
    fn spawn<F>(
        name: &str,
        task: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F,
    ) -> Result<StoppableThread, StoreError>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = spawn_thread(name, task(stopped))?;
        Ok(StoppableThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Signals the task and waits for its thread.
    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StoppableThread {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Microseconds since the Unix epoch, from the system clock.
pub(crate) fn now_micros() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}

/// Creates the database file with mode 0600 if it does not exist yet, so the SQLite file
/// (and its -wal/-shm companions, which SQLite creates with the same mode) are private.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
