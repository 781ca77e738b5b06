//! What a run is asked to do: the scenarios, the backends of the in-process servers
//! ([`Backend`]), the command line ([`BenchArgs`]) and the options it resolves to
//! ([`BenchOptions`], [`TargetSpec`], [`IrcOptions`]), and the header every run prints to say
//! what it ran with.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::client::ServerAddr;
use crate::store::{DbTarget, Durability};
use crate::tls::Fingerprint;

use super::load;
use super::pgadmin::{PgAdmin, PgServer};
use super::report::{thousands, Machine};

/// The offered rate of `latency` (and `irc`) when `--rate` is not given.
pub const DEFAULT_RATE: u64 = 10_000;

/// The offered rate of `cluster` when `--rate` is not given.
pub const DEFAULT_CLUSTER_RATE: u64 = 5_000;

/// A load scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scenario {
    /// Sender/recipient pairs with a window of sends in flight: messages/s and latency.
    Throughput,
    /// A fixed offered rate, open loop: latency percentiles measured from the intended send.
    Latency,
    /// Two in-process nodes on one PostgreSQL database (needs --pg), senders on node A and
    /// recipients on node B: cross-node latency at a fixed offered rate, then throughput.
    Cluster,
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
    pub const ALL: [Scenario; 8] = [
        Scenario::Throughput,
        Scenario::Latency,
        Scenario::Cluster,
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
            Scenario::Cluster => "cluster",
            Scenario::Fanout => "fanout",
            Scenario::Backlog => "backlog",
            Scenario::Connections => "connections",
            Scenario::Irc => "irc",
            Scenario::Login => "login",
        }
    }

    /// Whether the scenario runs on the PostgreSQL backend (`connections` and `irc` start
    /// their servers their own way, on SQLite only).
    pub fn runs_on_postgres(self) -> bool {
        !matches!(self, Scenario::Connections | Scenario::Irc)
    }
}

/// The database behind the in-process servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Backend {
    /// A temporary SQLite file per scenario (`--durability` applies).
    Sqlite,
    /// A fresh database per scenario in the `--pg` cluster (its own settings apply).
    Postgres,
}

