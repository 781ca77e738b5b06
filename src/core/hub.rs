//! The hub: which authenticated connections exist, which of them are subscribed for live
//! delivery, and fan-out of typed pushes to them.
//!
//! What the hub carries is typed ([`Push`]): a committed message (text, or a membership
//! event: its `kind` says which) or a moved read marker, each shared by `Arc` among every
//! connection that receives it. The hub never encodes. Each front end turns a push into its
//! own wire form: the IRC one renders lines from the typed value for each reader (they
//! depend on its nick and capabilities); the native one encodes once per push for all its
//! connections, into a slot the push carries for that ([`Shared::native_frame`]): the first
//! connection to write the push fills it, every other one reuses the bytes.
//!
//! Fan-out never waits: each subscribed connection has a queue bounded in pushes and in
//! bytes, and a connection whose queue is full is kicked as a slow consumer (it resumes
//! from its cursor when it reconnects) rather than slowing the writer or anyone else. The
//! bytes are counted with [`Push::cost`], an estimate made once from the typed value when
//! the push is made (its encoding may not exist yet when it is queued, and what is added
//! on queueing must be what is taken away on taking): its strings plus a fixed allowance for
//! the framing around them, about the length of its native frame. A queued push holds its
//! typed value and, once a native connection wrote it, that frame, so what one stalled
//! connection alone keeps in memory stays within about twice its byte budget.
//!
//! Kicks do not travel in the queue: a kick must reach a connection whose queue is full, so
//! each registered connection has a channel of one for its kick reason
//! ([`Hub::register`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::ids::{DeviceId, MessageId, UserId};
use crate::protocol::{ErrorCode, Message};
use crate::store::{Audience, Delivery};

/// What the hub delivers to a subscribed connection. Cloning shares the value.
#[derive(Debug, Clone)]
pub enum Push {
    /// A committed message: text, or a membership event (its `kind` says which).
    Message(Arc<Shared<Message>>),
    /// The user's read marker in a conversation moved (told to their other connections).
    ReadMarker(Arc<Shared<ReadMarker>>),
}

/// A read marker: the user has read `conversation` up to message `upto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMarker {
    /// The conversation as the native protocol names it (a user or `#room`).
    pub conversation: String,
    pub upto: MessageId,
}

/// A pushed value, shared by every connection that receives it, with its estimated size and
/// a slot for its native frame.
#[derive(Debug)]
pub struct Shared<T> {
    value: T,
    cost: usize,
    native: OnceLock<Bytes>,
}

/// Bytes allowed for what a frame adds around a pushed value's strings (field names,
/// quotes, the id): a little more than the native encoding adds.
const FRAME_ALLOWANCE: usize = 128;

impl<T> Shared<T> {
    fn new(value: T, strings: usize) -> Arc<Shared<T>> {
        Arc::new(Shared {
            value,
            cost: strings + FRAME_ALLOWANCE,
            native: OnceLock::new(),
        })
    }

    /// The typed value.
    pub fn get(&self) -> &T {
        &self.value
    }

    /// The native front end's frame for this value: made by `encode` at the first call,
    /// the same bytes for every later one (and every other connection). Only the native
    /// front end calls this, always with the same encoding.
    pub fn native_frame(&self, encode: impl FnOnce(&T) -> Bytes) -> Bytes {
        self.native.get_or_init(|| encode(&self.value)).clone()
    }
}

impl Shared<Message> {
    fn message(message: Message) -> Arc<Shared<Message>> {
        let strings = message.from.len()
            + message.to.len()
            + message.body.len()
            + message.sent_at.len()
            + message.member.as_ref().map_or(0, String::len);
        Shared::new(message, strings)
    }
}

impl Push {
    /// A committed message, to share.
    pub fn message(message: Message) -> Push {
        Push::Message(Shared::message(message))
    }

    /// A moved read marker, to share.
    pub fn read_marker(marker: ReadMarker) -> Push {
        let strings = marker.conversation.len();
        Push::ReadMarker(Shared::new(marker, strings))
    }

