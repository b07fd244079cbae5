//! `strata serve` as a user runs it: first start, graceful shutdown, bad data directories.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A running `strata serve`, killed on drop.
struct Server {
    child: Child,
    addr: String,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(data: &Path) -> Server {
        let mut child = Command::new(STRATA)
            .args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata serve");
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
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let logs: Vec<String> = err_rx.try_iter().collect();
                panic!(
                    "no readiness line within 30 s; stderr:\n{}",
                    logs.join("\n")
                );
            }
        };
        let ready: serde_json::Value = serde_json::from_str(&line).expect("readiness line is JSON");
        assert_eq!(ready["ready"], true, "{line}");
        let addr = ready["addrs"]["http"]
            .as_str()
            .expect("http addr")
            .to_string();
        Server {
            child,
            addr,
            stderr: err_rx,
        }
    }

    fn logs(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }
}

/// A minimal HTTP/1.1 exchange over a raw socket (so a test can pause mid-request).
fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn first_start_creates_the_database_and_serves_user_12_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("fresh");
    let server = Server::start(&data);
    let response = http(
        &server.addr,
        "GET /users/12 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{response}\n{}",
        server.logs()
    );
    assert!(response.ends_with(r#"{"id":12,"firstName":"John","lastName":"Smith","address":{"streetAddress":"21 2nd Street","city":"New York","state":"NY","postalCode":10021},"phoneNumbers":["212 555-1234","646555-4567"]}"#), "{response}");
    assert!(data.join("strata.db").exists());
}

#[test]
fn every_request_is_logged_as_one_json_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    http(
        &server.addr,
        "GET /users/12 HTTP/1.1\r\nHost: x\r\nX-Request-Id: trace-me-42\r\nConnection: close\r\n\r\n",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut seen = String::new();
    while std::time::Instant::now() < deadline {
        while let Ok(line) = server.stderr.recv_timeout(Duration::from_millis(100)) {
            if line.contains("trace-me-42") {
                let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
                assert_eq!(v["method"], "GET");
                assert_eq!(v["route"], "/users/{id}");
                assert_eq!(v["status"], 200);
                assert!(v["latency_ms"].is_number());
                return;
            }
            seen.push_str(&line);
            seen.push('\n');
        }
    }
    panic!("no log line for the request; stderr was:\n{seen}");
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let body = r#"{"email":"ada@example.com","password":"analytical engine","profile":{"firstName":"Ada","lastName":"Lovelace","address":{"streetAddress":"12 St James's Square","city":"London","state":"LND","postalCode":"SW1Y 4JH"}}}"#;
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Send the head and half the body, then ask the server to stop.
    let head = format!(
        "POST /accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&body.as_bytes()[..20]).expect("half body");
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(server.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused while the old request is still being served.
    assert!(
        TcpStream::connect(&server.addr).is_err(),
        "the listener closes on SIGTERM"
    );
    s.write_all(&body.as_bytes()[20..]).expect("rest of body");
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "in-flight request completed: {response}\n{}",
        server.logs()
    );
    let status = wait_with_timeout(&mut server.child, Duration::from_secs(10));
    assert_eq!(
        status,
        Some(0),
        "exit code 0 after draining; logs:\n{}",
        server.logs()
    );
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn run_fails_with(args: &[&str], data: &Path, expect_in_message: &str) {
    let out = Command::new(STRATA)
        .args(args)
        .arg("--data")
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .expect("run strata");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit 1; stderr:\n{stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains(expect_in_message),
        "expected {expect_in_message:?} in:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_corrupt_or_foreign_data_directory_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Garbage where the database should be.
    let garbage = dir.path().join("garbage");
    std::fs::create_dir_all(&garbage).expect("mkdir");
    std::fs::write(garbage.join("strata.db"), vec![0x42u8; 8192]).expect("write");
    run_fails_with(
        &["serve", "--addr", "127.0.0.1:0"],
        &garbage,
        "not a database",
    );
    // A file where the directory should be.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"hello").expect("write");
    run_fails_with(
        &["serve", "--addr", "127.0.0.1:0"],
        &file,
        "not a directory",
    );
}

#[test]
fn bad_flags_exit_2_with_usage_and_help_lists_every_command() {
    let out = Command::new(STRATA)
        .args(["serve", "--addr", "not-an-address"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--addr"));
    let out = Command::new(STRATA).arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "api", "seed", "up", "down", "status", "logs"] {
        assert!(help.contains(cmd), "--help mentions {cmd}:\n{help}");
    }
}
