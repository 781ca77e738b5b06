//! `chat`: the command-line client.
//!
//! Every command but `login` and `trust` uses the saved session in `$CHAT_HOME`. The server's
//! key is pinned on first use: `--pin` for scripts, a yes/no question on a terminal, and a
//! refusal otherwise; a changed key is refused before any credential is sent.

use std::io::{IsTerminal, Read, Write};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::client::proof::ProofFile;
use crate::client::state::{ChatHome, SavedLogin, SavedSession};
use crate::client::{new_send_key, probe_fingerprint, ClientError, Connection, Event, ServerAddr};
use crate::protocol::{ErrorCode, Message, Secret};
use crate::tls::Fingerprint;

/// How many times `chat send` tries (with the same idempotency key) when the connection
/// breaks before the server confirms.
const SEND_ATTEMPTS: u32 = 3;
/// First and longest wait before `chat recv --follow` reconnects.
const RECONNECT_MIN: std::time::Duration = std::time::Duration::from_millis(500);
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Keepalive period of `chat recv --follow`.
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// chat: the client for chatd.
#[derive(Debug, Parser)]
#[command(name = "chat", version, about, propagate_version = true)]
pub struct Cli {
    /// Without a command, `chat` opens the full-screen client (`chat tui`).
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Show a conversation (a user, or '#room'), oldest first.
    History {
        peer: String,
        /// Most messages to show (the server caps a page at 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only messages with ids below this one (paging back).
        #[arg(long, value_name = "ID", conflicts_with = "after")]
        before: Option<i64>,
        /// Only messages with ids above this one (paging forward).
        #[arg(long, value_name = "ID")]
        after: Option<i64>,
        /// One JSON object per message and line.
        #[arg(long)]
        json: bool,
    },
    /// Rooms: create, invite, join, leave, list, members, kick.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Full-text search over everything you may read, best match first.
    Search {
        /// Words to find (all must match).
        query: String,
        /// Only in this conversation (a user, or '#room').
        #[arg(long = "in", value_name = "CONVERSATION")]
        within: Option<String>,
        /// Most results (the server caps at 100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// One JSON object per result and line.
        #[arg(long)]
        json: bool,
    },
    /// Mark a conversation as read (up to its newest message, or --upto ID); synced to your
    /// other devices.
    Read {
        conversation: String,
        #[arg(long, value_name = "ID")]
        upto: Option<i64>,
    },
    /// Unread count and last message per conversation.
    Unread {
        /// One JSON object per conversation and line.
        #[arg(long)]
        json: bool,
    },
    /// The full-screen terminal client (also what `chat` with no command opens).
    Tui,
    /// Pin (or re-pin) a server's key.
    Trust {
        /// host:port
        server: String,
        /// The key fingerprint, as printed by `chatd fingerprint`.
        #[arg(long)]
        pin: Option<Fingerprint>,
    },
}

