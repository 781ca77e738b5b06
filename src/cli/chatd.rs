//! `chatd`: run the server, and the operator's admin commands.
//!
//! Admin commands open the same database as the server (SQLite in WAL mode allows that while
//! the server runs). Changes that end sessions bump the auth epoch, which the running server
//! polls, so a disabled, deleted or revoked user's connections close within a second.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::auth::{check_password_policy, Hasher};
use crate::config::{self, FileConfig, Overrides};
use crate::protocol::{RoomName, Secret, Username};
use crate::server::Server;
use crate::store::{DbTarget, Durability, Refusal, Store, StoreError};

/// chatd: a self-hosted, encrypted, authenticated chat server.
#[derive(Debug, Parser)]
#[command(name = "chatd", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
struct Common {
    /// TOML config file (keys: listen, irc_listen, irc_plain_listen, irc_server_name, db, cert_dir, tls_cert, tls_key, tls_names,
    /// durability, max_body_bytes, max_connections, idle_timeout_secs, auth_timeout_secs).
    #[arg(long, global = true, env = "CHATD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database: a SQLite file (or sqlite:PATH) [default: chatd.db], or
    /// postgres://USER@HOST/DB (password from PGPASSWORD, ~/.pgpass or CHATD_DB_PASSWORD_FILE).
    // Parsed after clap (`Common::db`): clap's own error would echo the value, and with it a
    // password in the URL.
    #[arg(long, global = true, env = "CHATD_DB", value_name = "PATH|URL")]
    db: Option<String>,
    /// Directory of the server's certificate and key [default: certs].
    #[arg(long, global = true, env = "CHATD_CERT_DIR", value_name = "DIR")]
    cert_dir: Option<PathBuf>,
}

