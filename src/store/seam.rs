//! The seam between the code above `store` and its backends: [`Store`], an enum over the
//! storage backends ([`SqliteStore`] and [`PostgresStore`]), and [`DbTarget`], which names the
//! database a server opens.
//!
//! Every public method of [`Store`] hands its call to the backend through one dispatch
//! macro (`backend!`), so a second backend adds one arm to that macro and one variant here, and
//! the compiler then lists every method that backend must implement. The methods are the
//! backend's whole surface: the code above `store` never learns which backend it talks to.
//!
//! What a backend provides, beyond one method per [`Store`] method with the same meaning:
//! - a writer task behind the backend-neutral [`Writer`] handle (`start_writer`), draining
//!   the same operations (sends, acks, room changes, reloads) from its bounded channel, storing
//!   each batch in one transaction (group commit) and answering only after the commit;
//! - ids that become visible in commit order: a higher id is never readable before a lower
//!   one, since cursors and the backlog → live hand-off depend on it;
//! - the membership rules of module `membership` applied to every room change and room send,
//!   each checked against the membership in force at its id, with the events it stores;
//! - `on_commit` called after every commit with the new messages in id order, never twice;
//! - the same permission rule on every read (direct messages the reader sent or received,
//!   room messages inside the reader's membership spans of a live room), and search with the
//!   same semantics (every word quoted, no query syntax from users);
//! - the auth epoch bumped by every change that can end sessions, in the same transaction;
//! - [`StoreError`] for every failure: typed facts, no backend type leaking out.
//!
//! What stays SQLite's: the pool and its PRAGMAs, [`Durability`] (`synchronous`; on
//! PostgreSQL it sets the writer's `synchronous_commit`), the WAL
//! checkpointer, the search index file beside the database and the file lock
//! ([`super::DbLock`]: one serving process per file). What is PostgreSQL's: the id counter
//! row, the membership version, the tail and the node registry (module `pg`). The writer's
//! handle and its operations (`writer::Op`) are shared: each backend's writer task consumes
//! the same operations from the same kind of channel.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::pg::{PgTarget, PostgresStore};
use super::rooms::RoomSummary;
use super::writer::OnCommit;
use super::{
    Credentials, DeviceRecord, Durability, HistoryScope, RoomRef, SqliteStore, StoreError,
    UserInfo, UserRef, Writer,
};
use crate::ids::{DeviceId, MessageId, RoomId, UserId};
use crate::protocol::{MemberInfo, Message, RoomInfo, RoomName, SearchHit, UnreadInfo, Username};

/// The storage handle everything above `store` uses, whichever backend is behind it. Cheap to
/// clone.
#[derive(Clone)]
pub enum Store {
    /// The embedded default: one SQLite file, served by one process.
    Sqlite(SqliteStore),
    /// One PostgreSQL database, served by any number of nodes.
    Postgres(PostgresStore),
}

/// Hands a call to the backend behind a [`Store`]: `backend!(self, b => b.method(..))`. A new
/// backend adds its arm here.
macro_rules! backend {
    ($store:expr, $b:ident => $call:expr) => {
        match $store {
            Store::Sqlite($b) => $call,
            Store::Postgres($b) => $call,
        }
    };
}

impl Store {
    /// Opens (creating if needed, with mode 0600) the SQLite database at `path` and applies
    /// pending migrations.
    pub async fn open(path: &Path, durability: Durability) -> Result<Store, StoreError> {
        Ok(Store::Sqlite(SqliteStore::open(path, durability).await?))
    }

    /// Opens the database `target` names (see [`DbTarget`]).
    pub async fn connect(target: &DbTarget, durability: Durability) -> Result<Store, StoreError> {
        match target {
            DbTarget::Sqlite(path) => Store::open(path, durability).await,
            DbTarget::Postgres(target) => Ok(Store::Postgres(
                PostgresStore::open(target, durability).await?,
            )),
        }
    }

