//! The server a scenario drives: in-process (on a temporary SQLite file, or on a scratch
//! PostgreSQL database, one node or several), a child `chatd serve`, or an existing one; and
//! the admin path that creates the scenario's accounts in its database.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::client::{Connection, ServerAddr};
use crate::protocol::{Secret, Username};
use crate::server::{Limits, Server, ServerOptions};
use crate::store::{DbTarget, Durability, Store};
use crate::tls::Fingerprint;

use super::pgadmin::ScratchDb;

/// A server under load.
pub(crate) struct Target {
    pub addr: ServerAddr,
    pub pin: Fingerprint,
    db: DbTarget,
    kind: Kind,
    /// The PostgreSQL database made for this server (and its `others`), dropped when it
    /// stops.
    scratch: Option<ScratchDb>,
    /// The other nodes of an in-process cluster, on the same database.
    others: Vec<Target>,
}

enum Kind {
    InProcess {
        /// The certificate (and SQLite file); shared by the nodes of a cluster.
        _dir: Arc<tempfile::TempDir>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    },
    Child {
        _dir: tempfile::TempDir,
        child: tokio::process::Child,
    },
    External {
        pid: Option<u32>,
    },
}

/// A `chatd serve` child process over a temporary directory, with where it said it listens.
pub(crate) struct ChildServer {
    pub dir: tempfile::TempDir,
    pub child: tokio::process::Child,
    pub db: PathBuf,
    pub addr: ServerAddr,
    pub pin: Fingerprint,
    /// Its plaintext IRC listener, when asked for.
    pub irc: Option<std::net::SocketAddr>,
}

impl ChildServer {
    /// Runs `exe serve` on `127.0.0.1:0` (and a plaintext IRC listener there if `irc`) with
    /// `config` as its config file; its logs are discarded. Waits (≤ 30 s) until it has
    /// printed its addresses and fingerprint.
    pub async fn spawn(
        exe: &Path,
        durability: Durability,
        config: &str,
        irc: bool,
    ) -> Result<ChildServer> {
        let dir = tempfile::Builder::new()
            .prefix("chatd-bench-")
            .tempdir()
            .context("cannot make a temporary directory")?;
        let config_path = dir.path().join("chatd.toml");
        std::fs::write(&config_path, config).context("cannot write the child server's config")?;
        let db = dir.path().join("chatd.db");
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("--config")
            .arg(&config_path)
            .arg("--db")
            .arg(&db)
            .arg("--cert-dir")
            .arg(dir.path().join("certs"))
            .args(["serve", "--listen", "127.0.0.1:0", "--durability"])
            .arg(durability.to_string());
        if irc {
            command.args(["--irc-plain-listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .env_remove("CHATD_TLS_CERT")
            .env_remove("CHATD_TLS_KEY")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} serve", exe.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("no stdout from the child server")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut pin, mut irc_addr) = (None, None, None);
        let read = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.strip_prefix("chatd listening on ") {
                    addr = a.trim().parse::<ServerAddr>().ok();
                } else if let Some(f) = line.strip_prefix("fingerprint ") {
                    pin = f.trim().parse::<Fingerprint>().ok();
                } else if let Some(a) = line.strip_prefix("plaintext IRC on ") {
                    irc_addr = a.trim().parse::<std::net::SocketAddr>().ok();
                }
                if addr.is_some() && pin.is_some() && (irc_addr.is_some() || !irc) {
                    break;
                }
            }
            Ok::<_, std::io::Error>(())
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .context("the child server did not start within 30 s")??;
        let (Some(addr), Some(pin)) = (addr, pin) else {
            bail!("the child server exited before saying where it listens");
        };
        if irc && irc_addr.is_none() {
            bail!("the child server exited before saying where its IRC listener is");
        }
        Ok(ChildServer {
            dir,
            child,
            db,
            addr,
            pin,
            irc: irc_addr,
        })
    }
}

/// An account the bench made, with a device token when one was asked for.
pub(crate) struct Account {
    pub name: String,
    pub token: Option<Secret>,
}

/// A sender account and a recipient account, each with a device token.
pub(crate) struct TokenPair {
    pub sender_token: Secret,
    /// The recipient's name, where the sender sends.
    pub recipient: String,
    pub recipient_token: Secret,
}

/// The names of `n` sender/recipient pairs: `<prefix>-s<i>` and `<prefix>-r<i>`.
pub(crate) fn pair_names(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("{prefix}-s{i}"), format!("{prefix}-r{i}")))
        .collect()
}

