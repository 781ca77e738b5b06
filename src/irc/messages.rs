//! Messages from IRC clients: PRIVMSG and NOTICE to a nick (a direct message) or a channel
//! (a room), `draft/multiline` batches as one message, and echo-message. Every send is the
//! core's `send`, as a native one is; its answer (the echo, or the refusal) comes back to the
//! session when the writer has committed it.

use futures::FutureExt;

use super::caps::Cap;
use super::message::IrcMessage;
use super::numerics::*;
use super::refusals;
use super::session::{Done, End, Incoming, Reply, Session, Stream};
use super::translate::message_lines;
use super::MULTILINE_MAX_LINES;
use crate::auth::AuthedUser;
use crate::core::RoomRefusal;
use crate::core::{CoreError, Outgoing, Refusal};
use crate::protocol::{format_timestamp, Message, MessageKind};
use crate::store::Target;

impl<S: Stream> Session<S> {
    pub(super) async fn privmsg(
        &mut self,
        user: &AuthedUser,
        m: &IrcMessage,
        label: Option<String>,
    ) -> Result<Reply, End> {
        let notice = m.command == "NOTICE";
        let reply = self.privmsg_or_refusal(user, m, notice, label).await?;
        // NOTICE never causes an automatic reply: its refusals are not sent (its echo is).
        Ok(match reply {
            Reply::Now(_) if notice => Reply::Now(Vec::new()),
            other => other,
        })
    }

