//! The metrics conventions, checked on every role of a running topology (the targets
//! `strata status --prometheus-targets` gives a Prometheus): after traffic that a careless
//! exporter would turn into unbounded labels (random paths, random user ids, bad methods, a
//! photo, sign-ups and logins), every role's `/metrics` is scraped and
//! - every family is named `strata_…` in Prometheus's alphabet, with a `# TYPE`;
//! - counters end in `_total`; histograms are in base units (`_seconds` or `_bytes`) and no
//!   name uses another unit (`_ms`, `_milliseconds`, `_kb`, `_percent`, …);
//! - no label value carries what a client sent (the random marker appears nowhere) and no
//!   family has more than a bounded number of series;
//! - each tier exports the rate, errors and duration of its work and a saturation gauge, and
//!   the business metrics (sign-ups, logins, photos processed) are there.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Cleanup, admin_client, strata, up_topology};
use serde_json::Value;
use strata_photos::testdata;
use strata_photos::upload::Format;

const TOPOLOGY: &str = "name = \"measured\"\n[edge]\ncount = 1\n[lb]\n[api]\ncount = 2\n\
    [workers]\ncount = 1\n";

/// Series a family may have at most (label sets, without a histogram's `le`).
const MAX_SERIES: usize = 150;

/// One family of an exposition: its type and its series (labels without `le`).
#[derive(Debug, Default)]
struct Family {
    kind: String,
    series: BTreeSet<String>,
}

fn legal_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the text format into families; panics on a line that is not in it.
fn families(role: &str, text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            out.entry(name.to_owned()).or_default().kind = kind.to_owned();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("{role}: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{role}: a sample's value: {line}"
        );
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let base = name.strip_suffix(s)?;
                out.get(base)
                    .is_some_and(|f| f.kind == "histogram" || f.kind == "summary")
                    .then_some(base)
            })
            .unwrap_or(name);
        let kept: Vec<&str> = labels
            .split(',')
            .filter(|l| !l.is_empty() && !l.starts_with("le=") && !l.starts_with("quantile="))
            .collect();
        for label in &kept {
            let (k, _) = label.split_once('=').expect("label=value");
            assert!(
                legal_name(k) && !k.starts_with("__"),
                "{role}: label {k:?} in {line}"
            );
        }
        let entry = out
            .get_mut(family)
            .unwrap_or_else(|| panic!("{role}: {family} has samples but no # TYPE line"));
        entry.series.insert(kept.join(","));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_follows_the_metrics_conventions_after_hostile_traffic() {
    let (_tmp, dir) = tokio::task::spawn_blocking(|| up_topology(TOPOLOGY))
        .await
        .expect("join");
    let _cleanup = Cleanup(&dir);
    let status = common::status_json(&dir);
    let edge = common::role(&status, "edge-1")["addrs"]["http"]
        .as_str()
        .expect("edge-1")
        .to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let admin = admin_client(&dir, &edge).await;

    // Traffic: what a client controls must not become a label.
    let marker = format!("zz{:016x}", rand::random::<u64>());
    for i in 0..40u64 {
        let id = rand::random::<u64>() >> 2;
        let _ = http.get(format!("http://{edge}/users/{id}")).send().await;
        let _ = http
            .get(format!("http://{edge}/{marker}/{i}?q={marker}"))
            .header("x-request-id", format!("{marker}-{i}"))
            .send()
            .await;
        let _ = http
            .delete(format!("http://{edge}/users/{marker}"))
            .send()
            .await;
        let _ = http
            .request(
                reqwest::Method::from_bytes(b"PROPFIND").expect("method"),
                format!("http://{edge}/users/12"),
            )
            .send()
            .await;
    }
    let r = admin
        .put(format!("http://{edge}/users/12/photo"))
        .header("content-type", "image/png")
        .body(testdata::image(Format::Png, 200, 150))
        .send()
        .await
        .expect("PUT photo");
    assert_eq!(r.status().as_u16(), 202);
    let job = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::job_doc(&admin, &edge, &job).await["state"] != "done" {
        assert!(Instant::now() < deadline, "the photo job never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every role a Prometheus would scrape.
    let out = strata(&["status", "--prometheus-targets"], &dir);
    assert!(out.status.success());
    let targets: Value = serde_json::from_slice(&out.stdout).expect("targets JSON");
    let mut by_kind: BTreeMap<String, BTreeMap<String, Family>> = BTreeMap::new();
    for group in targets.as_array().expect("a list") {
        let kind = group["labels"]["kind"].as_str().expect("kind").to_owned();
        let role = group["labels"]["role"].as_str().expect("role").to_owned();
        let addr = group["targets"][0].as_str().expect("address");
        let text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        assert!(
            !text.contains(&marker),
            "{role} exports something a client sent:\n{}",
            text.lines()
                .filter(|l| l.contains(&marker))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let fams = families(&role, &text);
        for (name, f) in &fams {
            assert!(legal_name(name), "{role}: {name}");
            assert!(
                name.starts_with("strata_"),
                "{role}: {name} is not strata_…"
            );
            assert!(
                ["counter", "gauge", "histogram"].contains(&f.kind.as_str()),
                "{role}: {name} is a {}",
                f.kind
            );
            if f.kind == "counter" {
                assert!(name.ends_with("_total"), "{role}: counter {name}");
            }
            if f.kind == "histogram" {
                assert!(
                    name.ends_with("_seconds") || name.ends_with("_bytes"),
                    "{role}: histogram {name} is not in a base unit"
                );
            }
            for unit in [
                "_ms",
                "_milliseconds",
                "_us",
                "_microseconds",
                "_kb",
                "_mb",
                "_percent",
            ] {
                assert!(
                    !name.contains(&format!("{unit}_")) && !name.ends_with(unit),
                    "{role}: {name} uses {unit}"
                );
            }
            assert!(
                f.series.len() <= MAX_SERIES,
                "{role}: {name} has {} series",
                f.series.len()
            );
        }
        by_kind.entry(kind).or_default().extend(fams);
    }
    let has = |kind: &str, name: &str| {
        assert!(
            by_kind.get(kind).is_some_and(|f| f.contains_key(name)),
            "no {kind} role exports {name}; they export {:?}",
            by_kind.get(kind).map(|f| f.keys().collect::<Vec<_>>())
        );
    };
    // Rate and errors, duration, saturation, per tier.
    for (kind, names) in [
        (
            "api",
            &[
                "strata_http_requests_total",
                "strata_http_errors_total",
                "strata_http_request_duration_seconds",
                "strata_http_requests_in_flight",
            ][..],
        ),
        (
            "lb",
            &[
                "strata_lb_requests_total",
                "strata_lb_request_duration_seconds",
                "strata_lb_open_connections",
            ][..],
        ),
        (
            "edge",
            &[
                "strata_edge_requests_total",
                "strata_edge_request_duration_seconds",
                "strata_edge_stored_bytes",
            ][..],
        ),
        (
            "worker",
            &[
                "strata_queue_jobs_total",
                "strata_queue_job_duration_seconds",
                "strata_queue_messages",
            ][..],
        ),
    ] {
        for name in names {
            has(kind, name);
        }
    }
    // Business metrics.
    has("api", "strata_auth_accounts_created_total");
    has("api", "strata_auth_logins_total");
    let jobs = &by_kind["worker"]["strata_queue_jobs_total"];
    assert!(
        jobs.series.iter().any(|s| s.contains("outcome=\"done\"")),
        "{jobs:?}"
    );
}
