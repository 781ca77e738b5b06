//! `login`: four phases of `--duration` each.
//!
//! 1. Successful logins/s: a few workers each open a connection, log in with the password
//!    (argon2id verify, a new device) and close, over and over.
//! 2. Unloaded: connected users exchange messages at a modest fixed rate (open loop);
//!    their latency is the baseline.
//! 3. Flooded: the same message load on fresh pairs while `--flood` connections send wrong
//!    passwords for existing accounts as fast as they are answered. Meanwhile a real user
//!    (an account of its own, not flooded) logs in by password over and over, alternately
//!    with the login proof from its previous login and without one, retrying each
//!    `rate_limited` at once: the tries and time each login needed (`proof_login_*`,
//!    `plain_login_*`). Without a proof that is how every password login fared before
//!    proofs existed; against a server that issues none the proof figures are absent.
//! 4. Guessing: the same again while the flood tries a new user name every time.
//!
//! The server throttles failed logins per account (after 5), per source address (after
//! 20; a server may exempt loopback, as a local reverse proxy makes every client
//! 127.0.0.1) and server-wide (a budget of failed password checks per second). Every connection here comes from 127.0.0.1, so what the flood costs the
//! server depends on those rules: the report counts what was attempted and what the server
//! answered (`invalid_credentials` cost an argon2 verify, `rate_limited` did not). On an
//! existing server the flood may leave 127.0.0.1 throttled for a while, which is why this
//! scenario runs last.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use super::ctx::Ctx;
use super::load::{self, Counters, Timing};
use super::options::TargetSpec;
use super::report::{round, thousands, Report};
use super::target::{Target, TokenPair};
use crate::client::ClientError;
use crate::protocol::{ErrorCode, Secret};

/// Messages/s of the connected users' load in phases 2 and 3.
const CHAT_RATE: u64 = 1000;
/// Pairs carrying that load (per phase).
const CHAT_PAIRS: usize = 10;

