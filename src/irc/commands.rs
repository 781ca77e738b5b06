//! Commands after registration: messages to nicks and channels (with echo-message and
//! draft/multiline), channels as rooms (JOIN, PART, INVITE, KICK, NAMES, TOPIC, LIST), and
//! what common clients ask about users (WHO, WHOIS, MODE, AWAY).
//!
//! Every change goes through the writer as the native protocol's does, so permissions are
//! the core's: a private room needs an invitation, only the owner invites and kicks, a
//! non-member cannot send to a room.

use futures::FutureExt;

use super::caps::Cap;
use super::message::IrcMessage;
use super::numerics::*;
use super::register::pong;
use super::session::{Done, End, Incoming, Reply, Session, Stream};
use super::translate::{message_lines, source_of};
use super::{MAX_JOIN_TARGETS, MULTILINE_MAX_LINES, SERVER_NAME};
use crate::auth::AuthedUser;
use crate::protocol::{format_timestamp, Message, MessageKind, RoomName, Username};
use crate::store::{NewMessage, RoomChange, RoomRef, StoreError, Target};

impl<S: Stream> Session<S> {
    /// Handles a command from a registered client.
    pub(super) async fn command(
        &mut self,
        m: IrcMessage,
        label: Option<String>,
    ) -> Result<Reply, End> {
        let Some(user) = self.user.clone() else {
            return Err(End::Close("Not authenticated".into()));
        };
        let charged = matches!(
            m.command.as_str(),
            "PRIVMSG"
                | "NOTICE"
                | "JOIN"
                | "PART"
                | "INVITE"
                | "KICK"
                | "NAMES"
                | "LIST"
                | "WHO"
                | "WHOIS"
                | "CHATHISTORY"
                | "MARKREAD"
        );
        if charged && self.bucket.take().is_err() {
            return Ok(Reply::Now(vec![self.num(
                RPL_TRYAGAIN,
                [
                    m.command.as_str(),
                    "Please wait a while and try again (rate limited)",
                ],
            )]));
        }
        let lines = match m.command.as_str() {
            "PRIVMSG" | "NOTICE" => return self.privmsg(&user, &m, label).await,
            "TAGMSG" => Vec::new(),
            "BATCH" => self.batch(&user, &m, label).await?,
            "JOIN" => self.join(&user, &m).await?,
            "PART" => self.part(&user, &m).await?,
            "INVITE" => self.invite(&user, &m).await?,
            "KICK" => self.kick(&user, &m).await?,
            "NAMES" => match m.param(0) {
                Some(chan) => self.names(&user, chan).await?,
                None => vec![self.num(RPL_ENDOFNAMES, ["*", "End of /NAMES list"])],
            },
            "TOPIC" => self.topic(&m),
            "LIST" => self.list(&user).await?,
            "WHO" => self.who(&user, &m).await?,
            "WHOIS" => self.whois(&m).await?,
            "MODE" => self.mode(&user, &m),
            "AWAY" => match m.param(0).filter(|t| !t.is_empty()) {
                Some(_) => vec![self.num(RPL_NOWAWAY, ["You have been marked as being away"])],
                None => vec![self.num(RPL_UNAWAY, ["You are no longer marked as being away"])],
            },
            "MOTD" => self.motd(),
            "PING" => vec![pong(&m)],
            "PONG" => {
                if let Some(token) = m.params.last() {
                    self.on_pong(token).await?;
                }
                Vec::new()
            }
            "QUIT" => {
                let reason = m.param(0).unwrap_or("Client quit");
                return Err(End::Close(format!("Closing link (Quit: {reason})")));
            }
            "NICK" => match m.param(0) {
                Some(n) if n.eq_ignore_ascii_case(user.name()) => Vec::new(),
                Some(n) => vec![self.num(
                    ERR_ERRONEUSNICKNAME,
                    [n, "Your nick is your account name on this server"],
                )],
                None => vec![self.num("431", ["No nickname given"])],
            },
            "CAP" => self.cap(&m)?,
            "AUTHENTICATE" => vec![self.num(ERR_SASLALREADY, ["You have already authenticated"])],
            "PASS" | "USER" => vec![self.num(ERR_ALREADYREGISTERED, ["You may not reregister"])],
            "CHATHISTORY" => self.chathistory(&user, &m).await?,
            "MARKREAD" => self.markread(&user, &m).await?,
            other => vec![self.num(ERR_UNKNOWNCOMMAND, [other, "Unknown command"])],
        };
        Ok(Reply::Now(lines))
    }

