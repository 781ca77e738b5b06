//! The `chat` client binary: parse, set up logging, run, report.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = chat_svc::cli::chat::Cli::parse();
    chat_svc::cli::init_logging("warn");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(chat_svc::cli::chat::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
