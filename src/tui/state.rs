//! The TUI as a plain state machine: no terminal, no sockets, no clock.
//!
//! [`App`] takes keys ([`App::handle_key`]), pasted text ([`App::handle_paste`]) and what
//! the connection task reports ([`App::handle_net`]), and answers with [`Command`]s for the
//! connection task. After each frame is drawn, [`App::after_draw`] learns how the message
//! view was laid out and decides what follows from the user having *seen* it: loading older
//! history at the top, moving the read marker, acknowledging delivery.
//!
//! Invariants kept here:
//! - a conversation holds each message once (a map by id), so re-delivery after a
//!   reconnect, a history page overlapping pushes, or a send answered twice never shows a
//!   message twice;
//! - an unread count never counts an id twice: it is the server's count at the last
//!   snapshot (up to the snapshot's newest id) plus the set of newer ids seen since;
//! - a send keeps its idempotency key from the first attempt to the last, so retrying
//!   after a lost connection or a failure can never store it twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::editor::Editor;
use crate::protocol::{Conversation as ConversationName, Message, MessageKind, SearchHit};
use crate::protocol::{UnreadInfo, DEFAULT_MAX_BODY_BYTES};

/// What the UI asks the connection task to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send `body` to `to` with idempotency key `key` (the same key on every retry); an
    /// action (`/me waves`) when `action`.
    Send {
        key: String,
        to: String,
        body: String,
        action: bool,
    },
    /// Open a conversation not in the list: its newest history page (joining a public room
    /// first if need be). Answered with [`NetEvent::History`] or [`NetEvent::HistoryFailed`].
    Open { conversation: String },
    /// One history page: the newest, or the one below `before`.
    History {
        conversation: String,
        before: Option<i64>,
    },
    /// Move the read marker.
    Read { conversation: String, upto: i64 },
    /// Full-text search.
    Search { query: String },
    /// Fetch fresh unread counts.
    RefreshUnread,
    /// Everything up to `upto` has been displayed: record it and acknowledge delivery.
    Ack { upto: i64 },
}

/// What the connection task reports.
#[derive(Debug, Clone, PartialEq)]
pub enum NetEvent {
    /// Trying to connect (attempt 1 is the first).
    Connecting { attempt: u32 },
    /// Connected, authenticated and subscribed.
    Connected { max_body: usize },
    /// The connection is down; the next attempt is in `retry_in`.
    Disconnected { reason: String, retry_in: Duration },
    /// The session cannot work any more (revoked, key changed); no more attempts.
    Fatal { reason: String },
    /// Unread counts per conversation, as the server has them now.
    Unread(Vec<UnreadInfo>),
    /// A pushed message (never one already pushed on this device).
    Message(Message),
    /// A history page for a conversation.
    History {
        conversation: String,
        before: Option<i64>,
        messages: Vec<Message>,
        more: bool,
    },
    /// A history page (or opening a conversation) failed.
    HistoryFailed { conversation: String, error: String },
    /// The server stored a send.
    Sent {
        key: String,
        id: i64,
        sent_at: String,
    },
    /// A send failed; `transient` ones are tried again on the next connection.
    SendFailed {
        key: String,
        error: String,
        transient: bool,
    },
    /// The read marker of a conversation is at `upto` (ours, or moved by another device).
    ReadMarker { conversation: String, upto: i64 },
    /// Search results.
    SearchResults { query: String, hits: Vec<SearchHit> },
    /// Something to tell the user (a request failed).
    Notice(String),
}

/// How the connection is doing, for the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnStatus {
    Connecting { attempt: u32 },
    Online,
    Offline { reason: String, retry_in_secs: u64 },
    Fatal { reason: String },
}

/// Where a send is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendStatus {
    /// Waiting for the server's `sent`.
    Pending,
    /// Refused or interrupted; `auto_retry` ones are resent on the next connection.
    Failed { error: String, auto_retry: bool },
}

/// A message typed here that the server has not confirmed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub key: String,
    pub to: String,
    pub body: String,
    /// An action (emote), typed as `/me waves`.
    pub action: bool,
    pub status: SendStatus,
}

/// One conversation: a user or a `#room`.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    /// Normalised: `bob`, `#ops`.
    pub name: String,
    /// Messages known here, by id (a contiguous newest range once history is loaded).
    pub messages: BTreeMap<i64, Message>,
    /// The newest id known, from messages or unread snapshots: the sort key.
    pub latest_id: i64,
    /// The newest history page has arrived.
    pub loaded: bool,
    /// A history request is on its way.
    pub loading: bool,
    /// The server has older messages than the oldest loaded.
    pub more_older: bool,
    /// Lines scrolled up from the bottom (0 = following new messages).
    pub scroll: usize,
    /// We left or were removed (rooms).
    pub left: bool,
    base_unread: u64,
    base_upto: i64,
    new_unread: BTreeSet<i64>,
    read_upto: i64,
}

impl Conversation {
    fn new(name: &str) -> Conversation {
        Conversation {
            name: name.to_string(),
            more_older: true,
            ..Conversation::default()
        }
    }

    /// Text messages from others above the read marker.
    pub fn unread(&self) -> u64 {
        let base = if self.read_upto >= self.base_upto {
            0
        } else {
            self.base_unread
        };
        base + self.new_unread.range(self.read_upto + 1..).count() as u64
    }

    /// True for `#rooms`.
    pub fn is_room(&self) -> bool {
        self.name.starts_with('#')
    }

    fn insert(&mut self, m: Message) {
        self.latest_id = self.latest_id.max(m.id);
        self.messages.insert(m.id, m);
    }
}

/// Which box, if any, is drawn over the main screen.
#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    None,
    Help,
    /// A one-line question.
    Prompt {
        kind: PromptKind,
        editor: Editor,
    },
    /// Search results (`hits` is `None` while the search runs).
    Search {
        query: String,
        hits: Option<Vec<SearchHit>>,
        selected: usize,
    },
}

