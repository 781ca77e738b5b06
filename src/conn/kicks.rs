//! The kicks a registered connection receives from the hub: why it must close (a
//! revocation, a full live queue). A session waits on them beside everything else it
//! does, and every write it makes ([`super::write`]) ends when one arrives.

use tokio::sync::mpsc;

use crate::protocol::ErrorCode;

/// A connection's kick receiver; never yields before the connection is registered.
#[derive(Default)]
pub(crate) struct Kicks(Option<mpsc::Receiver<ErrorCode>>);

impl Kicks {
    /// No kicks: the connection is not registered (yet, or any more).
    pub(crate) fn none() -> Kicks {
        Kicks(None)
    }

    /// The kicks the hub sends through `rx`.
    pub(crate) fn from_hub(rx: mpsc::Receiver<ErrorCode>) -> Kicks {
        Kicks(Some(rx))
    }

    /// The next kick's reason. Pending for ever while there is none, including when the
    /// connection is not registered or the hub has dropped the registration.
    pub(crate) async fn next(&mut self) -> ErrorCode {
        if let Some(rx) = &mut self.0 {
            if let Some(code) = rx.recv().await {
                return code;
            }
        }
        std::future::pending().await
    }
}
