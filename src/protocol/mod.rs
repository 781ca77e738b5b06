//! The wire vocabulary shared by `chatd` and every client.
//!
//! This module owns the encoding: typed requests ([`Request`]), typed server frames
//! ([`ServerFrame`]), the closed set of [`ErrorCode`]s, the protocol version and the
//! size limits. Framing (length prefix + JSON) lives in [`codec`]. Nothing here knows
//! about sockets, storage or sessions; `docs/protocol.md` describes the same types for
//! people writing clients in other languages.

pub mod codec;
mod names;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use names::{
    Conversation, ConversationError, NameError, RoomName, RoomNameError, Username,
    MAX_ROOM_NAME_LEN, MAX_USERNAME_LEN,
};

/// The protocol version spoken by this build. A `hello` with any other version is refused
/// with [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame payload (the JSON text, excluding the 4-byte length prefix) either side
/// accepts. A 16 KiB body of control characters escapes to at most 96 KiB of JSON, so this
/// leaves room for the default body limit plus the envelope.
pub const MAX_FRAME_LEN: usize = 128 * 1024;

/// Default largest message body, in bytes of UTF-8.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;

/// Largest body limit an operator may configure: a body of control characters escapes to six
/// bytes of JSON per byte, and the `msg` frame carrying it must still fit in
/// [`MAX_FRAME_LEN`].
pub const MAX_CONFIGURABLE_BODY_BYTES: usize = (MAX_FRAME_LEN - 4096) / 6;

/// Largest page `history` returns, whatever `limit` asks for.
pub const MAX_HISTORY_PAGE: u32 = 500;

/// True for a message body with nothing in it to read: empty, or whitespace only (Unicode
/// `White_Space`: spaces, tabs, newlines and the like). The one rule every front end applies
/// before a message is stored: natively such a body is `empty_message`, over IRC `412`.
pub fn is_blank(body: &str) -> bool {
    body.chars().all(char::is_whitespace)
}

/// Most results `search` returns, whatever `limit` asks for.
pub const MAX_SEARCH_RESULTS: u32 = 100;

/// Page size used by `history` when the request names none.
pub const DEFAULT_HISTORY_PAGE: u32 = 50;

/// Longest accepted idempotency key, in bytes.
pub const MAX_SEND_KEY_LEN: usize = 64;

/// A secret string (password or session token) whose `Debug` output is redacted, so it can
/// never reach a log line by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where the value is really needed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A request from a client. Every request carries a client-chosen `req` number that the
/// server echoes in its response (or in the error frame answering it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// First frame of every connection.
    Hello {
        req: u64,
        version: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// Password login: creates a new device (session) and authenticates this connection.
    /// `proof` is the login proof from an earlier `login_ok` for this account, if the client
    /// kept one: with a valid one the attempt is exempt from the failed-login budgets.
    Login {
        req: u64,
        user: String,
        password: Secret,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<Secret>,
    },
    /// Authenticates this connection with a token from an earlier `login`.
    Auth { req: u64, token: Secret },
    /// Sends a direct message. `key` makes the send idempotent. `action` marks an emote
    /// (IRC's `/me`): shown as `* alice waves`.
    Send {
        req: u64,
        to: String,
        body: String,
        key: String,
        #[serde(default, skip_serializing_if = "is_false")]
        action: bool,
    },
    /// Starts delivery: the backlog after this device's cursor, `caught_up`, then live.
    Subscribe { req: u64 },
    /// Moves this device's cursor forward to `upto` (a message id this connection received).
    Ack { req: u64, upto: i64 },
    /// One page of the conversation with `peer` (a user, or `#room`), oldest first: the
    /// newest messages below `before`, or the oldest above `after`, or the newest overall.
    History {
        req: u64,
        peer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Creates a room; the creator becomes its owner and first member.
    RoomCreate {
        req: u64,
        room: String,
        #[serde(default)]
        private: bool,
    },
    /// Adds a user to a room (owner only).
    RoomInvite {
        req: u64,
        room: String,
        user: String,
    },
    /// Joins a public room.
    RoomJoin { req: u64, room: String },
    /// Leaves a room. The owner may leave only when alone in it, which deletes the room.
    RoomLeave { req: u64, room: String },
    /// Deletes a room (owner only), as the operator's `chatd room del` does.
    RoomDel { req: u64, room: String },
    /// Removes a member (owner only; the owner cannot be kicked).
    RoomKick {
        req: u64,
        room: String,
        user: String,
    },
    /// Rooms this user is in; with `all`, public rooms too.
    RoomList {
        req: u64,
        #[serde(default)]
        all: bool,
    },
    /// Members of a room (members only, for private rooms).
    RoomMembers { req: u64, room: String },
    /// Full-text search over what this user may read, best match first.
    Search {
        req: u64,
        query: String,
        /// Only this conversation (`bob` or `#room`).
        #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
        within: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Moves this user's read marker for a conversation forward (to its newest message when
    /// `upto` is absent). Pushed to the user's other connected devices.
    Read {
        req: u64,
        conversation: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upto: Option<i64>,
    },
    /// Per conversation: unread count and last message.
    Unread { req: u64 },
    /// Revokes this connection's device token; the connection is closed afterwards.
    Logout { req: u64 },
    /// Keepalive; answered with `pong`.
    Ping { req: u64 },
}

impl Request {
    /// The request number the server must echo.
    pub fn req(&self) -> u64 {
        match self {
            Request::Hello { req, .. }
            | Request::Login { req, .. }
            | Request::Auth { req, .. }
            | Request::Send { req, .. }
            | Request::Subscribe { req }
            | Request::Ack { req, .. }
            | Request::History { req, .. }
            | Request::RoomCreate { req, .. }
            | Request::RoomInvite { req, .. }
            | Request::RoomJoin { req, .. }
            | Request::RoomLeave { req, .. }
            | Request::RoomDel { req, .. }
            | Request::RoomKick { req, .. }
            | Request::RoomList { req, .. }
            | Request::RoomMembers { req, .. }
            | Request::Search { req, .. }
            | Request::Read { req, .. }
            | Request::Unread { req }
            | Request::Logout { req }
            | Request::Ping { req } => *req,
        }
    }

    /// Every `type` tag a client may send; anything else is [`ErrorCode::UnknownType`].
    pub const TYPES: &'static [&'static str] = &[
        "hello",
        "login",
        "auth",
        "send",
        "subscribe",
        "ack",
        "history",
        "room_create",
        "room_invite",
        "room_join",
        "room_leave",
        "room_del",
        "room_kick",
        "room_list",
        "room_members",
        "search",
        "read",
        "unread",
        "logout",
        "ping",
    ];
}

/// A stored message as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Server-assigned, strictly increasing across the whole server.
    pub id: i64,
    pub from: String,
    pub to: String,
    pub body: String,
    /// RFC 3339, UTC, microsecond precision.
    pub sent_at: String,
    /// What the message is; absent for ordinary text.
    #[serde(default, skip_serializing_if = "MessageKind::is_text")]
    pub kind: MessageKind,
    /// For membership events: the user who joined, was invited, left or was kicked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// A text message that is an action (emote, IRC's `/me`): shown as `* from body`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub action: bool,
}