/// What a prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    /// A user (new direct conversation) or `#room` (joined if need be).
    Open,
    Search,
}

/// How the message view was laid out in the last frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewInfo {
    /// Rows available for messages.
    pub height: usize,
    /// Rows the open conversation takes at this width.
    pub lines: usize,
}

/// The whole UI state.
#[derive(Debug, Clone)]
pub struct App {
    /// Our user name.
    pub me: String,
    /// `host:port`.
    pub server: String,
    /// Every conversation, unsorted; [`App::sorted`] orders them.
    pub conversations: Vec<Conversation>,
    /// The open conversation's name.
    pub open: Option<String>,
    /// The message being typed.
    pub input: Editor,
    pub overlay: Overlay,
    pub status: ConnStatus,
    /// One line for the status bar, cleared by the next key.
    pub notice: Option<String>,
    /// Sends not yet confirmed, oldest first.
    pub outbox: Vec<OutgoingMessage>,
    /// Largest body the server takes.
    pub max_body: usize,
    /// Set by Ctrl-L: the terminal should be cleared and redrawn in full.
    pub redraw_all: bool,
    /// Set by quit keys.
    pub quit: bool,
    /// What the times shown are in (`UTC`, or a local offset).
    pub zone_label: String,
    /// Offset applied to the server's UTC times.
    pub utc_offset: time::UtcOffset,
    highest_seen: i64,
    ack_sent: i64,
    view: ViewInfo,
    opening: Option<String>,
}

impl App {
    /// A fresh state for user `me` on `server`, showing times in UTC.
    pub fn new(me: &str, server: &str) -> App {
        App {
            me: me.to_string(),
            server: server.to_string(),
            conversations: Vec::new(),
            open: None,
            input: Editor::default(),
            overlay: Overlay::None,
            status: ConnStatus::Connecting { attempt: 1 },
            notice: None,
            outbox: Vec::new(),
            max_body: DEFAULT_MAX_BODY_BYTES,
            redraw_all: false,
            quit: false,
            zone_label: "UTC".into(),
            utc_offset: time::UtcOffset::UTC,
            highest_seen: 0,
            ack_sent: 0,
            view: ViewInfo::default(),
            opening: None,
        }
    }

    /// Conversation names, most recent activity first (ties by name).
    pub fn sorted(&self) -> Vec<&Conversation> {
        let mut list: Vec<&Conversation> = self.conversations.iter().collect();
        list.sort_by(|a, b| b.latest_id.cmp(&a.latest_id).then(a.name.cmp(&b.name)));
        list
    }

    /// A conversation by name.
    pub fn conversation(&self, name: &str) -> Option<&Conversation> {
        self.conversations.iter().find(|c| c.name == name)
    }

    /// The open conversation.
    pub fn current(&self) -> Option<&Conversation> {
        self.open.as_deref().and_then(|n| self.conversation(n))
    }

