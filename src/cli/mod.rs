//! Command-line front ends: argument definitions and what each command does. The binaries in
//! `src/bin/` only parse, set up logging and the runtime, call [`chatd::run`] or
//! [`chat::run`], and print errors.

pub mod chat;
pub mod chatd;
pub mod migrate;

/// rustls's handshake parser logs a warning for every client that sends an IP address as
/// its TLS server name (SNI), which irssi and WeeChat do whenever they are told to connect
/// to an address: a client's habit, ignored as the TLS specification says, not a server
/// problem. Those lines are kept out of the log unless `RUST_LOG` names rustls.
const QUIET_RUSTLS_SNI: &str = "rustls::msgs::handshake=error";

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
/// warnings are left out unless `rust_log` mentions rustls.
fn log_filter(default: &str, rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let given = rust_log.filter(|v| !v.trim().is_empty());
    let filter = given
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    if given.is_some_and(|v| v.contains("rustls")) {
        return filter;
    }
    match QUIET_RUSTLS_SNI.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
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
}
