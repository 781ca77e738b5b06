//! `irc`: the load of `latency` and `throughput`, over plaintext IRC on loopback, so that
//! chatd's IRC gateway and another IRC server on the same machine can be measured by the
//! same load generator with the same method (`benches/peer/`, `docs/bench-peer.md`).
//!
//! `--pairs` pairs of IRC connections; each sender sends `PRIVMSG <recipient> :<seq>
//! <stamp>|xxx…` (the body padded to `--body` bytes) and the recipient's reader records when
//! each arrives. Two phases of `--duration` each: open loop at each `--rate` (a pacer thread
//! hands out sends at their intended times, stamped with those times, as `latency` does, so a
//! stall shows in everything scheduled behind it), then throughput: each sender keeps
//! `--window` messages that its recipient has not yet *received* (IRC has no acks, so the
//! recipient's reader counts). Every pair's messages must all arrive, in order: a message
//! missing after the drain period or out of order fails the scenario.
//!
//! The server is a fresh chatd per phase with its plaintext IRC listener on `127.0.0.1:0`
//! (a child `chatd serve` process when the bench runs from the `chatd` binary, so that it is
//! a process of its own like any other IRC server; in this process otherwise), its accounts
//! made through the admin path and logged in with `PASS account:password`; or, with
//! `--irc-server`, any IRC server on a loopback address, without a password or with
//! `--irc-pass`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::irc::codec::{IrcCodec, Line, MAX_CLIENT_LINE};
use crate::irc::message::IrcMessage;
use crate::server::{Listeners, Server, ServerOptions};
use crate::store::{DbTarget, Durability};

use super::ctx::Ctx;
use super::load::{self, Counters, Timing};
use super::options::TargetSpec;
use super::report::{round, thousands, Report};
use super::target::{capacity_limits, pair_names, ChildServer, Target};

/// Largest `--body` the scenario sends: a relayed line (`:nick!user@host PRIVMSG nick :` and
/// the body) must fit IRC's 512 bytes, or servers split or cut it.
pub(crate) const MAX_IRC_BODY: usize = 400;

/// Time allowed to connect and be welcomed (`001`).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// chatd logins (argon2 checks) in flight at once: below its failed-login burst (20), which
/// every check takes from until it succeeds.
const LOGINS_AT_ONCE: usize = 16;

pub(super) async fn run(ctx: &Ctx<'_>) -> Result<Vec<Report>> {
    let o = ctx.options;
    if o.body_bytes > MAX_IRC_BODY {
        bail!(
            "--body {} is too long for IRC: at most {MAX_IRC_BODY} bytes fit a 512-byte line",
            o.body_bytes
        );
    }
    let mut reports = Vec::new();
    for &rate in &o.rates {
        reports.push(run_phase(ctx, Phase::OpenLoop { rate }).await?);
    }
    reports.push(run_phase(ctx, Phase::Window).await?);
    Ok(reports)
}

/// One timed phase.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// `rate` messages/s offered, open loop.
    OpenLoop { rate: u64 },
    /// Each sender keeps `--window` messages not yet received.
    Window,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::OpenLoop { .. } => "open_loop",
            Phase::Window => "throughput",
        }
    }
}

