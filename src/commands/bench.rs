//! `nsync bench`: benchmarks that print comparison tables.

use std::process::ExitCode;

use clap::Args;

use crate::cli::BenchCommand;

#[derive(Args)]
pub struct EngineBenchArgs {
    /// Items in the generated data set.
    #[arg(long, default_value_t = 10_000)]
    pub items: usize,
}

pub fn bench(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Engine(a) => anyhow::bail!(
            "engine benchmark over {} items: not implemented yet",
            a.items
        ),
    }
}
