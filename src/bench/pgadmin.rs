//! The PostgreSQL cluster behind `--pg`: its admin URL ([`PgAdmin`], never shown with its
//! password), what the bench reads from it before a run ([`PgServer`]: version, durability
//! settings, the right to create databases), and the fresh database each PostgreSQL server
//! the bench starts gets ([`ScratchDb`]: `CREATE DATABASE` under a unique name, dropped after
//! the scenario, and any left behind by a failed scenario dropped at the end of the run).
//!
//! This is the bench's admin path, like the accounts it creates through the store: the
//! servers under load only ever see the scratch database's URL, as `--db` would give it.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor};

use crate::store::{DbTarget, Durability};

/// The admin URL of a PostgreSQL cluster (`postgres://USER@HOST:PORT/DB`), where the bench
/// creates and drops its databases. Shown (`Display`, `Debug`) without its password.
#[derive(Clone)]
pub struct PgAdmin {
    url: url::Url,
    /// The scratch databases created and not yet dropped.
    live: Arc<Mutex<BTreeSet<String>>>,
    next: Arc<AtomicUsize>,
}

impl PartialEq for PgAdmin {
    fn eq(&self, other: &PgAdmin) -> bool {
        self.url == other.url
    }
}

impl FromStr for PgAdmin {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<PgAdmin> {
        if !crate::store::PgTarget::is_postgres(s) {
            bail!("--pg wants a postgres:// URL (postgres://USER@HOST:PORT/DB)");
        }
        // The driver's parser decides what it accepts; neither message shows the URL.
        PgConnectOptions::from_str(s).map_err(|e| anyhow!("--pg: invalid PostgreSQL URL: {e}"))?;
        let url = url::Url::parse(s).map_err(|e| anyhow!("--pg: invalid PostgreSQL URL: {e}"))?;
        if url.host_str().is_none_or(str::is_empty) {
            bail!("--pg: the URL names no host (postgres://USER@HOST:PORT/DB)");
        }
        Ok(PgAdmin {
            url,
            live: Arc::default(),
            next: Arc::default(),
        })
    }
}

impl fmt::Display for PgAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for PgAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgAdmin({self})")
    }
}

/// What the bench read from the cluster before the run.
#[derive(Debug, Clone)]
pub struct PgServer {
    /// `server_version`, such as `15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
    /// `fsync`.
    pub fsync: String,
    /// `synchronous_commit`.
    pub synchronous_commit: String,
    /// `wal_sync_method`.
    pub wal_sync_method: String,
    /// `commit_delay` in microseconds (PostgreSQL's own group commit wait).
    pub commit_delay: String,
}

impl PgServer {
    /// The durability of the bench's PostgreSQL servers as reports state it: `durability`
    /// (`--durability`) and what it means there, [`PgServer::settings`].
    pub fn durability(&self, durability: Durability) -> String {
        format!("{durability}: {}", self.settings(durability))
    }

    /// What the writer's commits get: the server's `fsync` and `synchronous_commit`, the
    /// latter turned off for them by `--durability normal`.
    pub fn settings(&self, durability: Durability) -> String {
        let synchronous_commit = match durability {
            Durability::Full => self.synchronous_commit.as_str(),
            Durability::Normal => "off for the writer's commits",
        };
        format!(
            "postgres fsync {}, synchronous_commit {synchronous_commit}",
            self.fsync
        )
    }

    /// One line for the header.
    pub fn describe(&self, admin: &PgAdmin) -> String {
        format!(
            "PostgreSQL {} at {} (fsync {}, synchronous_commit {}, wal_sync_method {}, \
             commit_delay {}), a fresh database per scenario",
            self.version,
            admin.host_port(),
            self.fsync,
            self.synchronous_commit,
            self.wal_sync_method,
            self.commit_delay
        )
    }
}

impl PgAdmin {
    /// `HOST:PORT` of the cluster.
    pub fn host_port(&self) -> String {
        format!(
            "{}:{}",
            self.url.host_str().unwrap_or_default(),
            self.url.port().unwrap_or(5432)
        )
    }

    /// One admin connection.
    async fn connect(&self) -> Result<PgConnection> {
        crate::tls::install_provider();
        let options = PgConnectOptions::from_str(self.url.as_str())
            .map_err(|e| anyhow!("--pg: invalid PostgreSQL URL: {e}"))?
            .application_name("chatd-bench");
        PgConnection::connect_with(&options)
            .await
            .map_err(|e| anyhow!("cannot connect to PostgreSQL at {self} (--pg): {e}"))
    }

