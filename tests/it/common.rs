//! Test harness: a real server in-process on 127.0.0.1:0 with a temporary directory, real
//! TLS, and the real client library, on the backend of the test binary (`crate::BACKEND`):
//! target `it` runs the suite on SQLite, `it_pg` the same tests on PostgreSQL.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chat_svc::auth::Hasher;
use chat_svc::client::{ClientError, Connection, Event, ServerAddr};
use chat_svc::protocol::{Message, Secret, Username};
use chat_svc::server::{Limits, Listeners, Server, ServerOptions};
use chat_svc::store::{DbTarget, Durability, Store};
use chat_svc::tls::Fingerprint;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The password every test user gets.
pub const PASSWORD: &str = "correct-horse-battery";

/// The database backend a test binary runs the suite on: its root declares
/// `pub const BACKEND: common::Backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in each test's directory.
    Sqlite,
    /// A fresh database of the private PostgreSQL cluster (module `pg`) for each test.
    Postgres,
}

/// For a test about SQLite itself (`why`: the file lock, WAL, the file's integrity, …):
/// true, after one line saying it is skipped, when this run is on PostgreSQL.
pub fn sqlite_only(why: &str) -> bool {
    if crate::BACKEND == Backend::Sqlite {
        return false;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    // Straight to stderr: the test harness captures eprintln!.
    let _ = writeln!(std::io::stderr(), "{test}: skipped on PostgreSQL: {why}");
    true
}

/// A test directory's database: its target and the `--db` argument that names it.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub target: DbTarget,
    /// For `chatd --db` (a PostgreSQL URL includes the password).
    pub arg: String,
}

/// The database that belongs to a test directory, the same one at every call: on SQLite the
/// file `DIR/chatd.db`; on PostgreSQL a fresh database of the private cluster, created at
/// the first call for `dir` (nothing is written into `dir`). When PostgreSQL tests are
/// skipped (no server binaries, see module `pg`) this ends the test process, successfully:
/// every test of the PostgreSQL run needs a database.
pub fn dir_db(dir: &Path) -> TestDb {
    match crate::BACKEND {
        Backend::Sqlite => {
            let path = dir.join("chatd.db");
            TestDb {
                arg: path.to_str().expect("a UTF-8 temporary path").to_owned(),
                target: DbTarget::Sqlite(path),
            }
        }
        Backend::Postgres => {
            static DATABASES: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);
            let mut databases = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
            let url = databases
                .get_or_insert_with(HashMap::new)
                .entry(dir.to_path_buf())
                .or_insert_with(|| match crate::pg::fresh_pg_database_blocking() {
                    Some(db) => db.url,
                    None => std::process::exit(0),
                })
                .clone();
            TestDb {
                target: url.parse().expect("the test cluster's URL parses"),
                arg: url,
            }
        }
    }
}

/// A running in-process server.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub pin: Fingerprint,
    pub limits: Limits,
    pub reloader: chat_svc::server::TlsReloader,
    /// The IRC-over-TLS listener, when started with [`TestServer::start_irc`].
    pub irc_tls: Option<SocketAddr>,
    /// The plaintext (loopback) IRC listener, likewise.
    pub irc_plain: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Options for a test server over `dir` (its certificate) and the database of `dir`.
pub fn options(dir: &Path, limits: Limits) -> ServerOptions {
    ServerOptions {
        hash_parallelism: 2,
        db: dir_db(dir).target,
        ..ServerOptions::in_dir(dir, Durability::Full, limits)
    }
}

/// Limits for tests: revocations noticed quickly.
pub fn test_limits() -> Limits {
    Limits {
        revocation_poll: Duration::from_millis(100),
        // Tests send thousands of messages as fast as they can; the rate limit has its own test.
        send_rate_per_sec: 1_000_000,
        send_burst: 1_000_000,
        ..Limits::default()
    }
}

impl TestServer {
    /// Starts a server on a fresh temporary directory.
    pub async fn start() -> TestServer {
        Self::start_with(test_limits()).await
    }

