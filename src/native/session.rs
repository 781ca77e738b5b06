//! One connection: TLS handshake, `hello`, authentication, then requests and pushes in full
//! duplex until the peer leaves, a phase times out, the session is revoked, or the server
//! shuts down.
//!
//! The session reads requests, writes responses and pushes from one task with `select!`.
//! Sends and acks are handed to the writer and awaited in a `FuturesUnordered`, so a client
//! can pipeline many sends while live messages keep flowing to it. Delivery follows the
//! backlog → live hand-off: a helper task streams stored messages after the device's cursor,
//! subscribes to the hub, streams the last stored page, and hands over the live queue; the
//! session then sends `caught_up` and forwards only live messages with higher ids.
//!
//! The hub's pushes are typed; this session writes each as its native frame, encoded once
//! per push for every native connection it reaches ([`crate::core::hub::Shared`]). The
//! connection plumbing is [`crate::conn`]'s, shared with the IRC gateway: the TLS accept
//! (with this front end's answer to a plaintext client), the registration with the hub and
//! its revocation re-check, and the bounded write, which ends the session at once when the
//! hub kicks it (a slow consumer, a revocation) even while a peer that does not read
//! blocks it; the session then tells the peer why, if its socket still takes a frame, in
//! the short time of a goodbye.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::{timeout, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

mod rooms;

use crate::auth::{AuthError, AuthedUser};
use crate::conn::{
    accept_tls, bounded_write, register_session, AddressSlot, Kicks, WriteError, GOODBYE,
};
use crate::core::delivery::BacklogEvent;
use crate::core::hub::{LiveQueue, Push, ReadMarker, SessionGuard};
use crate::core::ServerState;
use crate::core::{CoreError, Operation, Outgoing, Refusal, RoomRequest};
use crate::ids::MessageId;
use crate::native::refusals::{error_frame, refusal_frame};
use crate::protocol::codec::{encode_json, parse_request, FrameCodec, FrameError};
use crate::protocol::{ErrorCode, Message, Request, Secret, ServerFrame, PROTOCOL_VERSION};

/// Longest a refused (`rate_limited`) login waits before it is answered.
const LOGIN_TARPIT: Duration = Duration::from_secs(1);

/// What a plaintext client on the TLS port is told before the connection is closed.
const PLAINTEXT_REPLY: &[u8] =
    b"chatd: this port speaks TLS 1.3 with length-delimited JSON frames; use the chat client\r\n";

/// Serves one native connection: the TLS handshake, then the session until it ends.
pub(crate) async fn run(
    state: Arc<ServerState>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    _slots: (OwnedSemaphorePermit, AddressSlot),
) {
    let limit = state.limits.handshake_timeout;
    let Some(tls) = accept_tls(acceptor, tcp, peer, limit, PLAINTEXT_REPLY).await else {
        return;
    };
    let mut session = Session {
        framed: Framed::new(tls, FrameCodec::new()),
        peer,
        user: None,
        guard: None,
        kicked: Kicks::none(),
        said_hello: false,
        in_flight: FuturesUnordered::new(),
        backlog: None,
        live: None,
        live_floor: MessageId(0),
        max_pushed: MessageId(0),
        cursor: MessageId(0),
        subscribed: false,
        unflushed: false,
        bucket: crate::bucket::TokenBucket::new(
            state.limits.send_rate_per_sec,
            state.limits.send_burst,
        ),
        state,
    };
    // The futures below are boxed so that each lives on the heap only while it runs: the
    // task of an idle connection stays small (measured by `chatd bench connections`).
    let end = session.serve(&shutdown).await;
    Box::pin(session.finish(end)).await;
}

/// Why a session ends.
enum End {
    /// The peer closed the connection or the socket failed: nothing more can be written.
    Gone,
    /// Close after telling the peer this.
    Error(ServerFrame),
    /// Close after the peer's logout was answered.
    LoggedOut,
    /// The hub kicked the session (revoked, slow consumer): close at once, telling the
    /// peer why if its socket still takes a frame.
    Kicked(ErrorCode),
    /// The server is shutting down.
    Shutdown,
}

