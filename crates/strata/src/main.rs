//! The `strata` binary: one subcommand per role or operation. It composes the tier crates;
//! the tiers never depend on each other.
//!
//! Exit codes: 0 success, 1 the command failed (the message says why and what to do),
//! 2 the command line was wrong (clap's usage error), 3 a role could not listen because its
//! address is in use (`strata_core::ready::EXIT_ADDRESS_IN_USE`; the supervisor reports the
//! port).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the proxy and API paths allocate small, short-lived
/// buffers on several threads at once, where glibc's malloc and free took ~12% of the
/// balancer's CPU (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod orchestrate;

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
    Serve(Box<strata_api::role::ServeArgs>),
    #[command(flatten)]
    Role(strata_deploy::roles::RoleCommand),
    /// The embedded queue: counts, and its dead letters listed, replayed or purged.
    Queue(strata_queue::admin::QueueArgs),
    /// Bulk-load synthetic users into a data directory, with a progress bar.
    Seed(strata_bench::seed::SeedArgs),
    /// Inject real faults (kill -9, stop, restart) into a running deployment under load, and
    /// say whether it survived: acknowledged writes lost, failed reads, outages, time back to
    /// full health.
    Chaos(strata_bench::chaos::ChaosArgs),
    /// The cache benchmark's tools: send a fresh seeded request trace to the API servers,
    /// replay it offline through ideal caches, or run stampede trials.
    CacheLoad(strata_bench::cache_load::CacheLoadArgs),
    /// Photo uploads at a fixed rate into a running deployment, then an account of every job:
    /// done, failed (poison), lost; the queue's depth over time.
    UploadLoad(strata_bench::upload_load::UploadLoadArgs),
    /// The thumbnail benchmark's tools: make a seeded set of synthetic photos, render them
    /// with the photo worker's pipeline on one thread, timed phase by phase.
    PhotoLoad(strata_bench::photo_load::PhotoLoadArgs),
    /// Messages per second and latency through the embedded queue or RabbitMQ, with
    /// publishers and consumers at once.
    QueueLoad(strata_bench::queue_load::QueueLoadArgs),
    /// Start every role of a topology as local processes and supervise them.
    Up(orchestrate::UpArgs),
    /// Stop a deployment started with `strata up -d` (or from another terminal).
    Down(orchestrate::DownArgs),
    /// Show each role of a running deployment: kind, pid, addresses, health.
    Status(orchestrate::StatusArgs),
    /// Print the deployment's logs: every role's lines merged in time order, prefixed by role,
    /// filtered by time, level, pattern, trace or request id.
    Logs(orchestrate::LogsArgs),
    /// Operator actions the API never offers: grant or withdraw the admin role, rotate the
    /// token-signing keys.
    Admin(admin::AdminArgs),
    /// Operator actions on the deployment's PostgreSQL servers: bring a fenced former primary
    /// back as a replica.
    Db(DbArgs),
    /// Change the number of shard groups (split or merge) or move slots between them while
    /// the service runs: copy, catch up, verify, cut over with a short write pause per chunk.
    Reshard(strata_deploy::shards::ReshardArgs),
    /// The shard map: show it, add a group, pin a user to a group of its own.
    Shard(strata_deploy::shards::ShardArgs),
    /// A whole data centre of a running deployment killed for real and held down (`kill`),
    /// or brought back (`start`).
    Datacenter(strata_deploy::outage::DatacenterArgs),
    /// Change how many photo workers a running deployment has (more start; the
    /// highest-numbered stop after draining their jobs).
    Scale(strata_deploy::scale::ScaleArgs),
}

#[derive(Debug, clap::Args)]
struct DbArgs {
    #[command(subcommand)]
    action: DbAction,
}

#[derive(Debug, clap::Subcommand)]
enum DbAction {
    /// Bring a former primary, fenced by a failover, back as a replica of the new primary
    /// (pg_rewind), and wait until it streams again.
    Rejoin {
        /// The database role to bring back (e.g. `pg-1`; `strata status` lists them).
        node: String,
        /// Deployment directory.
        #[arg(long, env = "STRATA_DIR", default_value = ".strata")]
        dir: std::path::PathBuf,
        /// How long to wait for the server to stream from the new primary.
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout_secs: u64,
    },
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
            Command::Serve(mut args) => match strata_deploy::maps::attach(&mut args.server.data) {
                Ok(()) => strata_api::role::serve(*args).await,
                Err(e) => Err(e),
            },
            Command::Role(role) => match strata_deploy::state::completed(role) {
                Ok(role) => role.run().await,
                Err(e) => Err(e),
            },
            Command::Queue(args) => strata_queue::admin::run(args).await,
            Command::Seed(args) => strata_bench::seed::run(args).await,
            Command::Chaos(args) => strata_bench::chaos::run(args).await,
            Command::Datacenter(args) => strata_deploy::outage::run(args).await,
            Command::CacheLoad(args) => strata_bench::cache_load::run(args).await,
            Command::UploadLoad(args) => strata_bench::upload_load::run(args).await,
            Command::PhotoLoad(args) => strata_bench::photo_load::run(args).await,
            Command::QueueLoad(args) => strata_bench::queue_load::run(args).await,
            Command::Up(args) => orchestrate::up(args).await,
            Command::Down(args) => orchestrate::down(args).await,
            Command::Status(args) => orchestrate::status(args).await,
            Command::Logs(args) => orchestrate::logs(args).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Reshard(args) => strata_deploy::shards::reshard(args).await,
            Command::Shard(args) => strata_deploy::shards::shard(args).await,
            Command::Scale(args) => strata_deploy::scale::run(args).await,
            Command::Db(DbArgs {
                action:
                    DbAction::Rejoin {
                        node,
                        dir,
                        timeout_secs,
                    },
            }) => {
                strata_deploy::rejoin::rejoin(
                    &dir,
                    &node,
                    std::time::Duration::from_secs(timeout_secs),
                )
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if strata_core::ready::is_address_in_use(e.as_ref()) {
                ExitCode::from(strata_core::ready::EXIT_ADDRESS_IN_USE as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