/// For `skip_serializing_if`: flags are written only when set.
fn is_false(b: &bool) -> bool {
    !*b
}

impl Message {
    /// A membership event in words ("bob joined"), or `None` for text.
    pub fn event_text(&self) -> Option<String> {
        let member = self.member.as_deref().unwrap_or("someone");
        Some(match self.kind {
            MessageKind::Text => return None,
            MessageKind::Create => format!("{} created the room", self.from),
            MessageKind::Join => format!("{} joined", self.from),
            MessageKind::Invite => format!("{} added {member}", self.from),
            MessageKind::Leave => format!("{} left", self.from),
            MessageKind::Kick => format!("{} removed {member}", self.from),
            MessageKind::Delete => "the room was deleted".to_string(),
        })
    }

    /// The first line of the body as it is shown: `* alice waves` for an action, the text
    /// itself otherwise.
    pub fn shown_text<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if self.action {
            format!("* {} {text}", self.from).into()
        } else {
            text.into()
        }
    }
}

/// Text, or a membership event in a room's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    #[default]
    Text,
    /// `from` created the room.
    Create,
    /// `from` joined.
    Join,
    /// `from` added `member`.
    Invite,
    /// `from` left.
    Leave,
    /// `from` removed `member`.
    Kick,
    /// The room was deleted (by its owner, `from`, or by the operator); pushed live to the
    /// members, not kept in any history.
    Delete,
}

impl MessageKind {
    /// True for ordinary text.
    pub fn is_text(&self) -> bool {
        *self == MessageKind::Text
    }

    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Create => "create",
            MessageKind::Join => "join",
            MessageKind::Invite => "invite",
            MessageKind::Leave => "leave",
            MessageKind::Kick => "kick",
            MessageKind::Delete => "delete",
        }
    }

    /// Parses the stored form; unknown values read as text.
    pub fn from_stored(s: &str) -> MessageKind {
        match s {
            "create" => MessageKind::Create,
            "join" => MessageKind::Join,
            "invite" => MessageKind::Invite,
            "leave" => MessageKind::Leave,
            "kick" => MessageKind::Kick,
            "delete" => MessageKind::Delete,
            _ => MessageKind::Text,
        }
    }
}

/// A room as `room_list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// `#name`.
    pub name: String,
    pub private: bool,
    pub owner: String,
    pub members: u64,
    /// Whether the asking user is a member.
    pub member: bool,
}

