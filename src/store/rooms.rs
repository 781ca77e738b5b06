//! Reading rooms and memberships, and the operator's room commands. Membership *changes*
//! (create, join, invite, leave, kick, an owner's deletion) are ordered events, so they go
//! through the writer; a deletion's rows are changed by [`mark_room_deleted`] either way.

use sqlx::Row;

use super::{bump_epoch, SqliteStore, StoreError};
use crate::ids::{RoomId, UserId};
use crate::protocol::{MemberInfo, RoomInfo, RoomName};

/// A live (not deleted) room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRef {
    pub id: RoomId,
    /// As stored: `as_str()` is without `#`, `Display` adds it.
    pub name: RoomName,
    pub private: bool,
    /// `UserId(0)` for a room without an owner (none is made that way).
    pub owner_id: UserId,
}

/// A room as the operator lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomSummary {
    /// `#name`.
    pub name: String,
    pub private: bool,
    pub owner: String,
    pub members: i64,
    pub messages: i64,
}

impl SqliteStore {
    /// Finds a live room by name.
    pub async fn find_room(&self, name: &RoomName) -> Result<Option<RoomRef>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, private, owner_id FROM rooms WHERE name = ? AND deleted = 0",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| RoomRef {
            id: RoomId(r.get(0)),
            name: RoomName::from_stored(r.get(1)),
            private: r.get::<i64, _>(2) != 0,
            owner_id: UserId(r.get::<Option<i64>, _>(3).unwrap_or(0)),
        }))
    }

    /// Whether a user is currently a member of a room.
    pub async fn is_member(&self, room_id: RoomId, user_id: UserId) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 FROM room_spans WHERE room_id = ? AND user_id = ? AND left_id IS NULL",
        )
        .bind(room_id.get())
        .bind(user_id.get())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Rooms `user_id` is in, and with `all` also every public room, by name.
    pub async fn room_list(&self, user_id: UserId, all: bool) -> Result<Vec<RoomInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.name, r.private, COALESCE(o.name, ''), \
                    (SELECT COUNT(*) FROM room_spans s WHERE s.room_id = r.id AND s.left_id IS NULL), \
                    EXISTS (SELECT 1 FROM room_spans s WHERE s.room_id = r.id AND s.user_id = ?1 \
                            AND s.left_id IS NULL) AS member \
             FROM rooms r LEFT JOIN users o ON o.id = r.owner_id \
             WHERE r.deleted = 0 AND (member OR (?2 AND r.private = 0)) ORDER BY r.name",
        )
        .bind(user_id.get())
        .bind(all)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| RoomInfo {
                name: format!("#{}", r.get::<String, _>(0)),
                private: r.get::<i64, _>(1) != 0,
                owner: r.get(2),
                members: u64::try_from(r.get::<i64, _>(3)).unwrap_or(0),
                member: r.get::<i64, _>(4) != 0,
            })
            .collect())
    }

    /// Current members of a room, owner first, then by name.
    pub async fn room_members(&self, room: &RoomRef) -> Result<Vec<MemberInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.id, u.name FROM room_spans s JOIN users u ON u.id = s.user_id \
             WHERE s.room_id = ? AND s.left_id IS NULL ORDER BY u.id = ? DESC, u.name",
        )
        .bind(room.id.get())
        .bind(room.owner_id.get())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| MemberInfo {
                role: if UserId(r.get(0)) == room.owner_id {
                    "owner".into()
                } else {
                    "member".into()
                },
                user: r.get(1),
            })
            .collect())
    }

    /// Every live room, for the operator.
    pub async fn room_summaries(&self) -> Result<Vec<RoomSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.name, r.private, COALESCE(o.name, ''), \
                    (SELECT COUNT(*) FROM room_spans s WHERE s.room_id = r.id AND s.left_id IS NULL), \
                    (SELECT COUNT(*) FROM messages m WHERE m.room_id = r.id) \
             FROM rooms r LEFT JOIN users o ON o.id = r.owner_id WHERE r.deleted = 0 ORDER BY r.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| RoomSummary {
                name: format!("#{}", r.get::<String, _>(0)),
                private: r.get::<i64, _>(1) != 0,
                owner: r.get(2),
                members: r.get(3),
                messages: r.get(4),
            })
            .collect())
    }

    /// Deletes a room (operator command): it disappears with its history for every member;
    /// its name becomes free. Running servers notice through the auth epoch: the writer
    /// re-reads the rooms and tells the former members (see `mark_room_deleted`).
    pub async fn delete_room(&self, name: &RoomName) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT id FROM rooms WHERE name = ? AND deleted = 0")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = row.map(|r| RoomId(r.get(0))) else {
            return Err(StoreError::Refused(super::Refusal::UnknownRoom {
                room: Some(name.as_str().to_string()),
            }));
        };
        mark_room_deleted(&mut tx, id, name.as_str()).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Marks room `id` (named `name`, without `#`) deleted inside `tx`: its history is no longer
/// readable, its read markers go and its name is free. The one deletion both the operator's
/// `chatd room del` and an owner's deletion (in the writer) use. It bumps the auth epoch, so
/// a running server drops its cached rooms and the writer re-reads the rooms; the writer
/// tells the members of every room that disappeared (a `delete` event, see
/// `writer::State::load_rooms`).
pub(super) async fn mark_room_deleted(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: RoomId,
    name: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE rooms SET deleted = 1, name = name || '~deleted~' || id WHERE id = ?")
        .bind(id.get())
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM read_markers WHERE conversation = ?")
        .bind(format!("#{name}"))
        .execute(&mut **tx)
        .await?;
    bump_epoch(tx).await?;
    Ok(())
}