#[derive(Debug, Subcommand)]
enum RoomCommand {
    /// Create a room; you become its owner.
    Create {
        room: String,
        /// Invite-only.
        #[arg(long)]
        private: bool,
    },
    /// Add a user to a room (owner only).
    Invite { room: String, user: String },
    /// Join a public room.
    Join { room: String },
    /// Leave a room.
    Leave { room: String },
    /// Rooms you are in.
    List {
        /// Public rooms you are not in, too.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Members of a room.
    Members {
        room: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a member (owner only).
    Kick { room: String, user: String },
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
    let Some(command) = cli.command else {
        return crate::tui::run(&home).await;
    };
    match command {
        Command::Login(args) => login(&home, args).await,
        Command::Logout => logout(&home).await,
        Command::Send { peer, text } => send(&home, &peer, text).await,
        Command::Recv { follow, json } => recv(&home, follow, json).await,
        Command::History {
            peer,
            limit,
            before,
            after,
            json,
        } => history(&home, &peer, limit, before, after, json).await,
        Command::Room(cmd) => room(&home, cmd).await,
        Command::Search {
            query,
            within,
            limit,
            json,
        } => search(&home, &query, within.as_deref(), limit, json).await,
        Command::Read { conversation, upto } => read(&home, &conversation, upto).await,
        Command::Unread { json } => unread(&home, json).await,
        Command::Trust { server, pin } => trust(&home, &server, pin).await,
        Command::Tui => crate::tui::run(&home).await,
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
    // The login proof from the last password login here exempts this one from the server's
    // failed-login throttling; a missing or unreadable one only means an ordinary login.
    let proofs = ProofFile::new(home);
    let proof = proofs.load(&key, &args.user).unwrap_or_else(|e| {
        eprintln!("chat: warning: {e}; logging in without a login proof");
        None
    });
    let info = conn
        .client
        .login_with_proof(&args.user, &password, proof.as_ref(), &device)
        .await?;
    home.save_session(&SavedSession {
        server: key.clone(),
        user: info.user.clone(),
        device_id: info.device_id,
        token: info.token,
        last_seen: 0,
    })?;
    if let Some(Err(e)) = info.proof.map(|p| proofs.save(&key, &info.user, &p)) {
        eprintln!("chat: warning: cannot keep the login proof: {e}");
    }
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
    let SavedLogin { session, addr, pin } = home.saved_login()?;
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

/// `chat recv`. With `--follow`, a lost connection (a server restart, a network cut) is
/// retried with backoff (0.5 s doubling to 30 s) and delivery resumes from the cursor;
/// messages already shown are not shown again. A revoked session or disabled account ends it.
async fn recv(home: &ChatHome, follow: bool, json: bool) -> Result<()> {
    let mut shown = 0;
    let mut backoff = RECONNECT_MIN;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let connected = std::time::Instant::now();
        match recv_once(home, follow, json, &mut shown, &mut interrupted).await {
            Ok(()) => return Ok(()),
            Err(e) if follow && is_transient(&e) => {
                if connected.elapsed() > RECONNECT_MAX {
                    backoff = RECONNECT_MIN;
                }
                eprintln!(
                    "chat: {e:#}; reconnecting in {:.1} s",
                    backoff.as_secs_f64()
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut interrupted => return Ok(()),
                }
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// One connection's worth of `chat recv`. `shown` is the highest id printed so far in this
/// run (the saved `last_seen` may lag it by what was shown but not yet acknowledged).
async fn recv_once(
    home: &ChatHome,
    follow: bool,
    json: bool,
    shown: &mut i64,
    interrupted: &mut std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
) -> Result<()> {
    let (conn, mut session) = connect_saved(home).await?;
    session.last_seen = session.last_seen.max(*shown);
    let (client, mut events) = conn.split();
    let cursor = client.subscribe().await?;
    let mut highest = cursor;
    let mut acked = cursor;
    let mut caught_up = false;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Message(m)) => {
                    highest = highest.max(m.id);
                    if m.id > session.last_seen {
                        print_message(&m, json)?;
                        session.last_seen = m.id;
                        *shown = m.id;
                    }
                }
                Some(Event::CaughtUp { .. }) => caught_up = true,
                Some(Event::ReadMarker { .. }) => {}
                Some(Event::Closed(reason)) => return Err(ClientError::Closed(reason).into()),
                None => return Err(ClientError::Closed(None).into()),
            },
            _ = ping.tick(), if follow => client.ping().await?,
            _ = &mut *interrupted, if follow => {
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
    after: Option<i64>,
    json: bool,
) -> Result<()> {
    let (conn, _) = connect_saved(home).await?;
    let (messages, more) = conn
        .client
        .history_page(peer, before, after, Some(limit))
        .await?;
    for m in &messages {
        print_message(m, json)?;
    }
    if !json {
        match (messages.first(), messages.last(), more) {
            (_, Some(last), true) if after.is_some() => {
                eprintln!("(newer messages: chat history {peer} --after {})", last.id)
            }
            (Some(first), _, true) => eprintln!(
                "(older messages: chat history {peer} --before {})",
                first.id
            ),
            (None, _, _) => eprintln!("(no messages in {peer})"),
            _ => {}
        }
    }
    Ok(())
}

async fn room(home: &ChatHome, cmd: RoomCommand) -> Result<()> {
    let (conn, _) = connect_saved(home).await?;
    let c = &conn.client;
    let mut out = std::io::stdout().lock();
    match cmd {
        RoomCommand::Create { room, private } => {
            c.room_create(&room, private).await?;
            let kind = if private { "private" } else { "public" };
            writeln!(out, "created {kind} room {}", show_room(&room))?;
        }
        RoomCommand::Invite { room, user } => {
            c.room_invite(&room, &user).await?;
            writeln!(out, "added {user} to {}", show_room(&room))?;
        }
        RoomCommand::Join { room } => {
            c.room_join(&room).await?;
            writeln!(out, "joined {}", show_room(&room))?;
        }
        RoomCommand::Leave { room } => {
            c.room_leave(&room).await?;
            writeln!(out, "left {}", show_room(&room))?;
        }
        RoomCommand::Kick { room, user } => {
            c.room_kick(&room, &user).await?;
            writeln!(out, "removed {user} from {}", show_room(&room))?;
        }
        RoomCommand::List { all, json } => {
            let rooms = c.room_list(all).await?;
            for r in rooms {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&r)?)?;
                } else {
                    let access = if r.private { "private" } else { "public" };
                    let mine = if r.member { "" } else { "  (not a member)" };
                    writeln!(
                        out,
                        "{:<34} {access:<8} owner {:<20} {} member(s){mine}",
                        r.name, r.owner, r.members
                    )?;
                }
            }
        }
        RoomCommand::Members { room, json } => {
            for m in c.room_members(&room).await? {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&m)?)?;
                } else if m.role == "owner" {
                    writeln!(out, "{} (owner)", m.user)?;
                } else {
                    writeln!(out, "{}", m.user)?;
                }
            }
        }
    }
    Ok(())
}

