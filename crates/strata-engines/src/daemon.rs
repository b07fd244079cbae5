//! Server processes this process starts, and programs it runs to the end — the handling every
//! engine shares, so that a role and a test start, wait for and stop a server the same way.
//!
//! A server's output goes to a [`Log`]: this process's stderr (a role's log: its stdout carries
//! only the readiness line) or a file (the test kit's, whose last lines go into errors).
//! [`Server::wait_until`] waits until a check passes, the child exits or a deadline passes;
//! [`Server::wait_answering`] does it with a TCP [`Probe`]. Synchronous: async callers run these
//! under `tokio::task::spawn_blocking`.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{Context as _, Error, Result, process};

/// Where a server's (or a program's) output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Log {
    /// This process's stderr: both of the child's streams (its stdout through a duplicate of
    /// our stderr, since our stdout is a role's readiness pipe).
    Stderr,
    /// Appended to this file (both streams).
    File(PathBuf),
}

impl Log {
    /// Points `cmd`'s stdout and stderr here.
    pub fn attach(&self, cmd: &mut Command) -> Result<()> {
        match self {
            Log::Stderr => {
                let err = std::io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .doing(|| "cannot duplicate stderr".into())?;
                cmd.stdout(Stdio::from(err)).stderr(Stdio::inherit());
            }
            Log::File(path) => {
                let open = || format!("cannot open the log {}", path.display());
                let log = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .doing(open)?;
                let log_err = log.try_clone().doing(open)?;
                cmd.stdout(Stdio::from(log)).stderr(Stdio::from(log_err));
            }
        }
        Ok(())
    }

    /// The last `lines` lines of a log file, joined with ` | ` (empty for stderr).
    pub fn tail(&self, lines: usize) -> String {
        match self {
            Log::Stderr => String::new(),
            Log::File(path) => tail(path, lines),
        }
    }

    /// How an error points at the output that explains it: `; {above}` when it went to our
    /// stderr (the lines above in the same log; nothing when `above` is empty), or `: ` and the
    /// file's last lines.
    pub(crate) fn hint(&self, above: &str) -> String {
        match self {
            Log::Stderr if above.is_empty() => String::new(),
            Log::Stderr => format!("; {above}"),
            Log::File(_) => format!(": {}", self.tail(8)),
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// A loopback TCP port that was free a moment ago (it can be taken before the server binds
/// it: callers that can retry do).
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// A request and the start of a healthy answer: a server is ready once it answers so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub ask: &'static [u8],
    pub expect: &'static [u8],
}

impl Probe {
    /// Whether the server at `addr` answers the probe now (200 ms to connect, 500 ms to answer).
    pub fn answers(&self, addr: SocketAddr) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 64];
        s.write_all(self.ask).is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(self.expect))
    }
}

/// Runs a program to the end with its output in `log`; an error names `what` and points at
/// its messages.
pub fn run(mut cmd: Command, what: &str, log: &Log) -> Result<()> {
    log.attach(&mut cmd)?;
    let status = cmd.status().doing(|| format!("cannot run {what}"))?;
    if status.success() {
        return Ok(());
    }
    Err(Error::failed(format!(
        "{what} failed ({status}){}",
        log.hint("its messages are above in this log")
    )))
}

/// Why a server did not become ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// It exited first.
    Exited(ExitStatus),
    /// The deadline passed.
    TimedOut,
}

/// A server process this process started. Not stopped on drop unless made so with
/// [`Server::kill_on_drop`] (a PostgreSQL role leaves a postmaster for its next instance to
/// stop cleanly; cache servers and test servers die with their owner).
#[derive(Debug)]
pub struct Server {
    child: Child,
    name: String,
    log: Log,
    /// Set once it has been reaped: no signal may go to its (maybe reused) process id then.
    exited: Option<ExitStatus>,
    kill_on_drop: bool,
}

impl Server {
    /// Starts `cmd` (stdin from /dev/null, output to `log`); `name` is how errors call it.
    pub fn spawn(mut cmd: Command, name: &str, log: &Log) -> Result<Self> {
        cmd.stdin(Stdio::null());
        log.attach(&mut cmd)?;
        let child = cmd.spawn().doing(|| format!("cannot start {name}"))?;
        Ok(Self {
            child,
            name: name.to_string(),
            log: log.clone(),
            exited: None,
            kill_on_drop: false,
        })
    }

    /// Makes dropping the server kill it (SIGKILL) and reap it.
    pub fn kill_on_drop(mut self) -> Self {
        self.kill_on_drop = true;
        self
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name errors call it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its output goes.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        self.exited = self.exited.or(status);
        Ok(status)
    }

