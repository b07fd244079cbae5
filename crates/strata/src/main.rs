//! The `strata` binary: one subcommand per role or operation. It composes the tier crates;
//! the tiers never depend on each other.
//!
//! Exit codes: 0 success, 1 the command failed (the message says why and what to do),
//! 2 the command line was wrong (clap's usage error).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the proxy and API paths allocate small, short-lived
/// buffers on several threads at once, where glibc's malloc and free took ~12% of the
/// balancer's CPU (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod cache;
mod cachenode;
mod controller;
mod db;
mod lb;
mod orchestrate;
mod pgnode;
mod roles;
mod seed;

/// Strata: a user-profile service and every tier that scales it, from one server to millions.
///
/// Start with `strata serve` (one process: API + SQLite + cache), then `strata up` to run a
/// whole topology of role processes on this machine.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run stage 1 of the journey: the users API, SQLite and the read cache in one process.
    Serve(roles::ServeArgs),
    /// Run one API server role (as `strata up` starts it); prints a readiness line when bound.
    Api(roles::ApiArgs),
    /// Run the load balancer role: an L7 HTTP proxy in front of API servers.
    Lb(Box<lb::LbArgs>),
    /// Run the control role: watch the PostgreSQL primary and fail over when it is gone.
    Control(controller::ControlArgs),
    /// Run one shared cache server (Redis or Memcached) as a role, as `strata up` does.
    Cache(cachenode::CacheArgs),
    /// Run one PostgreSQL server (primary or streaming replica) as a role, as `strata up` does.
    Postgres(pgnode::PostgresArgs),
    /// Bulk-load synthetic users into a data directory, with a progress bar.
    Seed(seed::SeedArgs),
    /// Start every role of a topology as local processes and supervise them.
    Up(orchestrate::UpArgs),
    /// Stop a deployment started with `strata up -d` (or from another terminal).
    Down(orchestrate::DownArgs),
    /// Show each role of a running deployment: kind, pid, addresses, health.
    Status(orchestrate::StatusArgs),
    /// Print the deployment's logs, merged and prefixed by role.
    Logs(orchestrate::LogsArgs),
    /// Operator actions the API never offers: grant or withdraw the admin role, rotate the
    /// token-signing keys.
    Admin(admin::AdminArgs),
    /// Operator actions on the deployment's PostgreSQL servers: bring a fenced former primary
    /// back as a replica.
    Db(db::DbArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => roles::serve(args).await,
            Command::Api(args) => roles::api(args).await,
            Command::Lb(args) => lb::lb(*args).await,
            Command::Postgres(args) => pgnode::run(args).await,
            Command::Cache(args) => cachenode::run(args).await,
            Command::Control(args) => controller::run(args).await,
            Command::Seed(args) => seed::run(args).await,
            Command::Up(args) => orchestrate::up(args).await,
            Command::Down(args) => orchestrate::down(args).await,
            Command::Status(args) => orchestrate::status(args).await,
            Command::Logs(args) => orchestrate::logs(args).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Db(args) => db::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_balancer_timeout_a_topology_sets_is_a_strata_lb_flag_with_the_same_range() {
        for (key, flag, min, max) in strata_deploy::topology::LB_TIMEOUTS {
            let parse = |ms: u64| {
                Cli::try_parse_from([
                    "strata".to_string(),
                    "lb".into(),
                    "--backend".into(),
                    "a=127.0.0.1:1".into(),
                    flag.to_string(),
                    ms.to_string(),
                ])
            };
            assert!(parse(*min).is_ok(), "{key}: {flag} {min}");
            assert!(parse(*max).is_ok(), "{key}: {flag} {max}");
            assert!(parse(max + 1).is_err(), "{key}: {flag} above {max}");
            if *min > 0 {
                assert!(parse(min - 1).is_err(), "{key}: {flag} below {min}");
            }
        }
    }
}
