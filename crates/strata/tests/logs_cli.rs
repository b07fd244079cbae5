//! `strata logs` as an operator runs it on a deployment directory: the roles' JSON lines and
//! the engines' text merged in time order, each filter (`--since`, `--level`, `--grep`,
//! `--trace`, `--request`), `--json`, `--follow`, and mistakes answered with a sentence and a
//! non-zero status.
//!
//! The deployment is a directory with `logs/<role>.log` files written here, which is all
//! `strata logs` reads: the lines are shaped as the roles' tracing-subscriber JSON and the
//! engines' own formats (the shape of a role's line is checked against tracing-subscriber
//! itself in strata-deploy's unit tests).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_deploy::logs::Timestamp;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const OTHER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn json(time: &str, level: &str, message: &str, extra: &str) -> String {
    format!(
        r#"{{"timestamp":"{time}","level":"{level}","message":"{message}","target":"strata_api"{extra}}}"#
    )
}

/// Two API servers' logs with interleaved times, a PostgreSQL log and a Redis log (whose
/// lines state no time Strata reads).
fn deployment() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let span = format!(r#","spans":[{{"name":"request","trace_id":"{TRACE}"}}]"#);
    let api_1 = [
        json("2026-11-30T03:50:01.000000Z", "INFO", "listening", ""),
        json(
            "2026-11-30T03:50:03.000000Z",
            "INFO",
            "GET /users/1",
            &format!(r#","request_id":"req-a"{span}"#),
        ),
        "thread 'tokio-runtime-worker' panicked at src/x.rs:1:1".to_string(),
        json(
            "2026-11-30T03:50:05.000000Z",
            "ERROR",
            "store failed",
            &format!(r#","trace_id":"{TRACE}""#),
        ),
    ];
    let api_2 = [
        json("2026-11-30T03:50:02.000000Z", "DEBUG", "cache miss", ""),
        json(
            "2026-11-30T03:50:04.000000Z",
            "WARN",
            "slow request",
            &format!(r#","request_id":"req-b","trace_id":"{OTHER_TRACE}""#),
        ),
        json("2026-11-30T03:50:06.000000Z", "INFO", "GET /users/2", &span),
    ];
    let postgres = [
        "2026-11-30 03:50:00.500 UTC [42] LOG:  database system is ready to accept connections",
        "2026-11-30 03:50:04.500 UTC [43] ERROR:  duplicate key value violates unique constraint",
        "2026-11-30 03:50:04.500 UTC [43] DETAIL:  Key (email)=(a@example.com) already exists.",
    ];
    let redis = ["4242:M 30 Nov 2026 03:50:00.100 * Ready to accept connections tcp"];
    let write = |role: &str, lines: &[String]| {
        std::fs::write(logs.join(format!("{role}.log")), lines.join("\n") + "\n")
            .expect("write log")
    };
    write("api-1", &api_1);
    write("api-2", &api_2);
    write("postgres-1", &postgres.map(String::from));
    write("redis-1", &redis.map(String::from));
    dir
}

fn logs(dir: &Path, args: &[&str]) -> Output {
    Command::new(STRATA)
        .arg("logs")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run strata logs")
}

fn explain(args: &[&str], out: &Output) -> String {
    format!(
        "strata logs {args:?}: status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The printed lines as (role, a short name for the line), checking the `role | ` prefix is
/// padded to one width.
fn lines(dir: &Path, args: &[&str]) -> Vec<(String, String)> {
    let out = logs(dir, args);
    assert!(out.status.success(), "{}", explain(args, &out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut widths = std::collections::BTreeSet::new();
    let lines = stdout
        .lines()
        .map(|l| {
            let (role, text) = l
                .split_once(" | ")
                .unwrap_or_else(|| panic!("no prefix: {l}"));
            widths.insert(role.len());
            (role.trim_end().to_string(), short(text))
        })
        .collect();
    assert!(widths.len() <= 1, "prefixes of several widths:\n{stdout}");
    lines
}

/// A JSON line's message, or the first three words of a text line.
fn short(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => v["message"].as_str().unwrap_or("?").to_string(),
        Err(_) => text.split(' ').take(3).collect::<Vec<_>>().join(" "),
    }
}

fn expect(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(r, t)| (r.to_string(), t.to_string()))
        .collect()
}

#[test]
fn every_roles_lines_come_merged_in_time_order_with_continuations_in_place() {
    let dir = deployment();
    assert_eq!(
        lines(dir.path(), &[]),
        expect(&[
            ("redis-1", "4242:M 30 Nov"),
            ("postgres-1", "2026-11-30 03:50:00.500 UTC"),
            ("api-1", "listening"),
            ("api-2", "cache miss"),
            ("api-1", "GET /users/1"),
            ("api-1", "thread 'tokio-runtime-worker' panicked"),
            ("api-2", "slow request"),
            ("postgres-1", "2026-11-30 03:50:04.500 UTC"),
            ("postgres-1", "2026-11-30 03:50:04.500 UTC"),
            ("api-1", "store failed"),
            ("api-2", "GET /users/2"),
        ])
    );
}

#[test]
fn since_keeps_lines_at_or_after_the_time_and_drops_lines_of_unknown_time() {
    let dir = deployment();
    assert_eq!(
        lines(dir.path(), &["--since", "2026-11-30T03:50:04Z"]),
        expect(&[
            ("api-2", "slow request"),
            ("postgres-1", "2026-11-30 03:50:04.500 UTC"),
            ("postgres-1", "2026-11-30 03:50:04.500 UTC"),
            ("api-1", "store failed"),
            ("api-2", "GET /users/2"),
        ])
    );

    // A duration counts back from now.
    let now = Timestamp::now();
    let ago = |secs: u64| now.minus(Duration::from_secs(secs)).to_string();
    let recent = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(recent.path().join("logs")).expect("logs dir");
    let text = [
        json(&ago(2 * 3600), "INFO", "two hours ago", ""),
        json(&ago(30 * 60), "INFO", "half an hour ago", ""),
        json(&ago(60), "INFO", "a minute ago", ""),
    ]
    .join("\n");
    std::fs::write(recent.path().join("logs/worker-1.log"), text + "\n").expect("write");
    let messages = |since: &str| -> Vec<String> {
        let out = logs(recent.path(), &["--since", since]);
        assert!(
            out.status.success(),
            "{}",
            explain(&["--since", since], &out)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(" | ").map(|(_, t)| short(t)))
            .collect()
    };
    assert_eq!(messages("10m"), ["a minute ago"]);
    assert_eq!(messages("1h"), ["half an hour ago", "a minute ago"]);
    assert_eq!(messages("1d").len(), 3);
}

#[test]
fn level_is_a_minimum_in_any_case_and_continuation_lines_keep_their_lines_level() {
    let dir = deployment();
    assert_eq!(
        lines(dir.path(), &["--level", "warn"]),
        expect(&[
            ("api-2", "slow request"),
            ("postgres-1", "2026-11-30 03:50:04.500 UTC"),
            ("postgres-1", "2026-11-30 03:50:04.500 UTC"),
            ("api-1", "store failed"),
        ])
    );
    assert_eq!(
        lines(dir.path(), &["api-1", "--level", "ERROR"]),
        expect(&[("api-1", "store failed")])
    );
    // The panic's line carries the INFO of the request line before it.
    assert!(lines(dir.path(), &["--level", "info"]).contains(&(
        "api-1".to_string(),
        "thread 'tokio-runtime-worker' panicked".to_string()
    )));
}

#[test]
fn grep_trace_and_request_select_the_lines_they_name() {
    let dir = deployment();
    assert_eq!(
        lines(dir.path(), &["--grep", "slow|duplicate key"]),
        expect(&[
            ("api-2", "slow request"),
            ("postgres-1", "2026-11-30 03:50:04.500 UTC"),
        ])
    );
    // The trace id at the top level or in a span, in either API server; the slow request
    // carries another trace, and the panic's text line carries none.
    assert_eq!(
        lines(dir.path(), &["--trace", TRACE]),
        expect(&[
            ("api-1", "GET /users/1"),
            ("api-1", "store failed"),
            ("api-2", "GET /users/2"),
        ])
    );
    assert_eq!(
        lines(dir.path(), &["--request", "req-b"]),
        expect(&[("api-2", "slow request")])
    );
    // Filters combine.
    assert_eq!(
        lines(
            dir.path(),
            &["--trace", TRACE, "--level", "error", "--grep", "store"]
        ),
        expect(&[("api-1", "store failed")])
    );
    assert!(
        lines(
            dir.path(),
            &["--trace", TRACE, "--since", "2026-11-30T03:50:07Z"]
        )
        .is_empty()
    );
}

#[test]
fn json_output_is_one_object_a_line_with_the_role() {
    let dir = deployment();
    let args = ["--json", "--since", "2026-11-30T03:50:04.5Z"];
    let out = logs(dir.path(), &args);
    assert!(out.status.success(), "{}", explain(&args, &out));
    let objects: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let roles: Vec<&str> = objects.iter().filter_map(|o| o["role"].as_str()).collect();
    assert_eq!(roles, ["postgres-1", "postgres-1", "api-1", "api-2"]);
    assert!(
        objects[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("2026-11-30 03:50:04.500 UTC [43] ERROR:"))
    );
    assert_eq!(objects[2]["message"], "store failed");
    assert_eq!(objects[2]["level"], "ERROR");
    assert_eq!(objects[2]["trace_id"], TRACE);
    assert_eq!(objects[3]["spans"][0]["trace_id"], TRACE);
}

#[test]
fn mistakes_are_refused_with_what_was_wrong_and_a_non_zero_status() {
    let dir = deployment();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--level", "loud"],
            "use one of trace, debug, info, warn, error",
        ),
        (&["--grep", "request("], "unclosed group"),
        (&["--trace", "4BF92F3577B34DA6"], "32 lower-case hex digits"),
        (&["--trace", TRACE.to_uppercase().leak()], "lower case"),
        (&["--request", "has space"], "printable ASCII"),
        (&["--since", "yesterday"], "`10m`"),
        (&["--since", "2026-11-30T03:50:00"], "with its offset"),
        (&["nope"], "no role \"nope\""),
        (&["nope"], "api-1, api-2, postgres-1, redis-1"),
    ];
    for (args, says) in cases {
        let out = logs(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says) && out.stdout.is_empty(),
            "expected a refusal saying {says:?}; {}",
            explain(args, &out)
        );
    }
    let none = tempfile::tempdir().expect("tempdir");
    let out = logs(none.path(), &[]);
    assert!(
        out.status.code() == Some(1)
            && String::from_utf8_lossy(&out.stderr).contains("no deployment in"),
        "{}",
        explain(&[], &out)
    );
    // A bad value is a command-line mistake (exit 2), like any other.
    assert_eq!(
        logs(dir.path(), &["--level", "loud"]).status.code(),
        Some(2)
    );
}

/// Kills the followed `strata logs` when the test ends, passed or not.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn follow_prints_the_merged_past_then_new_lines_that_pass_the_filters() {
    let dir = deployment();
    let mut child = Command::new(STRATA)
        .arg("logs")
        .arg("--dir")
        .arg(dir.path())
        .args(["--follow", "--level", "error"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start strata logs --follow");
    let stdout = child.stdout.take().expect("piped stdout");
    let _kill = Kill(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = |what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left)
            .map(|l| short(l.split_once(" | ").map_or(l.as_str(), |(_, t)| t)))
            .unwrap_or_else(|e| panic!("no line ({what}) within 20 s: {e}"))
    };
    assert_eq!(next("past 1"), "2026-11-30 03:50:04.500 UTC");
    assert_eq!(next("past 2"), "2026-11-30 03:50:04.500 UTC");
    assert_eq!(next("past 3"), "store failed");

    let mut api_2 = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("logs/api-2.log"))
        .expect("open api-2.log");
    let info = json("2026-11-30T03:51:00.000000Z", "INFO", "fine", "");
    let error = json("2026-11-30T03:51:01.000000Z", "ERROR", "upstream down", "");
    writeln!(api_2, "{info}\n{error}").expect("append");
    assert_eq!(next("new error"), "upstream down");
    // A line arriving in two writes is printed once, whole.
    let (head, tail) = error.split_at(30);
    write!(api_2, "{}", head.replace("03:51:01", "03:51:02")).expect("append");
    api_2.flush().expect("flush");
    writeln!(api_2, "{}", tail.replace("upstream down", "still down")).expect("append");
    assert_eq!(next("the line written in two parts"), "still down");
}
