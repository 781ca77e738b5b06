//! Cross-node delivery: each node tails the messages table by id and feeds its hub one
//! ordered stream, whichever node stored each message.
//!
//! The tail remembers the highest id it has handed to the hub (`seen`). It reads
//! `WHERE id > seen ORDER BY id` when woken:
//! - by `LISTEN` on [`CHANNEL`] (every commit of every node sends one `NOTIFY`, whose
//!   payload is the new highest id; a payload not above `seen` is ignored);
//! - by a timer ([`POLL`]), which bounds how late a lost notification can make a message;
//! - after every reconnect of the listener (notifications sent while it was away are lost,
//!   the re-read makes that harmless);
//! - by this node's writer when its own commit does not follow `seen` directly.
//!
//! Ids are dense and visible in id order (module `writer`), so this node's own commit can
//! go to the hub at once, from memory ([`Tail::offer`]), whenever its first id is `seen + 1`;
//! otherwise something from another node came between, and the tail reads the table.
//! The audience of a room message read from the table is the room's membership spans at its
//! id: exactly what the writer that stored it had in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::messages::{message_from_row, COLUMNS, JOINS};
use super::PostgresStore;
use crate::ids::{DeviceId, MessageId, UserId};
use crate::protocol::MessageKind;
use crate::store::writer::{Audience, Delivery, OnCommit};
use crate::store::StoreError;

/// The notification channel every commit rings.
pub(super) const CHANNEL: &str = "chatd_messages";

/// The notification channel of read-marker moves: `TOKEN:USER:UPTO:CONVERSATION`, where
/// `TOKEN` tells the sending process's own notifications from other nodes'.
pub(super) const READ_CHANNEL: &str = "chatd_read_markers";

/// How often the tail reads without being told to.
pub(super) const POLL: Duration = Duration::from_millis(500);

/// Rows per read.
const PAGE: i64 = 2000;

/// The application name of the listening connection (what an operator, or a test, finds it
/// by in `pg_stat_activity`).
pub const LISTENER_NAME: &str = "chatd-listen";

/// A node's tail: the task reading the table, and the state the writer shares with it.
pub(super) struct Tail {
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    /// The highest id handed to the hub. The hub is fed only while this is held, so its
    /// input is in id order without gaps or repeats.
    seen: Mutex<i64>,
    /// `seen`, for whoever follows it (the search indexer).
    progress: watch::Sender<i64>,
    on_commit: OnCommit,
    wake: Notify,
    pool: PgPool,
    /// This process's token in read-marker notifications, and what to call for others'.
    token: u64,
    read_hook: Arc<std::sync::OnceLock<crate::store::ReadMarkerHook>>,
}