    /// The parameters every command needs, or the 461 answering their absence.
    fn need(&self, m: &IrcMessage, n: usize) -> Result<(), Vec<IrcMessage>> {
        if m.params.len() >= n && m.params.iter().take(n).all(|p| !p.is_empty()) {
            Ok(())
        } else {
            Err(vec![self.num(
                ERR_NEEDMOREPARAMS,
                [m.command.as_str(), "Not enough parameters"],
            )])
        }
    }

    async fn privmsg(
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
        let Some(text) = m.param(1).filter(|t| !t.is_empty()) else {
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
        // CTCP: actions are messages; other requests have no one to answer them.
        if text.starts_with('\u{1}') && !text.starts_with("\u{1}ACTION ") {
            return Ok(Reply::Now(Vec::new()));
        }
        self.send(user, target.to_string(), text.to_string(), notice, label)
            .await
    }

    /// Stores a message through the writer; the echo (or the refusal) comes back later.
    async fn send(
        &mut self,
        user: &AuthedUser,
        target: String,
        body: String,
        notice: bool,
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
            key: format!("irc-{:032x}", rand::random::<u128>()),
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
    async fn resolve(&mut self, target: &str) -> Result<Result<Target, IrcMessage>, End> {
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

    /// Finds a live room, or the numeric saying there is none.
    pub(super) async fn room(&mut self, channel: &str) -> Result<Result<RoomRef, IrcMessage>, End> {
        let Ok(name) = RoomName::parse(channel) else {
            return Ok(Err(
                self.num(ERR_NOSUCHCHANNEL, [channel, "No such channel"])
            ));
        };
        match self
            .state
            .find_room(&name)
            .await
            .map_err(|e| self.internal(&e))?
        {
            Some(r) => Ok(Ok(r)),
            None => Ok(Err(
                self.num(ERR_NOSUCHCHANNEL, [channel, "No such channel"])
            )),
        }
    }

    /// Logs an internal failure; the connection is closed with a generic reason.
    pub(super) fn internal(&self, e: &dyn std::fmt::Display) -> End {
        tracing::error!(error = %e, "IRC request failed");
        End::Close("Internal server error".into())
    }

    /// BATCH from the client: `draft/multiline` batches become one message.
    async fn batch(
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
        if batch.body.is_empty() {
            return Ok(vec![self.num(ERR_NOTEXTTOSEND, ["No text to send"])]);
        }
        match self
            .send(user, batch.target, batch.body, batch.notice, batch.label)
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

    /// JOIN: a room joins (public), is created (new name), or is refused (private, not
    /// invited). The client sees its JOIN and the member list.
    async fn join(&mut self, user: &AuthedUser, m: &IrcMessage) -> Result<Vec<IrcMessage>, End> {
        if let Err(lines) = self.need(m, 1) {
            return Ok(lines);
        }
        let mut out = Vec::new();
        for channel in channels(m) {
            let Ok(name) = RoomName::parse(channel).map_err(|_| ()).and_then(|n| {
                if channel.starts_with('#') {
                    Ok(n)
                } else {
                    Err(())
                }
            }) else {
                out.push(self.num(ERR_BADCHANMASK, [channel, "Bad channel name"]));
                continue;
            };
            let by = (user.user_id(), user.name().to_string());
            let change = match self
                .state
                .find_room(&name)
                .await
                .map_err(|e| self.internal(&e))?
            {
                Some(room) => RoomChange::Join {
                    room_id: room.id,
                    by,
                },
                None => RoomChange::Create {
                    name: name.as_str().to_string(),
                    private: false,
                    by,
                },
            };
            let display = name.to_string();
            let result = self.state.writer.change_room(change).await;
            if let Ok((_, event)) = result {
                self.echoed.insert(event);
            }
            match result {
                Ok(_) | Err(StoreError::AlreadyMember(_)) => {
                    out.push(
                        IrcMessage::new("JOIN", [display.as_str()])
                            .from_source(source_of(user.name())),
                    );
                    out.extend(self.names(user, &display).await?);
                    out.extend(self.channel_marker(&display).await);
                }
                Err(StoreError::Forbidden(text)) => {
                    out.push(self.num(
                        ERR_INVITEONLYCHAN,
                        [
                            display.as_str(),
                            &format!("Cannot join channel (+i): {text}"),
                        ],
                    ));
                }
                Err(e) => out.push(self.refusal(&display, e)?),
            }
        }
        Ok(out)
    }

    /// A store refusal as a numeric about `channel`; a server failure ends the connection.
    fn refusal(&self, channel: &str, e: StoreError) -> Result<IrcMessage, End> {
        Ok(match e {
            StoreError::UnknownRoom(_) => self.num(ERR_NOSUCHCHANNEL, [channel, "No such channel"]),
            StoreError::NotMember(text) => self.num(ERR_NOTONCHANNEL, [channel, text.as_str()]),
            StoreError::AlreadyMember(text) => {
                self.num(ERR_USERONCHANNEL, [channel, text.as_str()])
            }
            StoreError::Forbidden(text) => self.num(ERR_CHANOPRIVSNEEDED, [channel, text.as_str()]),
            StoreError::RoomExists(text) => self.num(ERR_UNKNOWNERROR, [channel, text.as_str()]),
            other => return Err(self.internal(&other)),
        })
    }

    async fn part(&mut self, user: &AuthedUser, m: &IrcMessage) -> Result<Vec<IrcMessage>, End> {
        if let Err(lines) = self.need(m, 1) {
            return Ok(lines);
        }
        let mut out = Vec::new();
        for channel in channels(m) {
            let room = match self.room(channel).await? {
                Ok(r) => r,
                Err(line) => {
                    out.push(line);
                    continue;
                }
            };
            let display = format!("#{}", room.name);
            let by = (user.user_id(), user.name().to_string());
            match self
                .state
                .writer
                .change_room(RoomChange::Leave {
                    room_id: room.id,
                    by,
                })
                .await
            {
                Ok((_, event)) => {
                    self.echoed.insert(event);
                    out.push(IrcMessage::new("PART", [display]).from_source(source_of(user.name())))
                }
                Err(e) => out.push(self.refusal(&display, e)?),
            }
        }
        Ok(out)
    }

    async fn invite(&mut self, user: &AuthedUser, m: &IrcMessage) -> Result<Vec<IrcMessage>, End> {
        if let Err(lines) = self.need(m, 2) {
            return Ok(lines);
        }
        self.member_change(user, &m.params[1], &m.params[0], true)
            .await
    }

    async fn kick(&mut self, user: &AuthedUser, m: &IrcMessage) -> Result<Vec<IrcMessage>, End> {
        if let Err(lines) = self.need(m, 2) {
            return Ok(lines);
        }
        self.member_change(user, &m.params[0], &m.params[1], false)
            .await
    }

    /// INVITE (adds the user at once) or KICK, by the room's owner.
    async fn member_change(
        &mut self,
        user: &AuthedUser,
        channel: &str,
        nick: &str,
        invite: bool,
    ) -> Result<Vec<IrcMessage>, End> {
        let room = match self.room(channel).await? {
            Ok(r) => r,
            Err(line) => return Ok(vec![line]),
        };
        let who = match self.resolve(nick).await? {
            Ok(Target::User(id, name)) => (id, name),
            Ok(Target::Room(..)) | Err(_) => {
                return Ok(vec![self.num(ERR_NOSUCHNICK, [nick, "No such nick"])])
            }
        };
        let display = format!("#{}", room.name);
        let by = (user.user_id(), user.name().to_string());
        let change = if invite {
            RoomChange::Invite {
                room_id: room.id,
                by,
                user: who.clone(),
            }
        } else {
            RoomChange::Kick {
                room_id: room.id,
                by,
                user: who.clone(),
            }
        };
        let result = self.state.writer.change_room(change).await;
        if let (Ok((_, event)), false) = (&result, invite) {
            self.echoed.insert(*event);
        }
        match result {
            Ok(_) if invite => Ok(vec![
                self.num(RPL_INVITING, [who.1.as_str(), display.as_str()])
            ]),
            Ok(_) => Ok(vec![IrcMessage::new(
                "KICK",
                [display, who.1, format!("removed by {}", user.name())],
            )
            .from_source(source_of(user.name()))]),
            Err(StoreError::NotMember(text)) if !invite => Ok(vec![self.num(
                ERR_USERNOTINCHANNEL,
                [who.1.as_str(), display.as_str(), text.as_str()],
            )]),
            Err(e) => Ok(vec![self.refusal(&display, e)?]),
        }
    }

    /// NAMES: the owner is `@`. A private room's members are shown to members only.
    pub(super) async fn names(
        &mut self,
        user: &AuthedUser,
        channel: &str,
    ) -> Result<Vec<IrcMessage>, End> {
        let end = self.num(RPL_ENDOFNAMES, [channel, "End of /NAMES list"]);
        let room = match self.room(channel).await? {
            Ok(r) => r,
            Err(_) => return Ok(vec![end]),
        };
        let display = format!("#{}", room.name);
        let end = self.num(RPL_ENDOFNAMES, [display.as_str(), "End of /NAMES list"]);
        let store = &self.state.store;
        if room.private
            && !store
                .is_member(room.id, user.user_id())
                .await
                .map_err(|e| self.internal(&e))?
        {
            return Ok(vec![end]);
        }
        let members = store
            .room_members(&room)
            .await
            .map_err(|e| self.internal(&e))?;
        let symbol = if room.private { "*" } else { "=" };
        let names: Vec<String> = members
            .iter()
            .map(|m| {
                if m.role == "owner" {
                    format!("@{}", m.user)
                } else {
                    m.user.clone()
                }
            })
            .collect();
        let mut out = Vec::new();
        // Keep each 353 line well inside the line length.
        for chunk in names.chunks(12) {
            out.push(self.num(RPL_NAMREPLY, [symbol, display.as_str(), &chunk.join(" ")]));
        }
        out.push(end);
        Ok(out)
    }

    /// Rooms have no topic: the query says so; setting one is refused.
    fn topic(&self, m: &IrcMessage) -> Vec<IrcMessage> {
        if let Err(lines) = self.need(m, 1) {
            return lines;
        }
        if m.params.len() > 1 {
            return vec![self.num(
                ERR_NOCHANMODES,
                [m.params[0].as_str(), "Rooms have no topic on this server"],
            )];
        }
        vec![self.num(RPL_NOTOPIC, [m.params[0].as_str(), "No topic is set"])]
    }

    /// LIST: every public room and the user's private ones.
    async fn list(&mut self, user: &AuthedUser) -> Result<Vec<IrcMessage>, End> {
        let rooms = self
            .state
            .store
            .room_list(user.user_id(), true)
            .await
            .map_err(|e| self.internal(&e))?;
        let mut out = vec![self.num(RPL_LISTSTART, ["Channel", "Users  Name"])];
        for r in rooms {
            let modes = if r.private { "[+i] " } else { "" };
            out.push(self.num(
                RPL_LIST,
                [
                    r.name,
                    r.members.to_string(),
                    format!("{modes}owner: {}", r.owner),
                ],
            ));
        }
        out.push(self.num(RPL_LISTEND, ["End of /LIST"]));
        Ok(out)
    }

    /// WHO for a channel (its members, if visible) or a nick.
    async fn who(&mut self, user: &AuthedUser, m: &IrcMessage) -> Result<Vec<IrcMessage>, End> {
        let mask = m.param(0).unwrap_or("*").to_string();
        let mut out = Vec::new();
        let who_line = |s: &Self, channel: &str, nick: &str, op: bool| {
            let flags = if op { "H@" } else { "H" };
            s.num(
                RPL_WHOREPLY,
                [
                    channel,
                    nick,
                    SERVER_NAME,
                    SERVER_NAME,
                    nick,
                    flags,
                    &format!("0 {nick}"),
                ],
            )
        };
        if mask.starts_with('#') {
            if let Ok(room) = self.room(&mask).await? {
                let display = format!("#{}", room.name);
                let store = &self.state.store;
                let visible = !room.private
                    || store
                        .is_member(room.id, user.user_id())
                        .await
                        .map_err(|e| self.internal(&e))?;
                if visible {
                    let members = store
                        .room_members(&room)
                        .await
                        .map_err(|e| self.internal(&e))?;
                    for member in members {
                        out.push(who_line(
                            self,
                            &display,
                            &member.user,
                            member.role == "owner",
                        ));
                    }
                }
            }
        } else if let Ok(Target::User(_, name)) = self.resolve(&mask).await? {
            out.push(who_line(self, "*", &name, false));
        }
        out.push(self.num(RPL_ENDOFWHO, [mask.as_str(), "End of WHO list"]));
        Ok(out)
    }

    async fn whois(&mut self, m: &IrcMessage) -> Result<Vec<IrcMessage>, End> {
        if let Err(lines) = self.need(m, 1) {
            return Ok(lines);
        }
        // `WHOIS server nick` names the nick last.
        let nick = m.params.last().cloned().unwrap_or_default();
        match self.resolve(&nick).await? {
            Ok(Target::User(_, name)) => Ok(vec![
                self.num(
                    RPL_WHOISUSER,
                    [
                        name.as_str(),
                        name.as_str(),
                        SERVER_NAME,
                        "*",
                        name.as_str(),
                    ],
                ),
                self.num(RPL_WHOISSERVER, [name.as_str(), SERVER_NAME, "chatd"]),
                self.num(
                    RPL_WHOISACCOUNT,
                    [name.as_str(), name.as_str(), "is logged in as"],
                ),
                self.num(RPL_ENDOFWHOIS, [name.as_str(), "End of /WHOIS list"]),
            ]),
            _ => Ok(vec![
                self.num(ERR_NOSUCHNICK, [nick.as_str(), "No such nick"]),
                self.num(RPL_ENDOFWHOIS, [nick.as_str(), "End of /WHOIS list"]),
            ]),
        }
    }

    /// MODE: channel modes are fixed (`+i` for private rooms), user modes are `+i`.
    fn mode(&self, user: &AuthedUser, m: &IrcMessage) -> Vec<IrcMessage> {
        if let Err(lines) = self.need(m, 1) {
            return lines;
        }
        let target = m.params[0].as_str();
        if target.starts_with('#') {
            return match m.param(1) {
                None => vec![self.num(RPL_CHANNELMODEIS, [target, "+nt"])],
                Some("b") => vec![self.num("368", [target, "End of channel ban list"])],
                Some(_) => vec![self.num(
                    ERR_CHANOPRIVSNEEDED,
                    [target, "Channel modes cannot be changed on this server"],
                )],
            };
        }
        if !target.eq_ignore_ascii_case(user.name()) {
            return vec![self.num(ERR_USERSDONTMATCH, ["Cannot change mode for other users"])];
        }
        match m.param(1) {
            None | Some("+i") => vec![self.num(RPL_UMODEIS, ["+i"])],
            Some(_) => vec![self.num(ERR_UMODEUNKNOWNFLAG, ["Unknown MODE flag"])],
        }
    }

    /// The read marker of a channel just joined, for clients with draft/read-marker.
    async fn channel_marker(&mut self, channel: &str) -> Option<IrcMessage> {
        if !self.caps.has(Cap::ReadMarker) {
            return None;
        }
        Some(self.markread_line(channel, None).await)
    }

    /// JOIN lines and member lists for every room the user is in (at registration).
    pub(super) async fn current_rooms(
        &mut self,
        user: &AuthedUser,
    ) -> Result<Vec<IrcMessage>, End> {
        let rooms = self
            .state
            .store
            .room_list(user.user_id(), false)
            .await
            .map_err(|e| self.internal(&e))?;
        let mut out = Vec::new();
        for r in rooms.into_iter().filter(|r| r.member) {
            out.push(
                IrcMessage::new("JOIN", [r.name.as_str()]).from_source(source_of(user.name())),
            );
            out.extend(self.names(user, &r.name).await?);
            out.extend(self.channel_marker(&r.name).await);
        }
        Ok(out)
    }
}

/// The channels of a JOIN or PART (comma-separated), at most [`MAX_JOIN_TARGETS`].
fn channels(m: &IrcMessage) -> impl Iterator<Item = &str> {
    m.params[0]
        .split(',')
        .filter(|c| !c.is_empty())
        .take(MAX_JOIN_TARGETS)
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