async fn run_phase(ctx: &Ctx<'_>, phase: Phase) -> Result<Report> {
    let o = ctx.options;
    let bar = ctx.progress("irc", None);
    bar.set_message(format!("{}: starting the server", phase.name()));
    let peer = Peer::start(ctx).await?;
    let prefix = ctx.prefix();
    let nicks = pair_names(&prefix, o.pairs);
    if let Some(admin) = &peer.admin {
        let all: Vec<String> = nicks
            .iter()
            .flat_map(|(s, r)| [s.clone(), r.clone()])
            .collect();
        admin
            .create_accounts(&all, &ctx.password_hash, false)
            .await?;
    }

    bar.set_message(format!("{}: connecting to {}", phase.name(), peer.describe));
    let epoch = Instant::now();
    let warmup = match phase {
        Phase::OpenLoop { .. } => load::warmup(o.duration),
        Phase::Window => Duration::ZERO,
    };
    // Connections first, many at once (InspIRCd completes registrations on a 1 s timer), but
    // chatd's password checks within its login budget (taken before each check, given back
    // on success); the clock starts after.
    let at_once = if peer.admin.is_some() {
        LOGINS_AT_ONCE / 2
    } else {
        o.pairs
    };
    let conns = connect_pairs(&peer, &nicks, at_once).await?;
    let version = conns.iter().find_map(|c| c.0.version.clone());
    let timing = Timing::from_now(epoch, o.duration, warmup);
    let (start, record_from) = (timing.start, timing.record_from_us);
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let mut pairs = Vec::with_capacity(o.pairs);
    for (sender, recipient, s, r) in conns {
        let shared = Arc::new(PairShared::default());
        let reader = spawn_recipient(
            recipient,
            s,
            epoch,
            record_from,
            Arc::clone(&shared),
            Arc::clone(&counters),
            stop.clone(),
        );
        let (write, answerer) = sender.into_sender(stop.clone());
        pairs.push(Pair {
            to: r,
            write,
            answerer,
            reader,
            shared,
        });
    }

    let end = timing.end();
    let status = || {
        format!(
            "{}: {} delivered",
            phase.name(),
            thousands(counters.delivered())
        )
    };
    let mut lag = None;
    let sent_per_pair = match phase {
        Phase::OpenLoop { rate } => {
            let senders = pairs
                .iter()
                .map(|p| (Arc::clone(&p.write), p.to.clone()))
                .collect();
            let pacing = tokio::spawn(open_loop(senders, rate, o.body_bytes, timing));
            load::show_phase(&bar, start, end, status).await;
            let (sent, pacer_lag) = pacing.await.context("the pacer failed")??;
            lag = Some(pacer_lag);
            sent
        }
        Phase::Window => {
            tokio::time::sleep_until(start.into()).await;
            let tasks: Vec<_> = pairs
                .iter()
                .map(|p| {
                    tokio::spawn(windowed_sender(
                        Arc::clone(&p.write),
                        p.to.clone(),
                        Arc::clone(&p.shared),
                        o.window,
                        o.body_bytes,
                        epoch,
                        end,
                    ))
                })
                .collect();
            load::show_phase(&bar, start, end, status).await;
            let mut sent = Vec::with_capacity(tasks.len());
            for t in tasks {
                sent.push(t.await.context("a sender task failed")??);
            }
            sent
        }
    };
    let send_secs = start.elapsed().as_secs_f64();
    let total: u64 = sent_per_pair.iter().sum();

    // Drain: everything sent must arrive.
    let drain = o.duration.max(Duration::from_secs(10));
    load::wait_until(drain, &bar, || counters.delivered() >= total, status).await;
    stop.cancel();
    let mut hist = load::histogram()?;
    let (mut delivered, mut lost, mut reordered) = (0u64, 0u64, 0u64);
    let mut last_at: Option<Instant> = None;
    for (pair, sent) in pairs.into_iter().zip(&sent_per_pair) {
        pair.answerer
            .await
            .context("a sender's reader failed")?
            .with_context(|| format!("the connection sending to {}", pair.to))?;
        let got = pair
            .reader
            .await
            .context("a recipient task failed")?
            .with_context(|| format!("the recipient {}", pair.to))?;
        load::merge(&mut hist, &got.hist)?;
        delivered += got.count;
        lost += sent.saturating_sub(got.count);
        reordered += got.reordered;
        last_at = last_at.max(got.last_at);
    }
    bar.finish_and_clear();
    let describe = match &version {
        Some(v) => format!("{} ({v})", peer.describe),
        None => peer.describe.clone(),
    };
    peer.stop().await;
    if lost > 0 || reordered > 0 {
        bail!(
            "{}: {lost} of {total} messages did not arrive within {} s after the phase and \
             {reordered} arrived out of order, on {describe}",
            phase.name(),
            drain.as_secs()
        );
    }

    let mut report = Report::new("irc");
    report.server = describe;
    let deliver_secs = last_at.map_or(send_secs, |t| (t - start).as_secs_f64());
    report.delivered_per_sec = Some(round(delivered as f64 / deliver_secs.max(1e-9), 1));
    report.set_latency(&hist);
    report.figure("phase", phase.name());
    report.figure("messages", total);
    report.figure("lost", lost);
    report.param("pairs", o.pairs);
    report.param("body_bytes", o.body_bytes);
    report.param("duration_secs", o.duration.as_secs_f64());
    match phase {
        Phase::OpenLoop { rate } => {
            report.figure("offered_per_sec", rate);
            if let Some(lag) = lag.filter(|h| !h.is_empty()) {
                let p99 = lag.value_at_quantile(0.99) as f64 / 1000.0;
                report.figure("pacer_lag_p99_ms", round(p99, 3));
            }
            report.param("rate", rate);
            report.param("warmup_secs", warmup.as_secs_f64());
            report.note = Some(format!(
                "open loop: latency from each message's intended send time to its arrival at \
                 the recipient, over plain IRC to {}",
                report.server
            ));
        }
        Phase::Window => {
            report.param("window", o.window);
            report.note = Some(format!(
                "throughput: each sender keeps {} messages its recipient has not yet received; \
                 latency from each send to its arrival, over plain IRC to {}",
                o.window, report.server
            ));
        }
    }
    Ok(report)
}

