//! `chatd bench` cannot rot: every scenario runs with tiny parameters and reports sane,
//! non-zero figures, on SQLite and (with `--pg`, the private cluster of `crate::pg`) on
//! PostgreSQL, one node and the two-node `cluster`. Performance numbers are never asserted.

use std::process::Command;
use std::time::Duration;

use chat_svc::bench::{
    render_table, run_scenarios, Backend, BenchOptions, IrcOptions, PgAdmin, Report, Scenario,
    TargetSpec,
};
use chat_svc::store::Durability;
use sqlx::{Connection, Executor, PgConnection};

const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

/// Why the in-process bench runs only once, in the SQLite run of the suite.
const BENCH_DB: &str = "the bench's in-process server makes its own SQLite database";

fn find<'a>(reports: &'a [Report], scenario: &str) -> &'a Report {
    reports
        .iter()
        .find(|r| r.scenario == scenario)
        .unwrap_or_else(|| panic!("no {scenario} report in {reports:?}"))
}

fn figure(r: &Report, key: &str) -> f64 {
    r.figures
        .get(key)
        .and_then(|v| v.as_f64())
        .unwrap_or_else(|| panic!("{} has no figure {key}: {r:?}", r.scenario))
}

/// p50 ≤ p99 ≤ p99.9 ≤ max, all present and positive.
fn assert_percentiles(r: &Report) {
    let p = [r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms]
        .map(|v| v.unwrap_or_else(|| panic!("{} lacks a percentile: {r:?}", r.scenario)));
    assert!(p[0] > 0.0, "{r:?}");
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_completes_with_sane_figures() {
    if crate::common::sqlite_only(BENCH_DB) {
        return;
    }
    let options = BenchOptions {
        scenarios: vec![],
        duration: Duration::from_secs(1),
        pairs: 2,
        window: 8,
        rates: vec![200],
        cluster_rates: vec![200],
        members: 5,
        body_bytes: 200,
        backlog: 500,
        connections: Some(50),
        flood: 2,
        durability: Durability::Full,
        pg: None,
        backends: vec![Backend::Sqlite],
        target: TargetSpec::InProcess {
            server_exe: Some(CHATD.into()),
        },
        irc: IrcOptions::default(),
    };
    let mut seen = Vec::new();
    let reports = run_scenarios(&options, |r| {
        seen.push(r.scenario.clone());
        Ok(())
    })
    .await
    .unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(
        names,
        [
            "throughput",
            "latency",
            "cluster",
            "fanout",
            "backlog",
            "connections",
            "irc",
            "irc",
            "login"
        ]
    );
    assert_eq!(seen, names);
    for r in &reports {
        assert!(r.machine.cores > 0, "{r:?}");
        assert_eq!(r.durability, "full");
    }
    // Without --pg the cluster is skipped with a line saying why, and nothing names a
    // backend column.
    let c = find(&reports, "cluster");
    assert_eq!(c.status, "skipped", "{c:?}");
    assert!(c.note.as_ref().unwrap().contains("needs --pg"), "{c:?}");
    assert!(c.backend.is_none(), "{c:?}");
    assert_eq!(
        find(&reports, "throughput").backend.as_deref(),
        Some("sqlite")
    );

    let t = find(&reports, "throughput");
    assert!(t.acked_per_sec.unwrap() > 0.0, "{t:?}");
    assert!(t.delivered_per_sec.unwrap() > 0.0, "{t:?}");
    assert!(!t.figures.contains_key("undelivered"), "{t:?}");
    assert_percentiles(t);

    let l = find(&reports, "latency");
    assert_eq!(figure(l, "offered_per_sec"), 200.0);
    assert!(l.delivered_per_sec.unwrap() > 0.0, "{l:?}");
    assert!(!l.figures.contains_key("undelivered"), "{l:?}");
    assert_percentiles(l);

    let f = find(&reports, "fanout");
    let messages = figure(f, "messages");
    assert!(messages > 0.0, "{f:?}");
    assert_eq!(figure(f, "deliveries"), messages * 4.0, "{f:?}");
    assert!(!f.figures.contains_key("undelivered"), "{f:?}");
    assert_percentiles(f);

    let b = find(&reports, "backlog");
    assert!(b.drain_secs.unwrap() > 0.0, "{b:?}");
    assert_eq!(figure(b, "messages"), 500.0);

    let c = find(&reports, "connections");
    assert_eq!(c.connections, Some(50));
    assert!(c.server_kib_per_conn.is_some(), "{c:?}");
    assert!(figure(c, "rss_after_kib") > 0.0, "{c:?}");
    assert!(figure(c, "establish_secs") > 0.0, "{c:?}");
    assert!(figure(c, "fd_limit") >= 50.0, "{c:?}");
    assert_eq!(c.figures["rss_scope"], "server process");

    // The irc scenario against a child chatd: both phases, nothing lost.
    let irc: Vec<&Report> = reports.iter().filter(|r| r.scenario == "irc").collect();
    assert_eq!(irc[0].figures["phase"], "open_loop");
    assert_eq!(figure(irc[0], "messages"), 200.0, "{:?}", irc[0]);
    assert_eq!(irc[1].figures["phase"], "throughput");
    for r in &irc {
        assert_eq!(figure(r, "lost"), 0.0, "{r:?}");
        assert!(r.server.contains("chatd child process"), "{r:?}");
        assert_percentiles(r);
    }

    let g = find(&reports, "login");
    assert!(g.logins_per_sec.unwrap() > 0.0, "{g:?}");
    assert!(figure(g, "flood_attempts") > 0.0, "{g:?}");
    assert!(figure(g, "guess_attempts") > 0.0, "{g:?}");
    assert!(figure(g, "unloaded_p99_ms") > 0.0, "{g:?}");
    assert_percentiles(g);

    let table = render_table(&reports);
    assert_eq!(table.lines().filter(|l| l.starts_with("login ")).count(), 1);
    assert!(!table.contains("backend"), "{table}");
}

#[test]
fn the_binary_prints_json_and_refuses_a_server_without_its_database() {
    if crate::common::sqlite_only(BENCH_DB) {
        return;
    }
    let out = Command::new(CHATD)
        .args([
            "bench",
            "fanout",
            "--json",
            "--members",
            "3",
            "--duration",
            "0.3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(line["scenario"], "fanout");
    assert_eq!(line["status"], "ok");
    assert!(line["delivered_per_sec"].as_f64().unwrap() > 0.0, "{line}");
    assert!(line["machine"]["cores"].as_u64().unwrap() > 0);

    let out = Command::new(CHATD)
        .args(["bench", "--server", "127.0.0.1:9", "--pin"])
        .arg(format!("sha256:{}", "ab".repeat(32)))
        .env_remove("CHATD_DB")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chatd: error: --server needs --db"), "{err}");
}

/// Options for the `irc` scenario alone: `pairs` pairs, 1 s phases, open loop at `rate`/s.
fn irc_only(pairs: usize, rate: u64, irc: IrcOptions) -> BenchOptions {
    BenchOptions {
        scenarios: vec![Scenario::Irc],
        duration: Duration::from_secs(1),
        pairs,
        window: 4,
        rates: vec![rate],
        cluster_rates: vec![rate],
        members: 2,
        body_bytes: 200,
        backlog: 1,
        connections: None,
        flood: 1,
        durability: Durability::Full,
        pg: None,
        backends: vec![Backend::Sqlite],
        target: TargetSpec::InProcess { server_exe: None },
        irc,
    }
}

/// The `irc` scenario against the in-process chatd's plaintext gateway: each phase delivers
/// every message it sent, in order, and the counts agree. Speed is never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_scenario_delivers_every_message_over_the_gateway() {
    if crate::common::sqlite_only(BENCH_DB) {
        return;
    }
    let options = irc_only(3, 300, IrcOptions::default());
    let reports = run_scenarios(&options, |_| Ok(())).await.unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    let (open, window) = (&reports[0], &reports[1]);
    assert_eq!(open.scenario, "irc");
    assert_eq!(open.figures["phase"], "open_loop");
    assert_eq!(figure(open, "offered_per_sec"), 300.0);
    // duration × rate, every one delivered.
    assert_eq!(figure(open, "messages"), 300.0, "{open:?}");
    assert_eq!(window.figures["phase"], "throughput");
    assert!(figure(window, "messages") > 0.0, "{window:?}");
    for r in &reports {
        assert_eq!(figure(r, "lost"), 0.0, "{r:?}");
        assert!(r.acked_per_sec.is_none(), "IRC has no acks: {r:?}");
        assert!(r.delivered_per_sec.unwrap() > 0.0, "{r:?}");
        assert!(r.server.contains("chatd in-process"), "{r:?}");
        assert!(
            r.server.contains("(chatd-"),
            "the 004 version names it: {r:?}"
        );
        assert!(r.note.as_ref().unwrap().contains(&r.server), "{r:?}");
        assert_eq!(r.durability, "full");
        assert_percentiles(r);
    }
}

/// A stand-in IRC server that answers every registration with `433`: the scenario stops
/// with one clear error naming the nick, instead of waiting or measuring nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_scenario_names_a_nick_in_use() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(nick) = line.strip_prefix("NICK ") {
                        let reply = format!(":fake 433 * {nick} :Nickname is already in use\r\n");
                        let _ = write.write_all(reply.as_bytes()).await;
                    }
                }
            });
        }
    });
    let irc = IrcOptions {
        server: Some(addr),
        pass: None,
    };
    let options = irc_only(1, 10, irc);
    let err = run_scenarios(&options, |_| Ok(())).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("already in use (433)"), "{text}");
    assert!(text.contains(&addr.to_string()), "{text}");
}

