//! `draft/chathistory` and `draft/read-marker`, mapped to the core's history pages and read
//! markers, whose rule decides what the reader may read (any direct conversation of the
//! user, and rooms the user is a member of, within their membership spans).
//!
//! IRC names a point in a conversation by `msgid=` (our message id) or `timestamp=`; a
//! timestamp becomes the last id sent at or before it.

use super::message::IrcMessage;
use super::session::{in_batch, End, Session, Stream};
use super::translate::{irc_time, message_lines, parse_time};
use crate::auth::AuthedUser;
use crate::core::{CoreError, Range, Readable};
use crate::ids::MessageId;
use crate::protocol::{format_timestamp, Message, MessageKind, MAX_HISTORY_PAGE};

/// A point in a conversation, as an id boundary.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// `*`: no bound.
    Open,
    /// `msgid=`: exactly this message.
    Id(MessageId),
    /// `timestamp=`: between messages; the last id at or before it.
    Time(i64),
}

impl<S: Stream> Session<S> {
    /// CHATHISTORY LATEST/BEFORE/AFTER/AROUND/BETWEEN/TARGETS.
    pub(super) async fn chathistory(
        &mut self,
        user: &AuthedUser,
        m: &IrcMessage,
    ) -> Result<Vec<IrcMessage>, End> {
        let sub = m.param(0).unwrap_or("").to_ascii_uppercase();
        let invalid = |s: &Self, text: &str| {
            vec![s.fail("CHATHISTORY", "INVALID_PARAMS", &[sub.as_str()], text)]
        };
        let needed = if matches!(sub.as_str(), "BETWEEN" | "TARGETS") {
            4
        } else {
            3
        };
        if m.params.len() < needed + usize::from(sub == "BETWEEN") {
            return Ok(invalid(self, "Not enough parameters"));
        }
        let Some(limit) = m
            .params
            .last()
            .and_then(|l| l.parse::<u32>().ok())
            .filter(|l| *l > 0)
        else {
            return Ok(invalid(self, "The limit must be a positive number"));
        };
        let limit = limit.min(MAX_HISTORY_PAGE);
        if sub == "TARGETS" {
            return self
                .history_targets(user, &m.params[1], &m.params[2], limit)
                .await;
        }
        let target = m.params[1].clone();
        let Some(scope) = self.readable(user, &target).await? else {
            return Ok(vec![self.fail(
                "CHATHISTORY",
                "INVALID_TARGET",
                &[sub.as_str(), target.as_str()],
                "No such conversation, or you may not read it",
            )]);
        };
        let Some(first) = parse_point(&m.params[2]) else {
            return Ok(invalid(self, "A point is *, msgid=ID or timestamp=TIME"));
        };
        let page = match sub.as_str() {
            "LATEST" => {
                let floor = self.after_id(first).await?;
                let mut page = self.page(user, &scope, None, None, limit).await?;
                page.retain(|msg| MessageId(msg.id) > floor);
                page
            }
            "BEFORE" => {
                let before = self.before_id(first).await?;
                self.page(user, &scope, Some(before), None, limit).await?
            }
            "AFTER" => {
                let after = self.after_id(first).await?;
                self.page(user, &scope, None, Some(after), limit).await?
            }
            "AROUND" => {
                let centre = self.after_id(first).await?;
                let older = limit.div_ceil(2);
                let mut page = self
                    .page(user, &scope, Some(MessageId(centre.get() + 1)), None, older)
                    .await?;
                page.extend(
                    self.page(user, &scope, None, Some(centre), limit - older)
                        .await?,
                );
                page
            }
            "BETWEEN" => {
                let Some(second) = parse_point(&m.params[3]) else {
                    return Ok(invalid(self, "A point is *, msgid=ID or timestamp=TIME"));
                };
                // Exclusive at both ends; paged from `first`'s side.
                let forward = self.after_id(first).await? <= self.after_id(second).await?;
                let (early, late) = if forward {
                    (first, second)
                } else {
                    (second, first)
                };
                let (low, high) = (self.after_id(early).await?, self.before_id(late).await?);
                let mut page = if forward {
                    self.page(user, &scope, None, Some(low), limit).await?
                } else {
                    self.page(user, &scope, Some(high), None, limit).await?
                };
                page.retain(|msg| MessageId(msg.id) > low && MessageId(msg.id) < high);
                page
            }
            _ => {
                return Ok(vec![self.fail(
                    "CHATHISTORY",
                    "INVALID_PARAMS",
                    &[sub.as_str()],
                    "Unknown subcommand",
                )])
            }
        };
        let me = user.name().to_string();
        let mut lines = Vec::new();
        for msg in page.iter().filter(|msg| msg.kind == MessageKind::Text) {
            lines.extend(message_lines(
                msg,
                &me,
                self.server_name.as_str(),
                self.caps,
                &mut self.batch_seq,
            ));
        }
        // The batch names the target as the client wrote it, so the client can match it.
        Ok(self.history_batch("chathistory", &target, lines))
    }

