//! `[data]`: the data tier — embedded SQLite, PostgreSQL servers that `strata up` runs (a
//! primary and streaming replicas), or existing PostgreSQL servers by URL.

use super::reader::Section;
use super::{CommitMode, DataEngine, MAX_POSTGRES_GROUPS, MAX_REPLICAS, MAX_SHARDS, RejoinMode};

/// The names `[data] engine` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Engine {
    Sqlite,
    Postgres,
}

/// The keys that only PostgreSQL takes.
const POSTGRES_ONLY: [&str; 4] = ["replicas", "commit", "rejoin", "url"];

/// `[data]` as read.
pub(super) struct DataSection {
    pub engine: DataEngine,
    pub shards: u16,
    pub spare_shards: u16,
}

/// Reads `[data]`: the engine and how many shard groups.
/// With `datacentres`, the `[[datacenter]]` tables say how many servers run (their
/// `databases`), so whether `commit = "quorum"` has a replica is judged with them.
pub(super) fn read(sec: &mut Section<'_>, datacentres: bool) -> DataSection {
    let shards = sec.int::<u16>("shards", 1..=MAX_SHARDS);
    let spare = sec.int::<u16>("spare_shards", 0..=MAX_POSTGRES_GROUPS - 1);
    let engine = read_engine(sec, datacentres);
    let (shards, spare_shards) = (shards.unwrap_or(1), spare.unwrap_or(0));
    match &engine {
        DataEngine::PostgresUrl { .. } if shards > 1 || sec.has("spare_shards") => sec.error(
            if sec.has("shards") {
                "shards"
            } else {
                "spare_shards"
            },
            "shard groups cannot go with `data.url`: `strata up` runs each group's servers \
             itself. Drop `url`, or run API servers on existing databases with \
             `strata api --postgres-shard NAME=URL` (one per group)",
        ),
        DataEngine::Postgres { .. }
            if i64::from(shards) + i64::from(spare_shards) > MAX_POSTGRES_GROUPS =>
        {
            sec.error(
                "shards",
                format!(
                    "`data.shards` + `data.spare_shards` is {}: `strata up` runs at most \
                     {MAX_POSTGRES_GROUPS} PostgreSQL shard groups on one machine (each is a \
                     primary and its replicas)",
                    shards + spare_shards
                ),
            )
        }
        DataEngine::Sqlite if sec.has("spare_shards") => sec.error(
            "spare_shards",
            "`data.spare_shards` is for engine = \"postgres\", whose groups are servers that \
             must run before a resharding can use them; embedded groups are files that \
             `strata reshard` creates. Drop `spare_shards`",
        ),
        _ => {}
    }
    DataSection {
        engine,
        shards,
        spare_shards,
    }
}

