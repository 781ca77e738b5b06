//! Why the core did not do what a user asked: typed refusals, made once here and put into
//! words by each front end (an `error` frame with its code for the native protocol, a
//! numeric for IRC). A refusal is a fact about the request; a failure of the server itself
//! is [`CoreError::Internal`], which front ends log and answer generically.

use std::time::Duration;

use crate::protocol::{NameError, RoomNameError};
use crate::store::StoreError;

/// A request the core refused, with what a front end needs to explain it.
#[derive(Debug)]
pub enum Refusal {
    /// The connection's rate bucket is empty; a token is back after `retry_after`.
    RateLimited { retry_after: Duration },
    /// `name` cannot be a user name.
    BadUserName { name: String, problem: NameError },
    /// `name` cannot be a room name.
    BadRoomName {
        name: String,
        problem: RoomNameError,
    },
    /// No account has this name.
    UnknownUser { name: String },
    /// No live room has this name (`name` as the user wrote it).
    UnknownRoom { name: String },
    /// The caller may not read this room (history, search, read markers): not a member.
    NotMember { room: String },
    /// A private room's member list, asked for by someone who is not a member.
    MembersHidden { room: String },
    /// An invite or kick by someone who is not a member of the room.
    OutsideRoom { room: String, action: MemberAction },
    /// A membership change or a send the room rules refuse.
    Room(RoomRefusal),
    /// A message body with nothing but white space.
    EmptyMessage,
    /// A message body over the server's limit.
    MessageTooLarge { size: usize, max: usize },
    /// An idempotency key that is empty, too long, or has control characters.
    BadKey { max: usize },
    /// The caller's device no longer exists: revoked, logged out or its account disabled.
    Revoked,
    /// A page size of 0.
    ZeroLimit,
    /// A search with no word in it.
    NoSearchWords,
}

/// What a member may do to another user of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberAction {
    Invite,
    Kick,
}

/// A refusal by the room rules (`store::membership`), as the writer reports it.
pub use crate::store::Refusal as RoomRefusal;
pub use crate::store::RoomAction;

/// What a core operation can end with besides its result.
#[derive(Debug)]
pub enum CoreError {
    /// The request is refused: tell the user why.
    Refused(Refusal),
    /// The server failed (the database, the writer): log it, answer generically.
    Internal(StoreError),
}

impl From<Refusal> for CoreError {
    fn from(r: Refusal) -> Self {
        CoreError::Refused(r)
    }
}

impl From<StoreError> for CoreError {
    /// A store error is a refusal when the room rules made it, a failure otherwise.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(r) => CoreError::Refused(Refusal::Room(r)),
            other => CoreError::Internal(other),
        }
    }
}

impl std::fmt::Display for CoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoreError::Refused(r) => write!(f, "refused: {r:?}"),
            CoreError::Internal(e) => write!(f, "{e}"),
        }
    }
}
