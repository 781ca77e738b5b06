//! `cluster`: two in-process nodes (two servers, each with its own writer and tail) on one
//! fresh PostgreSQL database, each on its own listener, serving the same key. Senders connect
//! to node A, recipients to node B, so every message crosses: A's writer commits it, and B's
//! tail (woken by the commit's `NOTIFY`) reads it back from the table and hands it to B's hub.
//!
//! Two phases, each on fresh nodes and a fresh database: open loop at each offered rate
//! (`--rate`, 5,000/s unless given; stamped with the intended send time, the first fifth
//! at most 1 s not recorded, as `latency`), then closed loop with a window of sends in
//! flight per sender (as `throughput`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use super::ctx::Ctx;
use super::load::{self, Counters, Timing};
use super::report::{round, thousands, Report};
use super::target::Target;

/// Nodes in the cluster.
const NODES: usize = 2;

pub(super) async fn run(ctx: &Ctx<'_>) -> Result<Vec<Report>> {
    let mut reports = Vec::new();
    for &rate in &ctx.options.cluster_rates {
        reports.push(open_loop(ctx, rate).await?);
    }
    reports.push(closed_loop(ctx).await?);
    Ok(reports)
}

/// Two nodes on a fresh database; the target is node A.
async fn start(ctx: &Ctx<'_>) -> Result<Target> {
    let scratch = ctx.scratch_db().await?;
    Target::in_process_cluster(ctx.options.durability, scratch, NODES).await
}

/// Node B of `cluster`.
fn node_b(cluster: &Target) -> Result<&Target> {
    cluster.node(1).context("the cluster has no second node")
}

/// Cross-node latency at `rate` messages/s offered.
async fn open_loop(ctx: &Ctx<'_>, rate: u64) -> Result<Report> {
    let o = ctx.options;
    let bar = ctx.progress("cluster", None);
    bar.set_message(format!("{}/s: starting two nodes", thousands(rate)));
    let cluster = start(ctx).await?;
    let accounts = cluster
        .create_pairs(&ctx.prefix(), o.pairs, &ctx.password_hash)
        .await?;

    let epoch = Instant::now();
    let warmup = load::warmup(o.duration);
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let pairs = load::connect_pairs_across(&cluster, node_b(&cluster)?, &accounts).await?;
    let timing = Timing::from_now(epoch, o.duration, warmup);
    let (recipients, senders) =
        load::start_pairs(pairs, epoch, timing.record_from_us, &counters, &stop);
    let pacing = tokio::spawn(load::open_loop(
        senders,
        rate,
        o.body_bytes,
        timing,
        Arc::clone(&counters),
    ));
    let status = || {
        format!(
            "{}/s offered, A → B: {} acked, {} delivered",
            thousands(rate),
            thousands(counters.acked()),
            thousands(counters.delivered())
        )
    };
    let start = timing.start;
    load::show_phase(&bar, start, timing.end(), status).await;
    let paced = pacing.await??;
    let send_secs = start.elapsed().as_secs_f64();
    let acked = counters.acked();
    let end = load::end_phase(
        cluster, &bar, recipients, &counters, &stop, start, o.duration, acked, status,
    )
    .await?;
    let mut report = end.report("cluster", acked, send_secs);
    report.figure("phase", "open_loop");
    report.figure("offered_per_sec", rate);
    report.figure("messages", paced.sent);
    let ms = |us: u64| round(us as f64 / 1000.0, 3);
    if !paced.stored.is_empty() {
        report.figure("stored_p50_ms", ms(paced.stored.value_at_quantile(0.5)));
        report.figure("stored_p99_ms", ms(paced.stored.value_at_quantile(0.99)));
    }
    if !paced.pacer_lag.is_empty() {
        report.figure(
            "pacer_lag_p99_ms",
            ms(paced.pacer_lag.value_at_quantile(0.99)),
        );
    }
    if end.delivered < acked {
        report.figure("undelivered", acked - end.delivered);
    }
    if counters.store_retries() > 0 {
        report.figure("store_retries", counters.store_retries());
    }
    report.param("nodes", NODES);
    report.param("pairs", o.pairs);
    report.param("rate", rate);
    report.param("body_bytes", o.body_bytes);
    report.param("duration_secs", o.duration.as_secs_f64());
    report.param("warmup_secs", warmup.as_secs_f64());
    report.note = Some(
        "senders on node A, recipients on node B: latency is from the intended send to the \
         arrival through B's tail (A's commit, its NOTIFY, B's read of the messages table); \
         stored_* is the intended send to A's `sent` (committed)"
            .to_string(),
    );
    Ok(report)
}

/// Messages/s across the nodes, a window of sends in flight per sender.
async fn closed_loop(ctx: &Ctx<'_>) -> Result<Report> {
    let o = ctx.options;
    let bar = ctx.progress("cluster", None);
    bar.set_message("throughput: starting two nodes");
    let cluster = start(ctx).await?;
    let accounts = cluster
        .create_pairs(&ctx.prefix(), o.pairs, &ctx.password_hash)
        .await?;

    let epoch = Instant::now();
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let pairs = load::connect_pairs_across(&cluster, node_b(&cluster)?, &accounts).await?;
    let (recipients, senders) = load::start_pairs(pairs, epoch, 0, &counters, &stop);
    let start = Instant::now();
    let deadline = start + o.duration;
    let tasks =
        load::spawn_closed_loop(senders, o.body_bytes, o.window, epoch, deadline, &counters);
    let status = || {
        format!(
            "throughput, A → B: {} acked, {} delivered",
            thousands(counters.acked()),
            thousands(counters.delivered())
        )
    };
    load::show_phase(&bar, start, deadline, status).await;
    let acked = load::join_senders(tasks).await?;
    let send_secs = start.elapsed().as_secs_f64();
    let end = load::end_phase(
        cluster, &bar, recipients, &counters, &stop, start, o.duration, acked, status,
    )
    .await?;
    let mut report = end.report("cluster", acked, send_secs);
    report.figure("phase", "throughput");
    report.figure("messages", acked);
    if end.delivered < acked {
        report.figure("undelivered", acked - end.delivered);
    }
    if counters.store_retries() > 0 {
        report.figure("store_retries", counters.store_retries());
    }
    report.param("nodes", NODES);
    report.param("pairs", o.pairs);
    report.param("window", o.window);
    report.param("body_bytes", o.body_bytes);
    report.param("duration_secs", o.duration.as_secs_f64());
    report.note = Some(
        "closed loop, senders on node A and recipients on node B: latency is from each send \
         to its arrival through B's tail, queueing behind the sender's own earlier sends \
         included"
            .to_string(),
    );
    Ok(report)
}
