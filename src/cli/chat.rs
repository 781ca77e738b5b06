//! `chat`: the command-line client.
//!
//! Every command but `login` and `trust` uses the saved session in `$CHAT_HOME`. The server's
//! key is pinned on first use: `--pin` for scripts, a yes/no question on a terminal, and a
//! refusal otherwise; a changed key is refused before any credential is sent.

use std::borrow::Cow;
use std::io::{IsTerminal, Read, Write};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::client::inbox::{Inbox, InboxEvent};
use crate::client::proof::ProofFile;
use crate::client::state::{ChatHome, SavedLogin, SavedSession};
use crate::client::terminal::terminal_safe;
use crate::client::{new_send_key, probe_fingerprint, ClientError, Connection, ServerAddr};
use crate::protocol::{ErrorCode, Message, Secret, MAX_HISTORY_PAGE, MAX_SEARCH_RESULTS};
use crate::tls::Fingerprint;

/// How many times `chat send` tries (with the same idempotency key) when the connection
/// breaks before the server confirms.
const SEND_ATTEMPTS: u32 = 3;

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
        /// Send an action (emote, IRC's `/me`): shown as `* you TEXT`.
        #[arg(long)]
        action: bool,
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
        /// Most messages to show, 1 to 500 (one page).
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
    /// Rooms: create, invite, join, leave, del, list, members, kick.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Full-text search over everything you may read, best match first.
    Search {
        /// Words to find (all must match).
        query: String,
        /// Only in this conversation (a user, or '#room').
        #[arg(long = "in", value_name = "CONVERSATION")]
        within: Option<String>,
        /// Most results, 1 to 100.
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
    /// Leave a room (the owner only when alone in it, which deletes it).
    Leave { room: String },
    /// Delete a room you own, for every member; its name becomes free.
    Del { room: String },
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
    let show = Show::for_stdout();
    match command {
        Command::Login(args) => login(&home, args, show).await,
        Command::Logout => logout(&home).await,
        Command::Send { peer, text, action } => send(&home, &peer, text, action).await,
        Command::Recv { follow, json } => recv(&home, follow, json, show).await,
        Command::History {
            peer,
            limit,
            before,
            after,
            json,
        } => history(&home, &peer, limit, before, after, json, show).await,
        Command::Room(cmd) => room(&home, cmd, show).await,
        Command::Search {
            query,
            within,
            limit,
            json,
        } => search(&home, &query, within.as_deref(), limit, json, show).await,
        Command::Read { conversation, upto } => read(&home, &conversation, upto, show).await,
        Command::Unread { json } => unread(&home, json, show).await,
        Command::Trust { server, pin } => trust(&home, &server, pin).await,
        Command::Tui => crate::tui::run(&home).await,
    }
}

