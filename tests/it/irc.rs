//! The IRC gateway, driven by a raw IRC client written here: registration (SASL, PASS),
//! direct messages and rooms between IRC and native users, IRCv3 tags and batches,
//! chathistory, read markers, offline replay with the PONG rule, permissions, bad input.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use chat_svc::client::Event;
use chat_svc::irc::message::IrcMessage;
use chat_svc::protocol::Message;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::common::*;

/// Every capability the tests use.
const ALL_CAPS: &str = "server-time message-tags echo-message batch labeled-response \
                        account-tag draft/chathistory draft/read-marker draft/multiline";

/// A raw IRC connection.
pub struct Irc {
    reader: Box<dyn tokio::io::AsyncBufRead + Unpin + Send>,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
    /// Answer the server's PINGs while reading (off for the acknowledgement tests).
    pub auto_pong: bool,
}

impl Irc {
    fn over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S) -> Irc {
        let (r, w) = tokio::io::split(stream);
        Irc {
            reader: Box::new(BufReader::new(r)),
            writer: Box::new(w),
            auto_pong: true,
        }
    }

    /// Plaintext, to the loopback listener.
    pub async fn plain(server: &TestServer) -> Irc {
        let tcp = tokio::net::TcpStream::connect(server.irc_plain.unwrap())
            .await
            .unwrap();
        Irc::over(tcp)
    }

    /// Real TLS, pinned to the server's key.
    pub async fn tls(server: &TestServer) -> Irc {
        let addr: SocketAddr = server.irc_tls.unwrap();
        let tls = chat_svc::client::connect_tls(&addr.into(), Some(server.pin))
            .await
            .unwrap();
        Irc::over(tls)
    }

    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// The next line, or `None` at end of stream. Answers PINGs when `auto_pong`.
    pub async fn next(&mut self) -> Option<IrcMessage> {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line))
                .await
                .expect("timed out waiting for a line from the IRC gateway")
                .unwrap();
            if n == 0 {
                return None;
            }
            assert!(line.ends_with("\r\n"), "line without CRLF: {line:?}");
            let m = IrcMessage::parse(line.trim_end_matches("\r\n")).unwrap();
            if m.command == "PING" && self.auto_pong {
                let token = m.params.last().cloned().unwrap_or_default();
                self.send(&format!("PONG :{token}")).await;
                continue;
            }
            return Some(m);
        }
    }

    /// Lines up to and including the first that matches.
    pub async fn until(&mut self, what: impl Fn(&IrcMessage) -> bool) -> Vec<IrcMessage> {
        let mut seen = Vec::new();
        loop {
            let m = self
                .next()
                .await
                .unwrap_or_else(|| panic!("connection closed; seen {seen:#?}"));
            let done = what(&m);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }

    /// The first line with this command (skipping others).
    pub async fn expect(&mut self, command: &str) -> IrcMessage {
        self.until(|m| m.command == command).await.pop().unwrap()
    }

    /// Reads until the server closes the connection; returns the ERROR text.
    pub async fn closed(&mut self) -> String {
        let mut error = String::new();
        while let Some(m) = self.next().await {
            if m.command == "ERROR" {
                error = m.params.join(" ");
            }
        }
        error
    }

    /// Registers with SASL PLAIN as `login` (`account` or `account@device`), requesting
    /// `caps`; returns after the end of the MOTD.
    pub async fn sasl(&mut self, login: &str, password: &str, caps: &str) -> Vec<IrcMessage> {
        self.send("CAP LS 302").await;
        self.expect("CAP").await;
        self.send(&format!("CAP REQ :sasl {caps}")).await;
        let ack = self.expect("CAP").await;
        assert_eq!(ack.params[1], "ACK", "{ack:?}");
        self.send("AUTHENTICATE PLAIN").await;
        self.expect("AUTHENTICATE").await;
        self.send(&format!("AUTHENTICATE {}", plain(login, password)))
            .await;
        let done = self
            .until(|m| m.command == "903" || m.command == "904")
            .await;
        assert_eq!(done.last().unwrap().command, "903", "{done:#?}");
        self.send("NICK someone").await;
        self.send("USER u 0 * :Real Name").await;
        self.send("CAP END").await;
        self.until(|m| m.command == "376").await
    }

    /// Registers with SASL and every capability.
    pub async fn login(server: &TestServer, login: &str) -> Irc {
        let mut irc = Irc::plain(server).await;
        irc.sasl(login, PASSWORD, ALL_CAPS).await;
        irc
    }

    /// The next PRIVMSG (skipping anything else).
    pub async fn privmsg(&mut self) -> IrcMessage {
        self.expect("PRIVMSG").await
    }

    /// Sends PING with a token and reads up to its PONG: everything the server wrote before.
    pub async fn sync(&mut self) -> Vec<IrcMessage> {
        self.send("PING :sync").await;
        self.until(|m| m.command == "PONG" && m.params.last().map(String::as_str) == Some("sync"))
            .await
    }
}

/// The SASL PLAIN response for `login` and `password`.
fn plain(login: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{password}"))
}

/// A server with IRC listeners and these users.
async fn server_with(users: &[&str]) -> TestServer {
    let server = TestServer::start_irc(test_limits()).await;
    server.add_users(users).await;
    server
}

async fn native(server: &TestServer, user: &str) -> chat_svc::client::Connection {
    let (mut conn, _) = server.login(user).await;
    drain_backlog(&mut conn).await;
    conn
}

