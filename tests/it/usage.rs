//! What using chatd from outside found (issue 12), at the library level: one server per
//! database, blank messages refused everywhere, sending marks a conversation read.

use std::time::Duration;

use chat_svc::client::{ClientError, Event};
use chat_svc::protocol::ErrorCode;
use chat_svc::server::{Server, ServerError};
use chat_svc::store::LockError;

use crate::common::*;
use crate::irc::Irc;

/// A second in-process server on a database that is being served is refused (with the
/// first one's pid and address), and the first keeps storing messages; once the first has
/// stopped, the database can be served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_a_served_database_is_refused() {
    if sqlite_only("the SQLite file lock; on PostgreSQL many nodes serve one database") {
        return;
    }
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    alice.client.send("bob", "one", "k1").await.unwrap();

    let second = Server::start(&options(server.dir.path(), test_limits())).await;
    let Err(ServerError::Lock(LockError::InUse { holder, .. })) = second else {
        panic!(
            "a second server on the same database must be refused, got {:?}",
            second.err()
        );
    };
    assert_eq!(holder.pid, Some(std::process::id()));
    assert_eq!(holder.listening, [server.addr.to_string()]);

    // The first one is unharmed.
    let sent = alice.client.send("bob", "two", "k2").await.unwrap();
    let (mut bob, _) = server.login("bob").await;
    let got = drain_backlog(&mut bob).await;
    assert_eq!(got.last().map(|m| m.id), Some(sent.id));
    drop((alice, bob));

    // A restart (stop, then start) takes the database over.
    let server = server.restart().await;
    let (alice, _) = server.login("alice").await;
    alice.client.send("bob", "three", "k3").await.unwrap();
}

/// A body of whitespace only is refused as empty natively, like `""`, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_only_messages_are_refused_as_empty() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    for body in ["", " ", "  \n\t \r\n", "\u{a0}\u{3000}"] {
        let err = alice.client.send("bob", body, "k").await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::EmptyMessage), "{body:?}: {err}");
    }
    // Text with whitespace around it is kept exactly.
    let sent = alice.client.send("bob", "  x  \n", "k2").await.unwrap();
    let (page, _) = alice.client.history("bob", None, None).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!((page[0].id, page[0].body.as_str()), (sent.id, "  x  \n"));
}

/// Over IRC too: `PRIVMSG` of blanks is `412`, and a multiline batch of blank lines as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_only_messages_are_refused_over_irc() {
    let server = TestServer::start_irc(test_limits()).await;
    server.add_users(&["alice", "bob"]).await;
    let mut irc = Irc::login(&server, "alice").await;
    irc.send("PRIVMSG bob :   ").await;
    let reply = irc.expect("412").await;
    assert_eq!(reply.params[0], "alice", "{reply:?}");
    irc.send("BATCH +b1 draft/multiline bob").await;
    irc.send("@batch=b1 PRIVMSG bob : ").await;
    irc.send("@batch=b1 PRIVMSG bob :\t").await;
    irc.send("BATCH -b1").await;
    irc.expect("412").await;
    let (alice_native, _) = server.login("alice").await;
    let (page, _) = alice_native
        .client
        .history("bob", None, None)
        .await
        .unwrap();
    assert!(page.is_empty(), "nothing stored: {page:?}");
}

/// Replying marks the conversation read up to the reply, for direct messages and rooms,
/// natively and over IRC, and the sender's other devices are told (native and IRC).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_marks_the_conversation_read_on_every_device() {
    let server = TestServer::start_irc(test_limits()).await;
    server.add_users(&["alice", "bob"]).await;
    let (bob, _) = server.login("bob").await;
    let (alice, _) = server.login("alice").await;
    let (mut alice_phone, _) = server.login("alice").await;
    drain_backlog(&mut alice_phone).await;
    let mut alice_irc = Irc::login(&server, "alice@irc").await;
    alice_irc.sync().await;

    bob.client.send("alice", "lunch?", "b1").await.unwrap();
    let unread = alice.client.unread().await.unwrap();
    assert_eq!(unread[0].conversation, "bob");
    assert_eq!(unread[0].unread, 1, "{unread:?}");

    let reply = alice.client.send("bob", "yes!", "a1").await.unwrap();
    let unread = alice.client.unread().await.unwrap();
    assert_eq!(
        (unread[0].conversation.as_str(), unread[0].unread),
        ("bob", 0),
        "replying leaves nothing unread: {unread:?}"
    );
    // The phone gets bob's message, alice's reply, then the marker the reply moved.
    let mut marker = None;
    while marker.is_none() {
        match next_event(&mut alice_phone.events).await {
            Event::ReadMarker { conversation, upto } => marker = Some((conversation, upto)),
            Event::Message(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(marker, Some(("bob".to_string(), reply.id)));
    // And the IRC device a MARKREAD.
    let markread = alice_irc.expect("MARKREAD").await;
    assert_eq!(markread.params[0], "bob", "{markread:?}");
    assert!(markread.params[1].starts_with("timestamp="), "{markread:?}");

    // In a room, and sending over IRC counts the same.
    alice.client.room_create("ops", false).await.unwrap();
    bob.client.room_join("ops").await.unwrap();
    bob.client.send("#ops", "deploy?", "b2").await.unwrap();
    let ops = |list: Vec<chat_svc::protocol::UnreadInfo>| {
        list.into_iter()
            .find(|u| u.conversation == "#ops")
            .map(|u| u.unread)
    };
    assert_eq!(ops(alice.client.unread().await.unwrap()), Some(1));
    alice_irc.send("PRIVMSG #ops :done").await;
    alice_irc.sync().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ops(alice.client.unread().await.unwrap()) != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a reply over IRC marks the room read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The error chain of a refused connection names the OS error once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_reported_once_with_a_hint() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server = TestServer::start().await;
    let err = chat_svc::client::Connection::connect(&closed.into(), server.pin)
        .await
        .err()
        .expect("nothing listens there");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    let shown = format!("{:#}", anyhow::Error::new(err));
    assert_eq!(shown.matches("os error").count(), 1, "{shown}");
    assert!(
        shown.ends_with(&format!("; is chatd running at {closed}?")),
        "{shown}"
    );
}
