//! Crash consistency of the real `chatd` binary: concurrent senders and two-device recipients
//! keep working while the server is killed with SIGKILL at random moments and restarted on the
//! same directory. Whatever the timing, every acknowledged send is stored exactly once, every
//! device receives every message for its user (exactly once and in id order after dedupe by
//! id), no device is pushed a message it had acknowledged, and the database is sound.
//!
//! Every fifth restart is an orderly stop (SIGTERM) instead, under the same load; the server
//! must exit 0 and the same invariants hold.
//!
//! A second run has the server abort itself (fault injection, `CHATD_FAULT_ABORT_IN_COMMIT`)
//! in the middle of group commits, with rows inserted and the transaction open, or just after
//! a commit and before any sender was answered: the points a power cut hurts most.
//!
//! The kill timing is random; the invariants are not. Senders retry a failed send with the same
//! key until it is acknowledged, so at the end the set of stored messages is exactly the set of
//! keys, and the checks are exact.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use chat_svc::client::{ClientError, Connection, Event, ServerAddr};
use chat_svc::protocol::{ErrorCode, Secret};
use chat_svc::store::{Durability, Store};
use chat_svc::tls::Fingerprint;
use rand::Rng;
use tokio::sync::watch;

use crate::common::PASSWORD;

const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

/// SIGKILLs per run: at least [`MIN_KILLS`] (the issue asks for 20), and more, up to
/// [`MAX_KILLS`], while the run is younger than [`KILL_BUDGET`] (a fast machine kills more).
const MIN_KILLS: usize = 20;
const MAX_KILLS: usize = 30;
const KILL_BUDGET: Duration = Duration::from_secs(12);
/// Each kill comes this long (uniformly random, in ms) after the server said it listens.
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 50..=400;
/// Accounts that send; each runs [`TASKS_PER_SENDER`] sending connections.
const SENDERS: [&str; 3] = ["s1", "s2", "s3"];
const TASKS_PER_SENDER: usize = 2;
/// Accounts that receive, each on [`DEVICES_PER_RECIPIENT`] devices.
const RECIPIENTS: [&str; 2] = ["r1", "r2"];
const DEVICES_PER_RECIPIENT: usize = 2;
/// Upper bound on sends per sending task (keeps the final checks cheap on a fast machine).
const MAX_SENDS_PER_TASK: usize = 4000;
/// Longest time any client may go without reaching a server before the test gives up.
const RECONNECT_LIMIT: Duration = Duration::from_secs(30);
/// Environment variables that would change what `chatd` does; removed for the child.
const SCRUBBED_ENV: &[&str] = &[
    "RUST_LOG",
    "CHATD_CONFIG",
    "CHATD_DB",
    "CHATD_CERT_DIR",
    "CHATD_LISTEN",
    "CHATD_DURABILITY",
    "CHATD_TLS_CERT",
    "CHATD_TLS_KEY",
];

/// Aborts in the fault-injection run: at least this many, more while the budget lasts.
const MIN_ABORTS: usize = 10;
const MAX_ABORTS: usize = 20;
/// Chance (percent) that a group commit aborts the server in the fault-injection run.
const ABORT_PERCENT: &str = "2";

/// How the server is brought down while the clients work.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Crash {
    /// SIGKILL at random moments (and every fifth time SIGTERM).
    Signals,
    /// The server aborts itself inside group commits.
    Faults,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    crash_run(Crash::Signals).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborts_in_the_middle_of_group_commits_lose_nothing_acknowledged() {
    if crate::common::sqlite_only("the fault injection is in the SQLite writer") {
        return;
    }
    crash_run(Crash::Faults).await;
}

