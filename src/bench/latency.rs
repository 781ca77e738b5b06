//! `latency`: a fixed offered rate, open loop, round-robin over the pairs. Each message is
//! stamped with the time it was *meant* to be sent, so a stall delays everything scheduled
//! behind it and shows in the percentiles (no coordinated omission). The first fifth of the
//! run (at most 1 s) warms up and is not recorded. One report per `--rate`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use super::ctx::Ctx;
use super::load::{self, Counters, Timing};
use super::report::{round, thousands, Report};

pub(super) async fn run(ctx: &Ctx<'_>) -> Result<Vec<Report>> {
    let mut reports = Vec::new();
    for &rate in &ctx.options.rates {
        reports.push(run_rate(ctx, rate).await?);
    }
    Ok(reports)
}

/// Latency of live delivery at `rate` messages/s offered.
async fn run_rate(ctx: &Ctx<'_>, rate: u64) -> Result<Report> {
    let o = ctx.options;
    let bar = ctx.progress("latency", None);
    bar.set_message(format!("{}/s: starting", thousands(rate)));
    let target = ctx.target().await?;
    let accounts = target
        .create_pairs(&ctx.prefix(), o.pairs, &ctx.password_hash)
        .await?;

    let epoch = Instant::now();
    let warmup = load::warmup(o.duration);
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    // Start after the connections are made; the recording starts after the warm-up.
    let pairs = load::connect_pairs(&target, &accounts).await?;
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
            "{}/s offered: {} acked, {} delivered",
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
        target, &bar, recipients, &counters, &stop, start, o.duration, acked, status,
    )
    .await?;
    let delivered = end.delivered;
    let mut report = end.report("latency", acked, send_secs);
    report.figure("offered_per_sec", rate);
    report.figure("messages", paced.sent);
    if counters.rate_limited() > 0 {
        report.figure("rate_limited_retries", counters.rate_limited());
    }
    if counters.store_retries() > 0 {
        report.figure("store_retries", counters.store_retries());
    }
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
    if delivered < acked {
        report.figure("undelivered", acked - delivered);
    }
    report.param("pairs", o.pairs);
    report.param("rate", rate);
    report.param("body_bytes", o.body_bytes);
    report.param("duration_secs", o.duration.as_secs_f64());
    report.param("warmup_secs", warmup.as_secs_f64());
    Ok(report)
}