/// A room member as `room_members` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub user: String,
    /// `owner` or `member`.
    pub role: String,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    pub message: Message,
    /// The matching part of the body with matches between `[` and `]`.
    pub snippet: String,
}

/// One conversation in `unread`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadInfo {
    /// A user name or `#room`.
    pub conversation: String,
    /// Messages from others above the read marker.
    pub unread: u64,
    pub last: Option<Message>,
}

/// A frame from the server: a response (carrying the request's `req`) or a push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        req: u64,
        version: u32,
        server: String,
        max_frame: usize,
        max_body: usize,
    },
    LoginOk {
        req: u64,
        user: String,
        device_id: i64,
        token: Secret,
        /// A fresh login proof for this account, to present at the next password login.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<Secret>,
    },
    AuthOk {
        req: u64,
        user: String,
        device_id: i64,
    },
    /// The message is durably stored. `duplicate` is true when `key` matched an earlier send,
    /// in which case `id` and `sent_at` are the original ones.
    Sent {
        req: u64,
        id: i64,
        sent_at: String,
        duplicate: bool,
    },
    /// Answer to `subscribe`; the backlog follows.
    Subscribed {
        req: u64,
        cursor: i64,
    },
    /// A pushed message (backlog or live).
    Msg {
        message: Message,
    },
    /// Everything stored up to `upto` has been pushed; later pushes are live.
    CaughtUp {
        upto: i64,
    },
    /// The cursor is durably at `upto` or beyond.
    Acked {
        req: u64,
        upto: i64,
    },
    /// One page of history, oldest first. `more` is true when older messages exist.
    History {
        req: u64,
        messages: Vec<Message>,
        more: bool,
    },
    /// A room operation succeeded; `event_id` is the membership event it stored, if any.
    RoomOk {
        req: u64,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<i64>,
    },
    Rooms {
        req: u64,
        rooms: Vec<RoomInfo>,
    },
    Members {
        req: u64,
        room: String,
        members: Vec<MemberInfo>,
    },
    SearchResults {
        req: u64,
        results: Vec<SearchHit>,
    },
    /// The read marker is now at `upto` (never lower than before).
    ReadOk {
        req: u64,
        conversation: String,
        upto: i64,
    },
    Unread {
        req: u64,
        conversations: Vec<UnreadInfo>,
    },
    /// Pushed: another device of this user moved a read marker.
    ReadMarker {
        conversation: String,
        upto: i64,
    },
    LoggedOut {
        req: u64,
    },
    Pong {
        req: u64,
    },
    /// A typed error. `req` is absent when the error is not an answer to one request
    /// (a frame that could not be parsed, a timeout, a revoked session).
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ServerFrame {
    /// The request number this frame answers, if it is a response.
    pub fn req(&self) -> Option<u64> {
        match self {
            ServerFrame::Welcome { req, .. }
            | ServerFrame::LoginOk { req, .. }
            | ServerFrame::AuthOk { req, .. }
            | ServerFrame::Sent { req, .. }
            | ServerFrame::Subscribed { req, .. }
            | ServerFrame::Acked { req, .. }
            | ServerFrame::History { req, .. }
            | ServerFrame::RoomOk { req, .. }
            | ServerFrame::Rooms { req, .. }
            | ServerFrame::Members { req, .. }
            | ServerFrame::SearchResults { req, .. }
            | ServerFrame::ReadOk { req, .. }
            | ServerFrame::Unread { req, .. }
            | ServerFrame::LoggedOut { req }
            | ServerFrame::Pong { req } => Some(*req),
            ServerFrame::Error { req, .. } => *req,
            ServerFrame::Msg { .. }
            | ServerFrame::CaughtUp { .. }
            | ServerFrame::ReadMarker { .. } => None,
        }
    }

    /// Builds an error frame.
    pub fn error(req: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            req,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// The closed set of error codes a server sends. Clients branch on the code; the message is
/// for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be read (oversized, truncated).
    BadFrame,
    /// The frame was not valid JSON (or not UTF-8).
    BadJson,
    /// Valid JSON, known type, but missing or invalid fields.
    BadRequest,
    /// The `type` is not one this server knows.
    UnknownType,
    /// The `hello` named a protocol version this server does not speak, or was missing.
    UnsupportedVersion,
    /// The request needs an authenticated connection.
    NotAuthenticated,
    /// `login`/`auth` on a connection that is already authenticated.
    AlreadyAuthenticated,
    /// Wrong user name or password (the two are indistinguishable).
    InvalidCredentials,
    /// The token is unknown, revoked, or its user is gone.
    InvalidToken,
    /// The account is disabled by the operator.
    AccountDisabled,
    /// The session was revoked, or the account disabled or deleted, while connected.
    SessionRevoked,
    /// No such user to send to or read history with.
    UnknownRecipient,
    /// No such room.
    UnknownRoom,
    /// A room with that name exists already.
    RoomExists,
    /// The user is not a member of the room (or, for invite, already is one).
    NotMember,
    /// The user may not do this (not the owner, a private room, kicking the owner…).
    Forbidden,
    /// The body exceeds the server's limit (see `welcome.max_body`).
    MessageTooLarge,
    /// The message body is empty.
    EmptyMessage,
    /// A user name does not follow the documented syntax.
    InvalidName,
    /// Too many attempts; `retry_after_ms` says when to try again.
    RateLimited,
    /// The account has as many logged-in devices as the server allows; log one out first.
    TooManyDevices,
    /// This connection did not read its pushes fast enough and is closed; reconnect.
    SlowConsumer,
    /// A phase of the connection took too long.
    Timeout,
    /// The server is shutting down; reconnect later.
    ShuttingDown,
    /// Something failed inside the server; nothing was stored for this request.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::AccountDisabled => "account_disabled",
            ErrorCode::SessionRevoked => "session_revoked",
            ErrorCode::UnknownRecipient => "unknown_recipient",
            ErrorCode::UnknownRoom => "unknown_room",
            ErrorCode::RoomExists => "room_exists",
            ErrorCode::NotMember => "not_member",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::EmptyMessage => "empty_message",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyDevices => "too_many_devices",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::Timeout => "timeout",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fresh idempotency key: 32 hex digits, the current time in microseconds (13 digits)
/// then 76 random bits. Keys that grow with time land at the end of the server's unique
/// index on (key, sender), so a group commit touches one or two of its pages; 128 random
/// bits put every message of a commit on a different page of it (measured: about a fifth of
/// the pages each commit wrote). 76 random bits keep two keys made in the same microsecond
/// apart.
pub fn new_idempotency_key() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let random = rand::random::<u128>() & ((1u128 << 76) - 1);
    format!("{:013x}{random:019x}", micros & ((1u128 << 52) - 1))
}

/// Formats a server timestamp (microseconds since the Unix epoch) as RFC 3339 UTC.
pub fn format_timestamp(micros: i64) -> String {
    let nanos = i128::from(micros) * 1_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let fmt = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
            );
            t.format(&fmt).unwrap_or_else(|_| micros.to_string())
        }
        Err(_) => micros.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_unique_and_grow_with_time() {
        let a = new_idempotency_key();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_idempotency_key();
        assert_eq!((a.len(), b.len()), (32, 32));
        assert!(a < b, "{a} then {b}");
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        let many: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_idempotency_key()).collect();
        assert_eq!(many.len(), 10_000);
    }

    #[test]
    fn request_round_trips_with_type_tag() {
        let r = Request::Send {
            req: 7,
            to: "bob".into(),
            body: "two\nlines".into(),
            key: "k1".into(),
            action: false,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""type":"send""#), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let r = Request::Login {
            req: 1,
            user: "alice".into(),
            password: Secret::new("hunter2-hunter2"),
            device: None,
            proof: Some(Secret::new("proof-proof")),
        };
        assert!(!format!("{r:?}").contains("hunter2"));
        assert!(!format!("{r:?}").contains("proof-proof"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_timestamp(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
    }

    #[test]
    fn every_request_type_is_listed() {
        let samples = [
            r#"{"type":"hello","req":1,"version":1}"#,
            r#"{"type":"login","req":1,"user":"a","password":"p"}"#,
            r#"{"type":"auth","req":1,"token":"t"}"#,
            r#"{"type":"send","req":1,"to":"a","body":"b","key":"k"}"#,
            r#"{"type":"subscribe","req":1}"#,
            r#"{"type":"ack","req":1,"upto":3}"#,
            r#"{"type":"history","req":1,"peer":"a"}"#,
            r##"{"type":"room_create","req":1,"room":"#a"}"##,
            r##"{"type":"room_invite","req":1,"room":"#a","user":"b"}"##,
            r##"{"type":"room_join","req":1,"room":"#a"}"##,
            r##"{"type":"room_leave","req":1,"room":"#a"}"##,
            r##"{"type":"room_del","req":1,"room":"#a"}"##,
            r##"{"type":"room_kick","req":1,"room":"#a","user":"b"}"##,
            r#"{"type":"room_list","req":1}"#,
            r##"{"type":"room_members","req":1,"room":"#a"}"##,
            r#"{"type":"search","req":1,"query":"q","in":"bob"}"#,
            r#"{"type":"read","req":1,"conversation":"bob"}"#,
            r#"{"type":"unread","req":1}"#,
            r#"{"type":"logout","req":1}"#,
            r#"{"type":"ping","req":1}"#,
        ];
        assert_eq!(samples.len(), Request::TYPES.len());
        for s in samples {
            serde_json::from_str::<Request>(s).unwrap();
        }
    }
}
