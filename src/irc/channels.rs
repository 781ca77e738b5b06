//! Channels as rooms: JOIN (public rooms; a new name creates one), PART, INVITE, KICK and
//! DROP (the owner's), NAMES, TOPIC and LIST, and the rooms shown at registration. Membership
//! changes go through the writer, whose checks are the permissions.

use super::caps::Cap;
use super::message::IrcMessage;
use super::numerics::*;
use super::session::{End, Session, Stream};
use super::translate::{source_of, ROOM_DELETED};
use super::MAX_JOIN_TARGETS;
use crate::auth::AuthedUser;
use crate::protocol::RoomName;
use crate::store::{RoomChange, RoomRef, StoreError, Target};

impl<S: Stream> Session<S> {
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

    /// JOIN or PART with a comma-separated list of channels (at most
    /// [`MAX_JOIN_TARGETS`]); each gets its own answer.
    pub(super) async fn join_or_part(
        &mut self,
        user: &AuthedUser,
        m: &IrcMessage,
    ) -> Result<Vec<IrcMessage>, End> {
        if let Err(lines) = self.need(m, 1) {
            return Ok(lines);
        }
        let mut out = Vec::new();
        let list: Vec<String> = m.params[0]
            .split(',')
            .filter(|c| !c.is_empty())
            .take(MAX_JOIN_TARGETS)
            .map(str::to_string)
            .collect();
        for channel in list {
            if m.command == "JOIN" {
                out.extend(self.join(user, &channel).await?);
            } else {
                out.push(self.part(user, &channel).await?);
            }
        }
        Ok(out)
    }

    /// JOIN: a room joins (public), is created (new name), or is refused (private, not
    /// invited). The client sees its JOIN, its read marker and the member list; a room it is
    /// already in answers nothing (clients rejoin their channels after every reconnect, and
    /// the connection showed them at registration).
    async fn join(&mut self, user: &AuthedUser, channel: &str) -> Result<Vec<IrcMessage>, End> {
        let name = match RoomName::parse(channel) {
            Ok(n) if channel.starts_with('#') => n,
            _ => {
                return Ok(vec![
                    self.num(ERR_BADCHANMASK, [channel, "Bad channel name"])
                ])
            }
        };
        let by = (user.user_id(), user.name().to_string());
        let found = self
            .state
            .find_room(&name)
            .await
            .map_err(|e| self.internal(&e))?;
        let change = match found {
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
            Ok(_) => {
                let join =
                    IrcMessage::new("JOIN", [display.as_str()]).from_source(source_of(user.name()));
                self.joined(user, join, &display).await
            }
            Err(StoreError::AlreadyMember(_)) => Ok(Vec::new()),
            Err(StoreError::Forbidden(text)) => Ok(vec![self.num(
                ERR_INVITEONLYCHAN,
                [
                    display.as_str(),
                    &format!("Cannot join channel (+i): {text}"),
                ],
            )]),
            Err(e) => Ok(vec![self.refusal(&display, e)?]),
        }
    }

