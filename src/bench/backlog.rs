//! `backlog`: `--backlog` messages queued for a device that is offline, then the time from
//! its reconnecting until it has received every one and its acknowledgement of the last is
//! durable. The queue is filled through the server's own send path: a few connections of
//! the sender, each with a deep window of pipelined sends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::ctx::Ctx;
use super::load::{self, Counters};
use super::report::{round, thousands, Report};
use crate::client::Event;

/// Sender connections filling the queue, and sends in flight on each.
const FILL_CONNECTIONS: usize = 4;
const FILL_WINDOW: usize = 1000;

pub(super) async fn run(ctx: &Ctx<'_>) -> Result<Vec<Report>> {
    let o = ctx.options;
    let total = o.backlog as u64;
    let bar = ctx.progress("backlog", Some(total));
    bar.set_message("starting the server and accounts");
    let target = ctx.target().await?;
    let prefix = ctx.prefix();
    let names = [format!("{prefix}-r"), format!("{prefix}-s")];
    let accounts = target
        .create_accounts(&names, &ctx.password_hash, true)
        .await?;
    let (Some(recipient_token), Some(sender_token)) = (&accounts[0].token, &accounts[1].token)
    else {
        bail!("bench accounts were made without tokens");
    };
    let recipient = accounts[0].name.clone();

    // Fill: the recipient's device exists (its cursor is 0) but is not connected.
    bar.set_message(format!("queueing {} messages", thousands(total)));
    let counters = Arc::new(Counters::default());
    let epoch = Instant::now();
    let fill_start = Instant::now();
    let mut tasks = Vec::new();
    let mut fill_conns = Vec::new();
    for i in 0..FILL_CONNECTIONS as u64 {
        let share =
            total / FILL_CONNECTIONS as u64 + u64::from(i < total % FILL_CONNECTIONS as u64);
        if share == 0 {
            continue;
        }
        let conn = target.connect_token(sender_token).await?;
        tasks.push(tokio::spawn(fill(
            conn.client.clone(),
            recipient.clone(),
            o.body_bytes,
            share,
            epoch,
            Arc::clone(&counters),
        )));
        fill_conns.push(conn);
    }
    let filling = async {
        for t in tasks {
            t.await.context("a sender task failed")??;
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::pin!(filling);
    loop {
        tokio::select! {
            r = &mut filling => { r?; break; }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                bar.set_position(counters.acked());
            }
        }
    }
    let fill_secs = fill_start.elapsed().as_secs_f64();
    drop(fill_conns);

    // Drain: reconnect, subscribe, receive everything, acknowledge the last id durably.
    bar.set_position(0);
    bar.set_message("draining to the reconnecting device");
    let drain_start = Instant::now();
    let conn = target.connect_token(recipient_token).await?;
    conn.client.subscribe().await?;
    let (client, mut events) = conn.split();
    let (newest, newest_rx) = tokio::sync::watch::channel(0i64);
    // Acknowledge progress as it streams in, as a client that saves its place would.
    let acker = tokio::spawn(load::ack_newest(client.clone(), newest_rx));
    let mut received = 0u64;
    let mut last_id = 0;
    let mut caught_up = false;
    while !caught_up {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .map_err(|_| anyhow!("no message for 30 s after {received} of the backlog"))?;
        match event {
            Some(Event::Message(m)) => {
                received += 1;
                last_id = m.id;
                newest.send_replace(m.id);
                if received % 1000 == 0 {
                    bar.set_position(received);
                }
            }
            Some(Event::CaughtUp { .. }) => caught_up = true,
            Some(Event::Closed(reason)) => {
                bail!("the draining connection closed: {reason:?}")
            }
            None => bail!("the draining connection closed"),
            Some(_) => {}
        }
    }
    let receive_secs = drain_start.elapsed().as_secs_f64();
    drop(newest);
    let _ = acker.await;
    client.ack(last_id).await.context("the final ack failed")?;
    let drain_secs = drain_start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let server = target.describe();
    drop(client);
    drop(events);
    target.stop().await;

    if received != total {
        bail!("the device received {received} messages of the {total} queued for it");
    }
    let mut report = Report::new("backlog");
    report.server = server;
    report.drain_secs = Some(round(drain_secs, 3));
    report.delivered_per_sec = Some(round(received as f64 / drain_secs, 1));
    report.figure("messages", received);
    if counters.rate_limited() > 0 {
        report.figure("rate_limited_retries", counters.rate_limited());
    }
    if counters.store_retries() > 0 {
        report.figure("store_retries", counters.store_retries());
    }
    report.figure("receive_secs", round(receive_secs, 3));
    report.figure("fill_secs", round(fill_secs, 3));
    report.figure("fill_per_sec", round(total as f64 / fill_secs, 1));
    report.param("backlog", total);
    report.param("body_bytes", o.body_bytes);
    report.param("fill_connections", FILL_CONNECTIONS);
    report.param("fill_window", FILL_WINDOW);
    Ok(vec![report])
}

/// Sends `count` messages with `FILL_WINDOW` in flight.
async fn fill(
    client: crate::client::Client,
    to: String,
    body_len: usize,
    count: u64,
    epoch: Instant,
    counters: Arc<Counters>,
) -> Result<()> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut in_flight = FuturesUnordered::new();
    let mut next = 0u64;
    // One base per filling connection: the four share one sender, and a key repeated by
    // the same sender is a retry, stored once.
    let key_base = crate::client::new_send_key();
    loop {
        while in_flight.len() < FILL_WINDOW && next < count {
            next += 1;
            let (c, to) = (client.clone(), to.clone());
            let body = load::stamped_body(load::micros_between(epoch, Instant::now()), body_len);
            let key = format!("{key_base}{next}");
            in_flight.push(load::send_one(c, to, body, key, Arc::clone(&counters)));
        }
        match in_flight.next().await {
            Some(r) => {
                r.context("send failed")?;
                counters
                    .acked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            None => return Ok(()),
        }
    }
}