/// Connects the pairs `nicks` (sender, recipient) to `peer`, `at_once` pairs at a time (both
/// connections of a pair at once); returns them in order with their nicks.
async fn connect_pairs(
    peer: &Peer,
    nicks: &[(String, String)],
    at_once: usize,
) -> Result<Vec<(Conn, Conn, String, String)>> {
    futures::stream::iter(nicks.iter().map(|(s, r)| async {
        let (sender, recipient) = tokio::try_join!(
            Conn::connect(peer.addr, s, peer.pass_for(s)),
            Conn::connect(peer.addr, r, peer.pass_for(r)),
        )?;
        Ok::<_, anyhow::Error>((sender, recipient, s.clone(), r.clone()))
    }))
    .buffered(at_once.max(1))
    .try_collect()
    .await
}

/// The IRC server of one phase.
struct Peer {
    /// Where the clients connect.
    addr: SocketAddr,
    /// What reports call it.
    describe: String,
    /// chatd's admin path (its database), where the accounts are made; `None` for an
    /// external server.
    admin: Option<Target>,
    /// The `--irc-pass` of an external server.
    pass: Option<String>,
    running: Running,
}

enum Running {
    External,
    InProcess {
        _dir: tempfile::TempDir,
        shutdown: CancellationToken,
        task: JoinHandle<()>,
    },
    Child {
        _dir: tempfile::TempDir,
        child: tokio::process::Child,
    },
}

impl Peer {
    async fn start(ctx: &Ctx<'_>) -> Result<Peer> {
        let o = ctx.options;
        match (&o.irc.server, &o.target) {
            (Some(addr), _) => Ok(Peer {
                addr: *addr,
                describe: format!("external IRC server on {addr}"),
                admin: None,
                pass: o.irc.pass.clone(),
                running: Running::External,
            }),
            (
                None,
                TargetSpec::InProcess {
                    server_exe: Some(exe),
                },
            ) => Peer::child(exe, o.durability).await,
            (None, _) => Peer::in_process(o.durability).await,
        }
    }

    /// chatd in this process, with the bench's capacity limits.
    async fn in_process(durability: Durability) -> Result<Peer> {
        let dir = scratch_dir()?;
        let options = ServerOptions::in_dir(dir.path(), durability, capacity_limits());
        let server = Server::start(&options).await?;
        let native = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on 127.0.0.1")?;
        let irc = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on 127.0.0.1")?;
        let addr = irc.local_addr()?;
        let admin = Target::external(
            native.local_addr()?.into(),
            server.fingerprint(),
            options.db.clone(),
            None,
        );
        let shutdown = CancellationToken::new();
        let listeners = Listeners {
            native,
            irc: None,
            irc_plain: Some(irc),
        };
        let task = tokio::spawn(server.run_with(listeners, shutdown.clone()));
        Ok(Peer {
            addr,
            describe: format!("chatd in-process, plaintext IRC gateway on {addr}"),
            admin: Some(admin),
            pass: None,
            running: Running::InProcess {
                _dir: dir,
                shutdown,
                task,
            },
        })
    }

    /// `exe serve` as a child process with the send-rate limit lifted (as in-process).
    async fn child(exe: &Path, durability: Durability) -> Result<Peer> {
        let config = format!(
            "send_rate_per_second = {max}\nsend_burst = {max}\n",
            max = u32::MAX
        );
        let c = ChildServer::spawn(exe, durability, &config, true).await?;
        let addr = c.irc.context("the child chatd has no IRC listener")?;
        let pid = c.child.id();
        Ok(Peer {
            addr,
            describe: format!(
                "chatd child process (pid {}), plaintext IRC gateway on {addr}",
                pid.unwrap_or(0)
            ),
            admin: Some(Target::external(c.addr, c.pin, DbTarget::Sqlite(c.db), pid)),
            pass: None,
            running: Running::Child {
                _dir: c.dir,
                child: c.child,
            },
        })
    }

