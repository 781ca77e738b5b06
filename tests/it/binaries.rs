//! The real `chatd` and `chat` binaries, driven the way an operator and a script would:
//! separate processes, stdin piped or null (never a terminal), stdout/stderr captured.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::PASSWORD;

const CHATD: &str = env!("CARGO_BIN_EXE_chatd");
const CHAT: &str = env!("CARGO_BIN_EXE_chat");

/// How long one short command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variables that would change what the binaries do; removed for every child.
const SCRUBBED_ENV: &[&str] = &[
    "RUST_LOG",
    "RUST_BACKTRACE",
    "CHAT_HOME",
    "CHATD_CONFIG",
    "CHATD_DB",
    "CHATD_CERT_DIR",
    "CHATD_LISTEN",
    "CHATD_DURABILITY",
    "CHATD_TLS_CERT",
    "CHATD_TLS_KEY",
];

/// What a finished command printed.
#[derive(Debug)]
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn assert_ok(self, what: &str) -> Output {
        assert!(
            self.status.success(),
            "{what} failed with {}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts a clean failure: non-zero exit, exactly one line on stderr starting with
    /// `prefix`, and no panic or backtrace. Returns that line.
    fn assert_clean_failure(&self, what: &str, prefix: &str) -> String {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "{what} should exit non-zero, got {}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("backtrace"),
            "{what} panicked:\n{}",
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{what}: exactly one line on stderr, got:\n{}",
            self.stderr
        );
        assert!(
            lines[0].starts_with(prefix),
            "{what}: stderr should start with {prefix:?}: {:?}",
            lines[0]
        );
        lines[0].to_string()
    }
}

