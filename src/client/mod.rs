//! The async client library, shared by `chat`, the integration tests and the bench.
//!
//! [`Connection::connect`] opens TCP, runs the TLS 1.3 handshake with the pinning verifier
//! (refusing an unknown or changed key before a byte of application data is sent), and
//! exchanges `hello`/`welcome`. A connection is full duplex: a reader task routes responses
//! to the request that is waiting for them (by `req`) and pushes (`msg`, `caught_up`, and
//! errors without a `req`) to an [`Event`] channel; requests can be pipelined from any number
//! of tasks through cloned [`Client`] handles. [`inbox`] is the delivery loop on top of it
//! (resume, dedupe, record, ack) that `chat recv` and the TUI share.

pub mod inbox;
pub mod proof;
pub mod state;
pub mod terminal;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::protocol::codec::{encode_json, parse_server_frame, FrameCodec};
use crate::protocol::{
    ErrorCode, MemberInfo, Message, Request, RoomInfo, SearchHit, Secret, ServerFrame, UnreadInfo,
    PROTOCOL_VERSION,
};
use crate::tls::pin::{client_config, SeenFingerprint};
use crate::tls::Fingerprint;

/// Time allowed for TCP connect plus the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a response to a request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Events buffered before the reader stops reading from the socket.
const EVENT_QUEUE: usize = 4096;

/// A server address: `host:port`, with IPv6 literals in brackets (`[::1]:7667`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    host: String,
    port: u16,
}

/// Why a server address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server address {0:?} must look like host:port (IPv6 as [addr]:port)")]
pub struct BadServerAddr(String);

impl FromStr for ServerAddr {
    type Err = BadServerAddr;
    fn from_str(s: &str) -> Result<Self, BadServerAddr> {
        let bad = || BadServerAddr(s.to_string());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = match host.strip_prefix('[') {
            Some(inner) => inner.strip_suffix(']').ok_or_else(bad)?,
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(ServerAddr {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<std::net::SocketAddr> for ServerAddr {
    fn from(a: std::net::SocketAddr) -> Self {
        ServerAddr {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

/// Errors a client operation can end in. An I/O cause is part of the message and is not
/// chained as a `source` as well, so that `{:#}` shows it once.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {error}{}", connect_hint(addr, error))]
    Connect { addr: String, error: std::io::Error },
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("server {addr} is not trusted yet; it presented key {presented}")]
    UnknownServer {
        addr: String,
        presented: Fingerprint,
    },
    #[error(
        "server {addr} presented key {presented} but {expected} is pinned for it; refusing to \
         send credentials. If the operator really changed the key, re-trust it with: \
         chat trust {addr} --pin {presented}"
    )]
    PinMismatch {
        addr: String,
        expected: Fingerprint,
        presented: Fingerprint,
    },
    #[error("TLS handshake with {addr} failed: {error}")]
    Tls { addr: String, error: std::io::Error },
    #[error("{message} ({code})")]
    Server {
        code: ErrorCode,
        message: String,
        retry_after_ms: Option<u64>,
    },
    #[error("the server closed the connection{}", closed_detail(.0))]
    Closed(Option<(ErrorCode, String)>),
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),
}

/// What to check when a connection could not be made: nothing listens there, or the
/// network does not reach it.
fn connect_hint(addr: &str, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => format!("; is chatd running at {addr}?"),
        ErrorKind::TimedOut | ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
            format!("; is {addr} reachable from here, and is chatd running there?")
        }
        _ => String::new(),
    }
}

fn closed_detail(reason: &Option<(ErrorCode, String)>) -> String {
    match reason {
        Some((code, message)) => format!(": {message} ({code})"),
        None => String::new(),
    }
}

impl ClientError {
    /// The server's error code, when the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::Closed(Some((code, _))) => Some(*code),
            _ => None,
        }
    }

    /// True when retrying on a new connection may succeed (the connection broke, timed out,
    /// or the server was going away).
    pub fn is_transient(&self) -> bool {
        match self {
            // A handshake cut short (a server restarting) is worth another try; a key that
            // does not match the pin is a separate variant and never is.
            ClientError::Connect { .. } | ClientError::Timeout(_) | ClientError::Tls { .. } => true,
            ClientError::Closed(reason) => !matches!(
                reason,
                Some((
                    ErrorCode::SessionRevoked
                        | ErrorCode::InvalidToken
                        | ErrorCode::AccountDisabled,
                    _
                ))
            ),
            ClientError::Server { code, .. } => {
                matches!(code, ErrorCode::Internal | ErrorCode::ShuttingDown)
            }
            _ => false,
        }
    }
}