pub(super) async fn run(ctx: &Ctx<'_>) -> Result<Vec<Report>> {
    let o = ctx.options;
    let bar = ctx.progress("login", None);
    bar.set_message("starting the server and accounts");
    let target = ctx.target().await?;
    let workers = (2 * ctx.machine.cores).clamp(2, 16);
    let pairs = CHAT_PAIRS.min(o.pairs);
    let prefix = ctx.prefix();
    let login_names: Vec<String> = (0..workers).map(|i| format!("{prefix}-l{i}")).collect();
    let flood_names: Vec<String> = (0..o.flood).map(|i| format!("{prefix}-f{i}")).collect();
    let probe_name = format!("{prefix}-p0");
    let login_accounts = target
        .create_accounts(&login_names, &ctx.password_hash, false)
        .await?;
    let chat_pairs = target
        .create_pairs(&prefix, 3 * pairs, &ctx.password_hash)
        .await?;
    target
        .create_accounts(&flood_names, &ctx.password_hash, false)
        .await?;
    target
        .create_accounts(std::slice::from_ref(&probe_name), &ctx.password_hash, false)
        .await?;

    // Phase 1: successful logins.
    let logins = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + o.duration;
    let mut tasks = Vec::new();
    for account in &login_accounts {
        tasks.push(tokio::spawn(login_loop(
            target.connect_spec(),
            account.name.clone(),
            end,
            Arc::clone(&logins),
        )));
    }
    load::show_phase(&bar, start, end, || {
        format!("1/4 {} logins", thousands(logins.load(Ordering::Relaxed)))
    })
    .await;
    let mut login_hist = load::histogram()?;
    for t in tasks {
        load::merge(&mut login_hist, &t.await.context("a login task failed")??)?;
    }
    let login_secs = start.elapsed().as_secs_f64();
    let login_count = login_hist.len();

    // Phases 2 to 4: message latency without a flood, during a flood at the flood
    // accounts, and during one that guesses a fresh name each time.
    let sets: Vec<&[TokenPair]> = chat_pairs.chunks(pairs).collect();
    let [first, second, third] = sets[..] else {
        bail!("bench accounts were not made in three sets");
    };
    let unloaded = chat_phase(ctx, &target, first, &bar, "2/4 unloaded").await?;
    let names: Vec<FloodNames> = flood_names.into_iter().map(FloodNames::Fixed).collect();
    // The real user's first proof, from a login before the flood.
    let first_proof = {
        let conn = target.connect().await?;
        let info = conn
            .client
            .login(&probe_name, &Secret::new(load::PASSWORD), "bench probe")
            .await?;
        conn.client.logout().await?;
        info.proof
    };
    let probe = Probe {
        name: probe_name,
        proof: first_proof,
    };
    let (flooded, tally, flood_secs, probes) = flood_phase(
        ctx,
        &target,
        second,
        &bar,
        "3/4 flooded",
        names,
        Some(probe),
    )
    .await?;
    let names = (0..o.flood)
        .map(|i| FloodNames::Fresh(format!("{prefix}-g{i}-")))
        .collect();
    let (guessed, guess_tally, guess_secs, _) =
        flood_phase(ctx, &target, third, &bar, "4/4 guessing", names, None).await?;
    bar.finish_and_clear();
    let server = target.describe();
    target.stop().await;

    let mut report = Report::new("login");
    report.server = server;
    report.logins_per_sec = Some(round(login_count as f64 / login_secs, 1));
    report.set_latency(&flooded);
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
    if !login_hist.is_empty() {
        report.figure(
            "login_p50_ms",
            round(login_hist.value_at_quantile(0.5) as f64 / 1000.0, 3),
        );
    }
    if !unloaded.is_empty() {
        report.figure(
            "unloaded_p50_ms",
            round(unloaded.value_at_quantile(0.5) as f64 / 1000.0, 3),
        );
        report.figure("unloaded_p99_ms", round(p99(&unloaded), 3));
        if !flooded.is_empty() {
            report.figure("p99_ratio", round(p99(&flooded) / p99(&unloaded), 2));
        }
    }
    tally.report(&mut report, "flood", flood_secs);
    let other = tally.other.load(Ordering::Relaxed);
    if other > 0 {
        report.figure("flood_other", other);
    }
    probes.report(&mut report);
    guess_tally.report(&mut report, "guess", guess_secs);
    if !guessed.is_empty() {
        report.figure("guess_p99_ms", round(p99(&guessed), 3));
        if !unloaded.is_empty() {
            report.figure("guess_p99_ratio", round(p99(&guessed) / p99(&unloaded), 2));
        }
    }
    report.param("login_workers", workers);
    report.param("chat_pairs", pairs);
    report.param("chat_rate", CHAT_RATE);
    report.param("flood_connections", o.flood);
    report.param("phase_secs", o.duration.as_secs_f64());
    let mut note = "p50/p99/p99.9/max: connected users' message latency while 127.0.0.1 \
                    floods wrong passwords for existing accounts (flood_*); guess_*: the same \
                    while the flood tries a new name each time; invalid_credentials answers \
                    cost an argon2 verify, rate_limited ones did not; proof_login_* and \
                    plain_login_*: a real user's correct password during the wrong-password \
                    flood, with and without its login proof (tries until logged in, time)"
        .to_string();
    if matches!(o.target, TargetSpec::External { .. }) {
        note.push_str(
            "; the flood accounts (and 127.0.0.1, unless exempt) stay throttled there for a while",
        );
    }
    report.note = Some(note);
    Ok(vec![report])
}

/// Logs in as `user` over a new connection each time, until `end`; returns the login
/// latency histogram (connect, handshake, hello and login).
async fn login_loop(
    spec: (crate::client::ServerAddr, crate::tls::Fingerprint),
    user: String,
    end: Instant,
    logins: Arc<AtomicU64>,
) -> Result<Histogram<u64>> {
    let mut hist = load::histogram()?;
    let password = Secret::new(load::PASSWORD);
    while Instant::now() < end {
        let t = Instant::now();
        let conn = crate::client::Connection::connect(&spec.0, spec.1).await?;
        conn.client.login(&user, &password, "bench login").await?;
        hist.saturating_record((t.elapsed().as_micros() as u64).max(1));
        logins.fetch_add(1, Ordering::Relaxed);
        // Every login makes a device; log it out so the account stays under the server's
        // device cap (the logout is not timed).
        conn.client.logout().await?;
    }
    Ok(hist)
}

/// Answers the flood got.
#[derive(Default)]
struct FloodTally {
    attempts: AtomicU64,
    invalid: AtomicU64,
    rate_limited: AtomicU64,
    other: AtomicU64,
}

impl FloodTally {
    /// Adds `<name>_attempts`, `<name>_per_sec` over `secs`, `<name>_invalid_credentials`
    /// and `<name>_rate_limited` to `report`.
    fn report(&self, report: &mut Report, name: &str, secs: f64) {
        let attempts = self.attempts.load(Ordering::Relaxed);
        report.figure(&format!("{name}_attempts"), attempts);
        report.figure(&format!("{name}_per_sec"), round(attempts as f64 / secs, 1));
        report.figure(
            &format!("{name}_invalid_credentials"),
            self.invalid.load(Ordering::Relaxed),
        );
        report.figure(
            &format!("{name}_rate_limited"),
            self.rate_limited.load(Ordering::Relaxed),
        );
    }
}