/// A command with a scrubbed environment.
fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs a command to completion (killing it after [`COMMAND_TIMEOUT`]); `stdin` is piped
/// when given, null otherwise.
fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = ChildGuard(cmd.spawn().unwrap_or_else(|e| panic!("spawn {shown}: {e}")));
    if let Some(input) = stdin {
        let mut pipe = child.0.stdin.take().unwrap();
        // The child may exit before reading everything (an error case); that is fine.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = read_all(child.0.stdout.take().unwrap());
    let err = read_all(child.0.stderr.take().unwrap());
    let status = child.wait_for(COMMAND_TIMEOUT, &shown);
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Kills the child when dropped (a failing test must not leave processes behind).
struct ChildGuard(Child);

impl ChildGuard {
    /// Waits for the child to exit within `limit`; kills it and panics otherwise.
    fn wait_for(&mut self, limit: Duration, what: &str) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                panic!("{what} did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.0.id() as libc::pid_t
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Lines of a child's stdout, read on a thread so that they can be awaited with a timeout.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn new(stdout: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines(rx)
    }

    fn next(&self, limit: Duration, what: &str) -> String {
        self.0
            .recv_timeout(limit)
            .unwrap_or_else(|e| panic!("no line from {what} within {limit:?}: {e}"))
    }

    /// The next line if one comes within `limit`.
    fn next_opt(&self, limit: Duration) -> Option<String> {
        self.0.recv_timeout(limit).ok()
    }
}

/// A `chatd serve` child process.
struct Server {
    child: ChildGuard,
    _stdout: Lines,
    addr: String,
    pin: String,
    dir: PathBuf,
}

impl Server {
    /// Starts `chatd serve` on 127.0.0.1:0 over `dir` and reads its two stdout lines.
    fn start(dir: &Path) -> Server {
        Server::start_on(dir, "127.0.0.1:0")
    }

    /// Starts `chatd serve` on `listen` over `dir` and reads its two stdout lines.
    fn start_on(dir: &Path, listen: &str) -> Server {
        let mut cmd = chatd(dir);
        cmd.arg("serve").args(["--listen", listen]);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("chatd.log"))
            .unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = ChildGuard(cmd.spawn().expect("spawn chatd serve"));
        let lines = Lines::new(child.0.stdout.take().unwrap());
        let limit = Duration::from_secs(30);
        let first = lines.next(limit, "chatd serve");
        let addr = first
            .strip_prefix("chatd listening on ")
            .unwrap_or_else(|| panic!("first stdout line of chatd serve: {first:?}"))
            .to_string();
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
            "{addr}"
        );
        let second = lines.next(limit, "chatd serve");
        let pin = second
            .strip_prefix("fingerprint ")
            .unwrap_or_else(|| panic!("second stdout line of chatd serve: {second:?}"))
            .to_string();
        assert!(pin.starts_with("sha256:"), "{pin}");
        assert_eq!(pin.len(), "sha256:".len() + 64, "{pin}");
        Server {
            child,
            _stdout: lines,
            addr,
            pin,
            dir: dir.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chatd.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and returns the exit status.
    fn terminate(mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid; the child has not been reaped yet (the guard
        // only waits on it below or on drop), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(self.child.pid(), libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM)");
        let status = self
            .child
            .wait_for(Duration::from_secs(30), "chatd serve after SIGTERM");
        if !status.success() {
            panic!(
                "chatd exited with {status} after SIGTERM; log:\n{}",
                self.log()
            );
        }
        status
    }
}

/// `chatd` with the database of `dir` and `--cert-dir` under `dir`.
fn chatd(dir: &Path) -> Command {
    let mut cmd = command(CHATD);
    cmd.arg("--db")
        .arg(crate::common::dir_db(dir).arg)
        .arg("--cert-dir")
        .arg(dir.join("certs"));
    cmd
}

/// `chat` with `CHAT_HOME` = `dir/<user>`.
fn chat(dir: &Path, user: &str) -> Command {
    let mut cmd = command(CHAT);
    cmd.env("CHAT_HOME", dir.join(user));
    cmd
}

fn add_user(dir: &Path, name: &str) {
    let mut cmd = chatd(dir);
    cmd.args(["user", "add", name, "--password-stdin"]);
    let out = run(cmd, Some(&format!("{PASSWORD}\n"))).assert_ok("chatd user add");
    assert!(out.stdout.contains(name), "{}", out.stdout);
}

fn login(dir: &Path, server: &Server, user: &str) {
    let mut cmd = chat(dir, user);
    cmd.args(["login", "--server", &server.addr, "--user", user])
        .args(["--pin", &server.pin, "--password-stdin"]);
    let out = run(cmd, Some(&format!("{PASSWORD}\n"))).assert_ok("chat login");
    assert!(
        out.stdout
            .starts_with(&format!("logged in to {} as {user}", server.addr)),
        "{}",
        out.stdout
    );
}

/// `chat send`; returns the id it reports (`sent #ID at TIME`).
fn send(dir: &Path, from: &str, args: &[&str], stdin: Option<&str>) -> i64 {
    let mut cmd = chat(dir, from);
    cmd.arg("send").args(args);
    let out = run(cmd, stdin).assert_ok("chat send");
    let id = out
        .stdout
        .trim()
        .strip_prefix("sent #")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("chat send printed {:?}", out.stdout));
    assert!(out.stderr.is_empty(), "chat send stderr: {}", out.stderr);
    id
}

/// Starts `chat recv --follow --json` as `user`: the process, its stdout lines and a
/// thread collecting its stderr.
fn follow(dir: &Path, user: &str) -> (ChildGuard, Lines, std::thread::JoinHandle<String>) {
    let mut cmd = chat(dir, user);
    cmd.args(["recv", "--follow", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut follower = ChildGuard(cmd.spawn().expect("spawn chat recv --follow"));
    let out = Lines::new(follower.0.stdout.take().unwrap());
    let err = read_all(follower.0.stderr.take().unwrap());
    (follower, out, err)
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// Asserts the fields of one printed message.
fn check_message(m: &serde_json::Value, id: i64, from: &str, to: &str, body: &str) {
    let obj = m.as_object().expect("a JSON object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["body", "from", "id", "sent_at", "to"], "{m}");
    assert_eq!(m["id"].as_i64(), Some(id), "{m}");
    assert_eq!(m["from"].as_str(), Some(from), "{m}");
    assert_eq!(m["to"].as_str(), Some(to), "{m}");
    assert_eq!(m["body"].as_str(), Some(body), "{m}");
    let sent_at = m["sent_at"].as_str().expect("sent_at is a string");
    // RFC 3339 UTC with microseconds: 2026-11-24T08:15:02.123456Z
    assert_eq!(sent_at.len(), 27, "{sent_at}");
    assert!(
        sent_at.ends_with('Z') && sent_at.as_bytes()[10] == b'T',
        "{sent_at}"
    );
    assert!(sent_at.starts_with("20"), "{sent_at}");
}

#[test]
fn quick_start_with_the_real_binaries_and_clean_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(dir);

    add_user(dir, "alice");
    add_user(dir, "bob");

    // `chatd fingerprint` prints the pin the running server presents.
    let out = run(
        {
            let mut c = chatd(dir);
            c.arg("fingerprint");
            c
        },
        None,
    )
    .assert_ok("chatd fingerprint");
    assert_eq!(out.stdout.trim(), server.pin);

    // --- Error cases: non-zero exit, one clean line on stderr. ---
    // First contact without --pin, not on a terminal: refused, and nothing saved.
    let mut cmd = chat(dir, "mallory");
    cmd.args([
        "login",
        "--server",
        &server.addr,
        "--user",
        "alice",
        "--password-stdin",
    ]);
    let out = run(cmd, Some(&format!("{PASSWORD}\n")));
    let line = out.assert_clean_failure("chat login without --pin", "chat: error:");
    assert!(line.contains("--pin"), "{line}");
    assert!(
        line.contains(&server.pin),
        "the error shows the presented key: {line}"
    );
    assert!(
        !dir.join("mallory").join("session.json").exists(),
        "no session is saved on a refused first contact"
    );

    // A short password for a new account.
    let mut cmd = chatd(dir);
    cmd.args(["user", "add", "carol", "--password-stdin"]);
    let out = run(cmd, Some("short\n"));
    let line = out.assert_clean_failure("chatd user add with a short password", "chatd: error:");
    assert!(line.contains("password"), "{line}");

    // --- The quick start. ---
    login(dir, &server, "alice");
    login(dir, &server, "bob");

    // Sending to a user that does not exist.
    let mut cmd = chat(dir, "alice");
    cmd.args(["send", "nobody", "x"]);
    let out = run(cmd, None);
    let line = out.assert_clean_failure("chat send nobody", "chat: error:");
    assert!(line.contains("nobody"), "{line}");

    let first = send(dir, "alice", &["bob", "hello", "there"], None);
    let multi = "first line\n  indented second line\n\n\tfourth: ünïcödé ✓\n";
    let second = send(dir, "alice", &["bob"], Some(multi));
    assert!(second > first, "ids increase: {first} then {second}");

    let mut cmd = chat(dir, "bob");
    cmd.args(["recv", "--json"]);
    let out = run(cmd, None).assert_ok("chat recv");
    assert!(out.stderr.is_empty(), "chat recv stderr: {}", out.stderr);
    let got = json_lines(&out.stdout);
    assert_eq!(got.len(), 2, "recv printed:\n{}", out.stdout);
    check_message(&got[0], first, "alice", "bob", "hello there");
    check_message(&got[1], second, "alice", "bob", multi);
    let received = out.stdout;

    // Everything was acknowledged: a second recv prints nothing.
    let mut cmd = chat(dir, "bob");
    cmd.args(["recv", "--json"]);
    let out = run(cmd, None).assert_ok("second chat recv");
    assert_eq!(out.stdout, "", "a second recv prints nothing");
    assert!(
        out.stderr.is_empty(),
        "second chat recv stderr: {}",
        out.stderr
    );

    // History shows both, identical to what recv printed.
    let mut cmd = chat(dir, "bob");
    cmd.args(["history", "alice", "--json"]);
    let out = run(cmd, None).assert_ok("chat history");
    let hist = json_lines(&out.stdout);
    assert_eq!(hist.len(), 2, "history printed:\n{}", out.stdout);
    check_message(&hist[0], first, "alice", "bob", "hello there");
    check_message(&hist[1], second, "alice", "bob", multi);
    assert_eq!(out.stdout, received, "history and recv print the same JSON");

    // SIGTERM: a clean, successful exit.
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
}

/// `chat recv --follow` outlives a server restart: it reconnects on its own, says so on
/// stderr, resumes from its cursor, and shows nothing twice.
#[test]
fn recv_follow_reconnects_after_a_server_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(dir);
    add_user(dir, "alice");
    add_user(dir, "bob");
    login(dir, &server, "alice");
    login(dir, &server, "bob");
    let (follower, follow_out, follow_err) = follow(dir, "bob");
    let first = send(dir, "alice", &["bob", "before", "the", "restart"], None);
    let line = follow_out.next(Duration::from_secs(20), "chat recv --follow");
    check_message(
        &json_lines(&line)[0],
        first,
        "alice",
        "bob",
        "before the restart",
    );

    // Restart on the same address.
    let addr = server.addr.clone();
    assert_eq!(server.terminate().code(), Some(0));
    let server = Server::start_on(dir, &addr);
    let second = send(dir, "alice", &["bob", "after", "the", "restart"], None);
    let line = follow_out.next(
        Duration::from_secs(30),
        "chat recv --follow after a restart",
    );
    let got = json_lines(&line);
    check_message(&got[0], second, "alice", "bob", "after the restart");

    // Stopped by the test: it printed exactly the two messages, and said it reconnected.
    drop(follower);
    let stderr = follow_err.join().unwrap();
    assert!(stderr.contains("reconnecting"), "{stderr}");
    // Only the notices: a fatal error would start with "chat: error:".
    assert!(
        stderr.lines().all(|l| l.contains("reconnecting")),
        "{stderr}"
    );
    assert!(follow_out.next_opt(Duration::from_millis(200)).is_none());
    drop(server);
}

#[test]
fn disabling_a_user_ends_its_sessions_and_recv_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(dir);
    add_user(dir, "alice");
    add_user(dir, "bob");
    login(dir, &server, "alice");
    login(dir, &server, "bob");

    // bob follows live; a first message proves he is connected and subscribed.
    let (mut follower, follow_out, follow_err) = follow(dir, "bob");
    let id = send(dir, "alice", &["bob", "are", "you", "there?"], None);
    let line = follow_out.next(Duration::from_secs(20), "chat recv --follow");
    check_message(&json_lines(&line)[0], id, "alice", "bob", "are you there?");

    let mut cmd = chatd(dir);
    cmd.args(["user", "disable", "bob"]);
    let out = run(cmd, None).assert_ok("chatd user disable");
    assert!(out.stdout.contains("disabled bob"), "{}", out.stdout);

    // The running server notices and closes bob's live connection; the client says why.
    let status = follower.wait_for(Duration::from_secs(20), "chat recv --follow after disable");
    assert!(
        !status.success(),
        "recv --follow exits non-zero when bob is disabled"
    );
    let stderr = follow_err.join().unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr:\n{stderr}");
    assert!(lines[0].starts_with("chat: error:"), "{stderr}");
    assert!(
        lines[0].contains("session_revoked") || lines[0].contains("disabled"),
        "{stderr}"
    );

    // A new recv as bob is refused with a clear message.
    let mut cmd = chat(dir, "bob");
    cmd.args(["recv", "--json"]);
    let out = run(cmd, None);
    let line = out.assert_clean_failure("chat recv as a disabled user", "chat: error:");
    assert!(line.contains("disabled"), "{line}");
    assert_eq!(out.stdout, "");

    // So is a fresh login.
    let mut cmd = chat(dir, "bob2");
    cmd.args(["login", "--server", &server.addr, "--user", "bob"])
        .args(["--pin", &server.pin, "--password-stdin"]);
    let out = run(cmd, Some(&format!("{PASSWORD}\n")));
    let line = out.assert_clean_failure("chat login as a disabled user", "chat: error:");
    assert!(line.contains("disabled"), "{line}");

    // alice is unaffected, and bob gets what was sent meanwhile once re-enabled.
    let later = send(dir, "alice", &["bob", "welcome", "back"], None);
    let mut cmd = chatd(dir);
    cmd.args(["user", "enable", "bob"]);
    run(cmd, None).assert_ok("chatd user enable");
    let mut cmd = chat(dir, "bob");
    cmd.args(["recv", "--json"]);
    let out = run(cmd, None).assert_ok("chat recv after enable");
    let got = json_lines(&out.stdout);
    assert_eq!(got.len(), 1, "recv after enable printed:\n{}", out.stdout);
    check_message(&got[0], later, "alice", "bob", "welcome back");

    assert_eq!(server.terminate().code(), Some(0));
}

/// `chat send --action` and how `chat` shows actions (`* alice waves`) in recv, history and
/// search; `chat room del` by the owner, and refused (one clean line) for anyone else.
#[test]
fn actions_show_as_emotes_and_owners_delete_rooms_with_the_real_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(dir);
    add_user(dir, "alice");
    add_user(dir, "bob");
    login(dir, &server, "alice");
    login(dir, &server, "bob");

    let id = send(dir, "alice", &["--action", "bob", "waves"], None);
    let mut cmd = chat(dir, "bob");
    cmd.arg("recv");
    let out = run(cmd, None).assert_ok("chat recv");
    assert!(
        out.stdout.contains("alice → bob: * alice waves\n"),
        "{}",
        out.stdout
    );
    let mut cmd = chat(dir, "bob");
    cmd.args(["history", "alice"]);
    let out = run(cmd, None).assert_ok("chat history");
    assert!(out.stdout.contains(": * alice waves\n"), "{}", out.stdout);
    let mut cmd = chat(dir, "bob");
    cmd.args(["history", "alice", "--json"]);
    let out = run(cmd, None).assert_ok("chat history --json");
    let got = json_lines(&out.stdout);
    assert_eq!(got[0]["id"].as_i64(), Some(id));
    assert_eq!(got[0]["body"].as_str(), Some("waves"));
    assert_eq!(got[0]["action"].as_bool(), Some(true));
    let mut cmd = chat(dir, "bob");
    cmd.args(["search", "waves"]);
    let out = run(cmd, None).assert_ok("chat search");
    assert!(out.stdout.contains(": * alice [waves]"), "{}", out.stdout);

    let mut cmd = chat(dir, "alice");
    cmd.args(["room", "create", "typo-room"]);
    run(cmd, None).assert_ok("chat room create");
    let mut cmd = chat(dir, "bob");
    cmd.args(["room", "join", "#typo-room"]);
    run(cmd, None).assert_ok("chat room join");
    let mut cmd = chat(dir, "bob");
    cmd.args(["room", "del", "#typo-room"]);
    let out = run(cmd, None);
    let line = out.assert_clean_failure("chat room del by a member", "chat: error:");
    assert!(line.contains("only the owner"), "{line}");
    let mut cmd = chat(dir, "alice");
    cmd.args(["room", "del", "#typo-room"]);
    let out = run(cmd, None).assert_ok("chat room del");
    assert_eq!(out.stdout, "deleted #typo-room\n");
    let mut cmd = chat(dir, "bob");
    cmd.args(["room", "list", "--all"]);
    let out = run(cmd, None).assert_ok("chat room list");
    assert_eq!(out.stdout, "", "the room is gone");
    // The owner alone leaving deletes the room, and is told so; a member leaving is not.
    let mut cmd = chat(dir, "alice");
    cmd.args(["room", "create", "solo"]);
    run(cmd, None).assert_ok("chat room create");
    let mut cmd = chat(dir, "alice");
    cmd.args(["room", "create", "pair"]);
    run(cmd, None).assert_ok("chat room create");
    let mut cmd = chat(dir, "bob");
    cmd.args(["room", "join", "#pair"]);
    run(cmd, None).assert_ok("chat room join");
    let mut cmd = chat(dir, "bob");
    cmd.args(["room", "leave", "#pair"]);
    let out = run(cmd, None).assert_ok("chat room leave by a member");
    assert_eq!(out.stdout, "left #pair\n");
    let mut cmd = chat(dir, "alice");
    cmd.args(["room", "leave", "#solo"]);
    let out = run(cmd, None).assert_ok("chat room leave by the owner alone");
    assert_eq!(
        out.stdout,
        "left #solo: you were its last member, so it is deleted\n"
    );
    // The operator's deletion of a room that is no longer there says so in words.
    let mut cmd = chatd(dir);
    cmd.args(["room", "del", "#typo-room"]);
    let line =
        run(cmd, None).assert_clean_failure("chatd room del of a gone room", "chatd: error:");
    assert_eq!(line, "chatd: error: no such room: #typo-room");

    assert_eq!(server.terminate().code(), Some(0));
}

/// Operators run `chatd user …` while the server is busy (SQLite in WAL mode allows that).
/// Neither side may fail because the other was writing at the same moment: the admin command
/// must not exit with "database is locked", and no send may be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_succeed_while_the_server_is_writing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let server = crate::common::TestServer::start().await;
    server.add_users(&["alice", "bob", "dave"]).await;
    let (alice, _) = server.login("alice").await;

    // Keep the server's group-commit writer busy: four pipelined senders.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for t in 0..4 {
        let client = alice.client.clone();
        let (stop, sent, refused) = (stop.clone(), sent.clone(), refused.clone());
        senders.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match client.send("bob", "busy", &format!("busy-{t}-{i}")).await {
                    Ok(_) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => refused.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    while sent.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Meanwhile the operator toggles an unrelated account, through the real binary.
    let db = server.db_arg();
    let certs = server.dir.path().join("certs");
    let admin_failures = tokio::task::spawn_blocking(move || {
        let mut failures = Vec::new();
        for round in 0..20 {
            for action in ["disable", "enable"] {
                let mut cmd = command(CHATD);
                cmd.arg("--db").arg(&db).arg("--cert-dir").arg(&certs);
                cmd.args(["user", action, "dave"]);
                let out = run(cmd, None);
                if !out.status.success() {
                    failures.push(format!("round {round} {action}: {}", out.stderr.trim()));
                }
            }
        }
        failures
    })
    .await
    .unwrap();

    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let refused = refused.lock().unwrap().clone();
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        admin_failures.is_empty() && refused.is_empty(),
        "while {sent} sends succeeded: {} of 40 admin commands failed, e.g. {:?}; \
         {} sends were refused, e.g. {:?}",
        admin_failures.len(),
        admin_failures.first(),
        refused.len(),
        refused.first()
    );
}

