//! The connection task: owns the connection and turns [`Command`]s into requests and the
//! server's answers and pushes into [`NetEvent`]s.
//!
//! It connects with the saved session, fetches unread counts, subscribes, and on any loss
//! reconnects with exponential backoff; delivery resumes from the device's cursor, so a
//! message is never missed. Pushes at or below the highest id already passed on (or shown
//! by an earlier run, `last_seen` in `session.json`) are dropped, so none is shown twice.
//! Acknowledgement follows display: the UI says what it has drawn ([`Command::Ack`]), and
//! this task first records it as `last_seen`, then moves the server cursor — never above
//! what this connection can vouch for.
//!
//! It never touches the terminal and never blocks on the UI: requests that wait for an
//! answer run as their own tasks.

use std::time::Duration;

use anyhow::{anyhow, Result};
use tokio::sync::mpsc;

use super::state::{Command, NetEvent};
use crate::client::state::{ChatHome, SavedLogin};
use crate::client::{Client, ClientError, Connection, Event};
use crate::protocol::ErrorCode;

/// Keepalive period (the server drops connections idle for 120 s).
const PING_EVERY: Duration = Duration::from_secs(30);
/// First reconnect delay; doubles per failed attempt.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Messages per history page.
const PAGE: u32 = 50;
/// Results per search.
const SEARCH_LIMIT: u32 = 50;

/// What the task needs to connect: the saved session, where, and the pinned key.
pub type Login = SavedLogin;

/// Reads the saved session and its pin; fails (before any terminal change) when there is
/// no usable login.
pub fn load(home: &ChatHome) -> Result<Login> {
    Ok(home.saved_login()?)
}

/// Runs until the command channel closes (the UI quit) or the session turns out to be
/// unusable (then it reports [`NetEvent::Fatal`] and refuses commands until the UI quits).
pub async fn run(
    home: ChatHome,
    login: Login,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
) {
    let mut net = Net {
        home,
        seen: login.session.last_seen,
        session: login.session.clone(),
        events,
        want_ack: 0,
    };
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        if !net.emit(NetEvent::Connecting { attempt }).await {
            return;
        }
        let connect = connect(&login);
        tokio::pin!(connect);
        let connected = loop {
            tokio::select! {
                result = &mut connect => break result,
                command = commands.recv() => match command {
                    Some(command) => net.refuse(command).await,
                    None => return,
                },
            }
        };
        let failure = match connected {
            Ok(conn) => match net.serve(conn, &mut commands).await {
                Outcome::Quit => return,
                Outcome::Lost { error, was_up } => {
                    if was_up {
                        attempt = 0;
                    }
                    error
                }
            },
            Err(error) => error,
        };
        if is_fatal(&failure) {
            let reason = match failure.code() {
                Some(ErrorCode::InvalidToken | ErrorCode::SessionRevoked) => {
                    "this device's session was revoked; quit and run chat login".to_string()
                }
                _ => failure.to_string(),
            };
            net.emit(NetEvent::Fatal { reason }).await;
            while let Some(command) = commands.recv().await {
                net.refuse(command).await;
            }
            return;
        }
        let delay = backoff(attempt.max(1));
        if !net
            .emit(NetEvent::Disconnected {
                reason: failure.to_string(),
                retry_in: delay,
            })
            .await
        {
            return;
        }
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                command = commands.recv() => match command {
                    Some(command) => net.refuse(command).await,
                    None => return,
                },
            }
        }
    }
}

/// How a connection ended.
enum Outcome {
    /// The UI quit.
    Quit,
    /// The connection broke; `was_up` if it got as far as subscribing.
    Lost { error: ClientError, was_up: bool },
}

struct Net {
    home: ChatHome,
    /// Highest id passed to the UI (or shown by an earlier run).
    seen: i64,
    /// The login this task uses; `last_seen` is raised in the file only while it is saved.
    session: crate::client::state::SavedSession,
    events: mpsc::Sender<NetEvent>,
    /// Highest id the UI has displayed (or that was displayed before).
    want_ack: i64,
}

/// What one connection knows about delivery.
struct Delivery {
    /// The larger of the subscribe cursor and the highest id pushed here: what an ack may
    /// name.
    pushed: i64,
    /// The server cursor as last reported.
    acked: i64,
}

impl Net {
    /// Sends an event to the UI; false once the UI is gone.
    async fn emit(&self, event: NetEvent) -> bool {
        self.events.send(event).await.is_ok()
    }

