//! `strata reshard` and `strata shard`: operator commands on the shard groups of a data
//! directory (`DATA/shard-map.json`; one SQLite file per group, or PostgreSQL databases given
//! by URL or found in a running deployment of `strata up`) while the API servers keep serving. The mechanics are the data tier's (`strata_store::reshard`); this
//! module parses the command, shows progress with an ETA, and prints the report.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use strata_core::user::UserId;
use strata_store::embedded_shards::SqliteGroups;
use strata_store::map_home::{FileMapHome, HomePublisher, HomeSource, MapHome};
use strata_store::reshard::journal::journal_path;
use strata_store::reshard::run::{Options, Progress, Report, Request, Resharder, RowsOpener};
use strata_store::shard::{ShardGroup, SlotRange};

use crate::state::DATA_DIR;

/// Where the shard groups are: a deployment's data directory, or a data directory.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Deployment directory (`strata up --dir`); its data directory is DIR/data.
    #[arg(long, env = "STRATA_DIR", conflicts_with = "data", global = true)]
    pub dir: Option<PathBuf>,
    /// Data directory of `strata serve` / `strata api --data`.
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    /// Shard groups on PostgreSQL: NAME=URL, as the API servers were given them (repeat, or
    /// `;`-separate in the environment: one URL may list several hosts with commas). Without
    /// it, those of the deployment in --dir when it runs them, else the embedded files.
    #[arg(
        long = "postgres-shard",
        env = "STRATA_POSTGRES_SHARDS",
        value_delimiter = ';',
        hide_env_values = true,
        global = true
    )]
    pub postgres_shards: Vec<String>,
}

impl Target {
    /// The PostgreSQL shard groups as `NAME=URL`: those given, else those of the deployment in
    /// `--dir` when `strata up` runs them; empty for embedded groups.
    pub fn group_urls(&self) -> anyhow::Result<Vec<String>> {
        if !self.postgres_shards.is_empty() || self.data.is_some() {
            return Ok(self.postgres_shards.clone());
        }
        let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from(".strata"));
        Ok(crate::state::read(&dir)?
            .map(|state| crate::groups::group_urls(&state))
            .unwrap_or_default())
    }

    /// The data directory (the resharder's journal lives there) and the shard map's home:
    /// the deployment's (its etcd, when it keeps the map there) for `--dir`, else the file in
    /// the data directory. Refused when there is no map.
    async fn place(&self) -> anyhow::Result<(PathBuf, Arc<dyn MapHome>)> {
        let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from(".strata"));
        let data = match &self.data {
            Some(d) => d.clone(),
            None => dir.join(DATA_DIR),
        };
        let deployment = if self.data.is_none() && self.postgres_shards.is_empty() {
            crate::state::read(&dir)?
        } else {
            None
        };
        let home: Arc<dyn MapHome> = match deployment {
            Some(state) => crate::maps::of_deployment(&dir, &state)?,
            None => Arc::new(FileMapHome::new(&data)),
        };
        if home.load().await?.is_none() {
            anyhow::bail!(
                "{} holds no shard map: start the deployment with `[data] shards = N` (strata up) or `--shards N` (strata serve / api), or pass the --dir or --data that holds shard groups",
                home.place()
            );
        }
        Ok((data, home))
    }
}

