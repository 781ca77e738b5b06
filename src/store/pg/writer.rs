//! The PostgreSQL writer task: one per node, draining the same operations as SQLite's
//! (`store/writer.rs`) with the same group commit, with ids taken from the cluster-wide
//! counter row.
//!
//! Every transaction that stores messages begins by locking the one row of `id_counter`
//! ([`lock_counter`]) and ends by moving it on ([`advance_counter`]) just before COMMIT. So:
//! - ids are assigned in commit order across every node (the lock is held until COMMIT), a
//!   higher id is never visible before a lower one, and a rolled-back batch gives its ids
//!   back (ids are dense);
//! - the idempotency lookup of a batch's keys runs under the lock: a key retried on another
//!   node finds the first node's message, never a race;
//! - the membership version on the row tells this node whether its room map is current; when
//!   another node (or an admin command) changed a room, the map is re-read before any send
//!   or change is checked, so a change made on node B applies to a send on node A at the very
//!   next id.
//!
//! Cursor moves (acks) never take the row: they commute (`GREATEST`). A batch of acks alone is
//! a transaction of its own; acks and read markers that arrive with sends ride in the sends'
//! commit (one WAL flush instead of two), after the lock is taken.
//!
//! After COMMIT the new messages go to the node's [`Tail`] (which hands them to the hub at
//! once when nothing from another node came between) and then the submitters are answered.
//! One `NOTIFY` per commit (its payload the new highest id) wakes the other nodes' tails.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::{mpsc, oneshot};

use super::tail::{Tail, CHANNEL};
use super::PostgresStore;
use crate::ids::{DeviceId, MessageId, RoomId, UserId};
use crate::protocol::{format_timestamp, Message};
use crate::store::membership::{
    Decision, Event, EventRoom, Refusal, Room, RoomChange, Rooms, Span,
};
use crate::store::writer::{
    send_refusal, text_delivery, AckOp, Audience, Committed, Delivery, NewMessage, OnCommit, Op,
    Reply, Target, Writer, MAX_BATCH, QUEUE_DEPTH,
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

/// Starts this node's writer task (on a thread of its own, as SQLite's) and its tail.
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
    let handle = tokio::spawn(async move {
        let _ = finished_rx.await;
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

    /// Stores one batch in one transaction. Returns, per send, where it went, and the
    /// `(id, sent_at)` of each newly inserted row.
    async fn commit(
        &mut self,
        sends: &[(NewMessage, Reply<Committed>)],
        acks: &[AckOp],
    ) -> Result<(Vec<Slot>, Vec<(i64, i64)>), StoreError> {
        let mut tx = self.conn.begin().await?;
        if sends.is_empty() {
            push_acks(&mut tx, acks).await?;
            tx.commit().await?;
            return Ok((Vec::new(), Vec::new()));
        }
        let (last_id, last_sent_at) =
            Self::lock(&mut tx, &mut self.rooms, &mut self.version).await?;
        let existing = stored_keys(&mut tx, sends).await?;
        let now = now_micros().max(last_sent_at);
        let mut slots = Vec::with_capacity(sends.len());
        let mut fresh: Vec<usize> = Vec::new();
        let mut rows: Vec<(i64, i64)> = Vec::new();
        let mut in_batch: HashMap<(UserId, &str), usize> = HashMap::new();
        for (i, (m, _)) in sends.iter().enumerate() {
            let k = (m.sender_id, m.key.as_str());
            if let Some(&row) = in_batch.get(&k) {
                slots.push(Slot::SameAs(row));
            } else if let Some(c) = existing.get(&(m.sender_id, m.key.clone())) {
                slots.push(Slot::Existing(*c));
            } else if let Some(refusal) = send_refusal(&self.rooms, m) {
                slots.push(Slot::Refused(refusal));
            } else {
                let row = rows.len();
                rows.push((last_id + 1 + row as i64, now));
                in_batch.insert(k, row);
                fresh.push(i);
                slots.push(Slot::New(row));
            }
        }
        if !fresh.is_empty() {
            insert_messages(&mut tx, sends, &fresh, &rows, now).await?;
            push_read_markers(&mut tx, sends, &fresh, &rows).await?;
        }
        push_acks(&mut tx, acks).await?;
        if !fresh.is_empty() {
            advance_counter_at(&mut tx, last_id + rows.len() as i64, false, now).await?;
        }
        tx.commit().await?;
        Ok((slots, rows))
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

/// The batch's keys that are already stored (retries), looked up under the counter lock:
/// `(sender, key)` → where that message is.
async fn stored_keys(
    conn: &mut PgConnection,
    sends: &[(NewMessage, Reply<Committed>)],
) -> Result<HashMap<(UserId, String), Committed>, StoreError> {
    let mut seen = HashSet::new();
    let (mut keys, mut senders) = (Vec::new(), Vec::new());
    for (m, _) in sends {
        if seen.insert((m.sender_id, m.key.as_str())) {
            keys.push(m.key.as_str());
            senders.push(m.sender_id.get());
        }
    }
    let rows = sqlx::query(
        "SELECT m.sender_id, m.client_key, m.id, m.sent_at \
         FROM UNNEST($1::text[], $2::bigint[]) AS k(key, sender) \
         JOIN messages m ON m.client_key = k.key AND m.sender_id = k.sender",
    )
    .bind(&keys)
    .bind(&senders)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                (UserId(r.get(0)), r.get(1)),
                Committed {
                    id: MessageId(r.get(2)),
                    sent_at: r.get(3),
                    duplicate: true,
                },
            )
        })
        .collect())
}