    /// Unconfirmed sends to `conversation`, oldest first.
    pub fn outgoing_to<'a>(
        &'a self,
        conversation: &'a str,
    ) -> impl Iterator<Item = &'a OutgoingMessage> + 'a {
        self.outbox.iter().filter(move |o| o.to == conversation)
    }

    /// True while the connection is up.
    pub fn online(&self) -> bool {
        self.status == ConnStatus::Online
    }

    /// Handles a key press.
    pub fn handle_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        self.notice = None;
        match key.code {
            KeyCode::Char('c' | 'q') if ctrl => {
                self.quit = true;
                return Vec::new();
            }
            KeyCode::F(1) => {
                self.overlay = match self.overlay {
                    Overlay::Help => Overlay::None,
                    _ => Overlay::Help,
                };
                return Vec::new();
            }
            KeyCode::Char('l') if ctrl => {
                self.redraw_all = true;
                return Vec::new();
            }
            _ => {}
        }
        match std::mem::replace(&mut self.overlay, Overlay::None) {
            Overlay::None => self.key_in_main(key, ctrl, alt),
            // Any key closes help.
            Overlay::Help => Vec::new(),
            Overlay::Prompt { kind, mut editor } => match key.code {
                KeyCode::Esc => Vec::new(),
                KeyCode::Enter => self.submit_prompt(kind, editor.take()),
                _ => {
                    edit_key(&mut editor, key, ctrl, alt);
                    self.overlay = Overlay::Prompt { kind, editor };
                    Vec::new()
                }
            },
            Overlay::Search {
                query,
                hits,
                mut selected,
            } => {
                let count = hits.as_ref().map_or(0, Vec::len);
                match key.code {
                    KeyCode::Esc => return Vec::new(),
                    KeyCode::Char('f') if ctrl => return self.start_prompt(PromptKind::Search),
                    KeyCode::Up => selected = selected.saturating_sub(1),
                    KeyCode::Down if selected + 1 < count => selected += 1,
                    KeyCode::Enter => {
                        let hit = hits.as_ref().and_then(|h| h.get(selected));
                        if let Some(hit) = hit {
                            let name = conversation_of(&hit.message, &self.me);
                            return self.open_named(&name);
                        }
                        return Vec::new();
                    }
                    _ => {}
                }
                self.overlay = Overlay::Search {
                    query,
                    hits,
                    selected,
                };
                Vec::new()
            }
        }
    }

    /// Handles pasted text: newlines are kept (bracketed paste).
    pub fn handle_paste(&mut self, text: &str) {
        match &mut self.overlay {
            Overlay::None => self.input.insert_str(text),
            Overlay::Prompt { editor, .. } => {
                editor.insert_str(&text.replace(['\r', '\n'], " "));
            }
            _ => {}
        }
    }

    /// Handles a report from the connection task.
    pub fn handle_net(&mut self, event: NetEvent) -> Vec<Command> {
        let mut out = Vec::new();
        match event {
            NetEvent::Connecting { attempt } => self.status = ConnStatus::Connecting { attempt },
            NetEvent::Connected { max_body } => {
                self.status = ConnStatus::Online;
                self.max_body = max_body;
                // Delivery restarts from the device's cursor, so acknowledge again.
                self.ack_sent = 0;
                for o in &mut self.outbox {
                    let resend = match &o.status {
                        SendStatus::Pending => true,
                        SendStatus::Failed { auto_retry, .. } => *auto_retry,
                    };
                    if resend {
                        o.status = SendStatus::Pending;
                        out.push(Command::Send {
                            key: o.key.clone(),
                            to: o.to.clone(),
                            body: o.body.clone(),
                            action: o.action,
                        });
                    }
                }
                for c in &mut self.conversations {
                    c.loading = false;
                }
                if let Some(open) = self.open.clone() {
                    out.extend(self.load_if_needed(&open));
                }
            }
            NetEvent::Disconnected { reason, retry_in } => {
                self.status = ConnStatus::Offline {
                    reason,
                    retry_in_secs: retry_in.as_secs_f64().ceil() as u64,
                };
            }
            NetEvent::Fatal { reason } => self.status = ConnStatus::Fatal { reason },
            NetEvent::Unread(list) => {
                for info in list {
                    let c = self.conversation_mut(&info.conversation);
                    c.base_unread = info.unread;
                    c.base_upto = info.last.as_ref().map_or(0, |m| m.id);
                    let upto = c.base_upto;
                    c.new_unread.retain(|&id| id > upto);
                    c.latest_id = c.latest_id.max(upto);
                }
                out.extend(self.open_something());
            }
            NetEvent::Message(m) => {
                self.highest_seen = self.highest_seen.max(m.id);
                let name = conversation_of(&m, &self.me);
                let me = self.me.clone();
                let c = self.conversation_mut(&name);
                if m.kind == MessageKind::Text && m.from != me && m.id > c.base_upto {
                    c.new_unread.insert(m.id);
                }
                let gone = match m.kind {
                    MessageKind::Leave => m.from == me,
                    MessageKind::Kick => m.member.as_deref() == Some(me.as_str()),
                    MessageKind::Join | MessageKind::Create => m.from == me,
                    MessageKind::Invite => m.member.as_deref() == Some(me.as_str()),
                    MessageKind::Delete => true,
                    MessageKind::Text => false,
                };
                if gone {
                    c.left = matches!(
                        m.kind,
                        MessageKind::Leave | MessageKind::Kick | MessageKind::Delete
                    );
                }
                c.insert(m);
                out.extend(self.open_something());
            }
            NetEvent::History {
                conversation,
                before,
                messages,
                more,
            } => {
                let c = self.conversation_mut(&conversation);
                c.loading = false;
                c.more_older = more;
                if before.is_none() {
                    c.loaded = true;
                }
                for m in messages {
                    c.insert(m);
                }
                if self.opening.as_deref() == Some(conversation.as_str()) {
                    self.opening = None;
                    self.select(&conversation);
                }
            }
            NetEvent::HistoryFailed {
                conversation,
                error,
            } => {
                if let Some(c) = self
                    .conversations
                    .iter_mut()
                    .find(|c| c.name == conversation)
                {
                    c.loading = false;
                }
                if self.opening.as_deref() == Some(conversation.as_str()) {
                    self.opening = None;
                }
                self.notice = Some(format!("{conversation}: {error}"));
            }
            NetEvent::Sent { key, id, sent_at } => {
                if let Some(i) = self.outbox.iter().position(|o| o.key == key) {
                    let o = self.outbox.remove(i);
                    let me = self.me.clone();
                    let c = self.conversation_mut(&o.to);
                    // Sending marked the conversation read up to this message on the server
                    // (and on this user's other devices); so here too.
                    c.read_upto = c.read_upto.max(id);
                    c.insert(Message {
                        id,
                        from: me,
                        to: o.to.clone(),
                        body: o.body,
                        sent_at,
                        kind: MessageKind::Text,
                        member: None,
                        action: o.action,
                    });
                }
            }
            NetEvent::SendFailed {
                key,
                error,
                transient,
            } => {
                if let Some(o) = self.outbox.iter_mut().find(|o| o.key == key) {
                    o.status = SendStatus::Failed {
                        error,
                        auto_retry: transient,
                    };
                }
            }
            NetEvent::ReadMarker { conversation, upto } => {
                let c = self.conversation_mut(&conversation);
                c.read_upto = c.read_upto.max(upto);
                if c.read_upto < c.base_upto && c.base_unread > 0 {
                    // Part of the snapshot's count is now read; only the server knows how
                    // much.
                    out.push(Command::RefreshUnread);
                }
            }
            NetEvent::SearchResults { query, hits } => {
                if let Overlay::Search { query: q, .. } = &self.overlay {
                    if *q == query {
                        self.overlay = Overlay::Search {
                            query,
                            hits: Some(hits),
                            selected: 0,
                        };
                    }
                }
            }
            NetEvent::Notice(text) => self.notice = Some(text),
        }
        out
    }

    /// Called after every drawn frame with the message view's layout: clamps the scroll,
    /// loads older history when its top is on screen, marks what is on screen as read, and
    /// acknowledges what has been displayed.
    pub fn after_draw(&mut self, view: ViewInfo) -> Vec<Command> {
        self.view = view;
        let mut out = Vec::new();
        let online = self.online();
        let open = self.open.clone();
        if let Some(c) = open.and_then(|n| self.conversations.iter_mut().find(|c| c.name == n)) {
            let max_scroll = view.lines.saturating_sub(view.height);
            c.scroll = c.scroll.min(max_scroll);
            if online && c.loaded && c.more_older && !c.loading && c.scroll >= max_scroll {
                if let Some(&oldest) = c.messages.keys().next() {
                    c.loading = true;
                    out.push(Command::History {
                        conversation: c.name.clone(),
                        before: Some(oldest),
                    });
                }
            }
            if online && c.scroll == 0 && c.unread() > 0 {
                c.read_upto = c.latest_id;
                out.push(Command::Read {
                    conversation: c.name.clone(),
                    upto: c.latest_id,
                });
            }
        }
        if online && self.highest_seen > self.ack_sent {
            self.ack_sent = self.highest_seen;
            out.push(Command::Ack {
                upto: self.highest_seen,
            });
        }
        out
    }

    fn key_in_main(&mut self, key: KeyEvent, ctrl: bool, alt: bool) -> Vec<Command> {
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        match key.code {
            KeyCode::Enter if alt || shift => self.input.insert_char('\n'),
            KeyCode::Char('j') if ctrl => self.input.insert_char('\n'),
            KeyCode::Enter => return self.send_input(),
            KeyCode::Char('?') if self.input.is_empty() => self.overlay = Overlay::Help,
            KeyCode::Char('d') if ctrl && self.input.is_empty() => self.quit = true,
            KeyCode::Char('n') if ctrl => return self.switch(1),
            KeyCode::Char('p') if ctrl => return self.switch(-1),
            KeyCode::Tab => return self.switch(1),
            KeyCode::BackTab => return self.switch(-1),
            KeyCode::Down if alt => return self.switch(1),
            KeyCode::Up if alt => return self.switch(-1),
            KeyCode::Char(d @ '1'..='9') if alt => {
                let i = d as usize - '1' as usize;
                let name = self.sorted().get(i).map(|c| c.name.clone());
                if let Some(name) = name {
                    return self.select(&name);
                }
            }
            KeyCode::Char('o') if ctrl => return self.start_prompt(PromptKind::Open),
            KeyCode::Char('f') if ctrl => return self.start_prompt(PromptKind::Search),
            KeyCode::Char('r') if alt => return self.mark_read(),
            KeyCode::Char('r') if ctrl => return self.retry_failed(),
            KeyCode::PageUp => self.scroll_by(self.page() as isize),
            KeyCode::PageDown => self.scroll_by(-(self.page() as isize)),
            KeyCode::Up if shift => self.scroll_by(1),
            KeyCode::Down if shift => self.scroll_by(-1),
            KeyCode::Up if self.input.up() => {}
            KeyCode::Down if self.input.down() => {}
            KeyCode::Up => self.scroll_by(1),
            KeyCode::Down => self.scroll_by(-1),
            KeyCode::End if ctrl => self.scroll_by(isize::MIN),
            KeyCode::Esc => {
                self.scroll_by(isize::MIN);
            }
            _ => edit_key(&mut self.input, key, ctrl, alt),
        }
        Vec::new()
    }

    fn send_input(&mut self) -> Vec<Command> {
        if self.input.text().trim().is_empty() {
            return Vec::new();
        }
        let Some(to) = self.open.clone() else {
            self.notice = Some("no conversation open: Ctrl-O opens one".into());
            return Vec::new();
        };
        if self.input.text().len() > self.max_body {
            self.notice = Some(format!(
                "the message is {} bytes; the server takes at most {}",
                self.input.text().len(),
                self.max_body
            ));
            return Vec::new();
        }
        let (body, action) = match as_action(self.input.text()) {
            Some(text) if text.trim().is_empty() => return Vec::new(),
            Some(text) => {
                let text = text.to_string();
                self.input.take();
                (text, true)
            }
            None => (self.input.take(), false),
        };
        let key = crate::client::new_send_key();
        self.outbox.push(OutgoingMessage {
            key: key.clone(),
            to: to.clone(),
            body: body.clone(),
            action,
            status: SendStatus::Pending,
        });
        self.scroll_by(isize::MIN);
        if self.online() {
            vec![Command::Send {
                key,
                to,
                body,
                action,
            }]
        } else {
            // Sent when the connection is back (see `NetEvent::Connected`).
            Vec::new()
        }
    }

    fn retry_failed(&mut self) -> Vec<Command> {
        let Some(open) = self.open.clone() else {
            return Vec::new();
        };
        let online = self.online();
        let mut out = Vec::new();
        for o in self.outbox.iter_mut().filter(|o| o.to == open) {
            if matches!(o.status, SendStatus::Failed { .. }) {
                o.status = SendStatus::Pending;
                if online {
                    out.push(Command::Send {
                        key: o.key.clone(),
                        to: o.to.clone(),
                        body: o.body.clone(),
                        action: o.action,
                    });
                }
            }
        }
        if out.is_empty() && online {
            self.notice = Some("no failed message to retry here".into());
        }
        out
    }

    fn mark_read(&mut self) -> Vec<Command> {
        let Some(c) = self
            .open
            .clone()
            .and_then(|n| self.conversations.iter_mut().find(|c| c.name == n))
        else {
            return Vec::new();
        };
        c.read_upto = c.read_upto.max(c.latest_id);
        c.new_unread.clear();
        c.base_unread = 0;
        vec![Command::Read {
            conversation: c.name.clone(),
            upto: c.latest_id,
        }]
    }

    fn start_prompt(&mut self, kind: PromptKind) -> Vec<Command> {
        self.overlay = Overlay::Prompt {
            kind,
            editor: Editor::default(),
        };
        Vec::new()
    }

    fn submit_prompt(&mut self, kind: PromptKind, text: String) -> Vec<Command> {
        let text = text.trim().to_string();
        if text.is_empty() {
            return Vec::new();
        }
        match kind {
            PromptKind::Open => match ConversationName::parse(&text) {
                Ok(name) => self.open_named(&name.to_string()),
                Err(e) => {
                    self.notice = Some(format!("{text}: {e}"));
                    Vec::new()
                }
            },
            PromptKind::Search => {
                self.overlay = Overlay::Search {
                    query: text.clone(),
                    hits: None,
                    selected: 0,
                };
                vec![Command::Search { query: text }]
            }
        }
    }

    /// Opens a conversation by its normalised name: selects it if known, else asks the
    /// server for it (which creates a direct conversation or joins a public room).
    fn open_named(&mut self, name: &str) -> Vec<Command> {
        if self.conversation(name).is_some_and(|c| !c.left) {
            return self.select(name);
        }
        self.opening = Some(name.to_string());
        self.notice = Some(format!("opening {name}…"));
        vec![Command::Open {
            conversation: name.to_string(),
        }]
    }

    fn select(&mut self, name: &str) -> Vec<Command> {
        self.open = Some(name.to_string());
        self.load_if_needed(name)
    }

    fn load_if_needed(&mut self, name: &str) -> Vec<Command> {
        let online = self.online();
        match self.conversations.iter_mut().find(|c| c.name == name) {
            Some(c) if online && !c.loaded && !c.loading && !c.left => {
                c.loading = true;
                vec![Command::History {
                    conversation: c.name.clone(),
                    before: None,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// With nothing open, opens the most recent conversation.
    fn open_something(&mut self) -> Vec<Command> {
        if self.open.is_some() {
            return Vec::new();
        }
        match self.sorted().first().map(|c| c.name.clone()) {
            Some(name) => self.select(&name),
            None => Vec::new(),
        }
    }

    fn switch(&mut self, step: isize) -> Vec<Command> {
        let names: Vec<String> = self.sorted().iter().map(|c| c.name.clone()).collect();
        if names.is_empty() {
            return Vec::new();
        }
        let at = self
            .open
            .as_ref()
            .and_then(|o| names.iter().position(|n| n == o));
        let next = match at {
            Some(i) => (i as isize + step).rem_euclid(names.len() as isize) as usize,
            None => 0,
        };
        self.select(&names[next].clone())
    }

    fn page(&self) -> usize {
        self.view.height.saturating_sub(2).max(1)
    }

    /// Scrolls the open conversation up by `lines` (negative: down); clamped in
    /// [`App::after_draw`].
    fn scroll_by(&mut self, lines: isize) {
        let open = self.open.clone();
        if let Some(c) = open.and_then(|n| self.conversations.iter_mut().find(|c| c.name == n)) {
            c.scroll = c.scroll.saturating_add_signed(lines);
        }
    }

    fn conversation_mut(&mut self, name: &str) -> &mut Conversation {
        let i = match self.conversations.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                self.conversations.push(Conversation::new(name));
                self.conversations.len() - 1
            }
        };
        &mut self.conversations[i]
    }
}

/// The conversation a message belongs to, seen by `me`: the room, or the other user
/// (`me` for notes to self).
pub fn conversation_of(m: &Message, me: &str) -> String {
    if m.to.starts_with('#') || m.from == me {
        m.to.clone()
    } else {
        m.from.clone()
    }
}

/// The editing keys shared by the message input and prompts.
fn edit_key(editor: &mut Editor, key: KeyEvent, ctrl: bool, alt: bool) {
    match key.code {
        KeyCode::Char('a') if ctrl => editor.home(),
        KeyCode::Char('e') if ctrl => editor.end(),
        KeyCode::Char('b') if ctrl => editor.left(),
        KeyCode::Char('f') if ctrl => editor.right(),
        KeyCode::Char('u') if ctrl => editor.kill_to_line_start(),
        KeyCode::Char('k') if ctrl => editor.kill_to_line_end(),
        KeyCode::Char('w') if ctrl => editor.delete_word_back(),
        KeyCode::Char('h') if ctrl => editor.backspace(),
        KeyCode::Char('b') if alt => editor.word_left(),
        KeyCode::Char('f') if alt => editor.word_right(),
        KeyCode::Char(c) if !ctrl && !alt => editor.insert_char(c),
        KeyCode::Backspace if alt || ctrl => editor.delete_word_back(),
        KeyCode::Backspace => editor.backspace(),
        KeyCode::Delete => editor.delete(),
        KeyCode::Left if ctrl || alt => editor.word_left(),
        KeyCode::Right if ctrl || alt => editor.word_right(),
        KeyCode::Left => editor.left(),
        KeyCode::Right => editor.right(),
        KeyCode::Home => editor.home(),
        KeyCode::End => editor.end(),
        _ => {}
    }
}

/// `HH:MM` and the date (`YYYY-MM-DD`) of a server timestamp at `offset`; the raw text
/// cut up when it does not parse.
pub fn local_time(sent_at: &str, offset: time::UtcOffset) -> (String, String) {
    use time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(sent_at, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(offset);
            (
                format!("{:02}:{:02}", t.hour(), t.minute()),
                format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
            )
        }
        Err(_) => (
            sent_at.get(11..16).unwrap_or("--:--").to_string(),
            sent_at.get(..10).unwrap_or("????-??-??").to_string(),
        ),
    }
}

/// The text of an action typed as `/me waves` (IRC's convention), or `None` for a message.
fn as_action(input: &str) -> Option<&str> {
    if input == "/me" {
        return Some("");
    }
    input.strip_prefix("/me ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn alt(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::ALT)
    }

    fn type_text(app: &mut App, text: &str) {
        for c in text.chars() {
            app.handle_key(key(KeyCode::Char(c)));
        }
    }

    fn msg(id: i64, from: &str, to: &str, body: &str) -> Message {
        Message {
            id,
            from: from.into(),
            to: to.into(),
            body: body.into(),
            sent_at: format!("2026-11-24T08:{:02}:00.000000Z", id % 60),
            kind: MessageKind::Text,
            member: None,
            action: false,
        }
    }

    fn unread_info(conversation: &str, unread: u64, last: Option<Message>) -> UnreadInfo {
        UnreadInfo {
            conversation: conversation.into(),
            unread,
            last,
        }
    }

    /// An app that is connected and has drawn once with a roomy view.
    fn online_app() -> App {
        let mut app = App::new("alice", "h:1");
        app.handle_net(NetEvent::Connected { max_body: 100 });
        app.after_draw(ViewInfo {
            height: 20,
            lines: 0,
        });
        app
    }

    fn view() -> ViewInfo {
        ViewInfo {
            height: 20,
            lines: 5,
        }
    }

    #[test]
    fn conversations_sort_by_last_activity_and_count_unread_once() {
        let mut app = online_app();
        let cmds = app.handle_net(NetEvent::Unread(vec![
            unread_info("bob", 2, Some(msg(7, "bob", "alice", "x"))),
            unread_info("#ops", 0, Some(msg(9, "carol", "#ops", "y"))),
        ]));
        let names: Vec<_> = app.sorted().iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["#ops", "bob"]);
        // Nothing was open: the most recent conversation opens and loads.
        assert_eq!(app.open.as_deref(), Some("#ops"));
        assert_eq!(
            cmds,
            [Command::History {
                conversation: "#ops".into(),
                before: None
            }]
        );
        // The backlog re-delivers message 7 (already counted) and a new one, twice.
        app.handle_net(NetEvent::Message(msg(7, "bob", "alice", "x")));
        app.handle_net(NetEvent::Message(msg(11, "bob", "alice", "new")));
        app.handle_net(NetEvent::Message(msg(11, "bob", "alice", "new")));
        let bob = app.conversation("bob").unwrap();
        assert_eq!(bob.unread(), 3);
        assert_eq!(bob.messages.len(), 2);
        let names: Vec<_> = app.sorted().iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["bob", "#ops"]);
        // Our own messages from another device never count as unread.
        app.handle_net(NetEvent::Message(msg(12, "alice", "bob", "mine")));
        assert_eq!(app.conversation("bob").unwrap().unread(), 3);
    }

    #[test]
    fn opening_and_following_a_conversation_marks_it_read_and_acks_after_display() {
        let mut app = online_app();
        app.handle_net(NetEvent::Message(msg(5, "bob", "alice", "hi")));
        assert_eq!(app.open.as_deref(), Some("bob"));
        assert_eq!(app.conversation("bob").unwrap().unread(), 1);
        let cmds = app.after_draw(view());
        assert!(cmds.contains(&Command::Read {
            conversation: "bob".into(),
            upto: 5
        }));
        assert!(cmds.contains(&Command::Ack { upto: 5 }));
        assert_eq!(app.conversation("bob").unwrap().unread(), 0);
        // Nothing new: nothing to do.
        assert!(app.after_draw(view()).is_empty());
        // A message in another conversation is acked but stays unread.
        app.handle_net(NetEvent::Message(msg(6, "carol", "alice", "yo")));
        assert_eq!(app.after_draw(view()), [Command::Ack { upto: 6 }]);
        assert_eq!(app.conversation("carol").unwrap().unread(), 1);
        // Another device read carol's conversation.
        app.handle_net(NetEvent::ReadMarker {
            conversation: "carol".into(),
            upto: 6,
        });
        assert_eq!(app.conversation("carol").unwrap().unread(), 0);
    }

    #[test]
    fn a_partial_read_marker_asks_the_server_for_counts() {
        let mut app = online_app();
        app.handle_net(NetEvent::Unread(vec![unread_info(
            "bob",
            4,
            Some(msg(20, "bob", "alice", "x")),
        )]));
        app.handle_key(alt(KeyCode::Down)); // stays on bob: the only one
        let cmds = app.handle_net(NetEvent::ReadMarker {
            conversation: "bob".into(),
            upto: 18,
        });
        assert_eq!(cmds, [Command::RefreshUnread]);
        app.handle_net(NetEvent::Unread(vec![unread_info(
            "bob",
            1,
            Some(msg(20, "bob", "alice", "x")),
        )]));
        assert_eq!(app.conversation("bob").unwrap().unread(), 1);
    }

    #[test]
    fn replying_marks_the_conversation_read() {
        let mut app = online_app();
        app.handle_net(NetEvent::Message(msg(5, "bob", "alice", "hi")));
        assert_eq!(app.conversation("bob").unwrap().unread(), 1);
        type_text(&mut app, "hello");
        let cmds = app.handle_key(key(KeyCode::Enter));
        let [Command::Send { key: k, .. }] = cmds.as_slice() else {
            panic!("expected one send, got {cmds:?}");
        };
        app.handle_net(NetEvent::Sent {
            key: k.clone(),
            id: 8,
            sent_at: "2026-11-24T09:00:00.000000Z".into(),
        });
        assert_eq!(app.conversation("bob").unwrap().unread(), 0);
    }

    #[test]
    fn slash_me_sends_an_action() {
        let mut app = online_app();
        app.handle_net(NetEvent::Message(msg(5, "bob", "alice", "hi")));
        type_text(&mut app, "/me waves");
        let cmds = app.handle_key(key(KeyCode::Enter));
        let [Command::Send {
            key: k,
            body,
            action: true,
            ..
        }] = cmds.as_slice()
        else {
            panic!("expected one action, got {cmds:?}");
        };
        assert_eq!(body, "waves");
        assert!(app.outbox[0].action);
        app.handle_net(NetEvent::Sent {
            key: k.clone(),
            id: 9,
            sent_at: "2026-11-24T09:00:00.000000Z".into(),
        });
        let sent = &app.conversation("bob").unwrap().messages[&9];
        assert!(sent.action && sent.body == "waves", "{sent:?}");
        // `/me` with nothing after it sends nothing; a word that starts with it is text.
        type_text(&mut app, "/me ");
        assert!(app.handle_key(key(KeyCode::Enter)).is_empty());
        app.input.take();
        type_text(&mut app, "/meanwhile");
        let cmds = app.handle_key(key(KeyCode::Enter));
        assert!(
            matches!(cmds.as_slice(), [Command::Send { action: false, body, .. }] if body == "/meanwhile"),
            "{cmds:?}"
        );
    }

    #[test]
    fn enter_sends_alt_enter_adds_a_line_and_sent_replaces_pending() {
        let mut app = online_app();
        app.handle_net(NetEvent::Message(msg(5, "bob", "alice", "hi")));
        type_text(&mut app, "line one");
        assert!(app.handle_key(alt(KeyCode::Enter)).is_empty());
        assert!(app
            .handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::SHIFT))
            .is_empty());
        app.handle_key(key(KeyCode::Backspace));
        type_text(&mut app, "line two");
        assert_eq!(app.input.text(), "line one\nline two");
        let cmds = app.handle_key(key(KeyCode::Enter));
        let [Command::Send {
            key: k,
            to,
            body,
            action: false,
        }] = cmds.as_slice()
        else {
            panic!("expected one send, got {cmds:?}");
        };
        assert_eq!((to.as_str(), body.as_str()), ("bob", "line one\nline two"));
        assert!(app.input.is_empty());
        assert_eq!(app.outbox[0].status, SendStatus::Pending);
        app.handle_net(NetEvent::Sent {
            key: k.clone(),
            id: 8,
            sent_at: "2026-11-24T09:00:00.000000Z".into(),
        });
        assert!(app.outbox.is_empty());
        let bob = app.conversation("bob").unwrap();
        assert_eq!(bob.messages[&8].body, "line one\nline two");
        assert_eq!(bob.messages[&8].from, "alice");
        // A duplicate answer changes nothing.
        app.handle_net(NetEvent::Sent {
            key: k.clone(),
            id: 8,
            sent_at: "x".into(),
        });
        assert_eq!(app.conversation("bob").unwrap().messages.len(), 2);
    }

    #[test]
    fn failed_sends_stay_visible_and_retry_with_the_same_key() {
        let mut app = online_app();
        app.handle_net(NetEvent::Message(msg(5, "bob", "alice", "hi")));
        type_text(&mut app, "hello");
        let cmds = app.handle_key(key(KeyCode::Enter));
        let Command::Send { key: first, .. } = &cmds[0] else {
            panic!()
        };
        app.handle_net(NetEvent::SendFailed {
            key: first.clone(),
            error: "slow down (rate_limited)".into(),
            transient: false,
        });
        assert!(matches!(
            &app.outbox[0].status,
            SendStatus::Failed { error, auto_retry: false } if error.contains("rate_limited")
        ));
        // Reconnecting does not resend a refused message; Ctrl-R does, with the same key.
        let cmds = app.handle_net(NetEvent::Connected { max_body: 100 });
        assert!(!cmds.iter().any(|c| matches!(c, Command::Send { .. })));
        let cmds = app.handle_key(ctrl('r'));
        assert_eq!(
            cmds,
            [Command::Send {
                key: first.clone(),
                to: "bob".into(),
                body: "hello".into(),
                action: false,
            }]
        );
        assert_eq!(app.outbox[0].status, SendStatus::Pending);
    }

    #[test]
    fn sends_survive_a_lost_connection_and_resume_with_the_same_key() {
        let mut app = online_app();
        app.handle_net(NetEvent::Message(msg(5, "bob", "alice", "hi")));
        app.after_draw(view());
        type_text(&mut app, "one");
        let cmds = app.handle_key(key(KeyCode::Enter));
        let Command::Send { key: k1, .. } = &cmds[0] else {
            panic!()
        };
        app.handle_net(NetEvent::SendFailed {
            key: k1.clone(),
            error: "the server closed the connection".into(),
            transient: true,
        });
        app.handle_net(NetEvent::Disconnected {
            reason: "closed".into(),
            retry_in: Duration::from_millis(1500),
        });
        assert_eq!(
            app.status,
            ConnStatus::Offline {
                reason: "closed".into(),
                retry_in_secs: 2
            }
        );
        // Typed while offline: queued, not sent.
        type_text(&mut app, "two");
        assert!(app.handle_key(key(KeyCode::Enter)).is_empty());
        assert!(app.after_draw(view()).is_empty(), "no acks while offline");
        let cmds = app.handle_net(NetEvent::Connected { max_body: 100 });
        let sends: Vec<_> = cmds
            .iter()
            .filter_map(|c| match c {
                Command::Send { key, body, .. } => Some((key.clone(), body.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(sends.len(), 2);
        assert_eq!(sends[0], (k1.clone(), "one".into()));
        assert_eq!(sends[1].1, "two");
        // Delivery restarts from the cursor: the next frame acknowledges again.
        assert_eq!(app.after_draw(view()), [Command::Ack { upto: 5 }]);
    }

    #[test]
    fn scrolling_to_the_top_loads_older_pages_once() {
        let mut app = online_app();
        let cmds = app.handle_net(NetEvent::Message(msg(50, "bob", "alice", "hi")));
        assert_eq!(
            cmds,
            [Command::History {
                conversation: "bob".into(),
                before: None
            }]
        );
        app.after_draw(view());
        app.handle_net(NetEvent::History {
            conversation: "bob".into(),
            before: None,
            messages: (40..=50).map(|i| msg(i, "bob", "alice", "m")).collect(),
            more: true,
        });
        let tall = ViewInfo {
            height: 10,
            lines: 30,
        };
        // At the bottom: nothing to load.
        assert!(!app
            .after_draw(tall)
            .iter()
            .any(|c| matches!(c, Command::History { .. })));
        app.handle_key(key(KeyCode::PageUp));
        app.handle_key(key(KeyCode::PageUp));
        app.handle_key(key(KeyCode::PageUp));
        let cmds = app.after_draw(tall);
        assert_eq!(
            cmds,
            [Command::History {
                conversation: "bob".into(),
                before: Some(40)
            }]
        );
        assert_eq!(app.current().unwrap().scroll, 20, "clamped to the top");
        assert!(app.after_draw(tall).is_empty(), "one request at a time");
        app.handle_net(NetEvent::History {
            conversation: "bob".into(),
            before: Some(40),
            messages: (30..40).map(|i| msg(i, "bob", "alice", "m")).collect(),
            more: false,
        });
        let bob = app.current().unwrap();
        assert_eq!(bob.messages.len(), 21);
        assert!(!bob.more_older);
        assert!(app.after_draw(tall).is_empty());
        app.handle_key(key(KeyCode::Esc));
        assert_eq!(app.current().unwrap().scroll, 0);
    }

    #[test]
    fn open_prompt_validates_names_and_opens_through_the_server() {
        let mut app = online_app();
        app.handle_key(ctrl('o'));
        type_text(&mut app, "Bad Name");
        assert!(app.handle_key(key(KeyCode::Enter)).is_empty());
        assert!(app.notice.is_some());
        app.handle_key(ctrl('o'));
        type_text(&mut app, "#Ops");
        let cmds = app.handle_key(key(KeyCode::Enter));
        assert_eq!(
            cmds,
            [Command::Open {
                conversation: "#ops".into()
            }]
        );
        app.handle_net(NetEvent::History {
            conversation: "#ops".into(),
            before: None,
            messages: vec![],
            more: false,
        });
        assert_eq!(app.open.as_deref(), Some("#ops"));
        assert!(app.current().unwrap().loaded);
        // An unknown user is reported and nothing opens.
        app.handle_key(ctrl('o'));
        type_text(&mut app, "nobody");
        app.handle_key(key(KeyCode::Enter));
        app.handle_net(NetEvent::HistoryFailed {
            conversation: "nobody".into(),
            error: "no such user".into(),
        });
        assert_eq!(app.open.as_deref(), Some("#ops"));
        assert!(app.notice.as_deref().unwrap().contains("no such user"));
    }

    #[test]
    fn help_search_and_switching_keys() {
        let mut app = online_app();
        for (id, from) in [(1, "bob"), (2, "carol"), (3, "dave")] {
            app.handle_net(NetEvent::Message(msg(id, from, "alice", "x")));
        }
        assert_eq!(app.open.as_deref(), Some("bob"), "the first one stays open");
        app.handle_key(key(KeyCode::Char('?')));
        assert_eq!(app.overlay, Overlay::Help);
        app.handle_key(key(KeyCode::Char('x')));
        assert_eq!(app.overlay, Overlay::None);
        assert!(app.input.is_empty(), "the key closing help is not typed");
        // Most recent first: dave, carol, bob.
        app.handle_key(ctrl('n'));
        assert_eq!(app.open.as_deref(), Some("dave"), "bob is last; wraps");
        app.handle_key(ctrl('p'));
        assert_eq!(app.open.as_deref(), Some("bob"));
        app.handle_key(ctrl('p'));
        assert_eq!(app.open.as_deref(), Some("carol"));
        app.handle_key(alt(KeyCode::Char('1')));
        assert_eq!(app.open.as_deref(), Some("dave"));
        // '?' inside text is text.
        type_text(&mut app, "why?");
        assert_eq!(app.input.text(), "why?");
        // Search.
        app.handle_key(ctrl('f'));
        type_text(&mut app, "x");
        assert_eq!(
            app.handle_key(key(KeyCode::Enter)),
            [Command::Search { query: "x".into() }]
        );
        app.handle_net(NetEvent::SearchResults {
            query: "x".into(),
            hits: vec![
                SearchHit {
                    message: msg(2, "carol", "alice", "x"),
                    snippet: "[x]".into(),
                },
                SearchHit {
                    message: msg(1, "bob", "alice", "x"),
                    snippet: "[x]".into(),
                },
            ],
        });
        app.handle_key(key(KeyCode::Down));
        app.handle_key(key(KeyCode::Enter));
        assert_eq!(app.open.as_deref(), Some("bob"));
        assert_eq!(app.overlay, Overlay::None);
        app.handle_key(ctrl('c'));
        assert!(app.quit);
    }

    #[test]
    fn room_events_and_paste() {
        let mut app = online_app();
        let mut left = msg(9, "alice", "#ops", "");
        left.kind = MessageKind::Leave;
        app.handle_net(NetEvent::Message(left));
        assert!(app.conversation("#ops").unwrap().left);
        assert_eq!(app.conversation("#ops").unwrap().unread(), 0);
        app.handle_paste("a\r\nb");
        assert_eq!(app.input.text(), "a\nb");
        let too_big = "x".repeat(101);
        app.input.set(&too_big);
        assert!(app.handle_key(key(KeyCode::Enter)).is_empty());
        assert_eq!(app.input.text(), too_big, "kept for editing");
    }

    #[test]
    fn times_convert_and_tolerate_garbage() {
        let (hm, day) = local_time("2026-11-24T23:30:00.000000Z", time::UtcOffset::UTC);
        assert_eq!((hm.as_str(), day.as_str()), ("23:30", "2026-11-24"));
        let plus_one = time::UtcOffset::from_hms(1, 0, 0).unwrap();
        let (hm, day) = local_time("2026-11-24T23:30:00.000000Z", plus_one);
        assert_eq!((hm.as_str(), day.as_str()), ("00:30", "2026-11-25"));
        assert_eq!(local_time("junk", plus_one).0, "--:--");
    }
}
