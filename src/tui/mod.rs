//! `chat tui` (and `chat` with no command): the full-screen terminal client.
//!
//! Three parts, so that everything but drawing and I/O is tested without a terminal:
//! - [`state`]: the state machine (conversations, unread counts, the message view, the
//!   input editor, pending/sent/failed sends, connection status, overlays);
//! - [`render`]: draws the state with ratatui;
//! - [`net`]: the connection task (connect, subscribe, reconnect with backoff, dedupe,
//!   acks after display, pings).
//!
//! [`run`] wires them together: terminal events and the connection task's reports go into
//! the state, its commands go to the connection task, and the screen is redrawn after each
//! batch. The terminal is restored on every way out: return, error, or panic (a hook
//! restores it before the panic message is printed).
//!
//! Times are shown in UTC (the `time` crate's local-offset support is not enabled in this
//! build); the status bar says so.

pub mod editor;
pub mod net;
pub mod render;
pub mod state;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use crossterm::event::{
    DisableBracketedPaste, EnableBracketedPaste, Event as TermEvent, EventStream, KeyEventKind,
    KeyboardEnhancementFlags, PopKeyboardEnhancementFlags, PushKeyboardEnhancementFlags,
};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use futures::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc;

use crate::client::state::ChatHome;
use render::Theme;
use state::{App, Command, NetEvent, ViewInfo};

/// Commands and events buffered between the UI and the connection task.
const CHANNEL: usize = 1024;
/// Most connection events folded into one redraw.
const EVENT_BATCH: usize = 512;

/// Set while the terminal is in raw mode on the alternate screen.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Set when keyboard enhancement was pushed and must be popped.
static ENHANCED: AtomicBool = AtomicBool::new(false);

/// Runs the full-screen client on the saved session until the user quits.
pub async fn run(home: &ChatHome) -> Result<()> {
    // Everything that can fail without a server is checked before the terminal changes.
    let login = net::load(home)?;
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        bail!("chat tui needs a terminal; for scripts use chat send / chat recv");
    }
    let theme = Theme::from_env();
    let mut app = App::new(&login.session.user, &login.session.server);
    let (command_tx, command_rx) = mpsc::channel(CHANNEL);
    let (event_tx, mut event_rx) = mpsc::channel(CHANNEL);
    let mut net_task = tokio::spawn(net::run(home.clone(), login, command_rx, event_tx));

    install_panic_hook();
    let result = match enter() {
        Ok(mut terminal) => {
            let result = event_loop(
                &mut terminal,
                &mut app,
                &theme,
                &command_tx,
                &mut event_rx,
                &mut net_task,
            )
            .await;
            let _ = terminal.show_cursor();
            result
        }
        Err(e) => Err(e),
    };
    restore();
    // Closing the command channel ends the connection task; give it a moment to finish
    // what it is doing (an ack), then stop it.
    drop(command_tx);
    if tokio::time::timeout(Duration::from_secs(2), &mut net_task)
        .await
        .is_err()
    {
        net_task.abort();
    }
    result
}

type Term = Terminal<CrosstermBackend<std::io::Stdout>>;

async fn event_loop(
    terminal: &mut Term,
    app: &mut App,
    theme: &Theme,
    commands: &mpsc::Sender<Command>,
    events: &mut mpsc::Receiver<NetEvent>,
    net_task: &mut tokio::task::JoinHandle<()>,
) -> Result<()> {
    let mut input = EventStream::new();
    loop {
        if std::mem::take(&mut app.redraw_all) {
            terminal.clear()?;
        }
        let mut view = ViewInfo::default();
        terminal.draw(|frame| view = render::draw(frame, app, theme))?;
        let after = app.after_draw(view);
        dispatch(app, commands, after);
        if app.quit {
            return Ok(());
        }
        let out = tokio::select! {
            term = input.next() => match term {
                None => return Ok(()),
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                Some(Ok(TermEvent::Key(key))) if key.kind != KeyEventKind::Release => {
                    app.handle_key(key)
                }
                Some(Ok(TermEvent::Paste(text))) => {
                    app.handle_paste(&text);
                    Vec::new()
                }
                // Resizes (and anything else) just redraw.
                Some(Ok(_)) => Vec::new(),
            },
            event = events.recv() => match event {
                Some(event) => {
                    let mut out = app.handle_net(event);
                    // Fold a burst (a backlog) into one redraw.
                    for _ in 0..EVENT_BATCH {
                        match events.try_recv() {
                            Ok(event) => out.extend(app.handle_net(event)),
                            Err(_) => break,
                        }
                    }
                    out
                }
                None => bail!("the connection task stopped"),
            },
            ended = &mut *net_task => {
                ended.context("the connection task failed")?;
                bail!("the connection task stopped");
            }
        };
        dispatch(app, commands, out);
    }
}

/// Hands commands to the connection task without ever waiting for it (it may itself be
/// waiting for the UI to take events). A send that does not fit is marked failed, to be
/// retried like any other.
fn dispatch(app: &mut App, commands: &mpsc::Sender<Command>, out: Vec<Command>) {
    for command in out {
        if let Err(e) = commands.try_send(command) {
            let command = match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            };
            if let Command::Send { key, .. } = command {
                app.handle_net(NetEvent::SendFailed {
                    key,
                    error: "the client is busy".into(),
                    transient: true,
                });
            }
        }
    }
}

/// Raw mode, the alternate screen, bracketed paste, and (where the terminal supports it)
/// unambiguous key reports so Shift-Enter differs from Enter.
fn enter() -> Result<Term> {
    enable_raw_mode().context("cannot put the terminal in raw mode")?;
    ACTIVE.store(true, Ordering::SeqCst);
    let mut out = std::io::stdout();
    crossterm::execute!(out, EnterAlternateScreen, EnableBracketedPaste)?;
    if matches!(
        crossterm::terminal::supports_keyboard_enhancement(),
        Ok(true)
    ) {
        crossterm::execute!(
            out,
            PushKeyboardEnhancementFlags(KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES)
        )?;
        ENHANCED.store(true, Ordering::SeqCst);
    }
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    terminal.clear()?;
    Ok(terminal)
}

/// Puts the terminal back as it was; safe to call more than once and from the panic hook.
fn restore() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = std::io::stdout();
    if ENHANCED.swap(false, Ordering::SeqCst) {
        let _ = crossterm::execute!(out, PopKeyboardEnhancementFlags);
    }
    let _ = crossterm::execute!(
        out,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
    let _ = out.flush();
}

/// Restores the terminal before the default hook prints the panic, so the message is
/// readable and the shell usable.
fn install_panic_hook() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
}
