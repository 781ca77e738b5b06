//! The single writer task: group commit for message inserts and cursor moves.
//!
//! Sessions submit [`NewMessage`]s and acks through a bounded channel. The task takes one
//! operation, drains whatever else is already queued (up to [`MAX_BATCH`]), and stores the
//! whole batch in one transaction with multi-row statements: one idempotency lookup and one
//! insert per 1,000 messages, one cursor update per 400 devices. Only after the commit does it answer the
//! senders and hand the new messages, in id order, to `on_commit` (the hub). Because it is
//! the only inserter, it assigns ids itself: strictly increasing in commit order.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{now_micros, StoreError};
use crate::protocol::{format_timestamp, Message};

/// Most operations stored in one transaction.
pub const MAX_BATCH: usize = 4096;

/// Rows per multi-row INSERT (7 bound parameters each, under SQLite's 32,766 limit).
const INSERT_CHUNK: usize = 1000;

/// Depth of the submission queue; senders wait (backpressure) when it is full.
const QUEUE_DEPTH: usize = 16 * 1024;

/// Called after each commit with the newly stored messages in id order.
pub type OnCommit = Box<dyn Fn(Vec<Delivery>) + Send + Sync>;

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub sender_id: i64,
    pub sender_name: String,
    pub sender_device_id: i64,
    pub recipient_id: i64,
    pub recipient_name: String,
    pub body: String,
    /// Client-chosen idempotency key, unique per sender.
    pub key: String,
}

/// The outcome of a send: where the message is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub id: i64,
    /// Microseconds since the Unix epoch.
    pub sent_at: i64,
    /// True when the key matched an earlier message; `id` is that message's.
    pub duplicate: bool,
}

/// A newly committed message with what the hub needs to route it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Message,
    pub sender_id: i64,
    pub sender_device_id: i64,
    pub recipient_id: i64,
}

/// Where the writer answers a submitter.
type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Op {
    Send(NewMessage, Reply<Committed>),
    Ack(AckOp),
}

struct AckOp {
    user_id: i64,
    device_id: i64,
    upto: i64,
    done: Reply<()>,
}

/// Handle for submitting work to the writer task. Cheap to clone. When every handle is
/// dropped the task finishes the queued work and exits.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
}

impl Writer {
    /// Stores a message; resolves once it is committed (or found to be a duplicate).
    pub async fn send(&self, message: NewMessage) -> Result<Committed, StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Op::Send(message, done))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        wait.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Moves a device's cursor (and the user's acknowledged mark) forward to `upto`;
    /// resolves once that is committed. Cursors never move backwards.
    pub async fn ack(&self, user_id: i64, device_id: i64, upto: i64) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Op::Ack(AckOp {
                user_id,
                device_id,
                upto,
                done,
            }))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        wait.await.map_err(|_| StoreError::WriterGone)?
    }
}

pub(super) async fn start(
    pool: SqlitePool,
    on_commit: OnCommit,
) -> Result<(Writer, tokio::task::JoinHandle<()>), StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(id), 0), COALESCE(MAX(sent_at), 0) FROM messages")
        .fetch_one(&pool)
        .await?;
    let state = State {
        pool,
        next_id: row.get::<i64, _>(0) + 1,
        last_sent_at: row.get(1),
        on_commit,
    };
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let handle = tokio::spawn(state.run(rx));
    Ok((Writer { tx }, handle))
}

struct State {
    pool: SqlitePool,
    next_id: i64,
    last_sent_at: i64,
    on_commit: OnCommit,
}

