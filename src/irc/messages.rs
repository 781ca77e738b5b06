//! Messages from IRC clients: PRIVMSG and NOTICE to a nick (a direct message) or a channel
//! (a room), `draft/multiline` batches as one message, and echo-message. Every send goes
//! through the writer like a native `send`; its answer (the echo, or the refusal) comes back
//! to the session when the writer has committed it.

use futures::FutureExt;

use super::caps::Cap;
use super::message::IrcMessage;
use super::numerics::*;
use super::session::{Done, End, Incoming, Reply, Session, Stream};
use super::translate::message_lines;
use super::{MULTILINE_MAX_LINES, SERVER_NAME};
use crate::auth::AuthedUser;
use crate::protocol::{format_timestamp, Message, MessageKind, Username};
use crate::store::{NewMessage, StoreError, Target};

impl<S: Stream> Session<S> {
    pub(super) async fn privmsg(
        &mut self,
        user: &AuthedUser,
        m: &IrcMessage,
        label: Option<String>,
    ) -> Result<Reply, End> {
        let notice = m.command == "NOTICE";
        let Some(target) = m.param(0).filter(|t| !t.is_empty()) else {
            return Ok(Reply::Now(vec![self.num(
                ERR_NORECIPIENT,
                [format!("No recipient given ({})", m.command)],
            )]));
        };
        let Some(text) = m.param(1).filter(|t| !crate::protocol::is_blank(t)) else {
            return Ok(Reply::Now(vec![
                self.num(ERR_NOTEXTTOSEND, ["No text to send"])
            ]));
        };
        if target.contains(',') {
            return Ok(Reply::Now(vec![self.num(
                ERR_TOOMANYTARGETS,
                [target, "Too many targets: one target per message"],
            )]));
        }
        // CTCP: actions are messages (stored as actions, without the CTCP wrapping); other
        // requests have no one to answer them.
        let (text, action) = match ctcp_action(text) {
            Some(action) => (action, true),
            None if text.starts_with('\u{1}') => return Ok(Reply::Now(Vec::new())),
            None => (text, false),
        };
        if text.is_empty() {
            return Ok(Reply::Now(vec![
                self.num(ERR_NOTEXTTOSEND, ["No text to send"])
            ]));
        }
        self.send(
            user,
            target.to_string(),
            text.to_string(),
            (notice, action),
            label,
        )
        .await
    }

    /// Stores a message through the writer; the echo (or the refusal) comes back later.
    pub(super) async fn send(
        &mut self,
        user: &AuthedUser,
        target: String,
        body: String,
        (notice, action): (bool, bool),
        label: Option<String>,
    ) -> Result<Reply, End> {
        let command = if notice { "NOTICE" } else { "PRIVMSG" };
        let resolved = match self.resolve(&target).await? {
            Ok(t) => t,
            Err(line) => return Ok(Reply::Now(vec![line])),
        };
        let max = self.state.limits.max_body;
        if body.len() > max {
            let line = self.fail(
                command,
                "MESSAGE_TOO_LONG",
                &[&target],
                &format!("The message is {} bytes; the limit is {max}", body.len()),
            );
            return Ok(Reply::Now(vec![line]));
        }
        let to = match &resolved {
            Target::Room(_, name) => format!("#{name}"),
            Target::User(_, name) => name.clone(),
        };
        let message = NewMessage {
            sender_id: user.user_id(),
            sender_name: user.name().to_string(),
            sender_device_id: user.device_id(),
            target: resolved,
            body: body.clone(),
            key: format!("irc-{}", crate::protocol::new_idempotency_key()),
            action,
        };
        let writer = self.state.writer.clone();
        let (me, caps, echo) = (
            user.name().to_string(),
            self.caps,
            self.caps.has(Cap::EchoMessage),
        );
        // The echo's multiline batch (if any) opens and closes within one write, so its
        // reference only has to be unique among the batches open at that moment.
        let mut batch_seq = 0;
        self.in_flight.push(
            async move {
                let lines = match writer.send(message).await {
                    Ok(c) if echo => {
                        let stored = Message {
                            id: c.id,
                            from: me.clone(),
                            to,
                            body,
                            sent_at: format_timestamp(c.sent_at),
                            kind: MessageKind::Text,
                            member: None,
                            action,
                        };
                        let mut lines = message_lines(&stored, &me, caps, &mut batch_seq);
                        for l in &mut lines {
                            if l.command == "PRIVMSG" {
                                l.command = command.to_string();
                            }
                        }
                        lines
                    }
                    Ok(_) => Vec::new(),
                    Err(e) => vec![send_refusal(&me, &to, &e)],
                };
                Done::Reply { label, lines }
            }
            .boxed(),
        );
        Ok(Reply::Later)
    }

    /// Resolves a nick or channel to a send target, or the numeric refusing it.
    pub(super) async fn resolve(
        &mut self,
        target: &str,
    ) -> Result<Result<Target, IrcMessage>, End> {
        if target.starts_with('#') {
            return Ok(match self.room(target).await? {
                Ok(r) => Ok(Target::Room(r.id, r.name)),
                Err(line) => Err(line),
            });
        }
        let found = match Username::parse(target) {
            Ok(name) => self
                .state
                .find_user(&name)
                .await
                .map_err(|e| self.internal(&e))?,
            Err(_) => None,
        };
        Ok(match found {
            Some(u) => Ok(Target::User(u.id, u.name)),
            None => Err(self.num(ERR_NOSUCHNICK, [target, "No such nick"])),
        })
    }

