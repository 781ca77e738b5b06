//! Registration: CAP negotiation, SASL PLAIN, `PASS account:password`, NICK and USER, then
//! the welcome burst, the rooms the user is in, and the start of delivery.
//!
//! Nothing but these commands is served before authentication. Passwords go through
//! [`crate::auth::Auth::login_irc`]: the same argon2 check, throttling and errors as a native
//! login. The nick is always the account name.

use base64::Engine;

use super::caps::{self, Cap};
use super::message::IrcMessage;
use super::numerics::*;
use super::session::{End, Sasl, Session, Stream};
use super::{DEFAULT_DEVICE, USER_HOST};
use crate::auth::{AuthError, AuthedUser};
use crate::protocol::{Secret, MAX_ROOM_NAME_LEN, MAX_USERNAME_LEN};

/// Longest SASL response accepted (base64 of `authzid\0authcid\0password`).
const MAX_SASL_BYTES: usize = 2048;

/// Length of a full `AUTHENTICATE` chunk: a shorter one (or `+`) is the last.
const SASL_CHUNK: usize = 400;

/// Longest IRC device name.
const MAX_DEVICE_LEN: usize = 32;

impl<S: Stream> Session<S> {
    /// Handles a line before registration. Only registration commands are served.
    pub(super) async fn register_command(&mut self, m: IrcMessage) -> Result<Vec<IrcMessage>, End> {
        match m.command.as_str() {
            "CAP" => {
                let mut lines = self.cap(&m)?;
                if !self.cap_negotiating {
                    lines.extend(self.try_register().await?);
                }
                Ok(lines)
            }
            "AUTHENTICATE" => self.authenticate(&m).await,
            "PASS" => {
                match m.param(0) {
                    Some(p) => self.pass = Some(Secret::new(p)),
                    None => return Ok(vec![self.num(ERR_NEEDMOREPARAMS, ["PASS", "Not enough parameters"])]),
                }
                Ok(Vec::new())
            }
            "NICK" => match m.param(0).filter(|n| !n.is_empty()) {
                Some(n) => {
                    self.requested_nick = Some(n.to_string());
                    self.try_register().await
                }
                None => Ok(vec![self.num("431", ["No nickname given"])]),
            },
            "USER" => {
                // Four parameters, none empty (an empty realname too is refused).
                if let Err(lines) = self.need(&m, 4) {
                    return Ok(lines);
                }
                self.got_user = true;
                self.try_register().await
            }
            "PING" => Ok(vec![self.pong(&m)]),
            "PONG" => Ok(Vec::new()),
            "QUIT" => Err(End::Close("Closing link (quit)".into())),
            _ => Ok(vec![self.num(
                ERR_NOTREGISTERED,
                [m.command.as_str(), "You have not registered: authenticate with SASL PLAIN or PASS account:password"],
            )]),
        }
    }

