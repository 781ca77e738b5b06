//! What each operation costs from a connection's rate bucket. Every front end charges its
//! requests through [`charge`] with the [`Operation`] the request is, so the same operation
//! costs the same on every front end: writes and the reads that query the database
//! (history, search, unread counts, member lists, room lists, read markers, user lookups)
//! take a token; keeping the connection alive, subscribing, acknowledging and logging out
//! do not (acknowledging is bounded by what was delivered).

use super::refusal::Refusal;
use crate::bucket::TokenBucket;

/// An operation a user can ask for, as far as its rate cost goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Send a message (direct or to a room).
    Send,
    /// Create, join, invite to, leave, kick from or delete a room.
    RoomChange,
    /// A page of a conversation's history.
    History,
    /// A full-text search.
    Search,
    /// Unread counts.
    Unread,
    /// A room's member list.
    Members,
    /// The list of rooms.
    RoomList,
    /// Read or move a read marker.
    ReadMarker,
    /// Look a user up by name.
    LookupUser,
    /// Subscribe to delivery.
    Subscribe,
    /// Acknowledge delivered messages.
    Ack,
    /// Keepalive.
    Ping,
    /// End the session.
    Logout,
    /// Say hello, log in, resume: throttled by auth's own budgets instead.
    Authenticate,
}

impl Operation {
    /// Tokens the operation takes from the connection's bucket.
    pub fn cost(self) -> u32 {
        match self {
            Operation::Send
            | Operation::RoomChange
            | Operation::History
            | Operation::Search
            | Operation::Unread
            | Operation::Members
            | Operation::RoomList
            | Operation::ReadMarker
            | Operation::LookupUser => 1,
            Operation::Subscribe
            | Operation::Ack
            | Operation::Ping
            | Operation::Logout
            | Operation::Authenticate => 0,
        }
    }
}

/// Charges `op` to a connection's bucket, or refuses it with the time until a token is back.
pub fn charge(bucket: &mut TokenBucket, op: Operation) -> Result<(), Refusal> {
    for _ in 0..op.cost() {
        bucket
            .take()
            .map_err(|retry_after| Refusal::RateLimited { retry_after })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn charged_operations_empty_the_bucket_and_free_ones_do_not() {
        let mut bucket = TokenBucket::new(1, 2);
        assert!(charge(&mut bucket, Operation::Ack).is_ok());
        assert!(charge(&mut bucket, Operation::Members).is_ok());
        assert!(charge(&mut bucket, Operation::Send).is_ok());
        for op in [Operation::Ping, Operation::Ack, Operation::Subscribe] {
            assert!(charge(&mut bucket, op).is_ok(), "{op:?} must be free");
        }
        match charge(&mut bucket, Operation::RoomList) {
            Err(Refusal::RateLimited { retry_after }) => assert!(retry_after.as_millis() > 0),
            other => panic!("expected a rate refusal, got {other:?}"),
        }
    }
}
