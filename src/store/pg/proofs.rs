//! The login-proof key and the failure counts of proofs on PostgreSQL (see
//! `crate::auth::proof`): one key for the whole cluster, so a proof issued by one node is
//! honoured by every other, and one failure budget per proof, whichever node counts it.

use rand::RngCore;
use sqlx::Row;

use super::PostgresStore;
use crate::store::StoreError;

const PROOF_KEY: &str = "login_proof_hmac_sha256";

impl PostgresStore {
    /// The server's login-proof key, created on first use (the first node to ask wins).
    pub async fn login_proof_key(&self) -> Result<[u8; 32], StoreError> {
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(PROOF_KEY)
        .bind(&fresh[..])
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
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
        let row = sqlx::query("SELECT failures FROM login_proof_failures WHERE nonce = $1")
            .bind(nonce)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| u32::try_from(r.get::<i64, _>(0)).unwrap_or(u32::MAX))
            .unwrap_or(0))
    }

    /// Records that the proof with `nonce` has now failed `failures` times (never fewer
    /// than another node recorded), and forgets proofs that have expired by `now`.
    pub async fn set_proof_failures(
        &self,
        nonce: &[u8],
        failures: u32,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM login_proof_failures WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO login_proof_failures (nonce, failures, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (nonce) DO UPDATE \
             SET failures = GREATEST(login_proof_failures.failures, excluded.failures)",
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
