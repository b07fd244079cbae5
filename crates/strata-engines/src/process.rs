//! Processes: whether one is alive, its children, and signals to it or its whole tree.
//!
//! Liveness reads `/proc` too, because a zombie still answers signal 0. Signals to processes
//! that are already gone are ignored: every caller is racing the process's own exit.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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
}
