//! `[control]`: the control plane that fails over between the PostgreSQL servers — how many
//! controllers, and where the cluster state lives: a file on this machine (one controller), an
//! etcd cluster `strata up` runs (as many members as controllers), or an etcd cluster of one's
//! own by its endpoints.
//!
//! ```toml
//! [control]
//! count = 3            # controllers (and etcd members): an odd number, 1 to 7
//! store = "etcd"       # "file" (the default: one controller)
//! # etcd = ["http://10.0.0.5:2379", "http://10.0.0.6:2379"]   # an etcd of one's own
//! # check_interval_ms = 500   # how often the leader checks the primary
//! # failures = 3              # failed checks in a row before it fails over
//! ```

use super::reader::Section;
use super::{ControlSpec, MAX_CONTROLLERS, StoreKind};

/// Reads `[control]`.
pub(super) fn read(sec: &mut Section<'_>) -> ControlSpec {
    let store = sec.choice::<StoreKind>("store").unwrap_or_default();
    let count = sec.int::<u8>("count", 1..=i64::from(MAX_CONTROLLERS));
    let check_interval_ms = sec.millis("check_interval_ms", 50..=60_000);
    let failures = sec.int::<u32>("failures", 1..=100);
    let etcd = sec
        .strings("etcd", "etcd endpoints (\"http://HOST:PORT\")", |e| {
            strata_control::etcd::client::parse_endpoint(e).is_ok()
        })
        .unwrap_or_default();
    if let Some(n) = count
        && n % 2 == 0
    {
        sec.error(
            "count",
            format!(
                "`control.count` must be odd (1, 3, 5 or 7), not {n}: the control plane decides \
                 by a majority, and a member more that makes the count even survives no more \
                 failures"
            ),
        );
    }
    if store == StoreKind::File {
        if count.is_some_and(|n| n > 1) {
            sec.error(
                "count",
                "several controllers need `store = \"etcd\"`: on a file only one controller \
                 decides (etcd elects a leader among several, by a lease)",
            );
        }
        if sec.has("etcd") {
            sec.error(
                "etcd",
                "`control.etcd` needs `store = \"etcd\"`: with the file store the state stays on \
                 this machine",
            );
        }
    }
    ControlSpec {
        count: count.unwrap_or(1),
        store,
        etcd,
        check_interval_ms,
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;

    const PG: &str = "[api]\ncount = 1\n[data]\nengine = \"postgres\"\nreplicas = 2\n";

    #[test]
    fn the_control_plane_runs_on_a_file_by_default_or_on_etcd() {
        let t = Topology::parse(PG, 8080).expect("valid");
        assert_eq!(t.control, ControlSpec::default());
        assert_eq!(t.control.count, 1);
        assert_eq!(t.etcd_members(), 0);
        let t = Topology::parse(
            &format!("{PG}[control]\ncount = 3\nstore = \"etcd\"\n"),
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.control,
            ControlSpec {
                count: 3,
                store: StoreKind::Etcd,
                ..ControlSpec::default()
            }
        );
        assert_eq!(t.etcd_members(), 3, "strata up runs the etcd cluster");
        assert_eq!(t.instance_count(), 1 + 3 + 3 + 3);
        let t = Topology::parse(
            &format!("{PG}[control]\nstore = \"etcd\"\netcd = [\"http://10.0.0.5:2379\"]\n"),
            8080,
        )
        .expect("valid");
        assert_eq!(t.etcd_members(), 0, "an etcd of one's own: none to run");
    }

    #[test]
    fn how_often_the_primary_is_checked_and_how_many_failures_fail_over_are_settings() {
        let t = Topology::parse(
            &format!("{PG}[control]\ncheck_interval_ms = 200\nfailures = 2\n"),
            8080,
        )
        .expect("valid");
        assert_eq!(
            (t.control.check_interval_ms, t.control.failures),
            (Some(200), Some(2))
        );
        let e = errors(&format!(
            "{PG}[control]\ncheck_interval_ms = 10\nfailures = 0\n"
        ));
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn even_counts_several_controllers_on_a_file_and_bad_endpoints_are_refused() {
        let e = errors(&format!(
            "{PG}[control]\ncount = 2\nstore = \"etcd\"\netcd = [\"ftp://x\", \"http://h:1\"]\n"
        ));
        assert!(
            e.iter()
                .any(|e| e.line == Some(7) && e.message.contains("must be odd")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| e.line == Some(9) && e.message.contains("etcd endpoints")),
            "{e:?}"
        );
        let e = errors(&format!(
            "{PG}[control]\ncount = 3\netcd = [\"http://h:1\"]\n"
        ));
        assert!(
            e.iter()
                .any(|e| e.line == Some(7) && e.message.contains("need `store = \"etcd\"`")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| e.line == Some(8) && e.message.contains("`control.etcd` needs")),
            "{e:?}"
        );
        let e = errors(&format!(
            "{PG}[control]\ncount = 0\nstore = \"zookeeper\"\n"
        ));
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn etcd_not_installed_and_an_etcd_of_ones_own_that_does_not_answer_are_refused() {
        let no_etcd = |engine: strata_engines::Engine| match engine {
            strata_engines::Engine::Etcd => Err(strata_engines::NotInstalled { engine }),
            _ => Ok(std::path::PathBuf::new()),
        };
        let env = Environment {
            locate: &no_etcd,
            answers: &|_| false,
        };
        let text = format!("{PG}[control]\ncount = 3\nstore = \"etcd\"\n");
        let e = Topology::compile(&text, 8080, &env)
            .expect_err("etcd missing")
            .0;
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(8), "on the store line: {e:?}");
        assert!(
            e[0].message.contains("apt-get install etcd-server"),
            "says what to install: {e:?}"
        );
        let text = format!(
            "{PG}[control]\nstore = \"etcd\"\netcd = [\"http://127.0.0.1:1\"]\ncount = 2\n"
        );
        let e = Topology::compile(&text, 8080, &env)
            .expect_err("unreachable")
            .0;
        assert!(
            e.iter()
                .any(|e| e.line == Some(8) && e.message.contains("answers")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| e.line == Some(9) && e.message.contains("odd")),
            "every mistake at once: {e:?}"
        );
        let answering = Environment {
            locate: &no_etcd,
            answers: &|_| true,
        };
        assert!(
            Topology::compile(
                &format!("{PG}[control]\nstore = \"etcd\"\netcd = [\"http://127.0.0.1:1\"]\n"),
                8080,
                &answering
            )
            .is_ok(),
            "an etcd of one's own needs nothing installed"
        );
    }

    #[test]
    fn a_control_plane_needs_postgresql_replicas_to_fail_over_between() {
        let e = errors("[api]\ncount = 1\n[control]\ncount = 1\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(3));
        assert!(e[0].message.contains("replicas"), "{e:?}");
    }
}
