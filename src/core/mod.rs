//! The protocol-neutral core: what every front end (the native protocol, the IRC gateway)
//! shares. `ServerState` holds the store, auth, the writer and the hub, the limits, and
//! the caches of users and rooms; [`hub`] fans typed pushes (committed messages, read
//! markers) out to live connections; [`delivery`] is the backlog → live hand-off every
//! front end uses to deliver to a device.
//!
//! No wire format lives here: front ends ([`crate::native`], [`crate::irc`]) encode what
//! the core hands them. Nothing here imports a front end, the connection plumbing
//! ([`crate::conn`], which registers sessions with the hub) or the listeners
//! ([`crate::server`]).

pub mod delivery;
pub mod hub;
pub mod rate;
pub mod reading;
pub mod refusal;
pub mod rooms;
pub mod sending;

pub use rate::Operation;
pub use reading::{Page, Range, Readable};
pub use refusal::{CoreError, MemberAction, Refusal, RoomAction, RoomRefusal};
pub use rooms::{RoomChanged, RoomRequest};
pub use sending::{Outgoing, Sending};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::{Auth, AuthLimits};
use crate::protocol::{RoomName, Username, DEFAULT_MAX_BODY_BYTES};
use crate::store::{RoomRef, Store, UserRef, Writer};

use hub::Hub;

/// Limits and timeouts, each with its default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message body in bytes.
    pub max_body: usize,
    /// Most simultaneous connections; further ones are closed at once.
    pub max_connections: usize,
    /// Most simultaneous connections from one address (IPv4) or /64 (IPv6); loopback is
    /// exempt, since a local reverse proxy makes every client look like 127.0.0.1.
    pub max_connections_per_address: usize,
    /// Sustained sends (messages and room changes) per second per connection.
    pub send_rate_per_sec: u32,
    /// Sends a connection may burst above the sustained rate before `rate_limited`.
    pub send_burst: u32,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a connection may stay unauthenticated (hello + login/auth).
    pub auth_timeout: Duration,
    /// Time without any frame from the client before the connection is closed. Clients keep
    /// a connection alive with `ping`.
    pub idle_timeout: Duration,
    /// Time allowed for one write to the client.
    pub write_timeout: Duration,
    /// Live pushes queued per connection before it is disconnected as a slow consumer.
    pub live_queue: usize,
    /// Bytes of live pushes queued per connection before it is disconnected as a slow
    /// consumer (bounds what one stalled reader can pin in memory).
    pub live_queue_bytes: usize,
    /// Server-wide login limits: failed-login budget, devices per account.
    pub login: AuthLimits,
    /// Sends and acks in flight per connection before the server stops reading from it.
    pub max_in_flight: usize,
    /// Time allowed for sessions to drain at shutdown.
    pub shutdown_grace: Duration,
    /// How often the server checks for revocations made by admin commands.
    pub revocation_poll: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: DEFAULT_MAX_BODY_BYTES,
            max_connections: 20_000,
            max_connections_per_address: 64,
            send_rate_per_sec: 500,
            send_burst: 1000,
            handshake_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
            live_queue: 4096,
            live_queue_bytes: 8 * 1024 * 1024,
            login: AuthLimits::default(),
            max_in_flight: 1024,
            shutdown_grace: Duration::from_secs(10),
            revocation_poll: Duration::from_millis(500),
        }
    }
}

/// State shared by every session.
pub(crate) struct ServerState {
    pub store: Store,
    pub auth: Auth,
    pub writer: Writer,
    pub hub: Arc<Hub>,
    pub limits: Limits,
    /// Recipients looked up recently; cleared whenever accounts change.
    users: Mutex<HashMap<String, UserRef>>,
    /// Rooms looked up recently; cleared whenever a room is deleted.
    rooms: Mutex<HashMap<String, RoomRef>>,
}

impl ServerState {
    /// State over a started store, auth and writer, with empty caches.
    pub fn new(store: Store, auth: Auth, writer: Writer, hub: Arc<Hub>, limits: Limits) -> Self {
        ServerState {
            store,
            auth,
            writer,
            hub,
            limits,
            users: Mutex::new(HashMap::new()),
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// Finds a live account by name, through a small cache.
    pub async fn find_user(
        &self,
        name: &Username,
    ) -> Result<Option<UserRef>, crate::store::StoreError> {
        if let Some(u) = self.lock_users().get(name.as_str()) {
            return Ok(Some(u.clone()));
        }
        let found = self.store.find_user(name).await?;
        if let Some(u) = &found {
            let mut cache = self.lock_users();
            if cache.len() >= 10_000 {
                cache.clear();
            }
            cache.insert(name.as_str().to_string(), u.clone());
        }
        Ok(found)
    }

    /// Finds a live room by name, through a small cache.
    pub async fn find_room(
        &self,
        name: &RoomName,
    ) -> Result<Option<RoomRef>, crate::store::StoreError> {
        if let Some(r) = self.lock_rooms().get(name.as_str()) {
            return Ok(Some(r.clone()));
        }
        let found = self.store.find_room(name).await?;
        if let Some(r) = &found {
            let mut cache = self.lock_rooms();
            if cache.len() >= 10_000 {
                cache.clear();
            }
            cache.insert(name.as_str().to_string(), r.clone());
        }
        Ok(found)
    }

    /// Applies a membership change through the writer. A leave or a deletion may delete the
    /// room, so it leaves the cache at once: the name is free for the very next request.
    /// (The auth epoch the deletion bumps clears the whole cache a moment later too.)
    pub async fn change_room(
        &self,
        change: crate::store::RoomChange,
    ) -> Result<(crate::ids::RoomId, crate::ids::MessageId), crate::store::StoreError> {
        let forget = match &change {
            crate::store::RoomChange::Leave { room_id, .. }
            | crate::store::RoomChange::Delete { room_id, .. } => Some(*room_id),
            _ => None,
        };
        let result = self.writer.change_room(change).await;
        if let (Some(id), Ok(_)) = (forget, &result) {
            self.lock_rooms().retain(|_, r| r.id != id);
        }
        result
    }

    pub(crate) fn lock_rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomRef>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_users(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserRef>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }
}