impl Backend {
    /// The backend's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
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
    /// Offered messages/s (latency, irc, cluster) [default: 10000; 5000 for cluster]. A
    /// comma-separated list measures each rate in turn, for a latency-versus-load curve:
    /// --rate 1000,5000,10000.
    #[arg(long, value_delimiter = ',', value_name = "N")]
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
    /// Durability of the in-process server: full or normal (SQLite's `synchronous`; on
    /// PostgreSQL, normal turns `synchronous_commit` off for the writer's commits).
    #[arg(long, default_value = "full", value_name = "MODE")]
    pub durability: Durability,
    /// A PostgreSQL cluster for the in-process servers (an admin URL: the bench creates a
    /// fresh database per scenario there and drops it after); turns on `--backend
    /// sqlite,postgres` and the cluster scenario.
    #[arg(
        long,
        value_name = "postgres://USER@HOST:PORT/DB",
        conflicts_with = "server"
    )]
    pub pg: Option<PgUrl>,
    /// The in-process servers' databases, each scenario measured on each in turn:
    /// sqlite, postgres or both [default: sqlite; sqlite,postgres with --pg].
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        value_name = "BACKEND",
        conflicts_with = "server"
    )]
    pub backend: Vec<Backend>,
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
        db: DbTarget,
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
    /// Offered messages/s, one latency (and irc) measurement each.
    pub rates: Vec<u64>,
    /// Offered messages/s of the cluster scenario, one measurement each.
    pub cluster_rates: Vec<u64>,
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
    /// The PostgreSQL cluster of the postgres backend and the cluster scenario.
    pub pg: Option<PgAdmin>,
    /// The backends every in-process scenario runs on, in this order.
    pub backends: Vec<Backend>,
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
        db: Option<DbTarget>,
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
            rates: rates_or(&args.rate, DEFAULT_RATE),
            cluster_rates: rates_or(&args.rate, DEFAULT_CLUSTER_RATE),
            members: args.members,
            body_bytes: args.body,
            backlog: args.backlog,
            connections: args.connections,
            flood: args.flood,
            durability: args.durability,
            pg: args.pg.as_ref().map(|u| u.0.parse()).transpose()?,
            backends: resolve_backends(&args.backend, args.pg.is_some()),
            target,
            irc: IrcOptions {
                server: args
                    .irc_server
                    .as_deref()
                    .map(parse_irc_server)
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
        let rates = self.rates.iter().chain(&self.cluster_rates);
        if self.rates.is_empty() || self.cluster_rates.is_empty() || rates.clone().any(|r| *r == 0)
        {
            bail!("--rate must be at least 1 message/s");
        }
        if self.backends.is_empty() {
            bail!("--backend needs at least one of sqlite, postgres");
        }
        if self.pg.is_none() {
            if self.backends.contains(&Backend::Postgres) {
                bail!(
                    "--backend postgres needs --pg postgres://USER@HOST:PORT/DB (a PostgreSQL \
                     cluster where the bench may create databases)"
                );
            }
            if self.scenarios.contains(&Scenario::Cluster) {
                bail!(
                    "the cluster scenario needs --pg postgres://USER@HOST:PORT/DB (its two \
                     nodes share a PostgreSQL database)"
                );
            }
        }
        if self.pg.is_some() && matches!(self.target, TargetSpec::External { .. }) {
            bail!("--pg starts in-process servers; with --server the load goes to that server");
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
    pub(crate) fn selected(&self) -> Vec<Scenario> {
        Scenario::ALL
            .into_iter()
            .filter(|s| self.scenarios.is_empty() || self.scenarios.contains(s))
            .collect()
    }

    /// The durability of SQLite servers (or the `--server`) as reports state it.
    pub(crate) fn durability_label(&self) -> String {
        match self.target {
            TargetSpec::InProcess { .. } => self.durability.to_string(),
            TargetSpec::External { .. } => "as configured on the server".to_string(),
        }
    }
}

/// `--pg` as given: checked by [`BenchOptions::from_args`] (so that an error never repeats
/// it, password and all, as the argument parser's would), never shown.
#[derive(Clone)]
pub struct PgUrl(String);

impl std::str::FromStr for PgUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<PgUrl, Self::Err> {
        Ok(PgUrl(s.to_string()))
    }
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgUrl(..)")
    }
}

/// `given`, or `[default]` when nothing was given.
fn rates_or(given: &[u64], default: u64) -> Vec<u64> {
    if given.is_empty() {
        vec![default]
    } else {
        given.to_vec()
    }
}

/// The backends asked for, each once in their fixed order; by default SQLite, and
/// PostgreSQL beside it when there is a `--pg`.
fn resolve_backends(given: &[Backend], pg: bool) -> Vec<Backend> {
    let mut backends = if given.is_empty() {
        if pg {
            vec![Backend::Sqlite, Backend::Postgres]
        } else {
            vec![Backend::Sqlite]
        }
    } else {
        given.to_vec()
    };
    backends.sort();
    backends.dedup();
    backends
}

/// Which IRC server the `irc` scenario drives.
#[derive(Debug, Clone, Default)]
pub struct IrcOptions {
    /// An IRC server on a loopback address; `None` for a fresh chatd per phase.
    pub server: Option<SocketAddr>,
    /// The server password (`PASS`) for `server`, if it needs one.
    pub pass: Option<String>,
}

/// Parses `--irc-server`: an IP address and port on loopback, or one clear line saying why not.
pub(crate) fn parse_irc_server(text: &str) -> Result<SocketAddr> {
    let addr: SocketAddr = text.trim().parse().map_err(|_| {
        anyhow!("--irc-server {text} is not an address and port such as 127.0.0.1:6667")
    })?;
    if !addr.ip().is_loopback() {
        bail!(
            "--irc-server {addr} is not a loopback address: the irc scenario drives servers on \
             this machine only (127.0.0.1 or [::1])"
        );
    }
    Ok(addr)
}