    /// The `PASS` a connection as `nick` sends, if any.
    fn pass_for(&self, nick: &str) -> Option<String> {
        match self.admin {
            Some(_) => Some(format!("{nick}:{}", load::PASSWORD)),
            None => self.pass.clone(),
        }
    }

    async fn stop(self) {
        match self.running {
            Running::External => {}
            Running::InProcess { shutdown, task, .. } => {
                shutdown.cancel();
                let _ = task.await;
            }
            Running::Child { mut child, .. } => {
                let _ = child.kill().await;
            }
        }
    }
}

fn scratch_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("chatd-bench-irc-")
        .tempdir()
        .context("cannot make a temporary directory")
}

/// What a line from the server means to a bench client.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// `PING :token`: answer `PONG :token`.
    Ping(String),
    /// `001`: registered.
    Welcome,
    /// `004`: the server's name and version.
    MyInfo(String),
    /// A PRIVMSG from the nick `from`.
    Privmsg { from: String, text: String },
    /// The server refused something or closed the connection; the scenario cannot go on.
    Fatal(String),
    /// Anything else (MOTD, NOTICE, ISUPPORT…).
    Other,
}

/// Classifies one line from an IRC server.
fn classify(line: &str) -> Incoming {
    let Some(m) = IrcMessage::parse(line) else {
        return Incoming::Other;
    };
    let last = m.params.last().cloned().unwrap_or_default();
    match m.command.as_str() {
        "PING" => Incoming::Ping(last),
        "001" => Incoming::Welcome,
        "004" => Incoming::MyInfo(m.params.get(2).cloned().unwrap_or_default()),
        "PRIVMSG" => Incoming::Privmsg {
            from: m
                .source
                .as_deref()
                .map(|s| s.split('!').next().unwrap_or(s).to_string())
                .unwrap_or_default(),
            text: last,
        },
        "ERROR" => Incoming::Fatal(format!("the server closed the connection: {last}")),
        "433" => Incoming::Fatal(format!(
            "nick {} is already in use (433)",
            m.param(1).unwrap_or("?")
        )),
        "464" => Incoming::Fatal(format!(
            "the server refused the password (464): {last}; give its password with --irc-pass"
        )),
        "263" => Incoming::Fatal(format!(
            "the server throttled the bench (263 {}): lift its flood limits for 127.0.0.1",
            m.param(1).unwrap_or("?")
        )),
        // 422 is "no MOTD": information, not a refusal.
        "422" => Incoming::Other,
        code if code.len() == 3 && (code.starts_with('4') || code.starts_with('5')) => {
            Incoming::Fatal(format!(
                "the server answered {code}: {}",
                m.params.join(" ")
            ))
        }
        _ => Incoming::Other,
    }
}

/// The text of one bench message: its sequence number, its stamp, padding to `len` bytes.
fn body(seq: u64, stamp: u64, len: usize) -> String {
    let head = format!("{seq} ");
    let stamped = load::stamped_body(stamp, len.saturating_sub(head.len()));
    head + &stamped
}

/// The sequence number and stamp of a bench message, if it is one.
fn parse_body(text: &str) -> Option<(u64, u64)> {
    let (seq, rest) = text.split_once(' ')?;
    Some((seq.parse().ok()?, load::read_stamp(rest)?))
}

type Writer = FramedWrite<OwnedWriteHalf, IrcCodec>;
type Reader = FramedRead<OwnedReadHalf, IrcCodec>;

/// A registered IRC connection.
struct Conn {
    read: Reader,
    write: Writer,
    /// The server's version from `004`, if it sent one.
    version: Option<String>,
}