/// `strata reshard`: change how many shard groups there are, or move slots, under load.
#[derive(Debug, clap::Args)]
pub struct ReshardArgs {
    #[command(flatten)]
    pub target: Target,
    /// Split into (a multiple of the current count) or merge down to (a divisor of it) this
    /// many shard groups.
    #[arg(long, conflicts_with_all = ["resume", "abort"])]
    pub shards: Option<usize>,
    /// Finish the resharding in progress (after the resharder was stopped or killed).
    #[arg(long, conflicts_with = "abort")]
    pub resume: bool,
    /// Roll back the resharding in progress; only before its first cut-over.
    #[arg(long)]
    pub abort: bool,
    /// Slots cut over together: each chunk is one short write pause (8: about 2,000 rows
    /// checksummed per pause, which keeps it under 100 ms on 1,000,000 users; BENCHMARKS.md).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub chunk_slots: u16,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many cut-overs, leaving the resharding to `--resume` (drills).
    #[arg(long, hide = true)]
    pub stop_after_cuts: Option<usize>,
    #[command(subcommand)]
    pub action: Option<ReshardAction>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReshardAction {
    /// Move a range of slots to another shard group.
    Move {
        /// Slots, e.g. 0-255 (0 to 4095).
        #[arg(long, value_parser = parse_slots)]
        slots: SlotRange,
        /// The group that takes them (one the map lists).
        #[arg(long)]
        to: String,
    },
}

fn parse_slots(text: &str) -> Result<SlotRange, String> {
    SlotRange::parse(text).map_err(|e| e.to_string())
}

/// `strata shard`: look at the shard map, add a group, pin a user to a group.
#[derive(Debug, clap::Args)]
pub struct ShardArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub action: ShardAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum ShardAction {
    /// Print the shard map and each group's slots and users.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Add an empty shard group (a celebrity's own, before `strata shard pin`).
    AddGroup { name: String },
    /// Move one user to a group of its own: copy, verify and switch, as resharding does.
    Pin {
        user: u64,
        #[arg(long)]
        group: String,
    },
    /// Move a pinned user back to its slot's group (copy, verify, switch) and drop the pin.
    Unpin { user: u64 },
}

fn group(name: &str) -> anyhow::Result<ShardGroup> {
    ShardGroup::parse(name).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The groups' databases: PostgreSQL ones when given, else the embedded files.
async fn opener(target: &Target, data: &Path) -> anyhow::Result<Arc<dyn RowsOpener>> {
    let urls = target.group_urls()?;
    if urls.is_empty() {
        return Ok(Arc::new(SqliteGroups::new(data)));
    }
    Ok(Arc::new(
        strata_store::pg_shards::connect_groups(&urls, 4).await?,
    ))
}

async fn resharder(
    target: &Target,
    (data, home): &(PathBuf, Arc<dyn MapHome>),
    options: Options,
) -> anyhow::Result<Resharder> {
    Ok(Resharder {
        publisher: Arc::new(HomePublisher(home.clone())),
        opener: opener(target, data).await?,
        journal_path: journal_path(data),
        options,
        progress: Arc::new(Bar::new()),
    })
}

pub async fn reshard(args: ReshardArgs) -> anyhow::Result<()> {
    let place = args.target.place().await?;
    let options = Options {
        chunk_slots: args.chunk_slots,
        stop_after_cuts: args.stop_after_cuts,
        ..Options::default()
    };
    let r = resharder(&args.target, &place, options).await?;
    if args.abort {
        println!("{}", r.abort().await?);
        return Ok(());
    }
    let report = if args.resume {
        r.resume().await?
    } else {
        let request = match (&args.action, args.shards) {
            (Some(ReshardAction::Move { slots, to }), None) => Request::Move {
                slots: *slots,
                to: group(to)?,
            },
            (None, Some(n)) => Request::Shards(n),
            (Some(_), Some(_)) => anyhow::bail!("give either --shards N or `move`, not both"),
            (None, None) => anyhow::bail!(
                "say what to do: --shards N (split or merge), `move --slots A-B --to GROUP`, --resume or --abort"
            ),
        };
        r.run(&request).await?
    };
    print_report(&report, args.json)
}

pub async fn shard(args: ShardArgs) -> anyhow::Result<()> {
    let place = args.target.place().await?;
    let (data, home) = (&place.0, place.1.clone());
    match args.action {
        ShardAction::Show { json } => {
            let urls = args.target.group_urls()?;
            let (map, groups) = if urls.is_empty() {
                let Some(found) = strata_store::embedded_shards::describe(data).await? else {
                    anyhow::bail!("{} is not sharded", data.display());
                };
                found
            } else {
                let groups = strata_store::pg_shards::connect_groups(&urls, 2).await?;
                strata_store::pg_shards::describe(home.as_ref(), &groups).await?
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"map": map, "groups": groups})
                    )?
                );
            } else {
                print!("{}", crate::present::shards_table(&map, &groups));
            }
        }
        ShardAction::AddGroup { name } => {
            let map = HomeSource::current_of(home.as_ref()).await?;
            let next = map
                .add_group(group(&name)?)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            home.publish(map.version(), &next).await?;
            println!(
                "added shard group {name} (no slots yet); shard map version {}",
                next.version()
            );
        }
        ShardAction::Pin { user, group: name } => {
            let report = resharder(&args.target, &place, Options::default())
                .await?
                .run(&Request::Pin {
                    user: UserId(user),
                    to: group(&name)?,
                })
                .await?;
            println!(
                "user {user} is now in shard group {name} (write pause {:.1} ms); shard map version {}",
                report.pauses_ms.first().copied().unwrap_or(0.0),
                report.map_version
            );
        }
        ShardAction::Unpin { user } => {
            let report = resharder(&args.target, &place, Options::default())
                .await?
                .run(&Request::Unpin { user: UserId(user) })
                .await?;
            let map = HomeSource::current_of(home.as_ref()).await?;
            println!(
                "user {user} is unpinned, back in shard group {} (write pause {:.1} ms); shard map version {}",
                map.group_of(UserId(user)),
                report.pauses_ms.first().copied().unwrap_or(0.0),
                report.map_version
            );
        }
    }
    Ok(())
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).context("report")?
        );
        return Ok(());
    }
    let mut pauses = report.pauses_ms.clone();
    pauses.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        pauses
            .get(((pauses.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{} {}: {} slots moved, {} rows copied, {} cut-overs (write pause p50 {:.1} ms, p100 {:.1} ms), verified {} users and {} emails, {:.1} s; shard map version {}, {} groups",
        report.what,
        if report.finished {
            "done"
        } else {
            "stopped (run `strata reshard --resume` to finish)"
        },
        report.slots_moved,
        report.rows_copied,
        report.cut_overs,
        pct(0.5),
        pct(1.0),
        report.verified_users,
        report.verified_emails,
        report.seconds,
        report.map_version,
        report.groups
    );
    Ok(())
}

/// A progress bar with an ETA on a terminal; a line every 5 s otherwise.
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    state: Mutex<(String, u64, u64, Instant, Instant)>,
}

