//! The client's files in `$CHAT_HOME` (default: the platform config dir, e.g.
//! `~/.config/chat`):
//!
//! - `known_servers`: one `host:port sha256:<hex>` line per trusted server (like ssh's
//!   known_hosts);
//! - `session.json` (mode 0600): the saved login — server, user, device token — and the
//!   highest message id already shown, which makes delivery exactly-once as the user sees it.
//!
//! Files are replaced atomically (write to a temporary file, then rename). Several processes
//! share `session.json` (the TUI, `chat recv --follow`, another `chat login`): every write
//! of it is a read-modify-write under an exclusive lock on `session.lock` beside it (an OS
//! file lock through `fs4`), and `last_seen` is only ever raised, never written back from a
//! copy read earlier ([`ChatHome::raise_last_seen`]).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ServerAddr;
use crate::protocol::Secret;
use crate::tls::Fingerprint;

/// Errors reading or writing the client's files.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot find a home directory for chat's files; set CHAT_HOME")]
    NoHome,
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: line {line} is not `host:port sha256:<hex>`")]
    BadKnownServers { path: String, line: usize },
    #[error("{path}: unreadable session file ({reason}); run `chat login` again")]
    BadSession { path: String, reason: String },
    #[error("not logged in; run: chat login --server HOST:PORT --user NAME")]
    NotLoggedIn,
    #[error("no pinned key for {0}; run: chat trust {0} --pin sha256:…")]
    NoPin(String),
    #[error("the saved session names an invalid server: {0}")]
    BadServer(String),
}

/// A saved login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedSession {
    /// `host:port`.
    pub server: String,
    pub user: String,
    pub device_id: i64,
    pub token: Secret,
    /// Highest message id already shown on this device (client-side dedupe).
    #[serde(default)]
    pub last_seen: i64,
}

/// A saved login ready to connect with.
#[derive(Debug, Clone)]
pub struct SavedLogin {
    pub session: SavedSession,
    pub addr: ServerAddr,
    pub pin: Fingerprint,
}

/// The directory holding the client's files.
#[derive(Debug, Clone)]
pub struct ChatHome {
    dir: PathBuf,
}

impl ChatHome {
    /// `$CHAT_HOME`, or `<config dir>/chat`.
    pub fn from_env() -> Result<ChatHome, StateError> {
        if let Some(dir) = std::env::var_os("CHAT_HOME").filter(|d| !d.is_empty()) {
            return Ok(ChatHome::at(PathBuf::from(dir)));
        }
        let base = directories::BaseDirs::new().ok_or(StateError::NoHome)?;
        Ok(ChatHome::at(base.config_dir().join("chat")))
    }