/// The server the scenario drives, as the printed parameters state it.
pub(crate) fn describe_irc_target(options: &BenchOptions) -> String {
    match (&options.irc.server, &options.target) {
        (Some(addr), _) => format!(
            "external IRC server on {addr}, plain TCP, {}",
            if options.irc.pass.is_some() {
                "PASS given"
            } else {
                "no password"
            }
        ),
        (
            None,
            TargetSpec::InProcess {
                server_exe: Some(_),
            },
        ) => format!(
            "chatd's plaintext IRC gateway, a fresh `chatd serve` child process per phase \
             (durability {}), PASS account:password",
            options.durability
        ),
        (None, _) => format!(
            "chatd's plaintext IRC gateway, a fresh in-process server per phase (durability \
             {}), PASS account:password",
            options.durability
        ),
    }
}

/// Prints what every run states: machine, build, durability, server and parameters; with
/// `--pg`, the PostgreSQL cluster (`pg`, read from it) and the backends.
pub(crate) fn print_header(
    machine: &Machine,
    options: &BenchOptions,
    pg: Option<&PgServer>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "chatd bench {} ({} build)",
        machine.version, machine.profile
    )?;
    writeln!(
        out,
        "machine:    {} cores, {} GiB memory, {}, Linux {}",
        machine.cores, machine.memory_gib, machine.cpu, machine.kernel
    )?;
    let server = match &options.target {
        TargetSpec::InProcess { .. } => {
            "in-process on 127.0.0.1, a fresh temporary database per scenario; \
             load generator in the same process"
                .to_string()
        }
        TargetSpec::External { addr, .. } => format!("external server {addr}"),
    };
    // `chatd bench irc --irc-server …` alone starts no chatd: the lines about chatd's server
    // would describe a server that never ran.
    let only_external_irc =
        options.irc.server.is_some() && options.selected().iter().all(|s| *s == Scenario::Irc);
    if only_external_irc {
        writeln!(
            out,
            "server:     none of chatd's (only the irc scenario, against --irc-server)"
        )?;
    } else {
        writeln!(out, "server:     {server}")?;
    }
    if options.selected().contains(&Scenario::Irc) {
        writeln!(out, "irc server: {}", describe_irc_target(options))?;
    }
    if let (Some(admin), Some(pg)) = (&options.pg, pg) {
        writeln!(out, "postgres:   {}", pg.describe(admin))?;
        let names: Vec<&str> = options.backends.iter().map(|b| b.name()).collect();
        writeln!(
            out,
            "backends:   {} (each scenario on each)",
            names.join(", ")
        )?;
    }
    if only_external_irc {
        writeln!(out, "durability: as configured on the IRC server")?;
    } else if let (Some(pg), true) = (pg, options.pg.is_some()) {
        writeln!(
            out,
            "durability: {} (sqlite synchronous {}; {})",
            options.durability,
            match options.durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
            pg.settings(options.durability)
        )?;
    } else {
        writeln!(out, "durability: {}", options.durability_label())?;
    }
    let list = |rates: &[u64]| -> String {
        let shown: Vec<String> = rates.iter().map(|r| thousands(*r)).collect();
        format!("{}/s", shown.join(","))
    };
    let mut rates = list(&options.rates);
    if options.pg.is_some() && options.selected().contains(&Scenario::Cluster) {
        rates = format!("{rates} (cluster {})", list(&options.cluster_rates));
    }
    writeln!(
        out,
        "parameters: duration {} s, pairs {}, window {}, rate {}, members {}, body {} B, \
         backlog {}, connections {}, flood {}",
        options.duration.as_secs_f64(),
        options.pairs,
        options.window,
        rates,
        options.members,
        options.body_bytes,
        thousands(options.backlog as u64),
        options
            .connections
            .map_or("as many as the fd limit allows".to_string(), |c| thousands(
                c as u64
            )),
        options.flood
    )?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_driven() {
        assert_eq!(
            parse_irc_server("127.0.0.1:6667").unwrap().to_string(),
            "127.0.0.1:6667"
        );
        assert!(parse_irc_server("[::1]:6667").is_ok());
        let e = parse_irc_server("10.0.0.1:6667").unwrap_err().to_string();
        assert!(e.contains("not a loopback address"), "{e}");
        let e = parse_irc_server("irc.example.org:6667")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not an address and port"), "{e}");
    }
}
