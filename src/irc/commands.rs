//! Commands after registration: the dispatcher (with the flood limit), and what common
//! clients ask about users and channels (WHO, WHOIS, MODE, AWAY). Messages are in
//! `messages`, channel membership in `channels`, history and read markers in `history`.
//!
//! Every request is a call on the core as the native protocol's are, so permissions and rate
//! costs are the core's: a private room needs an invitation, only the owner invites and
//! kicks, a non-member cannot send to a room or see a private room's members.

use super::message::IrcMessage;
use super::numerics::*;
use super::session::{End, Reply, Session, Stream};
use super::USER_HOST;
use crate::auth::AuthedUser;
use crate::core::{CoreError, Operation};
use crate::store::Target;

/// The core operation a command is, for its rate cost (which the core sets); `None` for
/// commands that are the connection's own business (CAP, PING, NICK, …).
fn operation(m: &IrcMessage) -> Option<Operation> {
    Some(match m.command.as_str() {
        "PRIVMSG" | "NOTICE" => Operation::Send,
        "JOIN" | "PART" | "INVITE" | "KICK" | "DROP" => Operation::RoomChange,
        "NAMES" => Operation::Members,
        "WHO" if m.param(0).is_some_and(|t| t.starts_with('#')) => Operation::Members,
        "WHO" | "WHOIS" => Operation::LookupUser,
        "LIST" => Operation::RoomList,
        "CHATHISTORY" => Operation::History,
        "MARKREAD" => Operation::ReadMarker,
        _ => return None,
    })
}

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
        let charged = match operation(&m) {
            Some(op) => crate::core::rate::charge(&mut self.bucket, op).is_err(),
            None => false,
        };
        if charged {
            if m.command == "NOTICE" {
                // NOTICE never causes an automatic reply, not even this one.
                return Ok(Reply::Now(Vec::new()));
            }
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
            "BATCH" => return self.batch(&user, &m, label).await,
            "JOIN" | "PART" => self.join_or_part(&user, &m).await?,
            "INVITE" | "KICK" => self.member_change(&user, &m).await?,
            "DROP" => self.drop_room(&user, &m).await?,
            "NAMES" => match m.param(0) {
                Some(chan) => self.names(&user, chan).await?,
                None => vec![self.num(RPL_ENDOFNAMES, ["*", "End of /NAMES list"])],
            },
            "TOPIC" => self.topic(&m).await?,
            "LIST" => self.list(&user).await?,
            "WHO" => self.who(&user, &m).await?,
            "WHOIS" => self.whois(&m).await?,
            "MODE" => self.mode(&user, &m).await?,
            "AWAY" => match m.param(0).filter(|t| !t.is_empty()) {
                Some(_) => vec![self.num(RPL_NOWAWAY, ["You have been marked as being away"])],
                None => vec![self.num(RPL_UNAWAY, ["You are no longer marked as being away"])],
            },
            "MOTD" => self.motd(),
            "PING" => vec![self.pong(&m)],
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
    pub(super) fn need(&self, m: &IrcMessage, n: usize) -> Result<(), Vec<IrcMessage>> {
        if m.params.len() >= n && m.params.iter().take(n).all(|p| !p.is_empty()) {
            Ok(())
        } else {
            Err(vec![self.num(
                ERR_NEEDMOREPARAMS,
                [m.command.as_str(), "Not enough parameters"],
            )])
        }
    }

    /// Logs an internal failure; the connection is closed with a generic reason.
    pub(super) fn internal(&self, e: &dyn std::fmt::Display) -> End {
        tracing::error!(error = %e, "IRC request failed");
        End::Close("Internal server error".into())
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
                    USER_HOST,
                    s.server_name(),
                    nick,
                    flags,
                    &format!("0 {nick}"),
                ],
            )
        };
        if mask.starts_with('#') {
            match self.state.members(user, &mask).await {
                Ok((room, members)) => {
                    let display = room.name.to_string();
                    for member in members {
                        out.push(who_line(
                            self,
                            &display,
                            &member.user,
                            member.role == "owner",
                        ));
                    }
                }
                Err(CoreError::Refused(_)) => {}
                Err(CoreError::Internal(e)) => return Err(self.internal(&e)),
            }
        } else if let Ok(Target::User(_, name)) = self.resolve(&mask).await? {
            out.push(who_line(self, "*", name.as_str(), false));
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
                    [name.as_str(), name.as_str(), USER_HOST, "*", name.as_str()],
                ),
                self.num(
                    RPL_WHOISSERVER,
                    [name.as_str(), self.server_name(), "chatd"],
                ),
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
    async fn mode(&mut self, user: &AuthedUser, m: &IrcMessage) -> Result<Vec<IrcMessage>, End> {
        if let Err(lines) = self.need(m, 1) {
            return Ok(lines);
        }
        let target = m.params[0].as_str();
        if target.starts_with('#') {
            if let Err(line) = self.room(target).await? {
                return Ok(vec![line]);
            }
            return Ok(match m.param(1) {
                None => vec![self.num(RPL_CHANNELMODEIS, [target, "+nt"])],
                Some("b") => vec![self.num("368", [target, "End of channel ban list"])],
                Some(_) => vec![self.num(
                    ERR_CHANOPRIVSNEEDED,
                    [target, "Channel modes cannot be changed on this server"],
                )],
            });
        }
        if !target.eq_ignore_ascii_case(user.name()) {
            return Ok(vec![
                self.num(ERR_USERSDONTMATCH, ["Cannot change mode for other users"])
            ]);
        }
        Ok(match m.param(1) {
            None | Some("+i") => vec![self.num(RPL_UMODEIS, ["+i"])],
            Some(_) => vec![self.num(ERR_UMODEUNKNOWNFLAG, ["Unknown MODE flag"])],
        })
    }
}