    /// Waits until it exits.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait()?;
        self.exited = Some(status);
        Ok(status)
    }

    /// Checks `ready` every `every` until it passes, the server exits, or `within` passes.
    pub fn wait_until(
        &mut self,
        within: Duration,
        every: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), NotReady> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.try_wait() {
                return Err(NotReady::Exited(status));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut);
            }
            std::thread::sleep(every);
        }
    }

    /// Waits until the server at `addr` answers `probe`; if it exits first or does not answer
    /// within `within`, kills it and says so.
    pub fn wait_answering(self, addr: SocketAddr, probe: Probe, within: Duration) -> Result<Self> {
        self.wait_ready(addr, within, || probe.answers(addr))
    }

    /// Waits until `ready` passes (checked every 20 ms) for the server at `addr`; if it exits
    /// first or is not ready within `within`, kills it and says so.
    pub fn wait_ready(
        mut self,
        addr: SocketAddr,
        within: Duration,
        ready: impl FnMut() -> bool,
    ) -> Result<Self> {
        let outcome = self.wait_until(within, Duration::from_millis(20), ready);
        let message = match outcome {
            Ok(()) => return Ok(self),
            Err(NotReady::Exited(status)) => {
                format!(
                    "{} exited at start ({status}){}",
                    self.name,
                    self.log.hint("")
                )
            }
            Err(NotReady::TimedOut) => format!(
                "{} did not answer on {addr} within {} s{}",
                self.name,
                within.as_secs(),
                self.log.hint("")
            ),
        };
        self.kill9();
        Err(Error::failed(message))
    }

    /// Sends it a signal (ignored once it is gone).
    pub fn signal(&self, signal: Signal) {
        if self.exited.is_none() {
            process::signal(self.pid(), signal);
        }
    }

    /// `kill -9`, and reaps it.
    pub fn kill9(mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGKILL);
        self.wait().ok()
    }

    /// SIGSTOP: it stalls, its connections stay open and unanswered. Returns once every thread
    /// of it is stopped (or after a second).
    pub fn pause(&self) {
        if self.exited.is_none() {
            process::signal(self.pid(), Signal::SIGSTOP);
            process::wait_stopped(self.pid(), Duration::from_secs(1));
        }
    }

    /// SIGCONT after [`Server::pause`].
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// Stops it with grace: SIGCONT (in case it is paused) and `first`; SIGKILL if it is still
    /// there after `grace`. Reaps it.
    pub fn stop(mut self, first: Signal, grace: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGCONT);
        self.signal(first);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.kill_on_drop {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn a_failed_program_is_explained_by_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::File(dir.path().join("log"));
        run(sh("echo fine"), "fine", &log).expect("succeeds");
        let e = run(sh("echo one; echo two >&2; exit 3"), "initdb", &log).expect_err("fails");
        assert_eq!(
            e.to_string(),
            "initdb failed (exit status: 3): fine | one | two"
        );
        assert_eq!(log.tail(1), "two");
        assert_eq!(
            Log::Stderr.hint("its messages are above in this log"),
            "; its messages are above in this log"
        );
        assert_eq!(Log::Stderr.hint(""), "");
    }

    #[test]
    fn waiting_ends_when_ready_when_exited_or_at_the_deadline() {
        let short = Duration::from_millis(100);
        let every = Duration::from_millis(5);
        let mut server = Server::spawn(sh("sleep 30"), "sleep", &Log::Stderr)
            .expect("spawn")
            .kill_on_drop();
        assert_eq!(server.wait_until(short, every, || true), Ok(()));
        assert_eq!(
            server.wait_until(short, every, || false),
            Err(NotReady::TimedOut)
        );
        let status = server.kill9().expect("reaped");
        assert!(!status.success());

        let mut server = Server::spawn(sh("exit 4"), "quitter", &Log::Stderr).expect("spawn");
        match server.wait_until(Duration::from_secs(10), every, || false) {
            Err(NotReady::Exited(status)) => assert_eq!(status.code(), Some(4)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_server_that_never_answers_is_killed_and_reported() {
        let port = free_port().expect("free port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = Server::spawn(sh("sleep 30"), "sleeper", &Log::Stderr).expect("spawn");
        let pid = server.pid();
        let e = server
            .wait_answering(addr, crate::redis::PROBE, Duration::from_secs(1))
            .expect_err("nothing listens");
        assert_eq!(
            e.to_string(),
            format!("sleeper did not answer on {addr} within 1 s")
        );
        assert!(!process::is_alive(pid), "killed");
    }
}
