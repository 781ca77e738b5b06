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
//! Each scenario is a module with one `run(&Ctx) -> Result<Vec<Report>>`; adding one means
//! a variant of [`Scenario`] and a line in [`run_scenarios`]. This module never panics on a
//! failed connection or a refused request: errors come back as `anyhow` errors naming the
//! scenario, and the binary prints them.

mod backlog;
mod connections;
mod fanout;
mod irc;
mod latency;
mod load;
mod login;
mod report;
mod target;
mod throughput;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::auth::Hasher;
use crate::client::ServerAddr;
use crate::protocol::Secret;
use crate::store::Durability;
use crate::tls::Fingerprint;

pub use irc::IrcOptions;
pub use report::{render_table, Machine, Report};
use target::Target;

/// A load scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scenario {
    /// Sender/recipient pairs with a window of sends in flight: messages/s and latency.
    Throughput,
    /// A fixed offered rate, open loop: latency percentiles measured from the intended send.
    Latency,
    /// One room of 100 members: messages/s in, deliveries/s out.
    Fanout,
    /// A queue of messages for an offline device, then the time to drain it.
    Backlog,
    /// As many authenticated idle connections as the limits allow, and their memory.
    Connections,
    /// Pairs over plaintext IRC (chatd's gateway, or --irc-server): open-loop latency, then
    /// throughput with a window of messages not yet received.
    Irc,
    /// Logins/s, and message latency during a wrong-password flood.
    Login,
}

impl Scenario {
    /// Every scenario, in the order they run (login last: its flood throttles 127.0.0.1).
    pub const ALL: [Scenario; 7] = [
        Scenario::Throughput,
        Scenario::Latency,
        Scenario::Fanout,
        Scenario::Backlog,
        Scenario::Connections,
        Scenario::Irc,
        Scenario::Login,
    ];

    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Latency => "latency",
            Scenario::Fanout => "fanout",
            Scenario::Backlog => "backlog",
            Scenario::Connections => "connections",
            Scenario::Irc => "irc",
            Scenario::Login => "login",
        }
    }
}

/// `chatd bench` command-line arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Scenarios to run (default: all), in this order whatever the order given.
    #[arg(value_enum, value_name = "SCENARIO")]
    pub scenarios: Vec<Scenario>,
    /// Seconds each timed phase runs.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// Sender/recipient pairs (throughput, latency, irc).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub pairs: usize,
    /// Sends in flight per sender (throughput); messages not yet received (irc).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub window: usize,
    /// Offered messages/s (latency, irc). A comma-separated list measures each rate in turn, for
    /// a latency-versus-load curve: --rate 1000,5000,10000.
    #[arg(long, default_value = "10000", value_delimiter = ',', value_name = "N")]
    pub rate: Vec<u64>,
    /// Members of the room (fanout).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub members: usize,
    /// Message body in bytes.
    #[arg(long, default_value_t = 200, value_name = "BYTES")]
    pub body: usize,
    /// Messages queued for the offline device (backlog).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub backlog: usize,
    /// Idle connections to open (connections) [default: as many as the fd limit allows].
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Connections sending wrong passwords as fast as they are answered (login).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub flood: usize,
    /// Durability of the in-process server: full or normal.
    #[arg(long, default_value = "full", value_name = "MODE")]
    pub durability: Durability,
    /// Drive this running server instead of an in-process one; needs --pin and --db (its
    /// database, where the bench creates its accounts).
    #[arg(long, value_name = "HOST:PORT", requires = "pin")]
    pub server: Option<ServerAddr>,
    /// The --server's key fingerprint (`chatd fingerprint`).
    #[arg(long, value_name = "sha256:HEX", requires = "server")]
    pub pin: Option<Fingerprint>,
    /// Process id of the --server, to read its memory from /proc (connections).
    #[arg(long, value_name = "PID", requires = "server")]
    pub server_pid: Option<u32>,
    /// Drive this IRC server (irc) instead of chatd's gateway: an address on loopback, such
    /// as 127.0.0.1:6667. Connections log in without a password unless --irc-pass is given.
    #[arg(long, value_name = "IP:PORT")]
    pub irc_server: Option<String>,
    /// The --irc-server's password (sent as PASS by every connection).
    #[arg(long, value_name = "PASSWORD", requires = "irc_server")]
    pub irc_pass: Option<String>,
    /// Print one JSON object per scenario (and per rate) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Where the scenarios send their load.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// A fresh in-process server per scenario. `server_exe` (a `chatd` binary), when
    /// given, runs the `connections` scenario's server as a child process so that its
    /// memory is measured apart from the bench's clients.
    InProcess { server_exe: Option<PathBuf> },
    /// A running server; accounts are created through its database `db`.
    External {
        addr: ServerAddr,
        pin: Fingerprint,
        db: PathBuf,
        pid: Option<u32>,
    },
}

