//! A quick load: N sender→recipient pairs over real TLS on loopback, each sender keeping a
//! window of sends in flight for a fixed time. Prints messages/s acknowledged (durably
//! stored) and delivered. Run with `cargo bench --bench quick_load [-- PAIRS SECONDS]`.
//! The full benchmark with latency percentiles is `chatd bench` (a later issue).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_svc::auth::Hasher;
use chat_svc::client::{Connection, Event};
use chat_svc::protocol::{Secret, Username};
use chat_svc::server::{Limits, Server, ServerOptions};
use chat_svc::store::{Durability, Store};
use chat_svc::tls::IdentitySource;
use futures::stream::{FuturesUnordered, StreamExt};

const WINDOW: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let pairs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(50);
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run(pairs, Duration::from_secs(secs)));
}

async fn run(pairs: usize, duration: Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ServerOptions {
        db: dir.path().join("chatd.db"),
        identity: IdentitySource {
            cert_dir: dir.path().join("certs"),
            cert_file: None,
            key_file: None,
            extra_names: vec![],
        },
        durability: Durability::Full,
        limits: Limits::default(),
        hash_parallelism: 2,
    };
    let server = Server::start(&options).await.expect("server");
    let pin = server.fingerprint();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").into();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server_task = tokio::spawn(server.run(listener, shutdown.clone()));

    let password = Secret::new("bench-password");
    let hash = Hasher::new(1)
        .await
        .expect("hasher")
        .hash(&password)
        .await
        .expect("hash");
    let admin = Store::open(&options.db, Durability::Full)
        .await
        .expect("store");
    for i in 0..pairs {
        for who in ["s", "r"] {
            let name = Username::parse(&format!("{who}{i}")).expect("name");
            admin.create_user(&name, &hash).await.expect("user");
        }
    }
    admin.close().await;

    let acked = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for i in 0..pairs {
        let mut r = Connection::connect(&addr, pin).await.expect("connect");
        r.client
            .login(&format!("r{i}"), &password, "bench")
            .await
            .expect("login");
        r.client.subscribe().await.expect("subscribe");
        let delivered = Arc::clone(&delivered);
        receivers.push(tokio::spawn(async move {
            let mut last = 0;
            while let Some(ev) = r.events.recv().await {
                match ev {
                    Event::Message(m) => {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        last = m.id;
                        if r.events.is_empty() {
                            let _ = r.client.ack(last).await;
                        }
                    }
                    Event::CaughtUp { .. } => {}
                    Event::Closed(_) => break,
                }
            }
            last
        }));
        let s = Connection::connect(&addr, pin).await.expect("connect");
        s.client
            .login(&format!("s{i}"), &password, "bench")
            .await
            .expect("login");
        senders.push((s, format!("r{i}")));
    }

    let body = "x".repeat(200);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (n, (s, to)) in senders.into_iter().enumerate() {
        let acked = Arc::clone(&acked);
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut inflight = FuturesUnordered::new();
            let mut seq = 0u64;
            loop {
                while inflight.len() < WINDOW && Instant::now() < deadline {
                    seq += 1;
                    let c = s.client.clone();
                    let (to, body, key) = (to.clone(), body.clone(), format!("{n}-{seq}"));
                    inflight.push(async move { c.send(&to, &body, &key).await });
                }
                match inflight.next().await {
                    Some(Ok(_)) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err(e)) => panic!("send failed: {e}"),
                    None => break,
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let send_secs = start.elapsed().as_secs_f64();
    let total = acked.load(Ordering::Relaxed);
    while delivered.load(Ordering::Relaxed) < total && start.elapsed() < duration * 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_secs = start.elapsed().as_secs_f64();
    let got = delivered.load(Ordering::Relaxed);
    println!(
        "machine: {} cpus; pairs {pairs}; window {WINDOW}; body 200 B; durability full",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "acked {total} in {send_secs:.2} s = {:.0} msg/s; delivered {got} in {all_secs:.2} s = {:.0} msg/s",
        total as f64 / send_secs,
        got as f64 / all_secs
    );
    shutdown.cancel();
    let _ = server_task.await;
    for r in receivers {
        r.abort();
    }
}
