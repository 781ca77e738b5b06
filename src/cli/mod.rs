//! Command-line front ends: argument definitions and what each command does. The binaries in
//! `src/bin/` only parse, set up logging and the runtime, call [`chatd::run`] or
//! [`chat::run`], and print errors.

pub mod chat;
pub mod chatd;

/// Logs to standard error, at `default` level unless `RUST_LOG` says otherwise.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
