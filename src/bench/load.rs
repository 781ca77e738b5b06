//! Load generation shared by the scenarios: stamped message bodies, native sender/recipient
//! pairs (connected, then split into recipients that record end-to-end latency into HDR
//! histograms and acknowledge as they go, and senders), closed-loop senders (a window of
//! sends in flight), and the open-loop pacer (sends at intended times, whatever the server's
//! answers do) for native senders and, through [`pace`], for the `irc` scenario's.
//!
//! Every body starts with the time it was meant to be sent, in microseconds since the run's
//! epoch; the recipient subtracts it from the time it got the message. The open-loop pacer
//! stamps the *intended* time, so a stall delays the sends behind it and shows up in their
//! latency instead of being hidden (coordinated omission).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientError, Connection, Event, SentInfo};
use crate::protocol::ErrorCode;

use super::report::{round, Report};
use super::target::{Target, TokenPair};

/// The password of every bench account.
pub(crate) const PASSWORD: &str = "bench-password-0";

/// Bytes of the time stamp at the start of a body: 16 digits and a `|`.
pub(crate) const STAMP_LEN: usize = 17;

/// Highest latency a histogram records, in microseconds (one hour).
const HIST_MAX_US: u64 = 3_600_000_000;

/// Sends queued by the pacer per sender before the pacer itself waits.
const PACER_QUEUE: usize = 4096;

/// Times a send the server could not store is retried (with the same key, as it asks).
const STORE_RETRIES: u32 = 5;

/// The wait before such a retry.
const STORE_RETRY_WAIT: Duration = Duration::from_millis(10);

/// Microseconds from `epoch` to `at` (0 if `at` is earlier).
pub(crate) fn micros_between(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX)
}

/// Words that fill a body after its stamp, so that the server stores and indexes text like
/// people write (a run of one letter would flatter the search index: one term).
const FILLER: [&str; 32] = [
    "the",
    "deploy",
    "is",
    "done",
    "and",
    "we",
    "can",
    "ship",
    "tomorrow",
    "after",
    "lunch",
    "please",
    "review",
    "my",
    "change",
    "to",
    "config",
    "before",
    "friday",
    "meeting",
    "notes",
    "are",
    "in",
    "shared",
    "folder",
    "thanks",
    "for",
    "quick",
    "fix",
    "server",
    "restarted",
    "again",
];

/// A body of `len` bytes starting with the stamp `us`, then words.
pub(crate) fn stamped_body(us: u64, len: usize) -> String {
    let mut body = format!("{us:016}|");
    // A cheap mix of the stamp picks the words, so bodies differ.
    let mut state = us.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while body.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        body.push(' ');
        body.push_str(FILLER[(state % FILLER.len() as u64) as usize]);
    }
    body.truncate(len.max(STAMP_LEN));
    body
}

/// The stamp at the start of a body, if it has one.
pub(crate) fn read_stamp(body: &str) -> Option<u64> {
    body.get(..16)?.parse().ok()
}

/// An empty latency histogram (microseconds, 3 significant digits).
pub(crate) fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).map_err(|e| anyhow!("histogram: {e:?}"))
}

/// Adds `from` into `into`.
pub(crate) fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) -> Result<()> {
    into.add(from).map_err(|e| anyhow!("histogram: {e:?}"))
}

/// How a closed connection is described in an error.
fn closed_reason(reason: &Option<(ErrorCode, String)>) -> String {
    match reason {
        Some((code, message)) => format!("{message} ({code})"),
        None => "no reason given".to_string(),
    }
}

/// Subscribes and waits for `caught_up`; returns how many backlog messages came first.
pub(crate) async fn subscribe_caught_up(conn: &mut Connection) -> Result<u64> {
    conn.client.subscribe().await?;
    let mut backlog = 0;
    loop {
        match conn.events.recv().await {
            Some(Event::Message(_)) => backlog += 1,
            Some(Event::CaughtUp { .. }) => return Ok(backlog),
            Some(Event::Closed(reason)) => {
                return Err(anyhow!(
                    "closed while subscribing: {}",
                    closed_reason(&reason)
                ))
            }
            None => return Err(anyhow!("closed while subscribing")),
            // Other pushes (read markers) do not concern the bench.
            Some(_) => {}
        }
    }
}

/// What one recipient saw.
pub(crate) struct Received {
    pub hist: Histogram<u64>,
    pub count: u64,
    pub last_at: Option<Instant>,
}