struct Session {
    state: Arc<ServerState>,
    framed: Framed<TlsStream<TcpStream>, FrameCodec>,
    peer: SocketAddr,
    user: Option<AuthedUser>,
    guard: Option<SessionGuard>,
    kicked: Kicks,
    said_hello: bool,
    in_flight: FuturesUnordered<BoxFuture<'static, ServerFrame>>,
    backlog: Option<mpsc::Receiver<BacklogEvent>>,
    live: Option<LiveQueue>,
    /// Live pushes with ids at or below this were already sent from the backlog.
    live_floor: MessageId,
    /// Highest message id written to this connection.
    max_pushed: MessageId,
    /// This device's cursor as this session last moved it.
    cursor: MessageId,
    subscribed: bool,
    /// Frames were written to the framed buffer since the last flush.
    unflushed: bool,
    /// Limits sends and room changes per connection.
    bucket: crate::bucket::TokenBucket,
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The operation a request is, for its rate cost (which the core sets).
fn operation(request: &Request) -> Operation {
    match request {
        Request::Send { .. } => Operation::Send,
        Request::RoomCreate { .. }
        | Request::RoomInvite { .. }
        | Request::RoomJoin { .. }
        | Request::RoomLeave { .. }
        | Request::RoomDel { .. }
        | Request::RoomKick { .. } => Operation::RoomChange,
        Request::History { .. } => Operation::History,
        Request::Search { .. } => Operation::Search,
        Request::Unread { .. } => Operation::Unread,
        Request::RoomMembers { .. } => Operation::Members,
        Request::RoomList { .. } => Operation::RoomList,
        Request::Read { .. } => Operation::ReadMarker,
        Request::Subscribe { .. } => Operation::Subscribe,
        Request::Ack { .. } => Operation::Ack,
        Request::Logout { .. } => Operation::Logout,
        Request::Ping { .. } => Operation::Ping,
        Request::Hello { .. } | Request::Login { .. } | Request::Auth { .. } => {
            Operation::Authenticate
        }
    }
}

/// The last frame of a session kicked by the hub.
fn kick_frame(code: ErrorCode) -> ServerFrame {
    let message = match code {
        ErrorCode::SlowConsumer => "too many undelivered messages queued; reconnect to resume",
        ErrorCode::SessionRevoked => "this session was revoked or the account disabled",
        _ => "closed by the server",
    };
    ServerFrame::error(None, code, message)
}

/// How a session whose bounded write did not complete ends.
fn write_failed(e: WriteError) -> End {
    match e {
        WriteError::Failed => End::Gone,
        WriteError::Kicked(code) => End::Kicked(code),
    }
}

/// The `msg` frame of a pushed message: made once per message, for every connection.
fn msg_frame(message: &Message) -> Bytes {
    encode_json(&ServerFrame::Msg {
        message: message.clone(),
    })
}

/// The `read_marker` frame of a pushed read marker: made once per push.
fn read_marker_frame(marker: &ReadMarker) -> Bytes {
    encode_json(&ServerFrame::ReadMarker {
        conversation: marker.conversation.clone(),
        upto: marker.upto.get(),
    })
}

async fn recv_live(live: &mut Option<LiveQueue>) -> Option<Push> {
    match live {
        Some(live) => live.recv().await,
        None => std::future::pending().await,
    }
}

impl Session {
    async fn serve(&mut self, shutdown: &CancellationToken) -> End {
        let limits = self.state.limits.clone();
        let unauth_deadline = Instant::now() + limits.auth_timeout;
        let mut idle_deadline = Instant::now() + limits.idle_timeout;
        loop {
            let deadline = if self.user.is_none() {
                unauth_deadline.min(idle_deadline)
            } else {
                idle_deadline
            };
            let can_read = self.in_flight.len() < limits.max_in_flight;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Shutdown,
                code = self.kicked.next() => return End::Kicked(code),
                Some(frame) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    if let ServerFrame::Acked { upto, .. } = frame {
                        self.cursor = self.cursor.max(MessageId(upto));
                    }
                    if let Err(end) = self.write(&frame).await {
                        return end;
                    }
                }
                event = recv_opt(&mut self.backlog), if self.backlog.is_some() => {
                    if let Err(end) = self.on_backlog(event).await {
                        return end;
                    }
                }
                push = recv_live(&mut self.live), if self.live.is_some() => {
                    let Some(push) = push else {
                        return End::Gone;
                    };
                    if let Err(end) = self.on_push(&push).await {
                        return end;
                    }
                }
                frame = self.framed.next(), if can_read => {
                    let payload = match frame {
                        None => return End::Gone,
                        Some(Ok(payload)) => payload,
                        Some(Err(FrameError::TooLarge { max })) => {
                            return End::Error(ServerFrame::error(
                                None,
                                ErrorCode::BadFrame,
                                format!("frame exceeds the maximum of {max} bytes"),
                            ));
                        }
                        Some(Err(FrameError::Truncated)) => {
                            return End::Error(ServerFrame::error(
                                None,
                                ErrorCode::BadFrame,
                                "connection closed in the middle of a frame",
                            ));
                        }
                        Some(Err(FrameError::Io(_))) => return End::Gone,
                    };
                    idle_deadline = Instant::now() + limits.idle_timeout;
                    let request = match parse_request(&payload) {
                        Ok(r) => r,
                        Err(e) => return End::Error(ServerFrame::error(e.req, e.code, e.message)),
                    };
                    if let Err(end) = Box::pin(self.handle(request)).await {
                        return end;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let message = if self.user.is_none() {
                        "authentication timed out"
                    } else {
                        "idle timeout: no frame received (send ping to keep a connection open)"
                    };
                    return End::Error(ServerFrame::error(None, ErrorCode::Timeout, message));
                }
                // Last, so it is taken only when nothing else is ready: everything written
                // while events were arriving goes out in as few TLS records and system
                // calls as possible, and nothing waits once the session is idle.
                // Then, once idle, the codec's buffers are freed: an idle connection costs
                // only what TLS itself holds.
                _ = std::future::ready(()), if self.unflushed || self.holds_idle_buffers() => {
                    if self.unflushed {
                        if let Err(end) = self.flush().await {
                            return end;
                        }
                    }
                    self.release_idle_buffers();
                }
            }
        }
    }