/// One server per database: a second `chatd serve` on it, on another port or on the same
/// one, refuses at once with one line naming the database and the first server (pid and
/// address). The first keeps working, and the admin commands work beside it.
#[test]
fn a_second_serve_on_the_same_database_refuses_at_once() {
    if crate::common::sqlite_only("the SQLite file lock; on PostgreSQL many nodes serve one") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(dir);
    add_user(dir, "alice");
    add_user(dir, "bob");
    login(dir, &server, "alice");
    login(dir, &server, "bob");
    let before = send(dir, "alice", &["bob", "before"], None);

    let db = dir.join("chatd.db").display().to_string();
    for listen in ["127.0.0.1:0", server.addr.as_str()] {
        let mut cmd = chatd(dir);
        cmd.args(["serve", "--listen", listen]);
        let started = Instant::now();
        let out = run(cmd, None);
        let line = out.assert_clean_failure("a second chatd serve", "chatd: error:");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "refused at once"
        );
        assert!(line.contains(&db), "names the database: {line}");
        assert!(
            line.contains(&format!("pid {}", server.child.0.id())),
            "names the first server's pid: {line}"
        );
        assert!(line.contains(&server.addr), "and its address: {line}");
        assert_eq!(out.stdout, "", "the second server never announced itself");
    }

    // The first server stores and delivers as before.
    let after = send(dir, "alice", &["bob", "after"], None);
    let mut cmd = chat(dir, "bob");
    cmd.args(["recv", "--json"]);
    let out = run(cmd, None).assert_ok("chat recv");
    let got = json_lines(&out.stdout);
    assert_eq!(got.len(), 2, "{}", out.stdout);
    check_message(&got[0], before, "alice", "bob", "before");
    check_message(&got[1], after, "alice", "bob", "after");
    for args in [
        &["user", "list"][..],
        &["room", "list"],
        &["user", "revoke", "alice"],
    ] {
        let mut cmd = chatd(dir);
        cmd.args(args);
        run(cmd, None).assert_ok(&format!("chatd {args:?} beside the server"));
    }
    assert!(
        !server.log().contains("UNIQUE"),
        "no id clash in the first server:\n{}",
        server.log()
    );
    assert_eq!(server.terminate().code(), Some(0));
}

