//! The PostgreSQL writer task: one per node, draining the same operations as SQLite's
//! (`store/writer.rs`) with the same group commit, with ids taken from the cluster-wide
//! counter row.
//!
//! A batch of sends is stored by one call of the SQL function `chatd_store_sends`
//! (migrations/postgres/0002): one round trip and one transaction, where the group commit
//! once took eight statements. The function locks the one row of `id_counter` first and
//! moves it on last, so:
//! - ids are assigned in commit order across every node (the lock is held until COMMIT), a
//!   higher id is never visible before a lower one, and a rolled-back batch gives its ids
//!   back (ids are dense);
//! - the idempotency lookup of a batch's keys runs under the lock: a key retried on another
//!   node finds the first node's message, never a race;
//! - the membership version on the row tells whether this node's room map is current: the
//!   writer checks the sends against its map before the call and passes the version it
//!   read; when another node (or an admin command) changed a room since, the function stores
//!   nothing, and the writer re-reads the rooms and checks the batch again. So a change made
//!   on node B applies to a send on node A at the very next id.
//!
//! Room changes are rare and keep a transaction of their own ([`lock_counter`] …
//! [`advance_counter`]).
//!
//! Cursor moves (acks) never take the row: they commute (`GREATEST`). A batch of acks alone is
//! one call of `chatd_store_acks`; acks and read markers that arrive with sends ride in the
//! sends' call (one WAL flush instead of two), after the lock is taken.
//!
//! After COMMIT the new messages go to the node's [`Tail`] (which hands them to the hub at
//! once when nothing from another node came between) and then the submitters are answered.
//! One `NOTIFY` per commit (its payload the new highest id) wakes the other nodes' tails.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::{mpsc, oneshot};

use super::indexer::Indexer;
use super::tail::{Tail, CHANNEL};
use super::PostgresStore;
use crate::ids::{DeviceId, MessageId, RoomId, UserId};
use crate::protocol::{format_timestamp, Message};
use crate::store::membership::{
    Decision, Event, EventRoom, Refusal, Room, RoomChange, Rooms, Span,
};
use crate::store::writer::{
    highest_acks, send_refusal, text_delivery, AckOp, Audience, Committed, Delivery, NewMessage,
    OnCommit, Op, Reply, Target, Writer, MAX_BATCH, QUEUE_DEPTH,
};
use crate::store::{now_micros, StoreError};

/// Locks the counter row for the rest of the transaction open on `conn`; returns the last id
/// handed out and the membership version.
pub(super) async fn lock_counter(conn: &mut PgConnection) -> Result<(i64, i64), StoreError> {
    let (last, version, _) = lock_counter_full(conn).await?;
    Ok((last, version))
}

