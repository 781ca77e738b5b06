//! `connections`: as many authenticated, subscribed, idle TLS connections as the file
//! descriptor limit allows (the soft limit is first raised to the hard one), the server's
//! resident memory per connection, and the time to establish them.
//!
//! The server runs as a child process when the bench knows a `chatd` binary, so its memory
//! is its own and it has its own descriptor limit; otherwise it runs in-process, each
//! connection takes two descriptors, and the memory includes the bench's client side.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures::stream::{self, StreamExt};

use super::ctx::Ctx;
use super::load;
use super::options::TargetSpec;
use super::report::{round, thousands, Report};
use super::target::{capacity_limits, Target};
use crate::client::Connection;
use crate::protocol::Secret;
use crate::server::Limits;

/// Descriptors kept for everything else (database, listener, runtime, stdio).
const FD_RESERVE: u64 = 256;
/// Connections to one loopback address:port can use at most the ephemeral port range.
const PORT_CAP: u64 = 28_000;
/// Connections being set up at once.
const CONCURRENCY: usize = 64;
/// Connections pinged afterwards to check they are alive.
const PING_SAMPLE: usize = 200;

pub(super) async fn run(ctx: &Ctx<'_>) -> Result<Vec<Report>> {
    let o = ctx.options;
    let bar = ctx.progress("connections", None);
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX)
        .context("cannot read or raise the open-file limit")?;
    let (child_exe, in_process) = match &o.target {
        TargetSpec::InProcess { server_exe } => (server_exe.clone(), server_exe.is_none()),
        TargetSpec::External { .. } => (None, false),
    };
    let fds_per_conn = if in_process { 2 } else { 1 };
    let by_fds = fd_limit.saturating_sub(FD_RESERVE) / fds_per_conn;
    let wanted = o
        .connections
        .map_or(by_fds.min(PORT_CAP), |c| (c as u64).min(by_fds));
    if wanted == 0 {
        return Err(anyhow!(
            "the open-file limit ({fd_limit}) leaves no room for connections"
        ));
    }
    let n = wanted as usize;

    bar.set_message("starting the server");
    let target = match (&o.target, child_exe) {
        (TargetSpec::InProcess { .. }, Some(exe)) => {
            Target::child(&exe, o.durability, n + 16).await?
        }
        (TargetSpec::InProcess { .. }, None) => {
            let limits = Limits {
                max_connections: n + 16,
                ..capacity_limits()
            };
            Target::in_process(o.durability, Some(limits), None).await?
        }
        (TargetSpec::External { .. }, _) => ctx.target().await?,
    };
    bar.set_message(format!("creating {} accounts", thousands(wanted)));
    let prefix = ctx.prefix();
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-c{i}")).collect();
    let accounts = target
        .create_accounts(&names, &ctx.password_hash, true)
        .await?;
    let tokens: Vec<Secret> = accounts.into_iter().filter_map(|a| a.token).collect();

    // Let the server settle after account creation before taking the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = target.rss_kib();
    bar.set_length(wanted);
    bar.set_position(0);
    bar.set_message("connecting");
    let start = Instant::now();
    let mut conns: Vec<Connection> = Vec::with_capacity(n);
    let mut opened = stream::iter(tokens.iter())
        .map(|token| open_idle(&target, token))
        .buffer_unordered(CONCURRENCY);
    while let Some(conn) = opened.next().await {
        let conn =
            conn.with_context(|| format!("after {} connections", thousands(conns.len() as u64)))?;
        conns.push(conn);
        if conns.len() % 100 == 0 {
            bar.set_position(conns.len() as u64);
        }
    }
    drop(opened);
    let establish_secs = start.elapsed().as_secs_f64();

    bar.set_message("measuring");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = target.rss_kib();
    let ping_hist = ping_sample(&conns).await?;
    bar.finish_and_clear();
    let server = target.describe();
    let rss_scope = if target.is_in_process() {
        "bench process (server and clients)"
    } else {
        "server process"
    };
    drop(conns);
    target.stop().await;

    let mut report = Report::new("connections");
    report.server = server;
    report.connections = Some(wanted);
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        report.server_kib_per_conn = Some(round(
            after.saturating_sub(before) as f64 / wanted as f64,
            2,
        ));
        report.figure("rss_before_kib", before);
        report.figure("rss_after_kib", after);
    }
    report.figure("rss_scope", rss_scope);
    report.figure("fd_limit", fd_limit);
    report.figure("establish_secs", round(establish_secs, 3));
    report.figure(
        "established_per_sec",
        round(wanted as f64 / establish_secs, 1),
    );
    if !ping_hist.is_empty() {
        report.figure(
            "ping_p99_ms",
            round(ping_hist.value_at_quantile(0.99) as f64 / 1000.0, 3),
        );
    }
    report.param("connections", wanted);
    report.param("concurrency", CONCURRENCY);
    report.note = Some(format!(
        "each connection: TLS 1.3 + token auth + subscribe, then idle; memory is VmRSS of the \
         {rss_scope} (kernel socket buffers are not in it)"
    ));
    Ok(vec![report])
}

/// Connects, authenticates and subscribes, then leaves the connection idle.
async fn open_idle(target: &Target, token: &Secret) -> Result<Connection> {
    let mut conn = target.connect_token(token).await?;
    load::subscribe_caught_up(&mut conn).await?;
    Ok(conn)
}

/// Pings a sample of the connections at once; each must answer.
async fn ping_sample(conns: &[Connection]) -> Result<hdrhistogram::Histogram<u64>> {
    let mut hist = load::histogram()?;
    let step = (conns.len() / PING_SAMPLE).max(1);
    let pings = conns.iter().step_by(step).map(|c| async move {
        let t = Instant::now();
        c.client.ping().await?;
        Ok::<_, anyhow::Error>(t.elapsed())
    });
    for rtt in futures::future::join_all(pings).await {
        let rtt = rtt.context("an idle connection did not answer a ping")?;
        hist.saturating_record((rtt.as_micros() as u64).max(1));
    }
    Ok(hist)
}