    /// The bytes this push counts for in a live queue (see the module docs).
    pub fn cost(&self) -> usize {
        match self {
            Push::Message(m) => m.cost,
            Push::ReadMarker(r) => r.cost,
        }
    }
}

/// Connection registry and fan-out.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_conn: u64,
    sessions: HashMap<u64, SessionEntry>,
    subscribers: HashMap<UserId, Vec<Subscriber>>,
}

struct SessionEntry {
    device_id: DeviceId,
    kick: mpsc::Sender<ErrorCode>,
}

struct Subscriber {
    conn_id: u64,
    device_id: DeviceId,
    tx: mpsc::Sender<Push>,
    /// Bytes of pushes queued and not yet taken by the connection ([`Push::cost`]).
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Subscriber {
    /// Queues a push. False when the queue is full, in pushes or in bytes: the connection
    /// is a slow consumer.
    fn offer(&self, push: &Push) -> bool {
        let cost = push.cost();
        if self.queued.fetch_add(cost, Ordering::Relaxed) + cost > self.max_bytes {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            return false;
        }
        match self.tx.try_send(push.clone()) {
            Ok(()) => true,
            Err(e) => {
                self.queued.fetch_sub(cost, Ordering::Relaxed);
                // A closed queue belongs to a connection that is going away anyway.
                matches!(e, mpsc::error::TrySendError::Closed(_))
            }
        }
    }
}

/// A connection's live queue: pushes in commit order, bounded in number and in bytes.
pub struct LiveQueue {
    rx: mpsc::Receiver<Push>,
    queued: Arc<AtomicUsize>,
}

impl LiveQueue {
    /// The next push; `None` once the hub has dropped the connection's subscription.
    pub async fn recv(&mut self) -> Option<Push> {
        let push = self.rx.recv().await?;
        self.queued.fetch_sub(push.cost(), Ordering::Relaxed);
        Some(push)
    }
}

/// Keeps a connection registered; unregisters (and unsubscribes) it when dropped.
pub struct SessionGuard {
    hub: Arc<Hub>,
    conn_id: u64,
    user_id: UserId,
}

impl SessionGuard {
    /// This connection's id within the hub.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        inner.sessions.remove(&self.conn_id);
        if let Some(subs) = inner.subscribers.get_mut(&self.user_id) {
            subs.retain(|s| s.conn_id != self.conn_id);
            if subs.is_empty() {
                inner.subscribers.remove(&self.user_id);
            }
        }
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an authenticated connection. The receiver yields a reason when the
    /// connection must be closed (revoked, slow consumer).
    pub fn register(
        self: &Arc<Self>,
        user_id: UserId,
        device_id: DeviceId,
    ) -> (SessionGuard, mpsc::Receiver<ErrorCode>) {
        let (kick, kicked) = mpsc::channel(1);
        let mut inner = self.lock();
        inner.next_conn += 1;
        let conn_id = inner.next_conn;
        inner
            .sessions
            .insert(conn_id, SessionEntry { device_id, kick });
        (
            SessionGuard {
                hub: Arc::clone(self),
                conn_id,
                user_id,
            },
            kicked,
        )
    }

    /// Subscribes a registered connection to live delivery with a queue of `capacity`
    /// messages and `max_bytes` bytes of frames. Returns `None` if the connection is no
    /// longer registered.
    pub fn subscribe(
        &self,
        conn_id: u64,
        user_id: UserId,
        device_id: DeviceId,
        capacity: usize,
        max_bytes: usize,
    ) -> Option<LiveQueue> {
        let mut inner = self.lock();
        if !inner.sessions.contains_key(&conn_id) {
            return None;
        }
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        inner
            .subscribers
            .entry(user_id)
            .or_default()
            .push(Subscriber {
                conn_id,
                device_id,
                tx,
                queued: Arc::clone(&queued),
                max_bytes,
            });
        Some(LiveQueue { rx, queued })
    }

