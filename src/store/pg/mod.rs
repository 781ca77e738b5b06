//! The PostgreSQL backend behind [`super::Store`]: one database shared by any number of
//! `chatd` nodes (and the admin commands), each node with its own writer task.
//!
//! What differs from SQLite, and why:
//! - **Ids** come from the one row of `id_counter`, taken first (`UPDATE … RETURNING`) by
//!   every transaction that writes messages and held until its COMMIT (module `writer`). A
//!   sequence would not do: a sequence value taken early can commit after a larger one, and a
//!   reader whose cursor passed the larger one would never see it. With the row lock, ids
//!   become visible in id order cluster-wide, a rollback gives its ids back (ids are dense),
//!   and the idempotency lookup of a retried key runs inside the lock, so it is exact across
//!   nodes. Cursor and read-marker moves commute (`GREATEST`) and never take the row.
//! - **Membership**: the counter row also carries `membership_version`, bumped in the same
//!   transaction as every room change; a writer whose room map is older re-reads it (under the
//!   lock) before it checks a send or a change.
//! - **Delivery** (module `tail`): each node tails the messages table by id, woken by its own
//!   writer, by a `LISTEN` doorbell (one `NOTIFY` per commit, its payload the new highest id),
//!   by a timer and by every reconnect of the listener; the local hub gets one ordered input.
//! - **Search**: a table of `tsvector`s with a GIN index, filled after commit by one node's
//!   indexer at a time (module `indexer`); a search also reads the messages the indexer has
//!   not reached yet, in the same snapshot, with one `phraseto_tsquery` per word (module
//!   `messages`).
//! - **The cluster's key** (module `cluster`): each node records the fingerprint of the TLS
//!   key it serves; a node refuses to start with another key than the live nodes present.
//!
//! Nothing outside `store` sees a PostgreSQL type.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

mod accounts;
pub(super) mod body;
mod cluster;
mod indexer;
mod irc;
mod messages;
mod proofs;
mod rooms;
mod tail;
mod writer;

use std::sync::{Arc, Mutex, OnceLock};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{Durability, StoreError};

pub use cluster::KeyConflict;
pub use tail::LISTENER_NAME;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Environment variable naming a file whose first line is the database password, for a
/// URL without one (beside `PGPASSWORD` and `~/.pgpass`, which the driver reads itself).
pub const PASSWORD_FILE_ENV: &str = "CHATD_DB_PASSWORD_FILE";

/// A `postgres://` or `postgresql://` URL. Shown (`Display`, logs, errors) with its password
/// replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    url: String,
}

impl PgTarget {
    /// Whether `s` names PostgreSQL.
    pub fn is_postgres(s: &str) -> bool {
        s.starts_with("postgres://") || s.starts_with("postgresql://")
    }

    /// The driver's options: the URL's, with the password from [`PASSWORD_FILE_ENV`] when the
    /// URL has none (else `PGPASSWORD`, else `~/.pgpass`, as libpq).
    fn connect_options(&self) -> Result<PgConnectOptions, StoreError> {
        let mut options = PgConnectOptions::from_str(&self.url).map_err(|e| self.open_err(e))?;
        let has_password = url::Url::parse(&self.url).is_ok_and(|u| u.password().is_some());
        if !has_password {
            if let Some(file) = std::env::var_os(PASSWORD_FILE_ENV) {
                let text = std::fs::read_to_string(&file).map_err(|e| StoreError::Open {
                    path: format!("{} (password file {})", self, file.to_string_lossy()),
                    reason: Box::new(e),
                })?;
                options = options.password(text.lines().next().unwrap_or("").trim_end());
            }
        }
        Ok(options.application_name("chatd"))
    }

    fn open_err(&self, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Open {
            path: self.to_string(),
            reason: Box::new(e),
        }
    }
}

impl FromStr for PgTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // The driver's own parser decides what is valid; its message never shows the URL.
        PgConnectOptions::from_str(s).map_err(|e| e.to_string())?;
        Ok(PgTarget { url: s.to_owned() })
    }
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.url) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                f.write_str(u.as_str())
            }
            Ok(u) => f.write_str(u.as_str()),
            Err(_) => f.write_str("postgres://(unparsable)"),
        }
    }
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTarget({self})")
    }
}

/// The PostgreSQL backend behind [`super::Store`]. Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    pub(super) pool: PgPool,
    /// How every connection is opened (the writer and the listener open their own).
    pub(super) options: PgConnectOptions,
    /// This node's name in `cluster_nodes`, once registered (module `cluster`).
    node: Arc<Mutex<Option<String>>>,
    /// Tells read-marker notifications of this process from other nodes' (module `tail`).
    token: u64,
    /// Called with every read marker another node moved (module `tail`).
    read_hook: Arc<OnceLock<super::ReadMarkerHook>>,
    /// `Normal` turns `synchronous_commit` off for the writer's connection (module `writer`).
    durability: Durability,
}

impl PostgresStore {
    /// Connects to the database `target` names and applies pending migrations (under the
    /// migrator's advisory lock, so nodes starting together migrate once).
    ///
    /// `durability` applies to the writer's commits: [`Durability::Normal`] turns
    /// PostgreSQL's `synchronous_commit` off for them (a crash of the database host may lose
    /// the last moments of acknowledged messages, never corrupt anything), `Full` keeps the
    /// server's setting (on, by default: every acknowledged message is in the WAL on disk).
    pub async fn open(
        target: &PgTarget,
        durability: Durability,
    ) -> Result<PostgresStore, StoreError> {
        crate::tls::install_provider();
        let options = target.connect_options()?;
        // One connection first: the pool would only say that it timed out, where this says
        // why (refused, unknown host, wrong password, no such database, TLS).
        let first = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
            .await
            .map_err(|e| target.open_err(e))?;
        sqlx::Connection::close(first).await.ok();
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(|e| target.open_err(e))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(Box::new(e)))?;
        Ok(PostgresStore {
            pool,
            options,
            node: Arc::default(),
            token: rand::random(),
            read_hook: Arc::default(),
            durability,
        })
    }

    /// Closes the pool (removing this node's record first), waiting for its connections to
    /// finish.
    pub async fn close(&self) {
        self.unregister_node().await;
        self.pool.close().await;
    }

    /// Sets what to call when another node moves a read marker (once; later calls are
    /// ignored).
    pub fn on_remote_read_marker(&self, hook: super::ReadMarkerHook) {
        let _ = self.read_hook.set(hook);
    }

    /// Starts this node's writer task, its tail and its search indexer (modules `writer`,
    /// `tail`, `indexer`); `on_commit` gets every message stored by any node, in id order,
    /// once.
    pub async fn start_writer(
        &self,
        on_commit: super::writer::OnCommit,
    ) -> Result<(super::Writer, tokio::task::JoinHandle<()>), StoreError> {
        writer::start(self, on_commit).await
    }
}

/// A bool column of a row.
pub(super) fn flag(r: &sqlx::postgres::PgRow, i: usize) -> bool {
    use sqlx::Row;
    r.get::<bool, _>(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_never_shown() {
        let t: PgTarget = "postgres://chat:s3cret@db.example:5433/chat?sslmode=verify-full"
            .parse()
            .unwrap();
        let shown = t.to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("***") && shown.contains("db.example:5433/chat"),
            "{shown}"
        );
        assert!(!format!("{t:?}").contains("s3cret"));
        let plain: PgTarget = "postgresql://chat@db/chat".parse().unwrap();
        assert_eq!(plain.to_string(), "postgresql://chat@db/chat");
    }
}
