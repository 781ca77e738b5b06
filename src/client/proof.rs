//! The client's login proofs: `login_proofs.json` in `$CHAT_HOME` (mode 0600, beside
//! `known_servers`), one proof per server (`host:port`) and account.
//!
//! A proof comes with every successful password login and goes with the next password login
//! to the same server as the same account; with it the server lets that login through even
//! while a flood of wrong guesses has the account throttled. It is no credential (the
//! password is still needed), but it is private to this device, hence 0600. Losing it only
//! means the next password login is an untrusted one. The file is replaced atomically; two
//! logins saving at once can lose one of the two proofs, which is harmless.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::ChatHome;
use crate::protocol::{Secret, Username};

/// File name in `$CHAT_HOME`.
const FILE: &str = "login_proofs.json";
/// The lock held while the proofs file is read, changed and written back.
const LOCK_FILE: &str = "login_proofs.lock";
/// Most proofs kept; the oldest are dropped beyond this.
const MAX_PROOFS: usize = 256;

/// Errors reading or writing the proof file.
#[derive(Debug, thiserror::Error)]
pub enum ProofFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unreadable login proof file ({reason})")]
    Bad { path: String, reason: String },
}

/// The proof file of one `$CHAT_HOME`.
#[derive(Debug, Clone)]
pub struct ProofFile {
    dir: PathBuf,
    path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    proofs: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// `host:port`.
    server: String,
    /// The normalised account name.
    user: String,
    proof: Secret,
}

impl ProofFile {
    /// The proof file in `home`.
    pub fn new(home: &ChatHome) -> ProofFile {
        ProofFile {
            dir: home.dir().to_path_buf(),
            path: home.dir().join(FILE),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The proof kept for `user` on `server`, if any.
    pub fn load(&self, server: &str, user: &str) -> Result<Option<Secret>, ProofFileError> {
        let Ok(user) = Username::parse(user) else {
            return Ok(None);
        };
        Ok(self
            .read()?
            .proofs
            .into_iter()
            .find(|e| e.server == server && e.user == user.as_str())
            .map(|e| e.proof))
    }

    /// Keeps `proof` for `user` on `server`, replacing the one kept before.
    pub fn save(&self, server: &str, user: &str, proof: &Secret) -> Result<(), ProofFileError> {
        let Ok(user) = Username::parse(user) else {
            return Ok(());
        };
        // Read, change and write under a lock: two logins saving at once keep both proofs.
        let lock = self.dir.join(LOCK_FILE);
        let _lock = super::state::lock_exclusive(&self.dir, &lock).map_err(|e| self.io(e))?;
        // An unreadable file is replaced: it held nothing that can be recovered.
        let mut contents = self.read().unwrap_or_default();
        contents
            .proofs
            .retain(|e| !(e.server == server && e.user == user.as_str()));
        contents.proofs.push(Entry {
            server: server.to_string(),
            user: user.as_str().to_string(),
            proof: proof.clone(),
        });
        if contents.proofs.len() > MAX_PROOFS {
            let excess = contents.proofs.len() - MAX_PROOFS;
            contents.proofs.drain(..excess);
        }
        let bytes = serde_json::to_vec_pretty(&contents).map_err(|e| self.io(e.into()))?;
        self.write(&bytes)
    }

    fn read(&self) -> Result<Contents, ProofFileError> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ProofFileError::Bad {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contents::default()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Writes through a temporary file in the same directory (created 0600 by `tempfile`),
    /// synced, then renamed over the old file.
    fn write(&self, bytes: &[u8]) -> Result<(), ProofFileError> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&self.dir).map_err(|e| self.io(e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| self.io(e))?;
        tmp.write_all(bytes).map_err(|e| self.io(e))?;
        tmp.as_file().sync_all().map_err(|e| self.io(e))?;
        tmp.persist(&self.path).map_err(|e| self.io(e.error))?;
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> ProofFileError {
        ProofFileError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_are_kept_per_server_and_account_privately() {
        let dir = tempfile::tempdir().unwrap();
        let file = ProofFile::new(&ChatHome::at(dir.path().join("home")));
        assert!(file.load("h:1", "alice").unwrap().is_none());
        file.save("h:1", "Alice", &Secret::new("p1")).unwrap();
        file.save("h:1", "bob", &Secret::new("p2")).unwrap();
        file.save("h:2", "alice", &Secret::new("p3")).unwrap();
        file.save("h:1", "alice", &Secret::new("p4")).unwrap();
        assert_eq!(file.load("h:1", "ALICE").unwrap(), Some(Secret::new("p4")));
        assert_eq!(file.load("h:1", "bob").unwrap(), Some(Secret::new("p2")));
        assert_eq!(file.load("h:2", "alice").unwrap(), Some(Secret::new("p3")));
        assert_eq!(file.load("h:2", "bob").unwrap(), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(file.path(), "not json").unwrap();
        assert!(matches!(
            file.load("h:1", "alice"),
            Err(ProofFileError::Bad { .. })
        ));
        file.save("h:1", "alice", &Secret::new("p5")).unwrap();
        assert_eq!(file.load("h:1", "alice").unwrap(), Some(Secret::new("p5")));
    }

    #[test]
    fn logins_saving_proofs_at_the_same_moment_keep_every_one() {
        let dir = tempfile::tempdir().unwrap();
        let home = ChatHome::at(dir.path().join("home"));
        let users: Vec<String> = (0..16).map(|i| format!("user{i}")).collect();
        std::thread::scope(|scope| {
            for user in &users {
                let file = ProofFile::new(&home);
                scope.spawn(move || {
                    for round in 0..4 {
                        let proof = Secret::new(format!("{user}-{round}"));
                        file.save("h:1", user, &proof).unwrap();
                    }
                });
            }
        });
        let file = ProofFile::new(&home);
        for user in &users {
            assert_eq!(
                file.load("h:1", user).unwrap(),
                Some(Secret::new(format!("{user}-3"))),
                "{user}'s proof was lost"
            );
        }
    }
}
