//! `chatd migrate` (issue 14): a SQLite database filled by a real server is copied to a fresh
//! PostgreSQL database, every row, id and cursor compared; a server on the copy resumes a
//! device right after what it acknowledged; the PostgreSQL database is copied back to a
//! fresh SQLite file and compared again, and a server on that copy finds messages by search
//! (its index rebuilt, even over a stale index file of another database). A non-empty
//! target, the same database twice, a target a server holds and a copy that fails half-way
//! (the target is left empty) are refused; the real `chatd` binary does one copy and one
//! refusal.
//!
//! PostgreSQL comes from the private cluster of `crate::pg`; without server binaries the
//! tests say so and pass (with `CI` set they fail).

use std::path::{Path, PathBuf};
use std::process::Command;

use chat_svc::client::Connection;
use chat_svc::protocol::{Message, Username};
use chat_svc::server::{Listeners, Server};
use chat_svc::store::{transfer, DbTarget, Durability, Store, TransferError};
use chat_svc::tls::Fingerprint;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection as _, PgConnection, Row, SqliteConnection};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common::{drain_backlog, options, take_messages, test_limits, TestServer, PASSWORD};
use crate::pg::{fresh_pg_database, PgDatabase};

const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

/// More direct messages than one copy chunk (1,000 rows), so messages cross a chunk boundary.
const BULK: usize = 1_200;

/// How a column is compared: written out here, apart from the copy's own list.
#[derive(Debug, Clone, Copy)]
enum Col {
    Int,
    Flag,
    Text,
    Blob,
}

use Col::{Blob, Flag, Int, Text};

/// Every table the copy must carry, with every column.
const SCHEMA: &[(&str, &[(&str, Col)])] = &[
    (
        "users",
        &[
            ("id", Int),
            ("name", Text),
            ("password_hash", Text),
            ("disabled", Flag),
            ("deleted", Flag),
            ("acked_upto", Int),
            ("created_at", Int),
        ],
    ),
    (
        "devices",
        &[
            ("id", Int),
            ("user_id", Int),
            ("token_hash", Blob),
            ("name", Text),
            ("cursor", Int),
            ("created_at", Int),
            ("last_seen_at", Int),
            ("irc_name", Text),
        ],
    ),
    (
        "rooms",
        &[
            ("id", Int),
            ("name", Text),
            ("created_at", Int),
            ("owner_id", Int),
            ("private", Flag),
            ("deleted", Flag),
        ],
    ),
    (
        "messages",
        &[
            ("id", Int),
            ("sender_id", Int),
            ("sender_device_id", Int),
            ("recipient_id", Int),
            ("room_id", Int),
            ("body", Text),
            ("sent_at", Int),
            ("client_key", Text),
            ("kind", Text),
            ("member_id", Int),
            ("action", Flag),
        ],
    ),
    (
        "room_spans",
        &[
            ("room_id", Int),
            ("user_id", Int),
            ("joined_id", Int),
            ("left_id", Int),
        ],
    ),
    (
        "read_markers",
        &[("user_id", Int), ("conversation", Text), ("upto", Int)],
    ),
    ("meta", &[("key", Text), ("value", Int)]),
    ("server_secrets", &[("name", Text), ("value", Blob)]),
    (
        "login_proof_failures",
        &[("nonce", Blob), ("failures", Int), ("expires_at", Int)],
    ),
];

/// Tables whose ids an allocator hands out.
const ALLOCATED: &[&str] = &["users", "devices", "rooms"];

type Rows = Vec<Vec<Option<String>>>;

