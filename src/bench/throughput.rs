//! `throughput`: N sender→recipient pairs, each sender keeping a window of sends in flight
//! for the duration (closed loop). Messages/s acknowledged (durably stored) and delivered,
//! and end-to-end latency from the moment each send was made to its arrival.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use super::ctx::Ctx;
use super::load::{self, Counters};
use super::report::{thousands, Report};

pub(super) async fn run(ctx: &Ctx<'_>) -> Result<Vec<Report>> {
    let o = ctx.options;
    let bar = ctx.progress("throughput", None);
    bar.set_message("starting the server and accounts");
    let target = ctx.target().await?;
    let accounts = target
        .create_pairs(&ctx.prefix(), o.pairs, &ctx.password_hash)
        .await?;

    bar.set_message("connecting");
    let epoch = Instant::now();
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let pairs = load::connect_pairs(&target, &accounts).await?;
    let (recipients, senders) = load::start_pairs(pairs, epoch, 0, &counters, &stop);

    let start = Instant::now();
    let deadline = start + o.duration;
    let tasks =
        load::spawn_closed_loop(senders, o.body_bytes, o.window, epoch, deadline, &counters);
    let status = || {
        format!(
            "{} acked, {} delivered",
            thousands(counters.acked()),
            thousands(counters.delivered())
        )
    };
    load::show_phase(&bar, start, deadline, status).await;
    let acked = load::join_senders(tasks).await?;
    let send_secs = start.elapsed().as_secs_f64();
    // Everything acknowledged must arrive.
    let end = load::end_phase(
        target, &bar, recipients, &counters, &stop, start, o.duration, acked, status,
    )
    .await?;
    let delivered = end.delivered;
    let mut report = end.report("throughput", acked, send_secs);
    report.figure("messages", acked);
    if counters.rate_limited() > 0 {
        report.figure("rate_limited_retries", counters.rate_limited());
    }
    if counters.store_retries() > 0 {
        report.figure("store_retries", counters.store_retries());
    }
    if delivered < acked {
        report.figure("undelivered", acked - delivered);
    }
    report.param("pairs", o.pairs);
    report.param("window", o.window);
    report.param("body_bytes", o.body_bytes);
    report.param("duration_secs", o.duration.as_secs_f64());
    report.note = Some(
        "closed loop: latency is from each send to its arrival at the recipient; with a \
         full window it includes queueing behind the sender's own earlier sends"
            .to_string(),
    );
    Ok(vec![report])
}
