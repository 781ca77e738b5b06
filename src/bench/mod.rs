//! `chatd bench`: load scenarios that drive a server over real TLS with the project's own
//! client library, and report what it carried.
//!
//! By default every scenario gets a fresh in-process server (`Server::start` +
//! `Server::run` on `127.0.0.1:0` over a temporary directory), so scenarios do not disturb
//! each other: the login flood, for one, leaves 127.0.0.1 throttled. The `connections`
//! scenario runs the server as a child process instead when it can (the `chatd` binary), so
//! the memory it reports is the server's alone. With `--server ADDR --pin PIN --db PATH` the
//! scenarios drive an existing server and create their accounts through the admin path
//! (that server's database), under names no one else uses.
//!
//! This module never panics on a failed connection or a refused request: errors come back as
//! `anyhow` errors naming the scenario, and the binary prints them.
//!
//! # Submodules
//!
//! Imports go one way, down this list (each module uses only modules below it; the test
//! `submodules_import_one_way` checks it):
//!
//! ```text
//! bench (this file)   run: the header, each scenario in turn, the table or JSON lines
//!  └─ scenarios       one module each, `run(&Ctx) -> Result<Vec<Report>>`:
//!     throughput, latency, fanout, backlog, connections, login (native, over TLS),
//!     irc (plaintext IRC: its own connections and pairs, chatd's gateway or --irc-server)
//!      └─ ctx         Ctx: options, machine, the accounts' password hash, fresh names,
//!                     the server to drive, progress bars
//!         └─ options  Scenario, BenchArgs → BenchOptions (TargetSpec, IrcOptions), the header
//!            └─ load  the load every scenario shares: stamped bodies, histograms, counters,
//!                     native pairs (made, connected, split into recipients and senders),
//!                     closed-loop senders, the open-loop pacer (native and IRC senders),
//!                     timed phases and their end
//!               ├─ target  the server under load (in-process, child `chatd serve`,
//!               │          external) and the admin path that creates accounts
//!               └─ report  Report, Machine, the table and JSON lines; knows no scenario
//! ```
//!
//! Adding a scenario means a variant of [`Scenario`] (in `options`), a module above `ctx`,
//! and a line in [`run_scenarios`].

mod backlog;
mod connections;
mod ctx;
mod fanout;
mod irc;
mod latency;
mod load;
mod login;
mod options;
mod report;
mod target;
mod throughput;

use anyhow::{Context, Result};

use ctx::Ctx;
pub use options::{BenchArgs, BenchOptions, IrcOptions, Scenario, TargetSpec};
pub use report::{render_table, Machine, Report};

/// Runs `chatd bench` from the command line: the header, then the table (or JSON lines) on
/// standard output. Called by the `chatd` binary, whose own path runs the child server.
pub async fn run(args: BenchArgs, db: Option<crate::store::DbTarget>) -> Result<()> {
    let options = BenchOptions::from_args(&args, db, std::env::current_exe().ok())?;
    let json = args.json;
    if !json {
        options::print_header(&Machine::detect(), &options)?;
    }
    // The in-process servers log as `chatd serve` does, a line per login; that would bury
    // the progress display. So the scenarios run on a runtime of their own whose threads
    // log warnings and errors only (unless RUST_LOG says otherwise).
    let quiet = quiet_logging();
    let bench = tokio::task::spawn_blocking(move || {
        let _quiet = tracing::dispatcher::set_default(&quiet);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .on_thread_start(move || {
                // Held for the thread's whole life: the thread is the runtime's.
                std::mem::forget(tracing::dispatcher::set_default(&quiet));
            })
            .build()
            .context("cannot start the bench runtime")?;
        let mut done = Vec::new();
        let result = runtime.block_on(run_scenarios(&options, |r| {
            if json {
                report::print_json(r)?;
            }
            done.push(r.clone());
            Ok(())
        }));
        if !json && !done.is_empty() {
            report::print_table(&done)?;
        }
        result.map(|_| ())
    });
    bench.await.context("the bench thread failed")?
}

/// A log subscriber for the bench's threads: warnings and errors, or what RUST_LOG says.
fn quiet_logging() -> tracing::Dispatch {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .finish(),
    )
}

