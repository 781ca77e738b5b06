//! Hostile and broken input on raw connections: every bad frame gets its exact typed error
//! (and, where the protocol says so, the connection is closed), and the server keeps serving
//! everyone else.

use std::time::Duration;

use chat_svc::client::{connect_tls, Connection};
use chat_svc::protocol::codec::parse_server_frame;
use chat_svc::protocol::{
    ErrorCode, Secret, ServerFrame, Username, DEFAULT_MAX_BODY_BYTES, MAX_FRAME_LEN,
    PROTOCOL_VERSION,
};
use rand::RngCore;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// How long any single read may take before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers: raw connections, frames, and the bystanders who must keep working.
// ---------------------------------------------------------------------------------------------

/// A raw pinned TLS connection: nothing has been sent on it yet (not even `hello`).
async fn raw(server: &TestServer) -> impl AsyncRead + AsyncWrite + Unpin {
    connect_tls(&server.server_addr(), Some(server.pin))
        .await
        .expect("TLS connect")
}

/// Writes one frame: a 4-byte big-endian length, then `payload`.
async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, payload: &[u8]) {
    let mut buf = (payload.len() as u32).to_be_bytes().to_vec();
    buf.extend_from_slice(payload);
    s.write_all(&buf).await.expect("write frame");
    s.flush().await.expect("flush");
}

/// Writes one JSON value as a frame.
async fn write_json<S: AsyncWrite + Unpin>(s: &mut S, value: serde_json::Value) {
    write_frame(s, &serde_json::to_vec(&value).unwrap()).await;
}

/// Reads one length-prefixed frame; `None` on a clean end of stream before a frame starts.
async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    tokio::time::timeout(READ_TIMEOUT, async {
        let mut len = [0u8; 4];
        match s.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => panic!("reading a frame header: {e}"),
        }
        let len = u32::from_be_bytes(len) as usize;
        assert!(len <= MAX_FRAME_LEN, "server frame of {len} bytes");
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.expect("frame body");
        Some(payload)
    })
    .await
    .expect("timed out reading a frame")
}

/// Reads and parses one server frame (it must be there).
async fn read_server_frame<S: AsyncRead + Unpin>(s: &mut S) -> ServerFrame {
    let payload = read_frame(s)
        .await
        .expect("connection closed instead of sending a frame");
    parse_server_frame(&payload).unwrap_or_else(|e| {
        panic!(
            "unparsable server frame {:?}: {e}",
            String::from_utf8_lossy(&payload)
        )
    })
}

/// Reads one frame and asserts it is the error `code` answering `req`; returns its message.
async fn expect_error<S: AsyncRead + Unpin>(
    s: &mut S,
    code: ErrorCode,
    req: Option<u64>,
) -> String {
    match read_server_frame(s).await {
        ServerFrame::Error {
            req: got_req,
            code: got_code,
            message,
            retry_after_ms,
        } => {
            assert_eq!(got_code, code, "error code (message: {message:?})");
            assert_eq!(got_req, req, "echoed req (message: {message:?})");
            assert_eq!(retry_after_ms, None);
            assert!(!message.is_empty(), "error frames carry a message");
            message
        }
        other => panic!("expected error {code}, got {other:?}"),
    }
}

