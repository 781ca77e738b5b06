//! The single writer task: group commit for message inserts and cursor moves, and the one
//! place where room membership changes.
//!
//! The rules of membership (who may create, join, invite, leave, kick, delete, and who may
//! send to a room) are not here: they are pure functions in `membership`, over the in-memory
//! [`Rooms`] this task owns. The writer asks them, executes what they decide (SQL, ids, the
//! commit) and applies the decision to [`Rooms`] only after the commit; a refusal goes back to
//! the submitter as it was decided.
//!
//! Sessions submit [`NewMessage`]s, acks and [`RoomChange`]s through a bounded channel. The
//! task takes one operation, drains whatever else is already queued (up to [`MAX_BATCH`]),
//! and stores runs of sends and acks in one transaction with multi-row statements, handed to
//! SQLite's thread in one round trip: one `INSERT … ON CONFLICT DO NOTHING RETURNING id` per
//! 1,000 messages (the unique key index finds retries; only those are looked up, after the
//! commit) and one cursor update per 400 devices.
//! A room change splits the batch and commits on its own, in order, so every message is
//! checked against the membership in force at its id. After a commit the task hands the new
//! messages, in id order, to `on_commit` (the hub) and then answers the submitters. Because it
//! is the only inserter it assigns ids itself: strictly increasing in commit order.
//!
//! Every transaction here and in the store starts with `BEGIN IMMEDIATE`: a deferred
//! transaction that reads before it writes cannot wait for the write lock in WAL mode and
//! fails with SQLITE_BUSY at once when an admin command is writing.
//!
//! Room fan-out costs no copy of the body per member: a committed room message carries an
//! `Arc` of the member list in force at that id (one list shared by every message until the
//! membership changes), and the hub shares one encoded frame among all receiving
//! connections. On disk a room message is one row, whatever the number of members.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::{self, Checkpointer};
use super::membership::{Decision, Event, EventRoom, Refusal, Room, RoomChange, Rooms, Span};
use super::search::SearchIndex;
use super::{now_micros, StoreError};
use crate::ids::{DeviceId, MessageId, RoomId, UserId};
use crate::protocol::{format_timestamp, Message, MessageKind, RoomName, Username};

/// Most operations stored in one transaction.
pub const MAX_BATCH: usize = 4096;

/// Rows per multi-row INSERT (10 bound parameters each, under SQLite's 32,766 limit).
const INSERT_CHUNK: usize = 1000;

/// Depth of the submission queue; senders wait (backpressure) when it is full.
pub(super) const QUEUE_DEPTH: usize = 16 * 1024;

/// Called after each commit with the newly stored messages in id order.
pub type OnCommit = Box<dyn Fn(Vec<Delivery>) + Send + Sync>;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A user (id, name).
    User(UserId, Username),
    /// A room (id, name).
    Room(RoomId, RoomName),
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub sender_id: UserId,
    pub sender_name: String,
    pub sender_device_id: DeviceId,
    pub target: Target,
    pub body: String,
    /// Client-chosen idempotency key, unique per sender.
    pub key: String,
    /// An action (emote): shown as `* sender body`.
    pub action: bool,
}

/// The outcome of a send: where the message is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub id: MessageId,
    /// Microseconds since the Unix epoch.
    pub sent_at: i64,
    /// True when the key matched an earlier message; `id` is that message's.
    pub duplicate: bool,
}

/// Who receives a committed message.
#[derive(Debug, Clone)]
pub enum Audience {
    /// A direct message: the recipient (and the sender's other devices).
    Direct { recipient_id: UserId },
    /// A room message: the members at that point of the room's history (for a leave or kick,
    /// including the one leaving).
    Room { members: Arc<Vec<UserId>> },
}

/// A newly committed message with what the hub needs to route it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Message,
    pub sender_id: UserId,
    /// The sending device; `DeviceId(0)` for a membership event (no device sent it).
    pub sender_device_id: DeviceId,
    pub audience: Audience,
    /// The message was sent (not a membership event), so it moved the sender's read marker
    /// for the conversation up to its id; the sender's other devices are told.
    pub marks_read: bool,
}

/// Where the writer answers a submitter.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What a writer task drains from its queue (every backend's writer consumes the same).
pub(super) enum Op {
    Send(NewMessage, Reply<Committed>),
    Ack(AckOp),
    Room(RoomChange, Reply<(RoomId, MessageId)>),
    Reload(Reply<()>),
}

