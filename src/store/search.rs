//! The full-text search index: a derived database beside the main one, filled by an indexer
//! thread after messages are committed, never inside a commit.
//!
//! Indexing text with FTS5 inside the writer's transaction cost about a fifth of the pages
//! every group commit wrote and, for real sentences, more CPU than the rest of the insert.
//! So the index lives in its own file, `<db>.search.db` (its own write lock: the indexer
//! never waits for the writer, nor the writer for it), as a contentless FTS5 table keyed by
//! message id. The writer publishes the highest committed id on a watch channel; the
//! indexer wakes, lets [`GATHER`] of commits gather (less if a search waits), indexes the new text
//! messages in one transaction per [`CHUNK_IDS`] ids, recording how far it got in the same
//! transaction. The file is `synchronous=NORMAL`: a power cut can lose its last batches,
//! which are indexed again from the recorded mark; a missing or foreign file is rebuilt from
//! the messages.
//!
//! A search first waits (up to [`FRESH_WAIT`]) until the index has reached the newest id
//! committed when the search arrived, so a message is found as soon as its `sent` is out.
//! Search joins the index with the main database's messages, where every permission check
//! happens; rooms are deleted by marking them, so no message ever leaves the index.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Connection, Executor, SqliteConnection, SqlitePool};
use tokio::sync::{oneshot, watch, Notify};

use super::{StoppableThread, StoreError};

/// Ids indexed per transaction.
const CHUNK_IDS: i64 = 4096;

/// How long the indexer lets commits gather after a wake-up (unless a search is waiting).
/// FTS5 writes a segment per transaction and merges segments as they pile up; a quarter of
/// a second of messages per transaction keeps that merging a small part of the cost.
const GATHER: Duration = Duration::from_millis(250);

/// How long a search waits for the index to reach the messages committed before it.
const FRESH_WAIT: Duration = Duration::from_secs(5);

/// FTS5 merges this many segments of a level at once (its default is 4). Merging is most of
/// what indexing costs under load; wider merges rewrite each entry fewer times, and a search
/// reads a few more segments, which it can afford.
const AUTOMERGE: i64 = 16;

/// The index's schema version; a file with another is rebuilt.
const VERSION: i64 = 1;

/// Where the search index of the database at `db` lives.
pub(super) fn index_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".search.db");
    db.with_file_name(name)
}

/// How far committing and indexing have got, while a writer runs.
#[derive(Clone)]
struct Progress {
    committed: watch::Receiver<i64>,
    indexed: watch::Receiver<i64>,
    /// Tells the indexer to stop gathering: a search is waiting.
    hurry: Arc<Notify>,
}

/// The search side of the store: connections that see the index attached as `search`.
#[derive(Clone)]
pub(super) struct SearchIndex {
    pub(super) pool: SqlitePool,
    path: PathBuf,
    progress: Arc<Mutex<Option<Progress>>>,
}