async fn login(home: &ChatHome, args: LoginArgs, show: Show) -> Result<()> {
    let addr: ServerAddr = args.server.parse()?;
    let key = addr.to_string();
    let known = home.known_pin(&key)?;
    let pin = match (known, args.pin) {
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
    let conn = match Connection::connect(&addr, pin).await {
        // First contact with a --pin the server does not match: nothing was ever pinned, so
        // this is not a changed key, and the key presented must not be suggested: it may be
        // an interceptor's.
        Err(ClientError::PinMismatch { presented, .. }) if known.is_none() => bail!(
            "the server {key} does not present the key given with --pin {pin} (it presented \
             {presented}); nothing was sent and nothing pinned. Check the pin with the server's \
             operator (`chatd fingerprint` on the server)"
        ),
        other => other?,
    };
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
        show.text(&info.user),
        info.device_id
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
    if confirm("Trust this key?")? {
        Ok(presented)
    } else {
        bail!("key not trusted; nothing was sent to {addr}")
    }
}

/// Asks a yes/no question on the terminal (standard error), no being the default.
fn confirm(question: &str) -> Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

async fn trust(home: &ChatHome, server: &str, pin: Option<Fingerprint>) -> Result<()> {
    let addr: ServerAddr = server.parse()?;
    let key = addr.to_string();
    let known = home.known_pin(&key)?;
    let pin = match (pin, known) {
        (Some(p), _) => p,
        (None, None) => first_contact(&addr).await?,
        (None, Some(old)) => re_trust(&addr, old).await?,
    };
    home.save_pin(&key, pin)?;
    match known {
        Some(old) if old == pin => println!("{pin} was already pinned for {addr}"),
        Some(old) => println!("pinned {pin} for {addr} (replacing {old})"),
        None => println!("pinned {pin} for {addr}"),
    }
    Ok(())
}

/// `chat trust` without `--pin` for a server whose key is pinned already: keep the pin when
/// the server still presents it; otherwise show both keys and ask on a terminal, refuse
/// elsewhere.
async fn re_trust(addr: &ServerAddr, old: Fingerprint) -> Result<Fingerprint> {
    let presented = probe_fingerprint(addr).await?;
    if presented == old {
        return Ok(old);
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        bail!(
            "the key pinned for {addr} is {old}, but the server now presents {presented}; \
             refusing to replace the pin without --pin. Ask the operator whether the key \
             really changed (`chatd fingerprint` on the server), then pass it with --pin"
        );
    }
    eprintln!("The key pinned for {addr} is {old}.");
    eprintln!("The server now presents {presented}.");
    eprintln!(
        "Unless the operator changed the key, someone may be intercepting the connection: \
         compare it with the output of `chatd fingerprint` on the server."
    );
    if confirm("Replace the pinned key?")? {
        Ok(presented)
    } else {
        bail!("the pin for {addr} is unchanged ({old})")
    }
}

/// Connects with the saved session and authenticates.
async fn connect_saved(home: &ChatHome) -> Result<(Connection, SavedSession)> {
    let SavedLogin { session, addr, pin } = home.saved_login()?;
    let conn = Connection::connect(&addr, pin).await?;
    match conn.client.auth(&session.token).await {
        Ok(_) => Ok((conn, session)),
        Err(e) => Err(session_error(&session, e)),
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

async fn send(home: &ChatHome, peer: &str, text: Vec<String>, action: bool) -> Result<()> {
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
    if crate::protocol::is_blank(&body) {
        bail!("the message is empty (or only whitespace)");
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
            if action {
                return Ok(conn.client.send_action(peer, &body, &key).await?);
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
/// The loop itself (dedupe, record-then-ack, reconnects, pings) is [`Inbox`]'s; this prints.
async fn recv(home: &ChatHome, follow: bool, json: bool, show: Show) -> Result<()> {
    let login = home.saved_login()?;
    let mut inbox = Inbox::new(home.clone(), login);
    // Polled (and so installed as the SIGINT handler) only with --follow.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let event = tokio::select! {
            event = inbox.next() => event,
            _ = &mut interrupted, if follow => {
                inbox.flush().await?;
                return Ok(());
            }
        };
        match event {
            InboxEvent::Message(m) => {
                print_message(&m, json, show)?;
                inbox.show(m.id);
            }
            // Everything printed is recorded and acknowledged.
            InboxEvent::Idle if !follow => return Ok(()),
            InboxEvent::CommitFailed(e) => return Err(e.into()),
            InboxEvent::Disconnected { error, retry_in } if follow => {
                eprintln!(
                    "chat: {:#}; reconnecting in {:.1} s",
                    anyhow::Error::from(error),
                    retry_in.as_secs_f64()
                );
            }
            InboxEvent::Disconnected { error, .. } | InboxEvent::Ended(error) => {
                return Err(session_error(inbox.session(), error));
            }
            InboxEvent::Connecting { .. }
            | InboxEvent::Connected { .. }
            | InboxEvent::CaughtUp
            | InboxEvent::ReadMarker { .. }
            | InboxEvent::Idle => {}
        }
    }
}

/// A client error in the words `chat` uses for a saved session the server no longer takes.
fn session_error(session: &SavedSession, error: ClientError) -> anyhow::Error {
    if matches!(error.code(), Some(ErrorCode::InvalidToken)) {
        anyhow!(
            "the saved session for {} on {} is no longer valid (revoked or logged out); log in again",
            session.user,
            session.server
        )
    } else {
        error.into()
    }
}

async fn history(
    home: &ChatHome,
    peer: &str,
    limit: u32,
    before: Option<i64>,
    after: Option<i64>,
    json: bool,
    show: Show,
) -> Result<()> {
    // The server would lower a larger limit to a page without saying so.
    if limit == 0 || limit > MAX_HISTORY_PAGE {
        bail!(
            "--limit {limit} is out of range: a history page holds 1 to {MAX_HISTORY_PAGE} \
             messages (page on with --before or --after)"
        );
    }
    let (conn, _) = connect_saved(home).await?;
    let (messages, more) = conn
        .client
        .history_page(peer, before, after, Some(limit))
        .await?;
    for m in &messages {
        print_message(m, json, show)?;
    }
    if !json {
        match (messages.first(), messages.last(), more) {
            (_, Some(last), true) if after.is_some() => eprintln!(
                "(newer messages: chat history {} --after {})",
                show.text(peer),
                last.id
            ),
            (Some(first), _, true) => eprintln!(
                "(older messages: chat history {} --before {})",
                show.text(peer),
                first.id
            ),
            (None, _, _) => eprintln!("(no messages in {})", show.text(peer)),
            _ => {}
        }
    }
    Ok(())
}

async fn room(home: &ChatHome, cmd: RoomCommand, show: Show) -> Result<()> {
    let (conn, _) = connect_saved(home).await?;
    let c = &conn.client;
    let mut out = std::io::stdout().lock();
    match cmd {
        RoomCommand::Create { room, private } => {
            c.room_create(&room, private).await?;
            let kind = if private { "private" } else { "public" };
            writeln!(out, "created {kind} room {}", show.text(&show_room(&room)))?;
        }
        RoomCommand::Invite { room, user } => {
            c.room_invite(&room, &user).await?;
            writeln!(
                out,
                "added {} to {}",
                show.text(&user),
                show.text(&show_room(&room))
            )?;
        }
        RoomCommand::Join { room } => {
            c.room_join(&room).await?;
            writeln!(out, "joined {}", show.text(&show_room(&room)))?;
        }
        RoomCommand::Leave { room } => {
            c.room_leave(&room).await?;
            // The owner alone in a room deletes it by leaving; the room is then gone.
            let gone = matches!(
                c.room_members(&room).await,
                Err(e) if e.code() == Some(ErrorCode::UnknownRoom)
            );
            let room = show.text(&show_room(&room)).into_owned();
            if gone {
                writeln!(
                    out,
                    "left {room}: you were its last member, so it is deleted"
                )?;
            } else {
                writeln!(out, "left {room}")?;
            }
        }
        RoomCommand::Del { room } => {
            c.room_del(&room).await?;
            writeln!(out, "deleted {}", show.text(&show_room(&room)))?;
        }
        RoomCommand::Kick { room, user } => {
            c.room_kick(&room, &user).await?;
            writeln!(
                out,
                "removed {} from {}",
                show.text(&user),
                show.text(&show_room(&room))
            )?;
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
                        show.text(&r.name),
                        show.text(&r.owner),
                        r.members
                    )?;
                }
            }
        }
        RoomCommand::Members { room, json } => {
            for m in c.room_members(&room).await? {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&m)?)?;
                } else if m.role == "owner" {
                    writeln!(out, "{} (owner)", show.text(&m.user))?;
                } else {
                    writeln!(out, "{}", show.text(&m.user))?;
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
    show: Show,
) -> Result<()> {
    if limit == 0 || limit > MAX_SEARCH_RESULTS {
        bail!(
            "--limit {limit} is out of range: a search returns 1 to {MAX_SEARCH_RESULTS} results"
        );
    }
    let (conn, _) = connect_saved(home).await?;
    let hits = conn.client.search(query, within, Some(limit)).await?;
    let mut out = std::io::stdout().lock();
    for hit in &hits {
        if json {
            writeln!(out, "{}", serde_json::to_string(hit)?)?;
        } else {
            let m = &hit.message;
            let snippet = hit.snippet.replace('\n', " ⏎ ");
            let snippet = m.shown_text(&snippet);
            let line = format!(
                "#{:<8} {} {} → {}: {snippet}",
                m.id,
                short_time(&m.sent_at),
                m.from,
                m.to
            );
            writeln!(out, "{}", show.text(&line))?;
        }
    }
    if hits.is_empty() && !json {
        eprintln!("(no matches)");
    }
    Ok(())
}

async fn read(home: &ChatHome, conversation: &str, upto: Option<i64>, show: Show) -> Result<()> {
    let (conn, _) = connect_saved(home).await?;
    let now = conn.client.read(conversation, upto).await?;
    println!("{} read up to #{now}", show.text(conversation));
    Ok(())
}

async fn unread(home: &ChatHome, json: bool, show: Show) -> Result<()> {
    let (conn, _) = connect_saved(home).await?;
    let list = conn.client.unread().await?;
    let mut out = std::io::stdout().lock();
    for u in &list {
        if json {
            writeln!(out, "{}", serde_json::to_string(u)?)?;
        } else {
            writeln!(out, "{}", show.text(&unread_line(u)))?;
        }
    }
    Ok(())
}

/// One conversation of `chat unread`: its name, the count, and its last message as `chat
/// recv` shows it (`bob: hi`, `* bob waves` for an action, the event for a membership
/// change).
fn unread_line(u: &crate::protocol::UnreadInfo) -> String {
    let last = u.last.as_ref().map_or(String::new(), |m| {
        let when = short_time(&m.sent_at);
        match m.event_text() {
            Some(event) => format!("  last: {when} {event}"),
            None => {
                let first = m.body.lines().next().unwrap_or("");
                if m.action {
                    format!("  last: {when} {}", m.shown_text(first))
                } else {
                    format!("  last: {when} {}: {first}", m.from)
                }
            }
        }
    });
    format!("{:<34} {:>5} unread{last}", u.conversation, u.unread)
}

/// "2026-11-24T08:15:02.123456Z" → "2026-11-24 08:15:02".
fn short_time(sent_at: &str) -> String {
    sent_at
        .chars()
        .take(19)
        .collect::<String>()
        .replace('T', " ")
}

/// How received text reaches standard output: exactly as received into a pipe or a file, and
/// made harmless on a terminal (control and bidi characters shown as `�`, see
/// [`crate::client::terminal`]). JSON output is never changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Show {
    terminal: bool,
}

impl Show {
    fn for_stdout() -> Show {
        Show {
            terminal: std::io::stdout().is_terminal(),
        }
    }

    /// `text` as it may be written to standard output.
    fn text(self, text: &str) -> Cow<'_, str> {
        if self.terminal {
            terminal_safe(text)
        } else {
            Cow::Borrowed(text)
        }
    }
}