/// The next text message a native connection receives (membership events skipped).
async fn native_message(conn: &mut chat_svc::client::Connection) -> Message {
    loop {
        let m = take_messages(&mut conn.events, 1).await.remove(0);
        if m.kind == chat_svc::protocol::MessageKind::Text {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_sasl_over_tls_registers_with_the_account_as_nick_and_real_limits() {
    let server = server_with(&["alice"]).await;
    let mut irc = Irc::tls(&server).await;
    irc.send("CAP LS 302").await;
    let ls = irc.expect("CAP").await;
    let offered = ls.params.last().unwrap();
    for cap in ["sasl=PLAIN", "echo-message", "draft/chathistory", "batch"] {
        assert!(offered.contains(cap), "{offered}");
    }
    assert!(offered.contains("draft/multiline=max-bytes=16384,max-lines=100"));
    let lines = irc.sasl("Alice", PASSWORD, "server-time").await;
    let nick = lines.iter().find(|m| m.command == "NICK").unwrap();
    assert_eq!(nick.params, ["alice"], "the nick is the account name");
    let welcome = lines.iter().find(|m| m.command == "001").unwrap();
    assert_eq!(welcome.params[0], "alice");
    let isupport: Vec<String> = lines
        .iter()
        .filter(|m| m.command == "005")
        .flat_map(|m| m.params.clone())
        .collect();
    for token in [
        "LINELEN=512",
        "CHATHISTORY=500",
        "UTF8ONLY",
        "NICKLEN=32",
        "TARGMAX=PRIVMSG:1,NOTICE:1,JOIN:10,PART:10,NAMES:1,WHOIS:1,INVITE:1,KICK:1",
    ] {
        assert!(
            isupport.iter().any(|t| t == token),
            "{token} in {isupport:?}"
        );
    }
    // A command works; PING is answered; the nick cannot change.
    irc.send("NICK mallory").await;
    assert_eq!(irc.expect("432").await.params[1], "mallory");
    irc.send("PING :x").await;
    assert_eq!(irc.expect("PONG").await.params.last().unwrap(), "x");
    irc.send("QUIT :bye").await;
    assert!(irc.closed().await.contains("Quit: bye"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_failed_sasl_is_throttled_like_native_login_and_nothing_is_served_before_auth() {
    let server = server_with(&["alice"]).await;
    let mut irc = Irc::plain(&server).await;
    irc.send("PRIVMSG alice :hi").await;
    assert_eq!(irc.expect("451").await.params[1], "PRIVMSG");
    irc.send("CAP REQ :sasl").await;
    irc.expect("CAP").await;
    // Five failures through the native protocol, the sixth through SASL: one throttle.
    let conn = server.connect().await;
    for _ in 0..5 {
        let err = conn
            .client
            .login(
                "alice",
                &chat_svc::protocol::Secret::new("wrong-password"),
                "d",
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(chat_svc::protocol::ErrorCode::InvalidCredentials)
        );
    }
    irc.send("AUTHENTICATE PLAIN").await;
    irc.expect("AUTHENTICATE").await;
    irc.send(&format!(
        "AUTHENTICATE {}",
        plain("alice", "wrong-password")
    ))
    .await;
    let fail = irc.expect("904").await;
    assert!(
        fail.params[1].contains("invalid user name or password"),
        "{fail:?}"
    );
    // Now even the right password waits, with the native login's message.
    irc.send("AUTHENTICATE PLAIN").await;
    irc.expect("AUTHENTICATE").await;
    irc.send(&format!("AUTHENTICATE {}", plain("alice", PASSWORD)))
        .await;
    let fail = irc.expect("904").await;
    assert!(
        fail.params[1].contains("too many failed attempts"),
        "{fail:?}"
    );
    // Registering without authenticating is refused and closes the connection.
    irc.send("CAP END").await;
    irc.send("NICK alice").await;
    irc.send("USER a 0 * :a").await;
    assert!(irc.closed().await.contains("Authentication required"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_pass_logs_in_clients_without_sasl_and_a_wrong_one_is_refused() {
    let server = server_with(&["alice"]).await;
    let mut irc = Irc::plain(&server).await;
    irc.send(&format!("PASS alice@laptop:{PASSWORD}")).await;
    irc.send("NICK alice").await;
    irc.send("USER a 0 * :a").await;
    let lines = irc.until(|m| m.command == "376").await;
    assert!(lines.iter().any(|m| m.command == "001"));

    let mut bad = Irc::plain(&server).await;
    bad.send("PASS alice:not-the-password").await;
    bad.send("NICK alice").await;
    bad.send("USER a 0 * :a").await;
    assert!(bad.expect("464").await.params[1].contains("invalid user name or password"));
    assert!(bad.closed().await.contains("Bad password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_and_native_users_exchange_direct_messages_with_ids_and_times() {
    let server = server_with(&["alice", "bob"]).await;
    let mut alice = Irc::login(&server, "alice").await;
    alice.sync().await;
    let mut bob = native(&server, "bob").await;

    // native → IRC: the msgid is the message id, the time its server time.
    let sent = bob
        .client
        .send("alice", "hello alice ☕", "k1")
        .await
        .unwrap();
    let m = alice.privmsg().await;
    assert_eq!(m.source.as_deref(), Some("bob!bob@chatd"));
    assert_eq!(m.params, ["alice", "hello alice ☕"]);
    assert_eq!(m.tag_value("msgid"), Some(sent.id.to_string().as_str()));
    assert_eq!(m.tag_value("account"), Some("bob"));
    assert_eq!(
        m.tag_value("time").unwrap(),
        format!("{}Z", &sent.sent_at[..23])
    );

    // IRC → native, with echo-message carrying the stored id.
    alice
        .send("@label=l1 PRIVMSG bob :hi bob; tabs\tand ünïcode")
        .await;
    let echo = alice.privmsg().await;
    assert_eq!(echo.tag_value("label"), Some("l1"));
    assert_eq!(echo.source.as_deref(), Some("alice!alice@chatd"));
    let got = native_message(&mut bob).await;
    assert_eq!((got.from.as_str(), got.to.as_str()), ("alice", "bob"));
    assert_eq!(got.body, "hi bob; tabs\tand ünïcode");
    assert_eq!(echo.tag_value("msgid"), Some(got.id.to_string().as_str()));
    // An action is a message (an action natively, without the CTCP wrapping); other CTCP
    // requests are not stored.
    alice.send("PRIVMSG bob :\u{1}VERSION\u{1}").await;
    alice.send("PRIVMSG bob :\u{1}ACTION waves\u{1}").await;
    let action = native_message(&mut bob).await;
    assert_eq!((action.body.as_str(), action.action), ("waves", true));
    // Unknown nicks are refused with the standard numeric.
    alice.send("PRIVMSG nobody :hello").await;
    assert_eq!(alice.expect("401").await.params[1], "nobody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_channels_are_rooms_both_ways() {
    let server = server_with(&["alice", "bob"]).await;
    let mut alice = Irc::login(&server, "alice").await;
    // JOIN of a new name creates the room, owned by alice.
    alice.send("JOIN #ops").await;
    let lines = alice.until(|m| m.command == "366").await;
    assert!(lines
        .iter()
        .any(|m| m.command == "JOIN" && m.params == ["#ops"]));
    let names = lines.iter().find(|m| m.command == "353").unwrap();
    assert_eq!(names.params[3], "@alice");
    let marker = lines.iter().find(|m| m.command == "MARKREAD").unwrap();
    assert_eq!(marker.params, ["#ops", "*"], "no read marker yet");

    let mut bob = native(&server, "bob").await;
    bob.client.room_join("#ops").await.unwrap();
    let join = alice.expect("JOIN").await;
    assert_eq!(join.source.as_deref(), Some("bob!bob@chatd"));
    bob.client.send("#ops", "morning all", "r1").await.unwrap();
    let m = alice.privmsg().await;
    assert_eq!(m.params, ["#ops", "morning all"]);
    alice.send("PRIVMSG #ops :morning bob").await;
    let got = native_message(&mut bob).await;
    assert_eq!(
        (got.to.as_str(), got.body.as_str()),
        ("#ops", "morning bob")
    );
    alice.send("NAMES #ops").await;
    let names = alice.expect("353").await;
    assert_eq!(names.params[3], "@alice bob");
    alice.send("LIST").await;
    let list = alice.expect("322").await;
    assert_eq!(list.params[1..3], ["#ops", "2"]);
    alice.send("WHO #ops").await;
    let who = alice.until(|m| m.command == "315").await;
    assert_eq!(who.iter().filter(|m| m.command == "352").count(), 2);
    alice.send("TOPIC #ops").await;
    alice.expect("331").await;
    // The room shows again at the next connection, and a native leave is a PART.
    drop(alice);
    let mut alice = Irc::plain(&server).await;
    let lines = alice.sasl("alice", PASSWORD, ALL_CAPS).await;
    assert!(!lines.is_empty());
    let lines = alice.until(|m| m.command == "366").await;
    assert!(lines
        .iter()
        .any(|m| m.command == "JOIN" && m.params == ["#ops"]));
    bob.client.room_leave("#ops").await.unwrap();
    let part = alice.expect("PART").await;
    assert_eq!(part.source.as_deref(), Some("bob!bob@chatd"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_permissions_are_the_cores() {
    let server = server_with(&["alice", "bob", "carol"]).await;
    let (bob, _) = server.login("bob").await;
    bob.client.room_create("#secret", true).await.unwrap();
    bob.client.room_create("#open", false).await.unwrap();
    bob.client
        .send("#secret", "for members", "s1")
        .await
        .unwrap();
    let mut alice = Irc::login(&server, "alice").await;
    // A private room needs an invitation; a non-member can neither send nor read.
    alice.send("JOIN #secret").await;
    assert_eq!(alice.expect("473").await.params[1], "#secret");
    alice.send("PRIVMSG #secret :let me in").await;
    assert_eq!(alice.expect("404").await.params[1], "#secret");
    alice.send("CHATHISTORY LATEST #secret * 10").await;
    let fail = alice.expect("FAIL").await;
    assert_eq!(fail.params[1], "INVALID_TARGET");
    alice.send("NAMES #secret").await;
    let names = alice.until(|m| m.command == "366").await;
    assert!(!names.iter().any(|m| m.command == "353"), "{names:?}");
    // Only the owner invites and kicks.
    alice.send("JOIN #open").await;
    alice.expect("366").await;
    alice.send("KICK #open bob").await;
    assert_eq!(alice.expect("482").await.params[1], "#open");
    alice.send("INVITE carol #open").await;
    assert_eq!(alice.expect("482").await.params[1], "#open");
    // The owner (native) invites alice: she sees the invitation and joins.
    bob.client.room_invite("#secret", "alice").await.unwrap();
    let invite = alice.expect("INVITE").await;
    assert_eq!(invite.params, ["alice", "#secret"]);
    let join = alice.expect("JOIN").await;
    assert_eq!(
        (join.source.as_deref(), join.params[0].as_str()),
        (Some("alice!alice@chatd"), "#secret")
    );
    let batch = history_lines(&mut alice, "CHATHISTORY LATEST #secret * 10").await;
    assert!(
        batch.is_empty(),
        "history before the invitation stays hidden: {batch:#?}"
    );
    // The owner kicks her.
    bob.client.room_kick("#secret", "alice").await.unwrap();
    let kick = alice.expect("KICK").await;
    assert_eq!(kick.params[..2], ["#secret", "alice"]);
    alice.send("PRIVMSG #secret :still here?").await;
    alice.expect("404").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_actions_cross_both_ways_as_actions() {
    let server = server_with(&["alice", "bob"]).await;
    let mut alice = Irc::login(&server, "alice").await;
    alice.send("JOIN #ops").await;
    alice.expect("366").await;
    let mut bob = native(&server, "bob").await;
    bob.client.room_join("#ops").await.unwrap();
    // IRC /me → a native action, in a room and directly; the echo is an ACTION again.
    alice.send("PRIVMSG #ops :\u{1}ACTION waves\u{1}").await;
    let echo = alice.privmsg().await;
    assert_eq!(echo.params, ["#ops", "\u{1}ACTION waves\u{1}"]);
    let got = native_message(&mut bob).await;
    assert_eq!(
        (got.to.as_str(), got.body.as_str(), got.action),
        ("#ops", "waves", true)
    );
    alice.send("PRIVMSG bob :\u{1}ACTION nods").await;
    assert_eq!(
        alice.privmsg().await.params,
        ["bob", "\u{1}ACTION nods\u{1}"],
        "the echo"
    );
    let got = native_message(&mut bob).await;
    assert_eq!((got.body.as_str(), got.action), ("nods", true));
    // A native action → CTCP ACTION on IRC, live and in CHATHISTORY.
    let sent = bob
        .client
        .send_action("#ops", "waves back", "a1")
        .await
        .unwrap();
    let m = alice.privmsg().await;
    assert_eq!(m.source.as_deref(), Some("bob!bob@chatd"));
    assert_eq!(m.params, ["#ops", "\u{1}ACTION waves back\u{1}"]);
    assert_eq!(m.tag_value("msgid"), Some(sent.id.to_string().as_str()));
    bob.client
        .send_action("alice", "smiles", "a2")
        .await
        .unwrap();
    assert_eq!(
        alice.privmsg().await.params,
        ["alice", "\u{1}ACTION smiles\u{1}"]
    );
    let page = history_lines(&mut alice, "CHATHISTORY LATEST #ops * 10").await;
    let bodies: Vec<&str> = page
        .iter()
        .filter(|l| l.command == "PRIVMSG")
        .map(|l| l.params[1].as_str())
        .collect();
    assert_eq!(
        bodies,
        ["\u{1}ACTION waves\u{1}", "\u{1}ACTION waves back\u{1}"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_a_mistyped_join_is_undone_by_its_owner() {
    let server = server_with(&["alice", "bob"]).await;
    let mut alice = Irc::login(&server, "alice").await;
    let mut bob = Irc::login(&server, "bob").await;
    // The typo creates a room; someone else joins it.
    alice.send("JOIN #Typo-Room").await;
    alice.expect("366").await;
    bob.send("JOIN #typo-room").await;
    bob.expect("366").await;
    alice.expect("JOIN").await;
    let mut alice_native = native(&server, "alice").await;
    // Only the owner may delete it; the owner cannot PART while bob is in it.
    bob.send("DROP #typo-room").await;
    let refused = bob.expect("482").await;
    assert_eq!(refused.params[1], "#typo-room");
    assert!(refused.params[2].contains("only the owner"), "{refused:?}");
    alice.send("PART #typo-room").await;
    let refused = alice.expect("482").await;
    assert!(
        refused.params[2].contains("while others are members"),
        "{refused:?}"
    );
    bob.send("DROP").await;
    assert_eq!(bob.expect("461").await.params[1], "DROP");
    alice.send("DROP #nosuch").await;
    assert_eq!(alice.expect("403").await.params[1], "#nosuch");

    // The owner drops it: every member is removed by the server, the owner too.
    alice.send("DROP #typo-room").await;
    // (From the server: a source without `nick!user@`.)
    let kick = alice.expect("KICK").await;
    assert!(!kick.source.as_deref().unwrap().contains('!'), "{kick:?}");
    assert_eq!(kick.params, ["#typo-room", "alice", "Room deleted"]);
    let kick = bob.expect("KICK").await;
    assert!(!kick.source.as_deref().unwrap().contains('!'), "{kick:?}");
    assert_eq!(kick.params[..2], ["#typo-room", "bob"]);
    // Natively (alice's other device) it is a `delete` event.
    loop {
        let m = take_messages(&mut alice_native.events, 1).await.remove(0);
        if m.kind == chat_svc::protocol::MessageKind::Delete {
            assert_eq!(m.to, "#typo-room");
            break;
        }
    }
    // The owner's own connection gets it once.
    let lines = alice.sync().await;
    assert!(!lines.iter().any(|m| m.command == "KICK"), "{lines:#?}");
    bob.send("PRIVMSG #typo-room :hello?").await;
    assert_eq!(bob.expect("403").await.params[1], "#typo-room");

    // The name is free: JOIN creates it again; PART while alone deletes it again.
    alice.send("JOIN #typo-room").await;
    let names = alice.until(|m| m.command == "366").await;
    let names = names.iter().find(|m| m.command == "353").unwrap();
    assert_eq!(names.params[3], "@alice");
    alice.send("PART #typo-room").await;
    let part = alice.expect("PART").await;
    assert_eq!(part.params, ["#typo-room"]);
    alice.send("LIST").await;
    let list = alice.until(|m| m.command == "323").await;
    assert!(!list.iter().any(|m| m.command == "322"), "{list:#?}");
    bob.send("JOIN #typo-room").await;
    let names = bob.until(|m| m.command == "366").await;
    let names = names.iter().find(|m| m.command == "353").unwrap();
    assert_eq!(names.params[3], "@bob", "bob created it afresh");
}

/// Sends `n` numbered messages from `conn` to `to`; returns their ids.
async fn send_numbered(conn: &chat_svc::client::Connection, to: &str, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let key = format!("{to}-{i}-{}", chat_svc::client::new_send_key());
        ids.push(
            conn.client
                .send(to, &format!("message {i}"), &key)
                .await
                .unwrap()
                .id,
        );
    }
    ids
}

/// The msgids of the PRIVMSGs in a chathistory answer.
async fn history(irc: &mut Irc, command: &str) -> Vec<i64> {
    history_lines(irc, command)
        .await
        .iter()
        .map(|m| m.tag_value("msgid").unwrap().parse().unwrap())
        .collect()
}

/// The PRIVMSGs in a chathistory answer (its batch).
async fn history_lines(irc: &mut Irc, command: &str) -> Vec<IrcMessage> {
    irc.send(command).await;
    let lines = irc
        .until(|m| m.command == "BATCH" && m.params[0].starts_with('-'))
        .await;
    let start = lines.iter().find(|m| m.command == "BATCH").unwrap();
    assert_eq!(start.params[1], "chathistory", "{start:?}");
    let reference = &start.params[0][1..];
    lines
        .iter()
        .filter(|m| m.command == "PRIVMSG" && m.tag_value("batch") == Some(reference))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_chathistory_pages_are_the_history_api() {
    let server = server_with(&["alice", "bob"]).await;
    let (bob, _) = server.login("bob").await;
    let ids = send_numbered(&bob, "alice", 10).await;
    let mut alice = Irc::login(&server, "alice").await;
    alice.sync().await;
    assert_eq!(
        history(&mut alice, "CHATHISTORY LATEST bob * 3").await,
        ids[7..]
    );
    assert_eq!(
        history(
            &mut alice,
            &format!("CHATHISTORY BEFORE bob msgid={} 3", ids[5])
        )
        .await,
        ids[2..5]
    );
    assert_eq!(
        history(
            &mut alice,
            &format!("CHATHISTORY AFTER bob msgid={} 2", ids[5])
        )
        .await,
        ids[6..8]
    );
    assert_eq!(
        history(
            &mut alice,
            &format!("CHATHISTORY AROUND bob msgid={} 4", ids[5])
        )
        .await,
        ids[4..8]
    );
    assert_eq!(
        history(
            &mut alice,
            &format!(
                "CHATHISTORY BETWEEN bob msgid={} msgid={} 10",
                ids[1], ids[4]
            )
        )
        .await,
        ids[2..4]
    );
    assert_eq!(
        history(
            &mut alice,
            &format!(
                "CHATHISTORY BETWEEN bob msgid={} msgid={} 10",
                ids[4], ids[1]
            )
        )
        .await,
        ids[2..4]
    );
    // Timestamps: everything after the time of the 8th message.
    let lines = history_lines(
        &mut alice,
        &format!("CHATHISTORY AFTER bob msgid={} 1", ids[6]),
    )
    .await;
    let t = lines[0].tag_value("time").unwrap().to_string();
    let after = history(
        &mut alice,
        &format!("CHATHISTORY AFTER bob timestamp={t} 10"),
    )
    .await;
    assert!(
        after.iter().all(|id| *id > ids[6]) && after.ends_with(&ids[9..]),
        "{after:?}"
    );
    // TARGETS lists the conversation.
    alice.send("CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z timestamp=2999-01-01T00:00:00.000Z 10").await;
    let lines = alice
        .until(|m| m.command == "BATCH" && m.params[0].starts_with('-'))
        .await;
    let targets: Vec<&str> = lines
        .iter()
        .filter(|m| m.command == "CHATHISTORY")
        .map(|m| m.params[1].as_str())
        .collect();
    assert_eq!(targets, ["bob"]);
    alice.send("CHATHISTORY LATEST bob * 0").await;
    assert_eq!(alice.expect("FAIL").await.params[1], "INVALID_PARAMS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_offline_replay_to_a_named_device_is_acknowledged_only_by_pong() {
    let server = server_with(&["alice", "bob"]).await;
    // Both devices exist (their cursors start here), then go offline.
    for login in ["alice@phone", "alice"] {
        let mut irc = Irc::login(&server, login).await;
        irc.sync().await;
    }
    let (bob, _) = server.login("bob").await;
    let ids = send_numbered(&bob, "alice", 3).await;

    // Replayed with the original ids and times; the client reads but does not answer PING.
    let mut phone = Irc::plain(&server).await;
    phone.auto_pong = false;
    phone.sasl("alice@phone", PASSWORD, ALL_CAPS).await;
    let lines = phone.until(|m| m.command == "PING").await;
    let replayed: Vec<&IrcMessage> = lines.iter().filter(|m| m.command == "PRIVMSG").collect();
    let got: Vec<i64> = replayed
        .iter()
        .map(|m| m.tag_value("msgid").unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, ids);
    assert!(replayed.iter().all(|m| m.tag_value("time").is_some()));
    drop(phone);

    // Not acknowledged: everything again. This time the client answers the PING.
    let mut phone = Irc::plain(&server).await;
    phone.auto_pong = false;
    phone.sasl("alice@phone", PASSWORD, ALL_CAPS).await;
    let lines = phone.until(|m| m.command == "PING").await;
    let again = lines.iter().filter(|m| m.command == "PRIVMSG").count();
    assert_eq!(
        again, 3,
        "a device that did not answer gets the messages again"
    );
    let ping = lines.last().unwrap();
    phone.send(&format!("PONG :{}", ping.params[0])).await;
    phone.sync().await;
    drop(phone);
    // The acknowledgement is committed by the writer; wait until the cursor shows it.
    let store = server.admin().await;
    let alice_id = store
        .find_user(&chat_svc::protocol::Username::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap()
        .id;
    let phone_device = store
        .irc_device(alice_id, "phone", &[0; 32], u32::MAX)
        .await
        .unwrap()
        .unwrap();
    while store.device_cursor(phone_device).await.unwrap() < Some(chat_svc::ids::MessageId(ids[2]))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.close().await;

    let marker = bob
        .client
        .send("alice", "marker", "marker")
        .await
        .unwrap()
        .id;
    let mut phone = Irc::login(&server, "alice@phone").await;
    let first = phone.privmsg().await;
    assert_eq!(
        first.tag_value("msgid"),
        Some(marker.to_string().as_str()),
        "acknowledged messages are not replayed"
    );
    // The default IRC device has its own cursor: it gets all four.
    let mut default = Irc::login(&server, "alice").await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let m = default.privmsg().await;
        seen.push(m.tag_value("msgid").unwrap().parse::<i64>().unwrap());
    }
    assert_eq!(seen[..3], ids[..]);
    assert_eq!(seen[3], marker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_multi_line_and_long_messages_arrive_intact() {
    let server = server_with(&["alice", "bob", "carol"]).await;
    let mut bob = native(&server, "bob").await;
    let mut alice = Irc::login(&server, "alice").await;
    alice.sync().await;
    let mut carol = Irc::plain(&server).await;
    carol.sasl("carol", PASSWORD, "server-time").await;
    carol.sync().await;

    // With draft/multiline: one batch with the message's msgid; empty lines kept.
    let body = "first line\n\nthird line";
    let id = bob.client.send("alice", body, "m1").await.unwrap().id;
    let lines = alice
        .until(|m| m.command == "BATCH" && m.params[0].starts_with('-'))
        .await;
    let start = lines.iter().find(|m| m.command == "BATCH").unwrap();
    assert_eq!(start.params[1..], ["draft/multiline", "alice"]);
    assert_eq!(start.tag_value("msgid"), Some(id.to_string().as_str()));
    let texts: Vec<&str> = lines
        .iter()
        .filter(|m| m.command == "PRIVMSG")
        .map(|m| m.params[1].as_str())
        .collect();
    assert_eq!(texts.join("\n"), body);

    // Without it, over-long text is split on character boundaries within LINELEN.
    let long = "né€😀 ".repeat(300);
    bob.client.send("carol", &long, "m2").await.unwrap();
    let mut joined = String::new();
    while joined.len() < long.trim_end().len() {
        let m = carol.privmsg().await;
        let mut bare = m.clone();
        bare.tags.clear();
        assert!(bare.to_line().len() + 2 <= 512, "{}", bare.to_line().len());
        joined.push_str(&m.params[1]);
    }
    assert_eq!(joined, long);

    // From IRC: a multiline batch is one message for native clients.
    alice.send("BATCH +x draft/multiline bob").await;
    alice.send("@batch=x PRIVMSG bob :line one").await;
    alice.send("@batch=x PRIVMSG bob :line two, ").await;
    alice
        .send("@batch=x;draft/multiline-concat PRIVMSG bob :continued")
        .await;
    alice.send("BATCH -x").await;
    let got = native_message(&mut bob).await;
    assert_eq!(got.body, "line one\nline two, continued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_labels_and_read_markers_reach_every_device() {
    let server = server_with(&["alice", "bob"]).await;
    let (bob, _) = server.login("bob").await;
    let ids = send_numbered(&bob, "alice", 3).await;
    let mut alice_native = native(&server, "alice").await;
    let mut alice = Irc::login(&server, "alice").await;
    alice.sync().await;
    // A labelled command with several replies is one labeled-response batch.
    alice.send("@label=w1 WHOIS bob").await;
    let start = alice.expect("BATCH").await;
    assert_eq!(
        (start.tag_value("label"), start.params[1].as_str()),
        (Some("w1"), "labeled-response")
    );
    let end = alice.until(|m| m.command == "BATCH").await;
    assert!(end.iter().any(|m| m.command == "330"));
    // Read-marker notices go to subscribed connections: a live message shows this one is.
    bob.client.send("alice", "live now", "live").await.unwrap();
    while alice.privmsg().await.params[1] != "live now" {}
    // A native read marker reaches the IRC device.
    alice_native.client.read("bob", Some(ids[0])).await.unwrap();
    let pushed = alice.expect("MARKREAD").await;
    assert_eq!(pushed.params[0], "bob");
    assert!(pushed.params[1].starts_with("timestamp="), "{pushed:?}");
    // MARKREAD from IRC moves the marker for the native device too.
    let lines = history_lines(
        &mut alice,
        &format!("CHATHISTORY AFTER bob msgid={} 1", ids[1]),
    )
    .await;
    let t = lines[0].tag_value("time").unwrap().to_string();
    alice.send(&format!("MARKREAD bob timestamp={t}")).await;
    let reply = alice.expect("MARKREAD").await;
    assert_eq!(reply.params, ["bob", &format!("timestamp={t}")]);
    loop {
        match next_event(&mut alice_native.events).await {
            Event::ReadMarker { conversation, upto } => {
                assert_eq!((conversation.as_str(), upto), ("bob", ids[2]));
                break;
            }
            Event::Closed(r) => panic!("{r:?}"),
            _ => {}
        }
    }
    alice.send("MARKREAD bob").await;
    let now = alice.expect("MARKREAD").await;
    assert_eq!(now.params, reply.params);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_bad_input_gets_standard_numerics_and_harms_no_one() {
    let mut limits = test_limits();
    limits.send_rate_per_sec = 1;
    limits.send_burst = 20;
    let server = TestServer::start_irc(limits).await;
    server.add_users(&["alice", "bob"]).await;
    let mut bob = native(&server, "bob").await;
    let mut alice = Irc::login(&server, "alice").await;
    alice.send("FROBNICATE now").await;
    assert_eq!(alice.expect("421").await.params[1], "FROBNICATE");
    alice.send("JOIN").await;
    assert_eq!(alice.expect("461").await.params[1], "JOIN");
    alice.send("PRIVMSG bob").await;
    alice.expect("412").await;
    alice.send("PRIVMSG bob,carol :hi").await;
    alice.expect("407").await;
    alice
        .send(&format!("PRIVMSG bob :{}", "x".repeat(10_000)))
        .await;
    alice.expect("417").await;
    alice.send_raw(b"PRIVMSG bob :\xff\xfe bad\r\n").await;
    let fail = alice.expect("FAIL").await;
    assert_eq!(fail.params[..2], ["PRIVMSG", "INVALID_UTF8"]);
    alice.send("JOIN bad-name").await;
    alice.expect("476").await;
    alice.send("CHATHISTORY SIDEWAYS bob * 1").await;
    alice.expect("FAIL").await;
    // A CTCP flood is not stored and is rate limited like any message.
    let mut limited = false;
    for _ in 0..40 {
        alice.send("PRIVMSG bob :\u{1}VERSION\u{1}").await;
    }
    for m in alice.sync().await {
        limited |= m.command == "263";
    }
    assert!(limited, "a flood meets the token bucket");
    // The connection still works, nothing bad was stored, and bob never noticed.
    bob.client
        .send("alice", "still fine?", "ok1")
        .await
        .unwrap();
    assert_eq!(alice.privmsg().await.params[1], "still fine?");
    assert_quiet(&mut bob.events, Duration::from_millis(200)).await;
    let store = server.admin().await;
    assert_eq!(store.message_count().await.unwrap(), 1);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_sessions_end_cleanly_on_revocation_shutdown_and_plaintext_on_the_tls_port() {
    let server = server_with(&["alice", "bob"]).await;
    // A plaintext client on the TLS port is told, in IRC, what to do.
    let mut tcp = tokio::net::TcpStream::connect(server.irc_tls.unwrap())
        .await
        .unwrap();
    tcp.write_all(b"NICK alice\r\n").await.unwrap();
    let mut plain = Irc::over(tcp);
    assert!(plain.closed().await.contains("enable TLS"));
    // Revoking the account's sessions closes its IRC connections too.
    let mut alice = Irc::login(&server, "alice").await;
    alice.sync().await;
    let store = server.admin().await;
    store
        .revoke_user(&chat_svc::protocol::Username::parse("alice").unwrap())
        .await
        .unwrap();
    store.close().await;
    assert!(alice.closed().await.contains("revoked"));
    // A labelled command without an answer is acknowledged; shutdown says goodbye.
    let mut bob = Irc::login(&server, "bob").await;
    bob.send("@label=a1 AWAY").await;
    bob.expect("305").await;
    bob.send("CAP REQ :-echo-message").await;
    bob.expect("CAP").await;
    bob.send("@label=a2 PRIVMSG alice :unseen echo").await;
    let ack = bob.expect("ACK").await;
    assert_eq!(ack.tag_value("label"), Some("a2"));
    server.stop().await;
    assert!(bob.closed().await.contains("shutting down"));
}

#[test]
fn plaintext_irc_is_refused_off_loopback_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["--db", &crate::common::dir_db(dir.path()).arg])
        .args([
            "--cert-dir",
            &dir.path().join("certs").display().to_string(),
        ])
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--irc-plain-listen",
            "0.0.0.0:6667",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
}

// ----- issue 12: ordering, numerics, SASL, multiline, read markers, rejoin, server name ----

/// The conversations a `CHATHISTORY TARGETS` command lists, in order.
async fn targets(irc: &mut Irc, command: &str) -> Vec<String> {
    irc.send(command).await;
    let lines = irc
        .until(|m| m.command == "BATCH" && m.params[0].starts_with('-'))
        .await;
    lines
        .iter()
        .filter(|m| m.command == "CHATHISTORY")
        .map(|m| m.params[1].clone())
        .collect()
}

/// The labels on the lines up to and including the first line labelled `last`.
async fn labels_until(irc: &mut Irc, last: &str) -> Vec<String> {
    let lines = irc.until(|m| m.tag_value("label") == Some(last)).await;
    lines
        .iter()
        .filter_map(|m| m.tag_value("label").map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_replies_leave_in_the_order_of_their_commands() {
    let server = server_with(&["alice", "bob"]).await;
    let _bob = native(&server, "bob").await;
    let mut alice = Irc::login(&server, "alice").await;
    alice.sync().await;
    // A send's echo waits for the writer's commit; the PONG after it must still follow it.
    for i in 0..30 {
        alice
            .send_raw(format!("PRIVMSG bob :m{i}\r\nPING t{i}\r\n").as_bytes())
            .await;
        let lines = alice
            .until(|m| m.command == "PONG" && m.params.last() == Some(&format!("t{i}")))
            .await;
        let echoed = lines
            .iter()
            .any(|m| m.command == "PRIVMSG" && m.params == ["bob", &format!("m{i}")]);
        assert!(
            echoed,
            "trial {i}: the echo must come before the PONG: {lines:#?}"
        );
    }
    // Labelled answers, quick and slow, refusals included, in command order.
    alice
        .send_raw(
            b"@label=a PRIVMSG bob :one\r\n@label=b PING :p\r\n@label=c PRIVMSG bob :two\r\n\
              @label=d WHOIS bob\r\n@label=e PRIVMSG #nosuch :three\r\n\
              @label=f PRIVMSG bob :four\r\n@label=g NAMES #nosuch\r\n",
        )
        .await;
    assert_eq!(
        labels_until(&mut alice, "g").await,
        ["a", "b", "c", "d", "e", "f", "g"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_numerics_name_what_they_should_and_notice_is_never_answered() {
    let server = server_with(&["alice", "bob", "carol"]).await;
    let mut bob = native(&server, "bob").await;
    bob.client.room_create("#bobs", false).await.unwrap();
    let mut alice = Irc::login(&server, "alice").await;
    alice.sync().await;
    // 443 names the nick that is already on the channel.
    alice.send("JOIN #club").await;
    alice.expect("366").await;
    alice.send("JOIN #bobs").await;
    alice.expect("366").await;
    bob.client.room_join("#club").await.unwrap();
    alice.expect("JOIN").await;
    alice.send("INVITE bob #club").await;
    let already = alice.expect("443").await;
    assert_eq!(
        already.params[..3],
        ["alice", "bob", "#club"],
        "{already:?}"
    );
    // INVITE and KICK by a non-member: 442, not 482.
    alice.send("PART #bobs").await;
    alice.expect("PART").await;
    alice.send("INVITE carol #bobs").await;
    assert_eq!(alice.expect("442").await.params[1], "#bobs");
    alice.send("KICK #bobs carol").await;
    assert_eq!(alice.expect("442").await.params[1], "#bobs");
    // TOPIC and MODE of a channel that is not a room: 403.
    for command in [
        "TOPIC #nosuch",
        "TOPIC #nosuch :new topic",
        "MODE #nosuch",
        "MODE #nosuch +i",
    ] {
        alice.send(command).await;
        let reply = alice
            .until(|m| m.command.len() == 3 && m.command.chars().all(|c| c.is_ascii_digit()))
            .await
            .pop()
            .unwrap();
        assert_eq!(
            (reply.command.as_str(), reply.params[1].as_str()),
            ("403", "#nosuch"),
            "{command}"
        );
    }
    // NOTICE never causes an automatic reply.
    for command in [
        "NOTICE #nosuch :hi",
        "NOTICE nobody :hi",
        "NOTICE #bobs :not a member",
        "NOTICE bob,carol :two targets",
        "NOTICE bob",
    ] {
        alice.send(command).await;
    }
    let lines = alice.sync().await;
    assert_eq!(lines.len(), 1, "only the PONG: {lines:#?}");
    // PING without a token: 461.
    alice.send("PING").await;
    assert_eq!(alice.expect("461").await.params[1], "PING");
    // More than 4094 bytes of tags: 417, and nothing is sent; 4094 are fine.
    let tags = |n: usize| format!("@+x={}", "a".repeat(n - 3));
    alice
        .send(&format!("{} PRIVMSG bob :too many tags", tags(4095)))
        .await;
    alice.expect("417").await;
    alice
        .send(&format!("{} PRIVMSG bob :tags at the limit", tags(4094)))
        .await;
    assert_eq!(native_message(&mut bob).await.body, "tags at the limit");
    // USER with an empty realname: 461.
    let mut fresh = Irc::plain(&server).await;
    fresh.send("USER u * * :").await;
    assert_eq!(fresh.expect("461").await.params[1], "USER");
    fresh.send("PING").await;
    assert_eq!(fresh.expect("461").await.params[1], "PING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_sasl_ends_a_bad_exchange_with_one_answer() {
    let server = server_with(&["alice"]).await;
    let mut irc = Irc::plain(&server).await;
    irc.send("CAP REQ :sasl").await;
    irc.expect("CAP").await;
    // A chunk over 400 bytes is not data: 905.
    irc.send("AUTHENTICATE PLAIN").await;
    irc.expect("AUTHENTICATE").await;
    irc.send(&format!("AUTHENTICATE {}", "A".repeat(500))).await;
    irc.expect("905").await;
    // An over-long response in full chunks: one 905, the rest of its chunks unanswered.
    irc.send("AUTHENTICATE PLAIN").await;
    irc.expect("AUTHENTICATE").await;
    for _ in 0..8 {
        irc.send(&format!("AUTHENTICATE {}", "A".repeat(400))).await;
    }
    irc.send("AUTHENTICATE AAAA").await;
    let lines = irc.sync().await;
    let numerics: Vec<&str> = lines
        .iter()
        .map(|m| m.command.as_str())
        .filter(|c| *c != "PONG")
        .collect();
    assert_eq!(numerics, ["905"], "{lines:#?}");
    // The next exchange starts afresh and succeeds.
    irc.send("AUTHENTICATE PLAIN").await;
    irc.expect("AUTHENTICATE").await;
    irc.send(&format!("AUTHENTICATE {}", plain("alice", PASSWORD)))
        .await;
    let done = irc
        .until(|m| m.command == "903" || m.command == "904")
        .await;
    assert_eq!(done.last().unwrap().command, "903", "{done:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_multiline_batches_are_answered_once_and_blank_concat_lines_refused() {
    let server = server_with(&["alice", "bob"]).await;
    let mut bob = native(&server, "bob").await;
    let mut alice = Irc::login(&server, "alice").await;
    alice.sync().await;
    // The label of the opening BATCH labels the one answer: the echo at the end.
    alice.send("@label=ml BATCH +m draft/multiline bob").await;
    alice.send("@batch=m PRIVMSG bob :first").await;
    alice.send("@batch=m PRIVMSG bob :second").await;
    alice.send("BATCH -m").await;
    let lines = alice.sync().await;
    let labelled: Vec<&IrcMessage> = lines
        .iter()
        .filter(|m| m.tag_value("label") == Some("ml"))
        .collect();
    assert_eq!(labelled.len(), 1, "{lines:#?}");
    assert_eq!(labelled[0].command, "BATCH", "{lines:#?}");
    assert!(!lines.iter().any(|m| m.command == "ACK"), "{lines:#?}");
    assert_eq!(native_message(&mut bob).await.body, "first\nsecond");
    // A blank line cannot be concatenated.
    alice.send("@label=bl BATCH +c draft/multiline bob").await;
    alice.send("@batch=c PRIVMSG bob :one").await;
    alice
        .send("@batch=c;draft/multiline-concat PRIVMSG bob :")
        .await;
    alice.send("@batch=c PRIVMSG bob :two").await;
    alice.send("BATCH -c").await;
    let lines = alice.sync().await;
    let fail = lines.iter().find(|m| m.command == "FAIL").unwrap();
    assert_eq!(fail.params[..2], ["BATCH", "MULTILINE_INVALID"]);
    assert_eq!(fail.tag_value("label"), Some("bl"));
    assert_eq!(
        lines
            .iter()
            .filter(|m| m.tag_value("label").is_some())
            .count(),
        1,
        "{lines:#?}"
    );
    assert_quiet(&mut bob.events, Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_read_markers_and_chathistory_targets_follow_the_specifications() {
    let server = server_with(&["alice", "bob", "carol"]).await;
    let (bob, _) = server.login("bob").await;
    let (carol, _) = server.login("carol").await;
    bob.client.room_create("#early", false).await.unwrap();
    let mut alice = Irc::login(&server, "alice").await;
    alice.sync().await;
    // MARKREAD for a joined channel comes before the end of its member list.
    alice.send("JOIN #early").await;
    let lines = alice.until(|m| m.command == "366").await;
    let marker = lines.iter().position(|m| m.command == "MARKREAD");
    assert!(marker.is_some(), "MARKREAD before 366: {lines:#?}");
    // A conversation that does not exist has no marker.
    alice.send("MARKREAD #nosuch").await;
    assert_eq!(alice.expect("MARKREAD").await.params, ["#nosuch", "*"]);
    // Latest messages: #early first, then carol, then bob.
    bob.client.send("#early", "early", "t1").await.unwrap();
    carol
        .client
        .send("alice", "from carol", "t2")
        .await
        .unwrap();
    bob.client.send("alice", "from bob", "t3").await.unwrap();
    while alice.privmsg().await.params[1] != "from bob" {}
    let all = "CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z \
               timestamp=2999-01-01T00:00:00.000Z 10";
    assert_eq!(targets(&mut alice, all).await, ["#early", "carol", "bob"]);
    let first_two = "CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z \
                     timestamp=2999-01-01T00:00:00.000Z 2";
    assert_eq!(targets(&mut alice, first_two).await, ["#early", "carol"]);
    let last_two = "CHATHISTORY TARGETS timestamp=2999-01-01T00:00:00.000Z \
                    timestamp=2000-01-01T00:00:00.000Z 2";
    assert_eq!(targets(&mut alice, last_two).await, ["carol", "bob"]);
    // The history batch names the target as the client wrote it.
    alice.send("CHATHISTORY LATEST Bob * 10").await;
    let start = alice.expect("BATCH").await;
    assert_eq!(start.params[1..], ["chathistory", "Bob"]);
    alice
        .until(|m| m.command == "BATCH" && m.params[0].starts_with('-'))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_join_of_a_channel_already_joined_answers_nothing() {
    let server = server_with(&["alice"]).await;
    let mut alice = Irc::login(&server, "alice").await;
    alice.send("JOIN #ops").await;
    alice.until(|m| m.command == "366").await;
    alice.send("JOIN #ops").await;
    let lines = alice.sync().await;
    assert_eq!(lines.len(), 1, "only the PONG: {lines:#?}");
    // As WeeChat does after a reconnect: the registration shows the channel; the client's
    // own JOIN changes nothing.
    drop(alice);
    let mut again = Irc::plain(&server).await;
    again.sasl("alice", PASSWORD, ALL_CAPS).await;
    again.until(|m| m.command == "366").await;
    again.send("@label=j JOIN #ops").await;
    let lines = again.sync().await;
    assert_eq!(
        lines.iter().map(|m| m.command.as_str()).collect::<Vec<_>>(),
        ["ACK", "PONG"],
        "{lines:#?}"
    );
}

/// A TLS ClientHello (enough of one for the server to parse) naming `name` as SNI.
fn client_hello_with_sni(name: &str) -> Vec<u8> {
    let host = name.as_bytes();
    let mut sni = Vec::new();
    sni.extend(((host.len() + 3) as u16).to_be_bytes());
    sni.push(0); // host_name
    sni.extend((host.len() as u16).to_be_bytes());
    sni.extend(host);
    let mut extensions = Vec::new();
    extensions.extend(0u16.to_be_bytes()); // server_name
    extensions.extend((sni.len() as u16).to_be_bytes());
    extensions.extend(sni);
    extensions.extend(0x002bu16.to_be_bytes()); // supported_versions: TLS 1.3
    extensions.extend([0, 3, 2, 3, 4]);
    let mut hello = vec![3, 3];
    hello.extend([7u8; 32]); // random
    hello.push(0); // no session id
    hello.extend([0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    hello.extend([1, 0]); // no compression
    hello.extend((extensions.len() as u16).to_be_bytes());
    hello.extend(extensions);
    let mut handshake = vec![1]; // client_hello
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 3, 1];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatd_serve_names_the_irc_server_prints_the_certificate_pin_and_takes_ip_sni_quietly() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let db = crate::common::dir_db(dir.path());
    let certs = dir.path().join("certs");
    {
        let store = chat_svc::store::Store::connect(&db.target, chat_svc::store::Durability::Full)
            .await
            .unwrap();
        let hasher = chat_svc::auth::Hasher::new(1).await.unwrap();
        let hash = hasher
            .hash(&chat_svc::protocol::Secret::new(PASSWORD))
            .await
            .unwrap();
        store
            .create_user(
                &chat_svc::protocol::Username::parse("alice").unwrap(),
                &hash,
            )
            .await
            .unwrap();
        store.close().await;
    }
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .env_remove("RUST_LOG")
        .env_remove("CHATD_CONFIG")
        .env_remove("CHATD_IRC_SERVER_NAME")
        .arg("--db")
        .arg(&db.arg)
        .arg("--cert-dir")
        .arg(&certs)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args([
            "--irc-listen",
            "127.0.0.1:0",
            "--irc-plain-listen",
            "127.0.0.1:0",
        ])
        .args(["--irc-server-name", "irc.example.org"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    while printed.len() < 6 {
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("chatd serve printed too little")
            .unwrap()
            .unwrap_or_else(|| panic!("chatd serve exited; it printed {printed:#?}"));
        printed.push(line);
    }
    let after = |prefix: &str| {
        printed
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
            .collect::<Vec<String>>()
    };
    let tls: SocketAddr = after("IRC over TLS on ")[0].parse().unwrap();
    let plain_addr: SocketAddr = after("plaintext IRC on ")[0].parse().unwrap();
    // The certificate's SHA-256, in WeeChat's form and in irssi's.
    let sha = certificate_sha256_in(&certs);
    let colons = sha
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8(p.to_vec()).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(
        after("IRC certificate sha256 "),
        [sha, colons],
        "{printed:#?}"
    );

    // The configured server name is the source of the server's lines.
    let mut irc = Irc::over(tokio::net::TcpStream::connect(plain_addr).await.unwrap());
    irc.send(&format!("PASS alice:{PASSWORD}")).await;
    irc.send("NICK alice").await;
    irc.send("USER a 0 * :a").await;
    let lines = irc.until(|m| m.command == "376").await;
    let welcome = lines.iter().find(|m| m.command == "001").unwrap();
    assert_eq!(welcome.source.as_deref(), Some("irc.example.org"));
    irc.send("PING :x").await;
    let pong = irc.expect("PONG").await;
    assert_eq!(pong.source.as_deref(), Some("irc.example.org"));
    assert_eq!(pong.params, ["irc.example.org", "x"]);

    // A client naming an IP address as SNI (irssi and WeeChat do) is no warning.
    for _ in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(tls).await.unwrap();
        tcp.write_all(&client_hello_with_sni("127.0.0.1"))
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink)).await;
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("chatd started"), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
}

/// The SHA-256 of the certificate in `certs` (what IRC clients pin).
pub(crate) fn certificate_sha256_in(certs: &std::path::Path) -> String {
    use sha2::Digest;
    let pem = std::fs::read(certs.join("cert.pem")).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    hex::encode(sha2::Sha256::digest(der.as_ref()))
}

// ----- properties of the line codec and the message syntax -------------------------------

fn prop_config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: 512,
        failure_persistence: None,
        ..Default::default()
    }
}

/// Lines decoded from a byte stream arriving in `chunks`.
fn decode_lines(max: usize, chunks: &[&[u8]]) -> Vec<chat_svc::irc::codec::Line> {
    use tokio_util::codec::Decoder;
    let mut codec = chat_svc::irc::codec::IrcCodec::new(max);
    let mut buf = bytes::BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(line) = codec.decode(&mut buf).unwrap() {
            out.push(line);
        }
    }
    while let Some(line) = codec.decode_eof(&mut buf).unwrap() {
        out.push(line);
    }
    out
}

proptest::proptest! {
    #![proptest_config(prop_config())]

    /// However the stream is split, the same lines come out, none over the limit, and the
    /// decoder never fails: a bad line is a value, not the end of the connection.
    #[test]
    fn irc_codec_is_split_invariant_and_bounded(
        stream in proptest::collection::vec(
            proptest::prop_oneof![Just(b'\n'), Just(b'\r'), Just(0xffu8), Just(0u8), 0x20u8..0x7f],
            0..400,
        ),
        max in 1usize..64,
        chunk in 1usize..50,
    ) {
        use chat_svc::irc::codec::Line;
        let whole = decode_lines(max, &[&stream]);
        let split: Vec<&[u8]> = stream.chunks(chunk).collect();
        proptest::prop_assert_eq!(&decode_lines(max, &split), &whole);
        for line in &whole {
            if let Line::Text(t) = line {
                proptest::prop_assert!(t.len() <= max && !t.contains(['\r', '\n', '\0']));
            }
        }
    }

    /// Parsing is total and writing a parsed message reads back the same message.
    #[test]
    fn irc_messages_survive_a_write_and_read(line in "[ -~\u{80}-\u{2FF}]{0,80}") {
        if let Some(m) = IrcMessage::parse(&line) {
            let again = IrcMessage::parse(&m.to_line());
            proptest::prop_assert_eq!(again.as_ref(), Some(&m), "{}", m.to_line());
        }
    }
}

use proptest::strategy::Just;

// ----- a real client: WeeChat ------------------------------------------------------------

/// `weechat-headless` on PATH; `None` (after saying so) on a developer machine without it.
/// In CI (`CI` set) a missing WeeChat fails the test: `.ci/run` installs it.
fn weechat_binary() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("weechat-headless"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "weechat-headless is not installed (Debian: apt-get install weechat-headless); \
             CI must run the WeeChat test"
        );
        eprintln!("skipping the WeeChat test: weechat-headless is not on PATH and CI is unset");
    }
    found
}

/// The SHA-256 of the server's certificate (what WeeChat pins; our own pin is the key's).
fn certificate_sha256(server: &TestServer) -> String {
    certificate_sha256_in(&server.dir.path().join("certs"))
}

/// Writes commands to WeeChat's FIFO (one per line).
async fn weechat_fifo(fifo: &std::path::Path, commands: &str) {
    let (fifo, text) = (fifo.to_path_buf(), commands.to_string());
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    })
    .await
    .unwrap();
}

/// Waits until WeeChat's log of `buffer` contains `text` (WeeChat works at its own pace;
/// the limit only turns a hang into a failure with the logs shown).
async fn weechat_log_contains(dir: &std::path::Path, buffer: &str, text: &str) {
    let path = dir.join("logs").join(format!("{buffer}.weechatlog"));
    for _ in 0..600 {
        if std::fs::read_to_string(&path).is_ok_and(|log| log.contains(text)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut logs = String::new();
    for entry in std::fs::read_dir(dir.join("logs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
        logs.push_str(&format!("== {}\n{body}\n", entry.path().display()));
    }
    panic!("WeeChat never showed {text:?} in {buffer}; its logs:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weechat_over_tls_with_sasl_talks_with_a_native_client_both_ways() {
    let Some(weechat) = weechat_binary() else {
        return;
    };
    let server = server_with(&["alice", "bob"]).await;
    let mut bob = native(&server, "bob").await;
    bob.client.room_create("#lounge", false).await.unwrap();

    let home = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(&weechat)
        .arg("--dir")
        .arg(home.path())
        .args(["-P", "irc,fifo,logger", "-s"])
        .args(["-r", "/set logger.file.flush_delay 0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let fifo = home
        .path()
        .join(format!("weechat_fifo_{}", child.id().unwrap()));
    for _ in 0..600 {
        if fifo.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fifo.exists(),
        "WeeChat made no FIFO at {} (is weechat-plugins installed?)",
        fifo.display()
    );
    // WeeChat 4 calls its TLS options tls*, WeeChat 3 ssl*. The certificate is self-signed:
    // verification is off, but the certificate's fingerprint is pinned. The password goes
    // through the FIFO, not argv.
    let version = std::process::Command::new(&weechat)
        .arg("--version")
        .output()
        .unwrap();
    let major: u32 = String::from_utf8_lossy(&version.stdout)
        .trim()
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(4);
    let tls = if major >= 4 { "tls" } else { "ssl" };
    let port = server.irc_tls.unwrap().port();
    let fingerprint = certificate_sha256(&server);
    weechat_fifo(
        &fifo,
        &format!(
            "*/server add chatd 127.0.0.1/{port} -{tls} -{tls}_verify=off \
             -{tls}_fingerprint={fingerprint} -sasl_mechanism=plain -sasl_username=alice \
             -sasl_password={PASSWORD} -nicks=alice\n*/connect chatd\n"
        ),
    )
    .await;
    weechat_log_contains(home.path(), "irc.server.chatd", "Welcome to chatd, alice").await;

    // WeeChat → native: a DM and a room message, intact.
    weechat_fifo(
        &fifo,
        "irc.server.chatd */join #lounge\n\
         irc.server.chatd */msg bob héllo bob, from WeeChat ☕\n\
         irc.server.chatd */msg #lounge hello lounge, from WeeChat\n",
    )
    .await;
    let dm = native_message(&mut bob).await;
    assert_eq!(
        (dm.from.as_str(), dm.to.as_str(), dm.body.as_str()),
        ("alice", "bob", "héllo bob, from WeeChat ☕")
    );
    let room = native_message(&mut bob).await;
    assert_eq!(
        (room.from.as_str(), room.to.as_str(), room.body.as_str()),
        ("alice", "#lounge", "hello lounge, from WeeChat")
    );

    // Native → WeeChat.
    bob.client
        .send("alice", "hi alice, from chat ✓", "w1")
        .await
        .unwrap();
    bob.client
        .send("#lounge", "room hello, from chat", "w2")
        .await
        .unwrap();
    weechat_log_contains(home.path(), "irc.chatd.bob", "hi alice, from chat ✓").await;
    weechat_log_contains(home.path(), "irc.chatd.#lounge", "room hello, from chat").await;

    weechat_fifo(&fifo, "*/quit\n").await;
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

// ----- issue 13: one core for every front end -------------------------------------------

/// Whether the server takes one more IRC-over-TLS connection right now: a connection over
/// `max_connections` is closed at once, before the TLS handshake completes.
async fn another_connection_served(server: &TestServer) -> bool {
    let addr: SocketAddr = server.irc_tls.unwrap();
    chat_svc::client::connect_tls(&addr.into(), Some(server.pin))
        .await
        .is_ok()
}

/// A kicked slow IRC reader is closed at once. A client that stops reading blocks the
/// gateway's write; the hub fills its live queue and kicks it as a slow consumer, and the
/// connection must end then, releasing its queue, not when the write timeout (600 s here)
/// is up. That it ended is seen without reading from it (reading would unblock the write):
/// the server takes two connections, alice's and bob's, and a third is served again only
/// once bob's is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_slow_irc_reader_is_closed_at_once() {
    const MESSAGES: usize = 1200;
    let limits = chat_svc::server::Limits {
        live_queue: 64,
        live_queue_bytes: 256 * 1024,
        // A blocked write alone would not end the session within the test.
        write_timeout: Duration::from_secs(600),
        max_connections: 2,
        ..test_limits()
    };
    let server = TestServer::start_irc(limits).await;
    server.add_users(&["alice", "bob"]).await;
    let mut bob = Irc::tls(&server).await;
    bob.sasl("bob", PASSWORD, ALL_CAPS).await;
    bob.auto_pong = false;
    bob.sync().await;
    let (alice, _) = server.login("alice").await;
    assert!(
        !another_connection_served(&server).await,
        "a third connection is refused while alice's and bob's are open"
    );
    // bob now reads nothing while alice sends far more than the socket buffers hold, one
    // message at a time: slowly enough that bob's session keeps up with its queue until
    // its socket is full, so that the kick comes while a write is blocked.
    let body = "x".repeat(chat_svc::protocol::DEFAULT_MAX_BODY_BYTES);
    for i in 0..MESSAGES {
        alice
            .client
            .send("bob", &body, &format!("big-{i}"))
            .await
            .unwrap();
    }
    // Closed at once: well within 20 s (the goodbye takes a few), not 600.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while !another_connection_served(&server).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the kicked IRC reader still holds its connection (its write waits for the timeout)"
    );
    // What bob's socket still holds ends in the close, the ERROR line first if it fitted.
    // (The close may come without TLS close_notify: bob was not reading it either.)
    let mut live = std::collections::HashSet::new();
    let mut error = None;
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), bob.reader.read_line(&mut line))
            .await
            .expect("the closed connection did not end");
        if !matches!(read, Ok(n) if n > 0) {
            break;
        }
        let m = IrcMessage::parse(line.trim_end_matches("\r\n")).unwrap();
        if let Some(id) = m.tag_value("msgid") {
            live.insert(id.to_string());
        }
        if m.command == "ERROR" {
            error = Some(m.params.join(" "));
        }
    }
    assert!(
        live.len() < MESSAGES,
        "all {} messages were delivered",
        live.len()
    );
    if let Some(error) = error {
        assert!(error.contains("undelivered"), "{error}");
    }
}
