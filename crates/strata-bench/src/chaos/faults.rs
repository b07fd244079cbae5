//! The faults `strata chaos` injects, for real, into a running deployment: `kill -9`, a stall
//! (SIGSTOP, then SIGCONT), and a restart (SIGTERM: the supervisor starts the role again) —
//! of any role the deployment runs. A PostgreSQL role's faults hit its server (the postmaster
//! and every backend), as a crash or a frozen machine would; any other role's hit the role
//! process and everything it started (a cache role's Redis, an etcd role's etcd). With data
//! centres, `--targets link` hits their links: a stop cuts the link a relay is on — every relay
//! of it, both ways — for `--stop-secs` (the link's file that `strata datacenter cut` writes
//! and `heal` removes; its relays take up to 50 ms to see it, which the schedule does not wait
//! for); a kill or a restart hits one relay.
//!
//! The schedule is drawn from a seeded generator: the same `--seed` against the same
//! deployment applies the same faults at the same moments. Some faults come in pairs: a second
//! fault on another role begins while the first one lasts, as real faults often do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use strata_deploy::roles::RoleKind;
use strata_deploy::state::{self, RoleState};
use strata_engines::process;

/// A kind of fault.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL: a crash.
    Kill,
    /// SIGSTOP for `--stop-secs`, then SIGCONT: a stalled process or a frozen machine.
    Stop,
    /// SIGTERM: a clean restart (the supervisor starts the role again).
    Restart,
}

/// The kinds of role a fault may hit.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// PostgreSQL servers (primary and replicas).
    Postgres,
    /// API servers (the balancer's backends).
    Api,
    /// The balancer itself (the deployment's only entry point: every request fails while it is
    /// down).
    Lb,
    /// Failover controllers.
    Control,
    /// Shared cache and session servers.
    Cache,
    /// Members of the control plane's etcd cluster.
    Etcd,
    /// The links between data centres (their relays): a stop cuts a whole link.
    Link,
}

impl Target {
    /// The role kind's name, as the state file writes it.
    pub fn name(self) -> &'static str {
        match self {
            Target::Postgres => "postgres",
            Target::Api => "api",
            Target::Lb => "lb",
            Target::Control => "control",
            Target::Cache => "cache",
            Target::Etcd => "etcd",
            Target::Link => "relay",
        }
    }
}

/// One fault, planned: when it begins (from the start of the run), what and whom.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    pub at: Duration,
    pub kind: FaultKind,
    pub target: Target,
    /// Which role of that kind (an index into the deployment's roles of the kind, modulo their
    /// number).
    pub pick: usize,
    /// How long a stop lasts.
    pub stop_for: Duration,
}

/// How the schedule is drawn.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
    pub targets: Vec<Target>,
    pub min_gap: Duration,
    pub max_gap: Duration,
    pub stop_for: Duration,
    /// The chance that a fault comes with a second one during it.
    pub pair_probability: f64,
}

impl Schedule {
    /// The faults of a run lasting `duration`; the last ends before it does.
    pub fn plan(&self, duration: Duration) -> Vec<Planned> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut out = Vec::new();
        if self.kinds.is_empty() || self.targets.is_empty() {
            return out;
        }
        let gap = |rng: &mut StdRng| {
            let (lo, hi) = (
                self.min_gap.as_millis() as u64,
                self.max_gap.as_millis() as u64,
            );
            Duration::from_millis(if hi > lo {
                rng.random_range(lo..=hi)
            } else {
                lo
            })
        };
        let mut at = gap(&mut rng);
        while at + self.stop_for < duration {
            let first = Planned {
                at,
                kind: self.kinds[rng.random_range(0..self.kinds.len())],
                target: self.targets[rng.random_range(0..self.targets.len())],
                pick: rng.random_range(0..64),
                stop_for: self.stop_for,
            };
            if rng.random_bool(self.pair_probability.clamp(0.0, 1.0)) {
                // The second begins while the first lasts.
                let within = first.stop_for.max(Duration::from_millis(500));
                let offset = Duration::from_millis(rng.random_range(0..within.as_millis() as u64));
                out.push(first.clone());
                out.push(Planned {
                    at: first.at + offset,
                    kind: self.kinds[rng.random_range(0..self.kinds.len())],
                    target: self.targets[rng.random_range(0..self.targets.len())],
                    pick: rng.random_range(0..64),
                    stop_for: self.stop_for,
                });
            } else {
                out.push(first);
            }
            at += self.stop_for + gap(&mut rng);
        }
        out
    }
}

/// A fault as it was applied.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// Seconds from the start of the run.
    pub at_s: f64,
    pub kind: FaultKind,
    pub role: String,
    /// What was signalled, or why nothing was.
    pub detail: String,
}

/// The deployment's roles of `target`'s kind, by name.
fn roles_of(dir: &Path, target: Target) -> Vec<RoleState> {
    let mut roles: Vec<RoleState> = state::read(dir)
        .ok()
        .flatten()
        .map(|s| s.roles)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.kind.as_str() == target.name())
        .collect();
    roles.sort_by(|a, b| a.name.cmp(&b.name));
    roles
}

/// The process a fault hits: a PostgreSQL role's server (from its `postmaster.pid`, verified),
/// any other role's own process.
fn victim(dir: &Path, role: &RoleState) -> Option<u32> {
    match role.kind {
        RoleKind::Postgres => strata_engines::postgres::running_postmaster(
            &strata_deploy::groups::postgres_dir(dir, &role.name).join(&role.name),
        ),
        _ => role.pid.filter(|p| process::is_alive(*p)),
    }
}