/// Something the server pushed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message (from the backlog or live).
    Message(Message),
    /// The backlog has been sent up to this id; what follows is live.
    CaughtUp { upto: i64 },
    /// Another device of this user moved a read marker.
    ReadMarker { conversation: String, upto: i64 },
    /// The connection closed; the reason is the server's last error frame, if it sent one.
    Closed(Option<(ErrorCode, String)>),
}

/// The server's `welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub server: String,
    pub max_frame: usize,
    pub max_body: usize,
}

/// Result of a password login.
#[derive(Debug, Clone)]
pub struct LoginInfo {
    pub user: String,
    pub device_id: i64,
    pub token: Secret,
    /// The login proof to present at the next password login (a server older than proofs
    /// sends none).
    pub proof: Option<Secret>,
}

/// Result of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentInfo {
    pub id: i64,
    pub sent_at: String,
    pub duplicate: bool,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<ServerFrame>>>>;

/// A handle for making requests on a connection. Cheap to clone; usable from many tasks.
#[derive(Clone)]
pub struct Client {
    out: mpsc::Sender<Bytes>,
    pending: Pending,
    next_req: Arc<AtomicU64>,
    closed_reason: Arc<Mutex<Option<(ErrorCode, String)>>>,
    /// Set by the reader when the connection is gone, before it drops the waiters.
    closed: Arc<std::sync::atomic::AtomicBool>,
    welcome: Welcome,
}

/// An open connection: the request handle and the stream of pushed events.
pub struct Connection {
    pub client: Client,
    pub events: mpsc::Receiver<Event>,
}

/// Opens TCP and runs the pinned TLS 1.3 handshake. With `pin` = `None`, the handshake is
/// always refused and the error reports the key the server presented
/// ([`ClientError::UnknownServer`]), so first contact never sends anything.
pub async fn connect_tls(
    addr: &ServerAddr,
    pin: Option<Fingerprint>,
) -> Result<TlsStream<TcpStream>, ClientError> {
    crate::tls::install_provider();
    let shown = addr.to_string();
    let seen: SeenFingerprint = Arc::default();
    let config = client_config(pin, Arc::clone(&seen)).map_err(|e| ClientError::Tls {
        addr: shown.clone(),
        error: std::io::Error::other(e),
    })?;
    let server_name = match addr.host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(addr.host.clone()).map_err(|_| ClientError::Connect {
            addr: shown.clone(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid host name"),
        })?,
    };
    let handshake = async {
        let tcp = TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .map_err(|error| ClientError::Connect {
                addr: shown.clone(),
                error,
            })?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .map_err(|error| {
                let presented = *seen.lock().unwrap_or_else(|p| p.into_inner());
                match (pin, presented) {
                    (None, Some(presented)) => ClientError::UnknownServer {
                        addr: shown.clone(),
                        presented,
                    },
                    (Some(expected), Some(presented)) if expected != presented => {
                        ClientError::PinMismatch {
                            addr: shown.clone(),
                            expected,
                            presented,
                        }
                    }
                    _ => ClientError::Tls {
                        addr: shown.clone(),
                        error,
                    },
                }
            })
    };
    tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| ClientError::Timeout("connecting"))?
}

/// Learns the fingerprint a server presents without trusting it (first contact).
pub async fn probe_fingerprint(addr: &ServerAddr) -> Result<Fingerprint, ClientError> {
    match connect_tls(addr, None).await {
        Err(ClientError::UnknownServer { presented, .. }) => Ok(presented),
        Err(e) => Err(e),
        Ok(_) => Err(ClientError::Protocol(
            "handshake without a pin succeeded".into(),
        )),
    }
}

