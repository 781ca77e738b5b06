//! The listeners: bind-and-accept loops that hand each connection to its front end
//! ([`crate::native`], [`crate::irc`]), the start and orderly stop of everything, and the
//! revocation watcher. Nothing below this module imports it.
//!
//! [`Server::start`] locks the database for this process (a second server on the same file
//! is refused, see [`crate::store::DbLock`]), loads or makes the TLS identity, opens the
//! store and starts the message writer; [`Server::run`] takes a bound listener and a shutdown token (so tests bind
//! `127.0.0.1:0` and never sleep), serves until the token is cancelled, then drains: it stops
//! accepting, lets every session finish its in-flight sends and acks, closes connections
//! cleanly, lets the writer commit what is queued, and closes the database.
//! [`Server::run_with`] does the same for several [`Listeners`]: the native one and the IRC
//! gateway's ([`crate::irc`]), under one set of connection limits and one shutdown.

pub use crate::core::Limits;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::proof::ProofKey;
use crate::auth::{Auth, Hasher};
use crate::conn::AddressSlot;
use crate::core::hub::Hub;
use crate::core::ServerState;
use crate::ids::DeviceId;
use crate::irc::IrcServerName;
use crate::protocol::ErrorCode;
use crate::store::{DbLock, DbTarget, Durability, Store};
use crate::tls::{self, Fingerprint, IdentitySource};

/// Everything `Server::start` needs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The database: a SQLite file (locked for this process) or PostgreSQL (shared).
    pub db: DbTarget,
    pub identity: IdentitySource,
    pub durability: Durability,
    pub limits: Limits,
    /// Concurrent argon2 jobs (default: number of CPUs).
    pub hash_parallelism: usize,
    /// The IRC gateway's server name.
    pub irc_server_name: crate::irc::IrcServerName,
}

