//! The IRC gateway: IRC clients (WeeChat, irssi, HexChat, mobile apps) on the same core as
//! the native protocol.
//!
//! The gateway only translates. Authentication is [`crate::auth`] (SASL PLAIN and `PASS`
//! go through the same argon2 check and throttling as a native login), sends go through the
//! same [`crate::store::Writer`] (group commit, ids, idempotency) and arrive through the same
//! [`crate::core::hub`], history and read markers are the same store queries with the same
//! permissions. There is no second message path and no second store.
//!
//! An IRC connection is a device: `account@name` at login selects the device `name`,
//! `account` alone the device `irc`. Delivery is the native backlog → live hand-off after
//! that device's cursor; the hub's pushes are typed, and the gateway renders its lines
//! from them (no native frame in between). IRC has no acknowledgements, so the gateway sends `PING` after the
//! messages it wrote and moves the cursor only when the matching `PONG` comes back: a client
//! that disconnects before answering gets the messages again.
//!
//! Layers, one job each: [`codec`] frames lines, [`message`] parses and writes them,
//! `caps` knows the IRCv3 capabilities, `register` does CAP/SASL/PASS/NICK/USER,
//! `commands` dispatches commands and answers queries (WHO, WHOIS, MODE), `messages`
//! PRIVMSG/NOTICE and multiline, `channels` channels as rooms, `history` CHATHISTORY and MARKREAD,
//! `translate` turns stored messages into IRC lines, `numerics` names the replies,
//! `session` ties them together for one connection. The connection plumbing (the TLS
//! accept, registration with the hub and its revocation re-check, the kick-aware bounded
//! write) is [`crate::conn`]'s, shared with the native front end. `docs/irc.md` is the
//! user's view.

pub mod codec;
pub mod message;

mod caps;
mod channels;
mod commands;
mod history;
mod messages;
mod numerics;
mod refusals;
mod register;
mod session;
mod translate;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::conn::{accept_tls, AddressSlot};
use crate::core::ServerState;

/// Every user's host in their IRC source (`alice!alice@chatd`), and the server name when
/// none is configured or found (`default_server_name`).
pub const USER_HOST: &str = "chatd";

/// Longest configurable IRC server name (a DNS name's limit).
pub const MAX_SERVER_NAME_LEN: usize = 253;

/// The gateway's IRC server name: the source of its own lines (`:chat.example.org 001 …`),
/// in `002`, `004`, `312`, `352` and the MOTD. Built only by [`IrcServerName::parse`]:
/// 1 to [`MAX_SERVER_NAME_LEN`] characters from `A-Z a-z 0-9 . - _`, not starting with `-`
/// or `.` (a host name, or an IPv4 address, as IRC clients expect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrcServerName(String);

/// Why a server name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "irc_server_name {0:?} is not a server name: 1 to 253 characters from A-Z, a-z, 0-9,      '.', '-', '_', not starting with '-' or '.'"
)]
pub struct BadServerName(pub String);

impl IrcServerName {
    /// Parses a server name.
    pub fn parse(name: &str) -> Result<IrcServerName, BadServerName> {
        let valid = !name.is_empty()
            && name.len() <= MAX_SERVER_NAME_LEN
            && !name.starts_with(['-', '.'])
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if valid {
            Ok(IrcServerName(name.to_string()))
        } else {
            Err(BadServerName(name.to_string()))
        }
    }

    /// The server name when none is configured: the first of `tls_names` that is one (the
    /// name clients connect to), else this host's name, else [`USER_HOST`].
    pub fn default_for(tls_names: &[String]) -> IrcServerName {
        let host = gethostname::gethostname().into_string().ok();
        tls_names
            .iter()
            .map(String::as_str)
            .chain(host.as_deref())
            .find_map(|n| IrcServerName::parse(n).ok())
            .unwrap_or_default()
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for IrcServerName {
    /// [`USER_HOST`]: `chatd`.
    fn default() -> Self {
        IrcServerName(USER_HOST.to_string())
    }
}

impl std::fmt::Display for IrcServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The device an IRC login uses when the user name names none (`account` rather than
/// `account@device`).
pub const DEFAULT_DEVICE: &str = "irc";

/// Longest line the gateway writes, without tags and including CRLF (RFC 1459's 512, the
/// `LINELEN` ISUPPORT value).
pub const LINELEN: usize = 512;

/// Most lines in one `draft/multiline` batch from a client.
pub const MULTILINE_MAX_LINES: usize = 100;

/// Most targets (channels) of one JOIN or PART.
pub const MAX_JOIN_TARGETS: usize = 10;

/// Lines a client may send before completing registration.
const MAX_UNREGISTERED_LINES: usize = 64;

/// What a plaintext client on the TLS port is told before the connection is closed.
const PLAINTEXT_REPLY: &[u8] =
    b"ERROR :this port speaks IRC over TLS; enable TLS in your client\r\n";

/// Serves one IRC-over-TLS connection: the TLS handshake ([`crate::conn`]'s, with this
/// gateway's answer to a plaintext client), then the session.
pub(crate) async fn serve_tls(
    state: Arc<ServerState>,
    server_name: IrcServerName,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    _slots: (OwnedSemaphorePermit, AddressSlot),
) {
    let limit = state.limits.handshake_timeout;
    if let Some(tls) = accept_tls(acceptor, tcp, peer, limit, PLAINTEXT_REPLY).await {
        session::run(state, server_name, tls, peer, shutdown).await;
    }
}

/// Serves one plaintext IRC connection (the listener is loopback-only).
pub(crate) async fn serve_plain(
    state: Arc<ServerState>,
    server_name: IrcServerName,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    _slots: (OwnedSemaphorePermit, AddressSlot),
) {
    let _ = tcp.set_nodelay(true);
    session::run(state, server_name, tcp, peer, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_host_names_and_default_to_the_first_tls_name() {
        for good in ["chat.example.org", "chatd", "192.0.2.7", "irc_1-a"] {
            assert_eq!(IrcServerName::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "a b", "-x", ".x", "::1", "a!b", "a@b", &"x".repeat(254)] {
            assert!(IrcServerName::parse(bad).is_err(), "{bad:?}");
        }
        let names = ["::1".to_string(), "chat.example.org".to_string()];
        assert_eq!(
            IrcServerName::default_for(&names).as_str(),
            "chat.example.org"
        );
        let host = IrcServerName::default_for(&[]);
        assert!(IrcServerName::parse(host.as_str()).is_ok());
    }
}