impl Target {
    /// Starts a server in this process on `127.0.0.1:0` over a temporary directory: its
    /// database a SQLite file there, or `scratch` (PostgreSQL, dropped when it stops).
    pub async fn in_process(
        durability: Durability,
        limits: Option<Limits>,
        scratch: Option<ScratchDb>,
    ) -> Result<Target> {
        let dir = Arc::new(temp_dir()?);
        let db = scratch.as_ref().map(|s| s.target.clone());
        let mut target = Target::start_node(&dir, durability, limits, db).await?;
        target.scratch = scratch;
        Ok(target)
    }

    /// Starts `n` (≥ 1) servers in this process on the PostgreSQL database `scratch` (the
    /// nodes of a cluster), each on its own `127.0.0.1:0` listener with its own writer and
    /// tail, all serving the same key (one certificate directory). The target is the first
    /// node; [`Target::node`] gives the others. Stopping it stops them all, then drops the
    /// database.
    pub async fn in_process_cluster(
        durability: Durability,
        scratch: ScratchDb,
        n: usize,
    ) -> Result<Target> {
        let dir = Arc::new(temp_dir()?);
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let db = Some(scratch.target.clone());
            match Target::start_node(&dir, durability, None, db).await {
                Ok(node) => nodes.push(node),
                Err(e) => {
                    for node in nodes {
                        node.stop().await;
                    }
                    scratch.drop().await;
                    return Err(e);
                }
            }
        }
        let mut first = nodes.remove(0);
        first.others = nodes;
        first.scratch = Some(scratch);
        Ok(first)
    }

    /// Node `i` of a cluster (0 is this one); `None` past the last.
    pub fn node(&self, i: usize) -> Option<&Target> {
        match i {
            0 => Some(self),
            i => self.others.get(i - 1),
        }
    }

    /// One in-process server over `dir` (its certificate; its SQLite file unless `db`).
    async fn start_node(
        dir: &Arc<tempfile::TempDir>,
        durability: Durability,
        limits: Option<Limits>,
        db: Option<DbTarget>,
    ) -> Result<Target> {
        let mut options = ServerOptions::in_dir(
            dir.path(),
            durability,
            limits.unwrap_or_else(capacity_limits),
        );
        if let Some(db) = db {
            options.db = db;
        }
        let server = Server::start(&options).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on 127.0.0.1")?;
        let addr = listener.local_addr()?.into();
        let pin = server.fingerprint();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(listener, shutdown.clone()));
        Ok(Target {
            addr,
            pin,
            db: options.db,
            kind: Kind::InProcess {
                _dir: Arc::clone(dir),
                shutdown,
                task,
            },
            scratch: None,
            others: Vec::new(),
        })
    }

    /// Runs `exe serve` as a child process on `127.0.0.1:0` over a temporary directory,
    /// allowing `max_connections`; its logs are discarded.
    pub async fn child(
        exe: &Path,
        durability: Durability,
        max_connections: usize,
    ) -> Result<Target> {
        let config = format!("max_connections = {}\n", max_connections.max(1));
        let c = ChildServer::spawn(exe, durability, &config, false).await?;
        Ok(Target {
            addr: c.addr,
            pin: c.pin,
            db: DbTarget::Sqlite(c.db),
            kind: Kind::Child {
                _dir: c.dir,
                child: c.child,
            },
            scratch: None,
            others: Vec::new(),
        })
    }

    /// A server someone else runs.
    pub fn external(addr: ServerAddr, pin: Fingerprint, db: DbTarget, pid: Option<u32>) -> Target {
        Target {
            addr,
            pin,
            db,
            kind: Kind::External { pid },
            scratch: None,
            others: Vec::new(),
        }
    }

    /// Where the server runs, as reports state it.
    pub fn describe(&self) -> String {
        if !self.others.is_empty() {
            let addrs: Vec<String> = std::iter::once(self)
                .chain(&self.others)
                .map(|n| n.addr.to_string())
                .collect();
            return format!(
                "{} in-process nodes on {}, one PostgreSQL database",
                addrs.len(),
                addrs.join(" and ")
            );
        }
        match self.kind {
            Kind::InProcess { .. } => format!("in-process on {}", self.addr),
            Kind::Child { .. } => format!("child process on {}", self.addr),
            Kind::External { .. } => format!("external on {}", self.addr),
        }
    }

    /// True when the server runs in the bench's own process.
    pub fn is_in_process(&self) -> bool {
        matches!(self.kind, Kind::InProcess { .. })
    }

    /// The server's resident memory in KiB, when it can be read: this process's when the
    /// server is in-process (so it includes the bench's clients), the child's, or the
    /// `--server-pid`'s.
    pub fn rss_kib(&self) -> Option<u64> {
        let path = match &self.kind {
            Kind::InProcess { .. } => "/proc/self/status".to_string(),
            Kind::Child { child, .. } => format!("/proc/{}/status", child.id()?),
            Kind::External { pid } => format!("/proc/{}/status", (*pid)?),
        };
        let status = std::fs::read_to_string(path).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Creates `names` through the admin path (the server's database) with the bench
    /// password, and a device token for each when `tokens` is set, so that connections
    /// can authenticate without paying for argon2.
    pub async fn create_accounts(
        &self,
        names: &[String],
        password_hash: &str,
        tokens: bool,
    ) -> Result<Vec<Account>> {
        // The admin connection's own durability only: the server keeps its setting.
        let store = Store::connect(&self.db, Durability::Normal).await?;
        let made = create_accounts(&store, names, password_hash, tokens).await;
        store.close().await;
        made
    }

    /// Creates the [`pair_names`] accounts of `n` pairs (sender, recipient, sender, …) with
    /// the bench password and a device token each.
    pub async fn create_pairs(
        &self,
        prefix: &str,
        n: usize,
        password_hash: &str,
    ) -> Result<Vec<TokenPair>> {
        let names: Vec<String> = pair_names(prefix, n)
            .into_iter()
            .flat_map(|(s, r)| [s, r])
            .collect();
        let mut accounts = self
            .create_accounts(&names, password_hash, true)
            .await?
            .into_iter();
        let mut pairs = Vec::with_capacity(n);
        while let Some(sender) = accounts.next() {
            let (Some(sender_token), Some(recipient)) = (sender.token, accounts.next()) else {
                bail!("bench accounts were made without tokens");
            };
            let Some(recipient_token) = recipient.token else {
                bail!("bench accounts were made without tokens");
            };
            pairs.push(TokenPair {
                sender_token,
                recipient: recipient.name,
                recipient_token,
            });
        }
        Ok(pairs)
    }

    /// The address and pin, for tasks that connect on their own.
    pub fn connect_spec(&self) -> (ServerAddr, Fingerprint) {
        (self.addr.clone(), self.pin)
    }

    /// Opens an unauthenticated connection.
    pub async fn connect(&self) -> Result<Connection> {
        Ok(Connection::connect(&self.addr, self.pin).await?)
    }

    /// Opens a connection authenticated with a device token.
    pub async fn connect_token(&self, token: &Secret) -> Result<Connection> {
        let conn = self.connect().await?;
        conn.client.auth(token).await?;
        Ok(conn)
    }

    /// Stops a server the bench started (the other nodes of a cluster first), then drops
    /// its scratch database.
    pub fn stop(self) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(self.stop_all())
    }

    async fn stop_all(self) {
        for node in self.others {
            node.stop().await;
        }
        match self.kind {
            Kind::InProcess { shutdown, task, .. } => {
                shutdown.cancel();
                let _ = task.await;
            }
            Kind::Child { mut child, .. } => {
                let _ = child.kill().await;
            }
            Kind::External { .. } => {}
        }
        if let Some(scratch) = self.scratch {
            scratch.drop().await;
        }
    }
}

/// A new temporary directory for an in-process server.
fn temp_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("chatd-bench-")
        .tempdir()
        .context("cannot make a temporary directory")
}

/// The server's default limits, except that a connection's send rate is not capped: the
/// bench measures what the server can carry, not its per-connection policy (500 sends/s,
/// which would cap 50 pairs at 25,000 messages/s).
pub(crate) fn capacity_limits() -> Limits {
    Limits {
        send_rate_per_sec: u32::MAX,
        send_burst: u32::MAX,
        ..Limits::default()
    }
}

async fn create_accounts(
    store: &Store,
    names: &[String],
    password_hash: &str,
    tokens: bool,
) -> Result<Vec<Account>> {
    let mut accounts = Vec::with_capacity(names.len());
    for name in names {
        let parsed =
            Username::parse(name).with_context(|| format!("invalid bench user name {name:?}"))?;
        let user_id = store.create_user(&parsed, password_hash).await?;
        let token = if tokens {
            let (token, hash) = crate::auth::new_token();
            store.create_device(user_id, &hash, "bench").await?;
            Some(token)
        } else {
            None
        };
        accounts.push(Account {
            name: parsed.as_str().to_string(),
            token,
        });
    }
    Ok(accounts)
}
