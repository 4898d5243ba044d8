//! Stand-alone front end for the `densum data` subcommands, for development and benchmarks:
//! `cargo run --release -p densum-data --example densum-data -- bench PATH`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "densum-data", about = "densum data tools")]
struct Cli {
    #[command(subcommand)]
    cmd: densum_data::cli::DataCommand,
}

fn main() -> anyhow::Result<()> {
    densum_data::cli::run(Cli::parse().cmd)
}
