//! A whole data centre taken down for real and brought back: `strata datacenter kill NAME`
//! holds every role of the data centre down (its database servers, shared cache servers,
//! relays, API servers and balancers, as the layout lists them) — the supervisor does not
//! restart a held role when it exits — and kills each one (SIGKILL, with its descendants: a PostgreSQL server's
//! postmaster and backends), all in one loop, databases first; `strata datacenter start NAME`
//! releases them, and the supervisor starts them again.
//!
//! A held role is marked by the file `DIR/held/<role>`. The supervisor looks for it when the
//! role exits ([`is_held`]): a held role is not a crash (no backoff, never `failed`), it is
//! shown as `held` and started as soon as the file is gone.
//!
//! `strata datacenter cut A B` cuts the link between two data centres — every relay on it holds
//! what it carries, both ways, and connects nothing new, as across a partition — and `strata
//! datacenter heal A B` joins it again; the link's file `DIR/cut/A+B`
//! ([`crate::plan::datacenters::cut_file`]) is what its relays watch.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use strata_engines::process;

use crate::plan::datacenters::Layout;
use crate::state::{self, RolePhase};

/// The directory of the hold markers.
const HELD_DIR: &str = "held";

fn marker(dir: &Path, role: &str) -> PathBuf {
    dir.join(HELD_DIR).join(role)
}

/// Whether `role` of the deployment in `dir` is held down.
pub fn is_held(dir: &Path, role: &str) -> bool {
    marker(dir, role).exists()
}

/// Waits while `role` is held down; false if the supervisor is told to stop meanwhile.
pub async fn until_released(
    dir: &Path,
    role: &str,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    tracing::warn!(role, "held down: not restarted until released");
    while is_held(dir, role) {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.changed() => return false,
        }
    }
    true
}

/// What `strata datacenter` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Hold every role of the data centre down and kill it (SIGKILL, with its descendants).
    Kill,
    /// Release the data centre's roles: the supervisor starts them again.
    Start,
    /// Cut the link between two data centres: nothing crosses it either way until `heal`.
    Cut,
    /// Join the link between two data centres again: what its relays held is delivered.
    Heal,
}

#[derive(Debug, clap::Args)]
pub struct DatacenterArgs {
    /// `kill`, `start`, `cut` or `heal`.
    #[arg(value_enum)]
    pub action: Action,
    /// The data centre, as its `[[datacenter]]` table names it.
    pub name: String,
    /// With `cut` and `heal`: the data centre at the link's other end.
    pub other: Option<String>,
    /// The deployment directory (of a deployment started with `strata up -d`).
    #[arg(long, env = "STRATA_DIR", default_value = ".strata")]
    pub dir: PathBuf,
    /// With `start`: how long to wait for every role to be ready again.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub wait_secs: u64,
}

/// The deployment's layout, with a data centre of each name in `names`.
fn layout_with(dir: &Path, names: &[&str]) -> anyhow::Result<Layout> {
    let Some(layout) = Layout::read(dir) else {
        bail!(
            "the deployment in {} has no data centres ({} is missing): `strata datacenter` \
             needs a topology with [[datacenter]] tables",
            dir.display(),
            dir.join(crate::plan::datacenters::LAYOUT_FILE).display()
        );
    };
    for name in names {
        if !layout.datacenters.iter().any(|dc| dc.name == *name) {
            let known: Vec<&str> = layout.datacenters.iter().map(|d| d.name.as_str()).collect();
            bail!(
                "no data centre is named {name:?}; this deployment has {}",
                known.join(", ")
            );
        }
    }
    Ok(layout)
}