    /// Answers a command that cannot be carried out while disconnected.
    async fn refuse(&mut self, command: Command) {
        let not_connected = "not connected".to_string();
        let event = match command {
            Command::Send { key, .. } => NetEvent::SendFailed {
                key,
                error: not_connected,
                transient: true,
            },
            Command::Open { conversation } | Command::History { conversation, .. } => {
                NetEvent::HistoryFailed {
                    conversation,
                    error: not_connected,
                }
            }
            Command::Search { query } => {
                self.emit(NetEvent::Notice(format!("cannot search: {not_connected}")))
                    .await;
                NetEvent::SearchResults {
                    query,
                    hits: Vec::new(),
                }
            }
            Command::Ack { upto } => {
                self.want_ack = self.want_ack.max(upto);
                return;
            }
            Command::Read { .. } | Command::RefreshUnread => return,
        };
        self.emit(event).await;
    }

    async fn serve(&mut self, conn: Connection, commands: &mut mpsc::Receiver<Command>) -> Outcome {
        let (client, mut pushes) = conn.split();
        let mut delivery = Delivery {
            pushed: 0,
            acked: 0,
        };
        // Fresh counts first, then delivery from the cursor: a message committed in between
        // is both in the backlog and newer than the counts, so it is counted exactly once.
        let start = async {
            let unread = client.unread().await?;
            let cursor = client.subscribe().await?;
            Ok::<_, ClientError>((unread, cursor))
        };
        let (unread, cursor) = match start.await {
            Ok(v) => v,
            Err(error) => {
                return Outcome::Lost {
                    error,
                    was_up: false,
                }
            }
        };
        delivery.pushed = cursor;
        delivery.acked = cursor;
        if !self.emit(NetEvent::Unread(unread)).await
            || !self
                .emit(NetEvent::Connected {
                    max_body: client.welcome().max_body,
                })
                .await
        {
            return Outcome::Quit;
        }
        let (broken_tx, mut broken) = mpsc::channel::<ClientError>(4);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        let lost = |error| Outcome::Lost {
            error,
            was_up: true,
        };
        loop {
            tokio::select! {
                push = pushes.recv() => match push {
                    Some(Event::Message(m)) => {
                        delivery.pushed = delivery.pushed.max(m.id);
                        if m.id > self.seen {
                            self.seen = m.id;
                            if !self.emit(NetEvent::Message(m)).await {
                                return Outcome::Quit;
                            }
                        } else {
                            // Shown before: counts as displayed.
                            self.want_ack = self.want_ack.max(m.id);
                        }
                    }
                    Some(Event::CaughtUp { .. }) => {
                        if let Err(error) = self.ack(&client, &mut delivery).await {
                            return lost(error);
                        }
                    }
                    Some(Event::ReadMarker { conversation, upto }) => {
                        if !self.emit(NetEvent::ReadMarker { conversation, upto }).await {
                            return Outcome::Quit;
                        }
                    }
                    Some(Event::Closed(reason)) => return lost(ClientError::Closed(reason)),
                    None => return lost(ClientError::Closed(None)),
                },
                command = commands.recv() => match command {
                    None => return Outcome::Quit,
                    Some(Command::Ack { upto }) => {
                        self.want_ack = self.want_ack.max(upto);
                        if let Err(error) = self.ack(&client, &mut delivery).await {
                            return lost(error);
                        }
                    }
                    Some(command) => {
                        tokio::spawn(request(client.clone(), command, self.events.clone()));
                    }
                },
                _ = ping.tick() => {
                    let client = client.clone();
                    let broken_tx = broken_tx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = client.ping().await {
                            let _ = broken_tx.send(e).await;
                        }
                    });
                }
                Some(error) = broken.recv() => return lost(error),
            }
        }
    }

    /// Records what was displayed as `last_seen`, then acknowledges it, as far as this
    /// connection can vouch for. A server refusal is reported, not fatal.
    async fn ack(&mut self, client: &Client, delivery: &mut Delivery) -> Result<(), ClientError> {
        let upto = self.want_ack.min(delivery.pushed);
        if upto <= delivery.acked {
            return Ok(());
        }
        let home = self.home.clone();
        let session = self.session.clone();
        // Raised under the session lock, never lowered: a concurrent `chat recv` (or a new
        // login) is not undone.
        let saved = tokio::task::spawn_blocking(move || home.raise_last_seen(&session, upto))
            .await
            .map_err(|e| anyhow!("{e}"))
            .and_then(|r| r.map_err(anyhow::Error::from));
        if let Err(e) = saved {
            // Without the record, an ack could make a crash lose the dedupe mark.
            self.emit(NetEvent::Notice(format!("cannot save the session: {e:#}")))
                .await;
            return Ok(());
        }
        match client.ack(upto).await {
            Ok(cursor) => {
                delivery.acked = cursor;
                Ok(())
            }
            Err(e) if e.is_transient() || matches!(e, ClientError::Closed(_)) => Err(e),
            Err(e) => {
                self.emit(NetEvent::Notice(format!("acknowledging failed: {e}")))
                    .await;
                delivery.acked = upto;
                Ok(())
            }
        }
    }
}

