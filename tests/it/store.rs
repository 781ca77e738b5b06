//! The store and its writer on their own: a real SQLite database in a temporary directory.

use chat_svc::protocol::Username;
use chat_svc::store::{Durability, NewMessage, Store, Target};

fn message(sender_id: i64, to: (i64, &str), key: &str, body: &str) -> NewMessage {
    NewMessage {
        sender_id,
        sender_name: "alice".into(),
        sender_device_id: 0,
        target: Target::User(to.0, to.1.into()),
        body: body.into(),
        key: key.into(),
    }
}

/// The writer runs each group commit as a few multi-statement round trips on its own
/// connection; a batch that fails half-way must be rolled back whole, and the writer must
/// go on committing later batches on the same connection.
#[tokio::test]
async fn a_failed_group_commit_is_rolled_back_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("chatd.db"), Durability::Full)
        .await
        .unwrap();
    let alice = store
        .create_user(&Username::parse("alice").unwrap(), "x")
        .await
        .unwrap();
    let bob = store
        .create_user(&Username::parse("bob").unwrap(), "x")
        .await
        .unwrap();
    let bob_device = store.create_device(bob, &[7; 32], "test").await.unwrap();
    let (writer, task) = store.start_writer(Box::new(|_| {})).await.unwrap();

    let first = writer
        .send(message(alice, (bob, "bob"), "k1", "before"))
        .await
        .unwrap();
    // No account 999999: the foreign key refuses the insert, so the batch fails.
    let refused = writer
        .send(message(999_999, (bob, "bob"), "k2", "never stored"))
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

    let backlog = store.backlog(bob, bob_device, 0, 100).await.unwrap();
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