impl Conn {
    /// Connects as `nick` (sending `PASS` first when given) and waits for `001`.
    async fn connect(addr: SocketAddr, nick: &str, pass: Option<String>) -> Result<Conn> {
        let register = async {
            let tcp = TcpStream::connect(addr)
                .await
                .with_context(|| format!("cannot connect to the IRC server on {addr}"))?;
            let _ = tcp.set_nodelay(true);
            let (read, write) = tcp.into_split();
            let mut conn = Conn {
                read: FramedRead::new(read, IrcCodec::new(MAX_CLIENT_LINE)),
                write: FramedWrite::new(write, IrcCodec::new(MAX_CLIENT_LINE)),
                version: None,
            };
            if let Some(pass) = pass {
                conn.write.feed(format!("PASS {pass}")).await?;
            }
            conn.write.feed(format!("NICK {nick}")).await?;
            conn.write
                .send(format!("USER {nick} 0 * :chatd bench"))
                .await?;
            let (mut welcomed, mut after_welcome) = (false, 0);
            loop {
                let line = match conn.read.next().await {
                    Some(Ok(Line::Text(line))) => line,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                    None => bail!("the server closed the connection before 001"),
                };
                match classify(&line) {
                    Incoming::Ping(token) => conn.write.send(format!("PONG :{token}")).await?,
                    Incoming::MyInfo(v) => conn.version = Some(v),
                    Incoming::Welcome => welcomed = true,
                    Incoming::Fatal(why) => bail!(why),
                    Incoming::Privmsg { .. } | Incoming::Other => {}
                }
                // 002, 003 and 004 follow 001; wait for 004 so the report can name the
                // server, but not beyond a few lines for a server that sends none.
                if welcomed {
                    after_welcome += 1;
                    if conn.version.is_some() || after_welcome > 4 {
                        return Ok::<_, anyhow::Error>(conn);
                    }
                }
            }
        };
        match tokio::time::timeout(REGISTER_TIMEOUT, register).await {
            Ok(conn) => conn.with_context(|| format!("IRC login as {nick} on {addr}")),
            Err(_) => bail!(
                "IRC login as {nick} on {addr}: not welcomed within {} s",
                REGISTER_TIMEOUT.as_secs()
            ),
        }
    }

    /// Splits a sender's connection: the writer for its sends, and a task that answers
    /// `PING` on it and fails on anything fatal until `stop`.
    fn into_sender(self, stop: CancellationToken) -> (Arc<Mutex<Writer>>, JoinHandle<Result<()>>) {
        let write = Arc::new(Mutex::new(self.write));
        let pong = Arc::clone(&write);
        let mut read = self.read;
        let task = tokio::spawn(async move {
            loop {
                let line = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(()),
                    line = read.next() => line,
                };
                match line {
                    Some(Ok(Line::Text(line))) => match classify(&line) {
                        Incoming::Ping(token) => {
                            pong.lock().await.send(format!("PONG :{token}")).await?;
                        }
                        Incoming::Fatal(why) => bail!(why),
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => bail!("the server closed the connection"),
                }
            }
        });
        (write, task)
    }
}

/// What a sender and its recipient's reader share.
#[derive(Default)]
struct PairShared {
    /// Messages the recipient has received.
    received: AtomicU64,
    /// Woken at each receipt (the window of the throughput phase).
    arrived: Notify,
}

/// One pair while it runs.
struct Pair {
    to: String,
    write: Arc<Mutex<Writer>>,
    answerer: JoinHandle<Result<()>>,
    reader: JoinHandle<Result<Tally>>,
    shared: Arc<PairShared>,
}

/// What one recipient saw.
struct Tally {
    hist: Histogram<u64>,
    count: u64,
    /// Messages whose sequence number was not the one expected next.
    reordered: u64,
    last_at: Option<Instant>,
}

/// Reads a recipient's connection until `stop`: answers `PING`, and records each bench
/// message from `from` (latency from its stamp, if stamped at or after `record_from_us`;
/// order by its sequence number).
fn spawn_recipient(
    conn: Conn,
    from: String,
    epoch: Instant,
    record_from_us: u64,
    shared: Arc<PairShared>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> JoinHandle<Result<Tally>> {
    tokio::spawn(async move {
        let Conn {
            mut read,
            mut write,
            ..
        } = conn;
        let mut tally = Tally {
            hist: load::histogram()?,
            count: 0,
            reordered: 0,
            last_at: None,
        };
        let mut next = 1u64;
        loop {
            let line = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(tally),
                line = read.next() => line,
            };
            let line = match line {
                Some(Ok(Line::Text(line))) => line,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => bail!("the server closed the connection"),
            };
            match classify(&line) {
                Incoming::Ping(token) => write.send(format!("PONG :{token}")).await?,
                Incoming::Privmsg { from: f, text } if f.eq_ignore_ascii_case(&from) => {
                    let now = Instant::now();
                    let Some((seq, stamp)) = parse_body(&text) else {
                        continue;
                    };
                    if seq == next {
                        next += 1;
                    } else {
                        tally.reordered += 1;
                        next = next.max(seq + 1);
                    }
                    if stamp >= record_from_us {
                        let us = load::micros_between(epoch, now).saturating_sub(stamp);
                        tally.hist.saturating_record(us.max(1));
                    }
                    tally.count += 1;
                    tally.last_at = Some(now);
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    shared.received.fetch_add(1, Ordering::Release);
                    shared.arrived.notify_one();
                }
                Incoming::Fatal(why) => bail!(why),
                _ => {}
            }
        }
    })
}