    /// A home at an explicit directory.
    pub fn at(dir: impl Into<PathBuf>) -> ChatHome {
        ChatHome { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn known_servers_path(&self) -> PathBuf {
        self.dir.join("known_servers")
    }

    fn session_path(&self) -> PathBuf {
        self.dir.join("session.json")
    }

    /// Runs `f` holding the exclusive lock on `session.lock` (waiting for it), so that no
    /// other process changes `session.json` between what `f` reads and what it writes.
    fn with_session_lock<T>(
        &self,
        f: impl FnOnce() -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let path = self.dir.join("session.lock");
        let _lock = lock_exclusive(&self.dir, &path).map_err(|error| StateError::Io {
            path: path.display().to_string(),
            error,
        })?;
        f()
    }

    /// The pinned key for `server` (`host:port`), if any.
    pub fn known_pin(&self, server: &str) -> Result<Option<Fingerprint>, StateError> {
        Ok(self
            .read_known()?
            .into_iter()
            .find(|(s, _)| s == server)
            .map(|(_, f)| f))
    }

    /// Pins `fingerprint` for `server`, replacing any earlier pin.
    pub fn save_pin(&self, server: &str, fingerprint: Fingerprint) -> Result<(), StateError> {
        // Read, change and write under a lock: two first contacts at once keep both pins.
        let lock = self.dir.join("known_servers.lock");
        let _lock = lock_exclusive(&self.dir, &lock).map_err(|error| StateError::Io {
            path: lock.display().to_string(),
            error,
        })?;
        let mut entries = self.read_known()?;
        entries.retain(|(s, _)| s != server);
        entries.push((server.to_string(), fingerprint));
        let mut text = String::from("# chat: pinned server keys (host:port sha256:<hex>)\n");
        for (s, f) in entries {
            text.push_str(&format!("{s} {f}\n"));
        }
        write_atomic(
            &self.dir,
            &self.known_servers_path(),
            text.as_bytes(),
            0o600,
        )
    }

    fn read_known(&self) -> Result<Vec<(String, Fingerprint)>, StateError> {
        let path = self.known_servers_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(StateError::Io {
                    path: path.display().to_string(),
                    error,
                })
            }
        };
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || StateError::BadKnownServers {
                path: path.display().to_string(),
                line: i + 1,
            };
            let (server, pin) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
            let pin: Fingerprint = pin.trim().parse().map_err(|_| bad())?;
            out.push((server.to_string(), pin));
        }
        Ok(out)
    }

    /// The saved login, if any.
    pub fn load_session(&self) -> Result<Option<SavedSession>, StateError> {
        let path = self.session_path();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StateError::BadSession {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(StateError::Io {
                path: path.display().to_string(),
                error,
            }),
        }
    }

    /// The saved login with its server address and pinned key: everything needed to
    /// reconnect, or why there is none.
    pub fn saved_login(&self) -> Result<SavedLogin, StateError> {
        let session = self.load_session()?.ok_or(StateError::NotLoggedIn)?;
        let addr: ServerAddr = session
            .server
            .parse()
            .map_err(|e: super::BadServerAddr| StateError::BadServer(e.to_string()))?;
        let pin = self
            .known_pin(&session.server)?
            .ok_or_else(|| StateError::NoPin(session.server.clone()))?;
        Ok(SavedLogin { session, addr, pin })
    }

    /// Saves a new login (mode 0600), replacing whatever is saved.
    pub fn save_session(&self, session: &SavedSession) -> Result<(), StateError> {
        self.with_session_lock(|| self.write_session(session))
    }

    /// Raises the saved `last_seen` to `upto` for the login `session` (same server, device
    /// and token), under the session lock: a value written meanwhile by another process is
    /// never lowered, and a different login saved meanwhile (or a logout) is left alone.
    /// Returns whether the file now records `upto` (or more) for that login.
    pub fn raise_last_seen(&self, session: &SavedSession, upto: i64) -> Result<bool, StateError> {
        self.with_session_lock(|| {
            let Some(mut saved) = self.load_session()? else {
                return Ok(false);
            };
            if saved.server != session.server
                || saved.device_id != session.device_id
                || saved.token != session.token
            {
                return Ok(false);
            }
            if saved.last_seen < upto {
                saved.last_seen = upto;
                self.write_session(&saved)?;
            }
            Ok(true)
        })
    }

    fn write_session(&self, session: &SavedSession) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(session).map_err(|e| StateError::Io {
            path: self.session_path().display().to_string(),
            error: std::io::Error::other(e),
        })?;
        write_atomic(&self.dir, &self.session_path(), &bytes, 0o600)
    }

    /// Forgets the saved login.
    pub fn remove_session(&self) -> Result<(), StateError> {
        self.with_session_lock(|| match fs::remove_file(self.session_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(StateError::Io {
                path: self.session_path().display().to_string(),
                error,
            }),
        })
    }
}

