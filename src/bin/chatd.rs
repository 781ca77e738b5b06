//! The `chatd` server binary: parse, set up logging, run, report.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: the server allocates and frees small buffers
/// for every frame, and glibc's allocator both costs more CPU for that and leaves more of
/// the memory of finished handshakes unreturned (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = chat_svc::cli::chatd::Cli::parse();
    chat_svc::cli::init_logging("info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatd: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(chat_svc::cli::chatd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
