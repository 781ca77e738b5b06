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
//! With `--pg URL` (a PostgreSQL cluster's admin URL) the in-process servers can also run on
//! PostgreSQL, a fresh database per scenario: `--backend sqlite,postgres` (the default with
//! `--pg`) runs each scenario on each backend in turn, side by side in the table; and the
//! `cluster` scenario runs two nodes on one database, senders on one and recipients on the
//! other.
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
//!     throughput, latency, cluster, fanout, backlog, connections, login (native, over
//!     TLS), irc (plaintext IRC: its own connections and pairs, chatd's gateway or
//!     --irc-server)
//!      └─ ctx         Ctx: options, machine, the accounts' password hash, fresh names,
//!                     the backend, the server to drive, progress bars
//!         └─ options  Scenario, Backend, BenchArgs → BenchOptions (TargetSpec,
//!                     IrcOptions), the header
//!            └─ load  the load every scenario shares: stamped bodies, histograms, counters,
//!                     native pairs (made, connected, split into recipients and senders),
//!                     closed-loop senders, the open-loop pacer (native and IRC senders),
//!                     timed phases and their end
//!               ├─ target  the server under load (in-process on SQLite or PostgreSQL, one
//!               │          node or a cluster; child `chatd serve`; external) and the admin
//!               │          path that creates accounts
//!               │   └─ pgadmin  the --pg cluster: its settings, a fresh database per
//!               │               server (or cluster), dropped after
//!               └─ report  Report, Machine, the table and JSON lines; knows no scenario
//! ```
//!
//! Adding a scenario means a variant of [`Scenario`] (in `options`), a module above `ctx`,
//! and a line in [`run_scenarios`].

mod backlog;
mod cluster;
mod connections;
mod ctx;
mod fanout;
mod irc;
mod latency;
mod load;
mod login;
mod options;
mod pgadmin;
mod report;
mod target;
mod throughput;

use anyhow::{Context, Result};

use ctx::Ctx;
use options::Backend as B;
pub use options::{Backend, BenchArgs, BenchOptions, IrcOptions, PgUrl, Scenario, TargetSpec};
pub use pgadmin::PgAdmin;
pub use report::{render_table, Machine, Report};

/// Runs `chatd bench` from the command line: the header, then the table (or JSON lines) on
/// standard output. Called by the `chatd` binary, whose own path runs the child server.
pub async fn run(args: BenchArgs, db: Option<crate::store::DbTarget>) -> Result<()> {
    let options = BenchOptions::from_args(&args, db, std::env::current_exe().ok())?;
    let json = args.json;
    if !json {
        let pg = match &options.pg {
            Some(admin) => Some(admin.probe().await?),
            None => None,
        };
        options::print_header(&Machine::detect(), &options, pg.as_ref())?;
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

/// Runs the selected scenarios one after the other (each on each backend in turn), handing
/// each report to `on_report` as it is made, and returns them all. Scratch PostgreSQL
/// databases a failed scenario left behind are dropped before it returns.
pub async fn run_scenarios(
    options: &BenchOptions,
    mut on_report: impl FnMut(&Report) -> Result<()>,
) -> Result<Vec<Report>> {
    options.validate()?;
    let ctx = Ctx::new(options).await?;
    let result = run_each(&ctx, &mut on_report).await;
    if let Some(admin) = &options.pg {
        let cleaned = admin.drop_leftovers().await;
        if result.is_ok() {
            cleaned?;
        }
    }
    result
}

async fn run_each(
    base: &Ctx<'_>,
    on_report: &mut impl FnMut(&Report) -> Result<()>,
) -> Result<Vec<Report>> {
    let options = base.options;
    let mut reports = Vec::new();
    for scenario in options.selected() {
        // The cluster is PostgreSQL's alone: it runs once, whatever the backends.
        let backends = match scenario {
            Scenario::Cluster => vec![B::Postgres],
            _ => options.backends.clone(),
        };
        for backend in backends {
            let ctx = base.on(backend);
            let made =
                run_one(&ctx, scenario)
                    .await
                    .with_context(|| match options.backends.len() {
                        1 => format!("bench scenario {}", scenario.name()),
                        _ => format!("bench scenario {} on {}", scenario.name(), backend.name()),
                    })?;
            for mut r in made {
                r.machine = ctx.machine.clone();
                let external_irc = scenario == Scenario::Irc && options.irc.server.is_some();
                r.durability = match (&ctx.pg_server, backend) {
                    _ if external_irc => "as configured on the IRC server".to_string(),
                    (Some(pg), B::Postgres) => pg.durability(options.durability),
                    _ => options.durability_label(),
                };
                r.backend = match &options.target {
                    _ if external_irc => None,
                    // Skipped for want of --pg: no server ran.
                    _ if scenario == Scenario::Cluster && options.pg.is_none() => None,
                    TargetSpec::External { db, .. } => Some(
                        match db {
                            crate::store::DbTarget::Sqlite(_) => "sqlite",
                            crate::store::DbTarget::Postgres(_) => "postgres",
                        }
                        .to_string(),
                    ),
                    TargetSpec::InProcess { .. } => Some(backend.name().to_string()),
                };
                on_report(&r)?;
                reports.push(r);
            }
        }
    }
    Ok(reports)
}

/// One scenario on `ctx`'s backend, or the line that says why it does not run there.
async fn run_one(ctx: &Ctx<'_>, scenario: Scenario) -> Result<Vec<Report>> {
    let on_postgres = ctx.backend == B::Postgres;
    if scenario == Scenario::Cluster && ctx.options.pg.is_none() {
        return Ok(vec![Report::skipped(
            scenario.name(),
            "needs --pg postgres://USER@HOST:PORT/DB (two nodes on one PostgreSQL database)",
        )]);
    }
    if on_postgres && !scenario.runs_on_postgres() {
        return Ok(vec![Report::skipped(
            scenario.name(),
            "measured on SQLite only (its servers are started its own way)",
        )]);
    }
    match scenario {
        Scenario::Throughput => throughput::run(ctx).await,
        Scenario::Latency => latency::run(ctx).await,
        Scenario::Cluster => cluster::run(ctx).await,
        Scenario::Fanout => fanout::run(ctx).await,
        Scenario::Backlog => backlog::run(ctx).await,
        Scenario::Connections => connections::run(ctx).await,
        Scenario::Irc => irc::run(ctx).await,
        Scenario::Login => login::run(ctx).await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// Every submodule's source, as compiled.
    const SOURCES: [(&str, &str); 14] = [
        ("backlog", include_str!("backlog.rs")),
        ("cluster", include_str!("cluster.rs")),
        ("connections", include_str!("connections.rs")),
        ("ctx", include_str!("ctx.rs")),
        ("fanout", include_str!("fanout.rs")),
        ("irc", include_str!("irc.rs")),
        ("latency", include_str!("latency.rs")),
        ("load", include_str!("load.rs")),
        ("login", include_str!("login.rs")),
        ("options", include_str!("options.rs")),
        ("pgadmin", include_str!("pgadmin.rs")),
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
