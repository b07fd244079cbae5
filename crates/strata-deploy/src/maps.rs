//! Where the shard map of a deployment's PostgreSQL groups lives, for the roles and commands
//! that open the groups: the file `DIR/data/shard-map.json`, or — with `[control] store =
//! "etcd"` — the key `PREFIX/shard-map` in the control plane's etcd
//! ([`strata_control::map_home::EtcdMapHome`]). The data tier reads and publishes
//! through [`MapHome`] and cannot reach etcd itself; this module plugs the etcd home in.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use strata_control::map_home::EtcdMapHome;
use strata_store::map_home::{FileMapHome, MapHome, MapHomeHandle};
use strata_store::open::DataOptions;

use crate::roles::RoleKind;
use crate::state::{DATA_DIR, DeploymentState};

/// Gives `data` the etcd home its `--shard-map-etcd` names (an API server of `strata up`, or
/// `strata serve` told so); nothing without it.
pub fn attach(data: &mut DataOptions) -> anyhow::Result<()> {
    if data.shard_map_etcd.is_empty() || data.map_home.is_some() {
        return Ok(());
    }
    let home = EtcdMapHome::new(data.shard_map_etcd.clone(), &data.shard_map_etcd_prefix)
        .context("--shard-map-etcd")?;
    data.map_home = Some(MapHomeHandle(Arc::new(home)));
    Ok(())
}

/// The shard map's home of the deployment in `dir` (its state read as `state`).
pub fn of_deployment(dir: &Path, state: &DeploymentState) -> anyhow::Result<Arc<dyn MapHome>> {
    let Some(etcd) = &state.shard_map else {
        return Ok(Arc::new(FileMapHome::new(dir.join(DATA_DIR))));
    };
    let endpoints = if etcd.endpoints.is_empty() {
        state
            .roles
            .iter()
            .filter(|r| r.kind == RoleKind::Etcd)
            .filter_map(|r| r.addrs.get(crate::plan::control::LISTENER))
            .map(|addr| format!("http://{addr}"))
            .collect()
    } else {
        etcd.endpoints.clone()
    };
    if endpoints.is_empty() {
        anyhow::bail!(
            "the deployment in {} keeps its shard map in etcd, but none of its etcd members has announced an address yet: try again once `strata status --dir {}` shows them",
            dir.display(),
            dir.display()
        );
    }
    Ok(Arc::new(
        EtcdMapHome::new(endpoints, &etcd.prefix).context("the deployment's etcd")?,
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::{RolePhase, RoleState, ShardMapInEtcd};

    fn state(shard_map: Option<ShardMapInEtcd>, etcd_addr: Option<&str>) -> DeploymentState {
        DeploymentState {
            topology: "t".into(),
            shard_map,
            supervisor_pid: 1,
            running: true,
            roles: vec![RoleState {
                name: "etcd-1".into(),
                kind: RoleKind::Etcd,
                pid: Some(2),
                addrs: etcd_addr
                    .map(|a| BTreeMap::from([("etcd".to_string(), a.to_string())]))
                    .unwrap_or_default(),
                restarts: 0,
                state: RolePhase::Ready,
                last_error: None,
            }],
        }
    }

    #[test]
    fn the_home_is_the_data_directory_unless_the_state_names_etcd() {
        let dir = Path::new("/d");
        let file = of_deployment(dir, &state(None, None)).expect("home");
        assert_eq!(file.place(), "/d/data/shard-map.json");
        let in_etcd = Some(ShardMapInEtcd {
            endpoints: Vec::new(),
            prefix: "/strata/t".into(),
        });
        let etcd =
            of_deployment(dir, &state(in_etcd.clone(), Some("127.0.0.1:2379"))).expect("home");
        assert_eq!(
            etcd.place(),
            "etcd key /strata/t/shard-map (at http://127.0.0.1:2379)"
        );
        let e = of_deployment(dir, &state(in_etcd, None))
            .err()
            .expect("no member address yet");
        assert!(e.to_string().contains("none of its etcd members"), "{e}");
    }

    #[test]
    fn an_api_server_told_of_etcd_gets_the_etcd_home_and_a_bad_prefix_is_refused() {
        let mut data = DataOptions::sqlite("/d");
        attach(&mut data).expect("nothing to attach");
        assert!(data.map_home.is_none());
        data.shard_map_etcd = vec!["http://127.0.0.1:2379".into()];
        data.shard_map_etcd_prefix = "/strata/t".into();
        attach(&mut data).expect("attach");
        let home = data.map_home.as_ref().expect("a home");
        assert!(home.0.place().starts_with("etcd key /strata/t/shard-map"));
        let mut bad = DataOptions::sqlite("/d");
        bad.shard_map_etcd = vec!["http://127.0.0.1:2379".into()];
        bad.shard_map_etcd_prefix = "strata".into();
        let e = attach(&mut bad).expect_err("a prefix without /");
        assert!(format!("{e:#}").contains("--shard-map-etcd"), "{e:#}");
    }
}
