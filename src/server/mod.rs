//! The server: accept loop, per-connection sessions (`session`) and the hub (`hub`).
//!
//! [`Server::start`] locks the database for this process (a second server on the same file
//! is refused, see [`crate::store::DbLock`]), loads or makes the TLS identity, opens the
//! store and starts the message writer; [`Server::run`] takes a bound listener and a shutdown token (so tests bind
//! `127.0.0.1:0` and never sleep), serves until the token is cancelled, then drains: it stops
//! accepting, lets every session finish its in-flight sends and acks, closes connections
//! cleanly, lets the writer commit what is queued, and closes the database.
//! [`Server::run_with`] does the same for several [`Listeners`]: the native one and the IRC
//! gateway's ([`crate::irc`]), under one set of connection limits and one shutdown.

pub(crate) mod bucket;
pub mod hub;
pub(crate) mod session;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::proof::ProofKey;
use crate::auth::{Auth, AuthLimits, Hasher};
use crate::protocol::{ErrorCode, RoomName, Username, DEFAULT_MAX_BODY_BYTES};
use crate::store::{DbLock, Durability, RoomRef, Store, UserRef, Writer};
use crate::tls::{self, Fingerprint, IdentitySource};

use hub::Hub;

/// Limits and timeouts, each with its default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message body in bytes.
    pub max_body: usize,
    /// Most simultaneous connections; further ones are closed at once.
    pub max_connections: usize,
    /// Most simultaneous connections from one address (IPv4) or /64 (IPv6); loopback is
    /// exempt, since a local reverse proxy makes every client look like 127.0.0.1.
    pub max_connections_per_address: usize,
    /// Sustained sends (messages and room changes) per second per connection.
    pub send_rate_per_sec: u32,
    /// Sends a connection may burst above the sustained rate before `rate_limited`.
    pub send_burst: u32,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a connection may stay unauthenticated (hello + login/auth).
    pub auth_timeout: Duration,
    /// Time without any frame from the client before the connection is closed. Clients keep
    /// a connection alive with `ping`.
    pub idle_timeout: Duration,
    /// Time allowed for one write to the client.
    pub write_timeout: Duration,
    /// Live pushes queued per connection before it is disconnected as a slow consumer.
    pub live_queue: usize,
    /// Bytes of live pushes queued per connection before it is disconnected as a slow
    /// consumer (bounds what one stalled reader can pin in memory).
    pub live_queue_bytes: usize,
    /// Server-wide login limits: failed-login budget, devices per account.
    pub login: AuthLimits,
    /// Sends and acks in flight per connection before the server stops reading from it.
    pub max_in_flight: usize,
    /// Time allowed for sessions to drain at shutdown.
    pub shutdown_grace: Duration,
    /// How often the server checks for revocations made by admin commands.
    pub revocation_poll: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: DEFAULT_MAX_BODY_BYTES,
            max_connections: 20_000,
            max_connections_per_address: 64,
            send_rate_per_sec: 500,
            send_burst: 1000,
            handshake_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
            live_queue: 4096,
            live_queue_bytes: 8 * 1024 * 1024,
            login: AuthLimits::default(),
            max_in_flight: 1024,
            shutdown_grace: Duration::from_secs(10),
            revocation_poll: Duration::from_millis(500),
        }
    }
}

/// Everything `Server::start` needs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub db: PathBuf,
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
            db: dir.join("chatd.db"),
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

/// State shared by every session.
pub(crate) struct ServerState {
    pub store: Store,
    pub auth: Auth,
    pub writer: Writer,
    pub hub: Arc<Hub>,
    pub limits: Limits,
    /// The IRC gateway's server name.
    pub irc_server_name: crate::irc::IrcServerName,
    /// Recipients looked up recently; cleared whenever accounts change.
    users: Mutex<HashMap<String, UserRef>>,
    /// Rooms looked up recently; cleared whenever a room is deleted.
    rooms: Mutex<HashMap<String, RoomRef>>,
}

impl ServerState {
    /// Registers an authenticated connection with the hub, then re-checks its device: a
    /// revocation that landed between the credential check and the registration was not
    /// seen by the revocation watcher, so it is caught here. `Ok(None)`: the device is no
    /// longer valid (the registration is dropped again).
    pub async fn register_session(
        &self,
        user: &crate::auth::AuthedUser,
    ) -> Result<
        Option<(hub::SessionGuard, tokio::sync::mpsc::Receiver<ErrorCode>)>,
        crate::store::StoreError,
    > {
        let registered = self.hub.register(user.user_id(), user.device_id());
        let device = user.device_id();
        let valid = self.store.valid_devices(&[device]).await?;
        Ok(valid.contains(&device).then_some(registered))
    }

    /// Finds a live account by name, through a small cache.
    pub async fn find_user(
        &self,
        name: &Username,
    ) -> Result<Option<UserRef>, crate::store::StoreError> {
        if let Some(u) = self.lock_users().get(name.as_str()) {
            return Ok(Some(u.clone()));
        }
        let found = self.store.find_user(name).await?;
        if let Some(u) = &found {
            let mut cache = self.lock_users();
            if cache.len() >= 10_000 {
                cache.clear();
            }
            cache.insert(name.as_str().to_string(), u.clone());
        }
        Ok(found)
    }

    /// Finds a live room by name, through a small cache.
    pub async fn find_room(
        &self,
        name: &RoomName,
    ) -> Result<Option<RoomRef>, crate::store::StoreError> {
        if let Some(r) = self.lock_rooms().get(name.as_str()) {
            return Ok(Some(r.clone()));
        }
        let found = self.store.find_room(name).await?;
        if let Some(r) = &found {
            let mut cache = self.lock_rooms();
            if cache.len() >= 10_000 {
                cache.clear();
            }
            cache.insert(name.as_str().to_string(), r.clone());
        }
        Ok(found)
    }