/// `chatd serve` on a busy port in a new directory fails before creating anything there.
#[test]
fn serve_on_a_busy_port_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let fresh = tmp.path().join("fresh");
    let mut cmd = chatd(&fresh);
    cmd.args(["serve", "--listen", &addr]);
    let out = run(cmd, None);
    let line = out.assert_clean_failure("chatd serve on a busy port", "chatd: error:");
    assert!(line.contains(&format!("cannot listen on {addr}")), "{line}");
    assert!(
        !fresh.exists(),
        "nothing created: {:?}",
        std::fs::read_dir(&fresh).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
}

/// With the server down, `chat` says so in one line: the OS error once, and a hint.
#[test]
fn a_server_that_is_down_is_reported_once_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(dir);
    add_user(dir, "alice");
    login(dir, &server, "alice");
    let addr = server.addr.clone();
    assert_eq!(server.terminate().code(), Some(0));
    for args in [
        &["recv"][..],
        &["history", "alice"],
        &["send", "alice", "hello?"],
    ] {
        let mut cmd = chat(dir, "alice");
        cmd.args(args);
        let out = run(cmd, None);
        let line = out.assert_clean_failure(&format!("chat {args:?}"), "chat: error:");
        assert_eq!(
            line.matches("os error").count(),
            1,
            "the OS error once: {line}"
        );
        assert!(
            line.contains(&format!("cannot connect to {addr}")),
            "{line}"
        );
        assert!(
            line.ends_with(&format!("is chatd running at {addr}?")),
            "{line}"
        );
    }
}

