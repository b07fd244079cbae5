//! What the tier's two engine roles share — `strata prometheus` and `strata alertmanager` each
//! run an installed program that serves HTTP on loopback and cannot report the port it bound:
//! starting it on a free port (another, up to three times, when it exits at start because the
//! port was taken meanwhile), waiting until it says it is ready, announcing it, and stopping it
//! on SIGTERM, Ctrl-C or the end of standard input.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use strata_core::ready::ReadyLine;
use strata_engines::daemon::{NotReady, free_port};
use strata_engines::{Engine, Log, Server};

/// The listener both roles announce.
pub const LISTENER: &str = "http";

/// How long the program has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A `GET` on loopback over HTTP/1.0 (so the answer is never chunked): the status and the
/// body (200 ms to connect, 5 s to answer, 4 MiB at most).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    (&mut s).take(4 << 20).read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

/// Whether the program at `addr` answers `GET /-/ready` with 200 (both programs serve it).
pub fn ready(addr: SocketAddr) -> bool {
    matches!(http_get(addr, "/-/ready"), Some((200, _)))
}

/// Checks that `listen` is on loopback, runs `prepare` (its directory and files), starts
/// `title`'s program with `command(addr)` and waits until it is [`ready`]. With port 0 in
/// `listen`, a free port is picked (and another, up to three times, if the program exits at
/// start). Nothing is written for a listener off loopback. Blocking: async callers use
/// `spawn_blocking`.
pub fn start(
    title: &str,
    listen: SocketAddr,
    log: &Log,
    within: Duration,
    prepare: impl FnOnce() -> anyhow::Result<()>,
    command: impl Fn(SocketAddr) -> anyhow::Result<Command>,
) -> anyhow::Result<(Server, SocketAddr)> {
    anyhow::ensure!(
        listen.ip().is_loopback(),
        "--listen must be a loopback address: got {listen}"
    );
    prepare()?;
    let attempts = if listen.port() == 0 { 3 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let port = match listen.port() {
            0 => free_port().context("cannot find a free port")?,
            p => p,
        };
        let addr = SocketAddr::new(listen.ip(), port);
        let mut server = Server::spawn(command(addr)?, title, log)?.kill_on_drop();
        match server.wait_until(within, Duration::from_millis(50), || ready(addr)) {
            Ok(()) => return Ok((server, addr)),
            Err(NotReady::Exited(status)) => {
                last = Some(format!(
                    "{title} exited at start on {addr} ({status}){}",
                    tail(log)
                ));
            }
            Err(NotReady::TimedOut) => anyhow::bail!(
                "{title} was not ready on {addr} within {} s{}",
                within.as_secs(),
                tail(log)
            ),
        }
    }
    Err(anyhow::anyhow!(
        last.unwrap_or_else(|| format!("{title} did not start"))
    ))
}

fn tail(log: &Log) -> String {
    match log {
        Log::Stderr => "; its messages are above".into(),
        Log::File(_) => format!(": {}", log.tail(8)),
    }
}

/// Runs a role of `engine`: `start` (blocking) brings the program up, the role announces its
/// address as `name`, and runs until told to stop (then stops the program) or until the
/// program dies (an error, so the supervisor restarts the role).
pub async fn run_role(
    engine: Engine,
    name: String,
    exit_on_stdin_eof: bool,
    start: impl FnOnce() -> anyhow::Result<(Server, SocketAddr)> + Send + 'static,
) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    if let Err(missing) = engine.locate() {
        anyhow::bail!("{missing}");
    }
    let title = engine.title();
    let (mut server, addr) = tokio::task::spawn_blocking(start)
        .await
        .context("the start task failed")??;
    // Listening for the stop signal before announcing (a SIGTERM right after the
    // readiness line stops the role cleanly).
    let running = || matches!(server.try_wait(), Ok(None));
    let stop = strata_core::shutdown::signal_or_exit(exit_on_stdin_eof, running);
    ReadyLine::new(&name)
        .with_addr(LISTENER, addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role = %name, %addr, "{title} is ready");
    if !stop.await {
        anyhow::bail!("{title} exited");
    }
    tokio::task::spawn_blocking(move || server.stop(nix::sys::signal::Signal::SIGTERM, STOP_GRACE))
        .await
        .context("the stop task failed")?;
    tracing::info!(role = %name, "{title} stopped");
    Ok(())
}