    /// Fans committed messages out to subscribed connections: for a direct message the
    /// recipient's devices and the sender's other devices; for a room message every device
    /// of every member in force at that id except the sending device. A sent message (not a
    /// membership event) is followed, on the sender's other devices, by the read marker it
    /// moved. Never blocks.
    pub fn deliver(&self, deliveries: Vec<Delivery>) {
        let mut slow = Vec::new();
        {
            let inner = self.lock();
            if inner.subscribers.is_empty() {
                return;
            }
            for d in deliveries {
                let Delivery {
                    message,
                    sender_id,
                    sender_device_id,
                    audience,
                    marks_read,
                } = d;
                let pair;
                let recipients: &[UserId] = match &audience {
                    Audience::Direct { recipient_id } if *recipient_id == sender_id => {
                        pair = [*recipient_id, UserId(0)];
                        &pair[..1]
                    }
                    Audience::Direct { recipient_id } => {
                        pair = [*recipient_id, sender_id];
                        &pair
                    }
                    Audience::Room { members } => members,
                };
                // The message moves into the push (no copy); its encodings are the front
                // ends' business, made when a connection takes it.
                let sent = Shared::message(message);
                let push = Push::Message(Arc::clone(&sent));
                for user in recipients {
                    let Some(subs) = inner.subscribers.get(user) else {
                        continue;
                    };
                    for s in subs {
                        if s.device_id != sender_device_id && !s.offer(&push) {
                            slow.push(s.conn_id);
                        }
                    }
                }
                // The send moved the sender's read marker: the sender's other devices learn
                // it right after the message itself.
                if !marks_read {
                    continue;
                }
                let Some(subs) = inner.subscribers.get(&sender_id) else {
                    continue;
                };
                let mut marker: Option<Push> = None;
                for s in subs.iter().filter(|s| s.device_id != sender_device_id) {
                    let p = marker.get_or_insert_with(|| {
                        Push::read_marker(ReadMarker {
                            conversation: sent.get().to.clone(),
                            upto: MessageId(sent.get().id),
                        })
                    });
                    if !s.offer(p) {
                        slow.push(s.conn_id);
                    }
                }
            }
        }
        for conn in slow {
            self.kick(conn, ErrorCode::SlowConsumer);
        }
    }

    /// Tells a user's subscribed connections other than `except_conn` that their read
    /// marker moved. A connection whose queue is full is kicked as a slow consumer.
    pub fn notify_user(&self, user_id: UserId, except_conn: u64, marker: ReadMarker) {
        let mut slow = Vec::new();
        {
            let inner = self.lock();
            let Some(subs) = inner.subscribers.get(&user_id) else {
                return;
            };
            let push = Push::read_marker(marker);
            for s in subs.iter().filter(|s| s.conn_id != except_conn) {
                if !s.offer(&push) {
                    slow.push(s.conn_id);
                }
            }
        }
        for conn in slow {
            self.kick(conn, ErrorCode::SlowConsumer);
        }
    }

    /// Every registered connection with its device id.
    pub fn connections(&self) -> Vec<(u64, DeviceId)> {
        self.lock()
            .sessions
            .iter()
            .map(|(c, s)| (*c, s.device_id))
            .collect()
    }

    /// Asks a connection to close with `reason`.
    pub fn kick(&self, conn_id: u64, reason: ErrorCode) {
        if let Some(s) = self.lock().sessions.get(&conn_id) {
            let _ = s.kick.try_send(reason);
        }
    }