/// Everything a bench run needs; [`BenchArgs`] with the defaults resolved.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Scenarios to run; empty means all.
    pub scenarios: Vec<Scenario>,
    /// Length of each timed phase.
    pub duration: Duration,
    /// Sender/recipient pairs (throughput, latency).
    pub pairs: usize,
    /// Sends in flight per sender (throughput).
    pub window: usize,
    /// Offered messages/s, one latency measurement each.
    pub rates: Vec<u64>,
    /// Members of the fanout room.
    pub members: usize,
    /// Message body size.
    pub body_bytes: usize,
    /// Messages queued for the offline device (backlog).
    pub backlog: usize,
    /// Idle connections to open; `None` for as many as the fd limit allows.
    pub connections: Option<usize>,
    /// Wrong-password flood connections (login).
    pub flood: usize,
    /// Durability of the servers the bench starts.
    pub durability: Durability,
    /// Where the load goes.
    pub target: TargetSpec,
    /// Which IRC server the `irc` scenario drives.
    pub irc: IrcOptions,
}

impl BenchOptions {
    /// Checks the arguments. `db` is the database given with `--db` (or its environment
    /// variable or config key), needed with `--server`; `server_exe` is the `chatd` binary.
    pub fn from_args(
        args: &BenchArgs,
        db: Option<PathBuf>,
        server_exe: Option<PathBuf>,
    ) -> Result<BenchOptions> {
        let target = match (&args.server, args.pin) {
            (Some(addr), Some(pin)) => {
                let Some(db) = db else {
                    bail!(
                        "--server needs --db PATH: the database of that server, where the \
                         bench creates its accounts"
                    );
                };
                TargetSpec::External {
                    addr: addr.clone(),
                    pin,
                    db,
                    pid: args.server_pid,
                }
            }
            (Some(_), None) => bail!("--server needs --pin (the server's `chatd fingerprint`)"),
            _ => TargetSpec::InProcess { server_exe },
        };
        let options = BenchOptions {
            scenarios: args.scenarios.clone(),
            duration: Duration::try_from_secs_f64(args.duration)
                .ok()
                .filter(|d| !d.is_zero() && d.as_secs() <= 24 * 3600)
                .with_context(|| {
                    format!("--duration {} must be between 0 and 86400 s", args.duration)
                })?,
            pairs: args.pairs,
            window: args.window,
            rates: args.rate.clone(),
            members: args.members,
            body_bytes: args.body,
            backlog: args.backlog,
            connections: args.connections,
            flood: args.flood,
            durability: args.durability,
            target,
            irc: IrcOptions {
                server: args
                    .irc_server
                    .as_deref()
                    .map(irc::parse_irc_server)
                    .transpose()?,
                pass: args.irc_pass.clone(),
            },
        };
        options.validate()?;
        Ok(options)
    }