/// Inserts the batch's new messages (`fresh` are the sends that made `rows`) in one
/// statement.
async fn insert_messages(
    conn: &mut PgConnection,
    sends: &[(NewMessage, Reply<Committed>)],
    fresh: &[usize],
    rows: &[(i64, i64)],
    now: i64,
) -> Result<(), StoreError> {
    let n = fresh.len();
    let (mut ids, mut senders, mut devices) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut recipients, mut rooms) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut bodies, mut keys, mut actions) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (row, &i) in fresh.iter().enumerate() {
        let m = &sends[i].0;
        ids.push(rows[row].0);
        senders.push(m.sender_id.get());
        devices.push(m.sender_device_id.get());
        let (recipient, room) = match &m.target {
            Target::User(id, _) => (Some(id.get()), None),
            Target::Room(id, _) => (None, Some(id.get())),
        };
        recipients.push(recipient);
        rooms.push(room);
        bodies.push(super::body::encode(&m.body));
        keys.push(m.key.as_str());
        actions.push(m.action);
    }
    sqlx::query(
        "INSERT INTO messages (id, sender_id, sender_device_id, recipient_id, room_id, body, \
         sent_at, client_key, kind, action) \
         SELECT u.id, u.sender, u.device, u.recipient, u.room, u.body, $9, u.key, 'text', u.action \
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
                     $6::text[], $7::text[], $8::bool[]) \
              AS u(id, sender, device, recipient, room, body, key, action)",
    )
    .bind(&ids)
    .bind(&senders)
    .bind(&devices)
    .bind(&recipients)
    .bind(&rooms)
    .bind(&bodies)
    .bind(&keys)
    .bind(&actions)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sending marks the conversation read up to the sender's own message: per sender and
/// conversation, the marker rises to the highest id of the batch.
async fn push_read_markers(
    conn: &mut PgConnection,
    sends: &[(NewMessage, Reply<Committed>)],
    fresh: &[usize],
    rows: &[(i64, i64)],
) -> Result<(), StoreError> {
    let mut highest: HashMap<(i64, String), i64> = HashMap::new();
    for (row, &i) in fresh.iter().enumerate() {
        let m = &sends[i].0;
        let conversation = match &m.target {
            // `bob` or `#room`: the names' `Display`.
            Target::User(_, name) => name.to_string(),
            Target::Room(_, name) => name.to_string(),
        };
        let id = rows[row].0;
        let entry = highest
            .entry((m.sender_id.get(), conversation))
            .or_insert(id);
        *entry = (*entry).max(id);
    }
    let (mut users, mut conversations, mut uptos) = (Vec::new(), Vec::new(), Vec::new());
    for ((user, conversation), upto) in highest {
        users.push(user);
        conversations.push(conversation);
        uptos.push(upto);
    }
    sqlx::query(
        "INSERT INTO read_markers (user_id, conversation, upto) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) \
         ON CONFLICT (user_id, conversation) \
         DO UPDATE SET upto = GREATEST(read_markers.upto, excluded.upto)",
    )
    .bind(&users)
    .bind(&conversations)
    .bind(&uptos)
    .execute(conn)
    .await?;
    Ok(())
}

/// Raises device cursors and users' acknowledged marks to the highest ack of the batch.
async fn push_acks(conn: &mut PgConnection, acks: &[AckOp]) -> Result<(), StoreError> {
    if acks.is_empty() {
        return Ok(());
    }
    let mut devices: HashMap<i64, i64> = HashMap::new();
    let mut users: HashMap<i64, i64> = HashMap::new();
    for ack in acks {
        let upto = ack.upto.get();
        let d = devices.entry(ack.device_id.get()).or_insert(upto);
        *d = (*d).max(upto);
        let u = users.entry(ack.user_id.get()).or_insert(upto);
        *u = (*u).max(upto);
    }
    for (table, column, values) in [
        ("devices", "cursor", devices),
        ("users", "acked_upto", users),
    ] {
        let (keys, uptos): (Vec<i64>, Vec<i64>) = values.into_iter().unzip();
        // Rows are locked in id order, so two nodes moving the same cursors (a user's
        // devices on two nodes share the user's row) wait for each other, never deadlock.
        // NO KEY UPDATE, not UPDATE: a message insert holds KEY SHARE on its sender's and
        // recipient's rows (their foreign keys), which UPDATE would wait for, while that
        // transaction waits for this one's next row (a deadlock the cluster bench found).
        sqlx::query(&format!(
            "SELECT 1 FROM {table} WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"
        ))
        .bind(&keys)
        .execute(&mut *conn)
        .await?;
        sqlx::query(&format!(
            "UPDATE {table} SET {column} = GREATEST({table}.{column}, v.upto) \
             FROM UNNEST($1::bigint[], $2::bigint[]) AS v(k, upto) WHERE {table}.id = v.k"
        ))
        .bind(&keys)
        .bind(&uptos)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
