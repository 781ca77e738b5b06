//! `chat`: the command-line client.
//!
//! Every command but `login` and `trust` uses the saved session in `$CHAT_HOME`. The server's
//! key is pinned on first use: `--pin` for scripts, a yes/no question on a terminal, and a
//! refusal otherwise; a changed key is refused before any credential is sent.

use std::io::{IsTerminal, Read, Write};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::client::state::{ChatHome, SavedSession};
use crate::client::{new_send_key, probe_fingerprint, ClientError, Connection, Event, ServerAddr};
use crate::protocol::{ErrorCode, Message, Secret};
use crate::tls::Fingerprint;

/// How many times `chat send` tries (with the same idempotency key) when the connection
/// breaks before the server confirms.
const SEND_ATTEMPTS: u32 = 3;
/// Keepalive period of `chat recv --follow`.
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// chat: the client for chatd.
#[derive(Debug, Parser)]
#[command(name = "chat", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in to a server and save the session (a new device).
    Login(LoginArgs),
    /// Revoke this device's session on the server and forget it here.
    Logout,
    /// Send a direct message: the words given, or all of standard input.
    Send {
        /// Recipient user name.
        peer: String,
        /// Message text (words are joined by spaces). Without it, standard input is sent.
        text: Vec<String>,
    },
    /// Print messages not yet received on this device, acknowledge them, exit.
    Recv {
        /// Stay connected and print live messages until interrupted.
        #[arg(long)]
        follow: bool,
        /// One JSON object per message and line.
        #[arg(long)]
        json: bool,
    },
    /// Show the conversation with a user, oldest first.
    History {
        peer: String,
        /// Most messages to show (the server caps a page at 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only messages with ids below this one (for paging back).
        #[arg(long, value_name = "ID")]
        before: Option<i64>,
        /// One JSON object per message and line.
        #[arg(long)]
        json: bool,
    },
    /// Pin (or re-pin) a server's key.
    Trust {
        /// host:port
        server: String,
        /// The key fingerprint, as printed by `chatd fingerprint`.
        #[arg(long)]
        pin: Option<Fingerprint>,
    },
}

#[derive(Debug, Args)]
struct LoginArgs {
    /// host:port of the server (IPv6 as [addr]:port).
    #[arg(long)]
    server: String,
    /// Your user name.
    #[arg(long)]
    user: String,
    /// The server's key fingerprint (sha256:<hex> from `chatd fingerprint`); needed on first
    /// contact when not on a terminal.
    #[arg(long)]
    pin: Option<Fingerprint>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// A name for this device [default: "chat on <hostname>"].
    #[arg(long)]
    device: Option<String>,
}

/// Runs a parsed `chat` command line.
pub async fn run(cli: Cli) -> Result<()> {
    let home = ChatHome::from_env()?;
    match cli.command {
        Command::Login(args) => login(&home, args).await,
        Command::Logout => logout(&home).await,
        Command::Send { peer, text } => send(&home, &peer, text).await,
        Command::Recv { follow, json } => recv(&home, follow, json).await,
        Command::History {
            peer,
            limit,
            before,
            json,
        } => history(&home, &peer, limit, before, json).await,
        Command::Trust { server, pin } => trust(&home, &server, pin).await,
    }
}

async fn login(home: &ChatHome, args: LoginArgs) -> Result<()> {
    let addr: ServerAddr = args.server.parse()?;
    let key = addr.to_string();
    let pin = match (home.known_pin(&key)?, args.pin) {
        (Some(known), Some(given)) if known != given => bail!(
            "--pin {given} differs from the key pinned for {key} ({known}); if the operator \
             really changed the key, re-trust it with: chat trust {key} --pin {given}"
        ),
        (Some(known), _) => known,
        (None, Some(given)) => given,
        (None, None) => first_contact(&addr).await?,
    };
    // Connect before asking for the password: a changed key is refused here, before any
    // credential exists in this process.
    let conn = Connection::connect(&addr, pin).await?;
    home.save_pin(&key, pin)?;
    let password = if args.password_stdin {
        super::chatd::read_password_line()?
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to ask for the password on; pipe it with --password-stdin");
        }
        Secret::new(rpassword::prompt_password(format!(
            "password for {}: ",
            args.user
        ))?)
    };
    let device = args.device.unwrap_or_else(|| {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        format!("chat on {host}")
    });
    let info = conn.client.login(&args.user, &password, &device).await?;
    home.save_session(&SavedSession {
        server: key.clone(),
        user: info.user.clone(),
        device_id: info.device_id,
        token: info.token,
        last_seen: 0,
    })?;
    println!(
        "logged in to {key} as {} (device {})",
        info.user, info.device_id
    );
    Ok(())
}

/// First contact with an unpinned server: ask on a terminal, refuse otherwise.
async fn first_contact(addr: &ServerAddr) -> Result<Fingerprint> {
    let presented = probe_fingerprint(addr).await?;
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        bail!(
            "first contact with {addr}: refusing to trust its key without --pin (it presented \
             {presented}); ask the operator for the output of `chatd fingerprint` and pass it \
             with --pin"
        );
    }
    eprintln!("The server {addr} presents the key {presented}.");
    eprintln!("Compare it with the output of `chatd fingerprint` on the server.");
    eprint!("Trust this key? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(presented)
    } else {
        bail!("key not trusted; nothing was sent to {addr}")
    }
}

async fn trust(home: &ChatHome, server: &str, pin: Option<Fingerprint>) -> Result<()> {
    let addr: ServerAddr = server.parse()?;
    let pin = match pin {
        Some(p) => p,
        None => first_contact(&addr).await?,
    };
    home.save_pin(&addr.to_string(), pin)?;
    println!("pinned {pin} for {addr}");
    Ok(())
}