impl Common {
    /// The `--db` value as a database target; a bad one is refused in one line that never
    /// shows a password.
    fn db(&self) -> Result<Option<DbTarget>> {
        match &self.db {
            None => Ok(None),
            Some(text) => {
                Ok(Some(text.parse().map_err(|e| {
                    anyhow::anyhow!("invalid value for --db: {e}")
                })?))
            }
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (first start makes the key, certificate and database).
    Serve(ServeArgs),
    /// Print the SHA-256 fingerprint of the server's public key (what clients pin).
    Fingerprint(TlsArgs),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Measure this server: load scenarios over real TLS, as a table or JSON lines.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on [default: 0.0.0.0:7667].
    #[arg(long, env = "CHATD_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Also serve IRC over TLS (the server's certificate) on this address, e.g. 0.0.0.0:6697.
    #[arg(long, env = "CHATD_IRC_LISTEN", value_name = "ADDR")]
    irc_listen: Option<String>,
    /// Also serve plaintext IRC on this loopback address, e.g. 127.0.0.1:6667 (refused
    /// unless the address is loopback).
    #[arg(long, env = "CHATD_IRC_PLAIN_LISTEN", value_name = "ADDR")]
    irc_plain_listen: Option<String>,
    /// The IRC gateway's server name [default: the first --tls-name, else the host name].
    #[arg(long, env = "CHATD_IRC_SERVER_NAME", value_name = "NAME")]
    irc_server_name: Option<String>,
    /// Durability of each commit: full (default) or normal ("may lose the last moments on
    /// power loss").
    #[arg(long, env = "CHATD_DURABILITY", value_name = "MODE")]
    durability: Option<Durability>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, Args)]
struct TlsArgs {
    /// Extra DNS name or address for a generated certificate (repeatable).
    #[arg(long = "tls-name", value_name = "NAME")]
    tls_names: Vec<String>,
    /// Operator-provided certificate chain (PEM), e.g. Let's Encrypt's fullchain.pem.
    #[arg(long, env = "CHATD_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Operator-provided private key (PEM); must not be world-readable.
    #[arg(long, env = "CHATD_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create an account (asks for the password twice, or reads one line with --password-stdin).
    Add(PasswordArgs),
    /// List accounts.
    List {
        /// One JSON object per account and line.
        #[arg(long)]
        json: bool,
    },
    /// Change a password (ends every session of the account).
    Passwd(PasswordArgs),
    /// Disable an account: its connections close and it cannot log in.
    Disable { name: String },
    /// Re-enable a disabled account.
    Enable { name: String },
    /// Delete an account (its name stays reserved; others' history keeps its messages).
    Del { name: String },
    /// End every session (device token) of an account.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
enum RoomCommand {
    /// List rooms with owner, members and message count.
    List {
        /// One JSON object per room and line.
        #[arg(long)]
        json: bool,
    },
    /// Delete a room and its history for every member (the name becomes free).
    Del { name: String },
}

#[derive(Debug, Args)]
struct PasswordArgs {
    name: String,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

/// Runs a parsed `chatd` command line.
pub async fn run(cli: Cli) -> Result<()> {
    let file = FileConfig::load(cli.common.config.as_deref())?;
    let mut flags = Overrides {
        db: cli.common.db()?,
        cert_dir: cli.common.cert_dir.clone(),
        ..Overrides::default()
    };
    match cli.command {
        Command::Serve(args) => {
            flags.listen = args.listen;
            flags.irc_listen = args.irc_listen;
            flags.irc_plain_listen = args.irc_plain_listen;
            flags.irc_server_name = args.irc_server_name;
            flags.durability = args.durability;
            apply_tls(&mut flags, args.tls);
            serve(config::resolve(&flags, &file)?).await
        }
        Command::Fingerprint(tls) => {
            apply_tls(&mut flags, tls);
            let resolved = config::resolve(&flags, &file)?;
            let identity = resolved.options.identity.load_or_create()?;
            println!("{}", identity.fingerprint);
            Ok(())
        }
        Command::User(cmd) => {
            let resolved = config::resolve(&flags, &file)?;
            let store = Store::connect(&resolved.options.db, resolved.options.durability).await?;
            let result = user_command(&store, cmd).await;
            store.close().await;
            result
        }
        Command::Room(cmd) => {
            let resolved = config::resolve(&flags, &file)?;
            let store = Store::connect(&resolved.options.db, resolved.options.durability).await?;
            let result = room_command(&store, cmd).await;
            store.close().await;
            result
        }
        Command::Bench(args) => {
            let db = match (flags.db, file.db) {
                (Some(db), _) => Some(db),
                (None, Some(text)) => Some(text.parse().map_err(config::ConfigError::Db)?),
                (None, None) => None,
            };
            crate::bench::run(args, db).await
        }
    }
}

fn apply_tls(flags: &mut Overrides, tls: TlsArgs) {
    flags.tls_names = tls.tls_names;
    flags.tls_cert = tls.tls_cert;
    flags.tls_key = tls.tls_key;
}

async fn serve(resolved: config::Resolved) -> Result<()> {
    // Bind first: a busy port must leave no database or certificate behind (and a second
    // server on the same database and port is told about the first, not about the port).
    let db = resolved.options.db.clone();
    let listener = bind(resolved.listen, "", &db).await?;
    let mut irc = Vec::new();
    for addr in [resolved.irc_listen, resolved.irc_plain_listen] {
        irc.push(match addr {
            Some(addr) => Some(bind(addr, " for IRC", &db).await?),
            None => None,
        });
    }
    let server = Server::start(&resolved.options).await?;
    let local = listener.local_addr()?;
    tracing::info!(
        listen = %local,
        fingerprint = %server.fingerprint(),
        db = %resolved.options.db,
        durability = %resolved.options.durability,
        "chatd started"
    );
    let shutdown = CancellationToken::new();
    install_signals(shutdown.clone(), server.tls_reloader())?;
    // Two plain lines on stdout for scripts and newcomers: where, and which key to pin.
    let mut out = std::io::stdout().lock();
    writeln!(out, "chatd listening on {local}")?;
    writeln!(out, "fingerprint {}", server.fingerprint())?;
    let irc_plain = irc.pop().flatten();
    let irc_tls = irc.pop().flatten();
    for (listener, what) in [(&irc_tls, "IRC over TLS"), (&irc_plain, "plaintext IRC")] {
        if let Some(addr) = listener.as_ref().and_then(|l| l.local_addr().ok()) {
            writeln!(out, "{what} on {addr}")?;
        }
    }
    if irc_tls.is_some() {
        // IRC clients pin the certificate's SHA-256, not the key's (the line above): WeeChat
        // takes the hex digits, irssi the colon form.
        let sha = server.certificate_sha256();
        writeln!(out, "IRC certificate sha256 {sha}")?;
        writeln!(out, "IRC certificate sha256 {}", sha.colons())?;
    }
    out.flush()?;
    drop(out);
    let listeners = crate::server::Listeners {
        native: listener,
        irc: irc_tls,
        irc_plain,
    };
    server.run_with(listeners, shutdown).await;
    Ok(())
}

/// Binds a listener. When the address is taken and a server holds `db`, the error is that
/// server's (it is most likely the one on the port).
async fn bind(
    addr: std::net::SocketAddr,
    what: &str,
    db: &DbTarget,
) -> Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
        Err(e) => {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                if let Some((db, holder)) = db
                    .sqlite_path()
                    .and_then(|db| crate::store::lock_holder(db).map(|h| (db, h)))
                {
                    return Err(crate::store::LockError::InUse {
                        db: db.display().to_string(),
                        holder,
                    }
                    .into());
                }
            }
            Err(anyhow::Error::new(e).context(format!("cannot listen{what} on {addr}")))
        }
    }
}

