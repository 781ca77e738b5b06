//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold (1,000
//! frames by default): that commit copies every page changed since the last checkpoint into
//! the database file and `fsync`s it before its caller is answered. Under a steady load that
//! made one group commit in ~17 take tens to hundreds of milliseconds, and every sender
//! queued behind it waited as long (measured: p99 517 ms at 10,000 messages/s).
//!
//! So every connection of the store is opened with `wal_autocheckpoint=0`, and while the
//! writer runs, this checkpointer does the work on a thread and connection of its own. A
//! PASSIVE checkpoint never blocks the writer: it copies the frames committed so far while
//! new ones are appended, and a page changed by a hundred commits since the last pass is
//! written to the database file once.
//!
//! SQLite starts the log again from its beginning only when a write transaction begins with
//! every frame already copied. A writer that commits without pause never sees that moment,
//! so the log would grow without end; a RESTART checkpoint from here would wait for the
//! writer to pause (measured: a 438 ms stall). Instead, past [`RESTART_FRAMES`] the
//! checkpointer raises [`Checkpointer::restart_wanted`], and the writer, between two commits,
//! copies the few frames written since the last pass itself; its next commit then starts
//! the log afresh.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::oneshot;

use super::{StoppableThread, StoreError};

/// How often the log is copied into the database file while the writer is busy.
const INTERVAL: Duration = Duration::from_millis(100);

/// How often when the log was short ([`SHORT_FRAMES`]) at the last pass. Every checkpoint
/// costs two `fsync`s, and on a slow disk the writer's own `fsync` waits behind them
/// (measured: 10-frame checkpoints taking 100 ms on this machine's disk when it was busy).
const QUIET_INTERVAL: Duration = Duration::from_secs(1);

/// A log shorter than this (4 MiB of 4 KiB pages) is left for [`QUIET_INTERVAL`].
const SHORT_FRAMES: i64 = 1024;

/// Log length (frames of one page) past which the writer is asked to let the log start
/// again: 16,384 frames of 4 KiB pages is 64 MiB.
const RESTART_FRAMES: i64 = 16_384;

/// A running checkpointer; [`Checkpointer::stop`] ends it after a last pass.
pub(super) struct Checkpointer {
    /// Raised when the log has grown past [`RESTART_FRAMES`]; the writer lowers it when it
    /// has run [`catch_up`].
    pub(super) restart_wanted: Arc<AtomicBool>,
    thread: StoppableThread,
}

impl Checkpointer {
    /// Opens a connection of its own and starts checkpointing every [`INTERVAL`] (or
    /// [`QUIET_INTERVAL`] while little is written).
    pub(super) async fn start(options: &SqliteConnectOptions) -> Result<Self, StoreError> {
        let conn = SqliteConnection::connect_with(options).await?;
        let restart_wanted = Arc::new(AtomicBool::new(false));
        let wanted = restart_wanted.clone();
        let thread =
            StoppableThread::spawn("chatd-checkpoint", |stopped| run(conn, stopped, wanted))?;
        Ok(Checkpointer {
            restart_wanted,
            thread,
        })
    }

    /// Ends the checkpointer after one last pass and waits for its thread.
    pub(super) fn stop(self) {
        self.thread.stop();
    }
}

async fn run(
    mut conn: SqliteConnection,
    mut stopped: oneshot::Receiver<()>,
    restart_wanted: Arc<AtomicBool>,
) {
    let mut wait = INTERVAL;
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = &mut stopped => true,
        };
        let result = checkpoint(&mut conn).await;
        wait = match result {
            Ok(log) if log < SHORT_FRAMES => QUIET_INTERVAL,
            _ => INTERVAL,
        };
        match result {
            Ok(log) if log > RESTART_FRAMES => {
                tracing::debug!(frames = log, "asking the writer to let the WAL start again");
                restart_wanted.store(true, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
        if last {
            break;
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the checkpointer's connection failed");
    }
}

/// The writer's part, run between two of its commits when [`Checkpointer::restart_wanted`]
/// is up: copies what the checkpointer has not yet, so its next commit restarts the log.
pub(super) async fn catch_up(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    checkpoint(conn).await.map(|_| ())
}

/// Runs one PASSIVE checkpoint; returns the length of the log (in frames) it found.
async fn checkpoint(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    let started = Instant::now();
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *conn)
        .await?;
    let (busy, log, copied): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if log > 0 {
        tracing::trace!(
            busy,
            log,
            copied,
            micros = started.elapsed().as_micros() as u64,
            "checkpoint"
        );
    }
    Ok(log)
}