/// Where one send of the batch ended up.
enum Slot {
    New(usize),
    Existing(Committed),
    SameAs(usize),
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
            self.process(&mut batch).await;
        }
        tracing::debug!("message writer stopped");
    }

    async fn process(&mut self, batch: &mut Vec<Op>) {
        let mut sends = Vec::new();
        let mut acks = Vec::new();
        for op in batch.drain(..) {
            match op {
                Op::Send(m, done) => sends.push((m, done)),
                Op::Ack(ack) => acks.push(ack),
            }
        }
        let first_id = self.next_id;
        let saved_sent_at = self.last_sent_at;
        match self.commit(&sends, &acks).await {
            Ok((slots, rows)) => {
                let mut deliveries = Vec::with_capacity(rows.len());
                for ((m, done), slot) in sends.into_iter().zip(slots) {
                    let result = match slot {
                        Slot::New(i) => {
                            let (id, sent_at) = rows[i];
                            deliveries.push(Delivery {
                                message: Message {
                                    id,
                                    from: m.sender_name,
                                    to: m.recipient_name,
                                    body: m.body,
                                    sent_at: format_timestamp(sent_at),
                                },
                                sender_id: m.sender_id,
                                sender_device_id: m.sender_device_id,
                                recipient_id: m.recipient_id,
                            });
                            Committed {
                                id,
                                sent_at,
                                duplicate: false,
                            }
                        }
                        Slot::Existing(c) => c,
                        Slot::SameAs(i) => Committed {
                            id: rows[i].0,
                            sent_at: rows[i].1,
                            duplicate: true,
                        },
                    };
                    let _ = done.send(Ok(result));
                }
                for ack in acks {
                    let _ = ack.done.send(Ok(()));
                }
                if !deliveries.is_empty() {
                    (self.on_commit)(deliveries);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; {} sends refused", sends.len());
                self.next_id = first_id;
                self.last_sent_at = saved_sent_at;
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

    /// Stores one batch in one transaction. Returns, per send, where it went, and the
    /// `(id, sent_at)` of each newly inserted row.
    async fn commit(
        &mut self,
        sends: &[(NewMessage, Reply<Committed>)],
        acks: &[AckOp],
    ) -> Result<(Vec<Slot>, Vec<(i64, i64)>), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;

        // Idempotency: keys already stored by the same sender.
        let mut existing: HashMap<(i64, &str), Committed> = HashMap::new();
        for chunk in sends.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT id, sender_id, client_key, sent_at FROM messages WHERE client_key IN (",
            );
            let mut sep = q.separated(", ");
            for (m, _) in chunk {
                sep.push_bind(m.key.as_str());
            }
            q.push(")");
            for row in q.build().fetch_all(&mut *tx).await? {
                let sender: i64 = row.get(1);
                let key: String = row.get(2);
                if let Some((m, _)) = chunk
                    .iter()
                    .find(|(m, _)| m.sender_id == sender && m.key == key)
                {
                    existing.insert(
                        (m.sender_id, m.key.as_str()),
                        Committed {
                            id: row.get(0),
                            sent_at: row.get(3),
                            duplicate: true,
                        },
                    );
                }
            }
        }

        let mut slots = Vec::with_capacity(sends.len());
        let mut fresh: Vec<usize> = Vec::new();
        let mut rows: Vec<(i64, i64)> = Vec::new();
        let mut in_batch: HashMap<(i64, &str), usize> = HashMap::new();
        let now = now_micros().max(self.last_sent_at);
        for (i, (m, _)) in sends.iter().enumerate() {
            let k = (m.sender_id, m.key.as_str());
            if let Some(c) = existing.get(&k) {
                slots.push(Slot::Existing(*c));
            } else if let Some(&row) = in_batch.get(&k) {
                slots.push(Slot::SameAs(row));
            } else {
                let row = rows.len();
                rows.push((self.next_id, now));
                self.next_id += 1;
                in_batch.insert(k, row);
                fresh.push(i);
                slots.push(Slot::New(row));
            }
        }
        self.last_sent_at = now;

        for (chunk_no, chunk) in fresh.chunks(INSERT_CHUNK).enumerate() {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO messages \
                 (id, sender_id, sender_device_id, recipient_id, body, sent_at, client_key) ",
            );
            q.push_values(chunk.iter().enumerate(), |mut b, (j, &i)| {
                let m = &sends[i].0;
                let (id, sent_at) = rows[chunk_no * INSERT_CHUNK + j];
                b.push_bind(id)
                    .push_bind(m.sender_id)
                    .push_bind(m.sender_device_id)
                    .push_bind(m.recipient_id)
                    .push_bind(m.body.as_str())
                    .push_bind(sent_at)
                    .push_bind(m.key.as_str());
            });
            q.build().execute(&mut *tx).await?;
        }

        if !acks.is_empty() {
            // Highest ack per device and per user in this batch.
            let mut devices: HashMap<i64, i64> = HashMap::new();
            let mut users: HashMap<i64, i64> = HashMap::new();
            for ack in acks {
                let d = devices.entry(ack.device_id).or_insert(ack.upto);
                *d = (*d).max(ack.upto);
                let u = users.entry(ack.user_id).or_insert(ack.upto);
                *u = (*u).max(ack.upto);
            }
            update_max(&mut tx, "devices", "cursor", &devices).await?;
            update_max(&mut tx, "users", "acked_upto", &users).await?;
        }

        tx.commit().await?;
        Ok((slots, rows))
    }
}

/// `UPDATE table SET column = MAX(column, v) WHERE id = k` for every `(k, v)`, in one
/// statement per 400 pairs.
async fn update_max(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    table: &str,
    column: &str,
    values: &HashMap<i64, i64>,
) -> Result<(), StoreError> {
    let pairs: Vec<(i64, i64)> = values.iter().map(|(k, v)| (*k, *v)).collect();
    for chunk in pairs.chunks(400) {
        let mut q = QueryBuilder::<Sqlite>::new("WITH v(k, upto) AS (");
        q.push_values(chunk, |mut b, (k, upto)| {
            b.push_bind(*k).push_bind(*upto);
        });
        q.push(format!(
            ") UPDATE {table} SET {column} = MAX({column}, \
             (SELECT upto FROM v WHERE v.k = {table}.id)) WHERE id IN (SELECT k FROM v)"
        ));
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}