/// Counters shared between the load tasks and the scenario's progress display.
#[derive(Default)]
pub(crate) struct Counters {
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    /// Sends the server refused as too fast (and that were retried).
    pub rate_limited: AtomicU64,
    /// Sends the server could not store (`internal`) and that were retried.
    pub store_retries: AtomicU64,
}

impl Counters {
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }
    pub fn store_retries(&self) -> u64 {
        self.store_retries.load(Ordering::Relaxed)
    }
}

/// Runs a recipient on a subscribed connection until `stop`: records each stamped
/// message's latency (those stamped at or after `record_from_us`), counts it, and keeps
/// acknowledging the newest id (one ack in flight at a time, so reading never waits for an
/// fsync). A connection closed before `stop` is an error.
pub(crate) fn spawn_recipient(
    conn: Connection,
    epoch: Instant,
    record_from_us: u64,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> JoinHandle<Result<Received>> {
    tokio::spawn(async move {
        let (client, mut events) = conn.split();
        let (newest, newest_rx) = watch::channel(0i64);
        let acker = tokio::spawn(ack_newest(client.clone(), newest_rx));
        let mut out = Received {
            hist: histogram()?,
            count: 0,
            last_at: None,
        };
        loop {
            let event = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                event = events.recv() => event,
            };
            match event {
                // Membership events (the fanout room's joins) are not load.
                Some(Event::Message(m)) if m.kind.is_text() => {
                    let now = Instant::now();
                    if let Some(stamp) = read_stamp(&m.body) {
                        if stamp >= record_from_us {
                            let us = micros_between(epoch, now).saturating_sub(stamp);
                            out.hist.saturating_record(us.max(1));
                        }
                    }
                    out.count += 1;
                    out.last_at = Some(now);
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    newest.send_replace(m.id);
                }
                Some(Event::Closed(reason)) => {
                    acker.abort();
                    return Err(anyhow!(
                        "a recipient's connection closed: {}",
                        closed_reason(&reason)
                    ));
                }
                None => {
                    acker.abort();
                    return Err(anyhow!("a recipient's connection closed"));
                }
                Some(_) => {}
            }
        }
        acker.abort();
        Ok(out)
    })
}

/// Acknowledges the newest id seen, one ack at a time, until the sender side is dropped.
pub(crate) async fn ack_newest(client: Client, mut newest: watch::Receiver<i64>) {
    while newest.changed().await.is_ok() {
        let upto = *newest.borrow_and_update();
        if client.ack(upto).await.is_err() {
            return;
        }
    }
}