/// Carries out one request and reports the outcome.
async fn request(client: Client, command: Command, events: mpsc::Sender<NetEvent>) {
    let event = match command {
        Command::Send { key, to, body } => match client.send(&to, &body, &key).await {
            Ok(sent) => NetEvent::Sent {
                key,
                id: sent.id,
                sent_at: sent.sent_at,
            },
            Err(e) => NetEvent::SendFailed {
                key,
                error: e.to_string(),
                transient: e.is_transient() || matches!(e, ClientError::Closed(_)),
            },
        },
        Command::Open { conversation } => {
            let mut page = client
                .history_page(&conversation, None, None, Some(PAGE))
                .await;
            if conversation.starts_with('#')
                && matches!(
                    page.as_ref().err().and_then(ClientError::code),
                    Some(ErrorCode::NotMember)
                )
            {
                page = match client.room_join(&conversation).await {
                    Ok(_) => {
                        client
                            .history_page(&conversation, None, None, Some(PAGE))
                            .await
                    }
                    Err(e) => Err(e),
                };
            }
            history_event(conversation, None, page)
        }
        Command::History {
            conversation,
            before,
        } => {
            let page = client
                .history_page(&conversation, before, None, Some(PAGE))
                .await;
            history_event(conversation, before, page)
        }
        Command::Read { conversation, upto } => {
            match client.read(&conversation, Some(upto)).await {
                Ok(upto) => NetEvent::ReadMarker { conversation, upto },
                Err(e) => NetEvent::Notice(format!("marking {conversation} read: {e}")),
            }
        }
        Command::Search { query } => match client.search(&query, None, Some(SEARCH_LIMIT)).await {
            Ok(hits) => NetEvent::SearchResults { query, hits },
            Err(e) => {
                let _ = events.send(NetEvent::Notice(format!("search: {e}"))).await;
                NetEvent::SearchResults {
                    query,
                    hits: Vec::new(),
                }
            }
        },
        Command::RefreshUnread => match client.unread().await {
            Ok(list) => NetEvent::Unread(list),
            Err(e) => NetEvent::Notice(format!("unread counts: {e}")),
        },
        // Handled by the connection loop.
        Command::Ack { .. } => return,
    };
    let _ = events.send(event).await;
}

fn history_event(
    conversation: String,
    before: Option<i64>,
    page: Result<(Vec<crate::protocol::Message>, bool), ClientError>,
) -> NetEvent {
    match page {
        Ok((messages, more)) => NetEvent::History {
            conversation,
            before,
            messages,
            more,
        },
        Err(e) => NetEvent::HistoryFailed {
            conversation,
            error: e.to_string(),
        },
    }
}

/// Connects, says hello and authenticates with the saved token.
async fn connect(login: &Login) -> Result<Connection, ClientError> {
    let conn = Connection::connect(&login.addr, login.pin).await?;
    conn.client.auth(&login.session.token).await?;
    Ok(conn)
}

/// Errors that another attempt cannot fix: the key changed, or the session is gone.
fn is_fatal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::PinMismatch { .. } | ClientError::UnknownServer { .. }
    ) || matches!(
        e.code(),
        Some(ErrorCode::InvalidToken | ErrorCode::SessionRevoked | ErrorCode::AccountDisabled)
    )
}

/// The delay before attempt `attempt` (1-based): 0.5 s doubling to 30 s, plus up to a
/// quarter of it at random so many clients do not return in step.
fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let jitter = rand::random::<f64>() * 0.25;
    base.mul_f64(1.0 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let first = backoff(1);
        assert!(first >= BACKOFF_FIRST && first <= BACKOFF_FIRST.mul_f64(1.25));
        let fourth = backoff(4);
        assert!(fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(5));
        let late = backoff(40);
        assert!(late >= BACKOFF_MAX && late <= BACKOFF_MAX.mul_f64(1.25));
    }

    #[test]
    fn only_a_lost_session_or_key_is_fatal() {
        assert!(is_fatal(&ClientError::Closed(Some((
            ErrorCode::SessionRevoked,
            "revoked".into()
        )))));
        assert!(!is_fatal(&ClientError::Closed(None)));
        assert!(!is_fatal(&ClientError::Timeout("x")));
        assert!(!is_fatal(&ClientError::Closed(Some((
            ErrorCode::ShuttingDown,
            "bye".into()
        )))));
    }
}