/// A cursor move to store.
pub(super) struct AckOp {
    pub(super) user_id: UserId,
    pub(super) device_id: DeviceId,
    pub(super) upto: MessageId,
    pub(super) done: Reply<()>,
}

/// Handle for submitting work to the writer task. Cheap to clone. When every handle is
/// dropped the task finishes the queued work and exits.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
}

impl Writer {
    /// A handle on a writer task that drains `tx`'s receiver.
    pub(super) fn new(tx: mpsc::Sender<Op>) -> Writer {
        Writer { tx }
    }

    /// Stores a message; resolves once it is committed (or found to be a duplicate).
    pub async fn send(&self, message: NewMessage) -> Result<Committed, StoreError> {
        self.queue_send(message).await?.await
    }

    /// Puts a message on the writer's queue now (waiting while the queue is full) and
    /// returns the wait for its commit. Messages queued one after another get ids in that
    /// order, whatever order their waits are later polled in: a session that reads several
    /// sends and waits for their answers together keeps them in the order it read them.
    pub async fn queue_send(
        &self,
        message: NewMessage,
    ) -> Result<BoxFuture<'static, Result<Committed, StoreError>>, StoreError> {
        self.enqueue(|done| Op::Send(message, done)).await
    }

    /// Moves a device's cursor (and the user's acknowledged mark) forward to `upto`;
    /// resolves once that is committed. Cursors never move backwards.
    pub async fn ack(
        &self,
        user_id: UserId,
        device_id: DeviceId,
        upto: MessageId,
    ) -> Result<(), StoreError> {
        self.submit(|done| {
            Op::Ack(AckOp {
                user_id,
                device_id,
                upto,
                done,
            })
        })
        .await
    }

    /// Applies a membership change; resolves with `(room id, event message id)` once
    /// committed, or with the reason it is not allowed.
    pub async fn change_room(&self, change: RoomChange) -> Result<(RoomId, MessageId), StoreError> {
        self.submit(|done| Op::Room(change, done)).await
    }

    /// Re-reads rooms and memberships from the database (after an operator deleted a room).
    pub async fn reload_rooms(&self) -> Result<(), StoreError> {
        self.submit(Op::Reload).await
    }

    async fn submit<T: Send + 'static>(
        &self,
        op: impl FnOnce(Reply<T>) -> Op,
    ) -> Result<T, StoreError> {
        self.enqueue(op).await?.await
    }

    /// Queues `op` (waiting while the queue is full); the returned future is its answer.
    async fn enqueue<T: Send + 'static>(
        &self,
        op: impl FnOnce(Reply<T>) -> Op,
    ) -> Result<BoxFuture<'static, Result<T, StoreError>>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(op(done))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        Ok(async move { wait.await.map_err(|_| StoreError::WriterGone)? }.boxed())
    }
}

pub(super) async fn start(
    pool: SqlitePool,
    options: &SqliteConnectOptions,
    search: &SearchIndex,
    on_commit: OnCommit,
) -> Result<(Writer, tokio::task::JoinHandle<()>), StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(id), 0), COALESCE(MAX(sent_at), 0) FROM messages")
        .fetch_one(&pool)
        .await?;
    // The writer owns one connection, outside the pool: readers never wait behind it for a
    // pooled connection, and its statements need not go through the pool.
    let conn = pool.acquire().await?.detach();
    let mut state = State {
        pool,
        conn,
        next_id: row.get::<i64, _>(0) + 1,
        last_sent_at: row.get(1),
        rooms: Rooms::default(),
        on_commit,
        wal_restart: Arc::new(AtomicBool::new(false)),
        committed: watch::Sender::new(row.get::<i64, _>(0)),
        abort_percent: std::env::var(FAULT_ENV)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .map_or(0, |p| p.min(100)),
    };
    if state.abort_percent > 0 {
        tracing::warn!(
            percent = state.abort_percent,
            "{FAULT_ENV} is set: the server will abort itself during commits"
        );
    }
    state.load_rooms().await?;
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let checkpointer = Checkpointer::start(options).await?;
    state.wal_restart = checkpointer.restart_wanted.clone();
    let indexer = search
        .start_indexer(options, state.committed.subscribe())
        .await?;
    // The writer runs on a thread of its own. Each commit awaits SQLite's worker thread; on
    // the shared runtime every one of those wake-ups would queue behind hundreds of busy
    // sessions (measured: ~25 ms per commit under load), which would bound throughput and
    // latency for everyone.
    let (finished, finished_rx) = oneshot::channel::<()>();
    super::spawn_thread("chatd-writer", async move {
        state.run(rx).await;
        indexer.stop();
        checkpointer.stop();
        let _ = finished.send(());
    })?;
    let handle = tokio::spawn(async move {
        let _ = finished_rx.await;
    });
    Ok((Writer { tx }, handle))
}

