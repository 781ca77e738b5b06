//! The store and its writer on their own: a real database (SQLite in a temporary directory,
//! or a fresh PostgreSQL database) without a server.

use chat_svc::ids::{DeviceId, MessageId, RoomId, UserId};
use chat_svc::protocol::{RoomName, Username};
use chat_svc::store::{Durability, HistoryScope, NewMessage, RoomChange, Store, Target};

fn message(sender_id: UserId, to: (UserId, &str), key: &str, body: &str) -> NewMessage {
    NewMessage {
        sender_id,
        sender_name: "alice".into(),
        sender_device_id: DeviceId(0),
        target: Target::User(to.0, Username::parse(to.1).unwrap()),
        body: body.into(),
        key: key.into(),
        action: false,
    }
}

/// A store for a fresh directory with accounts alice and bob (their ids); the path is the
/// SQLite file's (for the SQLite-only tests).
async fn store_with_two_users() -> (tempfile::TempDir, std::path::PathBuf, Store, UserId, UserId) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatd.db");
    let db = crate::common::dir_db(dir.path()).target;
    let store = Store::connect(&db, Durability::Full).await.unwrap();
    let mut ids = Vec::new();
    for name in ["alice", "bob"] {
        let user = Username::parse(name).unwrap();
        ids.push(store.create_user(&user, "x").await.unwrap());
    }
    (dir, path, store, ids[0], ids[1])
}

/// The writer runs each group commit as one multi-statement round trip on its own
/// connection; a batch that fails half-way must be rolled back whole, and the writer must
/// go on committing later batches on the same connection.
#[tokio::test]
async fn a_failed_group_commit_is_rolled_back_and_the_writer_goes_on() {
    let (_dir, _, store, alice, bob) = store_with_two_users().await;
    let bob_device = store.create_device(bob, &[7; 32], "test").await.unwrap();
    let (writer, task) = store.start_writer(Box::new(|_| {})).await.unwrap();

    let first = writer
        .send(message(alice, (bob, "bob"), "k1", "before"))
        .await
        .unwrap();
    // No account 999999: the foreign key refuses the insert, so the batch fails.
    let refused = writer
        .send(message(UserId(999_999), (bob, "bob"), "k2", "never stored"))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let second = writer
        .send(message(alice, (bob, "bob"), "k3", "after"))
        .await
        .unwrap();
    assert!(second.id > first.id);
    // Resending a stored key answers with the stored message.
    let again = writer
        .send(message(alice, (bob, "bob"), "k3", "after"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, second.id);
    writer.ack(bob, bob_device, first.id).await.unwrap();

    let backlog = store
        .backlog(bob, bob_device, MessageId(0), 100)
        .await
        .unwrap();
    let bodies: Vec<&str> = backlog.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["before", "after"]);
    assert_eq!(
        store.device_cursor(bob_device).await.unwrap(),
        Some(first.id)
    );
    drop(writer);
    task.await.unwrap();
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
    store.close().await;
}