    /// Handles one request. `Err` ends the session.
    async fn handle(&mut self, request: Request) -> Result<(), End> {
        let req = request.req();
        if !self.said_hello {
            return match request {
                Request::Hello { version, .. } if version == PROTOCOL_VERSION => {
                    self.said_hello = true;
                    self.write(&ServerFrame::Welcome {
                        req,
                        version: PROTOCOL_VERSION,
                        server: format!("chatd/{}", env!("CARGO_PKG_VERSION")),
                        max_frame: crate::protocol::MAX_FRAME_LEN,
                        max_body: self.state.limits.max_body,
                    })
                    .await
                }
                Request::Hello { version, .. } => Err(End::Error(ServerFrame::error(
                    Some(req),
                    ErrorCode::UnsupportedVersion,
                    format!("protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"),
                ))),
                _ => Err(End::Error(ServerFrame::error(
                    Some(req),
                    ErrorCode::UnsupportedVersion,
                    "the first frame must be hello with the protocol version",
                ))),
            };
        }
        match request {
            Request::Hello { .. } => {
                self.reply_error(req, ErrorCode::BadRequest, "hello was already received")
                    .await
            }
            Request::Ping { req } => self.write(&ServerFrame::Pong { req }).await,
            Request::Login {
                user,
                password,
                device,
                proof,
                ..
            } => {
                self.login(req, &user, &password, proof.as_ref(), device)
                    .await
            }
            Request::Auth { token, .. } => self.resume(req, &token).await,
            other => match self.user.clone() {
                Some(user) => self.handle_authed(other, &user).await,
                None => Err(End::Error(ServerFrame::error(
                    Some(req),
                    ErrorCode::NotAuthenticated,
                    "log in (login or auth) before any other request",
                ))),
            },
        }
    }