/// Creates `dir` (and its parents) as 0700 when missing.
/// Takes the exclusive lock on the lock file `path` in `dir` (both created private when
/// missing), waiting for it. The lock is held until the returned file is dropped. Every
/// read-change-write of a file in `$CHAT_HOME` that another `chat` or the TUI may change at
/// the same time runs under one.
pub(crate) fn lock_exclusive(dir: &Path, path: &Path) -> std::io::Result<fs::File> {
    create_private_dir(dir)?;
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    // Through the trait: std's inherent `File::lock` is newer than this package's minimum
    // Rust. Released when `file` is closed.
    fs4::FileExt::lock(&file)?;
    Ok(file)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn write_atomic(dir: &Path, path: &Path, contents: &[u8], mode: u32) -> Result<(), StateError> {
    let io_err = |error| StateError::Io {
        path: path.display().to_string(),
        error,
    };
    create_private_dir(dir).map_err(io_err)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(&tmp).map_err(io_err)?;
    f.write_all(contents).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_saved_replaced_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = ChatHome::at(dir.path().join("chat"));
        let a: Fingerprint = format!("sha256:{}", "11".repeat(32)).parse().unwrap();
        let b: Fingerprint = format!("sha256:{}", "22".repeat(32)).parse().unwrap();
        assert_eq!(home.known_pin("h:1").unwrap(), None);
        home.save_pin("h:1", a).unwrap();
        home.save_pin("h:2", b).unwrap();
        home.save_pin("h:1", b).unwrap();
        assert_eq!(home.known_pin("h:1").unwrap(), Some(b));
        assert_eq!(home.known_pin("h:2").unwrap(), Some(b));
    }

    fn session(token: &str, last_seen: i64) -> SavedSession {
        SavedSession {
            server: "h:1".into(),
            user: "alice".into(),
            device_id: 3,
            token: Secret::new(token),
            last_seen,
        }
    }

    #[test]
    fn first_contacts_at_the_same_moment_keep_every_pin() {
        let dir = tempfile::tempdir().unwrap();
        let home = ChatHome::at(dir.path().join("home"));
        let pin: Fingerprint = format!("sha256:{}", "33".repeat(32)).parse().unwrap();
        std::thread::scope(|scope| {
            for i in 0..16 {
                let home = &home;
                scope.spawn(move || home.save_pin(&format!("h:{i}"), pin).unwrap());
            }
        });
        for i in 0..16 {
            assert_eq!(
                home.known_pin(&format!("h:{i}")).unwrap(),
                Some(pin),
                "h:{i}"
            );
        }
    }

    #[test]
    fn last_seen_only_rises_and_never_overwrites_another_login() {
        let dir = tempfile::tempdir().unwrap();
        let home = ChatHome::at(dir.path());
        let loaded = session("t", 5);
        home.save_session(&loaded).unwrap();
        // Another process raised it meanwhile: a lower value from this copy changes nothing.
        assert!(home.raise_last_seen(&loaded, 40).unwrap());
        assert!(home.raise_last_seen(&loaded, 10).unwrap());
        assert_eq!(home.load_session().unwrap().unwrap().last_seen, 40);
        // A new login saved meanwhile is left alone.
        home.save_session(&session("new", 0)).unwrap();
        assert!(!home.raise_last_seen(&loaded, 50).unwrap());
        let now = home.load_session().unwrap().unwrap();
        assert_eq!((now.token.expose(), now.last_seen), ("new", 0));
        // And a logout is not undone.
        home.remove_session().unwrap();
        assert!(!home.raise_last_seen(&loaded, 60).unwrap());
        assert!(home.load_session().unwrap().is_none());
    }

    #[test]
    fn concurrent_raises_keep_the_highest() {
        let dir = tempfile::tempdir().unwrap();
        let home = ChatHome::at(dir.path());
        let loaded = session("t", 0);
        home.save_session(&loaded).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (home, loaded) = (home.clone(), loaded.clone());
                std::thread::spawn(move || {
                    for i in 0..25 {
                        // Interleaved values: every thread tries lower ones after higher.
                        let upto = (i * 8 + t) * if i % 2 == 0 { 3 } else { 1 };
                        home.raise_last_seen(&loaded, upto).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            home.load_session().unwrap().unwrap().last_seen,
            (24 * 8 + 7) * 3
        );
    }

    #[test]
    fn session_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let home = ChatHome::at(dir.path());
        home.save_session(&SavedSession {
            server: "h:1".into(),
            user: "alice".into(),
            device_id: 3,
            token: Secret::new("t"),
            last_seen: 0,
        })
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("session.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(home.load_session().unwrap().unwrap().device_id, 3);
        home.remove_session().unwrap();
        assert!(home.load_session().unwrap().is_none());
    }
}
