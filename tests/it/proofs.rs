//! Login proofs (OWASP device cookies): a password login presenting the proof from an
//! earlier login of the same account gets through a wrong-password flood that has the
//! account and the server-wide budget throttled; without one, or with someone else's, a
//! tampered or a void one, it is refused like any other attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chat_svc::client::{ClientError, Connection, LoginInfo, ServerAddr};
use chat_svc::protocol::{ErrorCode, Secret};
use chat_svc::tls::Fingerprint;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::common::{test_limits, TestServer, PASSWORD};

/// Failures recorded for an account after which it stays blocked at least two seconds
/// (five free ones, then 1 s, 2 s, … of backoff).
const BLOCKED_FOR_TWO_SECONDS: u64 = 7;

fn limits() -> chat_svc::server::Limits {
    let mut limits = test_limits();
    limits.login.failed_logins_per_sec = 5;
    limits.login.failed_login_burst = 8;
    limits
}

/// Logs in by password (with `proof`, if any) on a fresh connection.
async fn login(
    server: &TestServer,
    user: &str,
    password: &str,
    proof: Option<&Secret>,
) -> Result<LoginInfo, ClientError> {
    let conn = server.connect().await;
    conn.client
        .login_with_proof(user, &Secret::new(password), proof, "proof test")
        .await
}

/// A proof from a successful login (outside any flood).
async fn proof_of(server: &TestServer, user: &str) -> Secret {
    login(server, user, PASSWORD, None)
        .await
        .unwrap()
        .proof
        .expect("login_ok carries a proof")
}

fn tamper(proof: &Secret) -> Secret {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut raw = engine.decode(proof.expose()).unwrap();
    raw[5] ^= 1; // inside the user id
    Secret::new(engine.encode(raw))
}

fn assert_code(r: &Result<LoginInfo, ClientError>, code: ErrorCode, what: &str) {
    match r {
        Err(ClientError::Server { code: got, .. }) if *got == code => {}
        other => panic!(
            "{what}: expected {code:?}, got {:?}",
            other.as_ref().map(|i| &i.user)
        ),
    }
}

/// Connections sending wrong passwords at some accounts and at a new name each time (which
/// only the server-wide budget stops), as fast as they are answered.
struct Flood {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// `invalid_credentials` answers per flooded account: each is a recorded failure.
    failures: HashMap<String, watch::Receiver<u64>>,
    /// `rate_limited` answers to the guesses at new names.
    guesses_refused: Arc<AtomicU64>,
}