/// A wrong `--pin` on first contact is not a changed key: the message says the pin given
/// does not match and to check it with the operator, and never suggests trusting the key
/// presented. `chat trust` over a different stored pin says so (not "first contact").
#[test]
fn a_wrong_pin_on_first_contact_says_to_check_it_with_the_operator() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(dir);
    add_user(dir, "alice");
    let wrong = format!("sha256:{}", "00".repeat(32));

    let mut cmd = chat(dir, "alice");
    cmd.args(["login", "--server", &server.addr, "--user", "alice"])
        .args(["--pin", &wrong, "--password-stdin"]);
    let out = run(cmd, Some(&format!("{PASSWORD}\n")));
    let line = out.assert_clean_failure("chat login with a wrong --pin", "chat: error:");
    assert!(
        line.contains(&format!(
            "does not present the key given with --pin {wrong}"
        )),
        "{line}"
    );
    assert!(line.contains("operator"), "{line}");
    assert!(
        !line.contains("chat trust") && !line.contains("is pinned"),
        "no advice to trust the presented key, no talk of an earlier pin: {line}"
    );
    let known =
        std::fs::read_to_string(dir.join("alice").join("known_servers")).unwrap_or_default();
    assert!(!known.contains("sha256:"), "nothing pinned: {known}");

    // A wrong pin stored by hand, then `chat trust` without --pin off a terminal.
    let trust = |args: &[&str]| {
        let mut cmd = chat(dir, "alice");
        cmd.args(["trust", &server.addr]).args(args);
        run(cmd, None)
    };
    let out = trust(&["--pin", &wrong]).assert_ok("chat trust --pin");
    assert!(
        out.stdout.starts_with(&format!("pinned {wrong}")),
        "{}",
        out.stdout
    );
    let out = trust(&[]);
    let line = out.assert_clean_failure("chat trust over a different pin", "chat: error:");
    assert!(!line.contains("first contact"), "{line}");
    assert!(
        line.contains(&format!("the key pinned for {} is {wrong}", server.addr)),
        "{line}"
    );
    assert!(line.contains(&server.pin), "{line}");
    let out = trust(&["--pin", &server.pin]).assert_ok("chat trust --pin (re-pin)");
    assert!(
        out.stdout.contains(&format!("replacing {wrong}")),
        "{}",
        out.stdout
    );
    let out = trust(&[]).assert_ok("chat trust, same key");
    assert!(out.stdout.contains("already pinned"), "{}", out.stdout);
    login(dir, &server, "alice");
    assert_eq!(server.terminate().code(), Some(0));
}