/// Sends wrong passwords for `user` as fast as they are answered, until `stop`;
/// reconnects when the server closes the connection.
async fn flood_loop(
    spec: (crate::client::ServerAddr, crate::tls::Fingerprint),
    names: FloodNames,
    tally: Arc<FloodTally>,
    stop: CancellationToken,
) {
    let wrong = Secret::new("wrong-password!");
    let mut guess = 0u64;
    while !stop.is_cancelled() {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            c = crate::client::Connection::connect(&spec.0, spec.1) => c,
        };
        let Ok(conn) = conn else {
            tally.other.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        loop {
            let user = names.next(&mut guess);
            let answer = tokio::select! {
                _ = stop.cancelled() => return,
                a = conn.client.login(&user, &wrong, "flood") => a,
            };
            tally.attempts.fetch_add(1, Ordering::Relaxed);
            match answer {
                Err(ClientError::Server {
                    code: ErrorCode::InvalidCredentials,
                    ..
                }) => {
                    tally.invalid.fetch_add(1, Ordering::Relaxed);
                }
                Err(ClientError::Server {
                    code: ErrorCode::RateLimited,
                    ..
                }) => {
                    tally.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                Err(ClientError::Server { .. }) | Ok(_) => {
                    tally.other.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    tally.other.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// Which account names a flood connection tries.
enum FloodNames {
    /// Always this existing account: throttled per account after a few failures.
    Fixed(String),
    /// A new name with this prefix each time, as a guesser would: every name has its own
    /// free failures, so only a per-address throttle stops it.
    Fresh(String),
}

impl FloodNames {
    fn next(&self, n: &mut u64) -> String {
        match self {
            FloodNames::Fixed(name) => name.clone(),
            FloodNames::Fresh(prefix) => {
                *n += 1;
                format!("{prefix}{n}")
            }
        }
    }
}

/// Runs the connected users' load on `accounts` while one flood connection per entry of
/// `names` sends wrong passwords, and `probe` logs in meanwhile; returns the users'
/// latency, the flood's answers, how long it ran and the probe's logins.
async fn flood_phase(
    ctx: &Ctx<'_>,
    target: &Target,
    accounts: &[TokenPair],
    bar: &indicatif::ProgressBar,
    label: &str,
    names: Vec<FloodNames>,
    probe: Option<Probe>,
) -> Result<(Histogram<u64>, Arc<FloodTally>, f64, Probes)> {
    let stop = CancellationToken::new();
    let tally = Arc::new(FloodTally::default());
    let mut flooders = Vec::new();
    for names in names {
        flooders.push(tokio::spawn(flood_loop(
            target.connect_spec(),
            names,
            Arc::clone(&tally),
            stop.clone(),
        )));
    }
    let start = Instant::now();
    // The probe starts once the flood has spent the budgets, and stops with the phase.
    let probing = probe.map(|p| {
        let from = start + (ctx.options.duration / 5).min(Duration::from_secs(1));
        let until = start + ctx.options.duration;
        tokio::spawn(probe_loop(target.connect_spec(), p, from, until))
    });
    let measured = chat_phase(ctx, target, accounts, bar, label).await;
    let probes = match probing {
        Some(p) => p.await.context("the login probe failed")??,
        None => Probes::default(),
    };
    stop.cancel();
    for f in flooders {
        let _ = f.await;
    }
    Ok((measured?, tally, start.elapsed().as_secs_f64(), probes))
}

/// The real user of the flooded phase: an account of its own, and the proof from its last
/// password login (none from a server that issues none).
struct Probe {
    name: String,
    proof: Option<Secret>,
}

/// The probe's password logins: tries and time of each, with the proof and without.
#[derive(Default)]
struct Probes {
    proof: Vec<ProbeLogin>,
    plain: Vec<ProbeLogin>,
}

/// One login: how many `login` requests it took, how long, and whether it got in before the
/// phase ended.
struct ProbeLogin {
    tries: u64,
    elapsed: Duration,
    ok: bool,
}

impl Probes {
    fn report(&self, report: &mut Report) {
        for (prefix, logins) in [("proof_login", &self.proof), ("plain_login", &self.plain)] {
            if logins.is_empty() {
                continue;
            }
            let mut tries: Vec<u64> = logins.iter().map(|l| l.tries).collect();
            let mut ms: Vec<f64> = logins
                .iter()
                .map(|l| l.elapsed.as_secs_f64() * 1000.0)
                .collect();
            tries.sort_unstable();
            ms.sort_by(f64::total_cmp);
            report.figure(&format!("{prefix}s"), logins.len());
            report.figure(
                &format!("{prefix}s_in"),
                logins.iter().filter(|l| l.ok).count(),
            );
            report.figure(&format!("{prefix}_tries_min"), tries[0]);
            report.figure(&format!("{prefix}_tries_median"), tries[tries.len() / 2]);
            report.figure(&format!("{prefix}_tries_max"), tries[tries.len() - 1]);
            report.figure(&format!("{prefix}_ms_median"), round(ms[ms.len() / 2], 1));
            report.figure(&format!("{prefix}_ms_max"), round(ms[ms.len() - 1], 1));
        }
    }
}

/// From `from` until `until`: logs in as the probe with its proof (keeping the fresh one),
/// then without, retrying `rate_limited` at once, and logs each device out again.
async fn probe_loop(
    spec: (crate::client::ServerAddr, crate::tls::Fingerprint),
    mut probe: Probe,
    from: Instant,
    until: Instant,
) -> Result<Probes> {
    tokio::time::sleep_until(from.into()).await;
    let mut probes = Probes::default();
    while Instant::now() < until {
        if let Some(proof) = probe.proof.take() {
            let (login, fresh) = probe_login(&spec, &probe.name, Some(&proof), until).await?;
            probes.proof.push(login);
            probe.proof = fresh.or(Some(proof));
        }
        let (login, _) = probe_login(&spec, &probe.name, None, until).await?;
        probes.plain.push(login);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(probes)
}

/// One password login of the probe, retried while it is `rate_limited` until `until`;
/// the fresh proof when it got in.
async fn probe_login(
    spec: &(crate::client::ServerAddr, crate::tls::Fingerprint),
    user: &str,
    proof: Option<&Secret>,
    until: Instant,
) -> Result<(ProbeLogin, Option<Secret>)> {
    let password = Secret::new(load::PASSWORD);
    let start = Instant::now();
    let mut tries = 0;
    let mut conn = crate::client::Connection::connect(&spec.0, spec.1).await?;
    loop {
        tries += 1;
        match conn
            .client
            .login_with_proof(user, &password, proof, "bench probe")
            .await
        {
            Ok(info) => {
                let elapsed = start.elapsed();
                conn.client.logout().await?;
                let login = ProbeLogin {
                    tries,
                    elapsed,
                    ok: true,
                };
                return Ok((login, info.proof));
            }
            Err(ClientError::Server {
                code: ErrorCode::RateLimited,
                ..
            }) => {}
            Err(e @ ClientError::Server { .. }) => {
                return Err(e).context("the probe's correct password was refused")
            }
            Err(_) => conn = crate::client::Connection::connect(&spec.0, spec.1).await?,
        }
        if Instant::now() >= until {
            let login = ProbeLogin {
                tries,
                elapsed: start.elapsed(),
                ok: false,
            };
            return Ok((login, None));
        }
    }
}

/// Runs the connected users' load on the pairs `accounts` for the duration; returns their
/// end-to-end latency from the intended send times.
async fn chat_phase(
    ctx: &Ctx<'_>,
    target: &Target,
    accounts: &[TokenPair],
    bar: &indicatif::ProgressBar,
    label: &str,
) -> Result<Histogram<u64>> {
    let o = ctx.options;
    let epoch = Instant::now();
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let pairs = load::connect_pairs(target, accounts).await?;
    let timing = Timing::from_now(epoch, o.duration, load::warmup(o.duration));
    let (recipients, senders) =
        load::start_pairs(pairs, epoch, timing.record_from_us, &counters, &stop);
    let pacing = tokio::spawn(load::open_loop(
        senders,
        CHAT_RATE,
        o.body_bytes,
        timing,
        Arc::clone(&counters),
    ));
    let status = || {
        format!(
            "{label}: {} messages delivered",
            thousands(counters.delivered())
        )
    };
    load::show_phase(bar, timing.start, timing.end(), status).await;
    pacing.await??;
    let acked = counters.acked();
    load::wait_until(
        Duration::from_secs(10),
        bar,
        || counters.delivered() >= acked,
        status,
    )
    .await;
    stop.cancel();
    let (hist, _, _) = load::collect(recipients).await?;
    Ok(hist)
}