/// The roles of data centre `name` in the deployment in `dir`, databases first, then its
/// shared cache servers, relays, API servers, balancers, shield and edges.
fn roles_of(dir: &Path, name: &str) -> anyhow::Result<Vec<String>> {
    let layout = layout_with(dir, &[name])?;
    let Some(dc) = layout.datacenters.iter().find(|dc| dc.name == name) else {
        bail!("no data centre is named {name:?}");
    };
    Ok(dc
        .databases
        .iter()
        .chain(&dc.caches)
        .chain(&dc.relays)
        .chain(&dc.apis)
        .chain(&dc.balancers)
        .chain(&dc.shield)
        .chain(&dc.edges)
        .cloned()
        .collect())
}

pub async fn run(args: DatacenterArgs) -> anyhow::Result<()> {
    let dir = args.dir.as_path();
    let deployment = state::read(dir)?.ok_or_else(|| state::no_deployment(dir))?;
    if !deployment.running || !process::is_alive(deployment.supervisor_pid) {
        bail!(
            "the deployment in {} is not running: start it with `strata up -d`",
            dir.display()
        );
    }
    let verb = match args.action {
        Action::Kill => "kill",
        Action::Start => "start",
        Action::Cut => "cut",
        Action::Heal => "heal",
    };
    match (args.action, &args.other) {
        (Action::Cut | Action::Heal, Some(other)) => {
            link(dir, &deployment, &args.name, other, args.action).await
        }
        (Action::Cut | Action::Heal, None) => bail!(
            "`strata datacenter {verb}` needs the data centres at both ends of the link: \
             `strata datacenter {verb} {} OTHER`",
            args.name
        ),
        (_, Some(other)) => bail!(
            "`strata datacenter {verb}` takes one data centre, not {other:?} too (to cut the \
             link between two: `strata datacenter cut {} {other}`)",
            args.name
        ),
        (Action::Kill, None) => kill(dir, &deployment, &args.name),
        (Action::Start, None) => start(dir, &args.name, args.wait_secs).await,
    }
}

/// `strata datacenter kill NAME`.
fn kill(dir: &Path, deployment: &state::DeploymentState, name: &str) -> anyhow::Result<()> {
    let roles = roles_of(dir, name)?;
    let held = dir.join(HELD_DIR);
    std::fs::create_dir_all(&held).with_context(|| format!("cannot create {}", held.display()))?;
    for role in &roles {
        std::fs::write(marker(dir, role), b"held by strata datacenter kill\n")
            .with_context(|| format!("cannot write {}", marker(dir, role).display()))?;
    }
    // Every process first, then one loop of SIGKILLs: the data centre stops at one
    // instant, not role by role.
    let pids: Vec<u32> = roles
        .iter()
        .filter_map(|r| deployment.roles.iter().find(|s| &s.name == r)?.pid)
        .flat_map(|pid| {
            let mut all = process::descendants(pid);
            all.push(pid);
            all
        })
        .collect();
    for pid in &pids {
        process::signal(*pid, Signal::SIGKILL);
    }
    println!(
        "{}: {} roles held down, {} processes killed: {}",
        name,
        roles.len(),
        pids.len(),
        roles.join(", ")
    );
    println!(
        "Bring it back with `strata datacenter start {} --dir {}`.",
        name,
        dir.display()
    );
    Ok(())
}