impl Flood {
    fn start(server: &TestServer, accounts: &[&str]) -> Flood {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut failures = HashMap::new();
        let guesses_refused = Arc::new(AtomicU64::new(0));
        let spec = (server.server_addr(), server.pin);
        for account in accounts {
            let (tx, rx) = watch::channel(0u64);
            let tx = Arc::new(tx);
            failures.insert(account.to_string(), rx);
            for _ in 0..3 {
                let (tx, stop, spec) = (Arc::clone(&tx), stop.clone(), spec.clone());
                let account = account.to_string();
                tasks.push(tokio::spawn(async move {
                    flood_loop(
                        spec,
                        stop,
                        move |_| account.clone(),
                        move |code| {
                            if code == ErrorCode::InvalidCredentials {
                                tx.send_modify(|n| *n += 1);
                            }
                        },
                    )
                    .await
                }));
            }
        }
        for c in 0..3 {
            let (stop, spec) = (stop.clone(), spec.clone());
            let refused = Arc::clone(&guesses_refused);
            tasks.push(tokio::spawn(async move {
                flood_loop(
                    spec,
                    stop,
                    move |n| format!("guess{c}-{n}"),
                    move |code| {
                        if code == ErrorCode::RateLimited {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                )
                .await
            }));
        }
        Flood {
            stop,
            tasks,
            failures,
            guesses_refused,
        }
    }

    /// Waits for a failure just recorded for `account` that leaves it blocked for at least
    /// two seconds from now (minus the answer's trip): what follows at once meets a
    /// throttled account.
    async fn fresh_block(&self, account: &str) {
        self.fresh_block_after(account, 0).await
    }

    /// [`Flood::fresh_block`] for an account that had `earlier` failures before the flood.
    async fn fresh_block_after(&self, account: &str, earlier: u64) {
        let mut rx = self.failures[account].clone();
        rx.borrow_and_update();
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                rx.changed().await.unwrap();
                if *rx.borrow_and_update() + earlier >= BLOCKED_FOR_TWO_SECONDS {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the flood never got {account} throttled"));
    }

    /// Stops the flood; the number of guesses the server-wide budget refused.
    async fn stop(self) -> u64 {
        self.stop.cancel();
        for t in self.tasks {
            t.await.unwrap();
        }
        self.guesses_refused.load(Ordering::Relaxed)
    }
}

async fn flood_loop(
    spec: (ServerAddr, Fingerprint),
    stop: CancellationToken,
    name: impl Fn(u64) -> String,
    mut answered: impl FnMut(ErrorCode),
) {
    let wrong = Secret::new("wrong-password!");
    let mut n = 0;
    while !stop.is_cancelled() {
        let Ok(conn) = Connection::connect(&spec.0, spec.1).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        loop {
            n += 1;
            let user = name(n);
            let answer = tokio::select! {
                _ = stop.cancelled() => return,
                a = conn.client.login(&user, &wrong, "flood") => a,
            };
            match answer {
                Err(ClientError::Server { code, .. }) => answered(code),
                Ok(_) => panic!("a wrong password logged in"),
                Err(_) => break,
            }
        }
    }
}

/// During a flood that keeps the account and the server-wide budget throttled, the owner's
/// correct password with the proof from their last login gets in at the first try; the
/// same password without a proof, with a tampered proof, or with another account's proof
/// is refused `rate_limited`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_proof_gets_through_a_wrong_password_flood() {
    let server = TestServer::start_with(limits()).await;
    server.add_users(&["alice", "bob"]).await;
    let alice_proof = proof_of(&server, "alice").await;
    let bob_proof = proof_of(&server, "bob").await;
    let flood = Flood::start(&server, &["alice", "bob"]);

    let (plain, tampered, trusted) = (
        server.connect().await,
        server.connect().await,
        server.connect().await,
    );
    let pw = Secret::new(PASSWORD);
    let tampered_proof = tamper(&alice_proof);
    flood.fresh_block("alice").await;
    let (plain, tampered, trusted) = tokio::join!(
        plain.client.login("alice", &pw, "no proof"),
        tampered
            .client
            .login_with_proof("alice", &pw, Some(&tampered_proof), "tampered"),
        trusted
            .client
            .login_with_proof("alice", &pw, Some(&alice_proof), "proof"),
    );
    assert_code(&plain, ErrorCode::RateLimited, "alice without a proof");
    assert_code(
        &tampered,
        ErrorCode::RateLimited,
        "alice with a tampered proof",
    );
    let trusted = trusted.expect("alice with her proof logs in at the first try");
    assert_eq!(trusted.user, "alice");
    let fresh = trusted.proof.expect("a fresh proof");
    assert_ne!(fresh, alice_proof);

    let (foreign, own) = (server.connect().await, server.connect().await);
    flood.fresh_block("bob").await;
    let (foreign, own) = tokio::join!(
        foreign
            .client
            .login_with_proof("bob", &pw, Some(&alice_proof), "alice's proof"),
        own.client
            .login_with_proof("bob", &pw, Some(&bob_proof), "proof"),
    );
    assert_code(&foreign, ErrorCode::RateLimited, "bob with alice's proof");
    assert_eq!(own.expect("bob with his proof logs in").user, "bob");
    // The fresh proof works too, still during the flood.
    login(&server, "alice", PASSWORD, Some(&fresh))
        .await
        .expect("the fresh proof is trusted");

    let refused = flood.stop().await;
    assert!(refused > 0, "the server-wide budget was never spent");
}

/// A proof allows three failed passwords; then it is void (and stays void across a
/// restart), so a correct password with it is throttled like any other attempt during a
/// flood. Its failures do not count against the account's own budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_proof_is_void_after_its_failure_budget() {
    let server = TestServer::start_with(limits()).await;
    server.add_users(&["alice"]).await;
    let spent = proof_of(&server, "alice").await;
    let kept = proof_of(&server, "alice").await;
    for i in 0..3 {
        let r = login(&server, "alice", "wrong-password!", Some(&spent)).await;
        assert_code(&r, ErrorCode::InvalidCredentials, &format!("failure {i}"));
    }
    // The account's five free failures are all still there.
    for i in 0..5 {
        let r = login(&server, "alice", "wrong-password!", None).await;
        assert_code(
            &r,
            ErrorCode::InvalidCredentials,
            &format!("untrusted failure {i}"),
        );
    }

    let flood = Flood::start(&server, &["alice"]);
    let (void, good) = (server.connect().await, server.connect().await);
    let pw = Secret::new(PASSWORD);
    flood.fresh_block_after("alice", 5).await;
    let (void, good) = tokio::join!(
        void.client
            .login_with_proof("alice", &pw, Some(&spent), "void"),
        good.client
            .login_with_proof("alice", &pw, Some(&kept), "kept"),
    );
    assert_code(&void, ErrorCode::RateLimited, "the void proof");
    let kept = good.expect("an unspent proof").proof.unwrap();
    flood.stop().await;

    // The server forgets its throttles when it restarts, not which proofs are void; its
    // proof key is kept too.
    let server = server.restart().await;
    let flood = Flood::start(&server, &["alice"]);
    let (void, good) = (server.connect().await, server.connect().await);
    flood.fresh_block("alice").await;
    let (void, good) = tokio::join!(
        void.client
            .login_with_proof("alice", &pw, Some(&spent), "void"),
        good.client
            .login_with_proof("alice", &pw, Some(&kept), "kept"),
    );
    assert_code(
        &void,
        ErrorCode::RateLimited,
        "the void proof after a restart",
    );
    good.expect("a proof issued before the restart");
    flood.stop().await;
}
