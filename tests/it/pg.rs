//! A private PostgreSQL cluster for the tests: started once per test process on first use,
//! stopped when the process exits, one fresh database per caller.
//!
//! The server binaries come from `CHATD_TEST_PG_BIN` (a directory holding `initdb`,
//! `pg_ctl` and `postgres`), else the newest `/usr/lib/postgresql/*/bin`, else `initdb` on
//! `PATH`. The cluster lives in a temporary directory: password (scram-sha-256) auth for the
//! superuser `chatd`, a free 127.0.0.1 port, its socket in that directory, no fsync. A root
//! test process runs the server as `nobody` (PostgreSQL refuses root). At exit an `atexit`
//! hook stops it (`pg_ctl stop -m immediate`) and removes the directory; a watchdog process
//! does the same if the test process dies without running it (killed, aborted).
//!
//! Without server binaries [`fresh_database`] prints one line saying the PostgreSQL tests are
//! skipped and returns `None`; with `CI` set it panics instead.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use chat_svc::store::DbTarget;
use sqlx::{Connection, Executor, PgConnection};

/// Names the directory of the PostgreSQL server binaries the tests use.
pub const BIN_ENV: &str = "CHATD_TEST_PG_BIN";

/// The cluster's superuser, the user of every database URL the tests get.
pub const SUPERUSER: &str = "chatd";

/// Enough for several nodes (each with a pool, a writer and a listener) in each of the
/// tests that run in parallel.
const MAX_CONNECTIONS: u32 = 400;

/// A database of the private cluster, created for one caller.
#[derive(Debug, Clone)]
pub struct PgDatabase {
    /// The database's name, unique in this test process.
    pub name: String,
    /// `postgres://chatd:PASSWORD@127.0.0.1:PORT/NAME`, password included (for `--db`).
    pub url: String,
}

impl PgDatabase {
    /// The database as the server and the admin commands name it.
    pub fn target(&self) -> DbTarget {
        self.url.parse().expect("the test cluster's URL parses")
    }
}

/// Creates a database with a unique name in the private cluster (starting the cluster on
/// first use) and returns its target; `None` when PostgreSQL tests are skipped.
#[allow(dead_code)] // for tests that manage their databases themselves
pub async fn fresh_database() -> Option<DbTarget> {
    Some(fresh_pg_database().await?.target())
}

/// Like [`fresh_database`], with the database's name and URL.
pub async fn fresh_pg_database() -> Option<PgDatabase> {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let cluster = cluster()?;
    let name = format!("chatd_test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let mut admin = PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL cluster: {e}"));
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    admin.close().await.ok();
    Some(PgDatabase {
        url: cluster.url(&name),
        name,
    })
}

/// [`fresh_pg_database`] for synchronous code (on a thread of its own, so also callable
/// from inside a runtime).
pub fn fresh_pg_database_blocking() -> Option<PgDatabase> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(fresh_pg_database())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The URL of the cluster's `postgres` database as its superuser (for tests that create or
/// inspect databases themselves); `None` when PostgreSQL tests are skipped.
#[allow(dead_code)] // for tests that manage their databases themselves
pub fn admin_url() -> Option<String> {
    Some(cluster()?.url("postgres"))
}

/// The running cluster.
struct Cluster {
    /// The temporary directory: `data/`, the password file, the log and the socket.
    root: PathBuf,
    /// The directory of `initdb`, `pg_ctl` and `postgres`.
    bin: PathBuf,
    /// The unprivileged (uid, gid) the server runs as when the test process is root.
    run_as: Option<(u32, u32)>,
    port: u16,
    password: String,
    /// The watchdog's stdin: it stops the cluster when this closes, i.e. when the process
    /// ends, however it ends.
    _watchdog: Mutex<Child>,
}

static CLUSTER: OnceLock<Result<Option<Cluster>, String>> = OnceLock::new();

/// The cluster, started on first call; `None` when there are no server binaries.
fn cluster() -> Option<&'static Cluster> {
    let started = CLUSTER.get_or_init(|| {
        let Some(bin) = find_bin()? else {
            let why = "no PostgreSQL server binaries (initdb) found: set CHATD_TEST_PG_BIN \
                       or install PostgreSQL";
            if std::env::var_os("CI").is_some() {
                return Err(format!(
                    "{why} (CI is set, so this fails instead of skipping)"
                ));
            }
            // Straight to stderr: the test harness captures eprintln!.
            let _ = writeln!(std::io::stderr(), "PostgreSQL tests skipped: {why}");
            return Ok(None);
        };
        Cluster::start(bin).map(Some)
    });
    match started {
        Ok(cluster) => cluster.as_ref(),
        Err(e) => panic!("test PostgreSQL cluster: {e}"),
    }
}