    /// Applies a membership change through the writer. A leave or a deletion may delete the
    /// room, so it leaves the cache at once: the name is free for the very next request.
    /// (The auth epoch the deletion bumps clears the whole cache a moment later too.)
    pub async fn change_room(
        &self,
        change: crate::store::RoomChange,
    ) -> Result<(i64, i64), crate::store::StoreError> {
        let forget = match &change {
            crate::store::RoomChange::Leave { room_id, .. }
            | crate::store::RoomChange::Delete { room_id, .. } => Some(*room_id),
            _ => None,
        };
        let result = self.writer.change_room(change).await;
        if let (Some(id), Ok(_)) = (forget, &result) {
            self.lock_rooms().retain(|_, r| r.id != id);
        }
        result
    }

    fn lock_rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomRef>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_users(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserRef>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A started server, ready to serve on a listener.
pub struct Server {
    state: Arc<ServerState>,
    tls: TlsReloader,
    fingerprint: Fingerprint,
    certificate_sha256: tls::CertificateSha256,
    writer_task: tokio::task::JoinHandle<()>,
    /// Held until the database is closed at the end of [`Server::run_with`].
    lock: DbLock,
}

/// Swaps the server's certificate and key (SIGHUP) without touching live connections: new
/// handshakes use the new identity, established ones keep theirs.
#[derive(Clone)]
pub struct TlsReloader {
    source: IdentitySource,
    current: Arc<std::sync::RwLock<Arc<rustls::ServerConfig>>>,
}

impl TlsReloader {
    /// Re-reads the certificate and key; on success new connections use them. Returns the
    /// fingerprint now served (unchanged when only the certificate was renewed).
    pub fn reload(&self) -> Result<Fingerprint, tls::TlsError> {
        let identity = self.source.load_or_create()?;
        let config = tls::server_config(&identity)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(identity.fingerprint)
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
        let lock = DbLock::acquire(&options.db)?;
        let identity = options.identity.load_or_create()?;
        let tls = tls::server_config(&identity)?;
        let store = Store::open(&options.db, options.durability).await?;
        let hasher = Hasher::new(options.hash_parallelism).await?;
        let proof_key = ProofKey::new(store.login_proof_key().await?);
        let hub = Arc::new(Hub::default());
        let fanout = Arc::clone(&hub);
        let (writer, writer_task) = store
            .start_writer(Box::new(move |batch| fanout.deliver(batch)))
            .await?;
        let state = Arc::new(ServerState {
            auth: Auth::new(store.clone(), hasher, options.limits.login, proof_key),
            store,
            writer,
            hub,
            limits: options.limits.clone(),
            irc_server_name: options.irc_server_name.clone(),
            users: Mutex::new(HashMap::new()),
            rooms: Mutex::new(HashMap::new()),
        });
        Ok(Server {
            state,
            tls: TlsReloader {
                source: options.identity.clone(),
                current: Arc::new(std::sync::RwLock::new(tls)),
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
        if let Err(e) = self.lock.record_listening(&addrs) {
            tracing::warn!(error = %e, "cannot record the listening addresses in the lock file");
        }
        let tracker = TaskTracker::new();
        let slots = Slots {
            per_address: Arc::default(),
            connections: Arc::new(Semaphore::new(self.state.limits.max_connections)),
        };
        let watcher = tokio::spawn(watch_revocations(Arc::clone(&self.state), shutdown.clone()));
        let accept = |listener: Option<TcpListener>, kind: Protocol| {
            let (state, tls) = (Arc::clone(&self.state), self.tls.clone());
            accept_loop(
                listener,
                kind,
                state,
                tls,
                shutdown.clone(),
                tracker.clone(),
                slots.clone(),
            )
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
async fn accept_loop(
    listener: Option<TcpListener>,
    kind: Protocol,
    state: Arc<ServerState>,
    tls: TlsReloader,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    slots: Slots,
) {
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
            Protocol::Native => tracker.spawn(session::run(
                state,
                tls.acceptor(),
                tcp,
                peer,
                shutdown,
                held,
            )),
            Protocol::IrcTls => tracker.spawn(crate::irc::serve_tls(
                state,
                tls.acceptor(),
                tcp,
                peer,
                shutdown,
                held,
            )),
            Protocol::IrcPlain => {
                tracker.spawn(crate::irc::serve_plain(state, tcp, peer, shutdown, held))
            }
        };
    }
}

/// One connection's place in the per-address count; released when dropped.
pub(crate) struct AddressSlot {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    key: Option<String>,
}

impl AddressSlot {
    /// Counts a connection from `ip`, or refuses it when the address is at its limit.
    /// Loopback addresses are not counted.
    fn take(
        counts: &Arc<Mutex<HashMap<String, usize>>>,
        ip: std::net::IpAddr,
        limit: usize,
    ) -> Option<AddressSlot> {
        if ip.is_loopback() {
            return Some(AddressSlot {
                counts: Arc::clone(counts),
                key: None,
            });
        }
        let key = crate::auth::address_bucket(ip);
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: Arc::clone(counts),
            key: Some(key),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some(key) = &self.key else { return };
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
        }
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
        let devices: Vec<i64> = connections.iter().map(|(_, d)| *d).collect();
        let valid = match state.store.valid_devices(&devices).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check sessions after an account change");
                continue;
            }
        };
        for (conn, device) in connections {
            if !valid.contains(&device) {
                tracing::info!(conn, device, "closing revoked session");
                state.hub.kick(conn, ErrorCode::SessionRevoked);
            }
        }
    }
}
