//! Processes by pid: whether one is alive, its children, signals to it or its whole tree,
//! waiting until it is stopped or gone, and stopping it with grace. For processes this one
//! may not own (a postmaster left by an earlier role, a server a supervisor watches) as much
//! as for its own children; [`crate::daemon`] builds on it for the servers it starts.
//!
//! Liveness reads `/proc` too, because a zombie still answers signal 0. Signals to processes
//! that are already gone are ignored: every caller is racing the process's own exit.

use std::time::{Duration, Instant};

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

/// Whether a process is stopped (SIGSTOP, or a tracer), as `/proc` reports its main thread;
/// false when it is running or gone.
pub fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            Some(matches!(state, "T" | "t"))
        })
        .unwrap_or(false)
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

/// Every descendant of a process — children, their children, … — deepest first.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for child in children(pid) {
        out.extend(descendants(child));
        out.push(child);
    }
    out
}

/// Sends `sig` to a process and to all its descendants, deepest first (a role, its server and
/// the server's backends).
pub fn signal_all(pid: u32, sig: Signal) {
    for d in descendants(pid) {
        signal(d, sig);
    }
    signal(pid, sig);
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

/// Waits (up to `within`) until every thread of a process is stopped, as `/proc` reports it:
/// a signal is delivered asynchronously, and a multi-threaded server stops thread by thread.
/// Whether it is stopped (or gone).
pub fn wait_stopped(pid: u32, within: Duration) -> bool {
    let stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return true; // gone
        };
        tasks.filter_map(Result::ok).all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            matches!(state, Some("T") | Some("t") | None)
        })
    };
    let deadline = Instant::now() + within;
    loop {
        if stopped() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits (up to `within`) until a process is gone; whether it is.
pub fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while is_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Stops a process with grace: `first` (after a SIGCONT, so that a paused process can act on
/// it), and if it is still there after `grace`, `then`, waiting up to `after` again. Whether it
/// is gone. The caller that owns the process still reaps it.
pub fn terminate(pid: u32, first: Signal, grace: Duration, then: Signal, after: Duration) -> bool {
    signal(pid, Signal::SIGCONT);
    signal(pid, first);
    if wait_gone(pid, grace) {
        return true;
    }
    signal(pid, then);
    wait_gone(pid, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_are_found_at_every_depth() {
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .expect("spawn");
        let pid = shell.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while descendants(pid).len() < 2 {
            assert!(
                Instant::now() < deadline,
                "the shell's children did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        signal_all(pid, Signal::SIGKILL);
        let _ = shell.wait();
        assert!(!is_alive(pid));
    }

    #[test]
    fn a_stopped_process_is_seen_stopped_until_it_continues() {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let pid = sleeper.id();
        assert!(!is_stopped(pid));
        signal(pid, Signal::SIGSTOP);
        assert!(wait_stopped(pid, Duration::from_secs(5)));
        assert!(is_stopped(pid) && is_alive(pid));
        signal(pid, Signal::SIGCONT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_stopped(pid) {
            assert!(Instant::now() < deadline, "it did not continue");
            std::thread::sleep(Duration::from_millis(10));
        }
        signal(pid, Signal::SIGKILL);
        let _ = sleeper.wait();
        assert!(!is_stopped(pid), "gone is not stopped");
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(is_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!is_alive(pid));
    }

    #[test]
    fn a_stopped_process_is_seen_stopped_and_a_terminated_one_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let pid = child.id();
        assert!(
            !wait_stopped(pid, Duration::from_millis(50)),
            "a sleeping process is not stopped"
        );
        signal(pid, Signal::SIGSTOP);
        assert!(wait_stopped(pid, Duration::from_secs(5)));
        signal(pid, Signal::SIGCONT);
        // A paused process is woken first, so SIGTERM ends it within the grace period.
        signal(pid, Signal::SIGSTOP);
        assert!(terminate(
            pid,
            Signal::SIGTERM,
            Duration::from_secs(5),
            Signal::SIGKILL,
            Duration::from_secs(5)
        ));
        assert!(!child.wait().expect("wait").success());
    }
}
