//! `chatd bench` cannot rot: every scenario runs with tiny parameters and reports sane,
//! non-zero figures. Performance numbers are never asserted.

use std::process::Command;
use std::time::Duration;

use chat_svc::bench::{render_table, run_scenarios, BenchOptions, Report, TargetSpec};
use chat_svc::store::Durability;

const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

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
    let options = BenchOptions {
        scenarios: vec![],
        duration: Duration::from_secs(1),
        pairs: 2,
        window: 8,
        rates: vec![200],
        members: 5,
        body_bytes: 200,
        backlog: 500,
        connections: Some(50),
        flood: 2,
        durability: Durability::Full,
        target: TargetSpec::InProcess {
            server_exe: Some(CHATD.into()),
        },
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
            "fanout",
            "backlog",
            "connections",
            "login"
        ]
    );
    assert_eq!(seen, names);
    for r in &reports {
        assert!(r.machine.cores > 0, "{r:?}");
        assert_eq!(r.durability, "full");
    }

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

    let g = find(&reports, "login");
    assert!(g.logins_per_sec.unwrap() > 0.0, "{g:?}");
    assert!(figure(g, "flood_attempts") > 0.0, "{g:?}");
    assert!(figure(g, "guess_attempts") > 0.0, "{g:?}");
    assert!(figure(g, "unloaded_p99_ms") > 0.0, "{g:?}");
    assert_percentiles(g);

    let table = render_table(&reports);
    assert_eq!(table.lines().filter(|l| l.starts_with("login ")).count(), 1);
}

#[test]
fn the_binary_prints_json_and_refuses_a_server_without_its_database() {
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