    /// Records this serving process as a node of the cluster, serving the key
    /// `fingerprint`; refused when another live node serves another key (PostgreSQL; a
    /// SQLite file has one server, which its lock ensures).
    pub async fn register_node(&self, node: &str, fingerprint: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(b) => b.register_node(node, fingerprint).await,
        }
    }

    /// Sets what to call when another node of a cluster moves a read marker (PostgreSQL;
    /// on SQLite there is no other node, and the hook is never called).
    pub fn on_remote_read_marker(&self, hook: super::ReadMarkerHook) {
        match self {
            Store::Sqlite(_) => drop(hook),
            Store::Postgres(b) => b.on_remote_read_marker(hook),
        }
    }

    /// Which backend this is, for logs and reports: `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Closes the store, waiting for its connections to finish.
    pub async fn close(&self) {
        backend!(self, b => b.close().await)
    }

    /// Starts the single writer task. `on_commit` is called after every committed batch with
    /// the newly stored messages in id order (never with duplicates).
    pub async fn start_writer(
        &self,
        on_commit: OnCommit,
    ) -> Result<(Writer, tokio::task::JoinHandle<()>), StoreError> {
        backend!(self, b => b.start_writer(on_commit).await)
    }

    // ----- accounts -------------------------------------------------------------------

    /// Creates an account.
    pub async fn create_user(
        &self,
        name: &Username,
        password_hash: &str,
    ) -> Result<UserId, StoreError> {
        backend!(self, b => b.create_user(name, password_hash).await)
    }

    /// Lists accounts that are not deleted, by name.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>, StoreError> {
        backend!(self, b => b.list_users().await)
    }

    /// Replaces a password and ends every session of the account.
    pub async fn set_password(
        &self,
        name: &Username,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        backend!(self, b => b.set_password(name, password_hash).await)
    }

    /// Disables or re-enables an account, keeping its devices.
    pub async fn set_disabled(&self, name: &Username, disabled: bool) -> Result<(), StoreError> {
        backend!(self, b => b.set_disabled(name, disabled).await)
    }

    /// Deletes an account; its name stays reserved and its history keeps naming it.
    pub async fn delete_user(&self, name: &Username) -> Result<(), StoreError> {
        backend!(self, b => b.delete_user(name).await)
    }

    /// Ends every session (device token) of an account; returns how many there were.
    pub async fn revoke_user(&self, name: &Username) -> Result<u64, StoreError> {
        backend!(self, b => b.revoke_user(name).await)
    }

    /// The credentials of a live account, if it exists.
    pub async fn credentials(&self, name: &Username) -> Result<Option<Credentials>, StoreError> {
        backend!(self, b => b.credentials(name).await)
    }

    /// Finds a live account by name.
    pub async fn find_user(&self, name: &Username) -> Result<Option<UserRef>, StoreError> {
        backend!(self, b => b.find_user(name).await)
    }

    // ----- devices --------------------------------------------------------------------

    /// Registers a new device for a user, its cursor at the user's acknowledged mark.
    pub async fn create_device(
        &self,
        user_id: UserId,
        token_hash: &[u8],
        name: &str,
    ) -> Result<DeviceId, StoreError> {
        backend!(self, b => b.create_device(user_id, token_hash, name).await)
    }

    /// Registers a device unless the account already has `max` of them. `None` when full.
    pub async fn create_device_capped(
        &self,
        user_id: UserId,
        token_hash: &[u8],
        name: &str,
        max: u32,
    ) -> Result<Option<DeviceId>, StoreError> {
        backend!(self, b => b.create_device_capped(user_id, token_hash, name, max).await)
    }

    /// Finds the device a token belongs to (the token's hash, that is).
    pub async fn device_by_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<DeviceRecord>, StoreError> {
        backend!(self, b => b.device_by_token(token_hash).await)
    }

    /// The current cursor of a device.
    pub async fn device_cursor(
        &self,
        device_id: DeviceId,
    ) -> Result<Option<MessageId>, StoreError> {
        backend!(self, b => b.device_cursor(device_id).await)
    }

    /// Deletes one device (logout).
    pub async fn delete_device(&self, device_id: DeviceId) -> Result<(), StoreError> {
        backend!(self, b => b.delete_device(device_id).await)
    }

    /// Of the given device ids, those that still exist and whose account is enabled.
    pub async fn valid_devices(&self, ids: &[DeviceId]) -> Result<HashSet<DeviceId>, StoreError> {
        backend!(self, b => b.valid_devices(ids).await)
    }

    /// The counter bumped by every change that can end sessions.
    pub async fn auth_epoch(&self) -> Result<i64, StoreError> {
        backend!(self, b => b.auth_epoch().await)
    }

    /// Number of stored messages (for tests, the bench and admin output).
    pub async fn message_count(&self) -> Result<i64, StoreError> {
        backend!(self, b => b.message_count().await)
    }

    /// Checks the database's own consistency; returns its first line ("ok" when sound).
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        backend!(self, b => b.integrity_check().await)
    }

    // ----- messages -------------------------------------------------------------------

    /// Messages for a user's device with ids above `after`, oldest first, at most `limit`,
    /// except what this very device sent.
    pub async fn backlog(
        &self,
        user_id: UserId,
        device_id: DeviceId,
        after: MessageId,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        backend!(self, b => b.backlog(user_id, device_id, after, limit).await)
    }

    /// One page of a conversation, oldest first, as `reader` may see it: above `after`, or
    /// below `before` (or the newest); the flag says whether more lies beyond the page.
    pub async fn history(
        &self,
        reader: UserId,
        scope: HistoryScope,
        before: Option<MessageId>,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        backend!(self, b => b.history(reader, scope, before, after, limit).await)
    }

    /// Full-text search over text messages `reader` may read, best match first; every one
    /// of `terms` (plain words, never query syntax) must match.
    pub async fn search(
        &self,
        reader: UserId,
        terms: &[String],
        scope: Option<HistoryScope>,
        limit: u32,
    ) -> Result<Vec<SearchHit>, StoreError> {
        backend!(self, b => b.search(reader, terms, scope, limit).await)
    }

    /// The newest message of a conversation `reader` can see, if any.
    pub async fn latest_id(
        &self,
        reader: UserId,
        scope: HistoryScope,
    ) -> Result<Option<MessageId>, StoreError> {
        backend!(self, b => b.latest_id(reader, scope).await)
    }

    /// Moves a read marker forward (never back); returns where it is now.
    pub async fn set_read_marker(
        &self,
        user_id: UserId,
        conversation: &str,
        upto: MessageId,
    ) -> Result<MessageId, StoreError> {
        backend!(self, b => b.set_read_marker(user_id, conversation, upto).await)
    }

    /// Per conversation of `user_id`: messages from others above the read marker, and the
    /// last message. Most recent conversation first.
    pub async fn unread(&self, user_id: UserId) -> Result<Vec<UnreadInfo>, StoreError> {
        backend!(self, b => b.unread(user_id).await)
    }

    // ----- rooms ----------------------------------------------------------------------

    /// Finds a live room by name.
    pub async fn find_room(&self, name: &RoomName) -> Result<Option<RoomRef>, StoreError> {
        backend!(self, b => b.find_room(name).await)
    }

    /// Whether a user is a member of a room now.
    pub async fn is_member(&self, room_id: RoomId, user_id: UserId) -> Result<bool, StoreError> {
        backend!(self, b => b.is_member(room_id, user_id).await)
    }

    /// Rooms `user_id` is in, and with `all` also every public room, by name.
    pub async fn room_list(&self, user_id: UserId, all: bool) -> Result<Vec<RoomInfo>, StoreError> {
        backend!(self, b => b.room_list(user_id, all).await)
    }

    /// Current members of a room, owner first, then by name.
    pub async fn room_members(&self, room: &RoomRef) -> Result<Vec<MemberInfo>, StoreError> {
        backend!(self, b => b.room_members(room).await)
    }

    /// Every live room, as the operator lists them.
    pub async fn room_summaries(&self) -> Result<Vec<RoomSummary>, StoreError> {
        backend!(self, b => b.room_summaries().await)
    }

    /// Deletes a room (operator command): it disappears with its history for every member.
    pub async fn delete_room(&self, name: &RoomName) -> Result<(), StoreError> {
        backend!(self, b => b.delete_room(name).await)
    }

    // ----- IRC ------------------------------------------------------------------------

    /// The IRC device `name` of a user: found, or created unless the account already has
    /// `max` devices (`None` then).
    pub async fn irc_device(
        &self,
        user_id: UserId,
        name: &str,
        token_hash: &[u8],
        max: u32,
    ) -> Result<Option<DeviceId>, StoreError> {
        backend!(self, b => b.irc_device(user_id, name, token_hash, max).await)
    }

    /// The highest message id sent at or before `micros` (0 when none).
    pub async fn last_id_at(&self, micros: i64) -> Result<MessageId, StoreError> {
        backend!(self, b => b.last_id_at(micros).await)
    }

    /// When a message was sent (µs), if it exists.
    pub async fn sent_at(&self, id: MessageId) -> Result<Option<i64>, StoreError> {
        backend!(self, b => b.sent_at(id).await)
    }

    /// A user's read marker of a conversation, if set.
    pub async fn read_marker(
        &self,
        user_id: UserId,
        conversation: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        backend!(self, b => b.read_marker(user_id, conversation).await)
    }

    // ----- login proofs ---------------------------------------------------------------

    /// The server's login-proof key, created on first use.
    pub async fn login_proof_key(&self) -> Result<[u8; 32], StoreError> {
        backend!(self, b => b.login_proof_key().await)
    }

    /// Failed password checks recorded for the proof with `nonce`.
    pub async fn proof_failures(&self, nonce: &[u8]) -> Result<u32, StoreError> {
        backend!(self, b => b.proof_failures(nonce).await)
    }

    /// Records that the proof with `nonce` (valid until `expires_at`, Unix seconds) has now
    /// failed `failures` times, and forgets proofs that have expired by `now`.
    pub async fn set_proof_failures(
        &self,
        nonce: &[u8],
        failures: u32,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        backend!(self, b => b.set_proof_failures(nonce, failures, expires_at, now).await)
    }
}