struct State {
    pool: SqlitePool,
    conn: SqliteConnection,
    next_id: i64,
    last_sent_at: i64,
    /// The live rooms and their members, as committed (the rules are in `membership`).
    rooms: Rooms,
    on_commit: OnCommit,
    /// The highest id committed so far, for the search indexer.
    committed: watch::Sender<i64>,
    /// Raised by the checkpointer when the WAL should start again (see [`checkpoint`]).
    wal_restart: Arc<AtomicBool>,
    /// Crash-test fault injection: the chance in percent that a group commit with sends
    /// aborts the process (see [`FAULT_ENV`]). Zero unless that variable is set.
    abort_percent: u32,
}

/// Environment variable for the crash-consistency test: `CHATD_FAULT_ABORT_IN_COMMIT=P`
/// makes each group commit with sends abort the whole process with probability P percent,
/// either in the middle of the batch (rows inserted, transaction open) or just after it
/// committed and before any sender was answered. `abort()` runs no destructors and flushes
/// nothing, like a power cut as far as the process can tell (the kernel's page cache does
/// survive it, which a real power cut would not; `synchronous=FULL` covers that case).
pub const FAULT_ENV: &str = "CHATD_FAULT_ABORT_IN_COMMIT";

/// Where an injected fault strikes.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    MidBatch,
    AfterCommit,
}

/// Where one send of the batch ended up.
enum Slot {
    New(usize),
    Existing(Committed),
    SameAs(usize),
    Refused(StoreError),
}