impl ServerOptions {
    /// A server whose database (`chatd.db`) and generated certificate (`certs/`) live in
    /// `dir`, as the bench and the tests make them; argon2 jobs: one per CPU.
    pub fn in_dir(dir: &std::path::Path, durability: Durability, limits: Limits) -> Self {
        ServerOptions {
            db: DbTarget::Sqlite(dir.join("chatd.db")),
            identity: IdentitySource {
                cert_dir: dir.join("certs"),
                cert_file: None,
                key_file: None,
                extra_names: vec![],
            },
            durability,
            limits,
            hash_parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            irc_server_name: crate::irc::IrcServerName::default(),
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Lock(#[from] crate::store::LockError),
}

/// A started server, ready to serve on a listener.
pub struct Server {
    state: Arc<ServerState>,
    tls: TlsReloader,
    fingerprint: Fingerprint,
    certificate_sha256: tls::CertificateSha256,
    /// The IRC gateway's name for itself.
    irc_server_name: IrcServerName,
    writer_task: tokio::task::JoinHandle<()>,
    /// Held until the database is closed at the end of [`Server::run_with`] (SQLite only:
    /// PostgreSQL is shared by design).
    lock: Option<DbLock>,
}

/// Swaps the server's certificate and key (SIGHUP) without touching live connections: new
/// handshakes use the new identity, established ones keep theirs.
#[derive(Clone)]
pub struct TlsReloader {
    source: IdentitySource,
    current: Arc<std::sync::RwLock<Arc<rustls::ServerConfig>>>,
    /// The SHA-256 of the certificate `current` serves (what IRC clients pin).
    certificate: Arc<std::sync::Mutex<tls::CertificateSha256>>,
    /// On a cluster (PostgreSQL), the key every node serves: a reload may renew the
    /// certificate, never change the key (clients pin it, whichever node they reach).
    cluster_key: Option<Fingerprint>,
}

impl TlsReloader {
    /// Re-reads the certificate and key; on success new connections use them. Returns the
    /// fingerprint now served (unchanged when only the certificate was renewed).
    pub fn reload(&self) -> Result<Fingerprint, tls::TlsError> {
        let identity = self.source.load_or_create()?;
        if let Some(served) = self.cluster_key.filter(|k| *k != identity.fingerprint) {
            return Err(tls::TlsError::ClusterKeyChanged {
                served: served.to_string(),
                new: identity.fingerprint.to_string(),
            });
        }
        let config = tls::server_config(&identity)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        *self.certificate.lock().unwrap_or_else(|p| p.into_inner()) = identity.certificate_sha256;
        Ok(identity.fingerprint)
    }

    /// The SHA-256 of the certificate new connections get now: after a reload, the new
    /// one's (what an operator tells IRC clients to pin).
    pub fn certificate_sha256(&self) -> tls::CertificateSha256 {
        *self.certificate.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

impl Server {
    /// Locks the database for this process, loads or creates the certificate, opens the
    /// database (migrating it), starts the writer. Fails with [`ServerError::Lock`] when
    /// another server holds the database, before creating anything.
    pub async fn start(options: &ServerOptions) -> Result<Server, ServerError> {
        tls::install_provider();
        let lock = match options.db.sqlite_path() {
            Some(path) => Some(DbLock::acquire(path)?),
            None => None,
        };
        let identity = options.identity.load_or_create()?;
        let tls = tls::server_config(&identity)?;
        let store = Store::connect(&options.db, options.durability).await?;
        // Every node of a PostgreSQL cluster must serve the same key (clients pin it).
        let node = node_name();
        if let Err(e) = store
            .register_node(&node, &identity.fingerprint.to_string())
            .await
        {
            store.close().await;
            return Err(e.into());
        }
        let hasher = Hasher::new(options.hash_parallelism).await?;
        let proof_key = ProofKey::new(store.login_proof_key().await?);
        let hub = Arc::new(Hub::default());
        let fanout = Arc::clone(&hub);
        // A read marker moved through another node is told to this node's connections of
        // that user (its own node told the connections there).
        let markers = Arc::clone(&hub);
        store.on_remote_read_marker(Box::new(move |user, conversation, upto| {
            markers.notify_user(user, 0, crate::core::hub::ReadMarker { conversation, upto })
        }));
        let (writer, writer_task) = store
            .start_writer(Box::new(move |batch| fanout.deliver(batch)))
            .await?;
        let auth = Auth::new(store.clone(), hasher, options.limits.login, proof_key);
        let state = ServerState::new(store, auth, writer, hub, options.limits.clone());
        Ok(Server {
            state: Arc::new(state),
            irc_server_name: options.irc_server_name.clone(),
            tls: TlsReloader {
                source: options.identity.clone(),
                current: Arc::new(std::sync::RwLock::new(tls)),
                certificate: Arc::new(std::sync::Mutex::new(identity.certificate_sha256)),
                cluster_key: (options.db.sqlite_path().is_none()).then_some(identity.fingerprint),
            },
            fingerprint: identity.fingerprint,
            certificate_sha256: identity.certificate_sha256,
            writer_task,
            lock,
        })
    }

    /// The pin clients should use.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The SHA-256 of the leaf certificate served at start: what IRC clients pin (WeeChat's
    /// `tls_fingerprint`, irssi's `tls_pinned_cert`), unlike [`Server::fingerprint`].
    pub fn certificate_sha256(&self) -> tls::CertificateSha256 {
        self.certificate_sha256
    }

    /// A handle that reloads the certificate and key (for SIGHUP).
    pub fn tls_reloader(&self) -> TlsReloader {
        self.tls.clone()
    }

    /// Serves connections on `listener` until `shutdown` is cancelled, then drains and
    /// closes everything. Returns once the database is closed.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) {
        self.run_with(Listeners::native(listener), shutdown).await
    }

    /// Like [`Server::run`], serving the native protocol and, when given, the IRC gateway
    /// ([`crate::irc`]) on its own listeners, all on the same state, connection limits and
    /// shutdown.
    pub async fn run_with(self, listeners: Listeners, shutdown: CancellationToken) {
        let addrs: Vec<std::net::SocketAddr> = [
            Some(&listeners.native),
            listeners.irc.as_ref(),
            listeners.irc_plain.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|l| l.local_addr().ok())
        .collect();
        if let Some(Err(e)) = self.lock.as_ref().map(|l| l.record_listening(&addrs)) {
            tracing::warn!(error = %e, "cannot record the listening addresses in the lock file");
        }
        let tracker = TaskTracker::new();
        let slots = Slots {
            per_address: Arc::default(),
            connections: Arc::new(Semaphore::new(self.state.limits.max_connections)),
        };
        let watcher = tokio::spawn(watch_revocations(Arc::clone(&self.state), shutdown.clone()));
        let accept = |listener: Option<TcpListener>, kind: Protocol| {
            let cx = Accept {
                state: Arc::clone(&self.state),
                tls: self.tls.clone(),
                shutdown: shutdown.clone(),
                tracker: tracker.clone(),
                slots: slots.clone(),
                irc_server_name: self.irc_server_name.clone(),
            };
            accept_loop(listener, kind, cx)
        };
        tokio::join!(
            accept(Some(listeners.native), Protocol::Native),
            accept(listeners.irc, Protocol::IrcTls),
            accept(listeners.irc_plain, Protocol::IrcPlain),
        );
        tracker.close();
        let grace = self.state.limits.shutdown_grace + Duration::from_secs(2);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("some connections did not close within the shutdown grace period");
        }
        let _ = watcher.await;
        let store = self.state.store.clone();
        // Dropping the last state handle drops the last writer handle: the writer commits
        // what is queued and exits.
        drop(self.state);
        if tokio::time::timeout(Duration::from_secs(30), self.writer_task)
            .await
            .is_err()
        {
            tracing::warn!("message writer did not stop within 30 s");
        }
        store.close().await;
        // Only now may another server open the database.
        drop(self.lock);
        tracing::info!("server stopped");
    }
}

/// This server's name among the nodes of a cluster: `host:pid`, and `host:pid#n` for the
/// n-th server of one process (the bench and the tests run several).
fn node_name() -> String {
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = format!(
        "{}:{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    );
    if n == 0 {
        base
    } else {
        format!("{base}#{}", n + 1)
    }
}

/// The listeners [`Server::run_with`] serves.
pub struct Listeners {
    /// The native protocol (TLS 1.3, JSON frames).
    pub native: TcpListener,
    /// IRC over TLS with the server's certificate.
    pub irc: Option<TcpListener>,
    /// Plaintext IRC; served only when bound to a loopback address.
    pub irc_plain: Option<TcpListener>,
}

impl Listeners {
    /// The native listener alone.
    pub fn native(listener: TcpListener) -> Self {
        Listeners {
            native: listener,
            irc: None,
            irc_plain: None,
        }
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Native,
    IrcTls,
    IrcPlain,
}

/// Connection limits shared by every listener.
#[derive(Clone)]
struct Slots {
    per_address: Arc<Mutex<HashMap<String, usize>>>,
    connections: Arc<Semaphore>,
}

/// Accepts connections on one listener until shutdown, within the shared limits.
/// What every accept loop shares.
struct Accept {
    state: Arc<ServerState>,
    tls: TlsReloader,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    slots: Slots,
    irc_server_name: IrcServerName,
}

async fn accept_loop(listener: Option<TcpListener>, kind: Protocol, cx: Accept) {
    let Accept {
        state,
        tls,
        shutdown,
        tracker,
        slots,
        irc_server_name,
    } = cx;
    let Some(listener) = listener else { return };
    if kind == Protocol::IrcPlain && !listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
        tracing::error!("plaintext IRC is served only on a loopback address; not serving it");
        return;
    }
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots.connections).try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; refusing");
            drop(tcp);
            continue;
        };
        let Some(slot) = AddressSlot::take(
            &slots.per_address,
            peer.ip(),
            state.limits.max_connections_per_address,
        ) else {
            tracing::warn!(%peer, "per-address connection limit reached; refusing");
            drop(tcp);
            continue;
        };
        let (state, shutdown, held) = (Arc::clone(&state), shutdown.clone(), (permit, slot));
        match kind {
            Protocol::Native => tracker.spawn(crate::native::session::run(
                state,
                tls.acceptor(),
                tcp,
                peer,
                shutdown,
                held,
            )),
            Protocol::IrcTls => tracker.spawn(crate::irc::serve_tls(
                state,
                irc_server_name.clone(),
                tls.acceptor(),
                tcp,
                peer,
                shutdown,
                held,
            )),
            Protocol::IrcPlain => tracker.spawn(crate::irc::serve_plain(
                state,
                irc_server_name.clone(),
                tcp,
                peer,
                shutdown,
                held,
            )),
        };
    }
}

/// Polls the auth epoch that admin commands bump, and closes connections whose device was
/// revoked or whose account was disabled or deleted.
async fn watch_revocations(state: Arc<ServerState>, shutdown: CancellationToken) {
    let mut epoch = state.store.auth_epoch().await.unwrap_or(0);
    let mut tick = tokio::time::interval(state.limits.revocation_poll);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = match state.store.auth_epoch().await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read auth epoch");
                continue;
            }
        };
        if now == epoch {
            continue;
        }
        epoch = now;
        state.lock_users().clear();
        state.lock_rooms().clear();
        // An operator may have deleted a room: the writer re-reads memberships.
        if let Err(e) = state.writer.reload_rooms().await {
            tracing::warn!(error = %e, "cannot reload rooms after an operator change");
        }
        let connections = state.hub.connections();
        let devices: Vec<DeviceId> = connections.iter().map(|(_, d)| *d).collect();
        let valid = match state.store.valid_devices(&devices).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check sessions after an account change");
                continue;
            }
        };
        for (conn, device) in connections {
            if !valid.contains(&device) {
                tracing::info!(conn, device = device.get(), "closing revoked session");
                state.hub.kick(conn, ErrorCode::SessionRevoked);
            }
        }
    }
}
