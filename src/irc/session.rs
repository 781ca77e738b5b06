//! One IRC connection: reads lines, registers, then translates commands into core requests
//! and core deliveries into lines, in full duplex from one task with `select!`.
//!
//! Answers leave in the order their commands came: an answer that waits for the writer (an
//! echo, a refusal) holds back the answers to later commands, which queue behind it in
//! `replies`, while the session goes on reading and handing sends to the writer (each is on
//! the writer's queue when the core's `send` returns, so they get ids in the order they were
//! read, whatever order `replies` later polls their answers in). Deliveries
//! (messages from others) are not answers and are written as they come.
//!
//! Delivery is the native backlog → live hand-off (`core::delivery`) after
//! this device's cursor. The cursor moves only when the client answers a `PING` sent after
//! the messages (its `PONG` proves it read everything written before): at most one such PING
//! is outstanding, and each PONG acknowledges, through the writer, everything written before
//! its PING.
//!
//! The hub's pushes are typed (`core::hub::Push`): messages and read markers become lines
//! straight from the typed value, for this reader's nick and capabilities. Every write goes
//! through [`crate::conn`]'s bounded write, shared with the native session: it ends the
//! session at once when the hub kicks it (a slow consumer, a revocation), even while a
//! client that does not read blocks the write; the session then sends the `ERROR` line
//! saying why, if the socket still takes it within the time of a goodbye.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::caps::{Cap, Caps};
use super::codec::{IrcCodec, Line, MAX_CLIENT_LINE};
use super::message::IrcMessage;
use super::numerics::*;
use super::translate::message_lines;
use super::IrcServerName;
use super::MAX_UNREGISTERED_LINES;
use crate::auth::AuthedUser;
use crate::bucket::TokenBucket;
use crate::conn::{bounded_write, Kicks, WriteError, GOODBYE};
use crate::core::delivery::BacklogEvent;
use crate::core::hub::{LiveQueue, Push, SessionGuard};
use crate::core::{CoreError, ServerState};
use crate::ids::MessageId;
use crate::protocol::ErrorCode;

/// What the session's byte stream must be: TLS or (loopback) plain TCP.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Why a session ends.
pub(super) enum End {
    /// The peer is gone or the socket failed.
    Gone,
    /// Close after an `ERROR` line with this text.
    Close(String),
    /// The server is shutting down.
    Shutdown,
}

/// A finished background operation.
pub(super) enum Done {
    /// Lines answering a command, with the command's label.
    Reply {
        label: Option<String>,
        lines: Vec<IrcMessage>,
    },
    /// The cursor is durably at this id.
    Acked(MessageId),
}

/// What a command handler produced.
pub(super) enum Reply {
    /// The answer, complete (labelled as the command was; none is an `ACK` when labelled).
    Now(Vec<IrcMessage>),
    /// The answer comes later: the handler queued it in `replies`.
    Later,
    /// No answer at all, not even an `ACK`: the command is part of a larger one (the opening
    /// `BATCH` of a multiline message, answered at its end).
    Nothing,
}

/// Where a SASL exchange is.
pub(super) enum Sasl {
    /// No exchange: the next `AUTHENTICATE` names a mechanism.
    Idle,
    /// PLAIN was chosen: the response received so far.
    Plain(String),
    /// The exchange ended with an error while the client was still sending chunks: they
    /// are dropped, unanswered, up to its last one (shorter than 400 bytes, or `+`).
    Discarding,
}

/// A `draft/multiline` batch being received.
pub(super) struct Incoming {
    pub reference: String,
    pub target: String,
    pub label: Option<String>,
    pub body: String,
    pub lines: usize,
    pub notice: bool,
    /// Set when the batch broke a limit; it is dropped at its end.
    pub failed: bool,
}

