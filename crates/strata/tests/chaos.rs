//! `strata chaos` end to end: real faults against a running deployment under load, and a
//! verdict that accounts for every request.

mod common;
use common::{Cleanup, STRATA, explain, up_topology};

use std::process::Command;

use serde_json::Value;

#[test]
fn chaos_kills_stops_and_restarts_api_servers_under_load_and_finds_nothing_lost() {
    let (_tmp, dir) = up_topology("name = \"chaos\"\n[lb]\n[api]\ncount = 3\n");
    let _cleanup = Cleanup(&dir);
    let out = Command::new(STRATA)
        .args([
            "chaos",
            "--duration-secs",
            "12",
            "--rate",
            "10",
            "--seed",
            "3",
            "--targets",
            "api",
            "--min-gap-secs",
            "2",
            "--max-gap-secs",
            "3",
            "--stop-secs",
            "1",
            "--json",
        ])
        .arg("--dir")
        .arg(&dir)
        .output()
        .expect("run strata chaos");
    assert!(
        out.status.success(),
        "{}",
        explain("strata chaos", &out, &dir)
    );
    let verdict: Value = serde_json::from_slice(&out.stdout).expect("a JSON verdict");
    assert_eq!(verdict["lost"], 0, "{verdict:#}");
    assert_eq!(verdict["seed"], 3);
    let faults = verdict["faults"].as_array().expect("faults");
    assert!(faults.len() >= 3, "{verdict:#}");
    assert!(
        faults
            .iter()
            .all(|f| f["role"].as_str().is_some_and(|r| r.starts_with("api-"))),
        "only API servers were hit: {verdict:#}"
    );
    let writes = &verdict["writes"];
    assert!(
        writes["sent"].as_u64().is_some_and(|n| n >= 100),
        "open loop: about 10 writes a second for 12 s: {verdict:#}"
    );
    assert_eq!(
        writes["sent"].as_u64(),
        writes["ok"]
            .as_u64()
            .zip(writes["failed"].as_u64())
            .map(|(a, b)| a + b),
        "every write is accounted for"
    );
    assert_eq!(
        verdict["acknowledged"], writes["ok"],
        "every acknowledged write was read back"
    );
    assert!(
        verdict["back_to_full_health_s"].as_f64().is_some(),
        "{verdict:#}"
    );
    assert_eq!(verdict["reads"]["wrong"], 0, "{verdict:#}");
}

#[test]
fn chaos_refuses_a_directory_without_a_running_deployment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(STRATA)
        .args(["chaos", "--dir"])
        .arg(tmp.path())
        .output()
        .expect("run strata chaos");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("strata up -d"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