    /// Wraps history lines in a batch of `kind` when the client has `batch`.
    fn history_batch(
        &mut self,
        kind: &str,
        target: &str,
        lines: Vec<IrcMessage>,
    ) -> Vec<IrcMessage> {
        if !self.caps.has(super::caps::Cap::Batch) {
            return lines;
        }
        let reference = self.next_batch();
        let mut start = vec![format!("+{reference}"), kind.to_string()];
        if !target.is_empty() {
            start.push(target.to_string());
        }
        let mut out = vec![self.server_line("BATCH", start)];
        out.extend(in_batch(lines, &reference));
        out.push(self.server_line("BATCH", vec![format!("-{reference}")]));
        out
    }

    /// CHATHISTORY TARGETS: conversations whose latest message is between two times, in
    /// ascending order of that message (as the specification says). With more than `limit`,
    /// the ones nearest the first timestamp are kept, as BETWEEN pages from its first point.
    async fn history_targets(
        &mut self,
        user: &AuthedUser,
        a: &str,
        b: &str,
        limit: u32,
    ) -> Result<Vec<IrcMessage>, End> {
        let (Some(Point::Time(a)), Some(Point::Time(b))) = (parse_point(a), parse_point(b)) else {
            return Ok(vec![self.fail(
                "CHATHISTORY",
                "INVALID_PARAMS",
                &["TARGETS"],
                "TARGETS takes two timestamps",
            )]);
        };
        let (low, high) = (a.min(b), a.max(b));
        let conversations = match self.state.unread(user).await {
            Ok(c) => c,
            Err(e) => return Err(self.internal(&e)),
        };
        let mut found: Vec<(i64, i64, String, String)> = Vec::new();
        for c in conversations {
            let Some(last) = c.last else { continue };
            let Some(at) = parse_time(&last.sent_at) else {
                continue;
            };
            if at > low && at <= high {
                found.push((at, last.id, c.conversation, irc_time(&last.sent_at)));
            }
        }
        found.sort_by_key(|(at, id, _, _)| (*at, *id));
        let limit = limit as usize;
        if found.len() > limit {
            if a <= b {
                found.truncate(limit);
            } else {
                found.drain(..found.len() - limit);
            }
        }
        let lines = found
            .into_iter()
            .map(|(_, _, conversation, time)| {
                self.server_line(
                    "CHATHISTORY",
                    vec!["TARGETS".to_string(), conversation, time],
                )
            })
            .collect();
        Ok(self.history_batch("draft/chathistory-targets", "", lines))
    }

    /// One history page through the core, with the reader's permissions.
    async fn page(
        &mut self,
        user: &AuthedUser,
        conversation: &Readable,
        before: Option<MessageId>,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>, End> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let range = match (before, after) {
            (Some(id), _) => Range::Before(id),
            (None, Some(id)) => Range::After(id),
            (None, None) => Range::Latest,
        };
        match self.state.history(user, conversation, range, limit).await {
            Ok(page) => Ok(page.messages),
            Err(e) => Err(self.internal(&e)),
        }
    }

    /// The id below which `point` begins: messages strictly before it have smaller ids.
    async fn before_id(&mut self, point: Point) -> Result<MessageId, End> {
        match point {
            Point::Open => Ok(MessageId(i64::MAX)),
            Point::Id(id) => Ok(id),
            Point::Time(t) => Ok(MessageId(self.id_at(t.saturating_sub(1)).await?.get() + 1)),
        }
    }

    /// The id after which `point` ends: messages strictly after it have larger ids.
    async fn after_id(&mut self, point: Point) -> Result<MessageId, End> {
        match point {
            Point::Open => Ok(MessageId(0)),
            Point::Id(id) => Ok(id),
            Point::Time(t) => self.id_at(end_of_millisecond(t)).await,
        }
    }

    async fn id_at(&mut self, micros: i64) -> Result<MessageId, End> {
        self.state
            .last_id_at(micros)
            .await
            .map_err(|e| self.internal(&e))
    }