    /// Starts a server with the given limits.
    pub async fn start_with(limits: Limits) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, limits, None).await
    }

    /// Starts a server that also serves IRC, over TLS and in plaintext, on 127.0.0.1.
    pub async fn start_irc(limits: Limits) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_full(dir, limits, None, true).await
    }

    /// Starts a server over an existing directory (a restart), optionally on a given address.
    pub async fn start_in(
        dir: tempfile::TempDir,
        limits: Limits,
        addr: Option<SocketAddr>,
    ) -> TestServer {
        Self::start_full(dir, limits, addr, false).await
    }

    async fn start_full(
        dir: tempfile::TempDir,
        limits: Limits,
        addr: Option<SocketAddr>,
        irc: bool,
    ) -> TestServer {
        let server = start_server(&options(dir.path(), limits.clone())).await;
        let listener = TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listeners = Listeners::native(listener);
        if irc {
            listeners.irc = Some(TcpListener::bind("127.0.0.1:0").await.unwrap());
            listeners.irc_plain = Some(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let local = |l: &Option<TcpListener>| l.as_ref().map(|l| l.local_addr().unwrap());
        let (irc_tls, irc_plain) = (local(&listeners.irc), local(&listeners.irc_plain));
        let pin = server.fingerprint();
        let reloader = server.tls_reloader();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run_with(listeners, shutdown.clone()));
        TestServer {
            dir,
            addr,
            pin,
            limits,
            reloader,
            irc_tls,
            irc_plain,
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the server gracefully and returns its directory (for a restart).
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// Restarts the server on the same directory and port.
    pub async fn restart(self) -> TestServer {
        let addr = self.addr;
        let limits = self.limits.clone();
        let dir = self.stop().await;
        TestServer::start_in(dir, limits, Some(addr)).await
    }

    pub fn server_addr(&self) -> ServerAddr {
        self.addr.into()
    }

    /// The server's database (it stays the same across restarts: it belongs to `dir`).
    pub fn db(&self) -> DbTarget {
        dir_db(self.dir.path()).target
    }

    /// The `chatd --db` argument naming the server's database.
    pub fn db_arg(&self) -> String {
        dir_db(self.dir.path()).arg
    }

    /// Opens the server's database the way the admin commands do.
    pub async fn admin(&self) -> Store {
        Store::connect(&self.db(), Durability::Full).await.unwrap()
    }

    /// Creates users with [`PASSWORD`] through the admin path.
    pub async fn add_users(&self, names: &[&str]) {
        let store = self.admin().await;
        let hasher = Hasher::new(2).await.unwrap();
        let hash = hasher.hash(&Secret::new(PASSWORD)).await.unwrap();
        for name in names {
            store
                .create_user(&Username::parse(name).unwrap(), &hash)
                .await
                .unwrap();
        }
        store.close().await;
    }

    /// A connected, hello'd, unauthenticated connection.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.server_addr(), self.pin)
            .await
            .unwrap()
    }

    /// Logs in as a new device; returns the connection and its token.
    pub async fn login(&self, user: &str) -> (Connection, Secret) {
        let conn = self.connect().await;
        let info = conn
            .client
            .login(user, &Secret::new(PASSWORD), "test device")
            .await
            .unwrap();
        (conn, info.token)
    }

    /// Authenticates an existing device by token.
    pub async fn resume(&self, token: &Secret) -> Result<Connection, ClientError> {
        let conn = self.connect().await;
        conn.client.auth(token).await?;
        Ok(conn)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Receives the next event within 10 s.
pub async fn next_event(events: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("timed out waiting for an event")
        .expect("event stream ended")
}

/// Subscribes and collects the backlog up to `caught_up`.
pub async fn drain_backlog(conn: &mut Connection) -> Vec<Message> {
    conn.client.subscribe().await.unwrap();
    let mut got = Vec::new();
    loop {
        match next_event(&mut conn.events).await {
            Event::Message(m) => got.push(m),
            Event::CaughtUp { .. } => return got,
            Event::ReadMarker { .. } => {}
            Event::Closed(r) => panic!("closed while draining: {r:?}"),
        }
    }
}

/// Waits for `n` live messages.
pub async fn take_messages(events: &mut mpsc::Receiver<Event>, n: usize) -> Vec<Message> {
    let mut got = Vec::new();
    while got.len() < n {
        match next_event(events).await {
            Event::Message(m) => got.push(m),
            Event::CaughtUp { .. } | Event::ReadMarker { .. } => {}
            Event::Closed(r) => panic!("closed after {} of {n} messages: {r:?}", got.len()),
        }
    }
    got
}

/// Asserts that no message arrives within `wait`.
pub async fn assert_quiet(events: &mut mpsc::Receiver<Event>, wait: Duration) {
    if let Ok(Some(Event::Message(m))) = tokio::time::timeout(wait, events.recv()).await {
        panic!("unexpected message {m:?}");
    }
}

/// Starts a server. A restart in this process may find the database lock still held for a
/// moment by a child that another test is spawning: a fork shares the lock's open file until
/// the child's exec closes it. Only that case (a holder with this process's pid) is retried.
async fn start_server(options: &chat_svc::server::ServerOptions) -> Server {
    let mut tries = 0;
    loop {
        match Server::start(options).await {
            Ok(server) => return server,
            Err(chat_svc::server::ServerError::Lock(chat_svc::store::LockError::InUse {
                holder,
                ..
            })) if holder.pid == Some(std::process::id()) && tries < 40 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot start the server: {e}"),
        }
    }
}
