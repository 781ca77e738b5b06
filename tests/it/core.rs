//! The end-to-end core: accounts, pinned TLS, durable delivery, devices, history.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_svc::client::{connect_tls, ClientError, Connection, Event};
use chat_svc::protocol::{ErrorCode, Secret, Username, DEFAULT_MAX_BODY_BYTES};
use chat_svc::tls::{self, IdentitySource};
use tokio::io::AsyncReadExt;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_path_multiline_ack_and_history() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    let (mut bob, _) = server.login("Bob").await; // names are case-insensitive

    let body = "hello bob\n  indented second line\n\nünïcödé ✓\n";
    let sent = alice.client.send("bob", body, "k-1").await.unwrap();
    assert!(!sent.duplicate);

    let got = drain_backlog(&mut bob).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, sent.id);
    assert_eq!(got[0].body, body, "multi-line text is kept exactly");
    assert_eq!((got[0].from.as_str(), got[0].to.as_str()), ("alice", "bob"));
    assert_eq!(got[0].sent_at, sent.sent_at);
    assert_eq!(bob.client.ack(sent.id).await.unwrap(), sent.id);

    let (page, more) = bob.client.history("alice", None, None).await.unwrap();
    assert_eq!(page, got);
    assert!(!more);
    let (page, _) = alice.client.history("bob", None, None).await.unwrap();
    assert_eq!(page, got);

    // A device logged in after bob acknowledged starts after that point.
    let (mut bob2, _) = server.login("bob").await;
    assert!(drain_backlog(&mut bob2).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_messages_survive_a_restart_and_arrive_in_order() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            alice
                .client
                .send("bob", &format!("m{i}"), &format!("k{i}"))
                .await
                .unwrap()
                .id,
        );
    }
    drop(alice);
    let server = server.restart().await;
    let (mut bob, _) = server.login("bob").await;
    let got = drain_backlog(&mut bob).await;
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["m0", "m1", "m2", "m3", "m4"]
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly increase");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_gets_every_message_and_the_senders_other_devices_too() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice1, _) = server.login("alice").await;
    let (_, alice2_token) = server.login("alice").await;
    let (_, bob1_token) = server.login("bob").await;
    let (_, bob2_token) = server.login("bob").await;
    let mut sent = Vec::new();
    for i in 0..4 {
        sent.push(
            alice1
                .client
                .send("bob", &format!("to bob {i}"), &format!("a{i}"))
                .await
                .unwrap()
                .id,
        );
    }

    let mut bob1 = server.resume(&bob1_token).await.unwrap();
    let got1: Vec<i64> = drain_backlog(&mut bob1)
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(got1, sent);
    bob1.client.ack(*sent.last().unwrap()).await.unwrap();
    // bob's second device has its own cursor: bob1's ack does not hide anything from it.
    let mut bob2 = server.resume(&bob2_token).await.unwrap();
    let got2: Vec<i64> = drain_backlog(&mut bob2)
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(got2, sent);
    // alice's other device sees what alice sent; the sending device does not get it back.
    let mut alice2 = server.resume(&alice2_token).await.unwrap();
    let own: Vec<i64> = drain_backlog(&mut alice2)
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(own, sent);
    let mut alice1 = alice1;
    assert!(drain_backlog(&mut alice1).await.is_empty());

    // Live: a new message reaches both of bob's devices and alice's other device.
    let live = alice1
        .client
        .send("bob", "live one", "a-live")
        .await
        .unwrap()
        .id;
    for conn in [&mut bob1, &mut bob2, &mut alice2] {
        let m = take_messages(&mut conn.events, 1).await;
        assert_eq!(m[0].id, live);
    }
    assert_quiet(&mut alice1.events, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_delivery_in_both_directions_at_once() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (mut alice, _) = server.login("alice").await;
    let (mut bob, _) = server.login("bob").await;
    drain_backlog(&mut alice).await;
    drain_backlog(&mut bob).await;
    let (a, b) = (alice.client.clone(), bob.client.clone());
    let n = 50;
    let from_alice = tokio::spawn(async move {
        for i in 0..n {
            a.send("bob", &format!("a{i}"), &format!("a{i}"))
                .await
                .unwrap();
        }
    });
    let from_bob = tokio::spawn(async move {
        for i in 0..n {
            b.send("alice", &format!("b{i}"), &format!("b{i}"))
                .await
                .unwrap();
        }
    });
    let (to_bob, to_alice) = tokio::join!(
        take_messages(&mut bob.events, n),
        take_messages(&mut alice.events, n)
    );
    from_alice.await.unwrap();
    from_bob.await.unwrap();
    let bodies =
        |ms: &[chat_svc::protocol::Message]| ms.iter().map(|m| m.body.clone()).collect::<Vec<_>>();
    assert_eq!(
        bodies(&to_bob),
        (0..n).map(|i| format!("a{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        bodies(&to_alice),
        (0..n).map(|i| format!("b{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_while_draining_a_backlog() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    let (_, bob_token) = server.login("bob").await;
    let mut sent = BTreeSet::new();
    // A backlog of several pages, stored while bob is offline.
    let backlog = 2500;
    let mut tasks = Vec::new();
    for chunk in 0..5 {
        let c = alice.client.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..backlog / 5 {
                let k = format!("pre-{chunk}-{i}");
                ids.push(c.send("bob", &k, &k).await.unwrap().id);
            }
            ids
        }));
    }
    for t in tasks {
        sent.extend(t.await.unwrap());
    }
    // Keep sending while bob connects and drains.
    let c = alice.client.clone();
    let during = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..600 {
            let k = format!("during-{i}");
            ids.push(c.send("bob", &k, &k).await.unwrap().id);
        }
        ids
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut bob = server.resume(&bob_token).await.unwrap();
    bob.client.subscribe().await.unwrap();
    let during_ids = during.await.unwrap();
    sent.extend(during_ids);
    let mut got = Vec::new();
    while got.len() < sent.len() {
        match next_event(&mut bob.events).await {
            Event::Message(m) => got.push(m.id),
            Event::CaughtUp { .. } | Event::ReadMarker { .. } => {}
            Event::Closed(r) => panic!("closed: {r:?}"),
        }
    }
    assert_quiet(&mut bob.events, Duration::from_millis(300)).await;
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate"
    );
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), sent, "no gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_with_the_same_key_stores_once() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, token) = server.login("alice").await;
    let first = alice.client.send("bob", "once", "same-key").await.unwrap();
    let again = alice.client.send("bob", "once", "same-key").await.unwrap();
    assert_eq!((again.id, again.duplicate), (first.id, true));
    assert_eq!(again.sent_at, first.sent_at);
    // A retry on a new connection (as after a lost `sent`) too.
    let other = server.resume(&token).await.unwrap();
    let third = other.client.send("bob", "once", "same-key").await.unwrap();
    assert_eq!((third.id, third.duplicate), (first.id, true));
    // Concurrent duplicates inside one group commit.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = alice.client.clone();
        tasks.push(tokio::spawn(async move {
            c.send("bob", "burst", "burst-key").await.unwrap().id
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1);
    // Concurrent retries of a key stored by an earlier commit: the batch's first row is
    // refused by the unique index, the others repeat it; all get the stored message.
    let stored = *ids.first().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = alice.client.clone();
        tasks.push(tokio::spawn(async move {
            let s = c.send("bob", "burst", "burst-key").await.unwrap();
            (s.id, s.duplicate)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), (stored, true));
    }
    // Another sender may use the same key independently.
    let (bob, _) = server.login("bob").await;
    let bobs = bob.client.send("alice", "mine", "same-key").await.unwrap();
    assert!(!bobs.duplicate);
    let store = server.admin().await;
    assert_eq!(store.message_count().await.unwrap(), 3);
    let (mut bob2, _) = server.login("bob").await;
    let got = drain_backlog(&mut bob2).await;
    assert_eq!(got.iter().filter(|m| m.to == "bob").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_are_indistinguishable() {
    let server = TestServer::start().await;
    server.add_users(&["alice"]).await;
    let conn = server.connect().await;
    let wrong = conn
        .client
        .login("alice", &Secret::new("not-the-password"), "d")
        .await
        .unwrap_err();
    let unknown = conn
        .client
        .login("mallory", &Secret::new("not-the-password"), "d")
        .await
        .unwrap_err();
    let bad_syntax = conn
        .client
        .login("not a name!", &Secret::new("not-the-password"), "d")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Some(ErrorCode::InvalidCredentials));
    assert_eq!(wrong.to_string(), unknown.to_string());
    assert_eq!(wrong.to_string(), bad_syntax.to_string());
    // Both paths run argon2: neither answers suspiciously fast.
    let conn = server.connect().await;
    let t = Instant::now();
    let _ = conn
        .client
        .login("nobody-at-all", &Secret::new("x-x-x-x-x"), "d")
        .await;
    assert!(
        t.elapsed() >= Duration::from_millis(2),
        "unknown user skipped the hash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_is_refused_before_any_credential_is_sent() {
    let server = TestServer::start().await;
    // An impostor on another port with a different key.
    let dir = tempfile::tempdir().unwrap();
    let identity = IdentitySource {
        cert_dir: dir.path().to_path_buf(),
        cert_file: None,
        key_file: None,
        extra_names: vec![],
    }
    .load_or_create()
    .unwrap();
    assert_ne!(identity.fingerprint, server.pin);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&identity).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let impostor = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        counter.fetch_add(n, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    // The client has the real server's pin for this address.
    let err = Connection::connect(&impostor.into(), server.pin)
        .await
        .err()
        .unwrap();
    match &err {
        ClientError::PinMismatch {
            expected,
            presented,
            ..
        } => {
            assert_eq!(*expected, server.pin);
            assert_eq!(*presented, identity.fingerprint);
            let text = err.to_string();
            assert!(
                text.contains(&server.pin.to_string())
                    && text.contains(&identity.fingerprint.to_string())
            );
            assert!(text.contains("chat trust"), "says how to re-trust: {text}");
        }
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        received.load(Ordering::SeqCst),
        0,
        "no application byte reached the impostor"
    );
    // First contact without a pin never completes a handshake either.
    match connect_tls(&server.server_addr(), None).await {
        Err(ClientError::UnknownServer { presented, .. }) => assert_eq!(presented, server.pin),
        other => panic!("expected UnknownServer, got {:?}", other.err()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_and_revoked_users_are_cut_off_within_two_seconds() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (mut bob, bob_token) = server.login("bob").await;
    drain_backlog(&mut bob).await;
    let admin = server.admin().await;
    let bob_name = Username::parse("bob").unwrap();

    let t = Instant::now();
    admin.set_disabled(&bob_name, true).await.unwrap();
    match next_event(&mut bob.events).await {
        Event::Closed(reason) => {
            assert_eq!(reason.map(|r| r.0), Some(ErrorCode::SessionRevoked))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    let err = server.resume(&bob_token).await.err().unwrap();
    assert_eq!(err.code(), Some(ErrorCode::AccountDisabled));
    let conn = server.connect().await;
    let err = conn
        .client
        .login("bob", &Secret::new(PASSWORD), "d")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AccountDisabled));
    // Re-enabled: the same device works again.
    admin.set_disabled(&bob_name, false).await.unwrap();
    server.resume(&bob_token).await.unwrap();

    // Revoke: every session of alice ends, live connections close, tokens stop working.
    let (mut alice, alice_token) = server.login("alice").await;
    drain_backlog(&mut alice).await;
    let t = Instant::now();
    assert_eq!(
        admin
            .revoke_user(&Username::parse("alice").unwrap())
            .await
            .unwrap(),
        1
    );
    match next_event(&mut alice.events).await {
        Event::Closed(reason) => assert_eq!(reason.map(|r| r.0), Some(ErrorCode::SessionRevoked)),
        other => panic!("unexpected {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    let err = server.resume(&alice_token).await.err().unwrap();
    assert_eq!(err.code(), Some(ErrorCode::InvalidToken));

    // Delete: gone for good; sending to a deleted user is an error.
    admin.delete_user(&bob_name).await.unwrap();
    let err = server.resume(&bob_token).await.err().unwrap();
    assert_eq!(err.code(), Some(ErrorCode::InvalidToken));
    let (alice, _) = server.login("alice").await;
    let err = alice.client.send("bob", "hi", "k").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownRecipient));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_only_that_device() {
    let server = TestServer::start().await;
    server.add_users(&["alice"]).await;
    let (a1, t1) = server.login("alice").await;
    let (_, t2) = server.login("alice").await;
    a1.client.logout().await.unwrap();
    assert_eq!(
        server.resume(&t1).await.err().unwrap().code(),
        Some(ErrorCode::InvalidToken)
    );
    server.resume(&t2).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_loses_no_acknowledged_message() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let c = alice.client.clone();
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let k = format!("s{t}-{i}");
                match c.send("bob", &k, &k).await {
                    Ok(s) => acked.lock().unwrap().push(s.id),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = server.restart().await;
    for t in tasks {
        t.await.unwrap();
    }
    let acked: BTreeSet<i64> = acked.lock().unwrap().iter().copied().collect();
    assert!(acked.len() > 10, "some sends completed before shutdown");
    let (mut bob, _) = server.login("bob").await;
    let got: BTreeSet<i64> = drain_backlog(&mut bob).await.iter().map(|m| m.id).collect();
    assert!(acked.is_subset(&got), "every acknowledged message survived");
    let store = server.admin().await;
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_back_without_skipping_or_repeating_and_stays_private() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob", "carol"]).await;
    let (alice, _) = server.login("alice").await;
    let (bob, _) = server.login("bob").await;
    let mut ids = Vec::new();
    for i in 0..60 {
        let (c, to) = if i % 3 == 0 {
            (&bob.client, "alice")
        } else {
            (&alice.client, "bob")
        };
        ids.push(
            c.send(to, &format!("m{i}"), &format!("h{i}"))
                .await
                .unwrap()
                .id,
        );
    }
    alice
        .client
        .send("carol", "not for bob", "c1")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let (page, more) = bob.client.history("alice", before, Some(7)).await.unwrap();
        assert!(page.len() <= 7);
        assert!(page.windows(2).all(|w| w[0].id < w[1].id));
        seen.splice(0..0, page.iter().map(|m| m.id));
        if !more {
            break;
        }
        before = page.first().map(|m| m.id);
    }
    assert_eq!(seen, ids);
    let (carol, _) = server.login("carol").await;
    let (page, _) = carol.client.history("bob", None, None).await.unwrap();
    assert!(
        page.is_empty(),
        "carol cannot see alice and bob's conversation"
    );
    let (page, _) = carol.client.history("alice", None, None).await.unwrap();
    assert_eq!(page.len(), 1);
    let err = carol
        .client
        .history("nobody", None, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownRecipient));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_limit_is_exact() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    assert_eq!(alice.client.welcome().max_body, DEFAULT_MAX_BODY_BYTES);
    let at_limit = "é".repeat(DEFAULT_MAX_BODY_BYTES / 2);
    alice.client.send("bob", &at_limit, "max").await.unwrap();
    let over = format!("{at_limit}x");
    let err = alice.client.send("bob", &over, "over").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge));
    // A control-character body escapes to far more JSON than its size; it still fits a frame.
    let controls = "\u{1}".repeat(DEFAULT_MAX_BODY_BYTES);
    alice.client.send("bob", &controls, "ctl").await.unwrap();
    alice.client.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_always_fit_in_one_frame() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    // Each of these bodies escapes to ~96 KiB of JSON: a page of 50 would be ~5 MiB.
    let heavy = "\u{1}".repeat(DEFAULT_MAX_BODY_BYTES);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            alice
                .client
                .send("bob", &heavy, &format!("heavy{i}"))
                .await
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let (page, more) = alice.client.history("bob", before, Some(50)).await.unwrap();
        assert!(!page.is_empty());
        seen.splice(0..0, page.iter().map(|m| m.id));
        if !more {
            break;
        }
        before = page.first().map(|m| m.id);
    }
    assert_eq!(seen, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_to_self_reach_other_devices_but_not_the_sender_device() {
    let server = TestServer::start().await;
    server.add_users(&["alice"]).await;
    let (mut a1, t1) = server.login("alice").await;
    let (mut a2, _) = server.login("alice").await;
    drain_backlog(&mut a1).await;
    drain_backlog(&mut a2).await;
    let id = a1
        .client
        .send("alice", "note to self", "n1")
        .await
        .unwrap()
        .id;
    assert_eq!(take_messages(&mut a2.events, 1).await[0].id, id);
    assert_quiet(&mut a1.events, Duration::from_millis(300)).await;
    // The sending device does not get it from the backlog either.
    drop(a1);
    let mut again = server.resume(&t1).await.unwrap();
    assert!(drain_backlog(&mut again).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_needs_a_subscription_and_cannot_run_ahead() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    let id = alice.client.send("bob", "one", "k").await.unwrap().id;
    let (mut bob, _) = server.login("bob").await;
    let err = bob.client.ack(id).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    assert_eq!(drain_backlog(&mut bob).await.len(), 1);
    let err = bob.client.ack(id + 1).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    assert_eq!(bob.client.ack(id).await.unwrap(), id);
    assert_eq!(
        bob.client.ack(id).await.unwrap(),
        id,
        "repeating an ack is harmless"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_in_flight_is_answered_before_a_bad_frame_closes_the_connection() {
    use chat_svc::protocol::codec::{encode_json, parse_server_frame, FrameCodec};
    use chat_svc::protocol::{Request, ServerFrame, PROTOCOL_VERSION};
    use futures::{SinkExt, StreamExt};

    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let tls = connect_tls(&server.server_addr(), Some(server.pin))
        .await
        .unwrap();
    let mut framed = tokio_util::codec::Framed::new(tls, FrameCodec::new());
    let requests = [
        Request::Hello {
            req: 1,
            version: PROTOCOL_VERSION,
            client: None,
        },
        Request::Login {
            req: 2,
            user: "alice".into(),
            password: Secret::new(PASSWORD),
            device: None,
            proof: None,
        },
    ];
    for r in &requests {
        framed.send(encode_json(r)).await.unwrap();
        framed.next().await.unwrap().unwrap();
    }
    let send = Request::Send {
        req: 3,
        to: "bob".into(),
        body: "in flight".into(),
        key: "f1".into(),
        action: false,
    };
    framed.feed(encode_json(&send)).await.unwrap();
    framed
        .feed(bytes::Bytes::from_static(br#"{"type":"teleport","req":4}"#))
        .await
        .unwrap();
    framed.flush().await.unwrap();
    let mut frames = Vec::new();
    while let Some(Ok(payload)) = framed.next().await {
        frames.push(parse_server_frame(&payload).unwrap());
    }
    assert!(
        matches!(frames[0], ServerFrame::Sent { req: 3, .. }),
        "{frames:?}"
    );
    assert!(
        matches!(
            frames[1],
            ServerFrame::Error {
                req: Some(4),
                code: ErrorCode::UnknownType,
                ..
            }
        ),
        "{frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sending_flood_is_rate_limited_without_disconnecting() {
    let server = TestServer::start_with(chat_svc::server::Limits {
        send_rate_per_sec: 5,
        send_burst: 10,
        ..test_limits()
    })
    .await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    let mut limited = None;
    for i in 0..30 {
        match alice.client.send("bob", "flood", &format!("f{i}")).await {
            Ok(_) => {}
            Err(e) => {
                limited = Some((i, e));
                break;
            }
        }
    }
    let (i, err) = limited.expect("the flood was limited");
    assert!(i >= 10, "the burst of 10 passes (limited at {i})");
    assert_eq!(err.code(), Some(ErrorCode::RateLimited));
    match err {
        ClientError::Server {
            retry_after_ms: Some(ms),
            ..
        } => assert!(ms > 0 && ms <= 200),
        other => panic!("no retry delay: {other:?}"),
    }
    // Still connected; after the advertised wait the same key goes through.
    alice.client.ping().await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    alice
        .client
        .send("bob", "flood", &format!("f{i}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_keeps_live_connections_and_renewal_keeps_the_pin() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (mut alice, _) = server.login("alice").await;
    drain_backlog(&mut alice).await;
    let cert = server.dir.path().join("certs").join(tls::CERT_FILE);
    let old = std::fs::read(&cert).unwrap();
    // What IRC clients pin is the certificate's own hash: the reloader tells the new one.
    let certs = server.dir.path().join("certs");
    let served = || server.reloader.certificate_sha256().to_string();
    let old_sha = crate::irc::certificate_sha256_in(&certs);
    assert_eq!(served(), old_sha);
    // Renewal: a new certificate for the same key.
    std::fs::remove_file(&cert).unwrap();
    assert_eq!(server.reloader.reload().unwrap(), server.pin);
    assert_ne!(std::fs::read(&cert).unwrap(), old);
    assert_eq!(served(), crate::irc::certificate_sha256_in(&certs));
    assert_ne!(served(), old_sha);
    let renewed_sha = served();
    let (bob, _) = server.login("bob").await; // a new handshake with the new certificate
    let id = bob
        .client
        .send("alice", "after the reload", "r1")
        .await
        .unwrap()
        .id;
    assert_eq!(
        take_messages(&mut alice.events, 1).await[0].id,
        id,
        "old connection lives on"
    );
    // A broken file keeps the old identity.
    std::fs::write(&cert, b"not a certificate").unwrap();
    assert!(server.reloader.reload().is_err());
    assert_eq!(
        served(),
        renewed_sha,
        "a failed reload keeps serving the renewed one"
    );
    server.connect().await.client.ping().await.unwrap();
}