/// Collects the recipients' results into one histogram; returns it with the number of
/// messages received and the time of the last one.
pub(crate) async fn collect(
    recipients: Vec<JoinHandle<Result<Received>>>,
) -> Result<(Histogram<u64>, u64, Option<Instant>)> {
    let mut hist = histogram()?;
    let mut count = 0;
    let mut last: Option<Instant> = None;
    for r in recipients {
        let got = r.await.context("a recipient task failed")??;
        merge(&mut hist, &got.hist)?;
        count += got.count;
        last = match (last, got.last_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    Ok((hist, count, last))
}

/// Keeps `window` sends to `to` in flight until `deadline`, each stamped with the time it
/// was made; returns how many were acknowledged.
pub(crate) async fn closed_loop_sender(
    client: Client,
    to: String,
    body_len: usize,
    window: usize,
    epoch: Instant,
    deadline: Instant,
    counters: Arc<Counters>,
) -> Result<u64> {
    let mut in_flight = FuturesUnordered::new();
    let mut seq = 0u64;
    let mut acked = 0;
    loop {
        while in_flight.len() < window && Instant::now() < deadline {
            seq += 1;
            let body = stamped_body(micros_between(epoch, Instant::now()), body_len);
            in_flight.push(send_one(
                client.clone(),
                to.clone(),
                body,
                seq.to_string(),
                Arc::clone(&counters),
            ));
        }
        match in_flight.next().await {
            Some(result) => {
                result.context("send failed")?;
                acked += 1;
                counters.acked.fetch_add(1, Ordering::Relaxed);
            }
            None => return Ok(acked),
        }
    }
}

/// Sends one message with idempotency key `key`. A server that limits each connection's
/// send rate (`rate_limited`, as `chatd serve` does by default) is obeyed: the send is
/// retried with the same key after the wait it names, and counted in
/// `counters.rate_limited`. A send the server could not store (`internal`: "retry with the
/// same key") is retried as a client would, up to [`STORE_RETRIES`] times, and counted in
/// `counters.store_retries` (reports show it: it is the server's failure, not load).
pub(crate) async fn send_one(
    client: Client,
    to: String,
    body: String,
    key: String,
    counters: Arc<Counters>,
) -> Result<SentInfo, ClientError> {
    let mut store_retries = 0;
    loop {
        match client.send(&to, &body, &key).await {
            Err(ClientError::Server {
                code: ErrorCode::RateLimited,
                retry_after_ms,
                ..
            }) => {
                counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                let wait = retry_after_ms.unwrap_or(1).clamp(1, 60_000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            Err(ClientError::Server {
                code: ErrorCode::Internal,
                ..
            }) if store_retries < STORE_RETRIES => {
                store_retries += 1;
                counters.store_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(STORE_RETRY_WAIT).await;
            }
            other => return other,
        }
    }
}

/// A sending connection and where it sends (a user or a room).
pub(crate) struct Sender {
    pub client: Client,
    pub to: String,
}

/// A native pair once connected: the recipient subscribed and caught up, the sender
/// authenticated.
pub(crate) struct ConnectedPair {
    pub recipient: Connection,
    pub sender: Connection,
    /// The recipient's name.
    pub to: String,
}

/// Connects `pairs` one after the other, each recipient first (subscribed, its backlog
/// received) and then its sender.
pub(crate) async fn connect_pairs(
    target: &Target,
    pairs: &[TokenPair],
) -> Result<Vec<ConnectedPair>> {
    connect_pairs_across(target, target, pairs).await
}

/// Like [`connect_pairs`], with the senders on `senders_to` and the recipients on
/// `recipients_to` (two nodes of a cluster).
pub(crate) async fn connect_pairs_across(
    senders_to: &Target,
    recipients_to: &Target,
    pairs: &[TokenPair],
) -> Result<Vec<ConnectedPair>> {
    let mut connected = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let mut recipient = recipients_to.connect_token(&pair.recipient_token).await?;
        subscribe_caught_up(&mut recipient).await?;
        let sender = senders_to.connect_token(&pair.sender_token).await?;
        connected.push(ConnectedPair {
            recipient,
            sender,
            to: pair.recipient.clone(),
        });
    }
    Ok(connected)
}

/// Starts a [`spawn_recipient`] on each pair's recipient; returns those tasks and the pairs'
/// senders.
pub(crate) fn start_pairs(
    pairs: Vec<ConnectedPair>,
    epoch: Instant,
    record_from_us: u64,
    counters: &Arc<Counters>,
    stop: &CancellationToken,
) -> (Vec<JoinHandle<Result<Received>>>, Vec<Sender>) {
    let mut recipients = Vec::with_capacity(pairs.len());
    let mut senders = Vec::with_capacity(pairs.len());
    for pair in pairs {
        recipients.push(spawn_recipient(
            pair.recipient,
            epoch,
            record_from_us,
            Arc::clone(counters),
            stop.clone(),
        ));
        senders.push(Sender {
            client: pair.sender.client,
            to: pair.to,
        });
    }
    (recipients, senders)
}

/// When an open-loop phase sends: from `start` for `duration`, stamps in microseconds since
/// `epoch`, and what is due from `record_from_us` on recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub epoch: Instant,
    pub start: Instant,
    pub duration: Duration,
    pub record_from_us: u64,
}

impl Timing {
    /// A phase that starts 50 ms from now (the connections are made) and is recorded after
    /// `warmup`.
    pub fn from_now(epoch: Instant, duration: Duration, warmup: Duration) -> Timing {
        let start = Instant::now() + Duration::from_millis(50);
        Timing {
            epoch,
            start,
            duration,
            record_from_us: micros_between(epoch, start + warmup),
        }
    }

    /// When the sending ends.
    pub fn end(&self) -> Instant {
        self.start + self.duration
    }
}

/// The warm-up of an open-loop phase, not recorded: its first fifth, at most 1 s.
pub(crate) fn warmup(duration: Duration) -> Duration {
    (duration / 5).min(Duration::from_secs(1))
}

/// What an open-loop run measured besides delivery.
pub(crate) struct Paced {
    /// Sends made.
    pub sent: u64,
    /// Intended send time → `sent` reply (the message is durable), in µs.
    pub stored: Histogram<u64>,
    /// How late the pacer handed out sends, in µs (its own timer and queueing).
    pub pacer_lag: Histogram<u64>,
}

/// What the pacer did, with each sender task's result.
pub(crate) struct Pacing<T> {
    /// Sends handed out (all of the schedule, unless a sender ended early).
    pub offered: u64,
    /// How late the sends due from `record_from_us` on were handed out, in µs.
    pub lag: Histogram<u64>,
    /// What each sender's task returned, in the order of the senders.
    pub results: Vec<T>,
}

/// The open-loop method, for any kind of sender: `rate` messages/s in total, round-robin
/// over `senders`, from `timing.start` for `timing.duration`. A pacer thread keeps the
/// schedule (with the OS timer, finer than the runtime's 1 ms one) and hands the stamp of
/// each due send (its intended time) to its sender's task, made by `spawn` from the sender
/// and its queue of stamps; the task sends without waiting for earlier answers and ends when
/// the queue closes. A task that fails stops the pacer, and its error is returned.
pub(crate) async fn pace<S, T, F, Fut>(
    senders: Vec<S>,
    rate: u64,
    timing: Timing,
    mut spawn: F,
) -> Result<Pacing<T>>
where
    F: FnMut(S, mpsc::Receiver<u64>) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut queues = Vec::with_capacity(senders.len());
    let mut tasks = Vec::with_capacity(senders.len());
    for sender in senders {
        let (tx, rx) = mpsc::channel::<u64>(PACER_QUEUE);
        queues.push(tx);
        tasks.push(tokio::spawn(spawn(sender, rx)));
    }
    let Timing {
        epoch,
        start,
        duration,
        record_from_us,
    } = timing;
    let interval_ns = 1e9 / rate as f64;
    let total = (duration.as_secs_f64() * rate as f64).round() as u64;
    let mut lag = histogram()?;
    let pacer = tokio::task::spawn_blocking(move || {
        for k in 0..total {
            let intended = start + Duration::from_nanos((k as f64 * interval_ns) as u64);
            // Sleeping costs tens of microseconds; a send due sooner than that goes now.
            let now = Instant::now();
            if intended > now + Duration::from_micros(20) {
                std::thread::sleep(intended - now);
            }
            let stamp = micros_between(epoch, intended);
            let queue = &queues[(k as usize) % queues.len()];
            if queue.blocking_send(stamp).is_err() {
                // The sender task ended (with an error, reported below).
                return (k, lag);
            }
            if stamp >= record_from_us {
                lag.saturating_record(micros_between(intended, Instant::now()).max(1));
            }
        }
        (total, lag)
    });
    let (offered, lag) = pacer.await.context("the pacer thread failed")?;
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.context("a sender task failed")??);
    }
    Ok(Pacing {
        offered,
        lag,
        results,
    })
}