/// Every row of every table, each value as text (flags as `true`/`false`, blobs in hex),
/// rows sorted.
#[derive(Debug, PartialEq, Eq)]
struct Dump(Vec<(&'static str, Rows)>);

impl Dump {
    fn rows(&self, table: &str) -> &Rows {
        &self.0.iter().find(|(t, _)| *t == table).unwrap().1
    }

    fn count(&self, table: &str) -> u64 {
        self.rows(table).len() as u64
    }

    /// The rows of `table` whose column `column` is `value`.
    fn with<'a>(
        &'a self,
        table: &str,
        column: &str,
        value: &'a str,
    ) -> impl Iterator<Item = &'a Vec<Option<String>>> + 'a {
        let at = column_index(table, column);
        self.rows(table)
            .iter()
            .filter(move |r| r[at].as_deref() == Some(value))
    }

    fn max_message_id(&self) -> i64 {
        self.rows("messages")
            .iter()
            .map(|r| r[0].as_deref().unwrap().parse::<i64>().unwrap())
            .max()
            .unwrap_or(0)
    }
}

fn column_index(table: &str, column: &str) -> usize {
    let (_, columns) = SCHEMA.iter().find(|(t, _)| *t == table).unwrap();
    columns.iter().position(|(c, _)| *c == column).unwrap()
}

fn select_sql(table: &str, columns: &[(&str, Col)], postgres: bool) -> String {
    let exprs: Vec<String> = columns
        .iter()
        .map(|(c, kind)| match (kind, postgres) {
            (Int, false) => format!("CAST({c} AS TEXT)"),
            (Int, true) => format!("{c}::text"),
            (Flag, false) => format!(
                "CASE {c} WHEN 0 THEN 'false' WHEN 1 THEN 'true' ELSE 'not a flag: ' || {c} END"
            ),
            (Flag, true) => format!("{c}::text"),
            (Text, _) => c.to_string(),
            (Blob, false) => format!("lower(hex({c}))"),
            (Blob, true) => format!("encode({c}, 'hex')"),
        })
        .collect();
    format!("SELECT {} FROM {table}", exprs.join(", "))
}

/// Sorts rows: text keys sort differently on the two backends.
fn sorted(mut rows: Rows) -> Rows {
    rows.sort();
    rows
}

async fn sqlite_conn(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path).read_only(true))
        .await
        .unwrap()
}

async fn dump_sqlite(path: &Path) -> Dump {
    let mut conn = sqlite_conn(path).await;
    let mut tables = Vec::new();
    for (table, columns) in SCHEMA {
        let rows = sqlx::query(&select_sql(table, columns, false))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let rows = rows
            .iter()
            .map(|r| (0..columns.len()).map(|i| r.get(i)).collect())
            .collect();
        tables.push((*table, sorted(rows)));
    }
    conn.close().await.unwrap();
    Dump(tables)
}

async fn dump_pg(url: &str) -> Dump {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let mut tables = Vec::new();
    for (table, columns) in SCHEMA {
        let rows = sqlx::query(&select_sql(table, columns, true))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let rows = rows
            .iter()
            .map(|r| {
                (0..columns.len())
                    .map(|i| {
                        let value: Option<String> = r.get(i);
                        match (*table, columns[i].0) {
                            ("messages", "body") => value.map(decode_pg_body),
                            _ => value,
                        }
                    })
                    .collect()
            })
            .collect();
        tables.push((*table, sorted(rows)));
    }
    conn.close().await.unwrap();
    Dump(tables)
}

/// A body as PostgreSQL stores it, decoded (the format of `src/store/pg/body.rs`: a body
/// with U+0000, or one that begins with the marker, is stored as the marker and the body
/// with `\\` for `\` and `\0` for U+0000).
fn decode_pg_body(stored: String) -> String {
    let Some(escaped) = stored.strip_prefix("\u{1}nul:") else {
        return stored;
    };
    let mut out = String::new();
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('0') => out.push('\0'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// The highest id each allocated table's allocator has handed out.
async fn issued_sqlite(path: &Path) -> Vec<i64> {
    let mut conn = sqlite_conn(path).await;
    let mut issued = Vec::new();
    for table in ALLOCATED {
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = ?")
            .bind(table)
            .fetch_optional(&mut conn)
            .await
            .unwrap();
        issued.push(seq.unwrap_or(0));
    }
    conn.close().await.unwrap();
    issued
}

async fn issued_pg(url: &str) -> Vec<i64> {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let mut issued = Vec::new();
    for table in ALLOCATED {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT pg_sequence_last_value(pg_get_serial_sequence($1, 'id')::regclass)",
        )
        .bind(table)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        issued.push(seq.unwrap_or(0));
    }
    conn.close().await.unwrap();
    issued
}

/// `(last_id, last_sent_at)` of PostgreSQL's id counter.
async fn id_counter(url: &str) -> (i64, i64) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let row = sqlx::query("SELECT last_id, last_sent_at FROM id_counter")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    (row.get(0), row.get(1))
}