/// `--limit` beyond what one page holds is refused in one line (the server would lower it
/// silently); a blank message is refused; `chat recv` does not mark what it printed as
/// read, replying does.
#[test]
fn limits_blank_messages_and_what_marks_a_conversation_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(dir);
    add_user(dir, "alice");
    add_user(dir, "bob");
    login(dir, &server, "alice");
    login(dir, &server, "bob");
    let hello = send(dir, "alice", &["bob", "hello"], None);

    let bob = |args: &[&str]| {
        let mut cmd = chat(dir, "bob");
        cmd.args(args);
        run(cmd, None)
    };
    for (args, what) in [
        (&["history", "alice", "--limit", "501"][..], "--limit 501"),
        (&["history", "alice", "--limit", "0"], "--limit 0"),
        (&["search", "hello", "--limit", "101"], "--limit 101"),
    ] {
        let line = bob(args).assert_clean_failure(&format!("chat {args:?}"), "chat: error:");
        assert!(line.contains(&format!("{what} is out of range")), "{line}");
    }
    let out = bob(&["history", "alice", "--limit", "500", "--json"]).assert_ok("--limit 500");
    assert_eq!(json_lines(&out.stdout).len(), 1);
    bob(&["search", "hello", "--limit", "100"]).assert_ok("search --limit 100");
    let line =
        bob(&["send", "alice", " ", "\t"]).assert_clean_failure("blank send", "chat: error:");
    assert!(line.contains("empty"), "{line}");

    let unread_from_alice = || {
        let out = bob(&["unread", "--json"]).assert_ok("chat unread");
        let list = json_lines(&out.stdout);
        let alice = list
            .iter()
            .find(|u| u["conversation"] == "alice")
            .unwrap_or_else(|| panic!("{}", out.stdout));
        alice["unread"].as_u64().unwrap()
    };
    let out = bob(&["recv"]).assert_ok("chat recv");
    assert!(out.stdout.contains("hello"), "{}", out.stdout);
    assert_eq!(
        unread_from_alice(),
        1,
        "recv delivers; it does not mark read"
    );
    let reply = send(dir, "bob", &["alice", "hi!"], None);
    assert!(reply > hello);
    assert_eq!(
        unread_from_alice(),
        0,
        "replying marks the conversation read"
    );
    assert_eq!(server.terminate().code(), Some(0));
}

