//! `nsync`: the command-line front end. Thin by design: it parses arguments, registers the
//! node kinds, renders progress and errors, and maps outcomes to exit codes
//! (0 ok, 1 a node or check failed, 2 invalid pipeline or usage).

mod cache_dir;
mod cli;
mod commands;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NSYNC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match commands::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::EXIT_FAILED)
        }
    }
}