/// A real server on any database, its key in `dir` (the same key as the server that used
/// `dir` before, so clients keep their pin).
struct Served {
    addr: std::net::SocketAddr,
    pin: Fingerprint,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Served {
    async fn start(dir: &Path, db: DbTarget) -> Served {
        let mut options = options(dir, test_limits());
        options.db = db;
        let server = Server::start(&options).await.expect("the server starts");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pin = server.fingerprint();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run_with(Listeners::native(listener), shutdown.clone()));
        Served {
            addr,
            pin,
            shutdown,
            task: Some(task),
        }
    }

    async fn connect(&self) -> Connection {
        Connection::connect(&self.addr.into(), self.pin)
            .await
            .unwrap()
    }

    async fn resume(&self, token: &chat_svc::protocol::Secret) -> Connection {
        let conn = self.connect().await;
        conn.client.auth(token).await.unwrap();
        conn
    }

    async fn login(&self, user: &str) -> Connection {
        let conn = self.connect().await;
        conn.client
            .login(
                user,
                &chat_svc::protocol::Secret::new(PASSWORD),
                "after the move",
            )
            .await
            .unwrap();
        conn
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What a populated database leaves for the checks after the move.
struct Populated {
    /// bob's first device: acknowledged everything up to `acked`.
    bob_token: chat_svc::protocol::Secret,
    acked: i64,
    /// What that device's backlog was on the original server (after `acked`).
    expected_backlog: Vec<Message>,
    /// The server's directory (its key, its database `chatd.db`).
    dir: tempfile::TempDir,
}

/// Fills a SQLite database through a real server: three accounts (one disabled at the
/// end), two devices each for alice and bob with acknowledged cursors (and one of carol's
/// logged out again), a public room with joins and a leave, a private room, a deleted room,
/// direct and room messages (an action among them), read markers, and more direct messages
/// than one copy chunk.
async fn populate() -> Populated {
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob", "carol"]).await;
    let (a1, _) = server.login("alice").await;
    let (a2, _) = server.login("alice").await;
    let (mut b1, bob_token) = server.login("bob").await;
    let (mut b2, _) = server.login("bob").await;
    let (c1, _) = server.login("carol").await;
    // The newest device logs out: the devices' allocator is past the highest id left.
    let (c2, _) = server.login("carol").await;
    c2.client.logout().await.unwrap();
    drop(c2);

    a1.client.room_create("#ops", false).await.unwrap();
    b1.client.room_join("#ops").await.unwrap();
    c1.client.room_join("#ops").await.unwrap();
    a1.client
        .send("#ops", "deploy at noon", "r1")
        .await
        .unwrap();
    c1.client.room_leave("#ops").await.unwrap();
    a1.client.room_create("#secret", true).await.unwrap();
    a1.client
        .send("#secret", "only for me", "s1")
        .await
        .unwrap();
    a1.client.room_create("#old", false).await.unwrap();
    a1.client.room_del("#old").await.unwrap();
    let first = a1.client.send("bob", "hi bob", "d1").await.unwrap();
    b1.client.send("alice", "hi alice", "d2").await.unwrap();
    a2.client.send_action("bob", "waves", "d3").await.unwrap();
    // More than one chunk of the copy, sent concurrently (the writer batches them).
    for batch in 0..BULK / 200 {
        let sends = (0..200).map(|i| {
            let client = a2.client.clone();
            async move {
                let n = batch * 200 + i;
                client
                    .send("bob", &format!("bulk {n}"), &format!("bulk-{n}"))
                    .await
                    .unwrap()
            }
        });
        futures::future::join_all(sends).await;
    }
    let last_before = a1
        .client
        .send("bob", "read up to here", "d4")
        .await
        .unwrap();

    // bob's first device has everything up to here and acknowledges it; the second only
    // the first direct message.
    let seen = drain_backlog(&mut b1).await;
    assert_eq!(seen.last().unwrap().id, last_before.id);
    assert_eq!(b1.client.ack(last_before.id).await.unwrap(), last_before.id);
    drain_backlog(&mut b2).await;
    assert_eq!(b2.client.ack(first.id).await.unwrap(), first.id);

    // What bob's first device has not seen: the very next id is for bob.
    let next = a1.client.send("bob", "after the cut", "d5").await.unwrap();
    assert_eq!(next.id, last_before.id + 1);
    b2.client.send("#ops", "room reply", "r2").await.unwrap();
    c1.client.send("bob", "from carol", "d6").await.unwrap();
    // A body PostgreSQL's text cannot hold as it is (U+0000), and one that looks escaped.
    c1.client
        .send("bob", "\0nul\0 and \\0", "d7")
        .await
        .unwrap();
    c1.client
        .send("bob", "\u{1}nul:not escaped", "d8")
        .await
        .unwrap();
    take_messages(&mut b1.events, 5).await;

    b1.client.read("alice", Some(first.id)).await.unwrap();
    b1.client.read("#ops", None).await.unwrap();
    a1.client.read("bob", None).await.unwrap();
    c1.client.read("bob", None).await.unwrap();
    for conn in [a1, a2, b1, b2, c1] {
        drop(conn);
    }

    // The oracle: bob's first device resumed on the original server.
    let mut again = server.resume(&bob_token).await.unwrap();
    let expected_backlog = drain_backlog(&mut again).await;
    assert_eq!(expected_backlog.len(), 5, "{expected_backlog:?}");
    assert_eq!(expected_backlog[0].id, last_before.id + 1);
    drop(again);

    let admin = server.admin().await;
    admin
        .set_disabled(&Username::parse("carol").unwrap(), true)
        .await
        .unwrap();
    admin.close().await;
    let dir = server.stop().await;
    Populated {
        bob_token,
        acked: last_before.id,
        expected_backlog,
        dir,
    }
}

/// Checks that every table arrived as the report says.
fn check_report(report: &chat_svc::store::TransferReport, source: &Dump) {
    let tables: Vec<&str> = report.tables.iter().map(|t| t.table).collect();
    let expected: Vec<&str> = SCHEMA.iter().map(|(t, _)| *t).collect();
    assert_eq!(tables, expected);
    for t in &report.tables {
        assert_eq!(t.source, source.count(t.table), "{}", t.table);
        assert_eq!(t.target, t.source, "{}", t.table);
    }
    assert_eq!(report.max_message_id, source.max_message_id());
    assert_eq!(report.source_in_use, None);
}

fn sqlite(path: &Path) -> DbTarget {
    DbTarget::Sqlite(path.to_path_buf())
}

/// The test: every row, id and cursor arrives on PostgreSQL; a device that had read
/// up to N resumes at N+1 there; back to SQLite, everything arrives again and search works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_populated_sqlite_database_moves_to_postgresql_and_back() {
    let Some(pg) = fresh_pg_database().await else {
        return;
    };
    let populated = populate().await;
    let original = populated.dir.path().join("chatd.db");
    let before = dump_sqlite(&original).await;
    // What the test relies on is there.
    assert_eq!(before.count("users"), 3);
    assert_eq!(before.count("devices"), 5);
    assert_eq!(before.count("rooms"), 3);
    assert!(before.count("messages") > BULK as u64);
    assert!(before.count("room_spans") >= 3);
    assert!(before.count("read_markers") >= 4);
    assert_eq!(before.count("server_secrets"), 1);
    assert_eq!(before.with("users", "disabled", "true").count(), 1);
    assert_eq!(before.with("rooms", "private", "true").count(), 1);
    assert_eq!(before.with("rooms", "deleted", "true").count(), 1);
    assert_eq!(before.with("messages", "action", "true").count(), 1);
    let acked = populated.acked.to_string();
    assert_eq!(before.with("devices", "cursor", &acked).count(), 1);

    let device_ids = before
        .rows("devices")
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse::<i64>().unwrap());
    assert!(issued_sqlite(&original).await[1] > device_ids.max().unwrap());

