//! The bounded write every session uses: a write to the peer that ends with an error when
//! it takes longer than the write timeout, and at once, with the kick's reason, when the
//! hub kicks the connection meanwhile. A peer that stops reading blocks a write; the hub
//! then fills its live queue and kicks it as a slow consumer, and the connection must end
//! then, releasing its queue, rather than when the write timeout is up.

use std::future::Future;
use std::time::Duration;

use tokio::time::timeout;

use super::Kicks;
use crate::protocol::ErrorCode;

/// Time a closing session gives each step of its goodbye: its last words to the peer, the
/// close (a TLS `close_notify`). A peer that does not read does not hold it longer.
pub(crate) const GOODBYE: Duration = Duration::from_secs(2);

/// Why a bounded write did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// The socket failed or the write timed out: nothing more can be written.
    Failed,
    /// The hub kicked the connection during the write, for this reason. What the write
    /// had left unwritten is abandoned; the peer may still be told the reason, briefly.
    Kicked(ErrorCode),
}

/// Runs `write` within `limit`, or until the hub kicks the connection through `kicks`,
/// whichever comes first.
pub(crate) async fn bounded_write<E>(
    limit: Duration,
    kicks: &mut Kicks,
    write: impl Future<Output = Result<(), E>>,
) -> Result<(), WriteError> {
    tokio::select! {
        written = timeout(limit, write) => match written {
            Ok(Ok(())) => Ok(()),
            _ => Err(WriteError::Failed),
        },
        code = kicks.next() => Err(WriteError::Kicked(code)),
    }
}