    /// CAP LS / LIST / REQ / END, before and after registration.
    pub(super) fn cap(&mut self, m: &IrcMessage) -> Result<Vec<IrcMessage>, End> {
        let nick = self.nick();
        let server = self.server_name().to_string();
        let reply = |params: Vec<String>| {
            let mut all = vec![nick.clone()];
            all.extend(params);
            IrcMessage::new("CAP", all).from_source(server.as_str())
        };
        let sub = m.param(0).unwrap_or("").to_ascii_uppercase();
        match sub.as_str() {
            "LS" => {
                if !self.registered {
                    self.cap_negotiating = true;
                }
                let v302 = m.param(1).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0) >= 302;
                if v302 {
                    // 302 implies cap-notify.
                    self.caps.set(Cap::Notify, true);
                }
                let max_body = self.state.limits.max_body;
                let list: Vec<String> = caps::ALL
                    .iter()
                    .map(|(cap, name)| match (cap, v302) {
                        (Cap::Sasl, true) => format!("{name}=PLAIN"),
                        (Cap::Multiline, true) => format!(
                            "{name}=max-bytes={max_body},max-lines={}",
                            super::MULTILINE_MAX_LINES
                        ),
                        _ => name.to_string(),
                    })
                    .collect();
                Ok(vec![reply(vec!["LS".into(), list.join(" ")])])
            }
            "LIST" => Ok(vec![reply(vec![
                "LIST".into(),
                self.caps.names().join(" "),
            ])]),
            "REQ" => {
                if !self.registered {
                    self.cap_negotiating = true;
                }
                let asked = m.param(1).unwrap_or("");
                match caps::parse_request(asked) {
                    Some(changes) => {
                        for (cap, on) in changes {
                            self.caps.set(cap, on);
                        }
                        Ok(vec![reply(vec!["ACK".into(), asked.to_string()])])
                    }
                    None => Ok(vec![reply(vec!["NAK".into(), asked.to_string()])]),
                }
            }
            "END" => {
                self.cap_negotiating = false;
                Ok(Vec::new())
            }
            _ => Ok(vec![self.num("410", [sub.as_str(), "Invalid CAP command"])]),
        }
    }

    /// AUTHENTICATE: SASL PLAIN, in 400-byte base64 chunks.
    async fn authenticate(&mut self, m: &IrcMessage) -> Result<Vec<IrcMessage>, End> {
        if self.user.is_some() {
            return Ok(vec![
                self.num(ERR_SASLALREADY, ["You have already authenticated"])
            ]);
        }
        let Some(arg) = m.param(0) else {
            return Ok(vec![self.num(
                ERR_NEEDMOREPARAMS,
                ["AUTHENTICATE", "Not enough parameters"],
            )]);
        };
        if matches!(self.sasl, Sasl::Discarding) {
            if arg.eq_ignore_ascii_case("PLAIN") {
                // A new exchange, not a chunk of the old one.
                self.sasl = Sasl::Idle;
            } else {
                if arg.len() < SASL_CHUNK {
                    self.sasl = Sasl::Idle;
                }
                return Ok(Vec::new());
            }
        }
        if arg == "*" {
            self.sasl = Sasl::Idle;
            return Ok(vec![
                self.num(ERR_SASLABORTED, ["SASL authentication aborted"])
            ]);
        }
        let Sasl::Plain(buffer) = &mut self.sasl else {
            if arg.eq_ignore_ascii_case("PLAIN") {
                self.sasl = Sasl::Plain(String::new());
                return Ok(vec![IrcMessage::new("AUTHENTICATE", ["+"])]);
            }
            return Ok(vec![
                self.num(RPL_SASLMECHS, ["PLAIN", "are available SASL mechanisms"]),
                self.num(ERR_SASLFAIL, ["SASL authentication failed"]),
            ]);
        };
        if arg.len() > SASL_CHUNK {
            // Chunks are at most 400 bytes: this one is not part of a valid exchange.
            self.sasl = Sasl::Idle;
            return Ok(vec![self.num(ERR_SASLTOOLONG, ["SASL message too long"])]);
        }
        if arg != "+" {
            buffer.push_str(arg);
        }
        let more = arg.len() == SASL_CHUNK;
        if buffer.len() > MAX_SASL_BYTES {
            // One answer ends the exchange; the rest of the client's chunks are dropped.
            self.sasl = if more { Sasl::Discarding } else { Sasl::Idle };
            return Ok(vec![self.num(ERR_SASLTOOLONG, ["SASL message too long"])]);
        }
        if more {
            return Ok(Vec::new());
        }
        let Sasl::Plain(data) = std::mem::replace(&mut self.sasl, Sasl::Idle) else {
            return Ok(Vec::new());
        };
        let Some((authzid, authcid, password)) = decode_plain(&data) else {
            return Ok(vec![self.num(
                ERR_SASLFAIL,
                ["SASL authentication failed: malformed PLAIN response"],
            )]);
        };
        let account = authcid.split('@').next().unwrap_or("");
        if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(account) && authzid != authcid {
            return Ok(vec![self.num(
                ERR_SASLFAIL,
                ["SASL authentication failed: cannot act as another account"],
            )]);
        }
        match self.login(&authcid, &password).await? {
            Ok(user) => {
                let name = user.name().to_string();
                let nick = self.requested_nick.clone().unwrap_or_else(|| name.clone());
                Ok(vec![
                    self.num(
                        RPL_LOGGEDIN,
                        [
                            format!("{nick}!{name}@{USER_HOST}"),
                            name.clone(),
                            format!("You are now logged in as {name}"),
                        ],
                    ),
                    self.num(RPL_SASLSUCCESS, ["SASL authentication successful"]),
                ])
            }
            Err(text) => Ok(vec![self.num(
                ERR_SASLFAIL,
                [format!("SASL authentication failed: {text}")],
            )]),
        }
    }

    /// Checks `account[@device]` and a password; on success the connection is registered
    /// with the hub as that device. `Ok(Err(text))` is a refusal to show the client.
    async fn login(
        &mut self,
        who: &str,
        password: &Secret,
    ) -> Result<Result<AuthedUser, String>, End> {
        let (account, device) = match who.split_once('@') {
            Some((a, d)) => (a, d),
            None => (who, DEFAULT_DEVICE),
        };
        let valid_device = !device.is_empty()
            && device.len() <= MAX_DEVICE_LEN
            && device
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_device {
            return Ok(Err(format!(
                "a device name is 1 to {MAX_DEVICE_LEN} characters from A-Z, a-z, 0-9, '_', '-', '.'"
            )));
        }
        let peer = self.peer.ip();
        match self
            .state
            .auth
            .login_irc(account, password, device, peer)
            .await
        {
            Ok(user) => {
                tracing::info!(user = user.name(), device = user.device_id().get(), peer = %self.peer, "IRC login");
                self.authenticated(user.clone()).await?;
                Ok(Ok(user))
            }
            Err(
                e @ (AuthError::InvalidCredentials
                | AuthError::AccountDisabled
                | AuthError::RateLimited { .. }
                | AuthError::TooManyDevices { .. }),
            ) => Ok(Err(e.to_string())),
            Err(e) => {
                tracing::error!(error = %e, "IRC login failed");
                Ok(Err("internal server error".into()))
            }
        }
    }

    /// Registers the connection with the hub, then re-checks the device, closing the window
    /// between the credential check and the registration (as the native session does).
    async fn authenticated(&mut self, user: AuthedUser) -> Result<(), End> {
        match crate::conn::register_session(&self.state, &user).await {
            Ok(Some((guard, kicked))) => {
                self.guard = Some(guard);
                self.kicked = kicked;
                self.user = Some(user);
                Ok(())
            }
            Ok(None) => Err(End::Close(
                "This session was revoked or the account disabled".into(),
            )),
            Err(e) => {
                tracing::error!(error = %e, "cannot re-check a new IRC session");
                Err(End::Close("Internal server error".into()))
            }
        }
    }

    /// Completes registration once NICK, USER and CAP END are in: authenticates with PASS
    /// if SASL did not, then welcomes the client.
    async fn try_register(&mut self) -> Result<Vec<IrcMessage>, End> {
        if self.requested_nick.is_none() || !self.got_user || self.cap_negotiating {
            return Ok(Vec::new());
        }
        if self.user.is_none() {
            let Some(pass) = self.pass.take() else {
                return Err(End::Close(
                    "Authentication required: use SASL PLAIN or PASS account:password".into(),
                ));
            };
            let Some((who, password)) = pass.expose().split_once(':') else {
                let line = self.num(
                    ERR_PASSWDMISMATCH,
                    ["PASS must be account:password (or account@device:password)"],
                );
                self.write(vec![line]).await?;
                return Err(End::Close("Bad password".into()));
            };
            let password = Secret::new(password);
            if let Err(text) = self.login(who, &password).await? {
                let line = self.num(ERR_PASSWDMISMATCH, [format!("Password incorrect: {text}")]);
                self.write(vec![line]).await?;
                return Err(End::Close("Bad password".into()));
            }
        }
        self.welcome().await
    }

    /// The welcome burst (001–005, MOTD), the rooms the user is in, then delivery.
    async fn welcome(&mut self) -> Result<Vec<IrcMessage>, End> {
        let Some(user) = self.user.clone() else {
            return Ok(Vec::new());
        };
        self.registered = true;
        let nick = user.name().to_string();
        let mut lines = Vec::new();
        if let Some(asked) = self
            .requested_nick
            .clone()
            .filter(|n| !n.eq_ignore_ascii_case(&nick))
        {
            lines.push(
                IrcMessage::new("NICK", [nick.clone()])
                    .from_source(format!("{asked}!{nick}@{USER_HOST}")),
            );
        }
        let version = format!("chatd-{}", env!("CARGO_PKG_VERSION"));
        lines.push(self.num(RPL_WELCOME, [format!("Welcome to chatd, {nick}")]));
        lines.push(self.num(
            RPL_YOURHOST,
            [format!(
                "Your host is {}, running {version}",
                self.server_name()
            )],
        ));
        lines.push(self.num(
            RPL_CREATED,
            ["This server speaks IRC as a gateway to chatd"],
        ));
        lines.push(self.num(
            RPL_MYINFO,
            [self.server_name(), version.as_str(), "i", "inot"],
        ));
        for tokens in self.isupport().chunks(12) {
            let mut params: Vec<String> = tokens.to_vec();
            params.push("are supported by this server".into());
            lines.push(self.num(RPL_ISUPPORT, params));
        }
        lines.extend(self.motd());
        self.write(lines).await?;
        let joins = self.current_rooms(&user).await?;
        self.write(joins).await?;
        self.subscribe(&user).await?;
        Ok(Vec::new())
    }

    /// The ISUPPORT tokens: the real limits of this server.
    fn isupport(&self) -> Vec<String> {
        vec![
            "NETWORK=chatd".into(),
            "CASEMAPPING=ascii".into(),
            "CHANTYPES=#".into(),
            "PREFIX=(o)@".into(),
            "CHANMODES=,,,i".into(),
            format!("CHANNELLEN={}", MAX_ROOM_NAME_LEN + 1),
            format!("NICKLEN={}", MAX_USERNAME_LEN),
            "TOPICLEN=0".into(),
            format!("LINELEN={}", super::LINELEN),
            "MAXTARGETS=1".into(),
            format!(
                "TARGMAX=PRIVMSG:1,NOTICE:1,JOIN:{n},PART:{n},NAMES:1,WHOIS:1,INVITE:1,KICK:1",
                n = super::MAX_JOIN_TARGETS
            ),
            format!("CHATHISTORY={}", crate::protocol::MAX_HISTORY_PAGE),
            "MSGREFTYPES=msgid,timestamp".into(),
            "UTF8ONLY".into(),
            "ELIST=".into(),
        ]
    }

    /// The PONG answering a PING, or `461` when it has no token.
    pub(super) fn pong(&self, m: &IrcMessage) -> IrcMessage {
        match m.param(0) {
            Some(token) => self.server_line(
                "PONG",
                vec![self.server_name().to_string(), token.to_string()],
            ),
            None => self.num(ERR_NEEDMOREPARAMS, ["PING", "Not enough parameters"]),
        }
    }

    /// The message of the day.
    pub(super) fn motd(&self) -> Vec<IrcMessage> {
        vec![
            self.num(RPL_MOTDSTART, [format!("- {} message of the day -", self.server_name())]),
            self.num(RPL_MOTD, ["- This is the IRC gateway of a chatd server: your account, your history and your offline messages, on the same core as the chat client."]),
            self.num(RPL_MOTD, ["- Rooms are channels; direct messages are queries. CHATHISTORY and read markers are supported."]),
            self.num(RPL_ENDOFMOTD, ["End of /MOTD command"]),
        ]
    }
}

/// Decodes a SASL PLAIN response into (authzid, authcid, password).
fn decode_plain(data: &str) -> Option<(String, String, Secret)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    let mut parts = raw.split(|b| *b == 0);
    let authzid = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let authcid = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let password = String::from_utf8(parts.next()?.to_vec()).ok()?;
    if parts.next().is_some() || authcid.is_empty() {
        return None;
    }
    Some((authzid, authcid, Secret::new(password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plain_responses() {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let (z, c, p) = decode_plain(&b64(b"\0alice@phone\0pw pw")).unwrap();
        assert_eq!(
            (z.as_str(), c.as_str(), p.expose()),
            ("", "alice@phone", "pw pw")
        );
        assert!(decode_plain(&b64(b"alice\0pw")).is_none());
        assert!(decode_plain(&b64(b"\0\0pw")).is_none());
        assert!(decode_plain("not base64!").is_none());
    }
}
