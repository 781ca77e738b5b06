//! The connection task: turns [`Command`]s into requests and what the connection reports
//! into [`NetEvent`]s.
//!
//! Delivery is [`Inbox`]'s: it connects with the saved session, fetches unread counts,
//! subscribes, and on any loss reconnects with backoff; delivery resumes from the device's
//! cursor, so a message is never missed, and nothing already passed on (or shown by an
//! earlier run, `last_seen` in `session.json`) is passed on twice. Acknowledgement follows
//! display: the UI says what it has drawn ([`Command::Ack`]), and the inbox first records
//! it as `last_seen`, then moves the server cursor — never above what the connection can
//! vouch for.
//!
//! It never touches the terminal and never blocks on the UI: requests that wait for an
//! answer run as their own tasks.

use anyhow::Result;
use tokio::sync::mpsc;

use super::state::{Command, NetEvent};
use crate::client::inbox::{CommitError, Inbox, InboxEvent};
use crate::client::state::{ChatHome, SavedLogin};
use crate::client::{Client, ClientError};
use crate::protocol::ErrorCode;

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

/// Runs until the command channel closes (the UI quit; what was shown is then committed)
/// or the UI stops taking events. When the session turns out to be unusable it reports
/// [`NetEvent::Fatal`] and refuses commands until the UI quits.
pub async fn run(
    home: ChatHome,
    login: Login,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
) {
    let mut inbox = Inbox::new(home, login).with_unread();
    let mut net = Net {
        events,
        client: None,
    };
    loop {
        let up = tokio::select! {
            event = inbox.next() => net.report(event).await,
            command = commands.recv() => match command {
                None => {
                    let _ = inbox.flush().await;
                    return;
                }
                Some(Command::Ack { upto }) => {
                    inbox.show(upto);
                    true
                }
                Some(command) => net.carry_out(command).await,
            },
        };
        if !up {
            return;
        }
    }
}

/// The task's view of the UI and of the current connection.
struct Net {
    events: mpsc::Sender<NetEvent>,
    /// The subscribed connection's request handle, while there is one.
    client: Option<Client>,
}

impl Net {
    /// Sends an event to the UI; false once the UI is gone.
    async fn emit(&self, event: NetEvent) -> bool {
        self.events.send(event).await.is_ok()
    }

    /// Tells the UI what the inbox reported; false once the UI is gone.
    async fn report(&mut self, event: InboxEvent) -> bool {
        match event {
            InboxEvent::Connecting { attempt } => {
                self.client = None;
                self.emit(NetEvent::Connecting { attempt }).await
            }
            InboxEvent::Connected { client, unread } => {
                let max_body = client.welcome().max_body;
                self.client = Some(client);
                self.emit(NetEvent::Unread(unread.unwrap_or_default()))
                    .await
                    && self.emit(NetEvent::Connected { max_body }).await
            }
            InboxEvent::Message(m) => self.emit(NetEvent::Message(m)).await,
            InboxEvent::ReadMarker { conversation, upto } => {
                self.emit(NetEvent::ReadMarker { conversation, upto }).await
            }
            InboxEvent::CommitFailed(CommitError::Record(e)) => {
                self.emit(NetEvent::Notice(format!("cannot save the session: {e}")))
                    .await
            }
            InboxEvent::CommitFailed(CommitError::Ack(e)) => {
                self.emit(NetEvent::Notice(format!("acknowledging failed: {e}")))
                    .await
            }
            InboxEvent::Disconnected { error, retry_in } => {
                self.client = None;
                self.emit(NetEvent::Disconnected {
                    reason: error.to_string(),
                    retry_in,
                })
                .await
            }
            InboxEvent::Ended(error) => {
                self.client = None;
                let reason = match error.code() {
                    Some(ErrorCode::InvalidToken | ErrorCode::SessionRevoked) => {
                        "this device's session was revoked; quit and run chat login".to_string()
                    }
                    _ => error.to_string(),
                };
                self.emit(NetEvent::Fatal { reason }).await
            }
            InboxEvent::CaughtUp | InboxEvent::Idle => true,
        }
    }

    /// Starts a request on the connection, or refuses it while there is none; false once
    /// the UI is gone.
    async fn carry_out(&mut self, command: Command) -> bool {
        match &self.client {
            Some(client) => {
                tokio::spawn(request(client.clone(), command, self.events.clone()));
                true
            }
            None => self.refuse(command).await,
        }
    }

    /// Answers a command that cannot be carried out while disconnected.
    async fn refuse(&mut self, command: Command) -> bool {
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
            // Handled by the connection loop; the others need a connection.
            Command::Ack { .. } | Command::Read { .. } | Command::RefreshUnread => return true,
        };
        self.emit(event).await
    }
}

/// Carries out one request and reports the outcome.
async fn request(client: Client, command: Command, events: mpsc::Sender<NetEvent>) {
    let event = match command {
        Command::Send {
            key,
            to,
            body,
            action,
        } => match if action {
            client.send_action(&to, &body, &key).await
        } else {
            client.send(&to, &body, &key).await
        } {
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
