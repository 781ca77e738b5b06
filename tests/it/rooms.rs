//! Rooms, multi-device sync, read markers, history paging and search.

use std::collections::BTreeSet;
use std::time::Duration;

use chat_svc::client::{Connection, Event};
use chat_svc::protocol::{ErrorCode, Message, MessageKind, RoomName};

use crate::common::*;

fn ids(ms: &[Message]) -> Vec<i64> {
    ms.iter().map(|m| m.id).collect()
}

/// Collects live messages until `want` has arrived (in order, without duplicates).
async fn collect_until(conn: &mut Connection, want: &BTreeSet<i64>, got: &mut Vec<Message>) {
    while !want.iter().all(|id| got.iter().any(|m| m.id == *id)) {
        match next_event(&mut conn.events).await {
            Event::Message(m) => got.push(m),
            Event::CaughtUp { .. } | Event::ReadMarker { .. } => {}
            Event::Closed(r) => panic!("closed: {r:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_of_every_member_ends_with_the_same_ordered_room_history() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob", "carol"]).await;
    let (alice1, _) = server.login("alice").await;
    alice1.client.room_create("#ops", false).await.unwrap();
    let (bob1, _) = server.login("bob").await;
    let (carol1, _) = server.login("carol").await;
    bob1.client.room_join("#ops").await.unwrap();
    alice1.client.room_invite("#ops", "carol").await.unwrap();

    // Two devices each; carol's second device stays offline during the exchange.
    let mut devices = Vec::new();
    let mut carol2_token = None;
    for who in ["alice", "bob", "carol"] {
        for n in 0..2 {
            let (mut conn, token) = server.login(who).await;
            if who == "carol" && n == 1 {
                carol2_token = Some(token);
                continue;
            }
            drain_backlog(&mut conn).await;
            devices.push((who, conn));
        }
    }
    let mut sent = BTreeSet::new();
    for i in 0..10 {
        for (who, c) in [("alice", &alice1), ("bob", &bob1), ("carol", &carol1)] {
            let body = format!("{who} says {i}\nsecond line");
            let id = c
                .client
                .send("#ops", &body, &format!("{who}-{i}"))
                .await
                .unwrap()
                .id;
            sent.insert(id);
        }
    }
    let mut histories = Vec::new();
    for (who, conn) in devices.iter_mut() {
        let mut got = Vec::new();
        collect_until(conn, &sent, &mut got).await;
        assert_quiet(&mut conn.events, Duration::from_millis(100)).await;
        histories.push((who.to_string(), got));
    }
    // The offline device catches up from its cursor.
    let mut carol2 = server.resume(carol2_token.as_ref().unwrap()).await.unwrap();
    let backlog = drain_backlog(&mut carol2).await;
    let room_part: Vec<Message> = backlog
        .into_iter()
        .filter(|m| sent.contains(&m.id))
        .collect();
    histories.push(("carol (offline)".into(), room_part));

    let reference: Vec<i64> = sent.iter().copied().collect();
    for (who, got) in &histories {
        assert_eq!(
            ids(got),
            reference,
            "{who}'s device has every room message once, in order"
        );
        assert!(got
            .iter()
            .all(|m| m.to == "#ops" && m.body.ends_with("\nsecond line")));
    }
    // The senders' own first devices also saw the others' messages (not their own sends).
    let (alice_hist, _) = alice1
        .client
        .history("#ops", None, Some(500))
        .await
        .unwrap();
    assert!(ids(&alice_hist).ends_with(&reference));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_get_nothing_from_before_they_joined_or_after_they_left() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    let (_, bob_token) = server.login("bob").await;
    alice.client.room_create("#town", false).await.unwrap();
    let before = alice
        .client
        .send("#town", "before bob", "b1")
        .await
        .unwrap()
        .id;
    let bob = server.resume(&bob_token).await.unwrap();
    let joined = bob.client.room_join("#town").await.unwrap();
    let during = alice
        .client
        .send("#town", "while bob is in", "d1")
        .await
        .unwrap()
        .id;
    let left = bob.client.room_leave("#town").await.unwrap();
    let after = alice
        .client
        .send("#town", "after bob left", "a1")
        .await
        .unwrap()
        .id;
    drop(bob);

    // Bob's device was offline for all of it: its backlog holds exactly his span.
    let mut bob = server.resume(&bob_token).await.unwrap();
    let got = drain_backlog(&mut bob).await;
    assert_eq!(ids(&got), vec![joined, during, left]);
    assert_eq!(got[0].kind, MessageKind::Join);
    assert_eq!(got[2].kind, MessageKind::Leave);
    assert!(!ids(&got).contains(&before) && !ids(&got).contains(&after));
    // And the room's history is closed to him now.
    let err = bob.client.history("#town", None, None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember));

    // Rejoining opens a new span: the message sent while he was away stays out.
    bob.client.room_join("#town").await.unwrap();
    let (page, _) = bob.client.history("#town", None, Some(500)).await.unwrap();
    let seen = ids(&page);
    assert!(seen.contains(&during) && !seen.contains(&after) && !seen.contains(&before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_member_stops_receiving_at_once_and_the_owner_cannot_be_kicked() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob", "carol"]).await;
    let (alice, _) = server.login("alice").await;
    let (mut bob, _) = server.login("bob").await;
    alice.client.room_create("#team", false).await.unwrap();
    bob.client.room_join("#team").await.unwrap();
    drain_backlog(&mut bob).await;
    let hello = alice
        .client
        .send("#team", "hello bob", "h")
        .await
        .unwrap()
        .id;
    assert_eq!(take_messages(&mut bob.events, 1).await[0].id, hello);
    let kick = alice.client.room_kick("#team", "bob").await.unwrap();
    let got = take_messages(&mut bob.events, 1).await;
    assert_eq!((got[0].id, got[0].kind), (kick, MessageKind::Kick));
    assert_eq!(got[0].member.as_deref(), Some("bob"));
    alice
        .client
        .send("#team", "bob is gone", "g")
        .await
        .unwrap();
    assert_quiet(&mut bob.events, Duration::from_millis(300)).await;
    let err = bob
        .client
        .send("#team", "let me in", "x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember));

    let err = bob.client.room_kick("#team", "alice").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    bob.client.room_join("#team").await.unwrap();
    let err = bob.client.room_kick("#team", "alice").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::Forbidden),
        "only the owner kicks"
    );
    let err = alice.client.room_kick("#team", "alice").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::Forbidden),
        "the owner cannot be kicked"
    );
    assert!(err.to_string().contains("owner"), "{err}");
    let err = alice.client.room_kick("#team", "carol").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember));
    let err = alice.client.room_leave("#team").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::Forbidden),
        "the owner cannot leave"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_is_denied_on_every_path_of_a_private_room() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob", "mallory"]).await;
    let (alice, _) = server.login("alice").await;
    alice.client.room_create("#secret", true).await.unwrap();
    alice.client.room_invite("#secret", "bob").await.unwrap();
    alice
        .client
        .send("#secret", "the launch code is swordfish", "s1")
        .await
        .unwrap();
    let (mut mallory, _) = server.login("mallory").await;
    let c = &mallory.client;
    let denied = |r: Result<_, chat_svc::client::ClientError>, what: &str, code: ErrorCode| {
        let err = r.err().unwrap_or_else(|| panic!("{what} was allowed"));
        assert_eq!(err.code(), Some(code), "{what}: {err}");
    };
    denied(
        c.room_join("#secret").await.map(|_| ()),
        "join",
        ErrorCode::Forbidden,
    );
    denied(
        c.send("#secret", "hi", "m1").await.map(|_| ()),
        "send",
        ErrorCode::NotMember,
    );
    denied(
        c.history("#secret", None, None).await.map(|_| ()),
        "history",
        ErrorCode::NotMember,
    );
    denied(
        c.search("swordfish", Some("#secret"), None)
            .await
            .map(|_| ()),
        "search in",
        ErrorCode::NotMember,
    );
    denied(
        c.room_members("#secret").await.map(|_| ()),
        "members",
        ErrorCode::NotMember,
    );
    denied(
        c.read("#secret", None).await.map(|_| ()),
        "read marker",
        ErrorCode::NotMember,
    );
    denied(
        c.room_invite("#secret", "mallory").await.map(|_| ()),
        "invite",
        ErrorCode::Forbidden,
    );
    denied(
        c.room_kick("#secret", "bob").await.map(|_| ()),
        "kick",
        ErrorCode::Forbidden,
    );
    // A search over everything finds nothing of the room, and the room is not listed.
    assert!(c.search("swordfish", None, None).await.unwrap().is_empty());
    assert!(c.room_list(true).await.unwrap().is_empty());
    let unread = c.unread().await.unwrap();
    assert!(unread.iter().all(|u| u.conversation != "#secret"));
    // Its delivery never included the room either.
    assert!(drain_backlog(&mut mallory).await.is_empty());
    // Bob, invited, may do all of it.
    let (bob, _) = server.login("bob").await;
    assert_eq!(
        bob.client
            .search("swordfish", None, None)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(bob.client.room_members("#secret").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_markers_move_forward_and_reach_the_other_live_device() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    alice.client.room_create("#news", false).await.unwrap();
    let (bob1, _) = server.login("bob").await;
    bob1.client.room_join("#news").await.unwrap();
    let (mut bob2, _) = server.login("bob").await;
    drain_backlog(&mut bob2).await;
    let mut last = 0;
    for i in 0..3 {
        last = alice
            .client
            .send("#news", &format!("n{i}"), &format!("n{i}"))
            .await
            .unwrap()
            .id;
    }
    alice.client.send("bob", "direct", "d").await.unwrap();
    let unread = bob1.client.unread().await.unwrap();
    let news = unread.iter().find(|u| u.conversation == "#news").unwrap();
    assert_eq!(news.unread, 3);
    assert_eq!(news.last.as_ref().unwrap().id, last);
    assert_eq!(
        unread
            .iter()
            .find(|u| u.conversation == "alice")
            .unwrap()
            .unread,
        1
    );

    assert_eq!(bob1.client.read("#news", None).await.unwrap(), last);
    // bob's other live device hears about it.
    loop {
        match next_event(&mut bob2.events).await {
            Event::ReadMarker { conversation, upto } => {
                assert_eq!((conversation.as_str(), upto), ("#news", last));
                break;
            }
            Event::Message(_) | Event::CaughtUp { .. } => {}
            Event::Closed(r) => panic!("closed: {r:?}"),
        }
    }
    // Markers never move back, and never past the newest message.
    assert_eq!(bob2.client.read("#news", Some(1)).await.unwrap(), last);
    assert_eq!(
        bob2.client.read("#news", Some(last + 1000)).await.unwrap(),
        last
    );
    let unread = bob2.client.unread().await.unwrap();
    assert_eq!(
        unread
            .iter()
            .find(|u| u.conversation == "#news")
            .unwrap()
            .unread,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_1000_messages_by_37_both_ways_returns_each_exactly_once() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    let (bob, _) = server.login("bob").await;
    alice.client.room_create("#log", false).await.unwrap();
    bob.client.room_join("#log").await.unwrap();
    // Many sends in flight at once land in shared group commits: equal timestamps.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let c = if t % 2 == 0 {
            alice.client.clone()
        } else {
            bob.client.clone()
        };
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                let k = format!("p{t}-{i}");
                c.send("#log", &k, &k).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut backward = Vec::new();
    let mut before = None;
    loop {
        let (page, more) = bob
            .client
            .history_page("#log", before, None, Some(37))
            .await
            .unwrap();
        assert!(page.len() <= 37);
        backward.splice(0..0, page.iter().map(|m| m.id));
        if !more {
            break;
        }
        before = page.first().map(|m| m.id);
    }
    let mut forward = Vec::new();
    let mut after = Some(0);
    loop {
        let (page, more) = bob
            .client
            .history_page("#log", None, after, Some(37))
            .await
            .unwrap();
        forward.extend(page.iter().map(|m| m.id));
        if !more {
            break;
        }
        after = page.last().map(|m| m.id);
    }
    assert_eq!(backward, forward);
    assert!(forward.windows(2).all(|w| w[0] < w[1]));
    // 1,000 texts and bob's join event (the creation was before his span).
    assert_eq!(forward.len(), 1001);
    let (all, _) = bob.client.history("#log", None, Some(500)).await.unwrap();
    let shared_timestamps = all
        .windows(2)
        .filter(|w| w[0].sent_at == w[1].sent_at)
        .count();
    assert!(shared_timestamps > 0, "some messages share a timestamp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_words_ranked_and_respects_permissions() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob", "carol"]).await;
    let (alice, _) = server.login("alice").await;
    let (bob, _) = server.login("bob").await;
    let (carol, _) = server.login("carol").await;
    alice.client.room_create("#ops", false).await.unwrap();
    bob.client.room_join("#ops").await.unwrap();
    alice
        .client
        .send("#ops", "deploy done for the api", "1")
        .await
        .unwrap();
    alice.client.send("#ops", "lunch?", "2").await.unwrap();
    alice
        .client
        .send("bob", "the deploy deploy DEPLOY went fine", "3")
        .await
        .unwrap();
    alice
        .client
        .send("carol", "private deploy notes for carol", "4")
        .await
        .unwrap();

    let hits = bob.client.search("deploy", None, None).await.unwrap();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.iter().all(|h| !h.message.body.contains("carol")));
    assert!(hits[0].snippet.contains("[deploy]") || hits[0].snippet.contains("[DEPLOY]"));
    let within = bob
        .client
        .search("deploy", Some("#ops"), None)
        .await
        .unwrap();
    assert_eq!(within.len(), 1);
    assert_eq!(within[0].message.to, "#ops");
    let both_words = bob.client.search("deploy api", None, None).await.unwrap();
    assert_eq!(both_words.len(), 1);
    // Query syntax is not interpreted: quotes and operators are plain text.
    assert!(bob
        .client
        .search("\"deploy OR NOT*", None, None)
        .await
        .is_ok());
    let err = bob.client.search("  !!  ", None, None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    // carol sees her own message and not the room she is not in.
    let hits = carol.client.search("deploy", None, None).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert!(hits[0].message.body.contains("carol"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_names_and_errors_are_clear_and_operators_can_delete_rooms() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    alice.client.room_create("Ops", false).await.unwrap();
    let err = alice.client.room_create("#OPS", false).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RoomExists));
    let err = alice
        .client
        .room_create("#bad name", false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidName));
    let err = alice.client.send("#nowhere", "x", "k").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownRoom));
    let err = alice.client.room_join("#ops").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "already a member");
    let list = alice.client.room_list(false).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].name.as_str(), list[0].owner.as_str()),
        ("#ops", "alice")
    );

    let (mut bob, _) = server.login("bob").await;
    bob.client.room_join("#ops").await.unwrap();
    drain_backlog(&mut bob).await;
    let admin = server.admin().await;
    assert_eq!(admin.room_summaries().await.unwrap().len(), 1);
    admin
        .delete_room(&RoomName::parse("#ops").unwrap())
        .await
        .unwrap();
    // Within the revocation poll, the room is gone for everyone and its name is free.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let err = alice
        .client
        .send("#ops", "anyone?", "k2")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownRoom));
    assert!(bob.client.room_list(true).await.unwrap().is_empty());
    alice.client.room_create("#ops", false).await.unwrap();
    let (page, _) = alice.client.history("#ops", None, None).await.unwrap();
    assert_eq!(page.len(), 1, "only the new room's creation event");
}

