//! Drawing [`App`] with ratatui: a pure function of the state and the frame size.
//!
//! Layout: conversations on the left (hidden below [`LIST_MIN_WIDTH`] columns), the open
//! conversation on the right, the input box under them (growing with its lines up to a third
//! of the screen), and one status line at the bottom; help, prompts and search results are
//! drawn over the middle. Message text is wrapped here, line by line, so the scroll offset
//! counts screen rows; the row counts go back to the state through [`ViewInfo`].
//!
//! Nothing received is written to the terminal as is: control characters in message text
//! (escape sequences included) and bidi controls are replaced before they reach a cell, by
//! the same function `chat` uses ([`crate::client::terminal`]). Colours are the 16
//! basic ones; with `NO_COLOR` (or `TERM=dumb`) only bold, dim and reverse are used.

use ratatui::layout::{Alignment, Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

use crate::client::terminal::{is_unsafe, terminal_safe, REPLACEMENT};

use super::state::{
    local_time, App, ConnStatus, Conversation, Overlay, PromptKind, SendStatus, ViewInfo,
};

/// Below this width the conversation list is hidden.
pub const LIST_MIN_WIDTH: u16 = 60;

/// Every key, for the help overlay and `docs/tui.md`.
pub const KEYS: &[(&str, &str)] = &[
    ("Enter", "send the message"),
    ("/me text, Enter", "send an action, shown as * you text"),
    ("Alt-Enter, Shift-Enter, Ctrl-J", "new line in the message"),
    (
        "Ctrl-N / Ctrl-P, Tab, Alt-↓/↑",
        "next / previous conversation",
    ),
    ("Alt-1 … Alt-9", "conversation 1 … 9 of the list"),
    ("Ctrl-O", "open a user (direct) or a #room (joins it)"),
    ("Ctrl-F", "search everything you may read"),
    ("Alt-R", "mark the conversation read"),
    ("Ctrl-R", "retry failed messages (same key)"),
    (
        "PgUp / PgDn, Shift-↑/↓",
        "scroll; older history loads at the top",
    ),
    ("Esc, Ctrl-End", "back to the newest messages; close a box"),
    ("←→ Home End, Ctrl-A/E", "move in the message"),
    ("Ctrl-←/→, Alt-B/F", "move by word"),
    (
        "Ctrl-W, Ctrl-U, Ctrl-K",
        "delete word / to line start / to line end",
    ),
    ("Ctrl-L", "redraw the screen"),
    ("? (empty input), F1", "this help"),
    ("Ctrl-C, Ctrl-Q, Ctrl-D (empty)", "quit"),
];

/// Colours, or their absence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    /// No colours when `NO_COLOR` is set (to anything non-empty) or `TERM` is `dumb`.
    pub fn from_env() -> Theme {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Theme {
            color: !(no_color || dumb),
        }
    }

    fn fg(&self, color: Color, fallback: Modifier) -> Style {
        if self.color {
            Style::default().fg(color)
        } else {
            Style::default().add_modifier(fallback)
        }
    }

    fn dim(&self) -> Style {
        self.fg(Color::DarkGray, Modifier::DIM)
    }

    fn me(&self) -> Style {
        self.fg(Color::Green, Modifier::BOLD)
            .add_modifier(Modifier::BOLD)
    }

    fn other(&self) -> Style {
        self.fg(Color::Cyan, Modifier::BOLD)
            .add_modifier(Modifier::BOLD)
    }

    fn error(&self) -> Style {
        self.fg(Color::Red, Modifier::BOLD)
    }

    fn warn(&self) -> Style {
        self.fg(Color::Yellow, Modifier::BOLD)
    }

    fn ok(&self) -> Style {
        self.fg(Color::Green, Modifier::empty())
    }

    fn selected(&self) -> Style {
        if self.color {
            Style::default()
                .bg(Color::Blue)
                .fg(Color::White)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }
}

/// Draws the whole screen; returns how the message view was laid out.
pub fn draw(frame: &mut Frame, app: &App, theme: &Theme) -> ViewInfo {
    let area = frame.area();
    if area.width < 20 || area.height < 6 {
        frame.render_widget(
            Paragraph::new("terminal too small").style(theme.warn()),
            area,
        );
        return ViewInfo::default();
    }
    let inner_width = area.width.saturating_sub(2).max(1) as usize;
    let (input_rows, cursor) = wrap_input(app.input.text(), app.input.cursor(), inner_width);
    let max_rows = ((area.height as usize).saturating_sub(1) / 3).max(1);
    let visible_rows = input_rows.len().clamp(1, max_rows);
    let [main, input_area, status_area] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(visible_rows as u16 + 2),
        Constraint::Length(1),
    ])
    .areas(area);

    let messages_area = if area.width >= LIST_MIN_WIDTH {
        let list_width = (area.width / 4).clamp(16, 30);
        let [list, messages] =
            Layout::horizontal([Constraint::Length(list_width), Constraint::Min(1)]).areas(main);
        draw_list(frame, app, theme, list);
        messages
    } else {
        main
    };
    let view = draw_messages(frame, app, theme, messages_area);
    draw_input(
        frame,
        app,
        theme,
        input_area,
        &input_rows,
        cursor,
        visible_rows,
    );
    draw_status(frame, app, theme, status_area);
    match &app.overlay {
        Overlay::None => {}
        Overlay::Help => draw_help(frame, theme, area),
        Overlay::Prompt { kind, editor } => {
            let title = match kind {
                PromptKind::Open => " Open: user name, or #room to join (Enter / Esc) ",
                PromptKind::Search => " Search for words (Enter / Esc) ",
            };
            let width = area.width.saturating_sub(4).min(70);
            let rect = Rect::new(area.x + (area.width - width) / 2, area.y + 2, width, 3);
            frame.render_widget(Clear, rect);
            let inner = (width as usize).saturating_sub(2).max(1);
            let (rows, (row, col)) = wrap_input(editor.text(), editor.cursor(), inner);
            let text = rows.get(row).cloned().unwrap_or_default();
            frame.render_widget(
                Paragraph::new(text).block(Block::bordered().title(title)),
                rect,
            );
            frame.set_cursor_position(Position::new(rect.x + 1 + col as u16, rect.y + 1));
        }
        Overlay::Search {
            query,
            hits,
            selected,
        } => draw_search(frame, app, theme, area, query, hits.as_deref(), *selected),
    }
    view
}