    /// A conversation the user may read (the core's rule), or `None`: IRC answers a
    /// conversation that does not exist and one the user may not read alike.
    async fn readable(&mut self, user: &AuthedUser, target: &str) -> Result<Option<Readable>, End> {
        match self.state.readable(user, target).await {
            Ok(r) => Ok(Some(r)),
            Err(CoreError::Refused(_)) => Ok(None),
            Err(CoreError::Internal(e)) => Err(self.internal(&e)),
        }
    }

    /// MARKREAD target [timestamp=T]: reads or moves the user's read marker (never back),
    /// and tells the user's other devices, native or IRC.
    pub(super) async fn markread(
        &mut self,
        user: &AuthedUser,
        m: &IrcMessage,
    ) -> Result<Vec<IrcMessage>, End> {
        let Some(target) = m.param(0).map(str::to_string) else {
            return Ok(vec![self.fail(
                "MARKREAD",
                "NEED_MORE_PARAMS",
                &[],
                "Missing target",
            )]);
        };
        let readable = self.readable(user, &target).await?;
        let Some(stamp) = m.param(1) else {
            // A conversation the user cannot read (or that does not exist) has no marker:
            // `*`, the same answer either way, so nothing is disclosed.
            let line = match readable {
                Some(r) => {
                    let upto = self.marker_of(user, &r).await;
                    self.markread_line(&r.conversation.to_string(), upto).await
                }
                None => self.server_line("MARKREAD", vec![target, "*".to_string()]),
            };
            return Ok(vec![line]);
        };
        let Some(readable) = readable else {
            return Ok(vec![self.fail(
                "MARKREAD",
                "INVALID_PARAMS",
                &[target.as_str()],
                "No such conversation, or you may not read it",
            )]);
        };
        let Some(Point::Time(t)) = parse_point(stamp) else {
            return Ok(vec![self.fail(
                "MARKREAD",
                "INVALID_PARAMS",
                &[target.as_str(), stamp],
                "Expected timestamp=TIME",
            )]);
        };
        let upto = self.id_at(end_of_millisecond(t)).await?;
        let now = self
            .state
            .mark_read(user, &readable, Some(upto))
            .await
            .map_err(|e| self.internal(&e))?;
        let conversation = readable.conversation.to_string();
        let conn = self.guard.as_ref().map_or(0, |g| g.conn_id());
        let notice = crate::core::hub::ReadMarker {
            conversation: conversation.clone(),
            upto: now,
        };
        self.state.hub.notify_user(user.user_id(), conn, notice);
        let line = self.markread_line(&conversation, Some(now)).await;
        Ok(vec![line])
    }

    /// `user`'s marker of a conversation (`None` if unset or unreadable).
    pub(super) async fn marker_of(&mut self, user: &AuthedUser, r: &Readable) -> Option<MessageId> {
        self.state.read_marker(user, r).await.unwrap_or(None)
    }

    /// The marker of `conversation` (`bob`, `#room`) if `user` may read it.
    pub(super) async fn marker_named(
        &mut self,
        user: &AuthedUser,
        conversation: &str,
    ) -> Option<MessageId> {
        match self.state.readable(user, conversation).await {
            Ok(r) => self.marker_of(user, &r).await,
            Err(_) => None,
        }
    }

    /// `MARKREAD target timestamp=…` (or `*`) for a marker at `upto` (`None`: not set).
    pub(super) async fn markread_line(
        &mut self,
        conversation: &str,
        upto: Option<MessageId>,
    ) -> IrcMessage {
        let time = match upto.filter(|id| id.get() > 0) {
            Some(id) => self.state.sent_at(id).await.unwrap_or(None),
            None => None,
        };
        let value = match time {
            Some(micros) => format!("timestamp={}", irc_time(&format_timestamp(micros))),
            None => "*".to_string(),
        };
        self.server_line("MARKREAD", vec![conversation.to_string(), value])
    }
}

/// The last microsecond a millisecond-precision timestamp covers: IRC writes our
/// microsecond times to the millisecond, so `timestamp=T` names every message within T's
/// millisecond. A finer timestamp is taken as it is.
fn end_of_millisecond(micros: i64) -> i64 {
    if micros % 1000 == 0 {
        micros + 999
    } else {
        micros
    }
}

/// Parses `*`, `msgid=ID` or `timestamp=TIME`.
fn parse_point(text: &str) -> Option<Point> {
    if text == "*" {
        return Some(Point::Open);
    }
    if let Some(id) = text.strip_prefix("msgid=") {
        return id.parse().ok().map(|id| Point::Id(MessageId(id)));
    }
    text.strip_prefix("timestamp=")
        .and_then(parse_time)
        .map(Point::Time)
}
