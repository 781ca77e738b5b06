//! `client::inbox` against a real server: record before acknowledging, and a reconnect that
//! resumes from the cursor without passing anything on twice.

use std::time::Duration;

use chat_svc::client::inbox::{CommitError, Inbox, InboxEvent};
use chat_svc::client::state::{ChatHome, SavedLogin, SavedSession};
use chat_svc::protocol::Secret;

use crate::common::{self, TestServer, PASSWORD};

/// Logs `user` in as a new device and saves the session in `home`, as `chat login` does.
async fn saved_login(server: &TestServer, home: &ChatHome, user: &str) -> SavedLogin {
    let conn = server.connect().await;
    let info = conn
        .client
        .login(user, &Secret::new(PASSWORD), "inbox test")
        .await
        .unwrap();
    let session = SavedSession {
        server: server.server_addr().to_string(),
        user: info.user,
        device_id: info.device_id,
        token: info.token,
        last_seen: 0,
    };
    home.save_session(&session).unwrap();
    home.save_pin(&session.server, server.pin).unwrap();
    home.saved_login().unwrap()
}

/// The inbox's next event, within 10 s.
async fn next(inbox: &mut Inbox) -> InboxEvent {
    tokio::time::timeout(Duration::from_secs(10), inbox.next())
        .await
        .expect("timed out waiting for the inbox")
}

/// Runs the inbox until it has passed on `last` and is idle again, showing each message
/// as it comes; returns the ids passed on. Panics on anything but connecting and delivery.
async fn until_shown(inbox: &mut Inbox, last: i64) -> Vec<i64> {
    let mut got = Vec::new();
    loop {
        match next(inbox).await {
            InboxEvent::Message(m) => {
                inbox.show(m.id);
                got.push(m.id);
            }
            InboxEvent::Idle if got.contains(&last) => return got,
            InboxEvent::Connecting { .. }
            | InboxEvent::Connected { .. }
            | InboxEvent::CaughtUp
            | InboxEvent::ReadMarker { .. }
            | InboxEvent::Idle => {}
            InboxEvent::CommitFailed(e) => panic!("commit failed: {e}"),
            InboxEvent::Disconnected { error, .. } => panic!("disconnected: {error}"),
            InboxEvent::Ended(error) => panic!("ended: {error}"),
        }
    }
}

/// The device's cursor as the server has it, from a second connection of the same device.
async fn cursor(server: &TestServer, token: &Secret) -> i64 {
    let conn = server.resume(token).await.unwrap();
    conn.client.subscribe().await.unwrap()
}

fn last_seen(home: &ChatHome) -> i64 {
    home.load_session().unwrap().unwrap().last_seen
}

#[tokio::test]
async fn inbox_never_acknowledges_what_it_could_not_record() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let dir = tempfile::tempdir().unwrap();
    let home = ChatHome::at(dir.path());
    let login = saved_login(&server, &home, "bob").await;
    let token = login.session.token.clone();
    let (alice, _) = server.login("alice").await;
    let mut inbox = Inbox::new(home.clone(), login.clone());

    let first = alice.client.send("bob", "one", "k1").await.unwrap().id;
    assert_eq!(until_shown(&mut inbox, first).await, [first]);
    assert_eq!(last_seen(&home), first, "recorded");
    assert_eq!(cursor(&server, &token).await, first, "then acknowledged");

    // session.json cannot be written (it is a directory now): the next record fails, and
    // so nothing is acknowledged.
    let path = dir.path().join("session.json");
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let second = alice.client.send("bob", "two", "k2").await.unwrap().id;
    let failed = loop {
        match next(&mut inbox).await {
            InboxEvent::Message(m) => {
                assert_eq!(m.id, second);
                inbox.show(m.id);
            }
            InboxEvent::CommitFailed(e) => break e,
            InboxEvent::Idle => panic!("idle although the record cannot succeed"),
            _ => {}
        }
    };
    assert!(matches!(failed, CommitError::Record(_)), "{failed}");
    assert_eq!(
        cursor(&server, &token).await,
        first,
        "no acknowledgement without its record"
    );

    // The file is back: what is shown next is recorded, then acknowledged, both at once.
    std::fs::remove_dir(&path).unwrap();
    home.save_session(&login.session).unwrap();
    let third = alice.client.send("bob", "three", "k3").await.unwrap().id;
    assert_eq!(until_shown(&mut inbox, third).await, [third]);
    assert_eq!(last_seen(&home), third);
    assert_eq!(cursor(&server, &token).await, third);
}

#[tokio::test]
async fn inbox_resumes_from_the_cursor_after_a_restart_and_passes_nothing_on_twice() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let dir = tempfile::tempdir().unwrap();
    let home = ChatHome::at(dir.path());
    let login = saved_login(&server, &home, "bob").await;
    let token = login.session.token.clone();
    let mut inbox = Inbox::new(home.clone(), login);
    let one = {
        let (alice, _) = server.login("alice").await;
        alice.client.send("bob", "one", "k1").await.unwrap().id
    };
    assert_eq!(until_shown(&mut inbox, one).await, [one]);

    // "two" is passed on but not shown, so neither recorded nor acknowledged.
    let two = {
        let (alice, _) = server.login("alice").await;
        alice.client.send("bob", "two", "k2").await.unwrap().id
    };
    loop {
        match next(&mut inbox).await {
            InboxEvent::Message(m) => {
                assert_eq!(m.id, two);
                break;
            }
            InboxEvent::Idle | InboxEvent::CaughtUp => {}
            _ => panic!("unexpected event before the restart"),
        }
    }
    assert_eq!(cursor(&server, &token).await, one);

    let server = server.restart().await;
    let mut saw_disconnect = false;
    loop {
        match next(&mut inbox).await {
            InboxEvent::Disconnected { .. } => saw_disconnect = true,
            InboxEvent::Connected { .. } => break,
            InboxEvent::Connecting { .. } => {}
            InboxEvent::Message(m) => panic!("message {} before reconnecting", m.id),
            InboxEvent::Ended(e) => panic!("ended: {e}"),
            _ => {}
        }
    }
    assert!(saw_disconnect);

    // The new connection resumes after "one": "two" comes again and is dropped, "three" is
    // new. The dropped one counts as shown, so the cursor ends at "three".
    let three = {
        let (alice, _) = server.login("alice").await;
        alice.client.send("bob", "three", "k3").await.unwrap().id
    };
    assert_eq!(until_shown(&mut inbox, three).await, [three]);
    assert_eq!(cursor(&server, &token).await, three);
    assert_eq!(last_seen(&home), three);
    let mut again = server.resume(&token).await.unwrap();
    assert!(common::drain_backlog(&mut again).await.is_empty());
}
