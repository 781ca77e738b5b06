//! Accounts and devices on PostgreSQL: the same operations as SQLite's (`store/mod.rs`), each
//! change that can end sessions bumping the auth epoch in its own transaction, so every node
//! re-checks its live connections at its next poll.

use std::collections::HashSet;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row, Transaction};

use super::{flag, PostgresStore};
use crate::ids::{DeviceId, MessageId, UserId};
use crate::protocol::{format_timestamp, Username};
use crate::store::{now_micros, Credentials, DeviceRecord, StoreError, UserInfo, UserRef};

impl PostgresStore {
    /// Creates an account.
    pub async fn create_user(
        &self,
        name: &Username,
        password_hash: &str,
    ) -> Result<UserId, StoreError> {
        let result = sqlx::query(
            "INSERT INTO users (name, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(name.as_str())
        .bind(password_hash)
        .bind(now_micros())
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok(row) => Ok(UserId(row.get(0))),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::DuplicateUser(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Lists accounts that are not deleted, by name.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.name, u.disabled, u.created_at, \
                    (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.id) \
             FROM users u WHERE NOT u.deleted ORDER BY u.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| UserInfo {
                name: r.get(0),
                disabled: flag(&r, 1),
                created_at: format_timestamp(r.get(2)),
                devices: r.get(3),
            })
            .collect())
    }

    /// Replaces a password and ends every session of the account.
    pub async fn set_password(
        &self,
        name: &Username,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        self.change_account(
            name,
            &[
                "UPDATE users SET password_hash = $2 WHERE id = $1",
                "DELETE FROM devices WHERE user_id = $1",
            ],
            Some(password_hash),
        )
        .await
        .map(|_| ())
    }

    /// Disables or re-enables an account, keeping its devices.
    pub async fn set_disabled(&self, name: &Username, disabled: bool) -> Result<(), StoreError> {
        let sql = if disabled {
            "UPDATE users SET disabled = true WHERE id = $1"
        } else {
            "UPDATE users SET disabled = false WHERE id = $1"
        };
        self.change_account(name, &[sql], None).await.map(|_| ())
    }

