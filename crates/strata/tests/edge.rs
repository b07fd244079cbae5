//! `strata edge` as a user runs it: in front of a real `strata serve`, with a disk cache,
//! purged by `strata edge purge`, stopped by SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A role process, killed on drop, with its readiness line's addresses.
struct RoleProcess {
    child: Child,
    addrs: serde_json::Value,
    stderr: mpsc::Receiver<String>,
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RoleProcess {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(STRATA)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let logs: Vec<String> = err_rx.try_iter().collect();
            panic!(
                "strata {args:?}: no readiness line within 30 s; stderr:\n{}",
                logs.join("\n")
            );
        };
        let ready: serde_json::Value = serde_json::from_str(&line).expect("readiness line is JSON");
        assert_eq!(ready["ready"], true, "{line}");
        Self {
            child,
            addrs: ready["addrs"].clone(),
            stderr: err_rx,
        }
    }

    fn addr(&self, name: &str) -> String {
        self.addrs[name].as_str().expect("an address").to_string()
    }

    fn logs(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }
}

/// One HTTP/1.1 exchange over a raw socket; the whole answer.
fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn get(addr: &str, path: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: cdn.test\r\nConnection: close\r\n\r\n"),
    )
}

fn cache_status(response: &str) -> &str {
    response
        .lines()
        .find_map(|l| l.strip_prefix("cache-status: "))
        .unwrap_or("")
}

#[test]
fn the_edge_caches_the_api_revalidates_with_its_etags_and_is_purged_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let api = RoleProcess::start(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--data",
        data.to_str().expect("utf-8"),
    ]);
    let origin = api.addr("http");
    let cache = dir.path().join("edge");
    let edge = RoleProcess::start(&[
        "edge",
        "--origin",
        &origin,
        "--listen",
        "127.0.0.1:0",
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        "--memory",
        "16MiB",
    ]);
    let (http_addr, admin) = (edge.addr("http"), edge.addr("admin"));

    let first = get(&http_addr, "/users/12");
    assert!(
        first.starts_with("HTTP/1.1 200"),
        "{first}\n{}",
        edge.logs()
    );
    assert!(first.contains("\"firstName\":\"John\""), "{first}");
    assert_eq!(cache_status(&first), "strata-edge; fwd=miss; stored");
    // The API says `no-cache` with an ETag: every use is revalidated, and its 304 saves the body.
    let second = get(&http_addr, "/users/12");
    assert!(second.contains("\"firstName\":\"John\""), "{second}");
    assert_eq!(
        cache_status(&second),
        "strata-edge; fwd=stale; fwd-status=304"
    );
    // The API's errors say `no-store`: not stored.
    let missing = get(&http_addr, "/users/999999");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert_eq!(cache_status(&missing), "strata-edge; fwd=miss");

    let purge = Command::new(STRATA)
        .args([
            "edge",
            "purge",
            "--admin",
            &admin,
            "--url",
            "http://cdn.test/users/12",
        ])
        .output()
        .expect("run strata edge purge");
    let said = String::from_utf8_lossy(&purge.stdout);
    assert!(
        purge.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&purge.stderr)
    );
    assert!(said.contains("\"purged\":1"), "{said}");
    let after = get(&http_addr, "/users/12");
    assert_eq!(
        cache_status(&after),
        "strata-edge; fwd=miss; stored",
        "{after}"
    );

    let metrics = http(
        &admin,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("strata_edge_requests_total{outcome=\"revalidated\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_edge_purges_total{kind=\"url\",mode=\"hard\"} 1"),
        "{metrics}"
    );

    let usage = Command::new(STRATA)
        .args(["edge", "purge", "--admin", &admin])
        .output()
        .expect("run strata edge purge");
    assert_eq!(usage.status.code(), Some(2), "a purge names what to purge");

    let mut edge = edge;
    kill(Pid::from_raw(edge.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = edge.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edge did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}\n{}", edge.logs());
    assert!(
        cache
            .join("objects")
            .read_dir()
            .expect("the disk cache")
            .next()
            .is_some()
    );
}

#[test]
fn the_edge_refuses_a_command_line_without_an_origin() {
    let out = Command::new(STRATA)
        .args(["edge", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run strata edge");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--origin"));
}