    /// BATCH from the client: `draft/multiline` batches become one message.
    pub(super) async fn batch(
        &mut self,
        user: &AuthedUser,
        m: &IrcMessage,
        label: Option<String>,
    ) -> Result<Vec<IrcMessage>, End> {
        let Some(reference) = m.param(0) else {
            return Ok(self.need(m, 1).err().unwrap_or_default());
        };
        if let Some(reference) = reference.strip_prefix('+') {
            if m.param(1) != Some("draft/multiline") || !self.caps.has(Cap::Multiline) {
                return Ok(vec![self.fail(
                    "BATCH",
                    "UNKNOWN_TYPE",
                    &[],
                    "Only draft/multiline batches are accepted",
                )]);
            }
            let Some(target) = m.param(2) else {
                return Ok(self.need(m, 3).err().unwrap_or_default());
            };
            self.incoming = Some(Incoming {
                reference: reference.to_string(),
                target: target.to_string(),
                label,
                body: String::new(),
                lines: 0,
                notice: false,
                failed: false,
            });
            return Ok(Vec::new());
        }
        let Some(batch) = self.incoming.take() else {
            return Ok(vec![self.fail(
                "BATCH",
                "INVALID_REFTAG",
                &[],
                "No batch is open",
            )]);
        };
        if reference.strip_prefix('-') != Some(batch.reference.as_str()) {
            return Ok(vec![self.fail(
                "BATCH",
                "INVALID_REFTAG",
                &[],
                "That batch is not open",
            )]);
        }
        if batch.failed {
            return Ok(Vec::new());
        }
        if crate::protocol::is_blank(&batch.body) {
            return Ok(vec![self.num(ERR_NOTEXTTOSEND, ["No text to send"])]);
        }
        match self
            .send(
                user,
                batch.target,
                batch.body,
                (batch.notice, false),
                batch.label,
            )
            .await?
        {
            Reply::Now(lines) => Ok(lines),
            Reply::Later => Ok(Vec::new()),
        }
    }

    /// A line inside an open multiline batch.
    pub(super) fn multiline_line(&mut self, reference: String, m: &IrcMessage) -> Vec<IrcMessage> {
        let max_bytes = self.state.limits.max_body;
        let Some(batch) = self.incoming.as_mut().filter(|b| b.reference == reference) else {
            return vec![self.fail(&m.command, "INVALID_REFTAG", &[], "That batch is not open")];
        };
        if batch.failed {
            return Vec::new();
        }
        let problem = if !matches!(m.command.as_str(), "PRIVMSG" | "NOTICE") {
            Some((
                "MULTILINE_INVALID",
                "Only PRIVMSG and NOTICE belong in a multiline batch",
            ))
        } else if m.param(0) != Some(batch.target.as_str()) {
            Some((
                "MULTILINE_INVALID_TARGET",
                "Every line must have the batch's target",
            ))
        } else {
            None
        };
        if let Some((code, text)) = problem {
            batch.failed = true;
            return vec![self.fail("BATCH", code, &[], text)];
        }
        let text = m.param(1).unwrap_or("");
        let concat = m.tag_value("draft/multiline-concat").is_some();
        if batch.lines > 0 && !concat {
            batch.body.push('\n');
        }
        batch.body.push_str(text);
        batch.lines += 1;
        batch.notice = m.command == "NOTICE";
        if batch.lines > MULTILINE_MAX_LINES {
            batch.failed = true;
            return vec![self.fail(
                "BATCH",
                "MULTILINE_MAX_LINES",
                &[&MULTILINE_MAX_LINES.to_string()],
                "Too many lines in the batch",
            )];
        }
        if batch.body.len() > max_bytes {
            batch.failed = true;
            return vec![self.fail(
                "BATCH",
                "MULTILINE_MAX_BYTES",
                &[&max_bytes.to_string()],
                "The batch is too long",
            )];
        }
        Vec::new()
    }
}

/// The text of a CTCP ACTION (`\x01ACTION waves\x01`, the closing `\x01` optional), or
/// `None` for anything else.
pub(super) fn ctcp_action(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("\u{1}ACTION")?;
    if !(rest.is_empty() || rest.starts_with(' ') || rest == "\u{1}") {
        return None;
    }
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    Some(rest.strip_suffix('\u{1}').unwrap_or(rest))
}

/// The numeric refusing a send, from the writer's answer.
fn send_refusal(me: &str, to: &str, e: &StoreError) -> IrcMessage {
    let (code, text) = match e {
        StoreError::NotMember(text) => (ERR_CANNOTSENDTOCHAN, text.clone()),
        StoreError::UnknownRoom(_) => (ERR_NOSUCHCHANNEL, "No such channel".to_string()),
        StoreError::Forbidden(text) => (ERR_CANNOTSENDTOCHAN, text.clone()),
        other => {
            tracing::error!(error = %other, "IRC send failed");
            (
                ERR_UNKNOWNERROR,
                "The message could not be stored; send it again".to_string(),
            )
        }
    };
    IrcMessage::new(code, [me, to, text.as_str()]).from_source(SERVER_NAME)
}
