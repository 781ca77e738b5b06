//! The login-proof key and the failure counts of proofs (see `crate::auth::proof`). Nothing
//! here decides whether a proof is valid; it only keeps what must survive a restart.

use rand::RngCore;
use sqlx::Row;

use super::{SqliteStore, StoreError};

/// Name of the login-proof HMAC key in `server_secrets`.
const PROOF_KEY: &str = "login_proof_hmac_sha256";

impl SqliteStore {
    /// The server's login-proof key (32 random bytes), created on first use. Concurrent
    /// first calls agree: the insert is ignored when a key exists, and the stored one is read.
    pub async fn login_proof_key(&self) -> Result<[u8; 32], StoreError> {
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        sqlx::query("INSERT OR IGNORE INTO server_secrets (name, value) VALUES (?, ?)")
            .bind(PROOF_KEY)
            .bind(&fresh[..])
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = ?")
            .bind(PROOF_KEY)
            .fetch_one(&self.pool)
            .await?;
        let value: Vec<u8> = row.get(0);
        value.try_into().map_err(|v: Vec<u8>| {
            StoreError::Database(format!("the login-proof key is {} bytes, not 32", v.len()).into())
        })
    }

    /// Failed password checks recorded for the proof with `nonce`.
    pub async fn proof_failures(&self, nonce: &[u8]) -> Result<u32, StoreError> {
        let row = sqlx::query("SELECT failures FROM login_proof_failures WHERE nonce = ?")
            .bind(nonce)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| u32::try_from(r.get::<i64, _>(0)).unwrap_or(u32::MAX))
            .unwrap_or(0))
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM login_proof_failures WHERE expires_at < ?")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO login_proof_failures (nonce, failures, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (nonce) DO UPDATE SET failures = excluded.failures",
        )
        .bind(nonce)
        .bind(i64::from(failures))
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