/// The server binaries' directory: `CHATD_TEST_PG_BIN`, the newest
/// `/usr/lib/postgresql/*/bin`, or the directory of `initdb` on `PATH`.
fn find_bin() -> Result<Option<PathBuf>, String> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(Some(dir))
        } else {
            Err(format!("{BIN_ENV}={} has no initdb", dir.display()))
        };
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = version_key(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max();
    if let Some((_, bin)) = newest {
        return Ok(Some(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    Ok(std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file()))
}

/// `"15"` → `[15]`, `"9.6"` → `[9, 6]`; `None` for anything else.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

impl Cluster {
    /// Initialises and starts a cluster in a new temporary directory.
    fn start(bin: PathBuf) -> Result<Cluster, String> {
        let root = tempfile::Builder::new()
            .prefix("chatd-test-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?
            .keep();
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let password = hex::encode(rand::random::<[u8; 16]>());
        let pwfile = root.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n"))
            .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
        if let Some((uid, gid)) = run_as {
            for path in [&root, &pwfile] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
            }
        }
        let mut cluster = Cluster {
            run_as,
            port: 0,
            password,
            _watchdog: Mutex::new(spawn_watchdog(&bin, &root, run_as)?),
            bin,
            root,
        };
        cluster.init()?;
        cluster.run_until_started()?;
        unsafe { libc::atexit(stop_at_exit) };
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `postgres://chatd:PASSWORD@127.0.0.1:PORT/NAME`.
    fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// `initdb`, then the settings appended to `postgresql.conf`.
    fn init(&self) -> Result<(), String> {
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(self.data())
            .args(["-U", SUPERUSER, "-A", "scram-sha-256", "-E", "UTF8"])
            .args(["--no-locale", "--no-sync"])
            .arg(format!("--pwfile={}", self.root.join("pwfile").display()));
        // Killed with this process (the watchdog then removes what it wrote).
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            initdb.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        run(&mut initdb)?;
        let settings = format!(
            "\n# chatd tests\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = {MAX_CONNECTIONS}\n",
            self.root.display()
        );
        let conf = self.data().join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))
    }

    /// Starts the server on a free port, trying another when the port was taken meanwhile.
    fn run_until_started(&mut self) -> Result<(), String> {
        let log = self.root.join("server.log");
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port()?;
            let mut start = self.command("pg_ctl");
            start
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {}", self.port))
                .arg("start");
            match run(&mut start) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    last = format!("{e}\nserver log:\n{}", tail(&text, 20));
                    if !text.contains("could not bind") {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// Stops the server at once and removes the directory. Never panics (it runs at exit).
    fn stop(&self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
        let _ = std::fs::remove_dir_all(&self.root);
    }

    /// A server binary, run as the unprivileged user when we are root.
    fn command(&self, program: &str) -> Command {
        command(&self.bin.join(program), &self.root, self.run_as)
    }
}

/// `program` in `dir`, as `run_as` when given, stdin closed, without the libpq environment.
fn command(program: &Path, dir: &Path, run_as: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir).stdin(Stdio::null());
    for var in [
        "PGDATA",
        "PGPORT",
        "PGHOST",
        "PGUSER",
        "PGDATABASE",
        "PGOPTIONS",
    ] {
        cmd.env_remove(var);
    }
    if let Some((uid, gid)) = run_as {
        // The standard library drops the supplementary groups when root changes uid.
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Runs a command to completion; its output in the error when it fails.
fn run(cmd: &mut Command) -> Result<(), String> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        return Ok(());
    }
    Err(format!(
        "{:?} failed ({status}):\n{}{}",
        cmd.get_program(),
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    ))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A port nothing listens on right now.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// The (uid, gid) of `nobody`, who runs the server when the tests run as root.
fn unprivileged_user() -> Result<(u32, u32), String> {
    // SAFETY: a NUL-terminated name; the record is copied out before any other passwd call
    // (the cluster starts once, under the OnceLock).
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    if pw.is_null() {
        return Err("running as root and there is no user nobody to run PostgreSQL as".into());
    }
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok((uid, gid))
}

/// A shell that waits for its stdin to close (this process ending: nothing else holds the
/// pipe, which is close-on-exec) and then stops the cluster and removes its directory; the
/// second's pause lets a server that was starting write its pid file, so that it is stopped.
fn spawn_watchdog(bin: &Path, root: &Path, run_as: Option<(u32, u32)>) -> Result<Child, String> {
    let mut cmd = command(Path::new("/bin/sh"), root, run_as);
    cmd.arg("-c")
        .arg(r#"read _; sleep 1; "$0" -D "$1/data" -m immediate -w stop; rm -rf "$1""#)
        .arg(bin.join("pg_ctl"))
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a ^C to the tests does not stop it before its job is done.
        .process_group(0);
    cmd.spawn()
        .map_err(|e| format!("cannot start the cluster's watchdog: {e}"))
}

extern "C" fn stop_at_exit() {
    if let Some(Ok(Some(cluster))) = CLUSTER.get() {
        cluster.stop();
    }
}

/// The harness itself: one cluster, separate databases, password auth.
#[tokio::test]
async fn the_private_cluster_serves_separate_databases_with_password_auth() {
    let Some(a) = fresh_pg_database().await else {
        return;
    };
    let b = fresh_pg_database().await.unwrap();
    assert_ne!(a.name, b.name);
    assert!(matches!(a.target(), DbTarget::Postgres(_)));
    let mut on_a = PgConnection::connect(&a.url).await.unwrap();
    let mut on_b = PgConnection::connect(&b.url).await.unwrap();
    on_a.execute("CREATE TABLE only_in_a (x int)")
        .await
        .unwrap();
    let current: (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(&mut on_b)
        .await
        .unwrap();
    assert_eq!(current.0, b.name);
    let seen: (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'")
            .fetch_one(&mut on_b)
            .await
            .unwrap();
    assert_eq!(seen.0, 0, "a table of one database is visible in another");
    let wrong = a
        .url
        .replacen(&format!(":{}@", cluster().unwrap().password), ":wrong@", 1);
    assert_ne!(wrong, a.url);
    let refused = PgConnection::connect(&wrong)
        .await
        .expect_err("a wrong password is refused");
    assert!(refused.to_string().contains("password"), "{refused}");
    on_a.close().await.unwrap();
    on_b.close().await.unwrap();
}