impl SearchIndex {
    /// Opens (creating with mode 0600 if needed) the index beside the database that
    /// `options` opens.
    pub(super) async fn open(
        options: &SqliteConnectOptions,
        db: &Path,
    ) -> Result<SearchIndex, StoreError> {
        let path = index_path(db);
        super::create_private_file(&path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: Box::new(e),
        })?;
        let attach = attach_sql(&path);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .after_connect(move |conn, _| {
                let attach = attach.clone();
                Box::pin(async move {
                    conn.execute(attach.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        let mut conn = pool.acquire().await?;
        prepare(&mut conn).await?;
        drop(conn);
        Ok(SearchIndex {
            pool,
            path,
            progress: Arc::new(Mutex::new(None)),
        })
    }

    /// Starts the indexer for a writer whose committed ids arrive on `committed`.
    pub(super) async fn start_indexer(
        &self,
        options: &SqliteConnectOptions,
        committed: watch::Receiver<i64>,
    ) -> Result<Indexer, StoreError> {
        let mut conn = SqliteConnection::connect_with(options).await?;
        conn.execute(attach_sql(&self.path).as_str()).await?;
        // The store's connections leave checkpoints to the checkpointer, which sees only the
        // main database; the indexer checkpoints its own file as it goes (it is not in
        // anyone's way), so that file's log stays short and is reused, not grown.
        conn.execute("PRAGMA search.synchronous = NORMAL; PRAGMA wal_autocheckpoint = 1000")
            .await?;
        let mut indexed = indexed_upto(&mut conn).await?;
        let newest = *committed.borrow();
        if indexed > newest {
            // The main database was replaced (restored from a backup?): start again.
            tracing::warn!(
                indexed,
                newest,
                "the search index is ahead of the messages; rebuilding it"
            );
            conn.execute(
                "BEGIN; INSERT INTO search.fts (fts) VALUES ('delete-all'); \
                 UPDATE search.state SET value = 0 WHERE key = 'indexed_upto'; COMMIT;",
            )
            .await?;
            indexed = 0;
        }
        let (indexed_tx, indexed_rx) = watch::channel(indexed);
        let hurry = Arc::new(Notify::new());
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(Progress {
            committed: committed.clone(),
            indexed: indexed_rx,
            hurry: hurry.clone(),
        });
        let thread = StoppableThread::spawn("chatd-indexer", |stopped| {
            run(conn, committed, indexed, indexed_tx, hurry, stopped)
        })?;
        Ok(Indexer(thread))
    }

    /// Waits until the index covers every message committed before now (while a writer
    /// runs; at most [`FRESH_WAIT`]).
    pub(super) async fn wait_fresh(&self) {
        let progress = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(mut progress) = progress else {
            return;
        };
        let target = *progress.committed.borrow();
        if *progress.indexed.borrow() < target {
            progress.hurry.notify_one();
        }
        let reached = tokio::time::timeout(
            FRESH_WAIT,
            progress.indexed.wait_for(|indexed| *indexed >= target),
        )
        .await;
        if reached.is_err() {
            tracing::debug!(target, "search ran before the index caught up");
        }
    }
}

/// A running indexer; stopping it (or dropping it) ends its thread after a last pass.
pub(super) struct Indexer(StoppableThread);

impl Indexer {
    pub(super) fn stop(self) {
        self.0.stop();
    }
}

fn attach_sql(path: &Path) -> String {
    format!(
        "ATTACH DATABASE '{}' AS search",
        path.display().to_string().replace('\'', "''")
    )
}

/// Creates the index's tables, or rebuilds a file of another version.
async fn prepare(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    conn.execute(
        "PRAGMA search.journal_mode = WAL; \
         CREATE TABLE IF NOT EXISTS search.state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    )
    .await?;
    let version: Option<i64> =
        sqlx::query_scalar("SELECT value FROM search.state WHERE key = 'version'")
            .fetch_optional(&mut *conn)
            .await?;
    if version != Some(VERSION) {
        conn.execute(
            "BEGIN IMMEDIATE; DROP TABLE IF EXISTS search.fts; DELETE FROM search.state; COMMIT;",
        )
        .await?;
    }
    sqlx::query(
        "BEGIN IMMEDIATE; \
         CREATE VIRTUAL TABLE IF NOT EXISTS search.fts \
             USING fts5(body, content = '', contentless_delete = 1); \
         INSERT OR IGNORE INTO search.state (key, value) VALUES ('version', ?1), \
             ('indexed_upto', 0); \
         INSERT INTO search.fts (fts, rank) VALUES ('automerge', ?2); \
         COMMIT;",
    )
    .bind(VERSION)
    .bind(AUTOMERGE)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn indexed_upto(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    let upto: Option<i64> =
        sqlx::query_scalar("SELECT value FROM search.state WHERE key = 'indexed_upto'")
            .fetch_optional(&mut *conn)
            .await?;
    Ok(upto.unwrap_or(0))
}

async fn run(
    mut conn: SqliteConnection,
    mut committed: watch::Receiver<i64>,
    mut indexed: i64,
    indexed_tx: watch::Sender<i64>,
    hurry: Arc<Notify>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut last = false;
    while !last {
        if indexed >= *committed.borrow_and_update() {
            tokio::select! {
                changed = committed.changed() => last = changed.is_err(),
                _ = &mut stopped => last = true,
            }
        }
        // Gather even when commits arrived during the last pass: indexing a few rows at a
        // time costs FTS5 nearly as much as indexing thousands.
        if !last {
            tokio::select! {
                _ = tokio::time::sleep(GATHER) => {}
                _ = hurry.notified() => {}
                _ = &mut stopped => last = true,
            }
        }
        let target = *committed.borrow_and_update();
        while indexed < target {
            let upto = target.min(indexed + CHUNK_IDS);
            match index(&mut conn, indexed, upto).await {
                Ok(()) => {
                    indexed = upto;
                    indexed_tx.send_replace(indexed);
                    // Stopping: one more chunk at most, so that a long rebuild does not
                    // hold up shutdown (the next start goes on from the recorded mark).
                    if last {
                        break;
                    }
                    last = !matches!(stopped.try_recv(), Err(oneshot::error::TryRecvError::Empty));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "indexing messages for search failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = &mut stopped => last = true,
                    }
                    break;
                }
            }
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the indexer's connection failed");
    }
}

/// Indexes the text messages with ids in `(after, upto]` and records `upto`, in one
/// transaction on the index file (the main database is only read).
async fn index(conn: &mut SqliteConnection, after: i64, upto: i64) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    let rows = sqlx::query(
        "INSERT INTO search.fts (rowid, body) \
         SELECT id, body FROM main.messages WHERE id > ?1 AND id <= ?2 AND kind = 'text'",
    )
    .bind(after)
    .bind(upto)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("UPDATE search.state SET value = ?1 WHERE key = 'indexed_upto'")
        .bind(upto)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::trace!(
        rows,
        upto,
        micros = started.elapsed().as_micros() as u64,
        "indexed"
    );
    Ok(())
}

/// Up to this many words of a message make a search hit's snippet.
const SNIPPET_WORDS: usize = 12;

/// The part of `body` around the first word that matches a search term, with matching words
/// in `[` `]` and `…` where text was cut (the shape FTS5's `snippet()` gave).
pub(super) fn snippet(body: &str, terms: &[String]) -> String {
    let wanted: Vec<String> = terms
        .iter()
        .flat_map(|t| words(t).map(|(_, w)| w.to_lowercase()).collect::<Vec<_>>())
        .collect();
    let all: Vec<(usize, &str)> = words(body).collect();
    let matches = |w: &str| wanted.contains(&w.to_lowercase());
    let first = all.iter().position(|(_, w)| matches(w)).unwrap_or(0);
    // A few words of context before the first match, like FTS5.
    let start = first
        .saturating_sub(3)
        .min(all.len().saturating_sub(SNIPPET_WORDS));
    let end = (start + SNIPPET_WORDS).min(all.len());
    let Some(&(from, _)) = all.get(start) else {
        return body.to_string();
    };
    let to = all.get(end).map_or(body.len(), |&(at, _)| at);
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut at = from;
    for &(pos, word) in &all[start..end] {
        out.push_str(&body[at..pos]);
        if matches(word) {
            out.push('[');
            out.push_str(word);
            out.push(']');
        } else {
            out.push_str(word);
        }
        at = pos + word.len();
    }
    out.push_str(body[at..to].trim_end());
    if end < all.len() {
        out.push('…');
    }
    out
}

/// The words of `text` (runs of letters and digits) with their byte offsets.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(move |w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn snippets_mark_matches_and_cut_long_text() {
        assert_eq!(
            snippet("Deploy the API today", &terms(&["deploy"])),
            "[Deploy] the API today"
        );
        let long = "one two three four five six seven eight nine ten eleven twelve thirteen \
                    fourteen fifteen target sixteen seventeen";
        assert_eq!(
            snippet(long, &terms(&["TARGET"])),
            "…seven eight nine ten eleven twelve thirteen fourteen fifteen [target] sixteen \
             seventeen"
        );
        let start = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi";
        assert_eq!(
            snippet(start, &terms(&["beta", "mu"])),
            "alpha [beta] gamma delta epsilon zeta eta theta iota kappa lambda [mu]…"
        );
        assert_eq!(
            snippet("Grüße, Jürgen!", &terms(&["jürgen"])),
            "Grüße, [Jürgen]!"
        );
        assert_eq!(snippet("", &terms(&["x"])), "");
    }

    #[test]
    fn the_index_lives_beside_the_database() {
        assert_eq!(
            index_path(Path::new("data/chatd.db")),
            PathBuf::from("data/chatd.db.search.db")
        );
    }
}
