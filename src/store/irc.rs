//! Queries the IRC gateway needs beyond the native protocol's: named IRC devices, mapping
//! IRC timestamps to message ids, and reading a read marker back.

use sqlx::Row;

use super::{now_micros, SqliteStore, StoreError};
use crate::ids::{DeviceId, MessageId, UserId};

impl SqliteStore {
    /// The IRC device `name` of a user: found by name, or created with its cursor at the
    /// user's acknowledged mark (like a new `chat login`) unless the account already has
    /// `max` devices (`None` then). `token_hash` is stored for a new device only; its token is
    /// never shown, so the device is reached by password alone.
    pub async fn irc_device(
        &self,
        user_id: UserId,
        name: &str,
        token_hash: &[u8],
        max: u32,
    ) -> Result<Option<DeviceId>, StoreError> {
        let now = now_micros();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let found = sqlx::query("SELECT id FROM devices WHERE user_id = ? AND irc_name = ?")
            .bind(user_id.get())
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let id: Option<i64> = match found {
            Some(r) => {
                let id: i64 = r.get(0);
                sqlx::query("UPDATE devices SET last_seen_at = ? WHERE id = ?")
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                Some(id)
            }
            None => sqlx::query(
                "INSERT INTO devices (user_id, token_hash, name, cursor, created_at, \
                 last_seen_at, irc_name) \
                 SELECT id, ?, ?, acked_upto, ?, ?, ? FROM users WHERE id = ? \
                 AND (SELECT COUNT(*) FROM devices WHERE user_id = ?) < ? RETURNING id",
            )
            .bind(token_hash)
            .bind(format!("irc: {name}"))
            .bind(now)
            .bind(now)
            .bind(name)
            .bind(user_id.get())
            .bind(user_id.get())
            .bind(i64::from(max))
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0)),
        };
        tx.commit().await?;
        Ok(id.map(DeviceId))
    }

    /// The highest message id sent at or before `micros` (0 when none): IRC names points in
    /// a conversation by time. Ids and times both only grow, so this is a binary search over
    /// the primary key rather than a scan.
    pub async fn last_id_at(&self, micros: i64) -> Result<MessageId, StoreError> {
        let max: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM messages")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        let (mut lo, mut hi) = (0i64, max);
        // Invariant: every message with id <= lo was sent at or before `micros`; every one
        // with id > hi after it.
        while lo < hi {
            let mid = lo + (hi - lo + 1) / 2;
            let row =
                sqlx::query("SELECT id, sent_at FROM messages WHERE id >= ? ORDER BY id LIMIT 1")
                    .bind(mid)
                    .fetch_optional(&self.pool)
                    .await?;
            match row {
                Some(r) if r.get::<i64, _>(1) <= micros => lo = r.get::<i64, _>(0).max(mid),
                _ => hi = mid - 1,
            }
        }
        Ok(MessageId(lo))
    }

    /// When a message was sent (µs), if it exists.
    pub async fn sent_at(&self, id: MessageId) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT sent_at FROM messages WHERE id = ?")
            .bind(id.get())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// A user's read marker for a conversation (`bob` or `#room`), if set.
    pub async fn read_marker(
        &self,
        user_id: UserId,
        conversation: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        let row =
            sqlx::query("SELECT upto FROM read_markers WHERE user_id = ? AND conversation = ?")
                .bind(user_id.get())
                .bind(conversation)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| MessageId(r.get(0))))
    }
}