    /// Number of registered (authenticated) connections.
    pub fn connection_count(&self) -> usize {
        self.lock().sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MessageKind;

    fn direct(id: i64, sender: i64, recipient: i64, body: &str) -> Delivery {
        Delivery {
            message: Message {
                id,
                from: "alice".into(),
                to: "bob".into(),
                body: body.into(),
                sent_at: "2026-01-01T00:00:00.000000Z".into(),
                kind: MessageKind::Text,
                member: None,
                action: false,
            },
            sender_id: UserId(sender),
            sender_device_id: DeviceId(100 + sender),
            audience: Audience::Direct {
                recipient_id: UserId(recipient),
            },
            marks_read: true,
        }
    }

    /// Registers and subscribes a device of `user`.
    fn subscribe(hub: &Arc<Hub>, user: i64, device: i64, max_bytes: usize) -> Connection {
        let (user, device) = (UserId(user), DeviceId(device));
        let (guard, kicks) = hub.register(user, device);
        let live = hub
            .subscribe(guard.conn_id(), user, device, 16, max_bytes)
            .unwrap();
        Connection {
            _guard: guard,
            kicks,
            live,
        }
    }

    struct Connection {
        _guard: SessionGuard,
        kicks: mpsc::Receiver<ErrorCode>,
        live: LiveQueue,
    }

    impl Connection {
        fn take(&mut self) -> Option<Push> {
            let push = self.live.rx.try_recv().ok()?;
            self.live.queued.fetch_sub(push.cost(), Ordering::Relaxed);
            Some(push)
        }
    }

    #[test]
    fn a_message_is_one_shared_push_whose_native_frame_is_made_once() {
        let hub = Arc::new(Hub::default());
        let mut bob1 = subscribe(&hub, 2, 21, 1 << 20);
        let mut bob2 = subscribe(&hub, 2, 22, 1 << 20);
        // alice's other device learns the read marker her send moved.
        let mut alice2 = subscribe(&hub, 1, 99, 1 << 20);
        hub.deliver(vec![direct(7, 1, 2, "hi")]);
        let (Some(Push::Message(a)), Some(Push::Message(b))) = (bob1.take(), bob2.take()) else {
            panic!("both of bob's devices get the message");
        };
        assert!(Arc::ptr_eq(&a, &b), "one push, shared");
        assert_eq!((a.get().id, a.get().body.as_str()), (7, "hi"));
        let mut made = 0;
        let mut encode = |m: &Message| {
            made += 1;
            Bytes::from(m.body.clone())
        };
        let first = a.native_frame(&mut encode);
        let second = b.native_frame(&mut encode);
        assert_eq!(made, 1, "encoded once for every connection");
        assert_eq!(first.as_ptr(), second.as_ptr(), "the same bytes");
        match (alice2.take(), alice2.take()) {
            (Some(Push::Message(m)), Some(Push::ReadMarker(r))) => {
                assert_eq!(m.get().id, 7);
                assert_eq!(
                    r.get(),
                    &ReadMarker {
                        conversation: "bob".into(),
                        upto: MessageId(7)
                    }
                );
            }
            other => panic!("message then read marker, got {other:?}"),
        }
    }

    #[test]
    fn a_queue_past_its_byte_budget_kicks_its_connection_only() {
        let hub = Arc::new(Hub::default());
        let body = "x".repeat(1000);
        let budget = 3 * (body.len() + 200);
        let mut slow = subscribe(&hub, 2, 21, budget);
        let mut fast = subscribe(&hub, 2, 22, 1 << 20);
        for id in 1..=3 {
            hub.deliver(vec![direct(id, 1, 2, &body)]);
            assert!(fast.take().is_some());
        }
        assert!(slow.kicks.try_recv().is_err(), "three fit");
        hub.deliver(vec![direct(4, 1, 2, &body)]);
        assert_eq!(slow.kicks.try_recv(), Ok(ErrorCode::SlowConsumer));
        assert!(fast.take().is_some());
        assert!(fast.kicks.try_recv().is_err());
        // What is taken from the queue is given back to its budget.
        while slow.take().is_some() {}
        assert_eq!(slow.live.queued.load(Ordering::Relaxed), 0);
        hub.deliver(vec![direct(5, 1, 2, &body)]);
        assert!(slow.take().is_some());
    }
}