    /// Refuses parameters that cannot make a meaningful run.
    pub fn validate(&self) -> Result<()> {
        if self.pairs == 0 {
            bail!("--pairs must be at least 1");
        }
        if self.window == 0 {
            bail!("--window must be at least 1");
        }
        if self.members < 2 {
            bail!("--members must be at least 2");
        }
        if self.rates.is_empty() || self.rates.contains(&0) {
            bail!("--rate must be at least 1 message/s");
        }
        if !(load::STAMP_LEN..=crate::protocol::DEFAULT_MAX_BODY_BYTES).contains(&self.body_bytes) {
            bail!(
                "--body must be between {} and {} bytes",
                load::STAMP_LEN,
                crate::protocol::DEFAULT_MAX_BODY_BYTES
            );
        }
        if self.backlog == 0 {
            bail!("--backlog must be at least 1");
        }
        if self.connections == Some(0) {
            bail!("--connections must be at least 1");
        }
        Ok(())
    }

    /// The scenarios to run, in their fixed order.
    fn selected(&self) -> Vec<Scenario> {
        Scenario::ALL
            .into_iter()
            .filter(|s| self.scenarios.is_empty() || self.scenarios.contains(s))
            .collect()
    }

    /// The durability as reports state it.
    fn durability_label(&self) -> String {
        match self.target {
            TargetSpec::InProcess { .. } => self.durability.to_string(),
            TargetSpec::External { .. } => "as configured on the server".to_string(),
        }
    }
}

/// Runs `chatd bench` from the command line: the header, then the table (or JSON lines) on
/// standard output. Called by the `chatd` binary, whose own path runs the child server.
pub async fn run(args: BenchArgs, db: Option<PathBuf>) -> Result<()> {
    let options = BenchOptions::from_args(&args, db, std::env::current_exe().ok())?;
    let json = args.json;
    if !json {
        report::print_header(&Machine::detect(), &options)?;
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

/// What every scenario shares: the options, one password hash, unique account names.
pub(crate) struct Ctx<'a> {
    pub options: &'a BenchOptions,
    pub machine: Machine,
    /// The argon2id hash of [`load::PASSWORD`], made once for every account.
    pub password_hash: String,
    /// Random per run, so that names never collide on an existing server.
    tag: String,
    next_prefix: AtomicUsize,
}

impl<'a> Ctx<'a> {
    async fn new(options: &'a BenchOptions) -> Result<Ctx<'a>> {
        let hasher = Hasher::new(1).await?;
        let password_hash = hasher.hash(&Secret::new(load::PASSWORD)).await?;
        let tag = crate::client::new_send_key();
        Ok(Ctx {
            options,
            machine: Machine::detect(),
            password_hash,
            // The key's last digits are its random part (it starts with the time).
            tag: tag[tag.len() - 6..].to_string(),
            next_prefix: AtomicUsize::new(0),
        })
    }

    /// A fresh account-name prefix (`b<tag><n>`); names are `<prefix>-<role><i>`.
    pub fn prefix(&self) -> String {
        let n = self.next_prefix.fetch_add(1, Ordering::Relaxed);
        format!("b{}{n}", self.tag)
    }

    /// The server a scenario drives: a fresh in-process one, or the `--server`.
    pub async fn target(&self) -> Result<Target> {
        match &self.options.target {
            TargetSpec::InProcess { .. } => Target::in_process(self.options.durability, None).await,
            TargetSpec::External { addr, pin, db, pid } => {
                Ok(Target::external(addr.clone(), *pin, db.clone(), *pid))
            }
        }
    }

    /// A progress bar on standard error (hidden when that is not a terminal).
    pub fn progress(&self, scenario: &str, len: Option<u64>) -> ProgressBar {
        let bar = match len {
            Some(len) => ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let template = if len.is_some() {
            "{prefix:>12} [{bar:30}] {elapsed:>4} {wide_msg}"
        } else {
            "{prefix:>12} {spinner} {elapsed:>4} {wide_msg}"
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(scenario.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}