/// Installs the signal handlers (before the server announces itself, so a signal sent right
/// after the "listening" line is never lost): SIGTERM/SIGINT stop the server gracefully,
/// SIGHUP re-reads the certificate and key without touching live connections.
fn install_signals(
    shutdown: CancellationToken,
    reloader: crate::server::TlsReloader,
) -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            shutdown.cancel();
        });
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match reloader.reload() {
                    Ok(fingerprint) => tracing::info!(
                        %fingerprint,
                        irc_certificate_sha256 = %reloader.certificate_sha256(),
                        "SIGHUP: certificate reloaded"
                    ),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: reload failed; keeping the old certificate"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        });
    }
    Ok(())
}

async fn user_command(store: &Store, cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Add(args) => {
            let name = parse_name(&args.name)?;
            let password = read_new_password(args.password_stdin)?;
            let hash = Hasher::new(1).await?.hash(&password).await?;
            store.create_user(&name, &hash).await?;
            println!("created user {name}");
        }
        UserCommand::List { json } => {
            let users = store.list_users().await?;
            let mut out = std::io::stdout().lock();
            if json {
                for u in users {
                    writeln!(out, "{}", serde_json::to_string(&u)?)?;
                }
            } else if users.is_empty() {
                writeln!(out, "no users; add one with: chatd user add NAME")?;
            } else {
                writeln!(
                    out,
                    "{:<32} {:<8} {:>7}  CREATED",
                    "NAME", "STATUS", "DEVICES"
                )?;
                for u in users {
                    let status = if u.disabled { "disabled" } else { "active" };
                    writeln!(
                        out,
                        "{:<32} {:<8} {:>7}  {}",
                        u.name, status, u.devices, u.created_at
                    )?;
                }
            }
        }
        UserCommand::Passwd(args) => {
            let name = parse_name(&args.name)?;
            if store.find_user(&name).await?.is_none() {
                bail!("no such user: {name}");
            }
            let password = read_new_password(args.password_stdin)?;
            let hash = Hasher::new(1).await?.hash(&password).await?;
            store.set_password(&name, &hash).await?;
            println!("password changed for {name}; existing sessions ended");
        }
        UserCommand::Disable { name } => {
            let name = parse_name(&name)?;
            store.set_disabled(&name, true).await?;
            println!("disabled {name}");
        }
        UserCommand::Enable { name } => {
            let name = parse_name(&name)?;
            store.set_disabled(&name, false).await?;
            println!("enabled {name}");
        }
        UserCommand::Del { name } => {
            let name = parse_name(&name)?;
            store.delete_user(&name).await?;
            println!("deleted {name}");
        }
        UserCommand::Revoke { name } => {
            let name = parse_name(&name)?;
            let n = store.revoke_user(&name).await?;
            println!("revoked {n} session(s) of {name}");
        }
    }
    Ok(())
}

async fn room_command(store: &Store, cmd: RoomCommand) -> Result<()> {
    match cmd {
        RoomCommand::List { json } => {
            let rooms = store.room_summaries().await?;
            let mut out = std::io::stdout().lock();
            if json {
                for r in rooms {
                    writeln!(out, "{}", serde_json::to_string(&r)?)?;
                }
            } else if rooms.is_empty() {
                writeln!(
                    out,
                    "no rooms; users create them with: chat room create NAME"
                )?;
            } else {
                writeln!(
                    out,
                    "{:<34} {:<8} {:<32} {:>7} {:>9}",
                    "ROOM", "ACCESS", "OWNER", "MEMBERS", "MESSAGES"
                )?;
                for r in rooms {
                    let access = if r.private { "private" } else { "public" };
                    writeln!(
                        out,
                        "{:<34} {access:<8} {:<32} {:>7} {:>9}",
                        r.name, r.owner, r.members, r.messages
                    )?;
                }
            }
        }
        RoomCommand::Del { name } => {
            let room =
                RoomName::parse(&name).with_context(|| format!("invalid room name {name:?}"))?;
            match store.delete_room(&room).await {
                Ok(()) => println!("deleted {room}"),
                Err(StoreError::Refused(Refusal::UnknownRoom { .. })) => {
                    anyhow::bail!("no such room: {room}")
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn parse_name(name: &str) -> Result<Username> {
    Username::parse(name).with_context(|| format!("invalid user name {name:?}"))
}

/// Reads a new password: one line of stdin with `--password-stdin`, otherwise asked twice on
/// the terminal without echo.
fn read_new_password(from_stdin: bool) -> Result<Secret> {
    let password = if from_stdin {
        read_password_line()?
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to ask for the password on; pipe it with --password-stdin");
        }
        let first = rpassword::prompt_password("new password: ").context("cannot read password")?;
        let second = rpassword::prompt_password("again: ").context("cannot read password")?;
        if first != second {
            bail!("the passwords do not match");
        }
        Secret::new(first)
    };
    check_password_policy(&password)?;
    Ok(password)
}

/// Reads one line of standard input as a password (without the line ending).
pub fn read_password_line() -> Result<Secret> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    if trimmed.is_empty() {
        bail!("no password on standard input");
    }
    Ok(Secret::new(trimmed))
}
