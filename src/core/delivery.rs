//! Delivery to a device: the backlog → live hand-off every front end uses. A helper task
//! streams the stored messages after the device's cursor, subscribes the connection to the
//! hub, streams what was committed meanwhile, then hands the live queue over; the front end
//! writes `caught_up` (or its equivalent) and forwards only live messages with higher ids.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::hub::LiveQueue;
use super::refusal::{CoreError, Refusal};
use super::ServerState;
use crate::auth::AuthedUser;
use crate::ids::{DeviceId, MessageId, UserId};
use crate::protocol::Message;
use crate::store::Store;

/// A device's delivery, once started: its cursor and the hand-off's events.
pub struct Subscription {
    /// The device's cursor: delivery starts after it.
    pub cursor: MessageId,
    /// Pages of the backlog, then `CaughtUp` with the live queue.
    pub events: mpsc::Receiver<BacklogEvent>,
}

impl ServerState {
    /// Starts delivery to `user`'s device on the registered connection `conn`: everything
    /// after the device's cursor, then live. Refused when the device no longer exists (it
    /// was revoked or logged out since the connection authenticated).
    pub async fn subscribe(
        self: &Arc<Self>,
        user: &AuthedUser,
        conn: u64,
    ) -> Result<Subscription, CoreError> {
        let cursor = self
            .store
            .device_cursor(user.device_id())
            .await?
            .ok_or(CoreError::Refused(Refusal::Revoked))?;
        Ok(Subscription {
            cursor,
            events: start_delivery(self, conn, user, cursor),
        })
    }
}

/// Messages fetched from the store per backlog page.
const BACKLOG_PAGE: u32 = 1000;

/// What the hand-off tells the session, in order: pages of the backlog, then once the
/// end of the backlog with the live queue (or a failure).
pub enum BacklogEvent {
    Page(Vec<Message>),
    CaughtUp { upto: MessageId, live: LiveQueue },
    Failed,
}

/// Streams the stored backlog after `cursor`, subscribes to live delivery, streams what was
/// committed meanwhile, then hands the live queue to the session.
/// Starts the backlog → live hand-off for a registered connection (`conn`) of `user`'s
/// device from `cursor`: a helper task streams the stored backlog, subscribes the
/// connection to the hub (with the server's live-queue limits) and hands over the live
/// queue. The native and IRC sessions both read its events.
pub(crate) fn start_delivery(
    state: &Arc<ServerState>,
    conn: u64,
    user: &AuthedUser,
    cursor: MessageId,
) -> mpsc::Receiver<BacklogEvent> {
    let (tx, rx) = mpsc::channel(2);
    let (user_id, device_id) = (user.user_id(), user.device_id());
    let hub = Arc::clone(&state.hub);
    let (capacity, max_bytes) = (state.limits.live_queue, state.limits.live_queue_bytes);
    let subscribe = move || hub.subscribe(conn, user_id, device_id, capacity, max_bytes);
    // The helper holds the store only (not the writer), so it never delays shutdown.
    tokio::spawn(stream_backlog(
        state.store.clone(),
        user_id,
        device_id,
        cursor,
        tx,
        subscribe,
    ));
    rx
}

async fn stream_backlog(
    store: Store,
    user_id: UserId,
    device_id: DeviceId,
    cursor: MessageId,
    tx: mpsc::Sender<BacklogEvent>,
    subscribe: impl FnOnce() -> Option<LiveQueue>,
) {
    // Phase 1: the bulk of the backlog, before subscribing, so the live queue only has to
    // hold what arrives during the last page.
    let Some(after) = drain_backlog(&store, user_id, device_id, cursor, &tx).await else {
        return;
    };
    let Some(live) = subscribe() else {
        return;
    };
    // Phase 2: anything committed before the subscription took effect.
    let Some(upto) = drain_backlog(&store, user_id, device_id, after, &tx).await else {
        return;
    };
    let _ = tx.send(BacklogEvent::CaughtUp { upto, live }).await;
}

/// Sends every stored message after `after` to the session, page by page; returns the last
/// id sent (or `after`), or `None` if the session is gone or the store failed.
async fn drain_backlog(
    store: &Store,
    user_id: UserId,
    device_id: DeviceId,
    mut after: MessageId,
    tx: &mpsc::Sender<BacklogEvent>,
) -> Option<MessageId> {
    loop {
        match store.backlog(user_id, device_id, after, BACKLOG_PAGE).await {
            Ok(page) if page.is_empty() => return Some(after),
            Ok(page) => {
                after = page.last().map_or(after, |m| MessageId(m.id));
                tx.send(BacklogEvent::Page(page)).await.ok()?;
            }
            Err(e) => {
                tracing::error!(error = %e, "backlog query failed");
                let _ = tx.send(BacklogEvent::Failed).await;
                return None;
            }
        }
    }
}