/// Reads `[data]`'s engine.
fn read_engine(sec: &mut Section<'_>, datacentres: bool) -> DataEngine {
    let engine = sec.choice::<Engine>("engine");
    let replicas = sec.int::<u8>("replicas", 0..=MAX_REPLICAS);
    let commit = sec.choice::<CommitMode>("commit");
    let rejoin = sec.choice::<RejoinMode>("rejoin");
    // Never echo the value: a URL may hold a password.
    let url = sec.secret(
        "url",
        "a PostgreSQL URL such as \"postgresql://USER@HOST:5432/DB\"",
        |s| s.starts_with("postgres://") || s.starts_with("postgresql://") || s.contains("host="),
    );
    match engine {
        Some(Engine::Postgres) => {}
        // A bad engine has been reported; what goes with it is not judged.
        None if sec.has("engine") => return DataEngine::Sqlite,
        Some(Engine::Sqlite) | None => {
            for key in POSTGRES_ONLY {
                if !sec.has(key) {
                    continue;
                }
                sec.error(
                    key,
                    format!(
                        "`data.{key}` needs engine = \"postgres\": the embedded SQLite engine is \
                         one file in one place, with no replicas. Use engine = \"postgres\" with \
                         replicas = 2"
                    ),
                );
            }
            return DataEngine::Sqlite;
        }
    }
    if let Some(url) = url {
        for key in &POSTGRES_ONLY[..3] {
            if !sec.has(key) {
                continue;
            }
            sec.error(
                key,
                format!(
                    "`data.{key}` cannot go with `data.url`: with a URL Strata uses existing \
                     servers and their own replication; drop `url` to let strata up run them"
                ),
            );
        }
        return DataEngine::PostgresUrl { url };
    }
    if sec.has("url") {
        // A bad URL has been reported: the servers are still existing ones, which Strata does
        // not run (nor needs installed), and what goes with the URL is judged once it is right.
        return DataEngine::PostgresUrl { url: String::new() };
    }
    if datacentres {
        // Judged with the data centres' `databases` (`datacenters::read`).
    } else if commit == Some(CommitMode::Quorum)
        && replicas.unwrap_or(0) == 0
        && !sec.has("replicas")
    {
        sec.error(
            "commit",
            "`data.commit = \"quorum\"` needs replicas: a commit waits until a replica has \
             flushed it, and there is none (set `replicas = 1` or more, or `commit = \"async\"`)",
        );
    } else if commit == Some(CommitMode::Quorum) && replicas == Some(0) {
        sec.error(
            "replicas",
            "`data.replicas = 0` cannot give `commit = \"quorum\"`: a commit waits until a \
             replica has flushed it (set `replicas = 1` or more, or `commit = \"async\"`)",
        );
    }
    DataEngine::Postgres {
        replicas: replicas.unwrap_or(0),
        commit: commit.unwrap_or(CommitMode::Quorum),
        rejoin: rejoin.unwrap_or(RejoinMode::Auto),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;

    #[test]
    fn shard_groups_are_read_and_an_impossible_layout_is_refused_with_the_reason() {
        let t = Topology::parse("[api]\ncount = 1\n[data]\nshards = 4\n", 8080).expect("valid");
        assert_eq!(t.shards, 4);
        let t = Topology::parse("[api]\ncount = 1\n", 8080).expect("valid");
        assert_eq!(t.shards, 1, "not sharded by default");
        let e = errors("[api]\ncount = 1\n[data]\nshards = 0\n");
        assert_eq!(e[0].line, Some(4), "{e:?}");
        assert!(e[0].message.contains("between 1 and 255"), "{e:?}");
        let e = errors("[api]\ncount = 1\n[data]\nshards = 4096\n");
        assert!(e[0].message.contains("between 1 and 255"), "{e:?}");
        let e = errors("[api]\ncount = 1\n[data]\nshards = \"four\"\n");
        assert!(
            e[0].message.contains("an integer between 1 and 255"),
            "{e:?}"
        );
        // PostgreSQL groups: each a primary and its replicas, and spares for resharding.
        let t = Topology::parse(
            "[api]\ncount = 1\n[data]\nengine = \"postgres\"\nshards = 2\nspare_shards = 1\nreplicas = 1\n",
            8080,
        )
        .expect("valid");
        assert_eq!((t.shards, t.spare_shards), (2, 1));
        assert_eq!(t.postgres_groups(), ["s1", "s2", "s3"]);
        assert_eq!(
            t.database_nodes(),
            6,
            "three groups of a primary and a replica"
        );
        assert_eq!(t.controllers(), 3, "one controller per group");
        assert_eq!(t.instance_count(), 1 + 6 + 3);
        let unsharded = Topology::parse("[api]\ncount = 1\n[data]\nengine = \"postgres\"\n", 8080)
            .expect("valid");
        assert!(
            unsharded.postgres_groups().is_empty(),
            "one cluster, not a group"
        );
        let e = errors(
            "[api]\ncount = 1\n[data]\nengine = \"postgres\"\nurl = \"postgresql://x@h/d\"\nshards = 2\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(6), "{e:?}");
        assert!(e[0].message.contains("--postgres-shard"), "{e:?}");
        let e = errors(
            "[api]\ncount = 1\n[data]\nengine = \"postgres\"\nshards = 12\nspare_shards = 6\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.contains("at most 16"), "{e:?}");
        let e = errors("[api]\ncount = 1\n[data]\nshards = 2\nspare_shards = 2\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(5), "{e:?}");
        assert!(e[0].message.contains("strata reshard"), "{e:?}");
    }

    #[test]
    fn quorum_commit_without_a_replica_is_a_commit_mode_the_engine_cannot_provide() {
        let e = errors("[api]\ncount = 1\n[data]\nengine = \"postgres\"\ncommit = \"quorum\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(5));
        assert!(e[0].message.contains("needs replicas"), "{e:?}");
        let e = errors(
            "[api]\ncount = 1\n[data]\nengine = \"postgres\"\nreplicas = 0\ncommit = \"quorum\"\n",
        );
        assert_eq!(e[0].line, Some(5), "{e:?}");
        // The default (no commit key) with no replicas stays valid: nothing to wait for.
        assert!(Topology::parse("[api]\ncount = 1\n[data]\nengine = \"postgres\"\n", 8080).is_ok());
    }

    #[test]
    fn postgres_with_replicas_or_by_url_and_what_cannot_go_together() {
        let t = Topology::parse(
            "[api]\ncount = 2\n[data]\nengine = \"postgres\"\nreplicas = 2\ncommit = \"async\"\nrejoin = \"manual\"\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.data,
            DataEngine::Postgres {
                replicas: 2,
                commit: CommitMode::Async,
                rejoin: RejoinMode::Manual,
            }
        );
        assert_eq!(
            t.instance_count(),
            6,
            "2 API servers, a primary, 2 replicas and the control role"
        );
        assert!(t.has_control());
        let t = Topology::parse("[api]\ncount = 1\n[data]\nengine = \"postgres\"\n", 8080)
            .expect("valid");
        assert_eq!(
            t.data,
            DataEngine::Postgres {
                replicas: 0,
                commit: CommitMode::Quorum,
                rejoin: RejoinMode::Auto,
            },
            "quorum commit and automatic rejoin are the defaults"
        );
        let url = "postgresql://app:secret@db1:5432,db2:5432/strata";
        let t = Topology::parse(
            &format!("[api]\ncount = 1\n[data]\nengine = \"postgres\"\nurl = \"{url}\"\n"),
            8080,
        )
        .expect("valid");
        assert_eq!(t.data, DataEngine::PostgresUrl { url: url.into() });
        assert_eq!(
            t.instance_count(),
            1,
            "no database role for existing servers"
        );

        // Replicas on the embedded engine: refused, saying what to use instead.
        let e = errors("[api]\ncount = 1\n[data]\nreplicas = 2\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(4));
        assert!(e[0].message.contains("engine = \"postgres\""), "{e:?}");
        // A URL with replicas, bad counts and modes; a bad URL is never echoed.
        let e = errors(
            "[api]\ncount = 1\n[data]\nengine = \"postgres\"\nurl = \"postgresql://x@h/d\"\nreplicas = 1\n",
        );
        assert!(e[0].message.contains("cannot go with `data.url`"), "{e:?}");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(6), "{e:?}");
        let e = errors(
            "[api]\ncount = 1\n[data]\nengine = \"postgres\"\nreplicas = 5\ncommit = \"sync\"\nurl = \"hunter2\"\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e.iter().all(|e| !e.message.contains("hunter2")), "{e:?}");
        assert_eq!(
            e[2].message,
            "`data.url` must be a PostgreSQL URL such as \"postgresql://USER@HOST:5432/DB\""
        );
        let e = errors("[api]\ncount = 1\n[data]\nengine = \"postgres\"\nrejoin = \"never\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(5));
        assert!(e[0].message.contains("\"auto\" or \"manual\""), "{e:?}");
        let e = errors("[api]\ncount = 1\n[data]\nrejoin = \"manual\"\n");
        assert!(
            e[0].message.contains("needs engine = \"postgres\""),
            "{e:?}"
        );
    }

    #[test]
    fn a_bad_engine_is_one_mistake_not_one_per_key_that_goes_with_it() {
        let e = errors("[api]\ncount = 1\n[data]\nengine = \"postgress\"\nreplicas = 2\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].message,
            "`data.engine` must be \"sqlite\" or \"postgres\", not \"postgress\" (did you mean `postgres`?)"
        );
    }
}
