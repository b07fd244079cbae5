//! `strata lb` on its own: the balancer's role process without the rest of the `strata` binary
//! (same command line, same runtime), so that a benchmark can build it, and build it again at
//! another commit, in a fraction of the time the whole binary takes.
//!
//!     cargo build --release -p strata-lb --example strata-lb
//!     target/release/examples/strata-lb lb --listen 127.0.0.1:8080 --backend b1=127.0.0.1:9001

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "strata-lb")]
enum Cli {
    /// The load balancer (as `strata lb`).
    Lb(strata_lb::role::LbArgs),
}

fn main() -> ExitCode {
    let Cli::Lb(args) = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(strata_lb::role::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
