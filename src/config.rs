//! Server configuration: command-line flags > environment (`CHATD_*`) > TOML config file >
//! built-in defaults.
//!
//! Flags and environment are merged by clap (each flag names its variable); this module adds
//! the config file and the defaults, and produces [`ServerOptions`]. Relative paths in the
//! config file are taken relative to the working directory, like flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::irc::IrcServerName;
use crate::protocol::MAX_CONFIGURABLE_BODY_BYTES;
use crate::server::{Limits, ServerOptions};
use crate::store::{DbTarget, Durability};
use crate::tls::IdentitySource;

/// Port `chatd` listens on by default.
pub const DEFAULT_PORT: u16 = 7667;
/// Default listen address: every IPv4 interface, port 7667.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7667";
/// Default database file.
pub const DEFAULT_DB: &str = "chatd.db";
/// Default certificate directory.
pub const DEFAULT_CERT_DIR: &str = "certs";

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid listen address {0:?} (expected IP:PORT, e.g. 0.0.0.0:7667 or [::]:7667)")]
    Listen(String),
    #[error(
        "irc_plain_listen {0} is not a loopback address: plaintext IRC is served only on \
         127.0.0.1 or [::1] (use irc_listen for IRC over TLS)"
    )]
    PlainIrcNotLoopback(SocketAddr),
    #[error("max_body_bytes = {0} is out of range (1 to {MAX_CONFIGURABLE_BODY_BYTES})")]
    MaxBody(usize),
    #[error("{0} = {1} is out of range")]
    Range(&'static str, u64),
    #[error(transparent)]
    IrcServerName(#[from] crate::irc::BadServerName),
    #[error("db: {0}")]
    Db(crate::store::DbTargetError),
}

/// The config file: every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    /// IRC over TLS (off unless set).
    pub irc_listen: Option<String>,
    /// Plaintext IRC, loopback addresses only (off unless set).
    pub irc_plain_listen: Option<String>,
    /// The IRC gateway's server name (default: the first TLS name, else the host name).
    pub irc_server_name: Option<String>,
    /// A SQLite file, or a `postgres://` URL.
    pub db: Option<String>,
    pub cert_dir: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_names: Option<Vec<String>>,
    pub durability: Option<Durability>,
    pub max_body_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    pub handshake_timeout_secs: Option<u64>,
    pub outbound_queue_messages: Option<usize>,
    pub outbound_queue_bytes: Option<usize>,
    pub failed_logins_per_second: Option<u32>,
    pub failed_login_burst: Option<u32>,
    pub max_devices_per_account: Option<u32>,
    pub send_rate_per_second: Option<u32>,
    pub send_burst: Option<u32>,
    pub idle_timeout_secs: Option<u64>,
    pub auth_timeout_secs: Option<u64>,
}

impl FileConfig {
    /// Reads a config file; `None` gives an empty config.
    pub fn load(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        FileConfig::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }
}

/// Values given on the command line or in the environment (already merged by clap).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub irc_listen: Option<String>,
    pub irc_plain_listen: Option<String>,
    pub irc_server_name: Option<String>,
    pub db: Option<DbTarget>,
    pub cert_dir: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_names: Vec<String>,
    pub durability: Option<Durability>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub listen: SocketAddr,
    /// Where IRC over TLS is served, if anywhere.
    pub irc_listen: Option<SocketAddr>,
    /// Where plaintext IRC is served, if anywhere (always a loopback address).
    pub irc_plain_listen: Option<SocketAddr>,
    pub options: ServerOptions,
}

/// Longest configurable timeout: one day.
const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;

fn timeout_secs(key: &'static str, v: u64) -> Result<Duration, ConfigError> {
    if v == 0 || v > MAX_TIMEOUT_SECS {
        return Err(ConfigError::Range(key, v));
    }
    Ok(Duration::from_secs(v))
}

