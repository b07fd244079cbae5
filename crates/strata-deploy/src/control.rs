//! Looking at and stopping a deployment from outside its supervisor: process liveness, HTTP
//! health probes, and `down`.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::state::{self, DeploymentState};

/// Whether a process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 || kill(Pid::from_raw(raw), None).is_err() {
        return false;
    }
    // A zombie still answers signal 0; /proc tells it apart.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => true,
    }
}

/// The direct children of a process (from `/proc`; empty where there is none).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // pid (comm) state ppid …: the comm may hold spaces or parentheses.
                    let rest = stat.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Sends `sig` to a process and to its direct children, children first — for a PostgreSQL
/// postmaster, whose backends would otherwise outlive it for a while (or forever, if stopped).
pub fn signal_tree(pid: u32, sig: Signal) {
    for child in children(pid) {
        signal(child, sig);
    }
    signal(pid, sig);
}

/// Sends a signal, ignoring processes that are already gone.
pub fn signal(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid)
        && raw > 0
    {
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

/// `GET /healthz` over plain HTTP/1.1; true on a 200 within `timeout`.
pub async fn http_healthy(addr: &str, timeout: Duration) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
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

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(is_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!is_alive(pid));
    }

    #[tokio::test]
    async fn a_closed_port_is_unhealthy() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        drop(l);
        assert!(!http_healthy(&addr, Duration::from_millis(500)).await);
    }
}