/// Writes the message `seq` stamped `stamp` to `to` (buffered; the caller flushes).
async fn feed(write: &mut Writer, to: &str, seq: u64, stamp: u64, len: usize) -> Result<()> {
    write
        .feed(format!("PRIVMSG {to} :{}", body(seq, stamp, len)))
        .await?;
    Ok(())
}

/// Offers `rate` messages/s in total over `senders` by [`load::pace`], each message stamped
/// with its intended send time, as `latency` does. Returns how many each sender sent, and
/// how late the pacer handed out the sends due from `timing.record_from_us` on.
async fn open_loop(
    senders: Vec<(Arc<Mutex<Writer>>, String)>,
    rate: u64,
    body_len: usize,
    timing: Timing,
) -> Result<(Vec<u64>, Histogram<u64>)> {
    let pacing = load::pace(senders, rate, timing, |(write, to), mut due| async move {
        let mut seq = 0u64;
        while let Some(stamp) = due.recv().await {
            let mut w = write.lock().await;
            seq += 1;
            feed(&mut w, &to, seq, stamp, body_len).await?;
            // Everything due meanwhile goes in the same flush.
            while let Ok(stamp) = due.try_recv() {
                seq += 1;
                feed(&mut w, &to, seq, stamp, body_len).await?;
            }
            w.flush().await?;
        }
        Ok::<_, anyhow::Error>(seq)
    })
    .await?;
    Ok((pacing.results, pacing.lag))
}

/// Keeps `window` messages to `to` that its recipient has not yet received, until
/// `deadline`; returns how many it sent.
async fn windowed_sender(
    write: Arc<Mutex<Writer>>,
    to: String,
    shared: Arc<PairShared>,
    window: usize,
    body_len: usize,
    epoch: Instant,
    deadline: Instant,
) -> Result<u64> {
    let mut sent = 0u64;
    let window = window as u64;
    while Instant::now() < deadline {
        let unreceived = sent.saturating_sub(shared.received.load(Ordering::Acquire));
        let open = window.saturating_sub(unreceived);
        if open == 0 {
            // A receipt between the load and here leaves a permit: no wake-up is lost.
            tokio::select! {
                _ = shared.arrived.notified() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            continue;
        }
        let mut w = write.lock().await;
        for _ in 0..open {
            sent += 1;
            let stamp = load::micros_between(epoch, Instant::now());
            feed(&mut w, &to, sent, stamp, body_len).await?;
        }
        w.flush().await?;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_sequence_and_stamp() {
        let b = body(42, 1_234_567, 200);
        assert_eq!(b.len(), 200);
        assert_eq!(parse_body(&b), Some((42, 1_234_567)));
        assert_eq!(parse_body("hello there"), None);
        assert_eq!(parse_body("7"), None);
    }

    #[test]
    fn server_lines_are_classified() {
        assert_eq!(classify("PING :abc"), Incoming::Ping("abc".into()));
        assert_eq!(
            classify("PING :chatd-ack-3"),
            Incoming::Ping("chatd-ack-3".into())
        );
        assert_eq!(
            classify(":irc.local 001 bob :Welcome to the network"),
            Incoming::Welcome
        );
        assert_eq!(
            classify(":irc.local 004 bob irc.local InspIRCd-3 iosw biklmnopstv :bklov"),
            Incoming::MyInfo("InspIRCd-3".into())
        );
        assert_eq!(
            classify("@time=x :alice!a@host PRIVMSG bob :1 0000000000000001|xx"),
            Incoming::Privmsg {
                from: "alice".into(),
                text: "1 0000000000000001|xx".into()
            }
        );
        let Incoming::Fatal(why) = classify(":irc.local 433 * bob :Nickname is already in use")
        else {
            panic!("433 is fatal");
        };
        assert!(why.contains("nick bob is already in use"), "{why}");
        assert!(matches!(
            classify("ERROR :Closing link"),
            Incoming::Fatal(_)
        ));
        assert!(matches!(
            classify(":chatd 401 alice nobody :No such nick"),
            Incoming::Fatal(_)
        ));
        assert_eq!(classify(":irc.local 375 bob :- MOTD"), Incoming::Other);
        assert_eq!(
            classify(":irc.local 422 bob :Message of the day file is missing."),
            Incoming::Other
        );
        assert_eq!(classify(""), Incoming::Other);
    }
}
