//! The full-screen client end to end: the real `chat` binary in a tmux pane (a real
//! pseudo-terminal) against a real in-process server, with another user on the client
//! library at the other end.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::common::{self, TestServer, PASSWORD};

const CHAT: &str = env!("CARGO_BIN_EXE_chat");
/// Longest wait for the pane to show something.
const PANE_TIMEOUT: Duration = Duration::from_secs(10);

/// A tmux server of its own (its own socket, no user config), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    async fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn capture(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "tui"]).await
    }

    /// Polls the pane until `done` holds; panics with the pane's text after the timeout.
    async fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let pane = self.capture().await;
            if done(&pane) {
                return pane;
            }
            if start.elapsed() > PANE_TIMEOUT {
                panic!("timed out waiting for {what}; the pane shows:\n{pane}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn tmux_installed() -> bool {
    std::process::Command::new("tmux")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tui_shows_a_live_message_and_sends_a_two_line_reply() {
    if !tmux_installed() {
        println!(
            "SKIPPED tui_shows_a_live_message_and_sends_a_two_line_reply: tmux is not installed"
        );
        return;
    }
    let started = Instant::now();
    let server = TestServer::start().await;
    server.add_users(&["alice", "bob"]).await;
    let home = tempfile::tempdir().unwrap();

    // alice logs in with the real binary, as a user would.
    let mut login = Command::new(CHAT)
        .env("CHAT_HOME", home.path())
        .env_remove("RUST_LOG")
        .args([
            "login",
            "--server",
            &server.addr.to_string(),
            "--user",
            "alice",
        ])
        .args(["--pin", &server.pin.to_string(), "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = login.stdin.take().unwrap();
    stdin
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = login.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "chat login failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // bob is on the library, subscribed, to receive the reply.
    let (mut bob, _) = server.login("bob").await;
    common::drain_backlog(&mut bob).await;

    // alice's full-screen client in a 120x40 pane. After it exits the pane stays, showing
    // the exit status, so the test sees that it quit cleanly.
    let tmux = Tmux {
        socket: format!("chat-tui-test-{}", std::process::id()),
    };
    let shell = format!(
        "env -u RUST_LOG CHAT_HOME='{}' '{CHAT}' tui; echo \"chat exited with $?\"; sleep 60",
        home.path().display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "40",
        "-s",
        "tui",
        &shell,
    ])
    .await;
    tmux.wait_for("the client to connect", |p| p.contains("● online"))
        .await;

    // A message arrives while alice is idle.
    bob.client
        .send("alice", "hello alice, are you there?", "bob-key-1")
        .await
        .unwrap();
    let pane = tmux
        .wait_for("bob's message", |p| {
            p.contains("bob: hello alice, are you there?")
        })
        .await;
    assert!(
        pane.contains("▸ bob"),
        "bob's conversation is open:\n{pane}"
    );

    // A two-line reply: Alt-Enter makes the new line, Enter sends.
    tmux.run(&["send-keys", "-t", "tui", "-l", "yes, here"])
        .await;
    tmux.run(&["send-keys", "-t", "tui", "M-Enter"]).await;
    tmux.run(&["send-keys", "-t", "tui", "-l", "second line: ok?"])
        .await;
    tmux.wait_for("the typed reply", |p| p.contains("second line: ok?"))
        .await;
    tmux.run(&["send-keys", "-t", "tui", "Enter"]).await;
    let pane = tmux
        .wait_for("the reply stored (✓)", |p| {
            let lines: Vec<&str> = p.lines().collect();
            lines
                .windows(2)
                .any(|w| w[0].contains("✓ alice: yes, here") && w[1].contains("second line: ok?"))
        })
        .await;
    assert!(!pane.contains("… alice"), "nothing pending:\n{pane}");
    let pane_capture = pane;

    // bob got it intact, newline included.
    let got = common::take_messages(&mut bob.events, 1).await;
    assert_eq!(got[0].from, "alice");
    assert_eq!(got[0].body, "yes, here\nsecond line: ok?");

    // Quit: the terminal is restored and the exit status is 0.
    tmux.run(&["send-keys", "-t", "tui", "C-c"]).await;
    let pane = tmux
        .wait_for("chat to exit", |p| p.contains("chat exited with"))
        .await;
    assert!(pane.contains("chat exited with 0"), "{pane}");
    assert!(
        !pane.contains("Conversations"),
        "the alternate screen was left:\n{pane}"
    );
    println!(
        "tui end-to-end took {:.1} s; the pane before quitting:\n{pane_capture}",
        started.elapsed().as_secs_f64()
    );
}