/// Merges flags/env over the file over the defaults.
pub fn resolve(flags: &Overrides, file: &FileConfig) -> Result<Resolved, ConfigError> {
    let listen_text = flags
        .listen
        .clone()
        .or_else(|| file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|_| ConfigError::Listen(listen_text.clone()))?;
    let address = |text: Option<&String>| -> Result<Option<SocketAddr>, ConfigError> {
        text.map(|t| t.parse().map_err(|_| ConfigError::Listen(t.clone())))
            .transpose()
    };
    let irc_listen = address(flags.irc_listen.as_ref().or(file.irc_listen.as_ref()))?;
    let irc_plain_listen = address(
        flags
            .irc_plain_listen
            .as_ref()
            .or(file.irc_plain_listen.as_ref()),
    )?;
    if let Some(a) = irc_plain_listen.filter(|a| !a.ip().is_loopback()) {
        return Err(ConfigError::PlainIrcNotLoopback(a));
    }
    let mut limits = Limits::default();
    if let Some(v) = file.max_body_bytes {
        if v == 0 || v > MAX_CONFIGURABLE_BODY_BYTES {
            return Err(ConfigError::MaxBody(v));
        }
        limits.max_body = v;
    }
    if let Some(v) = file.max_connections {
        limits.max_connections = v;
    }
    if let Some(v) = file.idle_timeout_secs {
        limits.idle_timeout = timeout_secs("idle_timeout_secs", v)?;
    }
    if let Some(v) = file.auth_timeout_secs {
        limits.auth_timeout = timeout_secs("auth_timeout_secs", v)?;
    }
    if let Some(0) = file.max_connections {
        return Err(ConfigError::Range("max_connections", 0));
    }
    if let Some(v) = file.handshake_timeout_secs {
        limits.handshake_timeout = timeout_secs("handshake_timeout_secs", v)?;
    }
    if let Some(v) = file.outbound_queue_messages {
        if v == 0 {
            return Err(ConfigError::Range("outbound_queue_messages", 0));
        }
        limits.live_queue = v;
    }
    if let Some(v) = file.max_connections_per_address {
        if v == 0 {
            return Err(ConfigError::Range("max_connections_per_address", 0));
        }
        limits.max_connections_per_address = v;
    }
    if let Some(v) = file.send_rate_per_second {
        if v == 0 {
            return Err(ConfigError::Range("send_rate_per_second", 0));
        }
        limits.send_rate_per_sec = v;
    }
    if let Some(v) = file.send_burst {
        if v == 0 {
            return Err(ConfigError::Range("send_burst", 0));
        }
        limits.send_burst = v;
    }
    if let Some(v) = file.outbound_queue_bytes {
        // At least one largest frame must fit.
        if v < crate::protocol::MAX_FRAME_LEN {
            return Err(ConfigError::Range("outbound_queue_bytes", v as u64));
        }
        limits.live_queue_bytes = v;
    }
    let login = &mut limits.login;
    for (key, value, field) in [
        (
            "failed_logins_per_second",
            file.failed_logins_per_second,
            &mut login.failed_logins_per_sec,
        ),
        (
            "failed_login_burst",
            file.failed_login_burst,
            &mut login.failed_login_burst,
        ),
        (
            "max_devices_per_account",
            file.max_devices_per_account,
            &mut login.max_devices_per_account,
        ),
    ] {
        match value {
            Some(0) => return Err(ConfigError::Range(key, 0)),
            Some(v) => *field = v,
            None => {}
        }
    }
    let mut extra_names = file.tls_names.clone().unwrap_or_default();
    extra_names.extend(flags.tls_names.iter().cloned());
    let irc_server_name = match flags
        .irc_server_name
        .as_ref()
        .or(file.irc_server_name.as_ref())
    {
        Some(name) => IrcServerName::parse(name)?,
        None => IrcServerName::default_for(&extra_names),
    };
    let options = ServerOptions {
        db: match (&flags.db, &file.db) {
            (Some(db), _) => db.clone(),
            (None, Some(text)) => text.parse().map_err(ConfigError::Db)?,
            (None, None) => DbTarget::Sqlite(PathBuf::from(DEFAULT_DB)),
        },
        identity: IdentitySource {
            cert_dir: flags
                .cert_dir
                .clone()
                .or_else(|| file.cert_dir.clone())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CERT_DIR)),
            cert_file: flags.tls_cert.clone().or_else(|| file.tls_cert.clone()),
            key_file: flags.tls_key.clone().or_else(|| file.tls_key.clone()),
            extra_names,
        },
        durability: flags.durability.or(file.durability).unwrap_or_default(),
        limits,
        hash_parallelism: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        irc_server_name,
    };
    Ok(Resolved {
        listen,
        irc_listen,
        irc_plain_listen,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_defaults() {
        let file = FileConfig::parse(
            "listen = \"127.0.0.1:9000\"\ndb = \"/srv/chat.db\"\ndurability = \"normal\"\n",
        )
        .unwrap();
        let r = resolve(&Overrides::default(), &file).unwrap();
        assert_eq!(r.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(
            r.options.db,
            DbTarget::Sqlite(PathBuf::from("/srv/chat.db"))
        );
        assert_eq!(r.options.durability, Durability::Normal);
        assert_eq!(r.options.identity.cert_dir, PathBuf::from("certs"));

        let flags = Overrides {
            listen: Some("[::1]:1234".into()),
            ..Overrides::default()
        };
        let r = resolve(&flags, &file).unwrap();
        assert_eq!(r.listen.to_string(), "[::1]:1234");

        let r = resolve(&Overrides::default(), &FileConfig::default()).unwrap();
        assert_eq!(r.listen.port(), DEFAULT_PORT);
        assert_eq!(r.options.db, DbTarget::Sqlite(PathBuf::from(DEFAULT_DB)));
    }

    #[test]
    fn irc_listeners_are_off_by_default_and_plaintext_is_loopback_only() {
        let r = resolve(&Overrides::default(), &FileConfig::default()).unwrap();
        assert_eq!((r.irc_listen, r.irc_plain_listen), (None, None));
        let file = FileConfig::parse(
            "irc_listen = \"0.0.0.0:6697\"\nirc_plain_listen = \"127.0.0.1:6667\"\n",
        )
        .unwrap();
        let r = resolve(&Overrides::default(), &file).unwrap();
        assert_eq!(r.irc_listen.unwrap().to_string(), "0.0.0.0:6697");
        assert_eq!(r.irc_plain_listen.unwrap().to_string(), "127.0.0.1:6667");
        let flags = Overrides {
            irc_plain_listen: Some("0.0.0.0:6667".into()),
            ..Overrides::default()
        };
        let e = resolve(&flags, &file).unwrap_err();
        assert!(matches!(e, ConfigError::PlainIrcNotLoopback(_)), "{e}");
        assert!(e.to_string().contains("not a loopback address"), "{e}");
    }

    #[test]
    fn irc_server_name_is_configurable_and_defaults_to_the_first_tls_name() {
        let flags = Overrides {
            tls_names: vec!["chat.example.org".into(), "backup.example.org".into()],
            ..Overrides::default()
        };
        let r = resolve(&flags, &FileConfig::default()).unwrap();
        assert_eq!(r.options.irc_server_name.as_str(), "chat.example.org");
        let file = FileConfig::parse("irc_server_name = \"irc.example.org\"\n").unwrap();
        let r = resolve(&flags, &file).unwrap();
        assert_eq!(r.options.irc_server_name.as_str(), "irc.example.org");
        let flags = Overrides {
            irc_server_name: Some("flag.example.org".into()),
            ..flags
        };
        let r = resolve(&flags, &file).unwrap();
        assert_eq!(r.options.irc_server_name.as_str(), "flag.example.org");
        let file = FileConfig::parse("irc_server_name = \"no spaces\"\n").unwrap();
        let e = resolve(&Overrides::default(), &file).unwrap_err();
        assert!(matches!(e, ConfigError::IrcServerName(_)), "{e}");
        assert!(e.to_string().contains("\"no spaces\""), "{e}");
    }

    #[test]
    fn bad_config_is_refused_with_the_reason() {
        assert!(FileConfig::parse("listen = 5").is_err());
        let forever = FileConfig::parse("idle_timeout_secs = 9223372036854775807").unwrap();
        assert!(matches!(
            resolve(&Overrides::default(), &forever),
            Err(ConfigError::Range("idle_timeout_secs", _))
        ));
        let huge = FileConfig::parse("max_body_bytes = 1000000").unwrap();
        assert!(matches!(
            resolve(&Overrides::default(), &huge),
            Err(ConfigError::MaxBody(1000000))
        ));
        for (text, key) in [
            ("outbound_queue_bytes = 1000", "outbound_queue_bytes"),
            ("failed_logins_per_second = 0", "failed_logins_per_second"),
            ("failed_login_burst = 0", "failed_login_burst"),
            ("max_devices_per_account = 0", "max_devices_per_account"),
        ] {
            let file = FileConfig::parse(text).unwrap();
            match resolve(&Overrides::default(), &file) {
                Err(ConfigError::Range(got, _)) => assert_eq!(got, key),
                other => panic!("{text}: {other:?}"),
            }
        }
        let file = FileConfig::parse(
            "outbound_queue_bytes = 1048576\nfailed_logins_per_second = 5\n\
             failed_login_burst = 7\nmax_devices_per_account = 9\n",
        )
        .unwrap();
        let limits = resolve(&Overrides::default(), &file)
            .unwrap()
            .options
            .limits;
        assert_eq!(limits.live_queue_bytes, 1 << 20);
        assert_eq!(
            limits.login,
            crate::auth::AuthLimits {
                failed_logins_per_sec: 5,
                failed_login_burst: 7,
                max_devices_per_account: 9,
            }
        );
        assert!(FileConfig::parse("colour = \"blue\"")
            .unwrap_err()
            .contains("colour"));
        let flags = Overrides {
            listen: Some("localhost".into()),
            ..Overrides::default()
        };
        assert!(matches!(
            resolve(&flags, &FileConfig::default()),
            Err(ConfigError::Listen(_))
        ));
    }
}