/// `chat recv --follow` records what it showed without undoing what others wrote to
/// `session.json` meanwhile: a higher `last_seen` (the TUI on this device) stays, and a new
/// login saved by another `chat login` is not overwritten with the one recv started with.
#[test]
fn recv_never_lowers_last_seen_nor_overwrites_a_newer_login() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(dir);
    add_user(dir, "alice");
    add_user(dir, "bob");
    login(dir, &server, "alice");
    login(dir, &server, "bob");
    let session_path = dir.join("bob").join("session.json");
    let saved = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&session_path).unwrap()).unwrap()
    };

    let (follower, lines, _err) = follow(dir, "bob");
    // Each message printed means the one before it was recorded and acknowledged.
    let shown = |body: &str| {
        let id = send(dir, "alice", &["bob", body], None);
        let line = lines.next(Duration::from_secs(20), "chat recv --follow");
        check_message(&json_lines(&line)[0], id, "alice", "bob", body);
        id
    };
    let one = shown("one");
    // recv records what it printed a moment after printing it: wait for that record, so the
    // write below (made without the lock, as a careless process would) does not race it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while saved()["last_seen"].as_i64() < Some(one) {
        assert!(
            std::time::Instant::now() < deadline,
            "recv never recorded {one}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Another process on this device shows far newer messages and records that.
    let mut session = saved();
    session["last_seen"] = serde_json::json!(1_000_000);
    std::fs::write(&session_path, session.to_string()).unwrap();
    shown("two");
    shown("three");
    assert_eq!(saved()["last_seen"], 1_000_000, "last_seen never goes down");

    // A new login in the same CHAT_HOME while recv still runs on the old one.
    let mut cmd = chat(dir, "bob");
    cmd.args(["login", "--server", &server.addr, "--user", "bob"])
        .args(["--pin", &server.pin, "--password-stdin"]);
    let out = run(cmd, Some(&format!("{PASSWORD}\n"))).assert_ok("second chat login");
    let new_device: i64 = out
        .stdout
        .trim()
        .rsplit_once("(device ")
        .and_then(|(_, d)| d.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let new_token = saved()["token"].clone();
    shown("four");
    shown("five");
    let now = saved();
    assert_eq!(now["device_id"], new_device, "the newer login stays: {now}");
    assert_eq!(now["token"], new_token);
    drop(follower);
    assert_eq!(server.terminate().code(), Some(0));
}

/// `chat recv --follow` keeps the login it started with across a reconnect. It used to
/// load `session.json` afresh on every reconnect: after another account logged in with the
/// same `CHAT_HOME`, it went on as that account, with its own dedupe mark, and so hid that
/// account's older messages and acknowledged them unseen: they were never shown anywhere.
#[test]
fn recv_follow_keeps_its_login_across_a_reconnect() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(dir);
    for user in ["alice", "bob", "carol"] {
        add_user(dir, user);
    }
    login(dir, &server, "alice");
    login(dir, &server, "bob");
    // Older than anything bob's follower shows, for an account not logged in yet.
    let early = send(dir, "alice", &["carol", "for", "carol"], None);

    let (follower, lines, _err) = follow(dir, "bob");
    let first = send(dir, "alice", &["bob", "for", "bob"], None);
    let line = lines.next(Duration::from_secs(20), "chat recv --follow");
    check_message(&json_lines(&line)[0], first, "alice", "bob", "for bob");

    // carol logs in with bob's CHAT_HOME while bob's follower runs.
    let mut cmd = chat(dir, "bob");
    cmd.args(["login", "--server", &server.addr, "--user", "carol"])
        .args(["--pin", &server.pin, "--password-stdin"]);
    run(cmd, Some(&format!("{PASSWORD}\n"))).assert_ok("chat login as carol");

    // A restart makes the follower reconnect: still as bob.
    let addr = server.addr.clone();
    assert_eq!(server.terminate().code(), Some(0));
    let server = Server::start_on(dir, &addr);
    let later = send(dir, "alice", &["bob", "after", "the", "restart"], None);
    let line = lines.next(
        Duration::from_secs(30),
        "chat recv --follow after a restart",
    );
    check_message(
        &json_lines(&line)[0],
        later,
        "alice",
        "bob",
        "after the restart",
    );
    drop(follower);

    // carol's message is still hers to receive.
    let mut cmd = chat(dir, "bob");
    cmd.args(["recv", "--json"]);
    let out = run(cmd, None).assert_ok("chat recv as carol");
    let got = json_lines(&out.stdout);
    assert_eq!(got.len(), 1, "carol's recv printed:\n{}", out.stdout);
    check_message(&got[0], early, "alice", "carol", "for carol");
    assert_eq!(server.terminate().code(), Some(0));
}