impl Tail {
    /// Starts from the last id stored now (older messages reach devices as backlog).
    pub(super) async fn start(
        store: &PostgresStore,
        on_commit: OnCommit,
    ) -> Result<Tail, StoreError> {
        let seen: i64 = sqlx::query("SELECT last_id FROM id_counter")
            .fetch_one(&store.pool)
            .await?
            .get(0);
        let shared = Arc::new(Shared {
            seen: Mutex::new(seen),
            progress: watch::channel(seen).0,
            on_commit,
            wake: Notify::new(),
            pool: store.pool.clone(),
            token: store.token,
            read_hook: Arc::clone(&store.read_hook),
        });
        // The listener gets a pool of its own (one connection) under its own name.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(store.options.clone().application_name(LISTENER_NAME));
        let mut listener = PgListener::connect_with(&listen_pool).await?;
        listener.listen_all([CHANNEL, READ_CHANNEL]).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(Arc::clone(&shared), listener, stop.clone()));
        Ok(Tail {
            shared,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// This node's writer committed `deliveries` (consecutive ids, in order): they go to the
    /// hub now if they follow what it has; else the tail reads the table.
    pub(super) fn offer(&self, deliveries: Vec<Delivery>) {
        let mut seen = self.shared.lock_seen();
        let fresh: Vec<Delivery> = deliveries
            .into_iter()
            .filter(|d| d.message.id > *seen)
            .collect();
        let Some(first) = fresh.first() else { return };
        if first.message.id == *seen + 1 {
            *seen = fresh.last().map_or(*seen, |d| d.message.id);
            self.shared.progress.send_replace(*seen);
            (self.shared.on_commit)(fresh);
        } else {
            drop(seen);
            self.wake();
        }
    }

    /// Follows the highest id handed to the hub.
    pub(super) fn progress(&self) -> watch::Receiver<i64> {
        self.shared.progress.subscribe()
    }

    /// Asks the tail to read the table now.
    pub(super) fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Stops the task.
    pub(super) async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Shared {
    fn lock_seen(&self) -> std::sync::MutexGuard<'_, i64> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads everything above `seen` and hands it to the hub, page by page.
    async fn catch_up(&self) -> Result<(), StoreError> {
        loop {
            let from = *self.lock_seen();
            let sql = format!(
                "SELECT {COLUMNS}, m.sender_id, m.sender_device_id, m.recipient_id, m.room_id \
                 FROM messages m {JOINS} WHERE m.id > $1 ORDER BY m.id LIMIT $2"
            );
            let rows = sqlx::query(&sql)
                .bind(from)
                .bind(PAGE)
                .fetch_all(&self.pool)
                .await?;
            if rows.is_empty() {
                return Ok(());
            }
            let full = rows.len() as i64 == PAGE;
            let deliveries = self.deliveries(&rows).await?;
            {
                let mut seen = self.lock_seen();
                let fresh: Vec<Delivery> = deliveries
                    .into_iter()
                    .filter(|d| d.message.id > *seen)
                    .collect();
                if let Some(last) = fresh.last() {
                    *seen = last.message.id;
                    self.progress.send_replace(*seen);
                    (self.on_commit)(fresh);
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The deliveries of `rows` (in id order), room audiences from the membership spans.
    async fn deliveries(&self, rows: &[PgRow]) -> Result<Vec<Delivery>, StoreError> {
        let mut room_ids: Vec<i64> = rows
            .iter()
            .filter_map(|r| r.get::<Option<i64>, _>(11))
            .collect();
        room_ids.sort_unstable();
        room_ids.dedup();
        let mut spans: HashMap<i64, Vec<(i64, i64, Option<i64>)>> = HashMap::new();
        if !room_ids.is_empty() {
            let (lo, hi) = (
                rows.first().map_or(0, |r| r.get::<i64, _>(0)),
                rows.last().map_or(0, |r| r.get::<i64, _>(0)),
            );
            let found = sqlx::query(
                "SELECT room_id, user_id, joined_id, left_id FROM room_spans \
                 WHERE room_id = ANY($1) AND joined_id <= $2 \
                 AND (left_id IS NULL OR left_id >= $3)",
            )
            .bind(&room_ids)
            .bind(hi)
            .bind(lo)
            .fetch_all(&self.pool)
            .await?;
            for s in found {
                spans
                    .entry(s.get(0))
                    .or_default()
                    .push((s.get(1), s.get(2), s.get(3)));
            }
        }
        // Consecutive messages of a room with the same members share one list.
        let mut last_members: HashMap<i64, Arc<Vec<UserId>>> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let message = message_from_row(r);
            let sender_id = UserId(r.get(8));
            let sender_device_id = DeviceId(r.get::<Option<i64>, _>(9).unwrap_or(0));
            let audience = match (r.get::<Option<i64>, _>(10), r.get::<Option<i64>, _>(11)) {
                (Some(recipient), _) => Audience::Direct {
                    recipient_id: UserId(recipient),
                },
                (None, Some(room)) => {
                    let id = message.id;
                    let mut members: Vec<UserId> = spans
                        .get(&room)
                        .into_iter()
                        .flatten()
                        .filter(|(_, joined, left)| *joined <= id && left.is_none_or(|l| l >= id))
                        .map(|(user, _, _)| UserId(*user))
                        .collect();
                    members.sort_unstable();
                    members.dedup();
                    let shared = match last_members.get(&room) {
                        Some(list) if **list == members => Arc::clone(list),
                        _ => {
                            let list = Arc::new(members);
                            last_members.insert(room, Arc::clone(&list));
                            list
                        }
                    };
                    Audience::Room { members: shared }
                }
                (None, None) => continue,
            };
            let marks_read = message.kind == MessageKind::Text;
            out.push(Delivery {
                message,
                sender_id,
                sender_device_id,
                audience,
                marks_read,
            });
        }
        Ok(out)
    }
}

/// What the listening task reports.
enum Heard {
    /// A commit somewhere stored ids up to this one (unparsable payloads read anyway).
    Upto(Option<i64>),
    /// A process (`token`) moved `user`'s read marker of `conversation` to `upto`.
    Marker {
        token: u64,
        user: UserId,
        upto: MessageId,
        conversation: String,
    },
    /// The connection was lost (and is being made again): what was sent meanwhile is lost.
    Lost,
}

/// Parses a read-marker notification (see [`READ_CHANNEL`]).
fn parse_marker(payload: &str) -> Option<Heard> {
    let mut parts = payload.splitn(4, ':');
    let token = parts.next()?.parse().ok()?;
    let user = UserId(parts.next()?.parse().ok()?);
    let upto = MessageId(parts.next()?.parse().ok()?);
    let conversation = parts.next()?.to_string();
    Some(Heard::Marker {
        token,
        user,
        upto,
        conversation,
    })
}

/// Waits for notifications in a task of its own (a wait is never cancelled half-way).
async fn listen(mut listener: PgListener, heard: tokio::sync::mpsc::Sender<Heard>) {
    loop {
        let event = match listener.try_recv().await {
            Ok(Some(n)) if n.channel() == READ_CHANNEL => match parse_marker(n.payload()) {
                Some(marker) => marker,
                None => continue,
            },
            Ok(Some(n)) => Heard::Upto(n.payload().parse().ok()),
            Ok(None) => {
                tracing::warn!("the database listener lost its connection; reconnecting");
                Heard::Lost
            }
            Err(e) => {
                tracing::warn!(error = %e, "the database listener failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                Heard::Lost
            }
        };
        if heard.send(event).await.is_err() {
            return;
        }
    }
}

async fn run(shared: Arc<Shared>, listener: PgListener, stop: CancellationToken) {
    let (heard_tx, mut heard) = tokio::sync::mpsc::channel(1024);
    let listening = tokio::spawn(listen(listener, heard_tx));
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => break,
            _ = shared.wake.notified() => true,
            _ = tick.tick() => true,
            event = heard.recv() => match event {
                Some(Heard::Upto(Some(id))) => id > *shared.lock_seen(),
                Some(Heard::Upto(None) | Heard::Lost) => true,
                Some(Heard::Marker { token, user, upto, conversation }) => {
                    if token != shared.token {
                        if let Some(hook) = shared.read_hook.get() {
                            hook(user, conversation, upto);
                        }
                    }
                    false
                }
                // The listening task is gone (it never ends by itself): the timer carries on.
                None => {
                    tokio::time::sleep(POLL).await;
                    true
                }
            },
        };
        if read {
            if let Err(e) = shared.catch_up().await {
                tracing::warn!(error = %e, "reading new messages failed; retrying");
            }
        }
    }
    listening.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_marker_notifications_parse_and_bad_ones_are_ignored() {
        match parse_marker("42:7:1001:#ops:x") {
            Some(Heard::Marker {
                token,
                user,
                upto,
                conversation,
            }) => {
                assert_eq!((token, user, upto), (42, UserId(7), MessageId(1001)));
                assert_eq!(conversation, "#ops:x", "the conversation is the rest");
            }
            _ => panic!("a good payload did not parse"),
        }
        for bad in ["", "42", "42:7", "42:7:x:bob", "x:7:1:bob", "42:y:1:bob"] {
            assert!(parse_marker(bad).is_none(), "{bad:?} parsed");
        }
    }
}
