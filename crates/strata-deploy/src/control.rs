//! Looking at and stopping a deployment from outside its supervisor: HTTP health probes, and
//! `strata down`. (Process liveness and signals are `strata_engines::process`.)

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use strata_engines::process::{is_alive, signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::state::{self, DeploymentState};

/// `GET /healthz` over plain HTTP/1.1; true on a 200 within `timeout`.
pub async fn http_healthy(addr: &str, timeout: Duration) -> bool {
    http_ok(addr, "/healthz", timeout).await
}

/// Whether `GET path` on `addr` answers 200 within `timeout`.
pub async fn http_ok(addr: &str, path: &str, timeout: Duration) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
}

/// `GET path` over plain HTTP/1.1 and the JSON body of a 200, within `timeout`.
pub async fn http_json(addr: &str, path: &str, timeout: Duration) -> Option<serde_json::Value> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        // Bounded: a control view is a few KiB.
        stream
            .take(1024 * 1024)
            .read_to_end(&mut response)
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}

/// Every pid of a deployment: its supervisor, then its roles.
pub fn pids(state: &DeploymentState) -> Vec<u32> {
    std::iter::once(state.supervisor_pid)
        .chain(state.roles.iter().filter_map(|r| r.pid))
        .collect()
}

/// What `down` did.
#[derive(Debug)]
pub struct DownReport {
    pub stopped: Vec<String>,
    pub killed: Vec<String>,
}

/// Stops the deployment in `dir`: SIGTERM to the supervisor (which stops its roles); if the
/// supervisor is gone or does not finish in time, the roles are signalled directly, SIGKILL last.
pub async fn down(dir: &Path, grace: Duration) -> anyhow::Result<DownReport> {
    let Some(state) = state::read(dir)? else {
        anyhow::bail!(
            "no deployment in {}: nothing to stop (start one with `strata up --dir {}`)",
            dir.display(),
            dir.display()
        );
    };
    let mut report = DownReport {
        stopped: Vec::new(),
        killed: Vec::new(),
    };
    let live: Vec<u32> = pids(&state).into_iter().filter(|p| is_alive(*p)).collect();
    if live.is_empty() {
        return Ok(report);
    }
    if is_alive(state.supervisor_pid) {
        signal(state.supervisor_pid, Signal::SIGTERM);
    } else {
        for role in &state.roles {
            if let Some(pid) = role.pid {
                signal(pid, Signal::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && live.iter().any(|p| is_alive(*p)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for role in &state.roles {
        match role.pid {
            Some(pid) if is_alive(pid) => {
                signal(pid, Signal::SIGKILL);
                report.killed.push(role.name.clone());
            }
            Some(pid) if live.contains(&pid) => report.stopped.push(role.name.clone()),
            _ => {}
        }
    }
    if is_alive(state.supervisor_pid) {
        signal(state.supervisor_pid, Signal::SIGKILL);
        report.killed.push("supervisor".into());
    } else if live.contains(&state.supervisor_pid) {
        report.stopped.push("supervisor".into());
    }
    // Give SIGKILLed processes a moment to vanish.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && live.iter().any(|p| is_alive(*p)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_unhealthy() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        drop(l);
        assert!(!http_healthy(&addr, Duration::from_millis(500)).await);
    }
}