/// On a terminal, `chat history` shows control characters and bidi overrides of a message
/// visibly and harmlessly; into a pipe it prints them exactly. The terminal is a real
/// pseudo-terminal made by `script(1)` (util-linux).
#[test]
fn history_on_a_terminal_defuses_escape_sequences() {
    let script = Path::new("/usr/bin/script");
    if !script.exists() {
        eprintln!("skipped: no /usr/bin/script to make a pseudo-terminal");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start(dir);
    add_user(dir, "alice");
    add_user(dir, "bob");
    login(dir, &server, "alice");
    login(dir, &server, "bob");
    let hostile = "\u{1b}]0;owned\u{7}\u{1b}[2Jcleared \u{202e}txet";
    send(dir, "alice", &["bob", hostile], None);

    let mut cmd = command(script.to_str().unwrap());
    cmd.env("CHAT_HOME", dir.join("bob"))
        .env("TERM", "xterm")
        .args(["-qec", &format!("'{CHAT}' history alice"), "/dev/null"]);
    let out = run(cmd, None).assert_ok("chat history on a terminal");
    assert!(
        out.stdout
            .contains("alice → bob: \u{FFFD}]0;owned\u{FFFD}\u{FFFD}[2Jcleared \u{FFFD}txet"),
        "{:?}",
        out.stdout
    );
    assert!(!out.stdout.contains('\u{1b}'), "{:?}", out.stdout);

    let mut cmd = chat(dir, "bob");
    cmd.args(["history", "alice"]);
    let out = run(cmd, None).assert_ok("chat history into a pipe");
    assert!(out.stdout.contains(hostile), "{:?}", out.stdout);
    assert_eq!(server.terminate().code(), Some(0));
}
