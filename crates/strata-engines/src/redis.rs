//! Redis as Strata runs it (`redis-server` from the installed package): the argument list for
//! each way it runs — a shared cache, the durable session store, the test kit's plain server —
//! its readiness probe, and starting it on a loopback port.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::daemon::{Log, Probe, Server};
use crate::{Engine, Result};

/// `PING` answered `+PONG`: the server is ready.
pub const PROBE: Probe = Probe {
    ask: b"PING\r\n",
    expect: b"+PONG",
};

/// The ways Strata runs Redis. None of them writes snapshots (`--save ""`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A cache (`strata cache --engine redis`): bounded memory, least recently used keys
    /// evicted past it, nothing on disk — a cache starts empty.
    Cache { max_mib: u64 },
    /// A store (`strata cache --engine redis --durable`, for sessions): an append-only file
    /// fsynced on every write, and no eviction — a full Redis refuses writes instead of dropping
    /// sessions.
    Durable { max_mib: u64 },
    /// Nothing on disk and no memory bound: the test kit's servers.
    Plain,
}

/// `redis-server`'s arguments: loopback `port`, files in `dir`, and the mode's settings.
pub fn args(port: u16, dir: &Path, mode: Mode) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
        .map(OsString::from)
        .to_vec();
    let settings: &[&str] = match mode {
        Mode::Cache { max_mib } | Mode::Durable { max_mib } => {
            args.extend(["--maxmemory".into(), format!("{max_mib}mb").into()]);
            if matches!(mode, Mode::Durable { .. }) {
                &[
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--maxmemory-policy",
                    "noeviction",
                ]
            } else {
                &[
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--maxmemory-policy",
                    "allkeys-lru",
                ]
            }
        }
        Mode::Plain => &["--save", "", "--appendonly", "no"],
    };
    args.extend(settings.iter().map(OsString::from));
    args.extend(["--dir".into(), dir.into()]);
    args
}

/// The installed `redis-server` with [`args`], working in `dir`.
pub fn command(port: u16, dir: &Path, mode: Mode) -> Result<Command> {
    let mut cmd = Command::new(Engine::Redis.locate()?);
    cmd.args(args(port, dir, mode)).current_dir(dir);
    Ok(cmd)
}

/// Starts Redis on loopback `port`, working in `dir` (which must exist), its output in
/// `log`, and waits until it answers [`PROBE`] ([`spawn`], then [`Server::wait_answering`]).
/// The server is killed when dropped, and when it exits first or does not answer within
/// `within` (the error says which).
pub fn start(port: u16, dir: &Path, mode: Mode, log: &Log, within: Duration) -> Result<Server> {
    spawn(port, dir, mode, log)?.wait_answering(addr(port), PROBE, within)
}

/// Starts Redis without waiting for it; killed when dropped.
pub fn spawn(port: u16, dir: &Path, mode: Mode, log: &Log) -> Result<Server> {
    Ok(Server::spawn(command(port, dir, mode)?, Engine::Redis.program(), log)?.kill_on_drop())
}

/// `127.0.0.1:port`, where it answers.
pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(mode: Mode) -> String {
        args(6390, Path::new("/d"), mode)
            .iter()
            .map(|a| {
                let a = a.to_string_lossy();
                if a.is_empty() { "''".into() } else { a }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn each_mode_has_its_arguments() {
        assert_eq!(
            joined(Mode::Cache { max_mib: 64 }),
            "--port 6390 --bind 127.0.0.1 --maxmemory 64mb --save '' --appendonly no \
             --maxmemory-policy allkeys-lru --dir /d"
        );
        assert_eq!(
            joined(Mode::Durable { max_mib: 8 }),
            "--port 6390 --bind 127.0.0.1 --maxmemory 8mb --save '' --appendonly yes \
             --appendfsync always --maxmemory-policy noeviction --dir /d"
        );
        assert_eq!(
            joined(Mode::Plain),
            "--port 6390 --bind 127.0.0.1 --save '' --appendonly no --dir /d"
        );
    }
}