#[test]
fn the_binary_refuses_an_irc_server_off_this_machine() {
    let out = Command::new(CHATD)
        .args(["bench", "irc", "--irc-server", "192.0.2.1:6667"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("chatd: error: --irc-server 192.0.2.1:6667 is not a loopback address"),
        "{err}"
    );
}

/// `chatd bench irc --irc-server …` alone starts no chatd, so its header must not describe
/// an in-process chatd and its durability (it did); an IRC server that refuses the
/// connection is one error line.
#[test]
fn the_header_of_an_external_irc_run_names_no_chatd_server() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = Command::new(CHATD)
        .args(["bench", "irc", "--duration", "1", "--irc-server", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let header = String::from_utf8_lossy(&out.stdout);
    assert!(header.contains("server:     none of chatd's"), "{header}");
    assert!(
        header.contains("durability: as configured on the IRC server"),
        "{header}"
    );
    assert!(!header.contains("in-process"), "{header}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot connect to the IRC server"), "{err}");
}

/// The PostgreSQL scenarios run in target `it` only: they make their own databases in the
/// private cluster, whatever the backend of the suite.
fn in_the_sqlite_run_only() -> bool {
    if crate::BACKEND == crate::common::Backend::Sqlite {
        return false;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    eprintln!("{test}: runs in target it (it makes its own PostgreSQL databases)");
    true
}

/// The names of the databases of the private cluster that this process's bench made.
async fn bench_databases(admin_url: &str) -> Vec<String> {
    let mut conn = PgConnection::connect(admin_url).await.unwrap();
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
            .bind(format!("chatd_bench_{}_%", std::process::id()))
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.ok();
    names
}

/// With `--pg`: throughput and latency on both backends side by side, and the two-node
/// cluster (senders on node A, recipients on node B) delivering every message across at its
/// offered rate, then closed loop; every scratch database dropped afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_node_and_the_cluster_beside_sqlite() {
    if in_the_sqlite_run_only() {
        return;
    }
    let Some(admin_url) = tokio::task::spawn_blocking(crate::pg::admin_url)
        .await
        .unwrap()
    else {
        return;
    };
    let pg: PgAdmin = admin_url.parse().unwrap();
    let options = BenchOptions {
        scenarios: vec![Scenario::Throughput, Scenario::Latency, Scenario::Cluster],
        duration: Duration::from_secs(1),
        pairs: 2,
        window: 8,
        rates: vec![200],
        cluster_rates: vec![300],
        members: 2,
        body_bytes: 200,
        backlog: 1,
        connections: None,
        flood: 1,
        durability: Durability::Full,
        pg: Some(pg),
        backends: vec![Backend::Sqlite, Backend::Postgres],
        target: TargetSpec::InProcess { server_exe: None },
        irc: IrcOptions::default(),
    };
    let reports = run_scenarios(&options, |_| Ok(())).await.unwrap();
    let rows: Vec<(&str, Option<&str>)> = reports
        .iter()
        .map(|r| (r.scenario.as_str(), r.backend.as_deref()))
        .collect();
    assert_eq!(
        rows,
        [
            ("throughput", Some("sqlite")),
            ("throughput", Some("postgres")),
            ("latency", Some("sqlite")),
            ("latency", Some("postgres")),
            ("cluster", Some("postgres")),
            ("cluster", Some("postgres")),
        ]
    );
    for r in &reports {
        assert_eq!(r.status, "ok", "{r:?}");
        assert!(r.acked_per_sec.unwrap() > 0.0, "{r:?}");
        assert!(r.delivered_per_sec.unwrap() > 0.0, "{r:?}");
        assert!(!r.figures.contains_key("undelivered"), "{r:?}");
        assert_percentiles(r);
        match r.backend.as_deref() {
            Some("postgres") => assert!(
                r.durability.starts_with("full: postgres fsync ")
                    && r.durability.contains("synchronous_commit"),
                "{r:?}"
            ),
            _ => assert_eq!(r.durability, "full", "{r:?}"),
        }
    }
    let latency_pg = &reports[3];
    assert_eq!(figure(latency_pg, "messages"), 200.0, "{latency_pg:?}");
    let (open, closed) = (&reports[4], &reports[5]);
    assert_eq!(open.figures["phase"], "open_loop");
    assert_eq!(figure(open, "offered_per_sec"), 300.0);
    // duration × rate, each one delivered on the other node.
    assert_eq!(figure(open, "messages"), 300.0, "{open:?}");
    assert!(figure(open, "stored_p50_ms") > 0.0, "{open:?}");
    assert_eq!(closed.figures["phase"], "throughput");
    assert!(figure(closed, "messages") > 0.0, "{closed:?}");
    for r in [open, closed] {
        assert!(
            r.server.starts_with("2 in-process nodes on 127.0.0.1:"),
            "{r:?}"
        );
        assert_eq!(r.params["nodes"], 2, "{r:?}");
    }
    let table = render_table(&reports);
    assert!(table.starts_with("scenario    backend "), "{table}");
    assert!(table.contains("\nthroughput  postgres "), "{table}");
    assert!(table.contains("\ncluster     postgres "), "{table}");
    assert_eq!(bench_databases(&admin_url).await, Vec::<String>::new());
}

/// The binary's refusals with PostgreSQL are one line each: no --pg for the cluster or the
/// postgres backend, a cluster it cannot reach (the password never shown), a role that may
/// not create databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_a_postgres_run_it_cannot_make_in_one_line() {
    if in_the_sqlite_run_only() {
        return;
    }
    let refusal = |args: &[&str]| {
        let out = Command::new(CHATD)
            .arg("bench")
            .args(args)
            .args(["--duration", "0.3"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        err
    };
    let err = refusal(&["cluster"]);
    assert!(
        err.starts_with("chatd: error: the cluster scenario needs --pg postgres://"),
        "{err}"
    );
    let err = refusal(&["throughput", "--backend", "sqlite,postgres"]);
    assert!(
        err.starts_with("chatd: error: --backend postgres needs --pg"),
        "{err}"
    );
    let err = refusal(&["throughput", "--pg", "sqlite:/tmp/x.db"]);
    assert!(
        err.starts_with("chatd: error: --pg wants a postgres:// URL"),
        "{err}"
    );
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://chatd:s3cret@127.0.0.1:{port}/postgres");
    let err = refusal(&["throughput", "--pg", &url]);
    assert!(
        err.starts_with(&format!(
            "chatd: error: cannot connect to PostgreSQL at postgres://chatd:***@127.0.0.1:{port}/postgres (--pg): "
        )),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");

    let Some(admin_url) = tokio::task::spawn_blocking(crate::pg::admin_url)
        .await
        .unwrap()
    else {
        return;
    };
    let role = format!("bench_nocreate_{}", std::process::id());
    let mut conn = PgConnection::connect(&admin_url).await.unwrap();
    conn.execute(format!("CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'").as_str())
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(Some(&format!("pw-{role}"))).unwrap();
    let err = tokio::task::spawn_blocking(move || refusal(&["latency", "--pg", url.as_str()]))
        .await
        .unwrap();
    conn.execute(format!("DROP ROLE {role}").as_str())
        .await
        .unwrap();
    conn.close().await.ok();
    assert!(
        err.starts_with(&format!(
            "chatd: error: --pg: PostgreSQL role {role} may not create databases"
        )),
        "{err}"
    );
}