/// Connects with the saved session and authenticates.
async fn connect_saved(home: &ChatHome) -> Result<(Connection, SavedSession)> {
    let session = home
        .load_session()?
        .ok_or_else(|| anyhow!("not logged in; run: chat login --server HOST:PORT --user NAME"))?;
    let addr: ServerAddr = session.server.parse()?;
    let pin = home.known_pin(&session.server)?.ok_or_else(|| {
        anyhow!(
            "no pinned key for {}; run: chat trust {} --pin sha256:…",
            session.server,
            session.server
        )
    })?;
    let conn = Connection::connect(&addr, pin).await?;
    match conn.client.auth(&session.token).await {
        Ok(_) => Ok((conn, session)),
        Err(e) if matches!(e.code(), Some(ErrorCode::InvalidToken)) => Err(anyhow!(
            "the saved session for {} on {} is no longer valid (revoked or logged out); log in again",
            session.user,
            session.server
        )),
        Err(e) => Err(e.into()),
    }
}

async fn logout(home: &ChatHome) -> Result<()> {
    match connect_saved(home).await {
        Ok((conn, session)) => {
            conn.client.logout().await?;
            home.remove_session()?;
            println!("logged out {} from {}", session.user, session.server);
            Ok(())
        }
        Err(e) if e.to_string().contains("no longer valid") => {
            home.remove_session()?;
            println!("the session was already revoked; forgotten here");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn send(home: &ChatHome, peer: &str, text: Vec<String>) -> Result<()> {
    let body = if text.is_empty() {
        if std::io::stdin().is_terminal() {
            bail!("no message: give the text as arguments or pipe it on standard input");
        }
        let mut body = String::new();
        std::io::stdin()
            .read_to_string(&mut body)
            .context("standard input is not valid UTF-8 text")?;
        body
    } else {
        text.join(" ")
    };
    if body.is_empty() {
        bail!("the message is empty");
    }
    let key = new_send_key();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let (conn, _) = connect_saved(home).await?;
            let max = conn.client.welcome().max_body;
            if body.len() > max {
                bail!(
                    "the message is {} bytes; the server accepts at most {max} bytes",
                    body.len()
                );
            }
            Ok(conn.client.send(peer, &body, &key).await?)
        }
        .await;
        match result {
            Ok(sent) => {
                println!("sent #{} at {}", sent.id, sent.sent_at);
                return Ok(());
            }
            Err(e) if attempt < SEND_ATTEMPTS && is_transient(&e) => {
                tracing::debug!(error = %e, "send failed; retrying with the same key");
                tokio::time::sleep(std::time::Duration::from_millis(300 * u64::from(attempt)))
                    .await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_transient(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ClientError>()
        .is_some_and(ClientError::is_transient)
}

async fn recv(home: &ChatHome, follow: bool, json: bool) -> Result<()> {
    let (conn, mut session) = connect_saved(home).await?;
    let (client, mut events) = conn.split();
    let cursor = client.subscribe().await?;
    let mut highest = cursor;
    let mut acked = cursor;
    let mut caught_up = false;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Message(m)) => {
                    highest = highest.max(m.id);
                    if m.id > session.last_seen {
                        print_message(&m, json)?;
                        session.last_seen = m.id;
                    }
                }
                Some(Event::CaughtUp { .. }) => caught_up = true,
                Some(Event::Closed(reason)) => return Err(ClientError::Closed(reason).into()),
                None => return Err(ClientError::Closed(None).into()),
            },
            _ = ping.tick(), if follow => client.ping().await?,
            _ = &mut interrupted, if follow => {
                commit(home, &session, &client, &mut acked, highest).await?;
                return Ok(());
            }
        }
        // Acknowledge whenever nothing more is immediately waiting: after the backlog, and
        // after each burst of live messages.
        if caught_up && events.is_empty() {
            commit(home, &session, &client, &mut acked, highest).await?;
            if !follow {
                return Ok(());
            }
        }
    }
}

/// Records what was shown, then moves the server cursor: in that order, so a crash in
/// between never shows a message twice.
async fn commit(
    home: &ChatHome,
    session: &SavedSession,
    client: &crate::client::Client,
    acked: &mut i64,
    highest: i64,
) -> Result<()> {
    if highest <= *acked {
        return Ok(());
    }
    home.save_session(session)?;
    *acked = client.ack(highest).await?;
    Ok(())
}

async fn history(
    home: &ChatHome,
    peer: &str,
    limit: u32,
    before: Option<i64>,
    json: bool,
) -> Result<()> {
    let (conn, _) = connect_saved(home).await?;
    let (messages, more) = conn.client.history(peer, before, Some(limit)).await?;
    for m in &messages {
        print_message(m, json)?;
    }
    if !json {
        match (messages.first(), more) {
            (Some(first), true) => eprintln!(
                "(older messages: chat history {peer} --before {})",
                first.id
            ),
            (None, _) => eprintln!("(no messages with {peer})"),
            _ => {}
        }
    }
    Ok(())
}

fn print_message(m: &Message, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(m)?)?;
    } else {
        // "2026-11-24T08:15:02.123456Z" → "2026-11-24 08:15:02"
        let when: String = m
            .sent_at
            .chars()
            .take(19)
            .collect::<String>()
            .replace('T', " ");
        // A final newline (as `chat send < file` keeps) is not shown as an empty line.
        let body = m.body.strip_suffix('\n').unwrap_or(&m.body);
        let mut lines = body.split('\n');
        let first = lines.next().unwrap_or("");
        writeln!(out, "[{when}] {} → {}: {first}", m.from, m.to)?;
        for line in lines {
            writeln!(out, "    {line}")?;
        }
    }
    out.flush()?;
    Ok(())
}