/// Asserts that the server closed the connection: the next read ends the stream (EOF) or
/// fails, without another frame.
async fn assert_closed<S: AsyncRead + Unpin>(s: &mut S) {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(READ_TIMEOUT, s.read(&mut buf)).await {
        Err(_) => panic!("the server did not close the connection"),
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!(
            "expected the connection to be closed, got {n} more bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

/// Sends `hello` and expects `welcome`.
async fn hello<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    write_json(
        s,
        json!({"type": "hello", "req": 1, "version": PROTOCOL_VERSION, "client": "bad_input"}),
    )
    .await;
    match read_server_frame(s).await {
        ServerFrame::Welcome { req, version, .. } => {
            assert_eq!((req, version), (1, PROTOCOL_VERSION));
        }
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// Sends a ping and expects its pong: the connection is still open and served.
async fn assert_open<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, req: u64) {
    write_json(s, json!({"type": "ping", "req": req})).await;
    match read_server_frame(s).await {
        ServerFrame::Pong { req: got } => assert_eq!(got, req),
        other => panic!("expected pong {req}, got {other:?}"),
    }
}

/// `hello` + password login as `user` on a raw connection.
async fn raw_login<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, user: &str) {
    hello(s).await;
    write_json(
        s,
        json!({"type": "login", "req": 2, "user": user, "password": PASSWORD, "device": "raw"}),
    )
    .await;
    match read_server_frame(s).await {
        ServerFrame::LoginOk { req, user: got, .. } => {
            assert_eq!((req, got.as_str()), (2, user));
        }
        other => panic!("expected login_ok, got {other:?}"),
    }
}

/// Two well-behaved clients, logged in before the bad input arrives: alice sends, bob is
/// subscribed and receives live.
struct Bystanders {
    alice: Connection,
    bob: Connection,
    sent: usize,
}

impl Bystanders {
    /// Asserts that alice can still send and bob still receives it live.
    async fn still_served(&mut self, what: &str) {
        self.sent += 1;
        let body = format!("still here after {what} #{}", self.sent);
        let key = format!("bystander-{}", self.sent);
        let sent = tokio::time::timeout(READ_TIMEOUT, self.alice.client.send("bob", &body, &key))
            .await
            .unwrap_or_else(|_| panic!("alice's send timed out after {what}"))
            .unwrap_or_else(|e| panic!("alice's send failed after {what}: {e}"));
        let got = take_messages(&mut self.bob.events, 1).await;
        assert_eq!(got[0].id, sent.id, "after {what}");
        assert_eq!(got[0].body, body, "after {what}");
        assert_eq!((got[0].from.as_str(), got[0].to.as_str()), ("alice", "bob"));
    }
}

/// A server with users alice, bob and carol (carol is for raw logins), and the bystanders
/// already connected and proven to work.
async fn setup() -> (TestServer, Bystanders) {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob", "carol"]).await;
    let (alice, _) = server.login("alice").await;
    let (mut bob, _) = server.login("bob").await;
    assert!(drain_backlog(&mut bob).await.is_empty());
    let mut bystanders = Bystanders {
        alice,
        bob,
        sent: 0,
    };
    bystanders.still_served("setup").await;
    (server, bystanders)
}

// ---------------------------------------------------------------------------------------------
// Framing and encoding errors (before any hello): answered, then closed.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_after_tls_are_bad_json_and_close() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    let mut garbage = [0u8; 10];
    rand::thread_rng().fill_bytes(&mut garbage);
    garbage[0] = b'#'; // never the start of a JSON value, whatever follows
    write_frame(&mut s, &garbage).await;
    expect_error(&mut s, ErrorCode::BadJson, None).await;
    assert_closed(&mut s).await;
    others.still_served("garbage bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_on_the_tls_port_gets_a_plain_reply_and_eof() {
    let (server, mut others) = setup().await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"hello\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    // Read until EOF. A reset after the reply (the server closes with our line unread) is
    // tolerated as the end, but the reply itself must have arrived.
    let ended = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) => return "eof",
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return "error",
            }
        }
    })
    .await
    .expect("the server neither answered nor closed a plaintext connection");
    let text = String::from_utf8(got).expect("the plaintext reply is UTF-8");
    assert!(
        text.starts_with("chatd:"),
        "plaintext reply {text:?} (ended with {ended})"
    );
    assert!(text.ends_with("\r\n"), "one whole line: {text:?}");
    assert_eq!(text.lines().count(), 1, "exactly one line: {text:?}");
    assert!(
        text.contains("TLS"),
        "the reply says what the port speaks: {text:?}"
    );
    others.still_served("a plaintext client").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_bad_frame_and_closes() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    // Only the length prefix: the server must refuse on the header alone, without waiting
    // for (or buffering) 128 KiB.
    let len = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
    s.write_all(&len).await.unwrap();
    s.flush().await.unwrap();
    let message = expect_error(&mut s, ErrorCode::BadFrame, None).await;
    assert!(
        message.contains(&MAX_FRAME_LEN.to_string()),
        "the message names the limit: {message:?}"
    );
    assert_closed(&mut s).await;
    others.still_served("an oversized frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_after_login_is_bad_frame_and_closes() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    raw_login(&mut s, "carol").await;
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    s.flush().await.unwrap();
    expect_error(&mut s, ErrorCode::BadFrame, None).await;
    assert_closed(&mut s).await;
    others.still_served("an oversized frame after login").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_is_bad_frame_and_the_server_survives() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    let mut partial = 100u32.to_be_bytes().to_vec();
    partial.extend_from_slice(br#"{"type":"h"#); // 10 of the promised 100 bytes
    s.write_all(&partial).await.unwrap();
    s.flush().await.unwrap();
    // Close our write side (TLS close_notify, then TCP FIN); keep reading.
    s.shutdown().await.unwrap();
    match tokio::time::timeout(READ_TIMEOUT, async {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await?;
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut payload).await?;
        Ok::<_, std::io::Error>(payload)
    })
    .await
    .expect("the server neither answered nor closed a truncated frame")
    {
        Ok(payload) => {
            match parse_server_frame(&payload).expect("a server frame") {
                ServerFrame::Error { req, code, .. } => {
                    assert_eq!((code, req), (ErrorCode::BadFrame, None));
                }
                other => panic!("expected bad_frame, got {other:?}"),
            }
            assert_closed(&mut s).await;
        }
        // The server may not be able to answer a peer that has closed its side.
        Err(e) => eprintln!("truncated frame: no readable answer ({e})"),
    }
    others.still_served("a truncated frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_bad_json_and_closes() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    write_frame(&mut s, br#"{"type":"hello","req":1,"version":"#).await;
    let message = expect_error(&mut s, ErrorCode::BadJson, None).await;
    assert!(message.contains("JSON"), "{message:?}");
    assert_closed(&mut s).await;
    others.still_served("invalid JSON").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_after_login_is_bad_json_and_closes() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    raw_login(&mut s, "carol").await;
    write_frame(&mut s, b"{nope").await;
    expect_error(&mut s, ErrorCode::BadJson, None).await;
    assert_closed(&mut s).await;
    others.still_served("invalid JSON after login").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_bad_json_and_closes() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    // Well-formed JSON apart from one byte that is not UTF-8 inside a string.
    let mut payload = br#"{"type":"hello","req":1,"version":1,"client":""#.to_vec();
    payload.extend_from_slice(b"\xff\xfe");
    payload.extend_from_slice(br#""}"#);
    write_frame(&mut s, &payload).await;
    let message = expect_error(&mut s, ErrorCode::BadJson, None).await;
    assert!(message.contains("UTF-8"), "{message:?}");
    assert_closed(&mut s).await;
    others.still_served("invalid UTF-8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_frame_is_bad_json_and_closes() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    write_frame(&mut s, b"").await;
    expect_error(&mut s, ErrorCode::BadJson, None).await;
    assert_closed(&mut s).await;
    others.still_served("an empty frame").await;
}

// ---------------------------------------------------------------------------------------------
// Protocol errors: unknown type, wrong order, wrong version.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_type_after_hello_echoes_req_and_closes() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    hello(&mut s).await;
    write_json(&mut s, json!({"type": "teleport", "req": 77, "to": "mars"})).await;
    let message = expect_error(&mut s, ErrorCode::UnknownType, Some(77)).await;
    assert!(message.contains("teleport"), "{message:?}");
    assert_closed(&mut s).await;
    others.still_served("an unknown type").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_before_login_is_not_authenticated_and_closes() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    hello(&mut s).await;
    write_json(
        &mut s,
        json!({"type": "send", "req": 5, "to": "bob", "body": "sneaky", "key": "k"}),
    )
    .await;
    expect_error(&mut s, ErrorCode::NotAuthenticated, Some(5)).await;
    assert_closed(&mut s).await;
    // Nothing was delivered to bob: the next thing he gets is the bystander message.
    others.still_served("a send before login").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_version_is_unsupported_version_and_closes() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    write_json(
        &mut s,
        json!({"type": "hello", "req": 3, "version": PROTOCOL_VERSION + 1}),
    )
    .await;
    let message = expect_error(&mut s, ErrorCode::UnsupportedVersion, Some(3)).await;
    assert!(
        message.contains(&(PROTOCOL_VERSION + 1).to_string()),
        "{message:?}"
    );
    assert_closed(&mut s).await;
    others.still_served("a wrong protocol version").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_hello_first_frame_is_unsupported_version_and_closes() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    write_json(
        &mut s,
        json!({"type": "login", "req": 4, "user": "carol", "password": PASSWORD}),
    )
    .await;
    expect_error(&mut s, ErrorCode::UnsupportedVersion, Some(4)).await;
    assert_closed(&mut s).await;
    others.still_served("a non-hello first frame").await;
}

// ---------------------------------------------------------------------------------------------
// Authentication failures: typed, indistinguishable, and the connection may retry.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_look_identical_and_stay_open() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    hello(&mut s).await;

    write_json(
        &mut s,
        json!({"type": "login", "req": 10, "user": "carol", "password": "not-the-password"}),
    )
    .await;
    let wrong_password = expect_error(&mut s, ErrorCode::InvalidCredentials, Some(10)).await;
    assert_open(&mut s, 11).await;

    write_json(
        &mut s,
        json!({"type": "login", "req": 12, "user": "nobody", "password": PASSWORD}),
    )
    .await;
    let unknown_user = expect_error(&mut s, ErrorCode::InvalidCredentials, Some(12)).await;
    assert_open(&mut s, 13).await;

    assert_eq!(
        wrong_password, unknown_user,
        "a wrong password and an unknown user must be indistinguishable"
    );
    assert!(!wrong_password.contains("carol") && !unknown_user.contains("nobody"));

    // The same connection can still log in properly afterwards.
    write_json(
        &mut s,
        json!({"type": "login", "req": 14, "user": "carol", "password": PASSWORD}),
    )
    .await;
    match read_server_frame(&mut s).await {
        ServerFrame::LoginOk { req, user, .. } => assert_eq!((req, user.as_str()), (14, "carol")),
        other => panic!("expected login_ok, got {other:?}"),
    }
    others.still_served("failed logins").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_invalid_token() {
    let (server, mut others) = setup().await;
    let (carol, token) = server.login("carol").await;
    drop(carol);
    let admin = server.admin().await;
    let revoked = admin
        .revoke_user(&Username::parse("carol").unwrap())
        .await
        .unwrap();
    admin.close().await;
    assert!(revoked >= 1, "carol had a session to revoke");

    let mut s = raw(&server).await;
    hello(&mut s).await;
    write_json(
        &mut s,
        json!({"type": "auth", "req": 20, "token": token.expose()}),
    )
    .await;
    expect_error(&mut s, ErrorCode::InvalidToken, Some(20)).await;
    // Like a failed login, a refused token leaves the unauthenticated connection open (the
    // client may log in with a password instead), but it is not authenticated.
    assert_open(&mut s, 21).await;
    write_json(
        &mut s,
        json!({"type": "history", "req": 22, "peer": "alice"}),
    )
    .await;
    expect_error(&mut s, ErrorCode::NotAuthenticated, Some(22)).await;
    assert_closed(&mut s).await;

    // The client library sees the same code.
    let err = server
        .resume(&Secret::new(token.expose()))
        .await
        .err()
        .expect("a revoked token must not authenticate");
    assert_eq!(err.code(), Some(ErrorCode::InvalidToken), "{err}");
    others.still_served("a revoked token").await;
}

// ---------------------------------------------------------------------------------------------
// Request errors after login: answered, connection kept.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_oversized_bodies_are_refused_without_closing() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    raw_login(&mut s, "carol").await;

    write_json(
        &mut s,
        json!({"type": "send", "req": 30, "to": "bob", "body": "", "key": "e1"}),
    )
    .await;
    expect_error(&mut s, ErrorCode::EmptyMessage, Some(30)).await;
    assert_open(&mut s, 31).await;

    let too_big = "x".repeat(DEFAULT_MAX_BODY_BYTES + 1);
    write_json(
        &mut s,
        json!({"type": "send", "req": 32, "to": "bob", "body": too_big, "key": "e2"}),
    )
    .await;
    let message = expect_error(&mut s, ErrorCode::MessageTooLarge, Some(32)).await;
    assert!(
        message.contains(&DEFAULT_MAX_BODY_BYTES.to_string()),
        "the message names the limit: {message:?}"
    );
    assert_open(&mut s, 33).await;

    // Multi-byte characters count in bytes: 16 KiB + 1 byte of UTF-8 is too large too.
    let too_big_utf8 = format!("{}é", "x".repeat(DEFAULT_MAX_BODY_BYTES - 1));
    write_json(
        &mut s,
        json!({"type": "send", "req": 34, "to": "bob", "body": too_big_utf8, "key": "e3"}),
    )
    .await;
    expect_error(&mut s, ErrorCode::MessageTooLarge, Some(34)).await;

    // Exactly at the limit is fine.
    let at_limit = "y".repeat(DEFAULT_MAX_BODY_BYTES);
    write_json(
        &mut s,
        json!({"type": "send", "req": 35, "to": "bob", "body": at_limit, "key": "e4"}),
    )
    .await;
    let id = match read_server_frame(&mut s).await {
        ServerFrame::Sent {
            req, id, duplicate, ..
        } => {
            assert_eq!((req, duplicate), (35, false));
            id
        }
        other => panic!("expected sent, got {other:?}"),
    };
    // Bob got exactly that one: neither refused message was stored.
    let got = take_messages(&mut others.bob.events, 1).await;
    assert_eq!((got[0].id, got[0].from.as_str()), (id, "carol"));
    assert_eq!(got[0].body.len(), DEFAULT_MAX_BODY_BYTES);
    others.still_served("refused bodies").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_beyond_what_was_sent_is_bad_request_without_closing() {
    let (server, mut others) = setup().await;
    let mut s = raw(&server).await;
    raw_login(&mut s, "carol").await;

    // Nothing was pushed on this connection yet (not even subscribed).
    write_json(&mut s, json!({"type": "ack", "req": 40, "upto": 1})).await;
    expect_error(&mut s, ErrorCode::BadRequest, Some(40)).await;
    assert_open(&mut s, 41).await;

    // After receiving one message, acking it works, acking past it does not.
    write_json(&mut s, json!({"type": "subscribe", "req": 42})).await;
    match read_server_frame(&mut s).await {
        ServerFrame::Subscribed { req, .. } => assert_eq!(req, 42),
        other => panic!("expected subscribed, got {other:?}"),
    }
    match read_server_frame(&mut s).await {
        ServerFrame::CaughtUp { .. } => {}
        other => panic!("expected caught_up, got {other:?}"),
    }
    let sent = others
        .alice
        .client
        .send("carol", "for carol", "to-carol-1")
        .await
        .unwrap();
    match read_server_frame(&mut s).await {
        ServerFrame::Msg { message } => assert_eq!(message.id, sent.id),
        other => panic!("expected msg, got {other:?}"),
    }
    write_json(
        &mut s,
        json!({"type": "ack", "req": 43, "upto": sent.id + 1}),
    )
    .await;
    let message = expect_error(&mut s, ErrorCode::BadRequest, Some(43)).await;
    assert!(message.contains(&sent.id.to_string()), "{message:?}");
    write_json(&mut s, json!({"type": "ack", "req": 44, "upto": sent.id})).await;
    match read_server_frame(&mut s).await {
        ServerFrame::Acked { req, upto } => assert_eq!((req, upto), (44, sent.id)),
        other => panic!("expected acked, got {other:?}"),
    }
    assert_open(&mut s, 45).await;
    others.still_served("a bad ack").await;
}