fn print_message(m: &Message, json: bool, show: Show) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(m)?)?;
    } else {
        out.write_all(message_text(m, show).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// One message as `chat recv` and `chat history` print it: a header line with the first
/// line of the body, then the other lines indented; each line ends with a newline.
fn message_text(m: &Message, show: Show) -> String {
    let when = short_time(&m.sent_at);
    if let Some(event) = m.event_text() {
        let line = format!("[{when}] {}: {event}", m.to);
        return format!("{}\n", show.text(&line));
    }
    // A final newline (as `chat send < file` keeps) is not shown as an empty line.
    let body = m.body.strip_suffix('\n').unwrap_or(&m.body);
    let mut lines = body.split('\n');
    let first = lines.next().unwrap_or("");
    let first = m.shown_text(first);
    let mut text = format!("[{when}] {} → {}: {first}", m.from, m.to);
    for line in lines {
        text.push_str("\n    ");
        text.push_str(line);
    }
    text.push('\n');
    show.text(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(from: &str, body: &str) -> Message {
        Message {
            id: 7,
            from: from.into(),
            to: "bob".into(),
            body: body.into(),
            sent_at: "2026-11-24T08:15:02.123456Z".into(),
            kind: crate::protocol::MessageKind::Text,
            member: None,
            action: false,
        }
    }

    #[test]
    fn on_a_terminal_escape_sequences_are_shown_not_obeyed() {
        let m = message(
            "alice",
            "\u{1b}]0;owned\u{7}\u{1b}[2Jhi\r\n\tsecond \u{202e}line\n",
        );
        let shown = message_text(&m, Show { terminal: true });
        assert_eq!(
            shown,
            "[2026-11-24 08:15:02] alice → bob: \u{FFFD}]0;owned\u{FFFD}\u{FFFD}[2Jhi\u{FFFD}\n    \tsecond \u{FFFD}line\n"
        );
        // Into a pipe, the text is exactly what was sent.
        let piped = message_text(&m, Show { terminal: false });
        assert!(piped.contains("\u{1b}]0;owned\u{7}\u{1b}[2Jhi\r\n    \tsecond \u{202e}line"));
    }

    #[test]
    fn unread_shows_the_last_message_as_recv_does() {
        let unread = |last: Message| crate::protocol::UnreadInfo {
            conversation: "alice".into(),
            unread: 2,
            last: Some(last),
        };
        let text = unread_line(&unread(message("alice", "hi\nthere")));
        assert!(
            text.ends_with("2 unread  last: 2026-11-24 08:15:02 alice: hi"),
            "{text}"
        );
        let mut action = message("alice", "waves");
        action.action = true;
        let text = unread_line(&unread(action));
        assert!(
            text.ends_with("last: 2026-11-24 08:15:02 * alice waves"),
            "{text}"
        );
        let mut joined = message("alice", "");
        joined.kind = crate::protocol::MessageKind::Join;
        let text = unread_line(&unread(joined));
        assert!(
            text.ends_with("last: 2026-11-24 08:15:02 alice joined"),
            "{text}"
        );
    }

    #[test]
    fn names_are_made_safe_too() {
        let m = message("\u{1b}[31mmallory", "x");
        let shown = message_text(&m, Show { terminal: true });
        assert!(!shown.contains('\u{1b}'), "{shown:?}");
        assert_eq!(Show { terminal: true }.text("#ops\u{7}"), "#ops\u{FFFD}");
        assert_eq!(Show { terminal: false }.text("#ops\u{7}"), "#ops\u{7}");
    }
}