/// The store speaks in typed ids and typed names: what it returns (accounts, devices,
/// rooms, message ids, cursors) carries the kind of id it is, and names come back as
/// `Username` and `RoomName`, so no caller parses a stored name again. The ids round-trip:
/// what one call returns is what the next takes.
#[tokio::test]
async fn the_store_hands_back_typed_ids_and_names() {
    let (_dir, _, store, alice, bob) = store_with_two_users().await;
    let bob_name = Username::parse("bob").unwrap();
    let found = store.find_user(&bob_name).await.unwrap().unwrap();
    assert_eq!((found.id, &found.name), (bob, &bob_name));
    let creds = store
        .credentials(&Username::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((creds.user_id, creds.name.as_str()), (alice, "alice"));

    let (writer, task) = store.start_writer(Box::new(|_| {})).await.unwrap();
    let (room_id, event): (RoomId, MessageId) = writer
        .change_room(RoomChange::Create {
            name: "ops".into(),
            private: true,
            by: (alice, "alice".into()),
        })
        .await
        .unwrap();
    let room = store
        .find_room(&RoomName::parse("#Ops").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (room.id, room.owner_id, room.private),
        (room_id, alice, true)
    );
    assert_eq!(
        (room.name.as_str(), room.name.to_string()),
        ("ops", "#ops".to_string())
    );
    assert!(store.is_member(room_id, alice).await.unwrap());
    assert!(!store.is_member(room_id, bob).await.unwrap());

    let bob_device: DeviceId = store.create_device(bob, &[9; 32], "test").await.unwrap();
    let sent = writer
        .send(message(alice, (bob, "bob"), "k1", "hello"))
        .await
        .unwrap();
    assert!(sent.id > event, "ids grow in commit order");
    let (page, more) = store
        .history(bob, HistoryScope::Direct { peer_id: alice }, None, None, 10)
        .await
        .unwrap();
    assert_eq!((page.len(), page[0].id, more), (1, sent.id.get(), false));
    assert_eq!(
        store
            .latest_id(bob, HistoryScope::Direct { peer_id: alice })
            .await
            .unwrap(),
        Some(sent.id)
    );
    writer.ack(bob, bob_device, sent.id).await.unwrap();
    assert_eq!(
        store.device_cursor(bob_device).await.unwrap(),
        Some(sent.id)
    );
    assert_eq!(
        store
            .valid_devices(&[bob_device, DeviceId(999_999)])
            .await
            .unwrap(),
        [bob_device].into_iter().collect()
    );
    drop(writer);
    task.await.unwrap();
    store.close().await;
}

/// Commits never checkpoint the WAL themselves (that stalled whichever commit crossed the
/// threshold); a checkpointer beside the writer copies the log into the database file while
/// the writer runs. Without it the database file would stay at its first size until close.
#[tokio::test]
async fn the_log_reaches_the_database_file_while_the_writer_runs() {
    if crate::common::sqlite_only("SQLite's WAL checkpoints and the database file") {
        return;
    }
    let (_dir, path, store, alice, bob) = store_with_two_users().await;
    let (writer, task) = store.start_writer(Box::new(|_| {})).await.unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    let body = "x".repeat(2000);
    let mut sends = Vec::new();
    for i in 0..400 {
        let writer = writer.clone();
        let m = message(alice, (bob, "bob"), &format!("k{i}"), &body);
        sends.push(tokio::spawn(async move { writer.send(m).await }));
    }
    for s in sends {
        s.await.unwrap().unwrap();
    }
    // 800 KB of bodies: once checkpointed, the file holds them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let size = std::fs::metadata(&path).unwrap().len();
        if size > before + 800_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "database file still {size} bytes (was {before}) 10 s after 400 commits"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(writer);
    task.await.unwrap();
    assert_eq!(store.message_count().await.unwrap(), 400);
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
    store.close().await;
}

/// The search index is a derived file beside the database, private like it, filled after
/// commits by the indexer; a search waits for the messages committed before it. Deleted
/// (or lost), it is rebuilt from the messages on the next start.
#[tokio::test]
async fn the_search_index_is_private_fresh_and_rebuilt_when_lost() {
    use std::os::unix::fs::PermissionsExt;
    if crate::common::sqlite_only("the search index file beside the SQLite database") {
        return;
    }
    let (dir, path, store, alice, bob) = store_with_two_users().await;
    let (writer, task) = store.start_writer(Box::new(|_| {})).await.unwrap();
    for (i, body) in ["deploy the api", "lunch?", "the api is down"]
        .iter()
        .enumerate()
    {
        writer
            .send(message(alice, (bob, "bob"), &format!("k{i}"), body))
            .await
            .unwrap();
    }
    let terms = vec!["api".to_string()];
    let found = |hits: Vec<chat_svc::protocol::SearchHit>| {
        let mut bodies: Vec<String> = hits.into_iter().map(|h| h.message.body).collect();
        bodies.sort();
        bodies
    };
    // Searched at once after the `sent`: no waiting for an indexing interval by the caller.
    let before = found(store.search(bob, &terms, None, 10).await.unwrap());
    assert_eq!(before, ["deploy the api", "the api is down"]);
    drop(writer);
    task.await.unwrap();
    store.close().await;

    let index = dir.path().join("chatd.db.search.db");
    let mode = std::fs::metadata(&index).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "search index mode {mode:o}");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", index.display()));
    }
    let store = Store::open(&path, Durability::Full).await.unwrap();
    let (writer, task) = store.start_writer(Box::new(|_| {})).await.unwrap();
    let after = found(store.search(bob, &terms, None, 10).await.unwrap());
    assert_eq!(after, before);
    drop(writer);
    task.await.unwrap();
    store.close().await;
}

/// A `sqlite:` URL opens the same database a path does, through the one seam; a
/// `postgres://` URL names PostgreSQL instead.
#[tokio::test]
async fn a_sqlite_url_opens_the_same_database_as_its_path() {
    if crate::common::sqlite_only("SQLite URLs") {
        return;
    }
    use chat_svc::store::DbTarget;
    let (_dir, path, store, alice, _) = store_with_two_users().await;
    store.close().await;

    let url = format!("sqlite:{}", path.display());
    let target: DbTarget = url.parse().unwrap();
    let store = Store::connect(&target, Durability::Full).await.unwrap();
    let found = store
        .find_user(&Username::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, alice);
    store.close().await;

    assert!(matches!(
        "postgres://chat@localhost/chat".parse::<DbTarget>(),
        Ok(DbTarget::Postgres(_))
    ));
}