impl Bar {
    fn new() -> Self {
        Self {
            bar: Mutex::new(None),
            state: Mutex::new((String::new(), 0, 0, Instant::now(), Instant::now())),
        }
    }
}

impl Progress for Bar {
    fn phase(&self, what: &str, total: u64) {
        let mut bar = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = bar.take() {
            old.finish();
        }
        if std::io::stderr().is_terminal() {
            let b = ProgressBar::new(total);
            let template = format!(
                "{what:>14} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} slots  ETA {{eta}}"
            );
            b.set_style(
                ProgressStyle::with_template(&template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            *bar = Some(b);
        } else {
            eprintln!("resharding: {what} ({total} slots)");
        }
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) =
            (what.to_owned(), 0, total, Instant::now(), Instant::now());
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            b.inc(n);
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.1 += n;
        if s.4.elapsed() >= Duration::from_secs(5) || s.1 >= s.2 {
            s.4 = Instant::now();
            let rate = s.1 as f64 / s.3.elapsed().as_secs_f64().max(1e-9);
            let eta = (s.2.saturating_sub(s.1)) as f64 / rate.max(1e-9);
            eprintln!("resharding: {} {}/{} slots, ETA {eta:.0} s", s.0, s.1, s.2);
        }
    }

    fn note(&self, line: &str) {
        eprintln!("{line}");
    }
}
