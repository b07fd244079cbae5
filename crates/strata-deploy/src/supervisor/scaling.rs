//! The supervisor's side of `strata scale` ([`crate::scale`]): after start, it waits for
//! shutdown or for a scale request (SIGUSR1, the request in the deployment directory), and
//! brings the running workers to the count asked for — new ones started and watched like every
//! role, the highest-numbered ones stopped (each drains on its SIGTERM) and dropped from the
//! state file.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Running, SharedState, SupervisorConfig, mark_ready, start_role, watch_role};
use crate::plan::{RoleSpec, workers};
use crate::roles::RoleKind;
use crate::state::{RolePhase, RoleState};

/// Waits for `shutdown`, applying every scale request meanwhile; then stops the roles that
/// scaling added (they are in no stop wave of the plan: they depend on others, none on them).
pub(super) async fn serve(
    config: &Arc<SupervisorConfig>,
    shared: &SharedState,
    watchers: &mut Watchers,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut asked =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    tokio::pin!(shutdown);
    loop {
        let request = async {
            match asked.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = request => {
                if let Some(request) = crate::scale::read_request(&config.dir) {
                    apply(config, shared, watchers, request.workers).await;
                }
            }
        }
    }
    let added: Vec<String> = watchers
        .keys()
        .filter(|n| config.plan.role(n).is_none())
        .cloned()
        .collect();
    for name in added {
        if let Some(watcher) = watchers.remove(&name) {
            stop_watcher(watcher).await;
        }
    }
}

/// Watches a started role (restarting it when it crashes) until told to stop.
pub(super) fn watch(
    config: &Arc<SupervisorConfig>,
    shared: &SharedState,
    spec: RoleSpec,
    running: Running,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(watch_role(
        config.clone(),
        shared.clone(),
        spec,
        running,
        rx,
    ));
    (stop, task)
}

/// Stops a watched role and waits until it has.
pub(super) async fn stop_watcher((stop, task): (watch::Sender<bool>, tokio::task::JoinHandle<()>)) {
    let _ = stop.send(true);
    let _ = task.await;
}

/// A watched role: how to stop it, and its watcher.
pub(super) type Watchers = BTreeMap<String, (watch::Sender<bool>, tokio::task::JoinHandle<()>)>;

/// In the supervisor: brings the running workers to `wanted`.
async fn apply(
    config: &Arc<SupervisorConfig>,
    shared: &SharedState,
    watchers: &mut Watchers,
    wanted: u16,
) {
    let Some(template) = config.plan.workers.clone() else {
        tracing::warn!("this deployment has no web tier for workers: scaling ignored");
        return;
    };
    // Workers that failed to start before are forgotten: they are started afresh if wanted.
    shared.update(|s| {
        s.roles
            .retain(|r| r.kind != RoleKind::Worker || watchers.contains_key(&r.name));
    });
    let mut running: Vec<u16> = watchers
        .keys()
        .filter_map(|n| workers::index_of(n))
        .collect();
    running.sort_unstable();
    // Fewer: the highest-numbered first, each drained by its SIGTERM.
    while running.len() > usize::from(wanted) {
        let Some(i) = running.pop() else { break };
        let name = workers::name(i);
        if let Some(watcher) = watchers.remove(&name) {
            stop_watcher(watcher).await;
        }
        shared.update(|s| s.roles.retain(|r| r.name != name));
        tracing::info!(role = %name, "stopped: scaled down");
    }
    // More: the lowest free indexes.
    let mut next = 1u16;
    while running.len() < usize::from(wanted) {
        while running.contains(&next) {
            next += 1;
        }
        let spec = template.spec(next);
        let name = spec.name.clone();
        shared.update(|s| {
            s.roles.retain(|r| r.name != name);
            s.roles.push(RoleState {
                name: name.clone(),
                kind: spec.kind,
                pid: None,
                addrs: BTreeMap::new(),
                restarts: 0,
                state: RolePhase::Starting,
                last_error: None,
            });
        });
        match start_role(config, &spec, spec.port, &shared.announced()).await {
            Ok(r) => {
                mark_ready(shared, &name, &r);
                watchers.insert(name.clone(), watch(config, shared, spec, r));
                tracing::info!(role = %name, "started: scaled up");
                running.push(next);
            }
            Err(failure) => {
                let message = failure.to_string();
                tracing::warn!(role = %name, "{message}");
                shared.role(&name, |r| {
                    r.state = RolePhase::Failed;
                    r.last_error = Some(message.clone());
                });
                return;
            }
        }
    }
}
