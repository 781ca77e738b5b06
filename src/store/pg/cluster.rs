//! The nodes of a cluster and the one key they serve. Clients pin the server's key, so every
//! node behind the load balancer must present the same one: each node records the
//! fingerprint of its key in `cluster_nodes` at start and every [`HEARTBEAT`] after, and a
//! node refuses to start when another node seen within [`LIVE`] serves a different key.
//! Stopping every node and starting them with a new key (a key rotation) is allowed once
//! the old nodes' records are older than [`LIVE`] (or gone: a node that stops cleanly removes
//! its record).

use std::time::Duration;

use sqlx::Row;

use super::PostgresStore;
use crate::store::{now_micros, StoreError};

/// How often a node renews its record.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// How long a node's record counts as live after its last renewal.
pub const LIVE: Duration = Duration::from_secs(30);

/// Another live node serves a different key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConflict {
    /// The other node's name (its host name and process id).
    pub node: String,
    /// The fingerprint that node serves.
    pub fingerprint: String,
}

impl PostgresStore {
    /// Records this node (`node`, serving the key `fingerprint`) and keeps the record fresh
    /// until the store is closed. Refused with [`StoreError::KeyConflict`] when a live node
    /// serves another key.
    pub async fn register_node(&self, node: &str, fingerprint: &str) -> Result<(), StoreError> {
        let now = now_micros();
        let live_since = now - LIVE.as_micros() as i64;
        let mut tx = self.pool.begin().await?;
        // One node registers at a time, so two nodes starting together with different keys
        // cannot both get in.
        sqlx::query("LOCK TABLE cluster_nodes IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let other = sqlx::query(
            "SELECT node, fingerprint FROM cluster_nodes \
             WHERE node <> $1 AND fingerprint <> $2 AND last_seen_at >= $3 \
             ORDER BY last_seen_at DESC LIMIT 1",
        )
        .bind(node)
        .bind(fingerprint)
        .bind(live_since)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = other {
            return Err(StoreError::KeyConflict(KeyConflict {
                node: r.get(0),
                fingerprint: r.get(1),
            }));
        }
        sqlx::query(
            "INSERT INTO cluster_nodes (node, fingerprint, started_at, last_seen_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (node) DO UPDATE \
             SET fingerprint = excluded.fingerprint, started_at = excluded.started_at, \
                 last_seen_at = excluded.last_seen_at",
        )
        .bind(node)
        .bind(fingerprint)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Records of nodes long gone are of no use to anyone.
        sqlx::query("DELETE FROM cluster_nodes WHERE last_seen_at < $1")
            .bind(now - 10 * LIVE.as_micros() as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        *self.node.lock().unwrap_or_else(|p| p.into_inner()) = Some(node.to_owned());
        let pool = self.pool.clone();
        let node = node.to_owned();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            while !pool.is_closed() {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = pool.close_event() => return,
                }
                let renewed =
                    sqlx::query("UPDATE cluster_nodes SET last_seen_at = $2 WHERE node = $1")
                        .bind(&node)
                        .bind(now_micros())
                        .execute(&pool)
                        .await;
                if let Err(e) = renewed {
                    tracing::warn!(error = %e, "cannot renew this node's record in the cluster");
                }
            }
        });
        Ok(())
    }

    /// Removes this node's record (at a clean stop).
    pub(super) async fn unregister_node(&self) {
        let node = self.node.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(node) = node {
            let _ = sqlx::query("DELETE FROM cluster_nodes WHERE node = $1")
                .bind(node)
                .execute(&self.pool)
                .await;
        }
    }

    /// The live nodes' records: `(node, fingerprint)`, newest first.
    pub async fn cluster_nodes(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT node, fingerprint FROM cluster_nodes WHERE last_seen_at >= $1 \
             ORDER BY last_seen_at DESC",
        )
        .bind(now_micros() - LIVE.as_micros() as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
