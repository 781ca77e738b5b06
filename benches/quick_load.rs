//! A quick load: the `throughput` scenario of `chatd bench` (N sender→recipient pairs over
//! real TLS on loopback, a window of 64 sends in flight each, durable mode). Run with
//! `cargo bench --bench quick_load [-- PAIRS SECONDS]`; `chatd bench` has every scenario.

use std::time::Duration;

use chat_svc::bench::{render_table, run_scenarios, Backend, BenchOptions, Scenario, TargetSpec};
use chat_svc::store::Durability;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let pairs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(50);
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let options = BenchOptions {
        scenarios: vec![Scenario::Throughput],
        duration: Duration::from_secs(secs.max(1)),
        pairs: pairs.max(1),
        window: 64,
        rates: vec![10_000],
        cluster_rates: vec![5_000],
        members: 100,
        body_bytes: 200,
        backlog: 100_000,
        connections: None,
        flood: 8,
        durability: Durability::Full,
        pg: None,
        backends: vec![Backend::Sqlite],
        target: TargetSpec::InProcess { server_exe: None },
        irc: Default::default(),
    };
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run_scenarios(&options, |_| Ok(()))));
    match result {
        Ok(reports) => {
            print!("{}", render_table(&reports));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quick_load: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