    // SQLite → PostgreSQL: every row, value and id.
    let report = transfer(&sqlite(&original), &pg.target()).await.unwrap();
    check_report(&report, &before);
    assert_eq!(dump_pg(&pg.url).await, before);
    assert_eq!(issued_pg(&pg.url).await, issued_sqlite(&original).await);
    let max_sent_at = before
        .rows("messages")
        .iter()
        .map(|r| {
            r[column_index("messages", "sent_at")]
                .as_deref()
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .max()
        .unwrap();
    assert_eq!(
        id_counter(&pg.url).await,
        (before.max_message_id(), max_sent_at)
    );
    let store = Store::connect(&pg.target(), Durability::Full)
        .await
        .unwrap();
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
    store.close().await;

    // A server on the copy: bob's device resumes right after what it acknowledged.
    let served = Served::start(populated.dir.path(), pg.target()).await;
    let mut bob = served.resume(&populated.bob_token).await;
    let backlog = drain_backlog(&mut bob).await;
    assert_eq!(backlog, populated.expected_backlog);
    assert_eq!(backlog[0].id, populated.acked + 1);
    // The accounts' password hashes came along (a new login works), and new ids follow the
    // copied ones: the next message, the next device.
    let alice = served.login("alice").await;
    let sent = alice
        .client
        .send("bob", "on postgres now", "pg1")
        .await
        .unwrap();
    assert_eq!(sent.id, before.max_message_id() + 1);
    let live = take_messages(&mut bob.events, 1).await;
    assert_eq!(live[0].id, sent.id);
    let hits = bob.client.search("noon", None, None).await.unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    drop((alice, bob));
    served.stop().await;
    let on_pg = dump_pg(&pg.url).await;
    assert_eq!(on_pg.count("devices"), before.count("devices") + 1);
    let new_device = on_pg
        .rows("devices")
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse::<i64>().unwrap())
        .max()
        .unwrap();
    assert_eq!(new_device, issued_sqlite(&original).await[1] + 1);

    // PostgreSQL → a fresh SQLite file: everything again, and the allocators agree.
    let back_dir = tempfile::tempdir().unwrap();
    let back = back_dir.path().join("chatd.db");
    // A search index left by another database of that name, indexed as far as this one goes
    // but with other text (an index ahead of its database is rebuilt anyway): the copy must
    // discard it.
    let stale_dir = tempfile::tempdir().unwrap();
    let stale = sqlite_with_messages(stale_dir.path(), sent.id as usize).await;
    let mut stale_index = stale.into_os_string();
    stale_index.push(".search.db");
    std::fs::copy(&stale_index, back_dir.path().join("chatd.db.search.db")).unwrap();
    let report = transfer(&pg.target(), &sqlite(&back)).await.unwrap();
    check_report(&report, &on_pg);
    assert_eq!(dump_sqlite(&back).await, on_pg);
    assert_eq!(issued_sqlite(&back).await, issued_pg(&pg.url).await);

    // A server on that copy rebuilds the search index and carries on the ids.
    let served = Served::start(back_dir.path(), sqlite(&back)).await;
    let mut bob = served.resume(&populated.bob_token).await;
    let backlog = drain_backlog(&mut bob).await;
    assert_eq!(backlog.len(), populated.expected_backlog.len() + 1);
    assert_eq!(backlog[0].id, populated.acked + 1);
    let hits = bob.client.search("noon", None, None).await.unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    let hits = bob.client.search("postgres", None, None).await.unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    let alice = served.login("alice").await;
    let sent2 = alice
        .client
        .send("bob", "back on sqlite", "sq1")
        .await
        .unwrap();
    assert_eq!(sent2.id, sent.id + 1);
    drop((alice, bob));
    served.stop().await;
}

/// A small SQLite database with two accounts and three messages, made through the store.
async fn small_sqlite(dir: &Path) -> PathBuf {
    sqlite_with_messages(dir, 3).await
}

/// A SQLite database `small.db` in `dir` with accounts alice and bob and `n` messages from
/// alice to bob, made through the store (its writer, and so its search indexer).
async fn sqlite_with_messages(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("small.db");
    let store = Store::open(&path, Durability::Full).await.unwrap();
    for name in ["alice", "bob"] {
        store
            .create_user(
                &Username::parse(name).unwrap(),
                "$argon2id$not-checked-here",
            )
            .await
            .unwrap();
    }
    let (writer, task) = store.start_writer(Box::new(|_| {})).await.unwrap();
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
    for n in 0..n {
        writer
            .send(chat_svc::store::NewMessage {
                sender_id: alice.id,
                sender_name: "alice".into(),
                sender_device_id: chat_svc::ids::DeviceId(0),
                target: chat_svc::store::Target::User(bob.id, bob.name.clone()),
                body: format!("message {n}"),
                key: format!("k{n}"),
                action: false,
            })
            .await
            .unwrap();
    }
    drop(writer);
    task.await.unwrap();
    store.close().await;
    path
}

async fn pg_user_count(db: &PgDatabase) -> i64 {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

/// A target with an account is refused and left as it was; so is the same database as
/// source and target; a copy that fails half-way leaves the target empty; a copy between
/// two PostgreSQL databases carries everything too.
#[tokio::test]
async fn a_non_empty_target_the_same_database_and_a_failed_copy_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = small_sqlite(dir.path()).await;

    // SQLite → SQLite that already has an account.
    let other = small_sqlite(&dir.path().join("other")).await;
    let err = transfer(&sqlite(&source), &sqlite(&other))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::TargetNotEmpty {
                table: "users",
                rows: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(dump_sqlite(&other).await.count("messages"), 3);
    let mut index = other.clone().into_os_string();
    index.push(".search.db");
    let mut conn = sqlite_conn(Path::new(&index)).await;
    let indexed: i64 = sqlx::query_scalar("SELECT value FROM state WHERE key = 'indexed_upto'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!(indexed, 3, "the refused target's search index was touched");

    // The same file, also under another name.
    for same in [source.clone(), dir.path().join(".").join("small.db")] {
        let err = transfer(&sqlite(&source), &sqlite(&same))
            .await
            .unwrap_err();
        assert!(matches!(err, TransferError::SameDatabase), "{err:?}");
    }
    // A source that does not exist is not created.
    let missing = dir.path().join("missing.db");
    let err = transfer(&sqlite(&missing), &sqlite(&dir.path().join("x.db")))
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::NoSource(_)), "{err:?}");
    assert!(!missing.exists());

    // A source a server still holds is copied (one snapshot), and the report says so; a
    // target a server holds is refused.
    let server = TestServer::start().await;
    server.add_users(&["alice"]).await;
    let copy = dir.path().join("live-copy.db");
    let report = transfer(
        &sqlite(
            server
                .db()
                .sqlite_path()
                .expect("the it target runs on SQLite"),
        ),
        &sqlite(&copy),
    )
    .await
    .unwrap();
    assert_eq!(
        report.source_in_use.and_then(|h| h.pid),
        Some(std::process::id())
    );
    assert_eq!(dump_sqlite(&copy).await.count("users"), 1);
    let err = transfer(
        &sqlite(&source),
        &sqlite(
            server
                .db()
                .sqlite_path()
                .expect("the it target runs on SQLite"),
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TransferError::Lock(_)), "{err:?}");
    server.stop().await;

    let Some(pg) = fresh_pg_database().await else {
        return;
    };
    // PostgreSQL with an account.
    let store = Store::connect(&pg.target(), Durability::Full)
        .await
        .unwrap();
    store
        .create_user(&Username::parse("zed").unwrap(), "$argon2id$x")
        .await
        .unwrap();
    store.close().await;
    let err = transfer(&sqlite(&source), &pg.target()).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::TargetNotEmpty {
                table: "users",
                rows: 1
            }
        ),
        "{err:?}"
    );
    assert_eq!(pg_user_count(&pg).await, 1);
    let err = transfer(&pg.target(), &pg.target()).await.unwrap_err();
    assert!(matches!(err, TransferError::SameDatabase), "{err:?}");

    // A copy that fails on the last message (a flag that is not 0 or 1) leaves nothing
    // behind: not even the accounts copied before it.
    let bad = small_sqlite(&dir.path().join("bad")).await;
    let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&bad))
        .await
        .unwrap();
    sqlx::query("UPDATE messages SET action = 2 WHERE id = (SELECT MAX(id) FROM messages)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let Some(empty) = fresh_pg_database().await else {
        return;
    };
    let err = transfer(&sqlite(&bad), &empty.target()).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::BadFlag {
                table: "messages",
                column: "action",
                value: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(pg_user_count(&empty).await, 0);
    // Once the source is sound, the same target takes the copy.
    let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&bad))
        .await
        .unwrap();
    sqlx::query("UPDATE messages SET action = 0")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let report = transfer(&sqlite(&bad), &empty.target()).await.unwrap();
    assert_eq!(report.max_message_id, 3);
    assert_eq!(pg_user_count(&empty).await, 2);
    // And from there to another PostgreSQL database of the same cluster.
    let Some(second) = fresh_pg_database().await else {
        return;
    };
    transfer(&empty.target(), &second.target()).await.unwrap();
    assert_eq!(dump_pg(&second.url).await, dump_pg(&empty.url).await);
    assert_eq!(issued_pg(&second.url).await, issued_pg(&empty.url).await);
}