/// `ops` and `#ops` both name the room `#ops` in room commands.
fn show_room(room: &str) -> String {
    if room.starts_with('#') {
        room.to_string()
    } else {
        format!("#{room}")
    }
}

async fn search(
    home: &ChatHome,
    query: &str,
    within: Option<&str>,
    limit: u32,
    json: bool,
) -> Result<()> {
    let (conn, _) = connect_saved(home).await?;
    let hits = conn.client.search(query, within, Some(limit)).await?;
    let mut out = std::io::stdout().lock();
    for hit in &hits {
        if json {
            writeln!(out, "{}", serde_json::to_string(hit)?)?;
        } else {
            let m = &hit.message;
            let snippet = hit.snippet.replace('\n', " ⏎ ");
            writeln!(
                out,
                "#{:<8} {} {} → {}: {snippet}",
                m.id,
                short_time(&m.sent_at),
                m.from,
                m.to
            )?;
        }
    }
    if hits.is_empty() && !json {
        eprintln!("(no matches)");
    }
    Ok(())
}

async fn read(home: &ChatHome, conversation: &str, upto: Option<i64>) -> Result<()> {
    let (conn, _) = connect_saved(home).await?;
    let now = conn.client.read(conversation, upto).await?;
    println!("{conversation} read up to #{now}");
    Ok(())
}

async fn unread(home: &ChatHome, json: bool) -> Result<()> {
    let (conn, _) = connect_saved(home).await?;
    let list = conn.client.unread().await?;
    let mut out = std::io::stdout().lock();
    for u in &list {
        if json {
            writeln!(out, "{}", serde_json::to_string(u)?)?;
        } else {
            let last = u.last.as_ref().map_or(String::new(), |m| {
                let first = m.body.lines().next().unwrap_or("");
                format!("  last: {} {}: {first}", short_time(&m.sent_at), m.from)
            });
            writeln!(out, "{:<34} {:>5} unread{last}", u.conversation, u.unread)?;
        }
    }
    Ok(())
}

/// "2026-11-24T08:15:02.123456Z" → "2026-11-24 08:15:02".
fn short_time(sent_at: &str) -> String {
    sent_at
        .chars()
        .take(19)
        .collect::<String>()
        .replace('T', " ")
}

fn print_message(m: &Message, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(m)?)?;
    } else {
        let when = short_time(&m.sent_at);
        if let Some(event) = m.event_text() {
            writeln!(out, "[{when}] {}: {event}", m.to)?;
            out.flush()?;
            return Ok(());
        }
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
