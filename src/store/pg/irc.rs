//! The IRC gateway's queries on PostgreSQL: named IRC devices (found again by name on any
//! node), mapping IRC timestamps to message ids, and reading a read marker back.

use sqlx::Row;

use super::{accounts::insert_device, PostgresStore};
use crate::ids::{DeviceId, MessageId, UserId};
use crate::store::{now_micros, StoreError};

impl PostgresStore {
    /// The IRC device `name` of a user: found, or created unless the account already has
    /// `max` devices (`None` then). Two nodes logging the same name in at once find one
    /// device: the account's row is locked while the device is looked up and made.
    pub async fn irc_device(
        &self,
        user_id: UserId,
        name: &str,
        token_hash: &[u8],
        max: u32,
    ) -> Result<Option<DeviceId>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(user_id.get())
            .fetch_optional(&mut *tx)
            .await?;
        let found = sqlx::query(
            "UPDATE devices SET last_seen_at = $3 WHERE user_id = $1 AND irc_name = $2 \
             RETURNING id",
        )
        .bind(user_id.get())
        .bind(name)
        .bind(now_micros())
        .fetch_optional(&mut *tx)
        .await?;
        let id = match found {
            Some(r) => Some(DeviceId(r.get(0))),
            None => {
                let label = format!("irc: {name}");
                insert_device(&mut tx, user_id, token_hash, &label, Some(name), max).await?
            }
        };
        tx.commit().await?;
        Ok(id)
    }

    /// The highest message id sent at or before `micros` (0 when none). Ids grow with
    /// `sent_at` (each writer stamps a commit no earlier than the last one it saw), so a
    /// binary search over ids finds it.
    pub async fn last_id_at(&self, micros: i64) -> Result<MessageId, StoreError> {
        let max: i64 = sqlx::query("SELECT last_id FROM id_counter")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        let (mut lo, mut hi) = (0i64, max);
        while lo < hi {
            let mid = lo + (hi - lo + 1) / 2;
            let row =
                sqlx::query("SELECT id, sent_at FROM messages WHERE id >= $1 ORDER BY id LIMIT 1")
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
        let row = sqlx::query("SELECT sent_at FROM messages WHERE id = $1")
            .bind(id.get())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// A user's read marker of a conversation, if set.
    pub async fn read_marker(
        &self,
        user_id: UserId,
        conversation: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        let row =
            sqlx::query("SELECT upto FROM read_markers WHERE user_id = $1 AND conversation = $2")
                .bind(user_id.get())
                .bind(conversation)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| MessageId(r.get(0))))
    }
}