/// Offers `rate` messages/s over native `senders` by [`pace`], each send stamped with its
/// intended time. Answers count into `counters.acked` (refusals are errors); those of sends
/// due from `timing.record_from_us` on are recorded.
pub(crate) async fn open_loop(
    senders: Vec<Sender>,
    rate: u64,
    body_len: usize,
    timing: Timing,
    counters: Arc<Counters>,
) -> Result<Paced> {
    let pacing = pace(senders, rate, timing, |sender, due| {
        paced_sender(sender, due, body_len, timing, Arc::clone(&counters))
    })
    .await?;
    let mut sent = 0;
    let mut stored = histogram()?;
    for (n, h) in &pacing.results {
        sent += n;
        merge(&mut stored, h)?;
    }
    Ok(Paced {
        sent: sent.min(pacing.offered),
        stored,
        pacer_lag: pacing.lag,
    })
}

/// Sends each stamp it is handed at once, keeping every answer pending concurrently;
/// returns how many it sent and the histogram of intended time → `sent` reply.
async fn paced_sender(
    sender: Sender,
    mut due: mpsc::Receiver<u64>,
    body_len: usize,
    timing: Timing,
    counters: Arc<Counters>,
) -> Result<(u64, Histogram<u64>)> {
    let Timing {
        epoch,
        record_from_us,
        ..
    } = timing;
    let mut stored = histogram()?;
    let mut in_flight = FuturesUnordered::new();
    let mut seq = 0u64;
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            stamp = due.recv(), if open => match stamp {
                Some(stamp) => {
                    seq += 1;
                    let body = stamped_body(stamp, body_len);
                    let send = send_one(
                        sender.client.clone(),
                        sender.to.clone(),
                        body,
                        seq.to_string(),
                        Arc::clone(&counters),
                    );
                    in_flight.push(async move { (stamp, send.await) });
                }
                None => open = false,
            },
            Some((stamp, result)) = in_flight.next(), if !in_flight.is_empty() => {
                result.context("send failed")?;
                counters.acked.fetch_add(1, Ordering::Relaxed);
                if stamp >= record_from_us {
                    let us = micros_between(epoch, Instant::now()).saturating_sub(stamp);
                    stored.saturating_record(us.max(1));
                }
            }
        }
    }
    Ok((seq, stored))
}

