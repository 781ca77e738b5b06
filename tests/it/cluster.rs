//! Several `chatd` nodes on one PostgreSQL database (issue 14): ids visible in commit order
//! across writers, delivery across nodes through the tail (and through its timer when the
//! listener is cut), a node killed with SIGKILL losing nothing acknowledged, and room
//! changes, revocations and disables made through one node taking effect on the others, and
//! search through the index that one node at a time fills.
//!
//! Each test gets a fresh database in the private cluster of `crate::pg`; without
//! PostgreSQL server binaries the tests say so and pass (with `CI` set they fail).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_svc::auth::Hasher;
use chat_svc::client::{Connection, Event, ServerAddr};
use chat_svc::ids::{DeviceId, MessageId};
use chat_svc::protocol::{ErrorCode, Message, Secret, Username};
use chat_svc::server::{Limits, Server};
use chat_svc::store::{DbTarget, Delivery, Durability, NewMessage, Store, Target};
use chat_svc::tls::Fingerprint;
use sqlx::{Connection as _, Executor, PgConnection, Row};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common::{options, take_messages, test_limits, PASSWORD};
use crate::pg::{fresh_pg_database, PgDatabase};

const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

/// An in-process node on a shared database, its certificate in a shared directory.
struct Node {
    addr: SocketAddr,
    pin: Fingerprint,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    async fn start(db: &PgDatabase, certs: &Path, limits: Limits) -> Node {
        let mut options = options(certs, limits);
        options.db = db.target();
        options.identity.cert_dir = certs.join("certs");
        let server = Server::start(&options).await.expect("a node starts");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pin = server.fingerprint();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(listener, shutdown.clone()));
        Node {
            addr,
            pin,
            shutdown,
            task: Some(task),
        }
    }

    async fn login(&self, user: &str) -> (Connection, Secret) {
        let conn = Connection::connect(&ServerAddr::from(self.addr), self.pin)
            .await
            .unwrap();
        let info = conn
            .client
            .login(user, &Secret::new(PASSWORD), "node test")
            .await
            .unwrap();
        (conn, info.token)
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Creates accounts with [`PASSWORD`] through the admin path.
async fn add_users(db: &DbTarget, names: &[&str]) {
    let store = Store::connect(db, Durability::Full).await.unwrap();
    let hash = Hasher::new(2)
        .await
        .unwrap()
        .hash(&Secret::new(PASSWORD))
        .await
        .unwrap();
    for name in names {
        store
            .create_user(&Username::parse(name).unwrap(), &hash)
            .await
            .unwrap();
    }
    store.close().await;
}

/// Creates the accounts `names` and starts two nodes sharing a key (in the returned
/// directory).
async fn two_nodes(db: &PgDatabase, names: &[&str]) -> (tempfile::TempDir, Node, Node) {
    add_users(&db.target(), names).await;
    let certs = tempfile::tempdir().unwrap();
    let a = Node::start(db, certs.path(), test_limits()).await;
    let b = Node::start(db, certs.path(), test_limits()).await;
    (certs, a, b)
}

/// Subscribes and returns the backlog up to `caught_up`.
async fn subscribe(conn: &mut Connection) -> Vec<Message> {
    crate::common::drain_backlog(conn).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_become_visible_in_commit_order_with_the_counter_but_not_with_a_sequence() {
    let Some(db) = fresh_pg_database().await else {
        return;
    };
    // The hazard, on this PostgreSQL: with a plain sequence, writer A takes id 1, writer B
    // takes id 2 and commits first; a reader whose cursor moves to 2 never sees 1.
    let mut setup = PgConnection::connect(&db.url).await.unwrap();
    setup
        .execute("CREATE SEQUENCE plain_ids; CREATE TABLE plain (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    let (mut a, mut b) = (
        PgConnection::connect(&db.url).await.unwrap(),
        PgConnection::connect(&db.url).await.unwrap(),
    );
    a.execute("BEGIN").await.unwrap();
    let id_a: i64 = sqlx::query("SELECT nextval('plain_ids')")
        .fetch_one(&mut a)
        .await
        .unwrap()
        .get(0);
    b.execute("BEGIN").await.unwrap();
    let id_b: i64 = sqlx::query("SELECT nextval('plain_ids')")
        .fetch_one(&mut b)
        .await
        .unwrap()
        .get(0);
    assert!(id_a < id_b);
    for (conn, id) in [(&mut b, id_b)] {
        sqlx::query("INSERT INTO plain VALUES ($1)")
            .bind(id)
            .execute(&mut *conn)
            .await
            .unwrap();
        conn.execute("COMMIT").await.unwrap();
    }
    let read = |after: i64| {
        let url = db.url.clone();
        async move {
            let mut r = PgConnection::connect(&url).await.unwrap();
            let ids: Vec<i64> = sqlx::query("SELECT id FROM plain WHERE id > $1 ORDER BY id")
                .bind(after)
                .fetch_all(&mut r)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            ids
        }
    };
    let first = read(0).await;
    assert_eq!(first, vec![id_b], "the reader sees the later id alone");
    let cursor = *first.last().unwrap();
    sqlx::query("INSERT INTO plain VALUES ($1)")
        .bind(id_a)
        .execute(&mut a)
        .await
        .unwrap();
    a.execute("COMMIT").await.unwrap();
    assert!(
        read(cursor).await.is_empty(),
        "with a sequence, id {id_a} is never delivered past cursor {cursor}"
    );

    // The design: a slow writer (another node, here a bare connection doing what a writer
    // does) holds the counter row; the store's writer waits for it, so no reader sees the
    // later id first, and both arrive in order.
    let target = db.target();
    add_users(&target, &["alice", "bob"]).await;
    let store = Store::connect(&target, Durability::Full).await.unwrap();
    let alice = store
        .find_user(&Username::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    let bob = store
        .find_user(&Username::parse("bob").unwrap())
        .await
        .unwrap()
        .unwrap();
    let hub: Arc<Mutex<Vec<i64>>> = Arc::default();
    let seen = Arc::clone(&hub);
    let (writer, _task) = store
        .start_writer(Box::new(move |batch: Vec<Delivery>| {
            seen.lock()
                .unwrap()
                .extend(batch.iter().map(|d| d.message.id))
        }))
        .await
        .unwrap();
    let mut slow = PgConnection::connect(&db.url).await.unwrap();
    slow.execute("BEGIN").await.unwrap();
    let last: i64 = sqlx::query("SELECT last_id FROM id_counter FOR UPDATE")
        .fetch_one(&mut slow)
        .await
        .unwrap()
        .get(0);
    sqlx::query(
        "INSERT INTO messages (id, sender_id, recipient_id, body, sent_at, client_key) \
         VALUES ($1, $2, $3, 'first', 0, 'slow-writer')",
    )
    .bind(last + 1)
    .bind(alice.id.get())
    .bind(bob.id.get())
    .execute(&mut slow)
    .await
    .unwrap();
    let send = tokio::spawn({
        let writer = writer.clone();
        let (alice_id, bob_ref) = (alice.id, bob.clone());
        async move {
            writer
                .send(NewMessage {
                    sender_id: alice_id,
                    sender_name: "alice".into(),
                    sender_device_id: DeviceId(0),
                    target: Target::User(bob_ref.id, bob_ref.name),
                    body: "second".into(),
                    key: "fast-writer".into(),
                    action: false,
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !send.is_finished(),
        "the second writer waits for the counter row"
    );
    let visible = store
        .backlog(bob.id, DeviceId(-1), MessageId(0), 100)
        .await
        .unwrap();
    assert!(visible.is_empty(), "nothing is visible yet: {visible:?}");
    sqlx::query("UPDATE id_counter SET last_id = $1")
        .bind(last + 1)
        .execute(&mut slow)
        .await
        .unwrap();
    slow.execute("COMMIT").await.unwrap();
    let committed = send.await.unwrap().unwrap();
    assert_eq!(
        committed.id,
        MessageId(last + 2),
        "the later writer gets the next id"
    );
    let visible: Vec<i64> = store
        .backlog(bob.id, DeviceId(-1), MessageId(0), 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(visible, vec![last + 1, last + 2]);
    // The hub hears of both, in order, though this writer stored only the second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while hub.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*hub.lock().unwrap(), vec![last + 1, last + 2]);
    drop(writer);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_different_nodes_talk_live_offline_and_in_rooms() {
    let Some(db) = fresh_pg_database().await else {
        return;
    };
    add_users(&db.target(), &["alice", "bob", "carol"]).await;
    let certs = tempfile::tempdir().unwrap();
    let a = Node::start(&db, certs.path(), test_limits()).await;
    let b = Node::start(&db, certs.path(), test_limits()).await;
    assert_eq!(a.pin, b.pin, "both nodes serve the shared key");
    let (alice, _) = a.login("alice").await;
    let (mut bob, _) = b.login("bob").await;
    assert!(subscribe(&mut bob).await.is_empty());
    // Live: alice on A, bob on B.
    for i in 0..20 {
        alice
            .client
            .send("bob", &format!("live {i}"), &format!("k{i}"))
            .await
            .unwrap();
    }
    let got = take_messages(&mut bob.events, 20).await;
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(
        bodies,
        (0..20).map(|i| format!("live {i}")).collect::<Vec<_>>()
    );
    assert!(got.windows(2).all(|w| w[0].id < w[1].id));
    // A retried key through the other node is the same message.
    let first = alice.client.send("bob", "once", "same-key").await.unwrap();
    let (alice_b, _) = b.login("alice").await;
    let again = alice_b
        .client
        .send("bob", "once", "same-key")
        .await
        .unwrap();
    assert_eq!(
        first.id, again.id,
        "a key retried on another node finds the message"
    );
    // Rooms: created on A, joined on B; a message from B reaches carol offline on A.
    alice.client.room_create("lobby", false).await.unwrap();
    bob.client.room_join("#lobby").await.unwrap();
    let (carol, carol_token) = a.login("carol").await;
    carol.client.room_join("#lobby").await.unwrap();
    drop(carol);
    let sent = bob.client.send("#lobby", "hello room", "r1").await.unwrap();
    let mut carol = Connection::connect(&ServerAddr::from(a.addr), a.pin)
        .await
        .unwrap();
    carol.client.auth(&carol_token).await.unwrap();
    let backlog = subscribe(&mut carol).await;
    assert!(
        backlog
            .iter()
            .any(|m| m.id == sent.id && m.body == "hello room"),
        "carol's backlog on node A has bob's room message from node B: {backlog:?}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_survives_a_cut_listener_through_the_timer_and_the_reconnect() {
    let Some(db) = fresh_pg_database().await else {
        return;
    };
    let (_certs, a, b) = two_nodes(&db, &["alice", "bob"]).await;
    let (alice, _) = a.login("alice").await;
    let (mut bob, _) = b.login("bob").await;
    subscribe(&mut bob).await;
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    let cut_sql = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = '{}' AND datname = '{}'",
        chat_svc::store::LISTENER_NAME,
        db.name
    );
    async fn cut(admin: &mut PgConnection, sql: &str) -> usize {
        sqlx::query(sql).fetch_all(admin).await.unwrap().len()
    }
    assert_eq!(
        cut(&mut admin, &cut_sql).await,
        2,
        "each node has one listening connection"
    );
    let mut expected = Vec::new();
    for round in 0..5 {
        for i in 0..10 {
            let body = format!("round {round} message {i}");
            alice
                .client
                .send("bob", &body, &format!("{round}-{i}"))
                .await
                .unwrap();
            expected.push(body);
        }
        // Cut again mid-run, whether or not the listeners are back yet.
        cut(&mut admin, &cut_sql).await;
    }
    let got = take_messages(&mut bob.events, expected.len()).await;
    let bodies: Vec<String> = got.iter().map(|m| m.body.clone()).collect();
    assert_eq!(bodies, expected);
    // The listeners came back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
        )
        .bind(chat_svc::store::LISTENER_NAME)
        .bind(&db.name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get(0);
        if n == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the listeners did not reconnect ({n} of 2)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_changes_revocations_and_disables_on_one_node_apply_on_the_others() {
    let Some(db) = fresh_pg_database().await else {
        return;
    };
    let target = db.target();
    add_users(&target, &["alice", "bob", "carol", "dave"]).await;
    let certs = tempfile::tempdir().unwrap();
    // The default poll (500 ms): revocations must reach every node within 2 s.
    let limits = Limits {
        send_rate_per_sec: 1_000_000,
        send_burst: 1_000_000,
        ..Limits::default()
    };
    let a = Node::start(&db, certs.path(), limits.clone()).await;
    let b = Node::start(&db, certs.path(), limits).await;
    let (alice, _) = a.login("alice").await;
    let (bob, _) = b.login("bob").await;
    alice.client.room_create("team", false).await.unwrap();
    bob.client.room_join("#team").await.unwrap();
    bob.client.send("#team", "before", "b1").await.unwrap();
    // A kick through A applies to bob's very next send through B.
    alice.client.room_kick("#team", "bob").await.unwrap();
    let refused = bob.client.send("#team", "after", "b2").await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::NotMember), "{refused:?}");
    // A room deleted through B (its owner logged in there) is gone on A at once.
    let (alice_b, _) = b.login("alice").await;
    alice_b.client.room_create("scratch", false).await.unwrap();
    let (dave, _) = a.login("dave").await;
    dave.client.room_join("#scratch").await.unwrap();
    alice_b.client.room_del("#scratch").await.unwrap();
    let gone = dave
        .client
        .send("#scratch", "hello?", "d1")
        .await
        .unwrap_err();
    assert!(
        matches!(
            gone.code(),
            Some(ErrorCode::UnknownRoom | ErrorCode::NotMember)
        ),
        "{gone:?}"
    );

    // A revocation through the admin path closes carol's session on B within 2 s.
    let (mut carol, _) = b.login("carol").await;
    subscribe(&mut carol).await;
    let admin = Store::connect(&target, Durability::Full).await.unwrap();
    let started = Instant::now();
    admin
        .revoke_user(&Username::parse("carol").unwrap())
        .await
        .unwrap();
    closed_within(&mut carol, Duration::from_secs(2), started).await;
    // A disable likewise closes dave's session on A.
    let mut dave = dave;
    subscribe(&mut dave).await;
    let started = Instant::now();
    admin
        .set_disabled(&Username::parse("dave").unwrap(), true)
        .await
        .unwrap();
    closed_within(&mut dave, Duration::from_secs(2), started).await;
    admin.close().await;
    drop((alice, alice_b, bob));
    a.stop().await;
    b.stop().await;
}

/// Waits for the server to close `conn`, and checks it did so within `limit` of `since`.
async fn closed_within(conn: &mut Connection, limit: Duration, since: Instant) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), conn.events.recv()).await {
            Ok(Some(Event::Closed(_))) | Ok(None) => break,
            Ok(Some(_)) => continue,
            Err(_) => panic!("the session was not closed"),
        }
    }
    let took = since.elapsed();
    assert!(
        took <= limit,
        "the session was closed after {took:?}, not within {limit:?}"
    );
}

/// A `chatd serve` process on the shared database.
struct Proc {
    child: Child,
    addr: SocketAddr,
    pin: Fingerprint,
}

impl Proc {
    fn spawn(db: &PgDatabase, certs: &Path) -> Proc {
        let mut child = Command::new(CHATD)
            .arg("--db")
            .arg(&db.url)
            .arg("--cert-dir")
            .arg(certs)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chatd runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addr = None;
        let mut pin = None;
        while addr.is_none() || pin.is_none() {
            let line = lines
                .next()
                .expect("chatd printed its address and fingerprint")
                .unwrap();
            if let Some(a) = line.strip_prefix("chatd listening on ") {
                addr = Some(a.parse().unwrap());
            } else if let Some(f) = line.strip_prefix("fingerprint ") {
                pin = Some(f.parse().unwrap());
            }
        }
        // Keep reading so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Proc {
            child,
            addr: addr.unwrap(),
            pin: pin.unwrap(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one device has seen, as its user sees it: each id once, in order (the client keeps
/// the highest id it has shown and skips anything at or below it), and how many deliveries
/// the server made (after a reconnect it may deliver again what was not yet acknowledged).
#[derive(Default)]
struct Seen {
    shown: Vec<i64>,
    deliveries: usize,
}

/// Subscribes `conn` and, in a task, records and acknowledges every message until the
/// connection closes.
async fn follow(conn: Connection, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    let (client, mut events) = conn.split();
    client.subscribe().await.unwrap();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::Message(m) => {
                    {
                        let mut seen = seen.lock().unwrap();
                        seen.deliveries += 1;
                        if seen.shown.last().is_none_or(|&last| m.id > last) {
                            seen.shown.push(m.id);
                        }
                    }
                    // Recorded before acknowledged, as `chat recv` does.
                    if client.ack(m.id).await.is_err() {
                        return;
                    }
                }
                Event::Closed(_) => return,
                Event::CaughtUp { .. } | Event::ReadMarker { .. } => {}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_nothing_acknowledged_when_one_is_killed() {
    let Some(db) = fresh_pg_database().await else {
        return;
    };
    let users = ["u0", "u1", "u2", "u3", "u4", "u5"];
    add_users(&db.target(), &users).await;
    let certs = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Proc> = (0..3).map(|_| Proc::spawn(&db, certs.path())).collect();
    assert!(nodes.windows(2).all(|w| w[0].pin == w[1].pin));
    let pin = nodes[0].pin;
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let connect = |node: usize| {
        let addr = addrs[node];
        async move {
            Connection::connect(&ServerAddr::from(addr), pin)
                .await
                .unwrap()
        }
    };
    // User i on node i mod 3, in one room made through node 0. Each user has a sending
    // connection and a following one (a second device) on the same node.
    let mut tokens = Vec::new();
    let mut senders = Vec::new();
    let mut node_of = Vec::new();
    let seen: Vec<Arc<Mutex<Seen>>> = users.iter().map(|_| Arc::default()).collect();
    let mut followers = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let node = i % 3;
        let sender = connect(node).await;
        sender
            .client
            .login(user, &Secret::new(PASSWORD), "sender")
            .await
            .unwrap();
        if i == 0 {
            sender.client.room_create("all", false).await.unwrap();
        } else {
            sender.client.room_join("#all").await.unwrap();
        }
        let reader = connect(node).await;
        let info = reader
            .client
            .login(user, &Secret::new(PASSWORD), "reader")
            .await
            .unwrap();
        tokens.push(info.token);
        node_of.push(node);
        senders.push(sender);
        followers.push(Some(follow(reader, Arc::clone(&seen[i])).await));
    }
    // u5's reader goes offline for the whole exchange: its messages wait in the table.
    if let Some(task) = followers[5].take() {
        task.abort();
    }
    let mut acknowledged: BTreeSet<i64> = BTreeSet::new();
    let mut pending: Vec<(usize, String, String, String)> = Vec::new();
    for round in 0..30 {
        if round == 12 {
            // Mid-exchange: node 2 dies without a chance to flush or say goodbye.
            nodes[2].kill();
        }
        if round == 14 {
            // Node 2's users move to node 0: resume by token, follow from their cursor,
            // and retry what failed with the same keys.
            for i in 0..users.len() {
                if node_of[i] != 2 {
                    continue;
                }
                node_of[i] = 0;
                let sender = connect(0).await;
                sender
                    .client
                    .login(users[i], &Secret::new(PASSWORD), "sender again")
                    .await
                    .unwrap();
                senders[i] = sender;
                if followers[i].is_some() {
                    let reader = connect(0).await;
                    reader.client.auth(&tokens[i]).await.unwrap();
                    followers[i] = Some(follow(reader, Arc::clone(&seen[i])).await);
                }
            }
            for (i, to, body, key) in std::mem::take(&mut pending) {
                let sent = senders[i].client.send(&to, &body, &key).await.unwrap();
                acknowledged.insert(sent.id);
            }
        }
        for (i, sender) in senders.iter().enumerate() {
            let to = if round % 2 == 0 {
                users[(i + 1) % users.len()].to_string()
            } else {
                "#all".to_string()
            };
            let key = format!("{}-{round}", users[i]);
            let body = format!("{} says {round}", users[i]);
            match sender.client.send(&to, &body, &key).await {
                Ok(sent) => {
                    acknowledged.insert(sent.id);
                }
                Err(e) => {
                    assert!(
                        round >= 12 && node_of[i] == 2,
                        "only sends to the killed node may fail: {e:?}"
                    );
                    pending.push((i, to, body, key));
                }
            }
        }
    }
    assert!(pending.is_empty());
    // u5 comes back on node 1 and takes its backlog.
    let reader = connect(1).await;
    reader.client.auth(&tokens[5]).await.unwrap();
    followers[5] = Some(follow(reader, Arc::clone(&seen[5])).await);

    let store = Store::connect(&db.target(), Durability::Full)
        .await
        .unwrap();
    let mut redelivered = 0;
    for (i, user) in users.iter().enumerate() {
        let user_ref = store
            .find_user(&Username::parse(user).unwrap())
            .await
            .unwrap()
            .unwrap();
        // Everything this user may read, from the database: all of it was sent by the end.
        let expected: Vec<i64> = store
            .backlog(user_ref.id, DeviceId(-1), MessageId(0), 100_000)
            .await
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let shown = seen[i].lock().unwrap().shown.clone();
            if shown == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{user}: shown {} of {} messages; missing {:?}",
                shown.len(),
                expected.len(),
                expected
                    .iter()
                    .filter(|id| !shown.contains(id))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let s = seen[i].lock().unwrap();
        redelivered += s.deliveries - s.shown.len();
    }
    // Every acknowledged send is stored once and reached every reader it was for (checked
    // above through `expected`, which holds every stored message a user may read).
    let stored = store.message_count().await.unwrap();
    let events = 1 + (users.len() as i64 - 1); // the room's create and joins
    assert_eq!(
        stored,
        acknowledged.len() as i64 + events,
        "each acknowledged send is stored exactly once, retries included"
    );
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
    eprintln!(
        "three nodes: {} messages acknowledged, {redelivered} deliveries repeated after the \
         kill (skipped by the clients)",
        acknowledged.len()
    );
    store.close().await;
    for task in followers.into_iter().flatten() {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_marker_moved_on_one_node_reaches_the_devices_on_another() {
    let Some(db) = fresh_pg_database().await else {
        return;
    };
    add_users(&db.target(), &["alice", "bob"]).await;
    let certs = tempfile::tempdir().unwrap();
    let a = Node::start(&db, certs.path(), test_limits()).await;
    let b = Node::start(&db, certs.path(), test_limits()).await;
    let (bob, _) = a.login("bob").await;
    let sent = bob.client.send("alice", "read me", "m1").await.unwrap();
    let (alice_a, _) = a.login("alice").await;
    let (mut alice_b, _) = b.login("alice").await;
    subscribe(&mut alice_b).await;
    let upto = alice_a.client.read("bob", None).await.unwrap();
    assert_eq!(upto, sent.id);
    loop {
        match crate::common::next_event(&mut alice_b.events).await {
            Event::ReadMarker { conversation, upto } => {
                assert_eq!((conversation.as_str(), upto), ("bob", sent.id));
                break;
            }
            Event::Message(_) | Event::CaughtUp { .. } => {}
            Event::Closed(r) => panic!("closed: {r:?}"),
        }
    }
    let unread = alice_b.client.unread().await.unwrap();
    assert!(
        unread.iter().all(|u| u.unread == 0),
        "node B counts what was read on node A: {unread:?}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_key_is_refused_and_a_reload_may_not_change_the_key() {
    let Some(db) = fresh_pg_database().await else {
        return;
    };
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Node::start(&db, first.path(), test_limits()).await;
    // Another certificate directory: another key, which clients pinning node A would refuse.
    let mut options = options(second.path(), test_limits());
    options.db = db.target();
    options.identity.cert_dir = second.path().join("certs");
    let err = match Server::start(&options).await {
        Ok(_) => panic!("a node with another key joined the cluster"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&a.pin.to_string()) && err.contains("same key"),
        "the refusal names the cluster's key: {err}"
    );
    // The same key in another directory is fine.
    std::fs::create_dir_all(second.path().join("certs")).unwrap();
    for file in ["key.pem", "cert.pem"] {
        std::fs::copy(
            first.path().join("certs").join(file),
            second.path().join("certs").join(file),
        )
        .unwrap();
    }
    let server = Server::start(&options).await.expect("the same key joins");
    assert_eq!(server.fingerprint(), a.pin);
    // A reload that would change the key is refused; the node keeps serving the old one.
    let reloader = server.tls_reloader();
    for file in ["key.pem", "cert.pem"] {
        std::fs::remove_file(second.path().join("certs").join(file)).unwrap();
    }
    let refused = reloader.reload().unwrap_err().to_string();
    assert!(refused.contains("restart every node"), "{refused}");
    drop(server);
    a.stop().await;
}

#[test]
fn a_bad_or_unreachable_postgres_url_is_one_line_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    for (url, expect) in [
        (
            "postgres://chat:s3cret@127.0.0.1:notaport/chat",
            "invalid value for --db",
        ),
        // Port 1 on loopback: nothing listens there.
        (
            "postgres://chat:s3cret@127.0.0.1:1/chat",
            "Connection refused",
        ),
    ] {
        let out = Command::new(CHATD)
            .current_dir(dir.path())
            .args(["--db", url, "user", "list"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url}: {stderr}");
        assert!(stderr.contains(expect), "{url}: {stderr}");
        assert!(
            !stderr.contains("s3cret"),
            "the password was shown: {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
    // The password file is read when the URL has none; a missing one is named.
    let out = Command::new(CHATD)
        .current_dir(dir.path())
        .args(["--db", "postgres://chat@127.0.0.1:1/chat", "user", "list"])
        .env(
            chat_svc::store::PASSWORD_FILE_ENV,
            dir.path().join("missing"),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password file") && stderr.contains("missing"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sending_and_acking_for_the_same_users_never_deadlock() {
    let Some(db) = fresh_pg_database().await else {
        return;
    };
    add_users(&db.target(), &["ann", "ben"]).await;
    let certs = tempfile::tempdir().unwrap();
    let nodes = [
        Node::start(&db, certs.path(), test_limits()).await,
        Node::start(&db, certs.path(), test_limits()).await,
    ];
    // Each user sends through one node and reads (acking everything) through both, so both
    // writers move cursors of the users whose rows the other's inserts reference.
    let mut readers = Vec::new();
    for node in &nodes {
        for user in ["ann", "ben"] {
            let (conn, _) = node.login(user).await;
            readers.push(follow(conn, Arc::default()).await);
        }
    }
    let mut senders = Vec::new();
    for (i, (from, to)) in [("ann", "ben"), ("ben", "ann")].into_iter().enumerate() {
        let (conn, _) = nodes[i].login(from).await;
        senders.push(tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(4);
            let mut n = 0u32;
            let mut inflight = Vec::new();
            while Instant::now() < until {
                for _ in 0..32 {
                    let client = conn.client.clone();
                    let key = format!("{from}-{n}");
                    n += 1;
                    inflight.push(tokio::spawn(
                        async move { client.send(to, "ping", &key).await },
                    ));
                }
                for sent in inflight.drain(..) {
                    if let Err(e) = sent.await.unwrap() {
                        return Err(format!("send {n} failed: {e:?}"));
                    }
                }
            }
            Ok(n)
        }));
    }
    for sender in senders {
        let sent = sender.await.unwrap().unwrap();
        assert!(sent > 100, "only {sent} sends in 4 s");
    }
    for reader in readers {
        reader.abort();
    }
}

/// `search_state`'s mark and the rows of `message_search`.
async fn index_state(admin: &mut PgConnection) -> (i64, i64) {
    let row = sqlx::query(
        "SELECT (SELECT indexed_upto FROM search_state), (SELECT COUNT(*) FROM message_search)",
    )
    .fetch_one(admin)
    .await
    .unwrap();
    (row.get(0), row.get(1))
}

/// Waits until the indexer's mark reaches `upto`.
async fn indexed_upto(admin: &mut PgConnection, upto: i64) -> (i64, i64) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let state = index_state(admin).await;
        if state.0 >= upto {
            return state;
        }
        assert!(Instant::now() < until, "the indexer is stuck at {state:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids of a search's hits, best first.
async fn hit_ids(conn: &Connection, words: &str) -> Vec<i64> {
    let hits = conn.client.search(words, None, None).await.unwrap();
    hits.iter().map(|h| h.message.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_each_message_once_whether_or_not_the_indexer_has_reached_it() {
    let Some(db) = fresh_pg_database().await else {
        return;
    };
    let (_certs, a, b) = two_nodes(&db, &["alice", "bob"]).await;
    let (alice, _) = a.login("alice").await;
    let (bob, _) = b.login("bob").await;
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    let mut holder = PgConnection::connect(&db.url).await.unwrap();

    // Both nodes' indexers are kept off while the mark's row is held.
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("SELECT 1 FROM search_state FOR UPDATE")
        .await
        .unwrap();
    let mut sent = Vec::new();
    for (i, body) in ["deploy one", "lunch", "deploy two", "the deploy is done"]
        .iter()
        .enumerate()
    {
        let c = alice
            .client
            .send("bob", body, &format!("s{i}"))
            .await
            .unwrap();
        sent.push(c.id);
    }
    let before = hit_ids(&bob, "deploy").await;
    let mut sorted = before.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![sent[0], sent[2], sent[3]], "{before:?}");
    assert_eq!(index_state(&mut admin).await, (0, 0), "nothing indexed yet");

    // Released, an indexer finds the work on its timer; the hits are the same.
    holder.execute("ROLLBACK").await.unwrap();
    let (mark, rows) = indexed_upto(&mut admin, sent[3]).await;
    assert_eq!((mark, rows), (sent[3], 4), "one row per text message");
    let after = hit_ids(&bob, "deploy").await;
    assert_eq!(
        after, before,
        "the same hits in the same order from the index"
    );

    // Indexed and not yet indexed messages together, each once.
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("SELECT 1 FROM search_state FOR UPDATE")
        .await
        .unwrap();
    let newer = alice
        .client
        .send("bob", "deploy three", "s9")
        .await
        .unwrap()
        .id;
    let mixed = hit_ids(&bob, "deploy").await;
    assert_eq!(mixed.len(), 4, "{mixed:?}");
    assert!(mixed.contains(&newer));
    assert_eq!(index_state(&mut admin).await.0, sent[3]);
    holder.execute("ROLLBACK").await.unwrap();
    indexed_upto(&mut admin, newer).await;
    let mut all = hit_ids(&bob, "deploy").await;
    all.sort_unstable();
    let mut expected = mixed.clone();
    expected.sort_unstable();
    assert_eq!(all, expected);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_from_schema_1_indexes_every_text_message_already_stored() {
    let Some(db) = fresh_pg_database().await else {
        return;
    };
    // A database as version 1 of the schema left it, with messages.
    let only_first = tempfile::tempdir().unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    std::fs::copy(
        migrations.join("0001_initial.sql"),
        only_first.path().join("0001_initial.sql"),
    )
    .unwrap();
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::migrate::Migrator::new(only_first.path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    conn.execute(
        "INSERT INTO users (name, created_at) VALUES ('alice', 0), ('bob', 0); \
         INSERT INTO messages (id, sender_id, recipient_id, body, sent_at, client_key) \
         SELECT n, 1, 2, CASE WHEN n % 3 = 0 THEN 'deploy ' || n ELSE 'chat ' || n END, n, \
                'k' || n FROM generate_series(1, 300) AS n; \
         UPDATE id_counter SET last_id = 300, last_sent_at = 300",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();

    // Opening it migrates it: the index holds every text message, the mark the last id.
    let store = Store::connect(&db.target(), Durability::Full)
        .await
        .unwrap();
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    assert_eq!(index_state(&mut admin).await, (300, 300));
    let bob = store
        .find_user(&Username::parse("bob").unwrap())
        .await
        .unwrap()
        .expect("bob")
        .id;
    let hits = store
        .search(bob, &["deploy".to_string()], None, 500)
        .await
        .unwrap();
    assert_eq!(hits.len(), 100);
    store.close().await;
}

/// A batch's idempotency lookup probes `messages_key` once per send. Before the fix, the plan
/// PostgreSQL cached for `chatd_store_sends` on a young table (whose statistics still
/// described an empty one) joined the batch to a sequential scan of `messages`: every commit
/// read the whole table, and at 5,000/s the writer spent 9.7 ms of each 10 ms commit there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_sends_probes_the_key_index_and_never_reads_the_whole_table() {
    let Some(db) = fresh_pg_database().await else {
        return;
    };
    add_users(&db.target(), &["alice", "bob"]).await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    // A table a few thousand rows old, never analyzed: as in the first minutes of a cluster.
    tx.execute(
        "INSERT INTO messages (id, sender_id, recipient_id, body, sent_at, client_key) \
         SELECT n, 1, 2, 'chat ' || n, n, 'old' || n FROM generate_series(1, 3000) AS n; \
         UPDATE id_counter SET last_id = 3000, last_sent_at = 3000",
    )
    .await
    .unwrap();
    let version: i64 = sqlx::query("SELECT membership_version FROM id_counter")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .get(0);
    // More calls than PostgreSQL makes custom plans for (5) before it may keep a generic one;
    // each batch retries one key already stored.
    let mut stored = 0;
    for call in 0..8i64 {
        let keys: Vec<String> = (0..10)
            .map(|i| match i {
                0 => format!("old{}", call + 1),
                _ => format!("new-{call}-{i}"),
            })
            .collect();
        let n = keys.len();
        let rows = sqlx::query(
            "SELECT is_new FROM chatd_store_sends($1, 1, 'chatd_test', $2, $3, $4, $5, $6, $7, \
             $8, $9, $10, '{}', '{}', '{}', '{}')",
        )
        .bind(version)
        .bind(vec![1i64; n])
        .bind(vec![1i64; n])
        .bind(vec![Some(2i64); n])
        .bind(vec![None::<i64>; n])
        .bind(vec!["hello"; n])
        .bind(&keys)
        .bind(vec![false; n])
        .bind(vec!["bob"; n])
        .bind(vec![false; n])
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        let new: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(
            new.iter().filter(|&&b| !b).count(),
            1,
            "call {call}: {new:?}"
        );
        stored += new.iter().filter(|&&b| b).count();
    }
    assert_eq!(stored, 8 * 9);
    let scans: i64 = sqlx::query(
        "SELECT COALESCE(seq_scan, 0) FROM pg_stat_xact_user_tables WHERE relname = 'messages'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap()
    .get(0);
    assert_eq!(
        scans, 0,
        "sequential scans of messages by chatd_store_sends"
    );
    tx.rollback().await.unwrap();
}