/// Which database a server opens: a path or a `sqlite:` URL selects SQLite; a
/// `postgres://` (or `postgresql://`) URL selects PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by every node of a cluster.
    Postgres(PgTarget),
}

impl DbTarget {
    /// The SQLite file, when this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            DbTarget::Sqlite(path) => Some(path),
            DbTarget::Postgres(_) => None,
        }
    }
}

/// Why a database target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbTargetError {
    #[error("invalid PostgreSQL URL: {0}")]
    BadPostgresUrl(String),
    #[error("no database path in {0:?}")]
    Empty(String),
    #[error("unsupported database {0:?} (expected a path, sqlite:PATH or postgres://…)")]
    Unsupported(String),
}

impl FromStr for DbTarget {
    type Err = DbTargetError;

    fn from_str(s: &str) -> Result<Self, DbTargetError> {
        if PgTarget::is_postgres(s) {
            return s
                .parse()
                .map(DbTarget::Postgres)
                .map_err(DbTargetError::BadPostgresUrl);
        }
        let path = match s.strip_prefix("sqlite:") {
            Some(rest) => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                // The database must be a file (the lock and the search index sit beside
                // it), opened with the server's own options.
                if path == ":memory:" || path.contains('?') {
                    return Err(DbTargetError::Unsupported(s.to_owned()));
                }
                path
            }
            // Anything else that looks like a URL is a mistake, not a file name.
            None if s.contains("://") => return Err(DbTargetError::Unsupported(s.to_owned())),
            None => s,
        };
        if path.is_empty() {
            return Err(DbTargetError::Empty(s.to_owned()));
        }
        Ok(DbTarget::Sqlite(PathBuf::from(path)))
    }
}