fn draw_list(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let block = Block::bordered().title(" Conversations ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let mut lines = Vec::new();
    let sorted = app.sorted();
    if sorted.is_empty() {
        lines.push(Line::styled("(none yet)", theme.dim()));
        lines.push(Line::styled("Ctrl-O opens one", theme.dim()));
    }
    // Keep the open conversation on screen when the list is long.
    let open_at = sorted
        .iter()
        .position(|c| Some(&c.name) == app.open.as_ref())
        .unwrap_or(0);
    let skip = open_at.saturating_sub((inner.height as usize).saturating_sub(1));
    for c in sorted.iter().skip(skip) {
        let unread = c.unread();
        let badge = match (unread, c.left) {
            (_, true) => "left".to_string(),
            (0, _) => String::new(),
            (n, _) => n.to_string(),
        };
        let name_width = width.saturating_sub(badge.chars().count() + 2);
        let name = truncate(&c.name, name_width);
        let pad = width.saturating_sub(2 + text_width(&name) + badge.chars().count());
        let is_open = Some(&c.name) == app.open.as_ref();
        let marker = if is_open { "▸ " } else { "  " };
        let mut style = Style::default();
        if unread > 0 {
            style = style.add_modifier(Modifier::BOLD);
        }
        if c.left {
            style = theme.dim();
        }
        if is_open {
            style = theme.selected();
        }
        let badge_style = if unread > 0 && !is_open {
            theme.warn()
        } else {
            style
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{marker}{name}{}", " ".repeat(pad)), style),
            Span::styled(badge, badge_style),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_messages(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) -> ViewInfo {
    let Some(conv) = app.current() else {
        let block = Block::bordered().title(" chat ");
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let text = vec![
            Line::from(""),
            Line::styled("No conversation open.", Style::default()),
            Line::from(""),
            Line::styled(
                "Ctrl-O opens one: a user name, or #room to join.",
                theme.dim(),
            ),
            Line::styled("? shows every key.", theme.dim()),
        ];
        frame.render_widget(Paragraph::new(text).alignment(Alignment::Center), inner);
        return ViewInfo {
            height: inner.height as usize,
            lines: 0,
        };
    };
    let width = area.width.saturating_sub(2).max(1) as usize;
    let lines = message_lines(app, conv, theme, width);
    let height = area.height.saturating_sub(2) as usize;
    let total = lines.len();
    let scroll = conv.scroll.min(total.saturating_sub(height));

    let mut title = vec![Span::styled(
        format!(" {} ", sanitize(&conv.name)),
        theme.other(),
    )];
    if conv.left {
        title.push(Span::styled("(you are not a member) ", theme.dim()));
    }
    if area.width < LIST_MIN_WIDTH {
        let elsewhere: u64 = app
            .conversations
            .iter()
            .filter(|c| c.name != conv.name)
            .map(Conversation::unread)
            .sum();
        if elsewhere > 0 {
            title.push(Span::styled(
                format!("+{elsewhere} unread (Ctrl-N) "),
                theme.warn(),
            ));
        }
    }
    let mut block = Block::bordered().title(Line::from(title));
    if scroll > 0 {
        block = block.title_bottom(
            Line::styled(format!(" ↓ {scroll} more lines (Esc) "), theme.warn()).right_aligned(),
        );
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);

    let end = total - scroll;
    let start = end.saturating_sub(height);
    let mut shown: Vec<Line> = Vec::with_capacity(height);
    // Bottom-aligned, like a chat: pad above short conversations.
    for _ in 0..height.saturating_sub(end - start) {
        shown.push(Line::from(""));
    }
    shown.extend(lines[start..end].iter().cloned());
    frame.render_widget(Paragraph::new(shown), inner);
    ViewInfo {
        height,
        lines: total,
    }
}

/// Every row of a conversation at `width` columns, oldest first.
fn message_lines(
    app: &App,
    conv: &Conversation,
    theme: &Theme,
    width: usize,
) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    if !conv.loaded && conv.loading {
        out.push(centered("loading…", width, theme.dim()));
    } else if conv.loaded && conv.more_older {
        let text = if conv.loading {
            "loading older messages…"
        } else {
            "↑ older messages load as you scroll up"
        };
        out.push(centered(text, width, theme.dim()));
    } else if conv.loaded {
        out.push(centered("start of the conversation", width, theme.dim()));
    }
    let mut last_day = String::new();
    for m in conv.messages.values() {
        let (hm, day) = local_time(&m.sent_at, app.utc_offset);
        if day != last_day {
            out.push(day_separator(&day, width, theme));
            last_day = day;
        }
        if let Some(event) = m.event_text() {
            let row = format!("{hm} · {event}");
            for piece in wrap(&row, width, width) {
                out.push(Line::styled(piece, theme.dim()));
            }
            continue;
        }
        if m.action {
            // An action (`/me`): `HH:MM * alice waves`, in italics.
            let body = m.body.strip_suffix('\n').unwrap_or(&m.body);
            let row = format!("{hm}   {}", m.shown_text(body));
            for line in row.split('\n') {
                for piece in wrap(line, width, width) {
                    out.push(Line::styled(
                        piece,
                        Style::default().add_modifier(Modifier::ITALIC),
                    ));
                }
            }
            continue;
        }
        let mine = m.from == app.me;
        let mark = if mine {
            Span::styled("✓ ", theme.ok())
        } else {
            Span::raw("  ")
        };
        let sender = if mine { theme.me() } else { theme.other() };
        push_text(
            &mut out,
            width,
            Span::raw(format!("{hm} ")),
            mark,
            Span::styled(sanitize(&m.from), sender),
            &m.body,
            Style::default(),
        );
    }
    for o in app.outgoing_to(&conv.name) {
        let (mark, style) = match &o.status {
            SendStatus::Pending => (Span::styled("… ", theme.dim()), theme.dim()),
            SendStatus::Failed { .. } => (Span::styled("✗ ", theme.error()), Style::default()),
        };
        // An action shows as it will once sent: `* alice waves`.
        let sender = if o.action {
            format!("* {}", app.me)
        } else {
            app.me.clone()
        };
        push_text(
            &mut out,
            width,
            Span::raw("      "),
            mark,
            Span::styled(sender, theme.me()),
            &o.body,
            style,
        );
        if let SendStatus::Failed { error, auto_retry } = &o.status {
            let then = if *auto_retry {
                "retried when the connection is back; Ctrl-R now"
            } else {
                "Ctrl-R retries"
            };
            for piece in wrap(&format!("  ↳ not sent: {error} — {then}"), width, width) {
                out.push(Line::styled(piece, theme.error()));
            }
        } else if !app.online() {
            out.push(Line::styled(
                truncate("  ↳ waiting for the connection", width),
                theme.dim(),
            ));
        }
    }
    out
}

/// A text message: `HH:MM ✓ sender: first line`, further lines and wraps indented to the
/// text.
fn push_text(
    out: &mut Vec<Line<'static>>,
    width: usize,
    time: Span<'static>,
    mark: Span<'static>,
    sender: Span<'static>,
    body: &str,
    style: Style,
) {
    let head = time.width() + mark.width() + sender.width() + 2;
    let indent = if head <= width / 2 { head } else { 2 };
    let body = body.strip_suffix('\n').unwrap_or(body);
    let mut first = true;
    for logical in body.split('\n') {
        let first_width = if first {
            width.saturating_sub(head)
        } else {
            width.saturating_sub(indent)
        };
        for (i, piece) in wrap(logical, first_width, width.saturating_sub(indent))
            .into_iter()
            .enumerate()
        {
            if first && i == 0 {
                out.push(Line::from(vec![
                    time.clone(),
                    mark.clone(),
                    sender.clone(),
                    Span::raw(": "),
                    Span::styled(piece, style),
                ]));
            } else {
                out.push(Line::from(vec![
                    Span::raw(" ".repeat(indent)),
                    Span::styled(piece, style),
                ]));
            }
        }
        first = false;
    }
}

fn draw_input(
    frame: &mut Frame,
    app: &App,
    theme: &Theme,
    area: Rect,
    rows: &[String],
    (row, col): (usize, usize),
    visible: usize,
) {
    let title = match app.current() {
        Some(c) if c.left => format!(" not a member of {} — Ctrl-O rejoins ", c.name),
        Some(c) => format!(" to {} ", c.name),
        None => " no conversation — Ctrl-O ".to_string(),
    };
    let mut block = Block::bordered().title(title);
    if area.width >= 70 {
        block = block.title(
            Line::styled(" Enter send · Alt-Enter new line · ? help ", theme.dim()).right_aligned(),
        );
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let first = (row + 1).saturating_sub(visible);
    let lines: Vec<Line> = if app.input.is_empty() {
        vec![Line::styled("type a message", theme.dim())]
    } else {
        rows.iter()
            .skip(first)
            .take(visible)
            .map(|r| Line::raw(r.clone()))
            .collect()
    };
    frame.render_widget(Paragraph::new(lines), inner);
    if app.overlay == Overlay::None {
        frame.set_cursor_position(Position::new(
            inner.x + col as u16,
            inner.y + (row - first) as u16,
        ));
    }
}

fn draw_status(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let (left, style) = match &app.status {
        ConnStatus::Online => ("● online".to_string(), theme.ok()),
        ConnStatus::Connecting { attempt: 1 } => ("◌ connecting…".to_string(), theme.warn()),
        ConnStatus::Connecting { attempt } => {
            (format!("◌ connecting (attempt {attempt})…"), theme.warn())
        }
        ConnStatus::Offline {
            reason,
            retry_in_secs,
        } => (
            format!("○ offline: {reason} — retrying in {retry_in_secs} s"),
            theme.error(),
        ),
        ConnStatus::Fatal { reason } => (format!("✗ {reason}"), theme.error()),
    };
    let right = format!(
        " {}@{} · times {} · ? help ",
        app.me, app.server, app.zone_label
    );
    let mut spans = vec![Span::styled(format!(" {left} "), style)];
    if let Some(notice) = &app.notice {
        spans.push(Span::styled(format!("│ {notice} "), theme.warn()));
    }
    let used: usize = spans.iter().map(Span::width).sum();
    let right_width = text_width(&right);
    if used + right_width <= area.width as usize {
        spans.push(Span::raw(
            " ".repeat(area.width as usize - used - right_width),
        ));
        spans.push(Span::styled(right, theme.dim()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_help(frame: &mut Frame, theme: &Theme, area: Rect) {
    let key_width = KEYS.iter().map(|(k, _)| text_width(k)).max().unwrap_or(0);
    let width = (area.width.saturating_sub(2)).min(84);
    let height = (area.height.saturating_sub(2)).min(KEYS.len() as u16 + 4);
    let rect = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!(" {k:<key_width$}  "),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::styled(" any key closes this help", theme.dim()));
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Keys ")),
        rect,
    );
}

fn draw_search(
    frame: &mut Frame,
    app: &App,
    theme: &Theme,
    area: Rect,
    query: &str,
    hits: Option<&[crate::protocol::SearchHit]>,
    selected: usize,
) {
    let width = area.width.saturating_sub(4).max(10);
    let height = area.height.saturating_sub(4).max(3);
    let rect = Rect::new(area.x + 2, area.y + 2, width, height);
    let inner_width = width.saturating_sub(2) as usize;
    let mut lines = Vec::new();
    match hits {
        None => lines.push(Line::styled("searching…", theme.dim())),
        Some([]) => lines.push(Line::styled("no matches", theme.dim())),
        Some(hits) => {
            let rows = height.saturating_sub(2) as usize;
            let skip = (selected + 1).saturating_sub(rows);
            for (i, hit) in hits.iter().enumerate().skip(skip) {
                let m = &hit.message;
                let (hm, day) = local_time(&m.sent_at, app.utc_offset);
                let snippet = sanitize(&hit.snippet.replace('\n', " ⏎ "));
                let row = format!("{day} {hm} {} → {}: {snippet}", m.from, m.to);
                let style = if i == selected {
                    theme.selected()
                } else {
                    Style::default()
                };
                lines.push(Line::styled(truncate(&row, inner_width), style));
            }
        }
    }
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(format!(" Search: {} ", truncate(query, inner_width / 2)))
                .title_bottom(Line::from(" ↑↓ choose · Enter opens · Esc closes ").right_aligned()),
        ),
        rect,
    );
}

fn day_separator(day: &str, width: usize, theme: &Theme) -> Line<'static> {
    let label = format!(" {day} ");
    let side = width.saturating_sub(label.len()) / 2;
    let rest = width.saturating_sub(label.len() + side);
    Line::styled(
        format!("{}{label}{}", "─".repeat(side), "─".repeat(rest)),
        theme.dim(),
    )
}

fn centered(text: &str, width: usize, style: Style) -> Line<'static> {
    let pad = width.saturating_sub(text_width(text)) / 2;
    Line::styled(
        format!("{}{}", " ".repeat(pad), truncate(text, width)),
        style,
    )
}

/// Message text made safe for a terminal cell ([`terminal_safe`], shared with `chat`): tabs
/// become spaces; newlines (already split off by the caller) and everything else that must
/// not reach a terminal, a replacement character.
fn sanitize(text: &str) -> String {
    terminal_safe(text)
        .chars()
        .map(|c| match c {
            '\t' => ' ',
            '\n' => REPLACEMENT,
            c => c,
        })
        .collect()
}

fn char_width(c: char) -> usize {
    let mut buf = [0u8; 4];
    Span::raw(&*c.encode_utf8(&mut buf)).width()
}

fn text_width(text: &str) -> usize {
    Span::raw(text).width()
}

/// The start of `text` that fits in `width` columns, made safe like message text.
fn truncate(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in sanitize(text).chars() {
        let w = char_width(c);
        if used + w > width {
            break;
        }
        used += w;
        out.push(c);
    }
    out
}

/// Wraps one line (no `\n` in it) into pieces: the first at most `first` columns, the rest
/// at most `width`; at the last space where there is one, else anywhere. Always at least one
/// piece.
fn wrap(line: &str, first: usize, width: usize) -> Vec<String> {
    let line = sanitize(line);
    let mut pieces = vec![String::new()];
    let mut used = 0;
    let mut limit = first.max(1);
    for c in line.chars() {
        let w = char_width(c);
        if used + w > limit && used > 0 {
            let current = pieces.last_mut().map(std::mem::take).unwrap_or_default();
            // Carry the unfinished word over, unless the piece is all one word.
            let (done, carried) = match current.rfind(' ') {
                Some(i) if c != ' ' && i + 1 < current.len() => {
                    (current[..=i].to_string(), current[i + 1..].to_string())
                }
                _ => (current, String::new()),
            };
            if let Some(last) = pieces.last_mut() {
                *last = done;
            }
            used = text_width(&carried);
            pieces.push(carried);
            limit = width.max(1);
        }
        // A space that would start a continuation piece is dropped.
        let skip = used == 0 && c == ' ' && pieces.len() > 1;
        if let (false, Some(last)) = (skip, pieces.last_mut()) {
            last.push(c);
            used += w;
        }
    }
    pieces
}

/// The input text as screen rows of at most `width - 1` columns (the last column is kept
/// for the cursor), and the cursor's (row, column).
fn wrap_input(text: &str, cursor: usize, width: usize) -> (Vec<String>, (usize, usize)) {
    let limit = width.saturating_sub(1).max(1);
    let mut rows = vec![String::new()];
    let mut used = 0;
    let mut at = (0, 0);
    for (i, c) in text.char_indices() {
        if i == cursor {
            at = (rows.len() - 1, used);
        }
        if c == '\n' {
            rows.push(String::new());
            used = 0;
            continue;
        }
        let c = if c == '\t' || is_unsafe(c) {
            REPLACEMENT
        } else {
            c
        };
        let w = char_width(c);
        if used + w > limit {
            rows.push(String::new());
            used = 0;
            if i == cursor {
                at = (rows.len() - 1, 0);
            }
        }
        if let Some(last) = rows.last_mut() {
            last.push(c);
        }
        used += w;
    }
    if cursor >= text.len() {
        at = (rows.len() - 1, used);
    }
    (rows, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Message, MessageKind};
    use crate::tui::state::NetEvent;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    const PLAIN: Theme = Theme { color: false };

    fn msg(id: i64, from: &str, to: &str, body: &str, sent_at: &str) -> Message {
        Message {
            id,
            from: from.into(),
            to: to.into(),
            body: body.into(),
            sent_at: sent_at.into(),
            kind: MessageKind::Text,
            member: None,
            action: false,
        }
    }

    fn render(app: &mut App, width: u16, height: u16) -> (Vec<String>, ViewInfo) {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let mut view = ViewInfo::default();
        terminal
            .draw(|f| view = draw(f, app, &PLAIN))
            .expect("draw");
        app.after_draw(view);
        let buffer = terminal.backend().buffer();
        let rows = (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect();
        (rows, view)
    }

    fn screen(rows: &[String]) -> String {
        rows.join("\n")
    }

    fn online(app: &mut App) {
        app.handle_net(NetEvent::Connected { max_body: 16384 });
    }

    fn busy_app() -> App {
        let mut app = App::new("alice", "127.0.0.1:7667");
        online(&mut app);
        app.handle_net(NetEvent::Unread(vec![]));
        let mut history = Vec::new();
        for i in 0..40 {
            let (from, to) = if i % 3 == 0 {
                ("alice", "bob")
            } else {
                ("bob", "alice")
            };
            let day = if i < 30 { 23 } else { 24 };
            history.push(msg(
                100 + i,
                from,
                to,
                &format!("message number {i}"),
                &format!("2026-11-{day}T09:{:02}:00.000000Z", i % 60),
            ));
        }
        app.handle_net(NetEvent::Message(msg(
            90,
            "carol",
            "alice",
            "older, unread",
            "2026-11-22T10:00:00.000000Z",
        )));
        app.handle_net(NetEvent::History {
            conversation: "bob".into(),
            before: None,
            messages: history,
            more: true,
        });
        // Open bob (carol opened first, being the first to arrive).
        app.handle_key(KeyEvent::new(KeyCode::Char('n'), KeyModifiers::CONTROL));
        assert_eq!(app.open.as_deref(), Some("bob"));
        app
    }

    #[test]
    fn empty_screen_explains_what_to_do() {
        let mut app = App::new("alice", "127.0.0.1:7667");
        let (rows, _) = render(&mut app, 80, 20);
        let text = screen(&rows);
        assert!(text.contains("Conversations"), "{text}");
        assert!(text.contains("(none yet)"), "{text}");
        assert!(text.contains("No conversation open."), "{text}");
        assert!(text.contains("connecting…"), "{text}");
        assert!(text.contains("alice@127.0.0.1:7667 · times UTC"), "{text}");
        assert!(rows[17].contains("type a message"), "{text}");
        assert!(rows[16].contains("no conversation — Ctrl-O"), "{text}");
    }

    #[test]
    fn busy_conversation_shows_the_newest_with_day_separators_and_unread() {
        let mut app = busy_app();
        let (rows, view) = render(&mut app, 100, 24);
        let text = screen(&rows);
        assert!(text.contains("● online"), "{text}");
        // Newest last, just above the input box.
        assert!(
            rows[18].contains("09:39 ✓ alice: message number 39"),
            "{text}"
        );
        assert!(text.contains("09:38   bob: message number 38"), "{text}");
        assert!(text.contains("─ 2026-11-24 ─"), "{text}");
        // The list: bob (most recent) first and open; carol with one unread.
        assert!(rows[1].contains("▸ bob"), "{text}");
        assert!(rows[2].contains("  carol               1││"), "{text}");
        assert_eq!(view.height, 18);
        assert!(view.lines > 40);

        // Scrolling up reaches the earlier day and says how far down the newest are.
        app.handle_key(KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE));
        app.handle_key(KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE));
        let (rows, _) = render(&mut app, 100, 24);
        let text = screen(&rows);
        assert!(text.contains("─ 2026-11-23 ─"), "{text}");
        assert!(text.contains("more lines (Esc)"), "{text}");
        assert!(!text.contains("message number 39"), "{text}");
    }

    #[test]
    fn multi_line_messages_indent_and_the_input_grows() {
        let mut app = App::new("alice", "h:1");
        online(&mut app);
        app.handle_net(NetEvent::Message(msg(
            5,
            "bob",
            "alice",
            "first line\nsecond line\n\x1b[31mred?",
            "2026-11-24T08:15:00.000000Z",
        )));
        app.handle_paste("reply one\nreply two\nreply three");
        let (rows, _) = render(&mut app, 80, 20);
        let text = screen(&rows);
        let at = rows
            .iter()
            .position(|r| r.contains("08:15   bob: first line"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(rows[at + 1].contains("             second line"), "{text}");
        assert!(
            rows[at + 2].contains("             \u{FFFD}[31mred?"),
            "{text}"
        );
        // Input: three rows inside its border.
        assert!(rows[15].contains("reply one"), "{text}");
        assert!(rows[16].contains("reply two"), "{text}");
        assert!(rows[17].contains("reply three"), "{text}");
        assert!(rows[14].contains("to bob"), "{text}");

        // Sending: pending, then failed with the reason, both visible.
        let cmds = app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        let crate::tui::state::Command::Send { key, .. } = &cmds[0] else {
            panic!("{cmds:?}")
        };
        let (rows, _) = render(&mut app, 80, 20);
        let text = screen(&rows);
        assert!(text.contains("… alice: reply one"), "{text}");
        app.handle_net(NetEvent::SendFailed {
            key: key.clone(),
            error: "no such user (unknown_recipient)".into(),
            transient: false,
        });
        let (rows, _) = render(&mut app, 80, 20);
        let text = screen(&rows);
        assert!(text.contains("✗ alice: reply one"), "{text}");
        assert!(text.contains("not sent: no such user"), "{text}");
    }

    #[test]
    fn narrow_terminal_hides_the_list_and_wraps() {
        let mut app = busy_app();
        app.handle_net(NetEvent::Message(msg(
            200,
            "bob",
            "alice",
            "a long line that certainly does not fit in thirty columns",
            "2026-11-24T10:00:00.000000Z",
        )));
        let (rows, _) = render(&mut app, 30, 16);
        let text = screen(&rows);
        assert!(!text.contains("Conversations"), "{text}");
        assert!(rows[0].contains("bob"), "{text}");
        assert!(rows[0].contains("+1 unread"), "{text}");
        assert!(rows.iter().all(|r| r.chars().count() == 30));
        let at = rows
            .iter()
            .position(|r| r.contains("10:00   bob: a long"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            rows[at + 1].contains("             that certainly"),
            "{text}"
        );
        // Too small for anything.
        let (rows, view) = render(&mut app, 15, 4);
        assert!(rows[0].contains("terminal too"));
        assert_eq!(view, ViewInfo::default());
    }

    #[test]
    fn help_and_offline_status() {
        let mut app = App::new("alice", "h:1");
        app.handle_net(NetEvent::Disconnected {
            reason: "connection refused".into(),
            retry_in: std::time::Duration::from_secs(4),
        });
        app.handle_key(KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE));
        let (rows, _) = render(&mut app, 100, 30);
        let text = screen(&rows);
        assert!(text.contains(" Keys "), "{text}");
        assert!(text.contains("Alt-Enter, Shift-Enter"), "{text}");
        assert!(
            rows[29].contains("offline: connection refused — retrying in 4 s"),
            "{text}"
        );
    }

    #[test]
    fn wrapping_helpers() {
        assert_eq!(wrap("abcdef", 2, 3), ["ab", "cde", "f"]);
        assert_eq!(wrap("ab cd efgh", 6, 6), ["ab cd ", "efgh"]);
        assert_eq!(wrap("ab cdefgh ij", 5, 5), ["ab ", "cdefg", "h ij"]);
        assert_eq!(wrap("", 5, 5), [""]);
        assert_eq!(wrap("日本語", 4, 4), ["日本", "語"]);
        let (rows, at) = wrap_input("ab\ncdef", 7, 4);
        assert_eq!(rows, ["ab", "cde", "f"]);
        assert_eq!(at, (2, 1));
        let (_, at) = wrap_input("ab\ncdef", 1, 4);
        assert_eq!(at, (0, 1));
    }
}