impl Connection {
    /// Connects to a server whose key is pinned, and says hello.
    pub async fn connect(addr: &ServerAddr, pin: Fingerprint) -> Result<Connection, ClientError> {
        let tls = connect_tls(addr, Some(pin)).await?;
        let (read_half, write_half) = tokio::io::split(tls);
        let mut reader = FramedRead::new(read_half, FrameCodec::new());
        let mut writer = FramedWrite::new(write_half, FrameCodec::new());
        let (out, mut out_rx) = mpsc::channel::<Bytes>(1024);
        tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if writer.feed(frame).await.is_err() {
                    return;
                }
                // Batch whatever else is queued into the same flush.
                while let Ok(frame) = out_rx.try_recv() {
                    if writer.feed(frame).await.is_err() {
                        return;
                    }
                }
                if writer.flush().await.is_err() {
                    return;
                }
            }
            let _ = writer.close().await;
        });

        let pending: Pending = Arc::default();
        let closed_reason: Arc<Mutex<Option<(ErrorCode, String)>>> = Arc::default();
        let closed: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        {
            let pending = Arc::clone(&pending);
            let closed_reason = Arc::clone(&closed_reason);
            let closed = Arc::clone(&closed);
            tokio::spawn(async move {
                let mut reason = None;
                while let Some(Ok(payload)) = reader.next().await {
                    let Ok(frame) = parse_server_frame(&payload) else {
                        reason = Some((
                            ErrorCode::BadJson,
                            "unreadable frame from the server".into(),
                        ));
                        break;
                    };
                    match frame {
                        // A full event queue makes this wait (and so stalls replies too)
                        // until the owner reads events; a dropped receiver makes it a no-op.
                        ServerFrame::Msg { message } => {
                            let _ = events_tx.send(Event::Message(message)).await;
                        }
                        ServerFrame::CaughtUp { upto } => {
                            let _ = events_tx.send(Event::CaughtUp { upto }).await;
                        }
                        ServerFrame::ReadMarker { conversation, upto } => {
                            let _ = events_tx
                                .send(Event::ReadMarker { conversation, upto })
                                .await;
                        }
                        ServerFrame::Error {
                            req: None,
                            code,
                            message,
                            ..
                        } => {
                            reason = Some((code, message));
                        }
                        other => {
                            let Some(req) = other.req() else { continue };
                            let waiter = pending
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&req);
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(other);
                            }
                        }
                    }
                }
                *closed_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.clone();
                closed.store(true, Ordering::SeqCst);
                // Dropping the waiters wakes every pending request with "closed"; requests
                // registered after this see `closed` and fail at once.
                pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
                let _ = events_tx.send(Event::Closed(reason)).await;
            });
        }

        let mut client = Client {
            out,
            pending,
            next_req: Arc::new(AtomicU64::new(1)),
            closed_reason,
            closed,
            welcome: Welcome {
                server: String::new(),
                max_frame: 0,
                max_body: 0,
            },
        };
        match client
            .request(|req| Request::Hello {
                req,
                version: PROTOCOL_VERSION,
                client: Some(format!("chat/{}", env!("CARGO_PKG_VERSION"))),
            })
            .await?
        {
            ServerFrame::Welcome {
                server,
                max_frame,
                max_body,
                ..
            } => {
                client.welcome = Welcome {
                    server,
                    max_frame,
                    max_body,
                };
            }
            other => return Err(unexpected(other)),
        }
        Ok(Connection { client, events })
    }

    /// Splits into the request handle and the event stream.
    pub fn split(self) -> (Client, mpsc::Receiver<Event>) {
        (self.client, self.events)
    }
}

fn unexpected(frame: ServerFrame) -> ClientError {
    ClientError::Protocol(format!("{frame:?}"))
}