async fn crash_run(crash: Crash) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    for user in SENDERS.iter().chain(RECIPIENTS.iter()) {
        add_user(dir.path(), user);
    }
    let faults: &[(&str, &str)] = match crash {
        Crash::Signals => &[],
        Crash::Faults => &[("CHATD_FAULT_ABORT_IN_COMMIT", ABORT_PERCENT)],
    };
    let server = Chatd::start(dir.path(), &[]);
    let pin = server.pin;
    let (addr_tx, addr_rx) = watch::channel(Some(ServerAddr::from(server.addr)));
    let net = Net { addr: addr_rx, pin };

    // Every device is created (by password login) before the first send, so each one's
    // cursor starts below every message of the run.
    let mut sender_tokens = Vec::new();
    for user in SENDERS {
        for task in 0..TASKS_PER_SENDER {
            let (_, token) = net.login(user, &format!("send-{task}")).await;
            sender_tokens.push((user, task, token));
        }
    }
    let mut device_tokens = Vec::new();
    for user in RECIPIENTS {
        for dev in 0..DEVICES_PER_RECIPIENT {
            let (_, token) = net.login(user, &format!("recv-{dev}")).await;
            device_tokens.push((user, dev, token));
        }
    }

    let stop_sending = Arc::new(AtomicBool::new(false));
    let stop_receiving = Arc::new(AtomicBool::new(false));
    let mut devices = Vec::new();
    let mut device_tasks = Vec::new();
    for (user, dev, token) in device_tokens {
        let log = Arc::new(Mutex::new(DeviceLog::default()));
        devices.push((user, dev, Arc::clone(&log)));
        device_tasks.push(tokio::spawn(receive(
            net.clone(),
            user,
            token,
            log,
            Arc::clone(&stop_receiving),
        )));
    }
    let mut sender_tasks = Vec::new();
    for (user, task, token) in sender_tokens {
        sender_tasks.push(tokio::spawn(send(
            net.clone(),
            user,
            task,
            token,
            Arc::clone(&stop_sending),
        )));
    }

    // The killer runs on a blocking thread: spawn, wait, SIGKILL, reap, restart.
    let dir_path = dir.path().to_path_buf();
    let killer = tokio::task::spawn_blocking(move || {
        let mut server = server;
        let mut rng = rand::thread_rng();
        let (mut kills, mut stops) = (0, 0);
        if crash == Crash::Faults {
            // The devices exist; from now on the server aborts itself now and then.
            server.kill();
            server = Chatd::start(&dir_path, faults);
            addr_tx.send_replace(Some(ServerAddr::from(server.addr)));
            while kills < MIN_ABORTS || (kills < MAX_ABORTS && started.elapsed() < KILL_BUDGET) {
                server.wait_for_abort();
                kills += 1;
                server = Chatd::start(&dir_path, faults);
                addr_tx.send_replace(Some(ServerAddr::from(server.addr)));
            }
            // The last server runs without faults, for the checks.
            server.kill();
            server = Chatd::start(&dir_path, &[]);
            addr_tx.send_replace(Some(ServerAddr::from(server.addr)));
        }
        while crash == Crash::Signals
            && (kills < MIN_KILLS || (kills < MAX_KILLS && started.elapsed() < KILL_BUDGET))
        {
            std::thread::sleep(Duration::from_millis(rng.gen_range(KILL_DELAY_MS)));
            // Every fifth restart is an orderly stop (SIGTERM) under the same load: it must
            // exit 0 and lose nothing either.
            if (kills + stops) % 5 == 4 {
                server.terminate();
                stops += 1;
            } else {
                server.kill();
                kills += 1;
            }
            server = Chatd::start(&dir_path, &[]);
            assert_eq!(
                server.pin, pin,
                "the key (and so the pin) survives a restart"
            );
            addr_tx.send_replace(Some(ServerAddr::from(server.addr)));
        }
        // Some traffic against the last server before the senders wind down.
        std::thread::sleep(Duration::from_millis(300));
        (server, addr_tx, kills, stops)
    });
    let (mut server, _addr_tx, kills, stops) = killer.await.unwrap();
    let killing_done = started.elapsed();
    stop_sending.store(true, Ordering::SeqCst);

    let mut sent: Vec<Sent> = Vec::new();
    for task in sender_tasks {
        sent.extend(task.await.unwrap());
    }
    let sending_done = started.elapsed();

    // Every key was acknowledged exactly once by the loop in `send`; each with one id.
    let mut by_id: BTreeMap<i64, &Sent> = BTreeMap::new();
    for s in &sent {
        if let Some(other) = by_id.insert(s.id, s) {
            panic!(
                "keys {:?} and {:?} were both given id {}",
                other.key, s.key, s.id
            );
        }
        assert!(
            !(s.duplicate && s.attempts == 0),
            "a first attempt with key {:?} was reported as a duplicate",
            s.key
        );
    }
    let expected: HashMap<&str, BTreeSet<i64>> = RECIPIENTS
        .iter()
        .map(|r| {
            let ids = sent.iter().filter(|s| s.to == *r).map(|s| s.id).collect();
            (*r, ids)
        })
        .collect();

    // Wait until every device has everything for its user (the server stays up now).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let complete = devices.iter().all(|(user, _, log)| {
            let log = log.lock().unwrap();
            expected[user].iter().all(|id| log.seen.contains_key(id))
        });
        if complete || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_receiving.store(true, Ordering::SeqCst);
    for task in device_tasks {
        task.await.unwrap();
    }

    // History agrees: each acknowledged message is stored once, with its body, between the
    // right two people.
    let mut in_history: BTreeMap<i64, (String, String, String)> = BTreeMap::new();
    for recipient in RECIPIENTS {
        // A fresh device that never subscribes: history does not touch cursors.
        let (reader, _) = net.login(recipient, "history").await;
        for sender in SENDERS {
            let mut before = None;
            loop {
                let (page, more) = reader
                    .client
                    .history(sender, before, Some(500))
                    .await
                    .unwrap();
                for m in &page {
                    let row = (m.from.clone(), m.to.clone(), m.body.clone());
                    assert!(
                        in_history.insert(m.id, row).is_none(),
                        "message {} appears twice in history",
                        m.id
                    );
                }
                match (more, page.first()) {
                    (true, Some(first)) => before = Some(first.id),
                    _ => break,
                }
            }
        }
    }
    for s in &sent {
        let got = in_history.get(&s.id).unwrap_or_else(|| {
            panic!(
                "acknowledged message {} (key {:?}) is not in history",
                s.id, s.key
            )
        });
        assert_eq!(
            (got.0.as_str(), got.1.as_str(), got.2.as_str()),
            (s.from, s.to, s.body.as_str()),
            "message {}",
            s.id
        );
    }
    assert_eq!(
        in_history.len(),
        sent.len(),
        "history holds unacknowledged messages"
    );

    // Delivery: per device, everything for its user, nothing else, in order, and nothing it
    // had acknowledged was pushed again.
    let mut deliveries = 0;
    let mut acked_redeliveries_allowed = 0;
    for (user, dev, log) in &devices {
        let log = log.lock().unwrap();
        assert!(
            log.violations.is_empty(),
            "{user} device {dev}: {:#?}",
            log.violations
        );
        let seen: BTreeSet<i64> = log.seen.keys().copied().collect();
        let missing: Vec<_> = expected[user].difference(&seen).collect();
        let extra: Vec<_> = seen.difference(&expected[user]).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{user} device {dev}: missing {missing:?}, unexpected {extra:?}"
        );
        for (id, (from, body)) in &log.seen {
            let s = by_id[id];
            assert_eq!((from.as_str(), body.as_str()), (s.from, s.body.as_str()));
        }
        deliveries += log.deliveries;
        acked_redeliveries_allowed += log.deliveries - log.seen.len();
    }

    // A clean stop, then the database itself: one row per key, and sound.
    server.terminate();
    let store = Store::connect(&crate::common::dir_db(dir.path()).target, Durability::Full)
        .await
        .unwrap();
    assert_eq!(store.message_count().await.unwrap(), sent.len() as i64);
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
    store.close().await;

    let retried = sent.iter().filter(|s| s.attempts > 0).count();
    let duplicates = sent.iter().filter(|s| s.duplicate).count();
    eprintln!(
        "crash ({crash:?}): {kills} kills or aborts and {stops} orderly stops, {} messages acknowledged ({retried} after a retry, {duplicates} \
         of those already stored before the kill), {deliveries} pushes to {} devices \
         ({acked_redeliveries_allowed} unacknowledged re-deliveries), kills done at {:.1?}, \
         sending done at {:.1?}, total {:.1?}",
        sent.len(),
        devices.len(),
        killing_done,
        sending_done,
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Clients: connect (to wherever the server is now), send with retries, receive and ack.
// ---------------------------------------------------------------------------------------------

/// Where the server is now (a new port after each restart) and the pin (always the same).
#[derive(Clone)]
struct Net {
    addr: watch::Receiver<Option<ServerAddr>>,
    pin: Fingerprint,
}

impl Net {
    /// Connects and says hello, retrying (with the latest address) until a server answers.
    async fn connect(&self) -> Connection {
        let give_up = Instant::now() + RECONNECT_LIMIT;
        loop {
            let addr = self.addr.borrow().clone();
            if let Some(addr) = addr {
                let connect = Connection::connect(&addr, self.pin);
                if let Ok(Ok(conn)) = tokio::time::timeout(REPLY_LIMIT, connect).await {
                    return conn;
                }
            }
            assert!(Instant::now() < give_up, "no server reachable for 30 s");
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    /// Password login as a new device; returns the connection and the device's token.
    async fn login(&self, user: &str, device: &str) -> (Connection, Secret) {
        let conn = self.connect().await;
        let info = conn
            .client
            .login(user, &Secret::new(PASSWORD), device)
            .await
            .unwrap_or_else(|e| panic!("login {user}: {e}"));
        (conn, info.token)
    }

    /// An authenticated connection for an existing device, retrying across restarts.
    async fn resume(&self, token: &Secret) -> Connection {
        loop {
            let conn = self.connect().await;
            match bounded(conn.client.auth(token)).await {
                Ok(_) => return conn,
                Err(e) => assert_transient(&e, "auth"),
            }
        }
    }
}

/// How long the crash test waits for any one reply. A live server answers in milliseconds;
/// this only bounds requests written to a connection that died in the meantime.
const REPLY_LIMIT: Duration = Duration::from_secs(3);

/// `request` with [`REPLY_LIMIT`]; running out counts as a transient failure (retry on a new
/// connection, with the same key for a send).
async fn bounded<T>(
    request: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(REPLY_LIMIT, request)
        .await
        .unwrap_or(Err(ClientError::Timeout(
            "waiting for a reply in the crash test",
        )))
}

/// Panics unless `e` is what a killed server causes (closed connection, timeout, refused).
fn assert_transient(e: &ClientError, what: &str) {
    let revoked = matches!(
        e.code(),
        Some(ErrorCode::InvalidToken | ErrorCode::SessionRevoked)
    );
    assert!(e.is_transient() && !revoked, "{what} failed for good: {e}");
}

/// One acknowledged send.
#[derive(Debug)]
struct Sent {
    from: &'static str,
    to: &'static str,
    key: String,
    body: String,
    id: i64,
    duplicate: bool,
    /// Failed attempts before the acknowledged one.
    attempts: u32,
}

/// Sends until told to stop, one message at a time, each retried with the same key on a new
/// connection until it is acknowledged.
async fn send(
    net: Net,
    from: &'static str,
    task: usize,
    token: Secret,
    stop: Arc<AtomicBool>,
) -> Vec<Sent> {
    let mut conn: Option<Connection> = None;
    let mut acked = Vec::new();
    for i in 0..MAX_SENDS_PER_TASK {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let to = RECIPIENTS[(i + task) % RECIPIENTS.len()];
        let key = format!("{from}-{task}-{i}");
        let body = format!("message {i} from {from}/{task}\nto {to}");
        let mut attempts = 0;
        loop {
            // A connection whose end the client has already seen is replaced first.
            if let Some(c) = &mut conn {
                if let Ok(Event::Closed(_)) = c.events.try_recv() {
                    conn = None;
                }
            }
            let client = match &conn {
                Some(c) => c.client.clone(),
                None => {
                    let c = net.resume(&token).await;
                    let client = c.client.clone();
                    conn = Some(c);
                    client
                }
            };
            match bounded(client.send(to, &body, &key)).await {
                Ok(info) => {
                    acked.push(Sent {
                        from,
                        to,
                        key,
                        body,
                        id: info.id,
                        duplicate: info.duplicate,
                        attempts,
                    });
                    break;
                }
                Err(ClientError::Server {
                    code: ErrorCode::RateLimited,
                    retry_after_ms,
                    ..
                }) => {
                    // Over the per-connection send rate: wait as told, same key, same socket.
                    let wait = retry_after_ms.unwrap_or(100);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                Err(e) => {
                    assert_transient(&e, "send");
                    conn = None;
                    attempts += 1;
                }
            }
        }
    }
    acked
}

/// What one device received.
#[derive(Default)]
struct DeviceLog {
    /// Distinct messages, by id: sender and body.
    seen: BTreeMap<i64, (String, String)>,
    /// Every push, duplicates included.
    deliveries: usize,
    /// Highest id the server confirmed (`acked`) for this device.
    acked_upto: i64,
    violations: Vec<String>,
}

/// One device of `user`: subscribes, records every push, acks what it received, and starts
/// over on a new connection whenever the old one dies.
async fn receive(
    net: Net,
    user: &'static str,
    token: Secret,
    log: Arc<Mutex<DeviceLog>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let Connection { client, mut events } = net.resume(&token).await;
        let cursor = match bounded(client.subscribe()).await {
            Ok(cursor) => cursor,
            Err(e) => {
                assert_transient(&e, "subscribe");
                continue;
            }
        };
        {
            let mut log = log.lock().unwrap();
            if cursor < log.acked_upto {
                let v = format!(
                    "subscribed at cursor {cursor} after {} was acknowledged",
                    log.acked_upto
                );
                log.violations.push(v);
            }
        }
        // The highest id pushed on this connection: what it may acknowledge.
        let mut pushed = cursor;
        'connection: while !stop.load(Ordering::SeqCst) {
            let first = match tokio::time::timeout(Duration::from_millis(100), events.recv()).await
            {
                Err(_) => continue,
                Ok(None) => break,
                Ok(Some(event)) => event,
            };
            // Take everything already queued, then acknowledge it in one ack.
            let mut batch = vec![first];
            while let Ok(event) = events.try_recv() {
                batch.push(event);
            }
            let mut closed = false;
            for event in batch {
                match event {
                    Event::Message(m) => {
                        pushed = pushed.max(m.id);
                        let mut log = log.lock().unwrap();
                        log.deliveries += 1;
                        if m.id <= log.acked_upto {
                            let v = format!(
                                "message {} pushed again after ack up to {}",
                                m.id, log.acked_upto
                            );
                            log.violations.push(v);
                        }
                        if m.to != user {
                            let v = format!("message {} for {} pushed to {user}", m.id, m.to);
                            log.violations.push(v);
                        }
                        let newest = log.seen.keys().next_back().copied().unwrap_or(0);
                        if m.id > newest {
                            log.seen.insert(m.id, (m.from, m.body));
                        } else if !log.seen.contains_key(&m.id) {
                            let v = format!("new message {} arrived after {newest}", m.id);
                            log.violations.push(v);
                            log.seen.insert(m.id, (m.from, m.body));
                        }
                    }
                    Event::Closed(_) => closed = true,
                    // `caught_up` and read markers need nothing here.
                    _ => {}
                }
            }
            if closed {
                break 'connection;
            }
            if pushed > log.lock().unwrap().acked_upto {
                match bounded(client.ack(pushed)).await {
                    Ok(upto) => {
                        let mut log = log.lock().unwrap();
                        log.acked_upto = log.acked_upto.max(upto);
                    }
                    Err(e) => {
                        assert_transient(&e, "ack");
                        break 'connection;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The `chatd` child process.
// ---------------------------------------------------------------------------------------------

/// A running `chatd serve`, killed when dropped.
struct Chatd {
    child: Child,
    addr: SocketAddr,
    pin: Fingerprint,
}

impl Chatd {
    /// Starts `chatd serve` on 127.0.0.1:0 over `dir`, with `env` added to its
    /// environment, and reads where it listens.
    fn start(dir: &Path, env: &[(&str, &str)]) -> Chatd {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("chatd.log"))
            .unwrap();
        let mut child = chatd(dir)
            .envs(env.iter().copied())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn chatd serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        // Reads until the process dies (EOF), so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        // Owned by the guard from here on, so a failed start does not leave a process behind.
        let mut server = Chatd {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pin: Fingerprint::from_str(&format!("sha256:{}", "0".repeat(64))).unwrap(),
        };
        let limit = Duration::from_secs(30);
        let first = rx.recv_timeout(limit).expect("chatd serve printed nothing");
        server.addr = first
            .strip_prefix("chatd listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("first line of chatd serve: {first:?}"));
        let second = rx
            .recv_timeout(limit)
            .expect("chatd serve printed one line");
        server.pin = second
            .strip_prefix("fingerprint ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("second line of chatd serve: {second:?}"));
        server
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL chatd");
        self.child.wait().expect("reap chatd");
    }

    /// Waits for the server to abort itself (an injected fault): it must die of SIGABRT.
    fn wait_for_abort(&mut self) {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert_eq!(
                    status.signal(),
                    Some(libc::SIGABRT),
                    "chatd ended with {status}"
                );
                return;
            }
            assert!(Instant::now() < deadline, "no injected abort within 30 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM; the server must drain and exit 0.
    fn terminate(&mut self) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet (only `kill`,
        // `terminate` and `drop` wait for it), so the pid still names it.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM)");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "chatd exited with {status} after SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "chatd ignored SIGTERM for 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Chatd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `chatd` with the database of `dir`, `--cert-dir` under `dir` and a scrubbed environment.
fn chatd(dir: &Path) -> Command {
    let mut cmd = Command::new(CHATD);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd.arg("--db")
        .arg(crate::common::dir_db(dir).arg)
        .arg("--cert-dir")
        .arg(dir.join("certs"));
    cmd
}

/// `chatd user add NAME --password-stdin`.
fn add_user(dir: &Path, name: &str) {
    use std::io::Write;
    let mut child = chatd(dir)
        .args(["user", "add", name, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatd user add");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chatd user add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Clients of a server that went away.
// ---------------------------------------------------------------------------------------------

/// After the server has closed a connection (here: a clean stop), a new request on it fails
/// at once with "closed"; it must not wait for the 30 s request timeout, or a client that
/// reconnects after a crash stalls that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_connection_the_server_closed_fails_at_once() {
    let server = crate::common::TestServer::start().await;
    server.add_users(&["alice"]).await;
    let (mut conn, _) = server.login("alice").await;
    let _dir = server.stop().await;
    // Wait until the client has seen the end of the connection.
    loop {
        match crate::common::next_event(&mut conn.events).await {
            Event::Closed(_) => break,
            _ => continue,
        }
    }
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), conn.client.ping()).await;
    let elapsed = started.elapsed();
    match result {
        Ok(Err(e)) => assert!(e.is_transient(), "{e}"),
        Ok(Ok(())) => panic!("a ping on a closed connection was answered"),
        Err(_) => panic!("a ping on a closed connection was still pending after {elapsed:?}"),
    }
}
