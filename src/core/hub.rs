//! The hub: which authenticated connections exist, which of them are subscribed for live
//! delivery, and fan-out of committed messages to them.
//!
//! Fan-out never waits: each subscribed connection has a queue bounded in messages and in
//! bytes, and a connection whose queue is full is kicked as a slow consumer (it resumes from its cursor when it
//! reconnects) rather than slowing the writer or anyone else. A pushed frame is encoded once
//! and shared by every connection that receives it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::protocol::codec::encode_json;
use crate::protocol::{ErrorCode, ServerFrame};
use crate::store::{Audience, Delivery};

/// A frame ready to write to a socket: a message's encoded `msg` frame and its id, or a
/// notice (a read marker) with id 0.
#[derive(Debug)]
pub struct Push {
    pub id: i64,
    pub frame: Bytes,
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
    subscribers: HashMap<i64, Vec<Subscriber>>,
}

struct SessionEntry {
    device_id: i64,
    kick: mpsc::Sender<ErrorCode>,
}

struct Subscriber {
    conn_id: u64,
    device_id: i64,
    tx: mpsc::Sender<Arc<Push>>,
    /// Bytes of frames queued and not yet taken by the connection.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Subscriber {
    /// Queues a push. False when the queue is full, in messages or in bytes: the
    /// connection is a slow consumer.
    fn offer(&self, push: &Arc<Push>) -> bool {
        let len = push.frame.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        match self.tx.try_send(Arc::clone(push)) {
            Ok(()) => true,
            Err(e) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                // A closed queue belongs to a connection that is going away anyway.
                matches!(e, mpsc::error::TrySendError::Closed(_))
            }
        }
    }
}

/// A connection's live queue: pushes in commit order, bounded in number and in bytes.
pub struct LiveQueue {
    rx: mpsc::Receiver<Arc<Push>>,
    queued: Arc<AtomicUsize>,
}

impl LiveQueue {
    /// The next push; `None` once the hub has dropped the connection's subscription.
    pub async fn recv(&mut self) -> Option<Arc<Push>> {
        let push = self.rx.recv().await?;
        self.queued.fetch_sub(push.frame.len(), Ordering::Relaxed);
        Some(push)
    }
}

/// Keeps a connection registered; unregisters (and unsubscribes) it when dropped.
pub struct SessionGuard {
    hub: Arc<Hub>,
    conn_id: u64,
    user_id: i64,
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
        user_id: i64,
        device_id: i64,
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
        user_id: i64,
        device_id: i64,
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
    /// membership event) is followed, on the sender's other devices, by the `read_marker` it
    /// moved. Never blocks.
    pub fn deliver(&self, deliveries: Vec<Delivery>) {
        let mut slow = Vec::new();
        {
            let inner = self.lock();
            if inner.subscribers.is_empty() {
                return;
            }
            for d in deliveries {
                let pair;
                let recipients: &[i64] = match &d.audience {
                    Audience::Direct { recipient_id } if *recipient_id == d.sender_id => {
                        pair = [*recipient_id, 0];
                        &pair[..1]
                    }
                    Audience::Direct { recipient_id } => {
                        pair = [*recipient_id, d.sender_id];
                        &pair
                    }
                    Audience::Room { members } => members,
                };
                let mut push: Option<Arc<Push>> = None;
                let mut marker: Option<Arc<Push>> = None;
                for user in recipients {
                    let Some(subs) = inner.subscribers.get(user) else {
                        continue;
                    };
                    for s in subs {
                        if s.device_id == d.sender_device_id {
                            continue;
                        }
                        let p = push.get_or_insert_with(|| {
                            Arc::new(Push {
                                id: d.message.id,
                                frame: encode_json(&ServerFrame::Msg {
                                    message: d.message.clone(),
                                }),
                            })
                        });
                        if !s.offer(p) {
                            slow.push(s.conn_id);
                        }
                    }
                }
                // The send moved the sender's read marker: the sender's other devices learn
                // it right after the message itself.
                if !d.marks_read {
                    continue;
                }
                let Some(subs) = inner.subscribers.get(&d.sender_id) else {
                    continue;
                };
                for s in subs.iter().filter(|s| s.device_id != d.sender_device_id) {
                    let p = marker.get_or_insert_with(|| {
                        Arc::new(Push {
                            id: 0,
                            frame: encode_json(&ServerFrame::ReadMarker {
                                conversation: d.message.to.clone(),
                                upto: d.message.id,
                            }),
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

    /// Sends a notice frame to a user's subscribed connections other than `except_conn`.
    /// A connection whose queue is full is kicked as a slow consumer.
    pub fn notify_user(&self, user_id: i64, except_conn: u64, frame: Bytes) {
        let mut slow = Vec::new();
        {
            let inner = self.lock();
            let Some(subs) = inner.subscribers.get(&user_id) else {
                return;
            };
            let push = Arc::new(Push { id: 0, frame });
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
    pub fn connections(&self) -> Vec<(u64, i64)> {
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
