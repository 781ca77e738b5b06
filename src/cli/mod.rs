//! Command-line front ends: argument definitions and what each command does. The binaries in
//! `src/bin/` only parse, set up logging and the runtime, call [`chatd::run`] or
//! [`chat::run`], and print errors.

pub mod chat;
pub mod chatd;

/// rustls's handshake parser logs a warning for every client that sends an IP address as
/// its TLS server name (SNI), which irssi and WeeChat do whenever they are told to connect
/// to an address: a client's habit, ignored as the TLS specification says, not a server
/// problem. Those lines are kept out of the log unless `RUST_LOG` names rustls.
const QUIET_RUSTLS_SNI: &str = "rustls::msgs::handshake=error";

/// PostgreSQL's notices (such as "relation _sqlx_migrations already exists, skipping" at
/// every start) reach the log through sqlx at INFO: kept out unless `RUST_LOG` names sqlx.
const QUIET_PG_NOTICES: &str = "sqlx::postgres::notice=warn";

/// Logs to standard error, at `default` level unless `RUST_LOG` says otherwise.
pub fn init_logging(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter(
            default,
            std::env::var("RUST_LOG").ok().as_deref(),
        ))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// The log filter: `rust_log` if it is a valid filter, else `default`; rustls's SNI
/// warnings and PostgreSQL's notices are left out unless `rust_log` names rustls or sqlx.
fn log_filter(default: &str, rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let given = rust_log.filter(|v| !v.trim().is_empty());
    let filter = given
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let mut filter = filter;
    for (quiet, unless) in [(QUIET_RUSTLS_SNI, "rustls"), (QUIET_PG_NOTICES, "sqlx")] {
        if given.is_some_and(|v| v.contains(unless)) {
            continue;
        }
        if let Ok(directive) = quiet.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_sni_warnings_are_quiet_unless_asked_for() {
        let quiet = log_filter("info", None).to_string();
        assert!(quiet.contains(QUIET_RUSTLS_SNI), "{quiet}");
        let quiet = log_filter("info", Some("debug")).to_string();
        assert!(quiet.contains(QUIET_RUSTLS_SNI), "{quiet}");
        let asked = log_filter("info", Some("rustls=debug")).to_string();
        assert!(!asked.contains(QUIET_RUSTLS_SNI), "{asked}");
    }

    #[test]
    fn postgres_notices_are_quiet_unless_asked_for() {
        let quiet = log_filter("info", None).to_string();
        assert!(quiet.contains(QUIET_PG_NOTICES), "{quiet}");
        let asked = log_filter("info", Some("sqlx=info")).to_string();
        assert!(!asked.contains(QUIET_PG_NOTICES), "{asked}");
        assert!(asked.contains(QUIET_RUSTLS_SNI), "{asked}");
    }
}