/// [`lock_counter`], also returning the last `sent_at` stored.
async fn lock_counter_full(conn: &mut PgConnection) -> Result<(i64, i64, i64), StoreError> {
    let row =
        sqlx::query("SELECT last_id, membership_version, last_sent_at FROM id_counter FOR UPDATE")
            .fetch_one(conn)
            .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// Records `last_id` as the last id handed out (and, with `membership`, that rooms changed),
/// and rings the other nodes' doorbell, which PostgreSQL delivers at COMMIT.
pub(super) async fn advance_counter(
    conn: &mut PgConnection,
    last_id: i64,
    membership: bool,
) -> Result<(), StoreError> {
    advance_counter_at(conn, last_id, membership, 0).await
}

async fn advance_counter_at(
    conn: &mut PgConnection,
    last_id: i64,
    membership: bool,
    sent_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE id_counter SET last_id = $1, last_sent_at = GREATEST(last_sent_at, $3), \
         membership_version = membership_version + CASE WHEN $2 THEN 1 ELSE 0 END",
    )
    .bind(last_id)
    .bind(membership)
    .bind(sent_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(last_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Reads the live rooms, their members and the membership version, in the transaction open
/// on `conn` (or in one snapshot of its own when none is open).
async fn read_rooms(conn: &mut PgConnection) -> Result<(Rooms, i64), StoreError> {
    let version: i64 = sqlx::query("SELECT membership_version FROM id_counter")
        .fetch_one(&mut *conn)
        .await?
        .get(0);
    let rooms = sqlx::query("SELECT id, name, owner_id, private FROM rooms WHERE NOT deleted")
        .fetch_all(&mut *conn)
        .await?;
    let spans = sqlx::query(
        "SELECT s.room_id, s.user_id FROM room_spans s JOIN rooms r ON r.id = s.room_id \
         WHERE s.left_id IS NULL AND NOT r.deleted",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut members: HashMap<RoomId, Vec<UserId>> = HashMap::new();
    for s in spans {
        members
            .entry(RoomId(s.get(0)))
            .or_default()
            .push(UserId(s.get(1)));
    }
    let rooms = rooms
        .into_iter()
        .map(|r| {
            let id = RoomId(r.get(0));
            let room = Room::new(
                r.get(1),
                UserId(r.get::<Option<i64>, _>(2).unwrap_or(0)),
                r.get(3),
                members.remove(&id).unwrap_or_default(),
            );
            (id, room)
        })
        .collect();
    Ok((rooms, version))
}

/// Starts this node's writer task (on a thread of its own, as SQLite's), its tail and its
/// search indexer.
pub(super) async fn start(
    store: &PostgresStore,
    on_commit: OnCommit,
) -> Result<(Writer, tokio::task::JoinHandle<()>), StoreError> {
    let tail = Arc::new(Tail::start(store, on_commit).await?);
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let (ready, started) = oneshot::channel::<Result<(), StoreError>>();
    let (finished, finished_rx) = oneshot::channel::<()>();
    let mut options = store.options.clone().application_name("chatd-writer");
    if store.durability == crate::store::Durability::Normal {
        options = options.options([("synchronous_commit", "off")]);
    }
    let writer_tail = Arc::clone(&tail);
    crate::store::spawn_thread("chatd-writer", async move {
        // The connection is made on this thread's runtime, which drives its socket.
        let state = match State::open(options, writer_tail).await {
            Ok(state) => {
                let _ = ready.send(Ok(()));
                state
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        state.run(rx).await;
        let _ = finished.send(());
    })?;
    started.await.map_err(|_| StoreError::WriterGone)??;
    let indexer = Indexer::start(&store.options, tail.progress());
    let handle = tokio::spawn(async move {
        let _ = finished_rx.await;
        indexer.stop().await;
        tail.stop().await;
    });
    Ok((Writer::new(tx), handle))
}

struct State {
    conn: PgConnection,
    options: PgConnectOptions,
    /// The live rooms and their members, as of `version`.
    rooms: Rooms,
    /// The membership version `rooms` reflects.
    version: i64,
    tail: Arc<Tail>,
}

/// Where one send of the batch ended up.
enum Slot {
    New(usize),
    Existing(Committed),
    SameAs(usize),
    Refused(StoreError),
}

impl State {
    async fn open(options: PgConnectOptions, tail: Arc<Tail>) -> Result<State, StoreError> {
        let mut conn = PgConnection::connect_with(&options).await?;
        let (rooms, version) = read_rooms(&mut conn).await?;
        Ok(State {
            conn,
            options,
            rooms,
            version,
            tail,
        })
    }

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
                        self.after_error(&result).await;
                        let _ = done.send(result);
                    }
                    Op::Reload(done) => {
                        self.process(std::mem::take(&mut sends), std::mem::take(&mut acks))
                            .await;
                        let result = self.reload().await;
                        self.after_error(&result).await;
                        let _ = done.send(result);
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

    /// After a failed operation: if the connection itself is gone (the database restarted,
    /// a network cut), makes a new one, so the next batch can succeed.
    async fn after_error<T>(&mut self, result: &Result<T, StoreError>) {
        if !matches!(result, Err(StoreError::Database(_))) {
            return;
        }
        if self.conn.ping().await.is_ok() {
            return;
        }
        match PgConnection::connect_with(&self.options).await {
            Ok(conn) => {
                tracing::info!("the writer reconnected to the database");
                self.conn = conn;
                // Whatever happened meanwhile, the next transaction re-reads the rooms.
                self.version = -1;
            }
            Err(e) => tracing::error!(error = %e, "the writer cannot reconnect to the database"),
        }
    }

    /// Re-reads the rooms (after an operator's change), in one snapshot.
    async fn reload(&mut self) -> Result<(), StoreError> {
        let mut tx = self.conn.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let (rooms, version) = read_rooms(&mut tx).await?;
        tx.commit().await?;
        self.rooms = rooms;
        self.version = version;
        Ok(())
    }

    /// Takes the counter row in the transaction open on `conn` and brings the room map up
    /// to the version on it. Returns `(last id, last sent_at)`.
    async fn lock(
        conn: &mut PgConnection,
        rooms: &mut Rooms,
        version: &mut i64,
    ) -> Result<(i64, i64), StoreError> {
        let (last_id, current, last_sent_at) = lock_counter_full(conn).await?;
        if current != *version {
            let (fresh, read) = read_rooms(conn).await?;
            *rooms = fresh;
            *version = read;
        }
        Ok((last_id, last_sent_at))
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
                // Fan out before answering, so that whatever a sender does next already sees
                // the hub in the committed state (when nothing from another node is pending).
                if !deliveries.is_empty() {
                    self.tail.offer(deliveries);
                }
                for (done, result) in replies {
                    let _ = done.send(result);
                }
                for ack in acks {
                    let _ = ack.done.send(Ok(()));
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
                self.after_error::<()>(&Err(e)).await;
            }
        }
    }

    fn delivery(&self, m: NewMessage, id: MessageId, sent_at: i64) -> Delivery {
        text_delivery(&self.rooms, m, id, sent_at)
    }

    /// Stores one batch with one call of `chatd_store_sends` (or, for acks alone,
    /// `chatd_store_acks`; both in migrations/postgres/0002). Returns, per send, where it
    /// went, and the `(id, sent_at)` of each newly inserted row.
    ///
    /// Sends are checked against this node's room map before the call; the function takes
    /// the counter row first and refuses the whole batch (storing nothing) when the map is
    /// older than the membership version there, and then the map is re-read and the batch
    /// checked and sent again.
    async fn commit(
        &mut self,
        sends: &[(NewMessage, Reply<Committed>)],
        acks: &[AckOp],
    ) -> Result<(Vec<Slot>, Vec<(i64, i64)>), StoreError> {
        let acks = AckArrays::of(acks);
        if sends.is_empty() {
            sqlx::query("SELECT chatd_store_acks($1, $2, $3, $4)")
                .bind(&acks.devices)
                .bind(&acks.device_uptos)
                .bind(&acks.users)
                .bind(&acks.user_uptos)
                .execute(&mut self.conn)
                .await?;
            return Ok((Vec::new(), Vec::new()));
        }
        // Each (sender, key) goes to the database once; later copies follow the first.
        let mut unique: Vec<usize> = Vec::with_capacity(sends.len());
        let mut copy_of: Vec<Option<usize>> = Vec::with_capacity(sends.len());
        let mut first: HashMap<(UserId, &str), usize> = HashMap::new();
        for (i, (m, _)) in sends.iter().enumerate() {
            match first.entry((m.sender_id, m.key.as_str())) {
                std::collections::hash_map::Entry::Occupied(e) => copy_of.push(Some(*e.get())),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(unique.len());
                    unique.push(i);
                    copy_of.push(None);
                }
            }
        }
        for _attempt in 0..MAX_STALE {
            let refused: Vec<bool> = unique
                .iter()
                .map(|&i| send_refusal(&self.rooms, &sends[i].0).is_some())
                .collect();
            let stored = match store_sends(
                &mut self.conn,
                self.version,
                sends,
                &unique,
                &refused,
                &acks,
            )
            .await?
            {
                Stored::Stale(version) => {
                    tracing::debug!(version, "rooms changed elsewhere; re-reading them");
                    self.reload().await?;
                    continue;
                }
                Stored::Rows(rows) => rows,
            };
            // Per unique send: (id, sent_at, new?) or refused.
            let mut outcome: Vec<Option<(i64, i64, bool)>> = vec![None; unique.len()];
            for (slot, id, sent_at, is_new) in stored {
                if let Some(o) = usize::try_from(slot - 1)
                    .ok()
                    .and_then(|s| outcome.get_mut(s))
                {
                    *o = Some((id, sent_at, is_new));
                }
            }
            // New ids were handed out in input order.
            let mut row_of: Vec<Option<usize>> = vec![None; unique.len()];
            let mut rows: Vec<(i64, i64)> = Vec::new();
            for (u, o) in outcome.iter().enumerate() {
                if let Some((id, sent_at, true)) = *o {
                    row_of[u] = Some(rows.len());
                    rows.push((id, sent_at));
                }
            }
            let existing = |id: i64, sent_at: i64| Committed {
                id: MessageId(id),
                sent_at,
                duplicate: true,
            };
            let slots = sends
                .iter()
                .zip(&copy_of)
                .map(|((m, _), copy)| {
                    let (u, is_copy) = match copy {
                        Some(u) => (*u, true),
                        None => (first[&(m.sender_id, m.key.as_str())], false),
                    };
                    match (outcome[u], row_of[u]) {
                        (Some(_), Some(row)) if is_copy => Slot::SameAs(row),
                        (Some(_), Some(row)) => Slot::New(row),
                        (Some((id, sent_at, _)), None) => Slot::Existing(existing(id, sent_at)),
                        (None, _) => Slot::Refused(
                            send_refusal(&self.rooms, m)
                                .unwrap_or_else(|| StoreError::Database("send not stored".into())),
                        ),
                    }
                })
                .collect();
            return Ok((slots, rows));
        }
        Err(StoreError::Database(
            "rooms kept changing while a batch was being stored".into(),
        ))
    }

    /// Decides one membership change against the current rooms (under the counter lock)
    /// and carries it out. Returns `(room id, event id)`.
    async fn change_room(&mut self, change: RoomChange) -> Result<(RoomId, MessageId), StoreError> {
        let mut tx = self.conn.begin().await?;
        let (last_id, last_sent_at) =
            Self::lock(&mut tx, &mut self.rooms, &mut self.version).await?;
        let event_id = last_id + 1;
        let now = now_micros().max(last_sent_at);
        match self.rooms.decide(&change)? {
            Decision::Event(event) => {
                let room_id = store_event(&mut tx, &event, event_id, now).await?;
                advance_counter_at(&mut tx, event_id, true, now).await?;
                tx.commit().await?;
                self.version += 1;
                self.rooms.apply(room_id, &event);
                self.tail
                    .offer(vec![event_delivery(event, room_id, event_id, now)]);
                Ok((room_id, MessageId(event_id)))
            }
            Decision::Delete { room_id, name } => {
                super::rooms::delete_room_in(&mut tx, room_id, &name, event_id, now).await?;
                advance_counter_at(&mut tx, event_id, true, now).await?;
                tx.commit().await?;
                // The event names the owner, whom the tail reads with it from the table.
                self.tail.wake();
                self.reload().await?;
                Ok((room_id, MessageId(event_id)))
            }
        }
    }
}

/// Stores a membership event (for a creation, with its room) and the span it opens or
/// closes. Returns the room's id.
async fn store_event(
    conn: &mut PgConnection,
    event: &Event,
    event_id: i64,
    now: i64,
) -> Result<RoomId, StoreError> {
    let room_id = match &event.room {
        EventRoom::New { name, private } => {
            let inserted = sqlx::query(
                "INSERT INTO rooms (name, created_at, owner_id, private) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO NOTHING RETURNING id",
            )
            .bind(name)
            .bind(now)
            .bind(event.by.0.get())
            .bind(*private)
            .fetch_optional(&mut *conn)
            .await?;
            match inserted {
                Some(row) => RoomId(row.get(0)),
                // Names are the database's to keep unique (see `membership`).
                None => return Err(Refusal::RoomExists { room: name.clone() }.into()),
            }
        }
        EventRoom::Live { id, .. } => *id,
    };
    sqlx::query(
        "INSERT INTO messages (id, sender_id, room_id, body, sent_at, client_key, kind, member_id) \
         VALUES ($1, $2, $3, '', $4, $5, $6, $7)",
    )
    .bind(event_id)
    .bind(event.by.0.get())
    .bind(room_id.get())
    .bind(now)
    // Control characters are refused in client keys, so this can never collide.
    .bind(format!("\u{1}event:{event_id}"))
    .bind(event.kind.as_str())
    .bind(event.member.as_ref().map(|m| m.0.get()))
    .execute(&mut *conn)
    .await?;
    match event.span {
        Span::Opens(user) => {
            sqlx::query("INSERT INTO room_spans (room_id, user_id, joined_id) VALUES ($1, $2, $3)")
                .bind(room_id.get())
                .bind(user.get())
                .bind(event_id)
                .execute(&mut *conn)
                .await?;
        }
        Span::Closes(user) => {
            sqlx::query(
                "UPDATE room_spans SET left_id = $1 \
                 WHERE room_id = $2 AND user_id = $3 AND left_id IS NULL",
            )
            .bind(event_id)
            .bind(room_id.get())
            .bind(user.get())
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(room_id)
}

/// What the hub gets for a stored membership event.
fn event_delivery(event: Event, room_id: RoomId, event_id: i64, now: i64) -> Delivery {
    let _ = room_id;
    Delivery {
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
    }
}

/// How many times a batch is checked again after the rooms changed under it before the
/// batch fails (each time the room map is re-read first).
const MAX_STALE: usize = 50;

/// A batch's acks as the arrays `chatd_store_acks` takes: per device and per user, the
/// highest id acknowledged.
struct AckArrays {
    devices: Vec<i64>,
    device_uptos: Vec<i64>,
    users: Vec<i64>,
    user_uptos: Vec<i64>,
}

impl AckArrays {
    fn of(acks: &[AckOp]) -> AckArrays {
        let (devices, users) = highest_acks(acks);
        let (devices, device_uptos) = devices.into_iter().unzip();
        let (users, user_uptos) = users.into_iter().unzip();
        AckArrays {
            devices,
            device_uptos,
            users,
            user_uptos,
        }
    }
}

/// What `chatd_store_sends` answered.
enum Stored {
    /// `(slot, id, sent_at, new?)` per send stored now or before (slots count the unique
    /// sends from 1); a refused send without an earlier copy has no row.
    Rows(Vec<(i64, i64, i64, bool)>),
    /// The room map is older than this membership version: nothing was stored.
    Stale(i64),
}

/// Calls `chatd_store_sends` for the sends `unique` of `sends` (`refused` for each: not to
/// be stored), with the batch's acks, in one round trip and one transaction.
async fn store_sends(
    conn: &mut PgConnection,
    version: i64,
    sends: &[(NewMessage, Reply<Committed>)],
    unique: &[usize],
    refused: &[bool],
    acks: &AckArrays,
) -> Result<Stored, StoreError> {
    let n = unique.len();
    let mut senders = Vec::with_capacity(n);
    let mut devices = Vec::with_capacity(n);
    let mut recipients = Vec::with_capacity(n);
    let mut rooms = Vec::with_capacity(n);
    let mut bodies = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut actions = Vec::with_capacity(n);
    let mut conversations = Vec::with_capacity(n);
    for &i in unique {
        let m = &sends[i].0;
        senders.push(m.sender_id.get());
        devices.push(m.sender_device_id.get());
        // Sending marks the conversation (`bob` or `#room`: the names' `Display`) read up
        // to the sender's own message.
        let (recipient, room, conversation) = match &m.target {
            Target::User(id, name) => (Some(id.get()), None, name.to_string()),
            Target::Room(id, name) => (None, Some(id.get()), name.to_string()),
        };
        recipients.push(recipient);
        rooms.push(room);
        conversations.push(conversation);
        bodies.push(super::body::encode(&m.body));
        keys.push(m.key.as_str());
        actions.push(m.action);
    }
    let rows = sqlx::query(
        "SELECT slot, message_id, stored_at, is_new FROM chatd_store_sends(\
         $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(version)
    .bind(now_micros())
    .bind(CHANNEL)
    .bind(&senders)
    .bind(&devices)
    .bind(&recipients)
    .bind(&rooms)
    .bind(&bodies)
    .bind(&keys)
    .bind(&actions)
    .bind(&conversations)
    .bind(refused)
    .bind(&acks.devices)
    .bind(&acks.device_uptos)
    .bind(&acks.users)
    .bind(&acks.user_uptos)
    .fetch_all(conn)
    .await?;
    let rows: Vec<(i64, i64, i64, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    if let [(-1, current, _, _)] = rows.as_slice() {
        return Ok(Stored::Stale(*current));
    }
    Ok(Stored::Rows(rows))
}