/// Waits until `done()` holds or `limit` passes, updating `bar` with `status()`.
pub(crate) async fn wait_until(
    limit: Duration,
    bar: &indicatif::ProgressBar,
    mut done: impl FnMut() -> bool,
    status: impl Fn() -> String,
) -> bool {
    let until = Instant::now() + limit;
    loop {
        bar.set_message(status());
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Shows a timed phase's progress until `end`, with `status()` as the message.
pub(crate) async fn show_phase(
    bar: &indicatif::ProgressBar,
    start: Instant,
    end: Instant,
    status: impl Fn() -> String,
) {
    let total = end.saturating_duration_since(start).as_millis().max(1) as u64;
    bar.set_length(total);
    loop {
        let now = Instant::now();
        bar.set_position(now.saturating_duration_since(start).as_millis() as u64);
        bar.set_message(status());
        if now >= end {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100).min(end - now)).await;
    }
}

/// Starts one [`closed_loop_sender`] per sender until `deadline`.
pub(crate) fn spawn_closed_loop(
    senders: Vec<Sender>,
    body_len: usize,
    window: usize,
    epoch: Instant,
    deadline: Instant,
    counters: &Arc<Counters>,
) -> Vec<JoinHandle<Result<u64>>> {
    senders
        .into_iter()
        .map(|Sender { client, to }| {
            tokio::spawn(closed_loop_sender(
                client,
                to,
                body_len,
                window,
                epoch,
                deadline,
                Arc::clone(counters),
            ))
        })
        .collect()
}

/// Sums what the sender tasks had acknowledged.
pub(crate) async fn join_senders(tasks: Vec<JoinHandle<Result<u64>>>) -> Result<u64> {
    let mut acked = 0;
    for t in tasks {
        acked += t.await.context("a sender task failed")??;
    }
    Ok(acked)
}

/// The end of a timed phase: what the recipients received.
pub(crate) struct PhaseEnd {
    pub hist: Histogram<u64>,
    pub delivered: u64,
    /// Seconds from the start of the phase to the last delivery.
    pub deliver_secs: f64,
    /// The server, as reports describe it.
    pub server: String,
}

/// Waits (at least 10 s, or the phase's length) until `expected` deliveries have arrived,
/// stops the recipients, collects their figures and stops the server.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn end_phase(
    target: Target,
    bar: &indicatif::ProgressBar,
    recipients: Vec<JoinHandle<Result<Received>>>,
    counters: &Counters,
    stop: &CancellationToken,
    start: Instant,
    phase: Duration,
    expected: u64,
    status: impl Fn() -> String,
) -> Result<PhaseEnd> {
    let send_secs = start.elapsed().as_secs_f64();
    let drain_limit = phase.max(Duration::from_secs(10));
    wait_until(
        drain_limit,
        bar,
        || counters.delivered() >= expected,
        status,
    )
    .await;
    stop.cancel();
    let (hist, delivered, last_at) = collect(recipients).await?;
    bar.finish_and_clear();
    let server = target.describe();
    target.stop().await;
    Ok(PhaseEnd {
        hist,
        delivered,
        deliver_secs: last_at.map_or(send_secs, |t| (t - start).as_secs_f64()),
        server,
    })
}

impl PhaseEnd {
    /// A report with the server, the delivery rate and the latency filled in, and the
    /// acknowledgement rate from `acked` over `send_secs`.
    pub(crate) fn report(&self, scenario: &str, acked: u64, send_secs: f64) -> Report {
        let mut report = Report::new(scenario);
        report.server = self.server.clone();
        report.acked_per_sec = Some(round(acked as f64 / send_secs.max(1e-9), 1));
        report.delivered_per_sec = Some(round(
            self.delivered as f64 / self.deliver_secs.max(1e-9),
            1,
        ));
        report.set_latency(&self.hist);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let body = stamped_body(1_234_567, 200);
        assert_eq!(body.len(), 200);
        assert_eq!(read_stamp(&body), Some(1_234_567));
        assert_eq!(read_stamp("hello"), None);
        assert_eq!(stamped_body(5, 10).len(), STAMP_LEN);
        // Words, differing from body to body.
        assert!(
            body[STAMP_LEN..]
                .split(' ')
                .filter(|w| !w.is_empty())
                .count()
                > 20
        );
        assert_ne!(
            stamped_body(1, 200)[STAMP_LEN..],
            stamped_body(2, 200)[STAMP_LEN..]
        );
    }
}