impl State {
    async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(op) = rx.recv().await {
            batch.push(op);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let mut sends = Vec::new();
            let mut acks = Vec::new();
            for op in batch.drain(..) {
                match op {
                    Op::Send(m, done) => sends.push((m, done)),
                    Op::Ack(ack) => acks.push(ack),
                    Op::Room(change, done) => {
                        // Everything queued before the change commits first.
                        self.process(std::mem::take(&mut sends), std::mem::take(&mut acks))
                            .await;
                        let result = self.change_room(change).await;
                        let _ = done.send(result);
                    }
                    Op::Reload(done) => {
                        self.process(std::mem::take(&mut sends), std::mem::take(&mut acks))
                            .await;
                        let _ = done.send(self.load_rooms().await.map(|_| ()));
                    }
                }
            }
            self.process(sends, acks).await;
        }
        if let Err(e) = self.conn.close().await {
            tracing::warn!(error = %e, "closing the writer's connection failed");
        }
        tracing::debug!("message writer stopped");
    }

    /// (Re-)reads the live rooms and their members. Rooms that were known and are gone now
    /// were deleted (by an operator, or by [`State::delete_room`]): each gets a `delete`
    /// event, pushed to the members it had. Returns `(room id, event id)` for those.
    async fn load_rooms(&mut self) -> Result<Vec<(RoomId, MessageId)>, StoreError> {
        let rooms = sqlx::query("SELECT id, name, owner_id, private FROM rooms WHERE deleted = 0")
            .fetch_all(&self.pool)
            .await?;
        let spans = sqlx::query(
            "SELECT s.room_id, s.user_id FROM room_spans s JOIN rooms r ON r.id = s.room_id \
             WHERE s.left_id IS NULL AND r.deleted = 0 ORDER BY s.room_id, s.user_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut members: HashMap<RoomId, Vec<UserId>> = HashMap::new();
        for s in spans {
            members
                .entry(RoomId(s.get(0)))
                .or_default()
                .push(UserId(s.get(1)));
        }
        let fresh: Rooms = rooms
            .into_iter()
            .map(|r| {
                let id = RoomId(r.get(0));
                let room = Room::new(
                    r.get(1),
                    UserId(r.get::<Option<i64>, _>(2).unwrap_or(0)),
                    r.get::<i64, _>(3) != 0,
                    members.remove(&id).unwrap_or_default(),
                );
                (id, room)
            })
            .collect();
        let gone = self.rooms.replace(fresh);
        let mut events = Vec::with_capacity(gone.len());
        for (room_id, room) in gone {
            if let Some(event_id) = self.announce_deletion(room_id, room).await? {
                events.push((room_id, event_id));
            }
        }
        Ok(events)
    }

    /// Stores the `delete` event of a room that was just deleted and pushes it to the
    /// members the room had (the room's history is no longer readable, so only live
    /// connections see it). `from` is the room's owner.
    async fn announce_deletion(
        &mut self,
        room_id: RoomId,
        room: Room,
    ) -> Result<Option<MessageId>, StoreError> {
        let event_id = self.next_id;
        let now = now_micros().max(self.last_sent_at);
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        let owner = sqlx::query("SELECT name FROM users WHERE id = ?")
            .bind(room.owner_id.get())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(owner) = owner.map(|r| r.get::<String, _>(0)) else {
            // A room without an owner (none is made that way) has no one to name as sender.
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO messages (id, sender_id, room_id, body, sent_at, client_key, kind) \
             VALUES (?, ?, ?, '', ?, ?, ?)",
        )
        .bind(event_id)
        .bind(room.owner_id.get())
        .bind(room_id.get())
        .bind(now)
        .bind(format!("\u{1}event:{event_id}"))
        .bind(MessageKind::Delete.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.next_id += 1;
        self.publish_committed(event_id);
        self.last_sent_at = now;
        let delivery = Delivery {
            message: Message {
                id: event_id,
                from: owner,
                to: format!("#{}", room.name),
                body: String::new(),
                sent_at: format_timestamp(now),
                kind: MessageKind::Delete,
                member: None,
                action: false,
            },
            sender_id: room.owner_id,
            sender_device_id: DeviceId(0),
            audience: Audience::Room {
                members: room.members,
            },
            marks_read: false,
        };
        (self.on_commit)(vec![delivery]);
        Ok(Some(MessageId(event_id)))
    }

    /// An owner's deletion: the operator's deletion ([`super::rooms::mark_room_deleted`]),
    /// then the same re-read of the rooms that tells the members. Returns `(room id, event
    /// id)`.
    async fn delete_room(
        &mut self,
        room_id: RoomId,
        name: &str,
    ) -> Result<(RoomId, MessageId), StoreError> {
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        super::rooms::mark_room_deleted(&mut tx, room_id, name).await?;
        tx.commit().await?;
        let events = self.load_rooms().await?;
        let event_id = events
            .iter()
            .find(|(id, _)| *id == room_id)
            .map_or(MessageId(0), |(_, e)| *e);
        Ok((room_id, event_id))
    }

    async fn process(&mut self, sends: Vec<(NewMessage, Reply<Committed>)>, acks: Vec<AckOp>) {
        if sends.is_empty() && acks.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let committed = self.commit(&sends, &acks).await;
        tracing::trace!(
            sends = sends.len(),
            acks = acks.len(),
            micros = started.elapsed().as_micros() as u64,
            "group commit"
        );
        match committed {
            Ok((slots, rows)) => {
                let mut deliveries = Vec::with_capacity(rows.len());
                let mut replies = Vec::with_capacity(sends.len());
                for ((m, done), slot) in sends.into_iter().zip(slots) {
                    let result = match slot {
                        Slot::New(i) => {
                            let (id, sent_at) = rows[i];
                            deliveries.push(self.delivery(m, MessageId(id), sent_at));
                            Ok(Committed {
                                id: MessageId(id),
                                sent_at,
                                duplicate: false,
                            })
                        }
                        Slot::Existing(c) => Ok(c),
                        Slot::SameAs(i) => Ok(Committed {
                            id: MessageId(rows[i].0),
                            sent_at: rows[i].1,
                            duplicate: true,
                        }),
                        Slot::Refused(e) => Err(e),
                    };
                    replies.push((done, result));
                }
                // Fan out before answering, so that whatever a sender does next (another
                // send, a history read) already sees the hub in the committed state.
                if !deliveries.is_empty() {
                    (self.on_commit)(deliveries);
                }
                for (done, result) in replies {
                    let _ = done.send(result);
                }
                for ack in acks {
                    let _ = ack.done.send(Ok(()));
                }
                if self.wal_restart.swap(false, Ordering::Relaxed) {
                    if let Err(e) = checkpoint::catch_up(&mut self.conn).await {
                        tracing::warn!(error = %e, "WAL checkpoint in the writer failed");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; {} sends refused", sends.len());
                for (_, done) in sends {
                    let _ = done.send(Err(StoreError::Database(e.to_string().into())));
                }
                for ack in acks {
                    let _ = ack
                        .done
                        .send(Err(StoreError::Database(e.to_string().into())));
                }
            }
        }
    }

    fn delivery(&self, m: NewMessage, id: MessageId, sent_at: i64) -> Delivery {
        text_delivery(&self.rooms, m, id, sent_at)
    }

    /// Why a send may not be stored, checked against the membership in force now.
    fn refusal(&self, m: &NewMessage) -> Option<StoreError> {
        send_refusal(&self.rooms, m)
    }

    /// Stores one batch in one transaction. Returns, per send, where it went, and the
    /// `(id, sent_at)` of each newly inserted row.
    async fn commit(
        &mut self,
        sends: &[(NewMessage, Reply<Committed>)],
        acks: &[AckOp],
    ) -> Result<(Vec<Slot>, Vec<(i64, i64)>), StoreError> {
        // One round trip to SQLite's thread: BEGIN, every write, COMMIT. A failure rolls
        // back.
        let result = self.commit_statements(sends, acks).await;
        if result.is_err() {
            // Also fails, harmlessly, when the failure was BEGIN itself.
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        }
        let (mut slots, rows, inserted) = result?;
        // Rows the unique index refused: the sender's key was already stored, by an earlier
        // commit (a retry). Rare; they are looked up after the commit, which cannot change
        // them.
        let conflicts: Vec<usize> = (0..rows.len())
            .filter(|i| !inserted.contains(&rows[*i].0))
            .collect();
        if !conflicts.is_empty() {
            let found = self.stored_keys(sends, &slots, &conflicts).await?;
            for slot in &mut slots {
                let row = match slot {
                    Slot::New(row) | Slot::SameAs(row) => *row,
                    _ => continue,
                };
                if inserted.contains(&rows[row].0) {
                    continue;
                }
                *slot = match found.get(&row) {
                    Some(c) => Slot::Existing(*c),
                    // Stored a moment ago and deleted since (an operator deleted its room).
                    None => Slot::Refused(StoreError::Database(
                        "the message with this key was deleted; send it again with a new key"
                            .into(),
                    )),
                };
            }
        }
        Ok((slots, rows))
    }

    /// Finds the stored messages whose keys the rows `conflicts` repeated: row index →
    /// where that message is stored.
    async fn stored_keys(
        &mut self,
        sends: &[(NewMessage, Reply<Committed>)],
        slots: &[Slot],
        conflicts: &[usize],
    ) -> Result<HashMap<usize, Committed>, StoreError> {
        // The send that made each row.
        let mut maker = vec![0; conflicts.iter().max().map_or(0, |m| m + 1)];
        for (i, slot) in slots.iter().enumerate() {
            if let Slot::New(row) = slot {
                if *row < maker.len() {
                    maker[*row] = i;
                }
            }
        }
        let mut found = HashMap::new();
        // One index probe per (key, sender) pair: a join against a VALUES list (a row-value
        // `IN` would scan the whole index).
        for chunk in conflicts.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("SELECT v.column3, m.id, m.sent_at FROM (");
            q.push_values(chunk, |mut b, &row| {
                let m = &sends[maker[row]].0;
                b.push_bind(m.key.as_str())
                    .push_bind(m.sender_id.get())
                    .push_bind(row as i64);
            });
            q.push(
                ") AS v CROSS JOIN messages m \
                 ON m.client_key = v.column1 AND m.sender_id = v.column2",
            );
            for r in q
                .build()
                .persistent(false)
                .fetch_all(&mut self.conn)
                .await?
            {
                let row = r.get::<i64, _>(0) as usize;
                found.insert(
                    row,
                    Committed {
                        id: MessageId(r.get(1)),
                        sent_at: r.get(2),
                        duplicate: true,
                    },
                );
            }
        }
        Ok(found)
    }

    /// Writes the batch in one transaction. Returns each send's slot, the rows offered to
    /// the table (id, sent_at) and the ids the table took: a row whose key the sender had
    /// already used is skipped by `ON CONFLICT DO NOTHING`, its id left unused.
    async fn commit_statements(
        &mut self,
        sends: &[(NewMessage, Reply<Committed>)],
        acks: &[AckOp],
    ) -> Result<(Vec<Slot>, Vec<(i64, i64)>, HashSet<i64>), StoreError> {
        let mut slots = Vec::with_capacity(sends.len());
        let mut fresh: Vec<usize> = Vec::new();
        let mut rows: Vec<(i64, i64)> = Vec::new();
        let mut in_batch: HashMap<(UserId, &str), usize> = HashMap::new();
        let now = now_micros().max(self.last_sent_at);
        let next_id = self.next_id;
        for (i, (m, _)) in sends.iter().enumerate() {
            let k = (m.sender_id, m.key.as_str());
            if let Some(&row) = in_batch.get(&k) {
                slots.push(Slot::SameAs(row));
            } else if let Some(refusal) = self.refusal(m) {
                slots.push(Slot::Refused(refusal));
            } else {
                let row = rows.len();
                rows.push((next_id + row as i64, now));
                in_batch.insert(k, row);
                fresh.push(i);
                slots.push(Slot::New(row));
            }
        }

        let mut q = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE;");
        for (chunk_no, chunk) in fresh.chunks(INSERT_CHUNK).enumerate() {
            q.push(
                " INSERT INTO messages (id, sender_id, sender_device_id, recipient_id, room_id, \
                 body, sent_at, client_key, kind, action) ",
            );
            q.push_values(chunk.iter().enumerate(), |mut b, (j, &i)| {
                let m = &sends[i].0;
                let (id, sent_at) = rows[chunk_no * INSERT_CHUNK + j];
                let (recipient, room) = match &m.target {
                    Target::User(id, _) => (Some(id.get()), None),
                    Target::Room(id, _) => (None, Some(id.get())),
                };
                b.push_bind(id)
                    .push_bind(m.sender_id.get())
                    .push_bind(m.sender_device_id.get())
                    .push_bind(recipient)
                    .push_bind(room)
                    .push_bind(m.body.as_str())
                    .push_bind(sent_at)
                    .push_bind(m.key.as_str())
                    .push_bind("text")
                    .push_bind(i64::from(m.action));
            });
            q.push(" ON CONFLICT (client_key, sender_id) DO NOTHING RETURNING id;");
        }
        push_read_markers(&mut q, sends, &fresh, &rows);
        if !acks.is_empty() {
            let (devices, users) = highest_acks(acks);
            push_update_max(&mut q, "devices", "cursor", &devices);
            push_update_max(&mut q, "users", "acked_upto", &users);
        }
        let fault = self.fault(sends.is_empty());
        if fault == Fault::MidBatch {
            q.build().persistent(false).execute(&mut self.conn).await?;
            tracing::error!("{FAULT_ENV}: aborting in the middle of a batch");
            std::process::abort();
        }
        q.push(" COMMIT;");
        let inserted: HashSet<i64> = q
            .build()
            .persistent(false)
            .fetch_all(&mut self.conn)
            .await?
            .iter()
            .map(|r| r.get::<i64, _>(0))
            .collect();
        if fault == Fault::AfterCommit {
            tracing::error!("{FAULT_ENV}: aborting after a commit, before any reply");
            std::process::abort();
        }
        self.next_id += rows.len() as i64;
        self.last_sent_at = now;
        if let Some(&newest) = inserted.iter().max() {
            self.publish_committed(newest);
        }
        Ok((slots, rows, inserted))
    }

    /// Tells the search indexer the highest id stored so far. Called before any submitter
    /// hears of the commit, so that a search made after a `sent` waits for that message. The
    /// id of a row refused as a retry is never published: after a restart the writer starts
    /// again from the highest stored id, and an index that had recorded a higher one would
    /// look ahead of the database (and be rebuilt).
    fn publish_committed(&self, newest: i64) {
        self.committed.send_if_modified(|v| {
            let newer = newest > *v;
            if newer {
                *v = newest;
            }
            newer
        });
    }

    /// Draws an injected fault for a commit (never for one with acks only).
    fn fault(&self, acks_only: bool) -> Fault {
        use rand::Rng;
        if self.abort_percent == 0 || acks_only {
            return Fault::None;
        }
        let mut rng = rand::thread_rng();
        if rng.gen_range(0..100) >= self.abort_percent {
            Fault::None
        } else if rng.gen_bool(0.5) {
            Fault::MidBatch
        } else {
            Fault::AfterCommit
        }
    }

    /// Decides one membership change (module `membership`) and, when allowed, carries it
    /// out: commits its event, or deletes the room. Returns `(room id, event id)`.
    async fn change_room(&mut self, change: RoomChange) -> Result<(RoomId, MessageId), StoreError> {
        match self.rooms.decide(&change)? {
            Decision::Event(event) => self.store_event(event).await,
            Decision::Delete { room_id, name } => self.delete_room(room_id, &name).await,
        }
    }

    /// Commits a membership event (for a creation, with its room) and the span it opens or
    /// closes; then applies it to the in-memory membership and fans it out to its audience.
    /// Returns `(room id, event id)`.
    async fn store_event(&mut self, event: Event) -> Result<(RoomId, MessageId), StoreError> {
        let event_id = self.next_id;
        let now = now_micros().max(self.last_sent_at);
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        let room_id = match &event.room {
            EventRoom::New { name, private } => {
                let inserted = sqlx::query(
                    "INSERT INTO rooms (name, created_at, owner_id, private) VALUES (?, ?, ?, ?) \
                     RETURNING id",
                )
                .bind(name)
                .bind(now)
                .bind(event.by.0.get())
                .bind(*private as i64)
                .fetch_one(&mut *tx)
                .await;
                match inserted {
                    Ok(row) => RoomId(row.get(0)),
                    // Names are the database's to keep unique (see `membership`).
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        return Err(Refusal::RoomExists { room: name.clone() }.into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            EventRoom::Live { id, .. } => *id,
        };
        sqlx::query(
            "INSERT INTO messages (id, sender_id, room_id, body, sent_at, client_key, kind, member_id) \
             VALUES (?, ?, ?, '', ?, ?, ?, ?)",
        )
        .bind(event_id)
        .bind(event.by.0.get())
        .bind(room_id.get())
        .bind(now)
        // Control characters are refused in client keys, so this can never collide.
        .bind(format!("\u{1}event:{event_id}"))
        .bind(event.kind.as_str())
        .bind(event.member.as_ref().map(|m| m.0.get()))
        .execute(&mut *tx)
        .await?;
        match event.span {
            Span::Opens(user) => {
                sqlx::query(
                    "INSERT INTO room_spans (room_id, user_id, joined_id) VALUES (?, ?, ?)",
                )
                .bind(room_id.get())
                .bind(user.get())
                .bind(event_id)
                .execute(&mut *tx)
                .await?;
            }
            Span::Closes(user) => {
                sqlx::query(
                    "UPDATE room_spans SET left_id = ? WHERE room_id = ? AND user_id = ? AND left_id IS NULL",
                )
                .bind(event_id)
                .bind(room_id.get())
                .bind(user.get())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        self.next_id += 1;
        self.publish_committed(event_id);
        self.last_sent_at = now;

        self.rooms.apply(room_id, &event);
        let delivery = Delivery {
            message: Message {
                id: event_id,
                from: event.by.1,
                to: format!("#{}", event.room.name()),
                body: String::new(),
                sent_at: format_timestamp(now),
                kind: event.kind,
                member: event.member.map(|m| m.1),
                action: false,
            },
            sender_id: event.by.0,
            sender_device_id: DeviceId(0),
            audience: Audience::Room {
                members: event.audience,
            },
            marks_read: false,
        };
        (self.on_commit)(vec![delivery]);
        Ok((room_id, MessageId(event_id)))
    }
}

/// Adds the statements by which sending marks a conversation read up to the sender's own
/// message, as every chat client does: per sender and conversation, the marker rises to the
/// highest id of the batch (`fresh` are the sends offered as `rows`, in order). A row the
/// table refused as a retry has no message behind its id and moves nothing.
fn push_read_markers(
    q: &mut QueryBuilder<'_, Sqlite>,
    sends: &[(NewMessage, Reply<Committed>)],
    fresh: &[usize],
    rows: &[(i64, i64)],
) {
    // (sender, is a room, target id) → (highest id, the send naming the conversation).
    let mut highest: HashMap<(UserId, bool, i64), (i64, usize)> = HashMap::new();
    for (row, &i) in fresh.iter().enumerate() {
        let m = &sends[i].0;
        let target = match &m.target {
            Target::User(id, _) => (false, id.get()),
            Target::Room(id, _) => (true, id.get()),
        };
        let id = rows[row].0;
        let entry = highest
            .entry((m.sender_id, target.0, target.1))
            .or_insert((id, i));
        if id > entry.0 {
            *entry = (id, i);
        }
    }
    let markers: Vec<(i64, String, i64)> = highest
        .into_values()
        .map(|(id, i)| {
            let m = &sends[i].0;
            let conversation = match &m.target {
                // `bob` or `#room`: the names' `Display`.
                Target::User(_, name) => name.to_string(),
                Target::Room(_, name) => name.to_string(),
            };
            (m.sender_id.get(), conversation, id)
        })
        .collect();
    for chunk in markers.chunks(INSERT_CHUNK) {
        q.push(
            " INSERT INTO read_markers (user_id, conversation, upto) \
             SELECT column1, column2, column3 FROM (",
        );
        q.push_values(chunk, |mut b, (user, conversation, upto)| {
            b.push_bind(*user)
                .push_bind(conversation.clone())
                .push_bind(*upto);
        });
        q.push(
            ") WHERE EXISTS (SELECT 1 FROM messages WHERE id = column3) \
             ON CONFLICT (user_id, conversation) DO UPDATE SET upto = MAX(upto, excluded.upto);",
        );
    }
}

/// `UPDATE table SET column = MAX(column, v) WHERE id = k` for every `(k, v)`, in one
/// statement per 400 pairs.
/// Adds statements raising `table.column` to at least the given value for each id.
fn push_update_max(
    q: &mut QueryBuilder<'_, Sqlite>,
    table: &str,
    column: &str,
    values: &HashMap<i64, i64>,
) {
    let pairs: Vec<(i64, i64)> = values.iter().map(|(k, v)| (*k, *v)).collect();
    for chunk in pairs.chunks(400) {
        q.push(" WITH v(k, upto) AS (");
        q.push_values(chunk, |mut b, (k, upto)| {
            b.push_bind(*k).push_bind(*upto);
        });
        q.push(format!(
            ") UPDATE {table} SET {column} = MAX({column}, \
             (SELECT upto FROM v WHERE v.k = {table}.id)) WHERE id IN (SELECT k FROM v);"
        ));
    }
}

/// What the hub gets for a stored send with id `id`: a room message goes to the room's
/// members in `rooms` now (every backend's writer calls this right after its commit).
pub(super) fn text_delivery(rooms: &Rooms, m: NewMessage, id: MessageId, sent_at: i64) -> Delivery {
    let (to, audience) = match m.target {
        Target::User(recipient_id, name) => (name.to_string(), Audience::Direct { recipient_id }),
        Target::Room(room_id, name) => {
            let members = rooms.members(room_id);
            (name.to_string(), Audience::Room { members })
        }
    };
    Delivery {
        message: Message {
            id: id.get(),
            from: m.sender_name,
            to,
            body: m.body,
            sent_at: format_timestamp(sent_at),
            kind: MessageKind::Text,
            member: None,
            action: m.action,
        },
        sender_id: m.sender_id,
        sender_device_id: m.sender_device_id,
        audience,
        marks_read: true,
    }
}

/// Why a send may not be stored, checked against the membership in `rooms` now.
pub(super) fn send_refusal(rooms: &Rooms, m: &NewMessage) -> Option<StoreError> {
    let Target::Room(room_id, name) = &m.target else {
        return None;
    };
    rooms
        .may_send(m.sender_id, *room_id, name.as_str())
        .err()
        .map(StoreError::from)
}

/// The highest id a batch's acks acknowledge, per device and per user (ids as stored).
pub(super) fn highest_acks(acks: &[AckOp]) -> (HashMap<i64, i64>, HashMap<i64, i64>) {
    let mut devices: HashMap<i64, i64> = HashMap::new();
    let mut users: HashMap<i64, i64> = HashMap::new();
    for ack in acks {
        let upto = ack.upto.get();
        let d = devices.entry(ack.device_id.get()).or_insert(upto);
        *d = (*d).max(upto);
        let u = users.entry(ack.user_id.get()).or_insert(upto);
        *u = (*u).max(upto);
    }
    (devices, users)
}