    async fn handle_authed(&mut self, request: Request, user: &AuthedUser) -> Result<(), End> {
        if let Err(refusal) = crate::core::rate::charge(&mut self.bucket, operation(&request)) {
            return self.write(&refusal_frame(request.req(), &refusal)).await;
        }
        match request {
            Request::Send {
                req,
                to,
                body,
                key,
                action,
            } => self.send(req, user, to, body, key, action).await,
            Request::Subscribe { req } => self.subscribe(req, user).await,
            Request::Ack { req, upto } => self.ack(req, user, MessageId(upto)).await,
            Request::History {
                req,
                peer,
                before,
                after,
                limit,
            } => {
                let (before, after) = (before.map(MessageId), after.map(MessageId));
                self.history(req, user, &peer, before, after, limit).await
            }
            Request::RoomCreate { req, room, private } => {
                self.room_change(req, user, RoomRequest::Create { room, private })
                    .await
            }
            Request::RoomInvite {
                req,
                room,
                user: who,
            } => {
                self.room_change(req, user, RoomRequest::Invite { room, user: who })
                    .await
            }
            Request::RoomJoin { req, room } => {
                self.room_change(req, user, RoomRequest::Join { room })
                    .await
            }
            Request::RoomLeave { req, room } => {
                self.room_change(req, user, RoomRequest::Leave { room })
                    .await
            }
            Request::RoomDel { req, room } => {
                self.room_change(req, user, RoomRequest::Delete { room })
                    .await
            }
            Request::RoomKick {
                req,
                room,
                user: who,
            } => {
                self.room_change(req, user, RoomRequest::Kick { room, user: who })
                    .await
            }
            Request::RoomList { req, all } => self.room_list(req, user, all).await,
            Request::RoomMembers { req, room } => self.room_members(req, user, &room).await,
            Request::Search {
                req,
                query,
                within,
                limit,
            } => {
                self.search(req, user, &query, within.as_deref(), limit)
                    .await
            }
            Request::Read {
                req,
                conversation,
                upto,
            } => {
                self.read(req, user, &conversation, upto.map(MessageId))
                    .await
            }
            Request::Unread { req } => self.unread(req, user).await,
            Request::Logout { req } => match self.state.auth.logout(user).await {
                Ok(()) => {
                    self.write(&ServerFrame::LoggedOut { req }).await?;
                    Err(End::LoggedOut)
                }
                Err(e) => self.internal(req, &e).await,
            },
            // Handled before authentication is required.
            Request::Hello { .. }
            | Request::Login { .. }
            | Request::Auth { .. }
            | Request::Ping { .. } => Ok(()),
        }
    }

    async fn login(
        &mut self,
        req: u64,
        user: &str,
        password: &Secret,
        proof: Option<&Secret>,
        device: Option<String>,
    ) -> Result<(), End> {
        if self.user.is_some() {
            return self.already_authenticated(req).await;
        }
        let device = device.unwrap_or_else(|| "unnamed device".to_string());
        match self
            .state
            .auth
            .login(user, password, proof, &device, self.peer.ip())
            .await
        {
            Ok(grant) => {
                let authed = grant.user;
                tracing::info!(user = authed.name(), device = authed.device_id().get(), peer = %self.peer, "login");
                self.authenticated(req, authed.clone()).await?;
                self.write(&ServerFrame::LoginOk {
                    req,
                    user: authed.name().to_string(),
                    device_id: authed.device_id().get(),
                    token: grant.token,
                    proof: Some(grant.proof),
                })
                .await
            }
            Err(e) => {
                if let AuthError::RateLimited { retry_after } = &e {
                    // Tarpit: a throttled connection waits (up to a second) for its answer
                    // and sends nothing meanwhile, so a flood of refused guesses costs the
                    // server a sleeping task, not a request per round trip. Only an
                    // unauthenticated connection gets here, so nothing else waits on it.
                    tokio::time::sleep((*retry_after).min(LOGIN_TARPIT)).await;
                }
                self.auth_failed(req, e).await
            }
        }
    }