    /// Deletes an account; its row stays (marked deleted) and its name stays reserved.
    pub async fn delete_user(&self, name: &Username) -> Result<(), StoreError> {
        self.change_account(
            name,
            &[
                "UPDATE users SET deleted = true, disabled = true, password_hash = NULL \
                 WHERE id = $1",
                "DELETE FROM devices WHERE user_id = $1",
            ],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Ends every session (device token) of an account; returns how many there were.
    pub async fn revoke_user(&self, name: &Username) -> Result<u64, StoreError> {
        self.change_account(name, &["DELETE FROM devices WHERE user_id = $1"], None)
            .await
    }

    /// Runs `statements` (`$1` = the live account's id, `$2` = `value` where used) in one
    /// transaction that also bumps the auth epoch. Returns the rows changed by the last one.
    async fn change_account(
        &self,
        name: &Username,
        statements: &[&str],
        value: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT id FROM users WHERE name = $1 AND NOT deleted FOR UPDATE")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let id: i64 = row
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::NoSuchUser(name.to_string()))?;
        let mut changed = 0;
        for sql in statements {
            let mut q = sqlx::query(sql).bind(id);
            if sql.contains("$2") {
                q = q.bind(value);
            }
            changed = q.execute(&mut *tx).await?.rows_affected();
        }
        bump_epoch(&mut tx).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// The credentials of a live account, if it exists.
    pub async fn credentials(&self, name: &Username) -> Result<Option<Credentials>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, password_hash, disabled FROM users \
             WHERE name = $1 AND NOT deleted AND password_hash IS NOT NULL",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Credentials {
            user_id: UserId(r.get(0)),
            name: Username::from_stored(r.get(1)),
            password_hash: r.get(2),
            disabled: flag(&r, 3),
        }))
    }

    /// Finds a live account by name.
    pub async fn find_user(&self, name: &Username) -> Result<Option<UserRef>, StoreError> {
        let row =
            sqlx::query("SELECT id, name, disabled FROM users WHERE name = $1 AND NOT deleted")
                .bind(name.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| UserRef {
            id: UserId(r.get(0)),
            name: Username::from_stored(r.get(1)),
            disabled: flag(&r, 2),
        }))
    }

    /// Registers a new device for a user, its cursor at the user's acknowledged mark.
    pub async fn create_device(
        &self,
        user_id: UserId,
        token_hash: &[u8],
        name: &str,
    ) -> Result<DeviceId, StoreError> {
        self.create_device_capped(user_id, token_hash, name, u32::MAX)
            .await?
            .ok_or_else(|| StoreError::Database(format!("no account with id {user_id}").into()))
    }

    /// Registers a device unless the account already has `max` of them. The account's row
    /// is locked first, so concurrent logins on any node cannot overshoot. `None` when full.
    pub async fn create_device_capped(
        &self,
        user_id: UserId,
        token_hash: &[u8],
        name: &str,
        max: u32,
    ) -> Result<Option<DeviceId>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = insert_device(&mut tx, user_id, token_hash, name, None, max).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Finds the device a token belongs to (the token's hash, that is).
    pub async fn device_by_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let row = sqlx::query(
            "UPDATE devices d SET last_seen_at = $2 FROM users u \
             WHERE u.id = d.user_id AND d.token_hash = $1 AND NOT u.deleted \
             RETURNING d.id, d.user_id, u.name, d.cursor, u.disabled",
        )
        .bind(token_hash)
        .bind(now_micros())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r: PgRow| DeviceRecord {
            device_id: DeviceId(r.get(0)),
            user_id: UserId(r.get(1)),
            user_name: Username::from_stored(r.get(2)),
            cursor: MessageId(r.get(3)),
            disabled: flag(&r, 4),
        }))
    }

    /// The current cursor of a device.
    pub async fn device_cursor(
        &self,
        device_id: DeviceId,
    ) -> Result<Option<MessageId>, StoreError> {
        let row = sqlx::query("SELECT cursor FROM devices WHERE id = $1")
            .bind(device_id.get())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| MessageId(r.get(0))))
    }

    /// Deletes one device (logout).
    pub async fn delete_device(&self, device_id: DeviceId) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(device_id.get())
            .execute(&mut *tx)
            .await?;
        bump_epoch(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Of the given device ids, those that still exist and whose account is enabled.
    pub async fn valid_devices(&self, ids: &[DeviceId]) -> Result<HashSet<DeviceId>, StoreError> {
        let ids: Vec<i64> = ids.iter().map(|d| d.get()).collect();
        let rows = sqlx::query(
            "SELECT d.id FROM devices d JOIN users u ON u.id = d.user_id \
             WHERE NOT u.disabled AND NOT u.deleted AND d.id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| DeviceId(r.get(0))).collect())
    }

    /// The counter bumped by every change that can end sessions.
    pub async fn auth_epoch(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'auth_epoch'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    /// Number of stored messages (for tests, the bench and admin output).
    pub async fn message_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM messages")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    /// PostgreSQL checks its own pages; this checks what chatd relies on beyond them: the
    /// id counter has handed out the highest id stored, no more, no fewer (ids from this
    /// backend are dense; a database copied from SQLite may have gaps below the copy).
    /// Returns "ok" when sound, else what is wrong.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT last_id FROM id_counter), COALESCE(MAX(id), 0) FROM messages",
        )
        .fetch_one(&self.pool)
        .await?;
        let (last, max): (i64, i64) = (row.get(0), row.get(1));
        Ok(if last == max {
            "ok".into()
        } else {
            format!("id counter at {last}, highest message id {max}")
        })
    }
}

/// Inserts a device row (an IRC device when `irc_name` is given) unless the account already
/// has `max` devices, with the account's row locked for the rest of `tx`.
pub(super) async fn insert_device(
    tx: &mut Transaction<'_, Postgres>,
    user_id: UserId,
    token_hash: &[u8],
    name: &str,
    irc_name: Option<&str>,
    max: u32,
) -> Result<Option<DeviceId>, StoreError> {
    let user = sqlx::query("SELECT acked_upto FROM users WHERE id = $1 FOR NO KEY UPDATE")
        .bind(user_id.get())
        .fetch_optional(&mut **tx)
        .await?;
    let Some(user) = user else { return Ok(None) };
    let acked: i64 = user.get(0);
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM devices WHERE user_id = $1")
        .bind(user_id.get())
        .fetch_one(&mut **tx)
        .await?
        .get(0);
    if count >= i64::from(max) {
        return Ok(None);
    }
    let now = now_micros();
    let row = sqlx::query(
        "INSERT INTO devices (user_id, token_hash, name, cursor, created_at, last_seen_at, \
         irc_name) VALUES ($1, $2, $3, $4, $5, $5, $6) RETURNING id",
    )
    .bind(user_id.get())
    .bind(token_hash)
    .bind(name)
    .bind(acked)
    .bind(now)
    .bind(irc_name)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some(DeviceId(row.get(0))))
}

/// Bumps the auth epoch inside the transaction open on `conn`.
pub(super) async fn bump_epoch(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("UPDATE meta SET value = value + 1 WHERE key = 'auth_epoch'")
        .execute(conn)
        .await?;
    Ok(())
}
