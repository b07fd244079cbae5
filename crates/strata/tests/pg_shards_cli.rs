//! Shard groups on PostgreSQL from the command line: `strata seed` into two groups, `strata
//! reshard --shards 4` onto two spare databases, `strata shard show` counting every user once,
//! and the mistakes an operator makes refused with the reason and a non-zero exit.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use strata_testkit::PgServer;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn run(args: &[&str], data: &Path, shards: &[String]) -> Output {
    let mut cmd = Command::new(STRATA);
    cmd.args(args).arg("--data").arg(data);
    for s in shards {
        cmd.arg("--postgres-shard").arg(s);
    }
    cmd.output().expect("run strata")
}

fn ok(out: &Output, what: &str) -> String {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[test]
fn seeding_resharding_and_showing_postgres_shard_groups_from_the_command_line() {
    let pg = PgServer::start();
    let shards: Vec<String> = ["s1", "s2", "s3", "s4"]
        .iter()
        .map(|g| format!("{g}={}", pg.create_database(g)))
        .collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");

    let seeded = run(
        &[
            "seed",
            "--users",
            "3000",
            "--batch-size",
            "500",
            "--shards",
            "2",
        ],
        &data,
        &shards,
    );
    ok(&seeded, "seed");

    let show = |what: &str| -> Value {
        let out = run(&["shard", "show", "--json"], &data, &shards);
        serde_json::from_str(&ok(&out, what)).expect("json")
    };
    let before = show("shard show before");
    let groups = before["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{before:#}");
    let users: u64 = groups
        .iter()
        .map(|g| g["users"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(users, 3001, "3000 seeded and user 12: {before:#}");
    let text = before.to_string();
    assert!(!text.contains("postgresql://"), "no URLs shown: {text}");

    // A group without a database is refused, naming it; nothing moves.
    let missing = run(&["reshard", "--shards", "4", "--json"], &data, &shards[..3]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("s4") && err.contains("--postgres-shard"),
        "{err}"
    );
    assert_eq!(
        show("shard show after a refusal")["groups"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    let report = run(&["reshard", "--shards", "4", "--json"], &data, &shards);
    let report: Value = serde_json::from_str(&ok(&report, "reshard")).expect("report json");
    assert_eq!(report["finished"], true, "{report:#}");
    assert_eq!(report["groups"], 4, "{report:#}");

    let after = show("shard show after");
    let groups = after["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 4, "{after:#}");
    for g in groups {
        assert_eq!(g["slot_count"], 1024, "{after:#}");
    }
    let users: u64 = groups
        .iter()
        .map(|g| g["users"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(users, 3001, "every user once, copies cleaned up: {after:#}");
}