    async fn already_authenticated(&mut self, req: u64) -> Result<(), End> {
        self.reply_error(
            req,
            ErrorCode::AlreadyAuthenticated,
            "this connection is already logged in",
        )
        .await
    }

    async fn resume(&mut self, req: u64, token: &Secret) -> Result<(), End> {
        if self.user.is_some() {
            return self.already_authenticated(req).await;
        }
        match self.state.auth.resume(token).await {
            Ok(authed) => {
                self.authenticated(req, authed.clone()).await?;
                self.write(&ServerFrame::AuthOk {
                    req,
                    user: authed.name().to_string(),
                    device_id: authed.device_id().get(),
                })
                .await
            }
            Err(e) => self.auth_failed(req, e).await,
        }
    }

    /// Registers the connection with the hub, then re-checks the device: a revocation that
    /// landed between the credential check and the registration was not seen by the
    /// revocation watcher, so it is caught here.
    async fn authenticated(&mut self, req: u64, user: AuthedUser) -> Result<(), End> {
        match register_session(&self.state, &user).await {
            Ok(Some((guard, kicked))) => {
                self.guard = Some(guard);
                self.kicked = kicked;
                self.user = Some(user);
                Ok(())
            }
            Ok(None) => Err(End::Error(ServerFrame::error(
                Some(req),
                ErrorCode::SessionRevoked,
                "this session was revoked or the account disabled",
            ))),
            Err(e) => {
                tracing::error!(error = %e, "cannot re-check a new session");
                Err(End::Error(ServerFrame::error(
                    Some(req),
                    ErrorCode::Internal,
                    "internal server error",
                )))
            }
        }
    }

    async fn auth_failed(&mut self, req: u64, e: AuthError) -> Result<(), End> {
        let (code, retry) = match &e {
            AuthError::InvalidCredentials => (ErrorCode::InvalidCredentials, None),
            AuthError::AccountDisabled => (ErrorCode::AccountDisabled, None),
            AuthError::InvalidToken => (ErrorCode::InvalidToken, None),
            AuthError::TooManyDevices { .. } => (ErrorCode::TooManyDevices, None),
            AuthError::RateLimited { retry_after } => {
                (ErrorCode::RateLimited, Some(retry_after.as_millis() as u64))
            }
            _ => return self.internal(req, &e).await,
        };
        self.write(&ServerFrame::Error {
            req: Some(req),
            code,
            message: e.to_string(),
            retry_after_ms: retry,
        })
        .await
    }

    async fn send(
        &mut self,
        req: u64,
        user: &AuthedUser,
        to: String,
        body: String,
        key: String,
        action: bool,
    ) -> Result<(), End> {
        let outgoing = Outgoing {
            to,
            body,
            key,
            action,
        };
        // A failure to queue the message (the writer stopping) gets the same advice as a
        // failure to store it: nothing was stored, so the same key is safe to retry.
        const NOT_STORED: &str = "the message could not be stored; retry with the same key";
        let committed = match self.state.send(user, outgoing).await {
            Ok(sending) => sending.committed,
            Err(e) => return self.write(&error_frame(req, &e, NOT_STORED)).await,
        };
        self.in_flight.push(
            async move {
                match committed.await {
                    Ok(c) => ServerFrame::Sent {
                        req,
                        id: c.id.get(),
                        sent_at: crate::protocol::format_timestamp(c.sent_at),
                        duplicate: c.duplicate,
                    },
                    Err(e) => error_frame(req, &e, NOT_STORED),
                }
            }
            .boxed(),
        );
        Ok(())
    }