/// What a stop holds until [`resume`] ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// A process tree, continued with SIGCONT.
    Process(u32),
    /// A link between data centres, cut while this file exists.
    Link(PathBuf),
}

/// The file that cuts the link relay `role` is on, and the two data centres it joins.
fn link_of(dir: &Path, role: &str) -> Option<(PathBuf, String, String)> {
    let layout = strata_deploy::plan::datacenters::Layout::read(dir)?;
    let (here, there) = layout.link_of(role)?;
    Some((
        strata_deploy::plan::datacenters::cut_file(dir, &here.name, &there.name),
        here.name.clone(),
        there.name.clone(),
    ))
}

/// Cuts the link relay `role` is on for `fault.stop_for`.
fn cut(dir: &Path, role: &RoleState, fault: &Planned) -> (String, Option<Stopped>) {
    let Some((file, here, there)) = link_of(dir, &role.name) else {
        return (
            format!(
                "{} is on no link of this deployment: nothing done",
                role.name
            ),
            None,
        );
    };
    match strata_deploy::plan::datacenters::cut_link(&file, "strata chaos") {
        Ok(()) => (
            format!(
                "the link between {here} and {there} cut for {:.1} s",
                fault.stop_for.as_secs_f64()
            ),
            Some(Stopped::Link(file)),
        ),
        Err(e) => (
            format!("cannot write {}: {e}; nothing done", file.display()),
            None,
        ),
    }
}

/// Applies one fault now. A stop returns at once; [`resume`] ends it.
pub fn apply(dir: &Path, fault: &Planned, at_s: f64) -> (Applied, Option<Stopped>) {
    let roles = roles_of(dir, fault.target);
    let Some(role) = roles.get(fault.pick % roles.len().max(1)) else {
        return (
            Applied {
                at_s,
                kind: fault.kind,
                role: fault.target.name().to_string(),
                detail: "no role of this kind runs: nothing done".into(),
            },
            None,
        );
    };
    let (detail, stopped) = hit(dir, role, fault);
    (
        Applied {
            at_s,
            kind: fault.kind,
            role: role.name.clone(),
            detail,
        },
        stopped,
    )
}

/// Applies `fault` to `role`: what was done, and the stop to end later.
fn hit(dir: &Path, role: &RoleState, fault: &Planned) -> (String, Option<Stopped>) {
    if fault.target == Target::Link && fault.kind == FaultKind::Stop {
        return cut(dir, role, fault);
    }
    let Some(pid) = victim(dir, role) else {
        return ("not running right now: nothing done".into(), None);
    };
    match fault.kind {
        FaultKind::Kill => {
            process::signal_all(pid, Signal::SIGKILL);
            (format!("SIGKILL to pid {pid} and its descendants"), None)
        }
        FaultKind::Stop => {
            process::signal_all(pid, Signal::SIGSTOP);
            (
                format!(
                    "SIGSTOP to pid {pid} and its descendants for {:.1} s",
                    fault.stop_for.as_secs_f64()
                ),
                Some(Stopped::Process(pid)),
            )
        }
        FaultKind::Restart => match role.pid {
            Some(role_pid) => {
                process::signal(role_pid, Signal::SIGTERM);
                (format!("SIGTERM to the role (pid {role_pid})"), None)
            }
            None => ("the role has no pid: nothing done".into(), None),
        },
    }
}

/// Ends a stop.
pub fn resume(stopped: &Stopped) {
    match stopped {
        Stopped::Process(pid) => process::signal_all(*pid, Signal::SIGCONT),
        Stopped::Link(file) => {
            if let Err(e) = strata_deploy::plan::datacenters::heal_link(file) {
                eprintln!(
                    "chaos: cannot remove {} to heal a link: {e}",
                    file.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(seed: u64) -> Schedule {
        Schedule {
            seed,
            kinds: vec![FaultKind::Kill, FaultKind::Stop, FaultKind::Restart],
            targets: vec![Target::Postgres, Target::Api],
            min_gap: Duration::from_secs(2),
            max_gap: Duration::from_secs(6),
            stop_for: Duration::from_secs(1),
            pair_probability: 0.5,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_and_another_seed_others() {
        let a = schedule(7).plan(Duration::from_secs(120));
        assert_eq!(a, schedule(7).plan(Duration::from_secs(120)));
        assert_ne!(a, schedule(8).plan(Duration::from_secs(120)));
        assert!(a.len() >= 10, "{a:?}");
        assert!(
            a.iter()
                .all(|f| f.at + f.stop_for < Duration::from_secs(120) + f.stop_for),
            "every fault begins within the run"
        );
        assert!(
            a.windows(2).any(|w| w[1].at < w[0].at + w[0].stop_for),
            "some faults come in pairs: {a:?}"
        );
    }

    #[test]
    fn only_the_kinds_and_targets_asked_for_are_drawn() {
        let mut s = schedule(1);
        s.kinds = vec![FaultKind::Stop];
        s.targets = vec![Target::Control];
        let plan = s.plan(Duration::from_secs(60));
        assert!(!plan.is_empty());
        assert!(
            plan.iter()
                .all(|f| f.kind == FaultKind::Stop && f.target == Target::Control)
        );
        s.kinds.clear();
        assert!(s.plan(Duration::from_secs(60)).is_empty());
    }
}