    async fn privmsg_or_refusal(
        &mut self,
        user: &AuthedUser,
        m: &IrcMessage,
        notice: bool,
        label: Option<String>,
    ) -> Result<Reply, End> {
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
        let outgoing = Outgoing {
            to: target.clone(),
            body: body.clone(),
            key: format!("irc-{}", crate::protocol::new_idempotency_key()),
            action,
        };
        let (to, committed) = match self.state.send(user, outgoing).await {
            Ok(sending) => (sending.to, sending.committed),
            Err(CoreError::Refused(Refusal::MessageTooLarge { size, max })) => {
                let line = self.fail(
                    command,
                    "MESSAGE_TOO_LONG",
                    &[&target],
                    &format!("The message is {size} bytes; the limit is {max}"),
                );
                return Ok(Reply::Now(vec![line]));
            }
            Err(CoreError::Refused(Refusal::EmptyMessage)) => {
                return Ok(Reply::Now(vec![
                    self.num(ERR_NOTEXTTOSEND, ["No text to send"])
                ]))
            }
            Err(e) => return Ok(Reply::Now(vec![self.target_refusal(&target, e)?])),
        };
        let (me, caps, echo) = (
            user.name().to_string(),
            self.caps,
            self.caps.has(Cap::EchoMessage),
        );
        let server = self.server_name().to_string();
        // The echo's multiline batch (if any) opens and closes within one write, so its
        // reference only has to be unique among the batches open at that moment.
        let mut batch_seq = 0;
        self.answer_later(
            async move {
                let lines = match committed.await {
                    Ok(c) if echo => {
                        let stored = Message {
                            id: c.id.get(),
                            from: me.clone(),
                            to,
                            body,
                            sent_at: format_timestamp(c.sent_at),
                            kind: MessageKind::Text,
                            member: None,
                            action,
                        };
                        let mut lines = message_lines(&stored, &me, &server, caps, &mut batch_seq);
                        for l in &mut lines {
                            if l.command == "PRIVMSG" {
                                l.command = command.to_string();
                            }
                        }
                        lines
                    }
                    Ok(_) => Vec::new(),
                    // NOTICE never causes an automatic reply.
                    Err(e) if notice => {
                        log_unexpected(&e);
                        Vec::new()
                    }
                    Err(e) => vec![send_refusal(&server, &me, &to, &e)],
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
        match self.state.target(target).await {
            Ok(t) => Ok(Ok(t)),
            Err(e) => Ok(Err(self.target_refusal(target, e)?)),
        }
    }

    /// The numeric for a nick or channel that cannot be addressed; a server failure ends
    /// the connection.
    fn target_refusal(&self, target: &str, e: CoreError) -> Result<IrcMessage, End> {
        match e {
            CoreError::Internal(e) => Err(self.internal(&e)),
            CoreError::Refused(Refusal::UnknownRoom { .. } | Refusal::BadRoomName { .. }) => {
                Ok(self.num(ERR_NOSUCHCHANNEL, [target, "No such channel"]))
            }
            CoreError::Refused(_) if target.starts_with('#') => {
                Ok(self.num(ERR_NOSUCHCHANNEL, [target, "No such channel"]))
            }
            CoreError::Refused(_) => Ok(self.num(ERR_NOSUCHNICK, [target, "No such nick"])),
        }
    }

    /// BATCH from the client: `draft/multiline` batches become one message. A label on the
    /// opening `BATCH` labels the answer to the whole batch (the echo, or the refusal), which
    /// comes at its end; the opening itself is not answered.
    pub(super) async fn batch(
        &mut self,
        user: &AuthedUser,
        m: &IrcMessage,
        label: Option<String>,
    ) -> Result<Reply, End> {
        let Some(reference) = m.param(0) else {
            return Ok(Reply::Now(self.need(m, 1).err().unwrap_or_default()));
        };
        if let Some(reference) = reference.strip_prefix('+') {
            if m.param(1) != Some("draft/multiline") || !self.caps.has(Cap::Multiline) {
                return Ok(Reply::Now(vec![self.fail(
                    "BATCH",
                    "UNKNOWN_TYPE",
                    &[],
                    "Only draft/multiline batches are accepted",
                )]));
            }
            let Some(target) = m.param(2) else {
                return Ok(Reply::Now(self.need(m, 3).err().unwrap_or_default()));
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
            return Ok(Reply::Nothing);
        }
        let Some(batch) = self.incoming.take() else {
            return Ok(Reply::Now(vec![self.fail(
                "BATCH",
                "INVALID_REFTAG",
                &[],
                "No batch is open",
            )]));
        };
        if reference.strip_prefix('-') != Some(batch.reference.as_str()) {
            return Ok(Reply::Now(vec![self.fail(
                "BATCH",
                "INVALID_REFTAG",
                &[],
                "That batch is not open",
            )]));
        }
        if batch.failed {
            // Answered (with its label) when it failed.
            return Ok(Reply::Nothing);
        }
        if crate::protocol::is_blank(&batch.body) {
            let line = self.num(ERR_NOTEXTTOSEND, ["No text to send"]);
            self.answer(batch.label, vec![line]).await?;
            return Ok(Reply::Nothing);
        }
        match self
            .send(
                user,
                batch.target,
                batch.body,
                (batch.notice, false),
                batch.label.clone(),
            )
            .await?
        {
            Reply::Now(lines) => {
                let lines = if batch.notice { Vec::new() } else { lines };
                self.answer(batch.label, lines).await?;
                Ok(Reply::Nothing)
            }
            _ => Ok(Reply::Nothing),
        }
    }

    /// A line inside an open multiline batch: nothing, or the `FAIL` ending the batch (with
    /// the batch's label, as the answer to it).
    pub(super) fn multiline_line(
        &mut self,
        reference: String,
        m: &IrcMessage,
    ) -> (Option<String>, Vec<IrcMessage>) {
        let max_bytes = self.state.limits.max_body;
        let server = self.server_name().to_string();
        let fail = |code: &str, context: &[&str], text: &str| {
            let mut params = vec!["BATCH".to_string(), code.to_string()];
            params.extend(context.iter().map(|s| s.to_string()));
            params.push(text.to_string());
            IrcMessage::new("FAIL", params).from_source(server.as_str())
        };
        let Some(batch) = self.incoming.as_mut().filter(|b| b.reference == reference) else {
            let line = self.fail(&m.command, "INVALID_REFTAG", &[], "That batch is not open");
            return (None, vec![line]);
        };
        if batch.failed {
            return (None, Vec::new());
        }
        let text = m.param(1).unwrap_or("");
        let concat = m.tag_value("draft/multiline-concat").is_some();
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
        } else if concat && text.is_empty() {
            Some((
                "MULTILINE_INVALID",
                "A blank line cannot be concatenated (draft/multiline-concat)",
            ))
        } else {
            None
        };
        if let Some((code, text)) = problem {
            batch.failed = true;
            return (batch.label.take(), vec![fail(code, &[], text)]);
        }
        if batch.lines > 0 && !concat {
            batch.body.push('\n');
        }
        batch.body.push_str(text);
        batch.lines += 1;
        batch.notice = m.command == "NOTICE";
        if batch.lines > MULTILINE_MAX_LINES {
            batch.failed = true;
            let line = fail(
                "MULTILINE_MAX_LINES",
                &[&MULTILINE_MAX_LINES.to_string()],
                "Too many lines in the batch",
            );
            return (batch.label.take(), vec![line]);
        }
        if batch.body.len() > max_bytes {
            batch.failed = true;
            let line = fail(
                "MULTILINE_MAX_BYTES",
                &[&max_bytes.to_string()],
                "The batch is too long",
            );
            return (batch.label.take(), vec![line]);
        }
        (None, Vec::new())
    }
}

/// Logs a writer failure that is not a refusal (a refused NOTICE is not answered).
fn log_unexpected(e: &CoreError) {
    if let CoreError::Internal(e) = e {
        tracing::error!(error = %e, "IRC send failed");
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
fn send_refusal(server: &str, me: &str, to: &str, e: &CoreError) -> IrcMessage {
    let (code, text) = match e {
        CoreError::Refused(Refusal::Room(r @ RoomRefusal::UnknownRoom { .. })) => {
            (ERR_NOSUCHCHANNEL, refusals::room_text(r))
        }
        CoreError::Refused(Refusal::Room(r)) => (ERR_CANNOTSENDTOCHAN, refusals::room_text(r)),
        other => {
            tracing::error!(error = %other, "IRC send failed");
            (
                ERR_UNKNOWNERROR,
                "The message could not be stored; send it again".to_string(),
            )
        }
    };
    IrcMessage::new(code, [me, to, text.as_str()]).from_source(server)
}