    async fn subscribe(&mut self, req: u64, user: &AuthedUser) -> Result<(), End> {
        if self.subscribed {
            return self
                .reply_error(
                    req,
                    ErrorCode::BadRequest,
                    "this connection is already subscribed",
                )
                .await;
        }
        let Some(conn) = self.guard.as_ref().map(|g| g.conn_id()) else {
            return Err(End::Error(ServerFrame::error(
                None,
                ErrorCode::Internal,
                "delivery failed inside the server; reconnect to resume",
            )));
        };
        let subscription = match self.state.subscribe(user, conn).await {
            Ok(s) => s,
            // A revoked device ends the session.
            Err(e @ CoreError::Refused(Refusal::Revoked)) => {
                return Err(End::Error(error_frame(req, &e, "")))
            }
            Err(e) => {
                return self
                    .write(&error_frame(req, &e, "internal server error"))
                    .await
            }
        };
        let cursor = subscription.cursor;
        self.subscribed = true;
        self.cursor = cursor;
        self.max_pushed = cursor;
        self.write(&ServerFrame::Subscribed {
            req,
            cursor: cursor.get(),
        })
        .await?;
        self.backlog = Some(subscription.events);
        Ok(())
    }

    async fn on_backlog(&mut self, event: Option<BacklogEvent>) -> Result<(), End> {
        match event {
            Some(BacklogEvent::Page(page)) => {
                let last = page.last().map(|m| MessageId(m.id));
                let frames = page
                    .into_iter()
                    .map(|message| encode_json(&ServerFrame::Msg { message }))
                    .collect();
                self.write_raw(frames).await?;
                if let Some(id) = last {
                    self.max_pushed = self.max_pushed.max(id);
                }
                Ok(())
            }
            Some(BacklogEvent::CaughtUp { upto, live }) => {
                self.backlog = None;
                self.live_floor = upto;
                self.live = Some(live);
                self.write(&ServerFrame::CaughtUp { upto: upto.get() })
                    .await
            }
            Some(BacklogEvent::Failed) | None => Err(End::Error(ServerFrame::error(
                None,
                ErrorCode::Internal,
                "delivery failed inside the server; reconnect to resume",
            ))),
        }
    }

    /// Writes a live push: a message above what the backlog already sent, or a read
    /// marker. The frame is the one shared by every native connection the push reaches.
    async fn on_push(&mut self, push: &Push) -> Result<(), End> {
        match push {
            Push::Message(m) if MessageId(m.get().id) <= self.live_floor => Ok(()),
            Push::Message(m) => {
                self.write_raw(vec![m.native_frame(msg_frame)]).await?;
                self.max_pushed = self.max_pushed.max(MessageId(m.get().id));
                Ok(())
            }
            Push::ReadMarker(r) => {
                self.write_raw(vec![r.native_frame(read_marker_frame)])
                    .await
            }
        }
    }

    async fn ack(&mut self, req: u64, user: &AuthedUser, upto: MessageId) -> Result<(), End> {
        if !self.subscribed {
            return self
                .reply_error(req, ErrorCode::BadRequest, "subscribe before acknowledging")
                .await;
        }
        if upto > self.max_pushed {
            return self
                .reply_error(
                    req,
                    ErrorCode::BadRequest,
                    format!(
                        "cannot acknowledge {upto}: this connection was sent messages up to {}",
                        self.max_pushed
                    ),
                )
                .await;
        }
        if upto <= self.cursor {
            return self
                .write(&ServerFrame::Acked {
                    req,
                    upto: self.cursor.get(),
                })
                .await;
        }
        // `self.cursor` moves when the writer confirms (in `serve`), so a failed ack can be
        // retried and is never confirmed without being stored.
        let acked = self.state.ack(user, upto);
        self.in_flight.push(
            async move {
                match acked.await {
                    Ok(()) => ServerFrame::Acked {
                        req,
                        upto: upto.get(),
                    },
                    Err(e) => error_frame(req, &e, "the acknowledgement could not be stored"),
                }
            }
            .boxed(),
        );
        Ok(())
    }