    /// A store refusal as a numeric about `channel`; a server failure ends the connection.
    pub(super) fn refusal(&self, channel: &str, e: StoreError) -> Result<IrcMessage, End> {
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

    /// PART: leave a room. The owner can only when alone in it, and the room is deleted
    /// (a mistyped JOIN is undone by PART); with others in it the owner stays (`482`).
    async fn part(&mut self, user: &AuthedUser, channel: &str) -> Result<IrcMessage, End> {
        let room = match self.room(channel).await? {
            Ok(r) => r,
            Err(line) => return Ok(line),
        };
        let display = format!("#{}", room.name);
        let by = (user.user_id(), user.name().to_string());
        let leave = RoomChange::Leave {
            room_id: room.id,
            by,
        };
        match self.state.change_room(leave).await {
            Ok((_, event)) => {
                self.echoed.insert(event);
                Ok(IrcMessage::new("PART", [display]).from_source(source_of(user.name())))
            }
            Err(e) => self.refusal(&display, e),
        }
    }

    /// `DROP #room` (`/quote DROP #room`): the owner deletes the room, as `chat room del`
    /// does. Every member, the owner too, gets a KICK from the server.
    pub(super) async fn drop_room(
        &mut self,
        user: &AuthedUser,
        m: &IrcMessage,
    ) -> Result<Vec<IrcMessage>, End> {
        if let Err(lines) = self.need(m, 1) {
            return Ok(lines);
        }
        let room = match self.room(&m.params[0]).await? {
            Ok(r) => r,
            Err(line) => return Ok(vec![line]),
        };
        let display = format!("#{}", room.name);
        let delete = RoomChange::Delete {
            room_id: room.id,
            by: (user.user_id(), user.name().to_string()),
        };
        match self.state.change_room(delete).await {
            Ok((_, event)) => {
                self.echoed.insert(event);
                Ok(vec![IrcMessage::new(
                    "KICK",
                    [display.as_str(), user.name(), ROOM_DELETED],
                )
                .from_source(self.server_name())])
            }
            Err(e) => Ok(vec![self.refusal(&display, e)?]),
        }
    }

    /// `INVITE nick #room` (adds the user at once) or `KICK #room nick`, by the room's owner.
    pub(super) async fn member_change(
        &mut self,
        user: &AuthedUser,
        m: &IrcMessage,
    ) -> Result<Vec<IrcMessage>, End> {
        if let Err(lines) = self.need(m, 2) {
            return Ok(lines);
        }
        let invite = m.command == "INVITE";
        let (channel, nick) = if invite {
            (m.params[1].as_str(), m.params[0].as_str())
        } else {
            (m.params[0].as_str(), m.params[1].as_str())
        };
        let room = match self.room(channel).await? {
            Ok(r) => r,
            Err(line) => return Ok(vec![line]),
        };
        let member = self
            .state
            .store
            .is_member(room.id, user.user_id())
            .await
            .map_err(|e| self.internal(&e))?;
        if !member {
            let display = format!("#{}", room.name);
            return Ok(vec![self.num(
                ERR_NOTONCHANNEL,
                [display.as_str(), "You're not on that channel"],
            )]);
        }
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
            Err(StoreError::AlreadyMember(text)) => Ok(vec![self.num(
                ERR_USERONCHANNEL,
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

    /// Rooms have no topic: the query says so; setting one is refused. A channel that is
    /// not a room is `403`.
    pub(super) async fn topic(&mut self, m: &IrcMessage) -> Result<Vec<IrcMessage>, End> {
        if let Err(lines) = self.need(m, 1) {
            return Ok(lines);
        }
        if let Err(line) = self.room(&m.params[0]).await? {
            return Ok(vec![line]);
        }
        if m.params.len() > 1 {
            return Ok(vec![self.num(
                ERR_NOCHANMODES,
                [m.params[0].as_str(), "Rooms have no topic on this server"],
            )]);
        }
        Ok(vec![self.num(
            RPL_NOTOPIC,
            [m.params[0].as_str(), "No topic is set"],
        )])
    }

    /// LIST: every public room and the user's private ones.
    pub(super) async fn list(&mut self, user: &AuthedUser) -> Result<Vec<IrcMessage>, End> {
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

    /// What follows a JOIN of `channel` to this client: the JOIN, then (with
    /// draft/read-marker) its read marker, then the member list. The specification wants the
    /// marker before the `366` ending the list.
    async fn joined(
        &mut self,
        user: &AuthedUser,
        join: IrcMessage,
        channel: &str,
    ) -> Result<Vec<IrcMessage>, End> {
        let mut names = self.names(user, channel).await?;
        let end = names.pop();
        let mut out = vec![join];
        out.extend(names);
        if self.caps.has(Cap::ReadMarker) {
            out.push(self.markread_line(channel, None).await);
        }
        out.extend(end);
        Ok(out)
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
            let join =
                IrcMessage::new("JOIN", [r.name.as_str()]).from_source(source_of(user.name()));
            out.extend(self.joined(user, join, &r.name).await?);
        }
        Ok(out)
    }
}
