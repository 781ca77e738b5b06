//! Channels as rooms: JOIN (public rooms; a new name creates one), PART, INVITE, KICK and
//! DROP (the owner's), NAMES, TOPIC and LIST, and the rooms shown at registration. Each is a
//! call on the core ([`crate::core`]), which checks the permissions; this module turns the
//! answers and refusals into IRC lines and numerics.

use super::caps::Cap;
use super::message::IrcMessage;
use super::numerics::*;
use super::refusals;
use super::session::{End, Session, Stream};
use super::translate::{source_of, ROOM_DELETED};
use super::MAX_JOIN_TARGETS;
use crate::auth::AuthedUser;
use crate::core::{CoreError, Refusal, RoomAction, RoomRefusal, RoomRequest};
use crate::store::RoomRef;

impl<S: Stream> Session<S> {
    /// Finds a live room, or the numeric saying there is none.
    pub(super) async fn room(&mut self, channel: &str) -> Result<Result<RoomRef, IrcMessage>, End> {
        match self.state.room_named(channel).await {
            Ok(r) => Ok(Ok(r)),
            Err(CoreError::Refused(_)) => Ok(Err(
                self.num(ERR_NOSUCHCHANNEL, [channel, "No such channel"])
            )),
            Err(CoreError::Internal(e)) => Err(self.internal(&e)),
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
        if !channel.starts_with('#') {
            return Ok(vec![
                self.num(ERR_BADCHANMASK, [channel, "Bad channel name"])
            ]);
        }
        let display = match crate::protocol::RoomName::parse(channel) {
            Ok(name) => name.to_string(),
            Err(_) => channel.to_string(),
        };
        let request = RoomRequest::JoinOrCreate {
            room: channel.to_string(),
        };
        match self.state.change_membership(user, request).await {
            Ok(changed) => {
                self.echoed.insert(changed.event_id);
                let join = IrcMessage::new("JOIN", [changed.room.as_str()])
                    .from_source(source_of(user.name()));
                self.joined(user, join, &changed.room).await
            }
            Err(CoreError::Refused(Refusal::BadRoomName { .. })) => Ok(vec![
                self.num(ERR_BADCHANMASK, [channel, "Bad channel name"])
            ]),
            Err(CoreError::Refused(Refusal::Room(RoomRefusal::AlreadyMember { .. }))) => {
                Ok(Vec::new())
            }
            Err(CoreError::Refused(Refusal::Room(
                r @ RoomRefusal::Forbidden {
                    action: RoomAction::JoinPrivate,
                    ..
                },
            ))) => Ok(vec![self.num(
                ERR_INVITEONLYCHAN,
                [display.as_str(), &refusals::room_text(&r)],
            )]),
            Err(e) => Ok(vec![self.refusal(&display, e)?]),
        }
    }

    /// A core refusal as a numeric about `channel`; a server failure ends the connection.
    pub(super) fn refusal(&self, channel: &str, e: CoreError) -> Result<IrcMessage, End> {
        let r = match e {
            CoreError::Refused(r) => r,
            CoreError::Internal(e) => return Err(self.internal(&e)),
        };
        Ok(match r {
            Refusal::UnknownRoom { .. } | Refusal::BadRoomName { .. } => {
                self.num(ERR_NOSUCHCHANNEL, [channel, "No such channel"])
            }
            Refusal::NotMember { .. } | Refusal::OutsideRoom { .. } => {
                self.num(ERR_NOTONCHANNEL, [channel, "You're not on that channel"])
            }
            Refusal::UnknownUser { name } => {
                self.num(ERR_NOSUCHNICK, [name.as_str(), "No such nick"])
            }
            Refusal::BadUserName { name, .. } => {
                self.num(ERR_NOSUCHNICK, [name.as_str(), "No such nick"])
            }
            Refusal::Room(r) => {
                let text = refusals::room_text(&r);
                match &r {
                    RoomRefusal::UnknownRoom { .. } => {
                        self.num(ERR_NOSUCHCHANNEL, [channel, text.as_str()])
                    }
                    RoomRefusal::NotMember { .. } => {
                        self.num(ERR_NOTONCHANNEL, [channel, text.as_str()])
                    }
                    RoomRefusal::UserNotMember { user, .. } => self.num(
                        ERR_USERNOTINCHANNEL,
                        [user.as_str(), channel, text.as_str()],
                    ),
                    RoomRefusal::AlreadyMember { .. } => self.num(
                        ERR_USERONCHANNEL,
                        [self.nick().as_str(), channel, text.as_str()],
                    ),
                    RoomRefusal::UserAlreadyMember { user, .. } => {
                        self.num(ERR_USERONCHANNEL, [user.as_str(), channel, text.as_str()])
                    }
                    RoomRefusal::Forbidden { .. } => {
                        self.num(ERR_CHANOPRIVSNEEDED, [channel, text.as_str()])
                    }
                    RoomRefusal::RoomExists { .. } => {
                        self.num(ERR_UNKNOWNERROR, [channel, text.as_str()])
                    }
                }
            }
            other => {
                tracing::error!(refusal = ?other, "unexpected refusal of a room request");
                self.num(ERR_UNKNOWNERROR, [channel, "Request refused"])
            }
        })
    }

    /// PART: leave a room. The owner can only when alone in it, and the room is deleted
    /// (a mistyped JOIN is undone by PART); with others in it the owner stays (`482`).
    async fn part(&mut self, user: &AuthedUser, channel: &str) -> Result<IrcMessage, End> {
        let request = RoomRequest::Leave {
            room: channel.to_string(),
        };
        match self.state.change_membership(user, request).await {
            Ok(changed) => {
                self.echoed.insert(changed.event_id);
                Ok(IrcMessage::new("PART", [changed.room]).from_source(source_of(user.name())))
            }
            Err(e) => {
                let display = self.display_room(channel).await;
                self.refusal(&display, e)
            }
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
        let channel = m.params[0].as_str();
        let request = RoomRequest::Delete {
            room: channel.to_string(),
        };
        match self.state.change_membership(user, request).await {
            Ok(changed) => {
                self.echoed.insert(changed.event_id);
                Ok(vec![IrcMessage::new(
                    "KICK",
                    [changed.room.as_str(), user.name(), ROOM_DELETED],
                )
                .from_source(self.server_name())])
            }
            Err(e) => {
                let display = self.display_room(channel).await;
                Ok(vec![self.refusal(&display, e)?])
            }
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
        let (room, who) = (channel.to_string(), nick.to_string());
        let request = if invite {
            RoomRequest::Invite { room, user: who }
        } else {
            RoomRequest::Kick { room, user: who }
        };
        let changed = match self.state.change_membership(user, request).await {
            Ok(changed) => changed,
            Err(CoreError::Refused(Refusal::OutsideRoom { room, .. })) => {
                return Ok(vec![self.num(
                    ERR_NOTONCHANNEL,
                    [room.as_str(), "You're not on that channel"],
                )])
            }
            Err(CoreError::Refused(Refusal::UnknownUser { .. } | Refusal::BadUserName { .. })) => {
                return Ok(vec![self.num(ERR_NOSUCHNICK, [nick, "No such nick"])])
            }
            Err(e) => {
                let display = self.display_room(channel).await;
                return Ok(vec![self.refusal(&display, e)?]);
            }
        };
        let who = changed.user.unwrap_or_else(|| nick.to_string());
        if invite {
            return Ok(vec![
                self.num(RPL_INVITING, [who.as_str(), changed.room.as_str()])
            ]);
        }
        self.echoed.insert(changed.event_id);
        Ok(vec![IrcMessage::new(
            "KICK",
            [changed.room, who, format!("removed by {}", user.name())],
        )
        .from_source(source_of(user.name()))])
    }

    /// `#room` as stored, for a channel name as the client typed it (as typed if there is
    /// no such room).
    async fn display_room(&mut self, channel: &str) -> String {
        match self.state.room_named(channel).await {
            Ok(r) => r.name.to_string(),
            Err(_) => channel.to_string(),
        }
    }

    /// NAMES: the owner is `@`. A private room's members are shown to members only (the
    /// core's rule).
    pub(super) async fn names(
        &mut self,
        user: &AuthedUser,
        channel: &str,
    ) -> Result<Vec<IrcMessage>, End> {
        let (room, members) = match self.state.members(user, channel).await {
            Ok(found) => found,
            Err(CoreError::Refused(Refusal::MembersHidden { room })) => {
                return Ok(vec![
                    self.num(RPL_ENDOFNAMES, [room.as_str(), "End of /NAMES list"])
                ])
            }
            Err(CoreError::Refused(_)) => {
                return Ok(vec![
                    self.num(RPL_ENDOFNAMES, [channel, "End of /NAMES list"])
                ])
            }
            Err(CoreError::Internal(e)) => return Err(self.internal(&e)),
        };
        let display = room.name.to_string();
        let end = self.num(RPL_ENDOFNAMES, [display.as_str(), "End of /NAMES list"]);
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
        let rooms = match self.state.rooms(user, true).await {
            Ok(rooms) => rooms,
            Err(e) => return Err(self.internal(&e)),
        };
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
            let upto = self.marker_named(user, channel).await;
            out.push(self.markread_line(channel, upto).await);
        }
        out.extend(end);
        Ok(out)
    }

    /// JOIN lines and member lists for every room the user is in (at registration).
    pub(super) async fn current_rooms(
        &mut self,
        user: &AuthedUser,
    ) -> Result<Vec<IrcMessage>, End> {
        let rooms = match self.state.rooms(user, false).await {
            Ok(rooms) => rooms,
            Err(e) => return Err(self.internal(&e)),
        };
        let mut out = Vec::new();
        for r in rooms.into_iter().filter(|r| r.member) {
            let join =
                IrcMessage::new("JOIN", [r.name.as_str()]).from_source(source_of(user.name()));
            out.extend(self.joined(user, join, &r.name).await?);
        }
        Ok(out)
    }
}