impl Client {
    /// The server's `welcome`.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends a request built with a fresh `req` number and waits for its response. Error
    /// frames become [`ClientError::Server`].
    pub async fn request(
        &self,
        build: impl FnOnce(u64) -> Request,
    ) -> Result<ServerFrame, ClientError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req, tx);
        if self.closed.load(Ordering::SeqCst) {
            self.forget(req);
            return Err(self.closed());
        }
        let frame = encode_json(&build(req));
        if self.out.send(frame).await.is_err() {
            self.forget(req);
            return Err(self.closed());
        }
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(_)) => return Err(self.closed()),
            Err(_) => {
                self.forget(req);
                return Err(ClientError::Timeout("waiting for the server's reply"));
            }
        };
        match response {
            ServerFrame::Error {
                code,
                message,
                retry_after_ms,
                ..
            } => Err(ClientError::Server {
                code,
                message,
                retry_after_ms,
            }),
            other => Ok(other),
        }
    }

    fn forget(&self, req: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req);
    }

    fn closed(&self) -> ClientError {
        ClientError::Closed(
            self.closed_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// Password login without a login proof; the connection is authenticated afterwards.
    pub async fn login(
        &self,
        user: &str,
        password: &Secret,
        device: &str,
    ) -> Result<LoginInfo, ClientError> {
        self.login_with_proof(user, password, None, device).await
    }

    /// Password login presenting `proof` (from an earlier [`LoginInfo::proof`] for this
    /// account), which exempts it from the server's failed-login budgets when valid.
    pub async fn login_with_proof(
        &self,
        user: &str,
        password: &Secret,
        proof: Option<&Secret>,
        device: &str,
    ) -> Result<LoginInfo, ClientError> {
        match self
            .request(|req| Request::Login {
                req,
                user: user.to_string(),
                password: password.clone(),
                device: Some(device.to_string()),
                proof: proof.cloned(),
            })
            .await?
        {
            ServerFrame::LoginOk {
                user,
                device_id,
                token,
                proof,
                ..
            } => Ok(LoginInfo {
                user,
                device_id,
                token,
                proof,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Token authentication; returns the user name and device id.
    pub async fn auth(&self, token: &Secret) -> Result<(String, i64), ClientError> {
        match self
            .request(|req| Request::Auth {
                req,
                token: token.clone(),
            })
            .await?
        {
            ServerFrame::AuthOk {
                user, device_id, ..
            } => Ok((user, device_id)),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a direct message with an idempotency key; resolves when it is stored.
    pub async fn send(&self, to: &str, body: &str, key: &str) -> Result<SentInfo, ClientError> {
        self.send_message(to, body, key, false).await
    }

    /// Sends an action (emote, IRC's `/me`), shown as `* me body`; otherwise as [`send`].
    ///
    /// [`send`]: Client::send
    pub async fn send_action(
        &self,
        to: &str,
        body: &str,
        key: &str,
    ) -> Result<SentInfo, ClientError> {
        self.send_message(to, body, key, true).await
    }

    async fn send_message(
        &self,
        to: &str,
        body: &str,
        key: &str,
        action: bool,
    ) -> Result<SentInfo, ClientError> {
        match self
            .request(|req| Request::Send {
                req,
                to: to.to_string(),
                body: body.to_string(),
                key: key.to_string(),
                action,
            })
            .await?
        {
            ServerFrame::Sent {
                id,
                sent_at,
                duplicate,
                ..
            } => Ok(SentInfo {
                id,
                sent_at,
                duplicate,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Starts delivery; returns this device's cursor. Messages then arrive as events.
    pub async fn subscribe(&self) -> Result<i64, ClientError> {
        match self.request(|req| Request::Subscribe { req }).await? {
            ServerFrame::Subscribed { cursor, .. } => Ok(cursor),
            other => Err(unexpected(other)),
        }
    }

    /// Acknowledges everything up to `upto`; resolves once the cursor is durably moved.
    pub async fn ack(&self, upto: i64) -> Result<i64, ClientError> {
        match self.request(|req| Request::Ack { req, upto }).await? {
            ServerFrame::Acked { upto, .. } => Ok(upto),
            other => Err(unexpected(other)),
        }
    }

    /// One page of the conversation with `peer` (a user or `#room`), oldest first: the
    /// newest messages below `before` (or overall), and whether older ones exist.
    pub async fn history(
        &self,
        peer: &str,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<(Vec<Message>, bool), ClientError> {
        self.history_page(peer, before, None, limit).await
    }

    /// One page of history in either direction: with `after`, the oldest messages above it
    /// and whether newer ones exist; otherwise as [`Client::history`].
    pub async fn history_page(
        &self,
        peer: &str,
        before: Option<i64>,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<(Vec<Message>, bool), ClientError> {
        match self
            .request(|req| Request::History {
                req,
                peer: peer.to_string(),
                before,
                after,
                limit,
            })
            .await?
        {
            ServerFrame::History { messages, more, .. } => Ok((messages, more)),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a room (`#name` or `name`); returns the creation event's id.
    pub async fn room_create(&self, room: &str, private: bool) -> Result<i64, ClientError> {
        self.room_request(|req| Request::RoomCreate {
            req,
            room: room.to_string(),
            private,
        })
        .await
    }

    /// Adds a user to a room (owner only); returns the event id.
    pub async fn room_invite(&self, room: &str, user: &str) -> Result<i64, ClientError> {
        self.room_request(|req| Request::RoomInvite {
            req,
            room: room.to_string(),
            user: user.to_string(),
        })
        .await
    }

    /// Joins a public room; returns the event id.
    pub async fn room_join(&self, room: &str) -> Result<i64, ClientError> {
        self.room_request(|req| Request::RoomJoin {
            req,
            room: room.to_string(),
        })
        .await
    }

    /// Leaves a room; returns the event id.
    pub async fn room_leave(&self, room: &str) -> Result<i64, ClientError> {
        self.room_request(|req| Request::RoomLeave {
            req,
            room: room.to_string(),
        })
        .await
    }

    /// Deletes a room (owner only); returns the id of its `delete` event.
    pub async fn room_del(&self, room: &str) -> Result<i64, ClientError> {
        self.room_request(|req| Request::RoomDel {
            req,
            room: room.to_string(),
        })
        .await
    }

    /// Removes a member (owner only); returns the event id.
    pub async fn room_kick(&self, room: &str, user: &str) -> Result<i64, ClientError> {
        self.room_request(|req| Request::RoomKick {
            req,
            room: room.to_string(),
            user: user.to_string(),
        })
        .await
    }

    async fn room_request(&self, build: impl FnOnce(u64) -> Request) -> Result<i64, ClientError> {
        match self.request(build).await? {
            ServerFrame::RoomOk { event_id, .. } => Ok(event_id.unwrap_or(0)),
            other => Err(unexpected(other)),
        }
    }

    /// Rooms I am in (and with `all`, every public room).
    pub async fn room_list(&self, all: bool) -> Result<Vec<RoomInfo>, ClientError> {
        match self.request(|req| Request::RoomList { req, all }).await? {
            ServerFrame::Rooms { rooms, .. } => Ok(rooms),
            other => Err(unexpected(other)),
        }
    }

    /// Members of a room.
    pub async fn room_members(&self, room: &str) -> Result<Vec<MemberInfo>, ClientError> {
        match self
            .request(|req| Request::RoomMembers {
                req,
                room: room.to_string(),
            })
            .await?
        {
            ServerFrame::Members { members, .. } => Ok(members),
            other => Err(unexpected(other)),
        }
    }

    /// Full-text search, optionally within one conversation.
    pub async fn search(
        &self,
        query: &str,
        within: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<SearchHit>, ClientError> {
        match self
            .request(|req| Request::Search {
                req,
                query: query.to_string(),
                within: within.map(str::to_string),
                limit,
            })
            .await?
        {
            ServerFrame::SearchResults { results, .. } => Ok(results),
            other => Err(unexpected(other)),
        }
    }

    /// Moves my read marker for a conversation (to its newest message without `upto`);
    /// returns where the marker is now.
    pub async fn read(&self, conversation: &str, upto: Option<i64>) -> Result<i64, ClientError> {
        match self
            .request(|req| Request::Read {
                req,
                conversation: conversation.to_string(),
                upto,
            })
            .await?
        {
            ServerFrame::ReadOk { upto, .. } => Ok(upto),
            other => Err(unexpected(other)),
        }
    }

    /// Unread counts and last messages per conversation.
    pub async fn unread(&self) -> Result<Vec<UnreadInfo>, ClientError> {
        match self.request(|req| Request::Unread { req }).await? {
            ServerFrame::Unread { conversations, .. } => Ok(conversations),
            other => Err(unexpected(other)),
        }
    }

    /// Revokes this connection's device token.
    pub async fn logout(&self) -> Result<(), ClientError> {
        match self.request(|req| Request::Logout { req }).await? {
            ServerFrame::LoggedOut { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Keepalive round trip.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.request(|req| Request::Ping { req }).await? {
            ServerFrame::Pong { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// A fresh idempotency key (see [`crate::protocol::new_idempotency_key`]: time, then
/// random bits).
pub fn new_send_key() -> String {
    crate::protocol::new_idempotency_key()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_parse() {
        let a: ServerAddr = "Chat.Example.org:7667".parse().unwrap();
        assert_eq!(a.to_string(), "chat.example.org:7667");
        let b: ServerAddr = "[::1]:9".parse().unwrap();
        assert_eq!(b.to_string(), "[::1]:9");
        assert!("nohost".parse::<ServerAddr>().is_err());
        assert!("::1:9".parse::<ServerAddr>().is_err());
        assert!("h:0".parse::<ServerAddr>().is_err());
        assert!("h:99999".parse::<ServerAddr>().is_err());
    }
}