/// The real binary: one copy with its count table, then the refusal as one line; a bad URL
/// in one line without its password.
#[tokio::test]
async fn the_chatd_binary_migrates_and_refuses_a_second_time() {
    let Some(pg) = fresh_pg_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = small_sqlite(dir.path()).await;
    let run = || {
        let out = Command::new(CHATD)
            .arg("migrate")
            .arg("--from")
            .arg(&source)
            .arg("--to")
            .arg(&pg.url)
            .env_remove("RUST_LOG")
            .env_remove("CHATD_CONFIG")
            .env_remove("CHATD_DB")
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (status, stdout, stderr) = run();
    assert!(status.success(), "{stdout}{stderr}");
    assert_eq!(stderr, "");
    let counts: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(counts.contains(&vec!["users", "2", "2"]), "{stdout}");
    assert!(counts.contains(&vec!["messages", "3", "3"]), "{stdout}");
    assert!(
        stdout.ends_with("newest message id 3 on both; every count verified\n"),
        "{stdout}"
    );
    let password = url::Url::parse(&pg.url)
        .unwrap()
        .password()
        .unwrap()
        .to_owned();
    assert!(!stdout.contains(&password), "{stdout}");

    let (status, stdout, stderr) = run();
    assert!(!status.success());
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("chatd: error: cannot migrate sqlite:")
            && stderr.contains("the target database is not empty (2 row(s) in users)"),
        "{stderr}"
    );
    assert!(!stderr.contains(&password), "{stderr}");
    // A bad URL is refused in one line that does not show its password.
    let bad = Command::new(CHATD)
        .args(["migrate", "--from", "old.db", "--to"])
        .arg(format!("postgres://chatd:{password}@127.0.0.1:notaport/x"))
        .env_remove("RUST_LOG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(!bad.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("chatd: error: invalid value for --to: "),
        "{stderr}"
    );
    assert!(!stderr.contains(&password), "{stderr}");
    // `chatd --help` names the command.
    let help = Command::new(CHATD).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("migrate ")),
        "{help}"
    );
}