/// `strata datacenter start NAME`.
async fn start(dir: &Path, name: &str, wait_secs: u64) -> anyhow::Result<()> {
    let roles = roles_of(dir, name)?;
    for role in &roles {
        match std::fs::remove_file(marker(dir, role)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot remove {}", marker(dir, role).display()));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    loop {
        let now = state::read(dir)?.ok_or_else(|| state::no_deployment(dir))?;
        let waiting: Vec<&str> = now
            .roles
            .iter()
            .filter(|r| roles.contains(&r.name) && r.state != RolePhase::Ready)
            .map(|r| r.name.as_str())
            .collect();
        if waiting.is_empty() {
            println!("{}: every role is ready again: {}", name, roles.join(", "));
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{}: released, but not ready within {} s: {} (see `strata status` and \
                 `strata logs`)",
                name,
                wait_secs,
                waiting.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `strata datacenter cut|heal A B`: writes or removes the link's file, which every relay on it
/// watches.
/// Returns once every running relay on the link says it holds it cut (or no longer does).
async fn link(
    dir: &Path,
    deployment: &state::DeploymentState,
    a: &str,
    b: &str,
    action: Action,
) -> anyhow::Result<()> {
    if a == b {
        bail!("a link joins two data centres: {a:?} is named twice");
    }
    let layout = layout_with(dir, &[a, b])?;
    let file = crate::plan::datacenters::cut_file(dir, a, b);
    let cut = action == Action::Cut;
    if cut {
        crate::plan::datacenters::cut_link(&file, "strata datacenter cut")
            .with_context(|| format!("cannot write {}", file.display()))?;
    } else if !crate::plan::datacenters::heal_link(&file)
        .with_context(|| format!("cannot remove {}", file.display()))?
    {
        println!("the link between {a} and {b} was not cut");
        return Ok(());
    }
    // The relays look for the file every CUT_POLL; each says when the change is in force.
    let relays: Vec<&String> = layout
        .relays_between(a, b)
        .into_iter()
        .filter(|relay| {
            deployment
                .roles
                .iter()
                .any(|r| &r.name == *relay && r.pid.is_some_and(process::is_alive))
        })
        .collect();
    let deadline = std::time::Instant::now() + LINK_CONFIRM;
    let unconfirmed = loop {
        let unconfirmed: Vec<&str> = relays
            .iter()
            .filter(|relay| strata_link::cut_seen_path(&file, relay).exists() != cut)
            .map(|relay| relay.as_str())
            .collect();
        if unconfirmed.is_empty() || std::time::Instant::now() >= deadline {
            break unconfirmed;
        }
        tokio::time::sleep(strata_link::CUT_POLL / 5).await;
    };
    if cut {
        println!(
            "the link between {a} and {b} is cut: nothing crosses it either way (its relays \
             hold what they carry and connect nothing new). Join it again with \
             `strata datacenter heal {a} {b} --dir {}`.",
            dir.display()
        );
    } else {
        println!("the link between {a} and {b} is whole again: what its relays held is delivered");
    }
    if !unconfirmed.is_empty() {
        println!(
            "not confirmed within {} ms by {} (frozen or busy?): {} once {} it",
            LINK_CONFIRM.as_millis(),
            unconfirmed.join(", "),
            if cut { "cut" } else { "whole" },
            if unconfirmed.len() == 1 {
                "it sees"
            } else {
                "they see"
            },
        );
    }
    Ok(())
}

/// How long `strata datacenter cut|heal` waits for the relays to confirm.
const LINK_CONFIRM: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::datacenters::DatacentreRoles;

    fn dc(name: &str, databases: &[&str], relays_to: &[&str]) -> DatacentreRoles {
        DatacentreRoles {
            name: name.into(),
            databases: databases.iter().map(|d| d.to_string()).collect(),
            relays: relays_to
                .iter()
                .map(|t| crate::plan::datacenters::relay_name(name, t))
                .collect(),
            ..DatacentreRoles::default()
        }
    }

    #[test]
    fn a_link_s_relays_are_each_side_s_relays_to_the_other_s_servers() {
        let layout = Layout {
            datacenters: vec![
                dc("a", &["pg-1"], &["pg-2", "pg-3"]),
                dc("b", &["pg-2"], &["pg-1", "pg-3"]),
                dc("c", &["pg-3"], &["pg-1", "pg-2"]),
            ],
        };
        let mut between: Vec<&str> = layout
            .relays_between("b", "a")
            .into_iter()
            .map(String::as_str)
            .collect();
        between.sort_unstable();
        assert_eq!(between, ["a-relay-pg-2", "b-relay-pg-1"]);
        assert!(layout.relays_between("a", "nowhere").is_empty());
    }
}