pub(super) struct Session<S> {
    pub state: Arc<ServerState>,
    /// The gateway's name for itself (the source of server lines).
    pub server_name: IrcServerName,
    framed: Framed<S, IrcCodec>,
    pub peer: SocketAddr,
    pub caps: Caps,
    /// Registration waits while CAP negotiation is open.
    pub cap_negotiating: bool,
    /// The nick the client asked for before registration.
    pub requested_nick: Option<String>,
    pub got_user: bool,
    pub pass: Option<crate::protocol::Secret>,
    /// Where the SASL exchange is.
    pub sasl: Sasl,
    pub user: Option<AuthedUser>,
    pub registered: bool,
    unregistered_lines: usize,
    pub guard: Option<SessionGuard>,
    /// Why the hub wants this connection closed; ends every write at once.
    pub kicked: Kicks,
    /// Answers to commands, in command order: each is written once it and every answer
    /// before it are complete.
    pub replies: FuturesOrdered<BoxFuture<'static, Done>>,
    /// Acknowledgements (cursor moves) in flight; they answer nothing.
    pub in_flight: FuturesUnordered<BoxFuture<'static, Done>>,
    pub backlog: Option<mpsc::Receiver<BacklogEvent>>,
    live: Option<LiveQueue>,
    live_floor: MessageId,
    /// Highest message id written to this connection.
    max_pushed: MessageId,
    /// The device's cursor as this session last moved it.
    cursor: MessageId,
    /// The outstanding acknowledgement PING: its token and the id it acknowledges.
    ack_ping: Option<(String, MessageId)>,
    ping_seq: u64,
    pub batch_seq: u64,
    pub bucket: TokenBucket,
    pub incoming: Option<Incoming>,
    last_input: Instant,
    keepalive_sent: bool,
    /// Membership events this connection caused and already showed (its JOIN, PART or
    /// KICK answer); their delivered copies are skipped.
    pub echoed: std::collections::HashSet<MessageId>,
}

