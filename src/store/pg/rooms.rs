//! Rooms on PostgreSQL: reading rooms and memberships, and the deletion of a room, which on
//! PostgreSQL stores its `delete` event in the same transaction (under the id counter), so
//! that every node's tail delivers it to the members, whichever node or admin command
//! deleted the room.

use sqlx::{PgConnection, Row};

use super::{accounts::bump_epoch, flag, writer, PostgresStore};
use crate::ids::{RoomId, UserId};
use crate::protocol::{MemberInfo, MessageKind, RoomInfo, RoomName};
use crate::store::rooms::RoomSummary;
use crate::store::{now_micros, RoomRef, StoreError};

impl PostgresStore {
    /// Finds a live room by name.
    pub async fn find_room(&self, name: &RoomName) -> Result<Option<RoomRef>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, private, owner_id FROM rooms WHERE name = $1 AND NOT deleted",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| RoomRef {
            id: RoomId(r.get(0)),
            name: RoomName::from_stored(r.get(1)),
            private: flag(&r, 2),
            owner_id: UserId(r.get::<Option<i64>, _>(3).unwrap_or(0)),
        }))
    }

    /// Whether a user is a member of a room now.
    pub async fn is_member(&self, room_id: RoomId, user_id: UserId) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 FROM room_spans WHERE room_id = $1 AND user_id = $2 AND left_id IS NULL",
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
            "SELECT name, private, owner, members, member FROM ( \
               SELECT r.name, r.private, COALESCE(o.name, '') AS owner, \
                      (SELECT COUNT(*) FROM room_spans s WHERE s.room_id = r.id \
                       AND s.left_id IS NULL) AS members, \
                      EXISTS (SELECT 1 FROM room_spans s WHERE s.room_id = r.id \
                              AND s.user_id = $1 AND s.left_id IS NULL) AS member \
               FROM rooms r LEFT JOIN users o ON o.id = r.owner_id WHERE NOT r.deleted) AS x \
             WHERE member OR ($2 AND NOT private) ORDER BY name",
        )
        .bind(user_id.get())
        .bind(all)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| RoomInfo {
                name: format!("#{}", r.get::<String, _>(0)),
                private: flag(&r, 1),
                owner: r.get(2),
                members: u64::try_from(r.get::<i64, _>(3)).unwrap_or(0),
                member: flag(&r, 4),
            })
            .collect())
    }

    /// Current members of a room, owner first, then by name.
    pub async fn room_members(&self, room: &RoomRef) -> Result<Vec<MemberInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.id, u.name FROM room_spans s JOIN users u ON u.id = s.user_id \
             WHERE s.room_id = $1 AND s.left_id IS NULL ORDER BY u.id = $2 DESC, u.name",
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

    /// Every live room, as the operator lists them.
    pub async fn room_summaries(&self) -> Result<Vec<RoomSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.name, r.private, COALESCE(o.name, ''), \
                    (SELECT COUNT(*) FROM room_spans s WHERE s.room_id = r.id AND s.left_id IS NULL), \
                    (SELECT COUNT(*) FROM messages m WHERE m.room_id = r.id) \
             FROM rooms r LEFT JOIN users o ON o.id = r.owner_id WHERE NOT r.deleted \
             ORDER BY r.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| RoomSummary {
                name: format!("#{}", r.get::<String, _>(0)),
                private: flag(&r, 1),
                owner: r.get(2),
                members: r.get(3),
                messages: r.get(4),
            })
            .collect())
    }

    /// Deletes a room (operator command): it disappears with its history for every member,
    /// and its `delete` event reaches the live members through every node's tail.
    pub async fn delete_room(&self, name: &RoomName) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let (last_id, _) = writer::lock_counter(&mut tx).await?;
        let row = sqlx::query("SELECT id FROM rooms WHERE name = $1 AND NOT deleted")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = row.map(|r| RoomId(r.get(0))) else {
            return Err(StoreError::Refused(crate::store::Refusal::UnknownRoom {
                room: Some(name.as_str().to_string()),
            }));
        };
        delete_room_in(&mut tx, id, name.as_str(), last_id + 1, now_micros()).await?;
        writer::advance_counter(&mut tx, last_id + 1, true).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Marks a room deleted under a freed name and stores its `delete` event with id
/// `event_id` (sent by the owner), inside a transaction that holds the id counter. Returns
/// whether an event was stored (a room without an owner has no one to name as its sender).
pub(super) async fn delete_room_in(
    conn: &mut PgConnection,
    id: RoomId,
    name: &str,
    event_id: i64,
    now: i64,
) -> Result<(), StoreError> {
    let owner = sqlx::query(
        "UPDATE rooms SET deleted = true, name = name || '~deleted~' || id WHERE id = $1 \
         RETURNING owner_id",
    )
    .bind(id.get())
    .fetch_one(&mut *conn)
    .await?
    .get::<Option<i64>, _>(0);
    sqlx::query("DELETE FROM read_markers WHERE conversation = $1")
        .bind(format!("#{name}"))
        .execute(&mut *conn)
        .await?;
    let owner = owner.ok_or_else(|| {
        StoreError::Database(format!("room {id} has no owner to send its deletion").into())
    })?;
    sqlx::query(
        "INSERT INTO messages (id, sender_id, room_id, body, sent_at, client_key, kind) \
         VALUES ($1, $2, $3, '', $4, $5, $6)",
    )
    .bind(event_id)
    .bind(owner)
    .bind(id.get())
    .bind(now)
    .bind(format!("\u{1}event:{event_id}"))
    .bind(MessageKind::Delete.as_str())
    .execute(&mut *conn)
    .await?;
    bump_epoch(conn).await
}