impl fmt::Display for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbTarget::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            DbTarget::Postgres(target) => target.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(path: &str) -> Result<DbTarget, DbTargetError> {
        Ok(DbTarget::Sqlite(PathBuf::from(path)))
    }

    #[test]
    fn a_path_or_a_sqlite_url_selects_sqlite() {
        assert_eq!("chatd.db".parse(), sqlite("chatd.db"));
        assert_eq!(
            "/var/lib/chatd/chatd.db".parse(),
            sqlite("/var/lib/chatd/chatd.db")
        );
        assert_eq!("sqlite:chatd.db".parse(), sqlite("chatd.db"));
        assert_eq!("sqlite://chatd.db".parse(), sqlite("chatd.db"));
        assert_eq!("sqlite:///var/chatd.db".parse(), sqlite("/var/chatd.db"));
        // Only the URL form takes options; a file name is a file name.
        assert_eq!("odd?name.db".parse(), sqlite("odd?name.db"));
    }

    #[test]
    fn a_postgres_url_selects_postgres() {
        for url in ["postgres://chat@db/chat", "postgresql://db/chat"] {
            let target = url.parse::<DbTarget>().unwrap();
            assert!(matches!(target, DbTarget::Postgres(_)), "{url}");
            assert_eq!(target.sqlite_path(), None);
        }
        let err = "postgres://db:notaport/chat"
            .parse::<DbTarget>()
            .unwrap_err();
        assert!(matches!(err, DbTargetError::BadPostgresUrl(_)), "{err:?}");
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "sqlite:",
            "sqlite://",
            "sqlite::memory:",
            "sqlite:a.db?mode=ro",
        ] {
            assert!(bad.parse::<DbTarget>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            "mysql://db/chat".parse::<DbTarget>(),
            Err(DbTargetError::Unsupported("mysql://db/chat".into()))
        );
    }

    #[test]
    fn display_round_trips() {
        let target: DbTarget = "sqlite:/tmp/x.db".parse().unwrap();
        assert_eq!(target.to_string().parse::<DbTarget>(), Ok(target));
    }
}
