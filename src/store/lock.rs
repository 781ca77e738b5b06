//! One serving process per SQLite database: an exclusive OS file lock on `<db>.lock`.
//!
//! The writer assigns message ids from an in-memory counter, so a second server writing the
//! same file would make the first one's ids stale (every send then fails on the primary
//! key) and neither would see the other's messages live. [`DbLock::acquire`] takes an
//! exclusive `flock` on the file beside the database (through `fs4`) and writes the holder's
//! pid into it; the server adds its listening addresses once it has them. The lock lives as
//! long as the process holds the file open, so a crashed server (even `kill -9`) never
//! leaves a stale lock behind. Admin commands open the database without it: SQLite's own
//! locking makes their short transactions safe beside the server.
//!
//! The lock file is left in place when the server stops: removing it could race with a
//! server starting at that moment (two processes would then lock two different files).

use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fs4::{FileExt, TryLockError};

/// Errors taking the database lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process serves this database.
    #[error(
        "the database {db} is in use by another chatd ({holder}); a database is served by one \
         chatd at a time"
    )]
    InUse { db: String, holder: Holder },
    // The cause is shown in the message and deliberately not chained as a source, so that
    // `{:#}` does not print it twice.
    #[error("cannot lock the database: {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// The server holding a database, as it described itself in the lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    /// Its process id, if it wrote one yet.
    pub pid: Option<u32>,
    /// Its listening addresses, once it has bound them.
    pub listening: Vec<String>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}")?,
            None => f.write_str("pid unknown")?,
        }
        if !self.listening.is_empty() {
            write!(f, ", listening on {}", self.listening.join(" and "))?;
        }
        Ok(())
    }
}

/// The exclusive lock on a database, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DbLock {
    file: File,
    path: PathBuf,
}

impl DbLock {
    /// Locks the database at `db` for this process, or says who holds it. Creates the lock
    /// file (mode 0600) and the database's directory when missing.
    pub fn acquire(db: &Path) -> Result<DbLock, LockError> {
        let path = lock_path(db);
        let io = |error| LockError::Io {
            path: path.display().to_string(),
            error,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(io)?;
        // Called through the trait: std's inherent `File::try_lock` is newer than this
        // package's minimum Rust.
        match FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::InUse {
                    db: db.display().to_string(),
                    holder: read_holder(&file),
                })
            }
            Err(TryLockError::Error(error)) => return Err(io(error)),
        }
        let lock = DbLock {
            file,
            path: path.clone(),
        };
        lock.describe(&[]).map_err(io)?;
        Ok(lock)
    }

    /// Records the addresses this server listens on, for the message a second server gets.
    pub fn record_listening(&self, addrs: &[SocketAddr]) -> Result<(), LockError> {
        let shown: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        self.describe(&shown).map_err(|error| LockError::Io {
            path: self.path.display().to_string(),
            error,
        })
    }

    /// Rewrites the lock file: `pid N`, then one `listen ADDR` line per address.
    fn describe(&self, listening: &[String]) -> std::io::Result<()> {
        let mut text = format!("pid {}\n", std::process::id());
        for addr in listening {
            text.push_str(&format!("listen {addr}\n"));
        }
        let mut file = &self.file;
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(text.as_bytes())?;
        file.flush()
    }
}

/// Who holds the lock on `db`, if anyone does (a server is running on it). Creates nothing.
pub fn holder(db: &Path) -> Option<Holder> {
    let file = File::open(lock_path(db)).ok()?;
    match FileExt::try_lock_shared(&file) {
        Ok(()) => {
            let _ = FileExt::unlock(&file);
            None
        }
        Err(TryLockError::WouldBlock) => Some(read_holder(&file)),
        Err(TryLockError::Error(_)) => None,
    }
}

/// `chatd.db` → `chatd.db.lock`.
fn lock_path(db: &Path) -> PathBuf {
    let mut name = OsString::from(db.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// Reads what the holder wrote. A holder that has only just taken the lock may not have
/// written its pid yet: a few short retries cover that moment.
fn read_holder(file: &File) -> Holder {
    let mut holder = Holder::default();
    for _ in 0..20 {
        let mut text = String::new();
        let mut reader = file;
        if reader.rewind().is_ok() && reader.read_to_string(&mut text).is_ok() {
            holder = parse_holder(&text);
            if holder.pid.is_some() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    holder
}

fn parse_holder(text: &str) -> Holder {
    let mut holder = Holder::default();
    for line in text.lines() {
        if let Some(pid) = line.strip_prefix("pid ") {
            holder.pid = pid.trim().parse().ok();
        } else if let Some(addr) = line.strip_prefix("listen ") {
            holder.listening.push(addr.trim().to_string());
        }
    }
    holder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sub").join("chatd.db");
        assert_eq!(holder(&db), None, "no lock file yet");
        let first = DbLock::acquire(&db).unwrap();
        first
            .record_listening(&["127.0.0.1:7667".parse().unwrap()])
            .unwrap();
        let expected = Holder {
            pid: Some(std::process::id()),
            listening: vec!["127.0.0.1:7667".into()],
        };
        assert_eq!(holder(&db), Some(expected.clone()));
        match DbLock::acquire(&db) {
            Err(LockError::InUse { holder, .. }) => assert_eq!(holder, expected),
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(first);
        assert_eq!(holder(&db), None, "released when dropped");
        DbLock::acquire(&db).unwrap();
    }

    #[test]
    fn the_holder_is_described_in_one_phrase() {
        let h = parse_holder("pid 42\nlisten 127.0.0.1:1\nlisten [::1]:2\n");
        assert_eq!(
            h.to_string(),
            "pid 42, listening on 127.0.0.1:1 and [::1]:2"
        );
        assert_eq!(parse_holder("").to_string(), "pid unknown");
    }
}