/// The next room event of `kind` a connection receives (other messages skipped).
async fn next_event_of(conn: &mut Connection, kind: MessageKind) -> Message {
    loop {
        match next_event(&mut conn.events).await {
            Event::Message(m) if m.kind == kind => return m,
            Event::Closed(r) => panic!("closed: {r:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_delete_their_rooms_and_live_members_are_told() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (mut alice, _) = server.login("alice").await;
    drain_backlog(&mut alice).await;
    alice.client.room_create("#typo-room", false).await.unwrap();
    let (mut bob, _) = server.login("bob").await;
    drain_backlog(&mut bob).await;
    bob.client.room_join("#typo-room").await.unwrap();
    bob.client.send("#typo-room", "hello", "b1").await.unwrap();

    // Only the owner may delete, and the server says so with a typed error.
    let err = bob.client.room_del("#typo-room").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    assert_eq!(alice.client.room_list(false).await.unwrap().len(), 1);
    let err = alice.client.room_del("#nowhere").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownRoom));

    let event_id = alice.client.room_del("Typo-Room").await.unwrap();
    // Every live member is told, the owner's own device too.
    for conn in [&mut bob, &mut alice] {
        let gone = next_event_of(conn, MessageKind::Delete).await;
        assert_eq!(
            (gone.id, gone.to.as_str(), gone.from.as_str()),
            (event_id, "#typo-room", "alice")
        );
    }
    // The room is gone for everyone at once, and its name is free.
    let err = bob
        .client
        .send("#typo-room", "still here?", "b2")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownRoom));
    let err = bob
        .client
        .history("#typo-room", None, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownRoom));
    assert!(bob.client.room_list(true).await.unwrap().is_empty());
    bob.client.room_create("#typo-room", false).await.unwrap();
    let (page, _) = bob.client.history("#typo-room", None, None).await.unwrap();
    assert_eq!(
        page.len(),
        1,
        "only the new room's creation event: {page:?}"
    );
    assert!(bob
        .client
        .search("hello", None, None)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_alone_leaving_deletes_the_room_and_with_members_cannot_leave() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    let (mut bob, _) = server.login("bob").await;
    drain_backlog(&mut bob).await;

    // Alone in it: leaving deletes the room; the name is free again at once.
    alice.client.room_create("#solo", false).await.unwrap();
    alice.client.room_leave("#solo").await.unwrap();
    assert!(alice.client.room_list(true).await.unwrap().is_empty());
    let err = bob.client.room_join("#solo").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownRoom));
    bob.client.room_create("#solo", false).await.unwrap();
    let list = bob.client.room_list(false).await.unwrap();
    assert_eq!(
        (list[0].name.as_str(), list[0].owner.as_str()),
        ("#solo", "bob")
    );

    // With others in it, the owner cannot leave (today's rule): `forbidden`, nothing
    // changes; once the others are gone, the owner can.
    alice.client.room_join("#solo").await.unwrap();
    let err = bob.client.room_leave("#solo").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let members = bob.client.room_members("#solo").await.unwrap();
    assert_eq!(members.len(), 2);
    bob.client
        .send("#solo", "still the owner", "s1")
        .await
        .unwrap();
    alice.client.room_leave("#solo").await.unwrap();
    bob.client.room_leave("#solo").await.unwrap();
    let gone = next_event_of(&mut bob, MessageKind::Delete).await;
    assert_eq!(gone.to, "#solo");
    assert!(bob.client.room_list(true).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_deletion_tells_live_members_the_same_way() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    alice.client.room_create("#ops", false).await.unwrap();
    let (mut bob, _) = server.login("bob").await;
    drain_backlog(&mut bob).await;
    bob.client.room_join("#ops").await.unwrap();
    server
        .admin()
        .await
        .delete_room(&RoomName::parse("#ops").unwrap())
        .await
        .unwrap();
    let gone = next_event_of(&mut bob, MessageKind::Delete).await;
    assert_eq!((gone.to.as_str(), gone.from.as_str()), ("#ops", "alice"));
    let err = bob.client.send("#ops", "anyone?", "k").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownRoom));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_stored_and_delivered_as_actions() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let (alice, _) = server.login("alice").await;
    let (mut bob, _) = server.login("bob").await;
    drain_backlog(&mut bob).await;
    let sent = alice
        .client
        .send_action("bob", "waves", "a1")
        .await
        .unwrap();
    alice.client.send("bob", "plain", "a2").await.unwrap();
    let got = take_messages(&mut bob.events, 2).await;
    assert_eq!(
        (got[0].id, got[0].body.as_str(), got[0].action),
        (sent.id, "waves", true)
    );
    assert!(!got[1].action);
    let (page, _) = bob.client.history("alice", None, None).await.unwrap();
    assert_eq!(
        page.iter().map(|m| m.action).collect::<Vec<_>>(),
        [true, false]
    );
    let hits = bob.client.search("waves", None, None).await.unwrap();
    assert!(hits[0].message.action);
    assert_eq!(page[0].shown_text(&page[0].body), "* alice waves");
}