    async fn internal(&mut self, req: u64, e: &(dyn std::fmt::Display + Sync)) -> Result<(), End> {
        tracing::error!(error = %e, "request failed");
        self.reply_error(req, ErrorCode::Internal, "internal server error")
            .await
    }

    async fn reply_error(
        &mut self,
        req: u64,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<(), End> {
        self.write(&ServerFrame::error(Some(req), code, message))
            .await
    }

    async fn write(&mut self, frame: &ServerFrame) -> Result<(), End> {
        self.write_raw(vec![encode_json(frame)]).await
    }

    /// Queues frames for the peer, within the write timeout. They are buffered (the buffer
    /// is written out whenever it passes the codec's backpressure boundary) and flushed by
    /// the serve loop once no other event is ready.
    async fn write_raw(&mut self, frames: Vec<Bytes>) -> Result<(), End> {
        let framed = &mut self.framed;
        let write = async move {
            for f in frames {
                framed.feed(f).await?;
            }
            Ok::<(), FrameError>(())
        };
        self.unflushed = true;
        bounded_write(self.state.limits.write_timeout, &mut self.kicked, write)
            .await
            .map_err(write_failed)
    }

    /// True when a codec buffer has memory but no bytes in it.
    fn holds_idle_buffers(&self) -> bool {
        let idle = |b: &BytesMut| b.is_empty() && b.capacity() > 0;
        idle(self.framed.read_buffer()) || idle(self.framed.write_buffer())
    }

    /// Frees the codec buffers that hold no bytes (they grow again as needed).
    fn release_idle_buffers(&mut self) {
        let r = self.framed.read_buffer_mut();
        if r.is_empty() {
            *r = BytesMut::new();
        }
        let w = self.framed.write_buffer_mut();
        if w.is_empty() {
            *w = BytesMut::new();
        }
    }

    /// Writes out everything queued, within the write timeout.
    async fn flush(&mut self) -> Result<(), End> {
        self.unflushed = false;
        let flush = self.framed.flush();
        bounded_write(self.state.limits.write_timeout, &mut self.kicked, flush)
            .await
            .map_err(write_failed)
    }

    /// Ends the session as `end` says: finishes in-flight sends at shutdown, sends a last
    /// error frame where there is one, and closes TLS cleanly.
    async fn finish(mut self, end: End) {
        // Nothing more is delivered: the live queue (all a slow consumer piled up) is
        // released now, not after the goodbye.
        self.live = None;
        self.backlog = None;
        let kicked = matches!(end, End::Kicked(_));
        let last = match end {
            End::Gone => return,
            End::LoggedOut => None,
            End::Error(frame) => Some(frame),
            End::Kicked(code) => Some(kick_frame(code)),
            End::Shutdown => Some(ServerFrame::error(
                None,
                ErrorCode::ShuttingDown,
                "the server is shutting down; reconnect later",
            )),
        };
        // Sends and acks already handed to the writer will be stored: answer them before
        // saying goodbye, so the client knows.
        let grace = self.state.limits.shutdown_grace;
        let drain = async {
            while let Some(frame) = self.in_flight.next().await {
                if self.write(&frame).await.is_err() {
                    break;
                }
            }
        };
        let _ = timeout(grace, drain).await;
        // A kicked peer may not be reading at all: what is still buffered gets the time of
        // a goodbye, not of a write.
        let flush_limit = if kicked {
            GOODBYE
        } else {
            self.state.limits.write_timeout
        };
        let _ = timeout(flush_limit, self.flush()).await;
        if let Some(frame) = last {
            if let Some(req) = frame.req() {
                tracing::debug!(peer = %self.peer, req, "closing after error");
            }
            let _ = timeout(GOODBYE, async {
                let _ = self.framed.send(encode_json(&frame)).await;
            })
            .await;
        }
        let _ = timeout(GOODBYE, self.framed.get_mut().shutdown()).await;
    }
}