    /// Connects, reads the server's version and durability settings, and checks that the
    /// URL's role may create databases.
    pub async fn probe(&self) -> Result<PgServer> {
        let mut conn = self.connect().await?;
        let (user, may_create): (String, bool) = sqlx::query_as(
            "SELECT current_user::text, rolcreatedb OR rolsuper FROM pg_roles \
             WHERE rolname = current_user",
        )
        .fetch_one(&mut conn)
        .await
        .with_context(|| format!("cannot read the role of {self} (--pg)"))?;
        if !may_create {
            bail!(
                "--pg: PostgreSQL role {user} may not create databases (the bench creates a \
                 fresh one per scenario): grant it CREATEDB or use another role"
            );
        }
        let server = PgServer {
            version: self.setting(&mut conn, "server_version").await?,
            fsync: self.setting(&mut conn, "fsync").await?,
            synchronous_commit: self.setting(&mut conn, "synchronous_commit").await?,
            wal_sync_method: self.setting(&mut conn, "wal_sync_method").await?,
            commit_delay: self.setting(&mut conn, "commit_delay").await?,
        };
        conn.close().await.ok();
        Ok(server)
    }

    /// The setting `name` of the server.
    async fn setting(&self, conn: &mut PgConnection, name: &str) -> Result<String> {
        sqlx::query_scalar::<_, String>("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(conn)
            .await
            .with_context(|| format!("cannot read {name} from {self} (--pg)"))
    }

    /// Creates a database under a name no one else uses (`chatd_bench_<pid>_<tag>_<n>`).
    pub async fn create(&self, tag: &str) -> Result<ScratchDb> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let name = format!("chatd_bench_{}_{tag}_{n}", std::process::id());
        let mut conn = self.connect().await?;
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .with_context(|| format!("cannot create database {name} at {self} (--pg)"))?;
        conn.close().await.ok();
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone());
        let mut url = self.url.clone();
        url.set_path(&format!("/{name}"));
        let target = url
            .as_str()
            .parse::<DbTarget>()
            .map_err(|e| anyhow!("the URL of database {name}: {e}"))?;
        Ok(ScratchDb {
            admin: self.clone(),
            name,
            target,
        })
    }

    /// Drops database `name` (terminating any connection still on it).
    async fn drop_database(&self, name: &str) -> Result<()> {
        let mut conn = self.connect().await?;
        conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
            .await
            .with_context(|| format!("cannot drop database {name} at {self} (--pg)"))?;
        conn.close().await.ok();
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }

    /// Drops every scratch database not dropped yet (those of a scenario that failed).
    pub async fn drop_leftovers(&self) -> Result<()> {
        let names: Vec<String> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        for name in names {
            self.drop_database(&name).await?;
        }
        Ok(())
    }
}

/// A database the bench created for one scenario's server(s).
pub struct ScratchDb {
    admin: PgAdmin,
    /// Its name in the cluster.
    pub name: String,
    /// Its URL, as a server's `--db`.
    pub target: DbTarget,
}

impl ScratchDb {
    /// Drops the database; its servers must have stopped. A failure is logged (the run's
    /// figures stand; the name says what to drop by hand).
    pub async fn drop(self) {
        if let Err(e) = self.admin.drop_database(&self.name).await {
            tracing::warn!("{e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_url_is_checked_and_never_shown_with_its_password() {
        let admin: PgAdmin = "postgres://chatd:s3cret@127.0.0.1:55610/postgres"
            .parse()
            .unwrap();
        assert_eq!(
            admin.to_string(),
            "postgres://chatd:***@127.0.0.1:55610/postgres"
        );
        assert!(!format!("{admin:?}").contains("s3cret"));
        assert_eq!(admin.host_port(), "127.0.0.1:55610");
        for bad in ["sqlite:/tmp/x.db", "/tmp/x.db", "mysql://h/db"] {
            let e = bad.parse::<PgAdmin>().unwrap_err().to_string();
            assert!(e.starts_with("--pg wants a postgres:// URL"), "{bad}: {e}");
        }
        let e = "postgres://chatd:s3cret@127.0.0.1:notaport/postgres"
            .parse::<PgAdmin>()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--pg: invalid PostgreSQL URL"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
}