/// Every refusal of the membership rules reaches a client with its code and today's words.
/// The rules answer with a typed refusal now (`store::membership`); until the front ends
/// word refusals themselves, the store's errors make the same text as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_membership_refusal_keeps_its_code_and_words() {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob", "carol"]).await;
    let (alice, _) = server.login("alice").await;
    let (bob, _) = server.login("bob").await;
    let (carol, _) = server.login("carol").await;
    alice.client.room_create("#ops", false).await.unwrap();
    alice.client.room_create("#secret", true).await.unwrap();
    bob.client.room_join("#ops").await.unwrap();
    let (a, b, c) = (&alice.client, &bob.client, &carol.client);
    let cases = [
        (
            a.room_create("#ops", false).await,
            ErrorCode::RoomExists,
            "room #ops already exists",
        ),
        (
            b.room_join("#ops").await,
            ErrorCode::BadRequest,
            "you are already a member of #ops",
        ),
        (
            c.room_join("#secret").await,
            ErrorCode::Forbidden,
            "#secret is private: its owner must invite you",
        ),
        (
            b.room_invite("#ops", "carol").await,
            ErrorCode::Forbidden,
            "only the owner of #ops can invite",
        ),
        (
            a.room_invite("#ops", "bob").await,
            ErrorCode::BadRequest,
            "bob is already a member of #ops",
        ),
        (
            c.room_leave("#ops").await,
            ErrorCode::NotMember,
            "you are not a member of #ops",
        ),
        (
            a.room_leave("#ops").await,
            ErrorCode::Forbidden,
            "the owner cannot leave #ops while others are members; delete the room instead",
        ),
        (
            b.room_del("#ops").await,
            ErrorCode::Forbidden,
            "only the owner of #ops can delete it",
        ),
        (
            b.room_kick("#ops", "carol").await,
            ErrorCode::Forbidden,
            "only the owner of #ops can kick",
        ),
        (
            a.room_kick("#ops", "alice").await,
            ErrorCode::Forbidden,
            "the owner of #ops cannot be kicked",
        ),
        (
            a.room_kick("#ops", "carol").await,
            ErrorCode::NotMember,
            "carol is not a member of #ops",
        ),
        (
            c.send("#ops", "let me in", "k").await.map(|s| s.id),
            ErrorCode::NotMember,
            "you are not a member of #ops",
        ),
    ];
    for (i, (result, code, words)) in cases.into_iter().enumerate() {
        let err = result.expect_err(words);
        assert_eq!(err.code(), Some(code), "case {i}: {err}");
        assert_eq!(err.to_string(), format!("{words} ({code})"), "case {i}");
    }
}
