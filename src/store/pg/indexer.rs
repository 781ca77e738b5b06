//! The search indexer: fills `message_search` (migrations/postgres/0002) from `messages`
//! after commit, never inside one, as SQLite's indexer fills its index file
//! (`store/search.rs`).
//!
//! Inside the commit, the GIN index over the message bodies was about 70 % of what a stored
//! message cost the writer. Here each node runs an indexer; whichever takes the row of
//! `search_state` (`FOR UPDATE SKIP LOCKED`) indexes, the others find it taken and leave it.
//! It wakes when the node's tail has moved (every message of every node passes there), lets
//! [`GATHER`] of commits gather, and indexes [`CHUNK`] ids per transaction, moving the mark
//! `indexed_upto` in the same transaction. Ids become visible in id order (module `writer`),
//! so everything at or below the mark has been indexed and nothing below it can appear later.
//!
//! Search (module `messages`) reads the rows above the mark from `messages` itself, in the
//! same snapshot as the index, so a message is found as soon as its `sent` is out, however
//! far behind the indexer is. The index is derived data: its commits skip the WAL flush
//! (`synchronous_commit=off`), and a crash loses at most what is indexed again from the mark.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::StoreError;

/// Ids indexed per transaction.
const CHUNK: i64 = 4096;

/// How long the indexer lets commits gather after a wake-up: fewer, larger transactions
/// (GIN's pending list takes a batch far more cheaply than row by row).
const GATHER: Duration = Duration::from_millis(250);

/// How often the indexer looks without being woken (another node's indexer may have
/// stopped half-way).
const IDLE: Duration = Duration::from_secs(5);

/// The application name of the indexer's connection.
const NAME: &str = "chatd-indexer";

/// A node's indexer task.
pub(super) struct Indexer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Indexer {
    /// Starts indexing; `progress` moves whenever new messages are stored (by any node).
    pub(super) fn start(options: &PgConnectOptions, progress: watch::Receiver<i64>) -> Indexer {
        let options = options
            .clone()
            .application_name(NAME)
            .options([("synchronous_commit", "off")]);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(options, progress, stop.clone()));
        Indexer { stop, task }
    }

    /// Stops the task (a chunk half-done is rolled back, and done again later).
    pub(super) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn run(
    options: PgConnectOptions,
    mut progress: watch::Receiver<i64>,
    stop: CancellationToken,
) {
    let mut conn: Option<PgConnection> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = progress.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(IDLE) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(GATHER) => {}
        }
        loop {
            let indexed = tokio::select! {
                _ = stop.cancelled() => return close(conn).await,
                indexed = index_chunk(&options, &mut conn) => indexed,
            };
            match indexed {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "indexing messages for search failed; retrying");
                    conn = None;
                    break;
                }
            }
        }
    }
    close(conn).await;
}

async fn close(conn: Option<PgConnection>) {
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

/// Indexes the next chunk, if this node holds the mark. Returns whether there may be more.
async fn index_chunk(
    options: &PgConnectOptions,
    conn: &mut Option<PgConnection>,
) -> Result<bool, StoreError> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(PgConnection::connect_with(options).await?),
    };
    let mut tx = conn.begin().await?;
    let mark: Option<i64> =
        sqlx::query("SELECT indexed_upto FROM search_state FOR UPDATE SKIP LOCKED")
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0));
    let Some(mark) = mark else {
        // Another node's indexer is at it.
        tx.commit().await?;
        return Ok(false);
    };
    let read: i64 = sqlx::query(
        "WITH batch AS (SELECT id, kind, body FROM messages WHERE id > $1 ORDER BY id LIMIT $2), \
         indexed AS (INSERT INTO message_search (id, doc) \
           SELECT id, to_tsvector('simple', body) FROM batch WHERE kind = 'text' \
           ON CONFLICT (id) DO NOTHING) \
         UPDATE search_state SET indexed_upto = GREATEST(indexed_upto, \
           COALESCE((SELECT MAX(id) FROM batch), 0)) \
         RETURNING (SELECT COUNT(*) FROM batch)",
    )
    .bind(mark)
    .bind(CHUNK)
    .fetch_one(&mut *tx)
    .await?
    .get(0);
    tx.commit().await?;
    Ok(read == CHUNK)
}