/// Runs the selected scenarios one after the other, handing each report to `on_report` as
/// it is made, and returns them all.
pub async fn run_scenarios(
    options: &BenchOptions,
    mut on_report: impl FnMut(&Report) -> Result<()>,
) -> Result<Vec<Report>> {
    options.validate()?;
    let ctx = Ctx::new(options).await?;
    let mut reports = Vec::new();
    for scenario in options.selected() {
        let made = match scenario {
            Scenario::Throughput => throughput::run(&ctx).await,
            Scenario::Latency => latency::run(&ctx).await,
            Scenario::Fanout => fanout::run(&ctx).await,
            Scenario::Backlog => backlog::run(&ctx).await,
            Scenario::Connections => connections::run(&ctx).await,
            Scenario::Irc => irc::run(&ctx).await,
            Scenario::Login => login::run(&ctx).await,
        }
        .with_context(|| format!("bench scenario {}", scenario.name()))?;
        for mut r in made {
            r.machine = ctx.machine.clone();
            r.durability = match (scenario, &options.irc.server) {
                (Scenario::Irc, Some(_)) => "as configured on the IRC server".to_string(),
                _ => options.durability_label(),
            };
            on_report(&r)?;
            reports.push(r);
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// Every submodule's source, as compiled.
    const SOURCES: [(&str, &str); 12] = [
        ("backlog", include_str!("backlog.rs")),
        ("connections", include_str!("connections.rs")),
        ("ctx", include_str!("ctx.rs")),
        ("fanout", include_str!("fanout.rs")),
        ("irc", include_str!("irc.rs")),
        ("latency", include_str!("latency.rs")),
        ("load", include_str!("load.rs")),
        ("login", include_str!("login.rs")),
        ("options", include_str!("options.rs")),
        ("report", include_str!("report.rs")),
        ("target", include_str!("target.rs")),
        ("throughput", include_str!("throughput.rs")),
    ];

    /// The code of a file without its tests and comments.
    fn code(source: &str) -> String {
        let source = source.split("#[cfg(test)]").next().unwrap_or_default();
        source
            .lines()
            .map(|l| l.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The first identifier of `text` (after white space).
    fn ident(text: &str) -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    }

    /// What a submodule's source names through its parent (`super::x`, `super::{x, y::z}`,
    /// `crate::bench::x`): sibling modules by name, anything else as `bench`, the parent.
    fn uses(source: &str, siblings: &BTreeSet<&str>) -> BTreeSet<String> {
        let code = code(source);
        let mut named = Vec::new();
        for prefix in ["super::", "crate::bench::"] {
            for (at, _) in code.match_indices(prefix) {
                let rest = &code[at + prefix.len()..];
                let Some(group) = rest.strip_prefix('{') else {
                    named.push(ident(rest));
                    continue;
                };
                // The first identifier of each top-level item of the group.
                let mut depth = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && !c.is_whitespace() => {
                            named.push(ident(&group[i..]));
                            item_start = false;
                        }
                        _ => {}
                    }
                }
            }
        }
        named
            .into_iter()
            .map(|n| {
                if siblings.contains(n.as_str()) {
                    n
                } else {
                    "bench".to_string()
                }
            })
            .collect()
    }

    /// A cycle in `edges`, if there is one: the modules on it in order.
    fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            node: &str,
            edges: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|p| p == node) {
                let mut found = path[at..].to_vec();
                found.push(node.to_string());
                return Some(found);
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_string());
            for next in edges.get(node).into_iter().flatten() {
                if let Some(found) = visit(next, edges, path, done) {
                    return Some(found);
                }
            }
            path.pop();
            done.insert(node.to_string());
            None
        }
        let mut done = BTreeSet::new();
        edges
            .keys()
            .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
    }

    /// The arrows drawn in the module docs go one way: no submodule uses its parent (the
    /// parent uses them all), and the submodules' uses of each other form no cycle.
    #[test]
    fn submodules_import_one_way() {
        let parent = code(include_str!("mod.rs"));
        let declared: BTreeSet<&str> = parent
            .lines()
            .filter_map(|l| l.trim().strip_prefix("mod ")?.strip_suffix(';'))
            .collect();
        let listed: BTreeSet<&str> = SOURCES.iter().map(|(name, _)| *name).collect();
        assert_eq!(declared, listed, "SOURCES must list every submodule");
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        edges.insert(
            "bench".to_string(),
            listed.iter().map(|n| n.to_string()).collect(),
        );
        for (name, source) in SOURCES {
            let mut used = uses(source, &listed);
            used.remove(name);
            edges.insert(name.to_string(), used);
        }
        if let Some(found) = cycle(&edges) {
            panic!(
                "import cycle in src/bench: {}\nall uses: {edges:#?}",
                found.join(" -> ")
            );
        }
    }

    #[test]
    fn uses_are_read_from_paths_and_groups() {
        let siblings: BTreeSet<&str> = ["load", "report", "target"].into_iter().collect();
        let source = "use super::load::{self, Counters};\n\
                      use super::{report::round, Ctx};\n\
                      // super::target in a comment does not count\n\
                      fn f() { crate::bench::report::thousands(1); }\n\
                      #[cfg(test)]\nmod tests { use super::target; }\n";
        let got: Vec<String> = uses(source, &siblings).into_iter().collect();
        assert_eq!(got, ["bench", "load", "report"]);
    }
}