pub(super) async fn run<S: Stream>(
    state: Arc<ServerState>,
    server_name: IrcServerName,
    stream: S,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let limits = &state.limits;
    let bucket = TokenBucket::new(limits.send_rate_per_sec, limits.send_burst);
    let mut session = Session {
        framed: Framed::new(stream, IrcCodec::new(MAX_CLIENT_LINE)),
        server_name,
        peer,
        caps: Caps::default(),
        cap_negotiating: false,
        requested_nick: None,
        got_user: false,
        pass: None,
        sasl: Sasl::Idle,
        user: None,
        registered: false,
        unregistered_lines: 0,
        guard: None,
        kicked: Kicks::none(),
        replies: FuturesOrdered::new(),
        in_flight: FuturesUnordered::new(),
        backlog: None,
        live: None,
        live_floor: MessageId(0),
        max_pushed: MessageId(0),
        cursor: MessageId(0),
        ack_ping: None,
        ping_seq: 0,
        batch_seq: 0,
        bucket,
        incoming: None,
        last_input: Instant::now(),
        keepalive_sent: false,
        echoed: std::collections::HashSet::new(),
        state,
    };
    let end = session.serve(&shutdown).await;
    session.finish(end).await;
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// How a session kicked by the hub ends: the ERROR line says why.
fn kicked(code: ErrorCode) -> End {
    End::Close(match code {
        ErrorCode::SlowConsumer => {
            "Too many undelivered messages queued; reconnect to resume".into()
        }
        ErrorCode::SessionRevoked => "This session was revoked or the account disabled".into(),
        _ => "Closed by the server".into(),
    })
}

async fn recv_live(live: &mut Option<LiveQueue>) -> Option<Push> {
    match live {
        Some(live) => live.recv().await,
        None => std::future::pending().await,
    }
}

impl<S: Stream> Session<S> {
    async fn serve(&mut self, shutdown: &CancellationToken) -> End {
        let limits = self.state.limits.clone();
        let register_deadline = Instant::now() + limits.auth_timeout;
        loop {
            let deadline = if !self.registered {
                register_deadline
            } else if self.keepalive_sent {
                self.last_input + limits.idle_timeout
            } else {
                self.last_input + limits.idle_timeout / 2
            };
            let result = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Shutdown,
                code = self.kicked.next() => return kicked(code),
                Some(done) = self.replies.next(), if !self.replies.is_empty() => {
                    self.on_done(done).await
                }
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.on_done(done).await
                }
                event = recv_opt(&mut self.backlog), if self.backlog.is_some() => {
                    self.on_backlog(event).await
                }
                push = recv_live(&mut self.live), if self.live.is_some() => {
                    match push {
                        Some(push) => self.on_push(&push).await,
                        None => Err(End::Gone),
                    }
                }
                // Like the native session: stop reading while too many sends are in flight.
                line = self.framed.next(), if self.in_flight.len() + self.replies.len() < limits.max_in_flight => {
                    match line {
                        None | Some(Err(_)) => return End::Gone,
                        Some(Ok(line)) => {
                            self.last_input = Instant::now();
                            self.keepalive_sent = false;
                            self.on_line(line).await
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if !self.registered {
                        return End::Close("Registration timed out: authenticate with SASL PLAIN or PASS account:password".into());
                    }
                    if self.keepalive_sent {
                        return End::Close(format!("Ping timeout: {} seconds", limits.idle_timeout.as_secs()));
                    }
                    self.keepalive_sent = true;
                    let ping = IrcMessage::new("PING", [self.server_name().to_string()]);
                    self.write(vec![ping]).await
                }
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// The client's nick: the account name once authenticated, `*` before.
    pub fn nick(&self) -> String {
        match &self.user {
            Some(u) => u.name().to_string(),
            None => "*".to_string(),
        }
    }

    /// The gateway's server name: the source of its own lines.
    pub fn server_name(&self) -> &str {
        self.server_name.as_str()
    }

    /// A line from the server itself.
    pub fn server_line(&self, command: &str, params: Vec<String>) -> IrcMessage {
        IrcMessage::new(command, params).from_source(self.server_name())
    }

    /// A numeric reply to this client.
    pub fn num<I, P>(&self, code: &str, params: I) -> IrcMessage
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let mut m = IrcMessage::new(code, [self.nick()]).from_source(self.server_name());
        m.params.extend(params.into_iter().map(Into::into));
        m
    }

    /// A standard-replies `FAIL` line.
    pub fn fail(&self, command: &str, code: &str, context: &[&str], text: &str) -> IrcMessage {
        let mut params = vec![command.to_string(), code.to_string()];
        params.extend(context.iter().map(|s| s.to_string()));
        params.push(text.to_string());
        self.server_line("FAIL", params)
    }

    /// Answers a command: written now when no earlier command's answer is still pending,
    /// otherwise queued behind those.
    pub async fn answer(
        &mut self,
        label: Option<String>,
        lines: Vec<IrcMessage>,
    ) -> Result<(), End> {
        if self.replies.is_empty() {
            let lines = self.labeled(label, lines);
            return self.write(lines).await;
        }
        self.replies
            .push_back(futures::future::ready(Done::Reply { label, lines }).boxed());
        Ok(())
    }

    /// Queues an answer that `future` will produce, behind every earlier command's answer.
    pub fn answer_later(&mut self, future: BoxFuture<'static, Done>) {
        self.replies.push_back(future);
    }

    async fn on_line(&mut self, line: Line) -> Result<(), End> {
        if !self.registered {
            self.unregistered_lines += 1;
            if self.unregistered_lines > MAX_UNREGISTERED_LINES {
                return Err(End::Close("Too many lines before registration".into()));
            }
        }
        let message = match line {
            Line::TooLong => {
                let m = self.num(ERR_INPUTTOOLONG, ["Input line was too long"]);
                return self.answer(None, vec![m]).await;
            }
            Line::NotUtf8(lossy) => {
                let command = IrcMessage::parse(&lossy).map_or("*".to_string(), |m| m.command);
                let m = self.fail(
                    &command,
                    "INVALID_UTF8",
                    &[],
                    "Message rejected: lines must be UTF-8 without NUL bytes",
                );
                return self.answer(None, vec![m]).await;
            }
            Line::Text(text) if tag_bytes(&text) > MAX_CLIENT_TAG_BYTES => {
                let m = self.num(ERR_INPUTTOOLONG, ["Input line was too long (tags)"]);
                return self.answer(None, vec![m]).await;
            }
            Line::Text(text) => match IrcMessage::parse(&text) {
                Some(m) => m,
                None => return Ok(()),
            },
        };
        let label = if self.caps.has(Cap::LabeledResponse) {
            message.tag_value("label").map(str::to_string)
        } else {
            None
        };
        if self.incoming.is_some() && message.command != "BATCH" {
            if let Some(reference) = message.tag_value("batch") {
                let (label, lines) = self.multiline_line(reference.to_string(), &message);
                return self.answer(label, lines).await;
            }
        }
        let reply = if self.registered {
            self.command(message, label.clone()).await?
        } else {
            Reply::Now(self.register_command(message).await?)
        };
        match reply {
            Reply::Now(lines) => self.answer(label, lines).await,
            Reply::Later | Reply::Nothing => Ok(()),
        }
    }

    async fn on_done(&mut self, done: Done) -> Result<(), End> {
        match done {
            Done::Reply { label, lines } => {
                let lines = self.labeled(label, lines);
                self.write(lines).await
            }
            Done::Acked(upto) => {
                self.cursor = self.cursor.max(upto);
                Ok(())
            }
        }
    }

    /// Wraps a command's answer for labeled-response: one line gets the label, several are
    /// one `labeled-response` batch, none is an `ACK`.
    pub fn labeled(
        &mut self,
        label: Option<String>,
        mut lines: Vec<IrcMessage>,
    ) -> Vec<IrcMessage> {
        let Some(label) = label else { return lines };
        match lines.len() {
            0 => vec![self.server_line("ACK", Vec::new()).tag("label", label)],
            1 => {
                lines[0].tags.insert(0, ("label".into(), Some(label)));
                lines
            }
            _ if self.caps.has(Cap::Batch) => {
                let reference = self.next_batch();
                let start = self
                    .server_line(
                        "BATCH",
                        vec![format!("+{reference}"), "labeled-response".into()],
                    )
                    .tag("label", label);
                let end = self.server_line("BATCH", vec![format!("-{reference}")]);
                let mut out = vec![start];
                out.extend(in_batch(lines, &reference));
                out.push(end);
                out
            }
            _ => {
                lines[0].tags.insert(0, ("label".into(), Some(label)));
                lines
            }
        }
    }

    /// A fresh batch reference.
    pub fn next_batch(&mut self) -> String {
        self.batch_seq += 1;
        format!("b{}", self.batch_seq)
    }

    /// Writes lines (keeping only the tags this client negotiated) and flushes, within the
    /// write timeout.
    pub async fn write(&mut self, lines: Vec<IrcMessage>) -> Result<(), End> {
        if lines.is_empty() {
            return Ok(());
        }
        let caps = self.caps;
        let rendered: Vec<String> = lines
            .into_iter()
            .map(|mut m| {
                m.tags.retain(|(k, _)| caps.allows_tag(k));
                m.to_line()
            })
            .collect();
        let framed = &mut self.framed;
        let write = async move {
            for line in rendered {
                framed.feed(line).await?;
            }
            framed.flush().await
        };
        let limit = self.state.limits.write_timeout;
        bounded_write(limit, &mut self.kicked, write)
            .await
            .map_err(|e| match e {
                WriteError::Failed => End::Gone,
                WriteError::Kicked(code) => kicked(code),
            })
    }

    /// Starts delivery for this device: the backlog after its cursor, then live.
    pub async fn subscribe(&mut self, user: &AuthedUser) -> Result<(), End> {
        let Some(conn) = self.guard.as_ref().map(|g| g.conn_id()) else {
            return Err(End::Close("Internal server error".into()));
        };
        let subscription = match self.state.subscribe(user, conn).await {
            Ok(s) => s,
            Err(CoreError::Refused(_)) => {
                return Err(End::Close("This session was revoked".into()))
            }
            Err(CoreError::Internal(e)) => {
                tracing::error!(error = %e, "cannot read an IRC device's cursor");
                return Err(End::Close("Internal server error".into()));
            }
        };
        self.cursor = subscription.cursor;
        self.max_pushed = subscription.cursor;
        self.backlog = Some(subscription.events);
        Ok(())
    }

    async fn on_backlog(&mut self, event: Option<BacklogEvent>) -> Result<(), End> {
        match event {
            Some(BacklogEvent::Page(page)) => {
                let me = self.nick();
                let mut lines = Vec::new();
                for m in &page {
                    if !self.echoed.remove(&MessageId(m.id)) {
                        lines.extend(message_lines(
                            m,
                            &me,
                            self.server_name.as_str(),
                            self.caps,
                            &mut self.batch_seq,
                        ));
                    }
                }
                self.write(lines).await?;
                if let Some(last) = page.last() {
                    self.max_pushed = self.max_pushed.max(MessageId(last.id));
                }
                self.request_ack().await
            }
            Some(BacklogEvent::CaughtUp { upto, live }) => {
                self.backlog = None;
                self.live_floor = upto;
                self.live = Some(live);
                Ok(())
            }
            Some(BacklogEvent::Failed) | None => Err(End::Close(
                "Delivery failed inside the server; reconnect to resume".into(),
            )),
        }
    }

    /// Writes a live push as IRC lines, made from the typed value for this reader.
    async fn on_push(&mut self, push: &Push) -> Result<(), End> {
        match push {
            Push::Message(m) if MessageId(m.get().id) > self.live_floor => {
                let message = m.get();
                if self.echoed.remove(&MessageId(message.id)) {
                    self.max_pushed = self.max_pushed.max(MessageId(message.id));
                    return self.request_ack().await;
                }
                let lines = message_lines(
                    message,
                    &self.nick(),
                    self.server_name.as_str(),
                    self.caps,
                    &mut self.batch_seq,
                );
                self.write(lines).await?;
                self.max_pushed = self.max_pushed.max(MessageId(message.id));
                self.request_ack().await
            }
            Push::Message(_) => Ok(()),
            Push::ReadMarker(r) => {
                if !self.caps.has(Cap::ReadMarker) {
                    return Ok(());
                }
                let marker = r.get();
                let line = self
                    .markread_line(&marker.conversation, Some(marker.upto))
                    .await;
                self.write(vec![line]).await
            }
        }
    }

    /// Sends the acknowledgement PING when messages were written since the last one and none
    /// is outstanding.
    async fn request_ack(&mut self) -> Result<(), End> {
        if self.ack_ping.is_some() || self.max_pushed <= self.cursor {
            return Ok(());
        }
        self.ping_seq += 1;
        let token = format!("chatd-ack-{}", self.ping_seq);
        self.ack_ping = Some((token.clone(), self.max_pushed));
        self.write(vec![IrcMessage::new("PING", [token])]).await
    }

    /// A PONG: if it answers the acknowledgement PING, the cursor moves (through the writer)
    /// to what was written before that PING.
    pub async fn on_pong(&mut self, token: &str) -> Result<(), End> {
        let Some((expected, upto)) = self.ack_ping.clone() else {
            return Ok(());
        };
        if token != expected {
            return Ok(());
        }
        self.ack_ping = None;
        if let Some(user) = self.user.clone() {
            let acked = self.state.ack(&user, upto);
            self.in_flight.push(Box::pin(async move {
                match acked.await {
                    Ok(()) => Done::Acked(upto),
                    Err(e) => {
                        tracing::error!(error = %e, "IRC ack failed");
                        Done::Acked(MessageId(0))
                    }
                }
            }));
        }
        // Anything written after that PING needs the next one.
        self.cursor = self.cursor.max(upto);
        self.request_ack().await
    }

    /// Ends the session: lets sends and acknowledgements already accepted reach the writer
    /// (answering them when the peer is still there), says why, closes.
    async fn finish(mut self, end: End) {
        // Nothing more is delivered: the live queue (all a slow consumer piled up) is
        // released now, not after the goodbye.
        self.live = None;
        self.backlog = None;
        let grace = self.state.limits.shutdown_grace;
        let reason = match end {
            End::Gone => {
                // A PONG already proved what the client read: its acknowledgement still
                // counts, and so does a message it sent.
                let _ = timeout(grace, async {
                    while self.replies.next().await.is_some() {}
                    while self.in_flight.next().await.is_some() {}
                })
                .await;
                return;
            }
            End::Close(reason) => reason,
            End::Shutdown => "Server shutting down; reconnect later".to_string(),
        };
        let drain = async {
            while let Some(done) = self.replies.next().await {
                if self.on_done(done).await.is_err() {
                    break;
                }
            }
            while let Some(done) = self.in_flight.next().await {
                if self.on_done(done).await.is_err() {
                    break;
                }
            }
        };
        let _ = timeout(grace, drain).await;
        // The ERROR line is tried even after a kick (another may be pending already), for the
        // time of a goodbye: a peer that does not read does not get more.
        self.kicked = Kicks::none();
        let line = IrcMessage::new("ERROR", [reason]);
        let _ = timeout(GOODBYE, self.write(vec![line])).await;
        let _ = timeout(GOODBYE, self.framed.get_mut().shutdown()).await;
        // Read what the client still sends (briefly, boundedly): closing with unread input
        // resets the connection, which can destroy the ERROR line before the client reads it.
        let _ = timeout(Duration::from_secs(1), async {
            for _ in 0..64 {
                if !matches!(self.framed.next().await, Some(Ok(_))) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Most bytes of tags a client may send (IRCv3 message-tags: 4094, without the leading `@`
/// and the space after the tags); more is `417`.
const MAX_CLIENT_TAG_BYTES: usize = 4094;

/// The length of a client line's tag data (between the leading `@` and the first space).
fn tag_bytes(line: &str) -> usize {
    match line.trim_start_matches(' ').strip_prefix('@') {
        Some(after) => after.find(' ').unwrap_or(after.len()),
        None => 0,
    }
}

/// Puts lines inside batch `reference`; lines already in a (nested) batch keep theirs.
pub(super) fn in_batch(lines: Vec<IrcMessage>, reference: &str) -> Vec<IrcMessage> {
    lines
        .into_iter()
        .map(|m| {
            if m.tag_value("batch").is_some() {
                m
            } else {
                m.tag("batch", reference)
            }
        })
        .collect()
}
