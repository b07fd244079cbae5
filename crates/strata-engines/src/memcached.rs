//! Memcached as Strata runs it (`memcached` from the installed package): the argument list for
//! each way it runs — a shared cache, the test kit's plain server — with `-u nobody` when
//! running as root (Memcached refuses root without a user to become), its readiness probe, and
//! starting it on a loopback port. Memcached keeps nothing on disk and evicts least recently
//! used items past its memory bound, in every mode.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::daemon::{Log, Probe, Server};
use crate::{Engine, Result};

/// `version` answered `VERSION …`: the server is ready.
pub const PROBE: Probe = Probe {
    ask: b"version\r\n",
    expect: b"VERSION",
};

/// The user Memcached becomes when started as root.
pub const ROOT_RUNS_AS: &str = "nobody";

/// The ways Strata runs Memcached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A shared cache (`strata cache --engine memcached`): `max_mib` of memory, up to 4096
    /// connections (the API servers' pools).
    Cache { max_mib: u64 },
    /// 64 MiB and the default connection limit: the test kit's servers.
    Plain,
}

/// `memcached`'s arguments: TCP only on loopback `port`, the mode's bounds, and
/// `-u nobody` when `as_root`.
pub fn args(port: u16, mode: Mode, as_root: bool) -> Vec<OsString> {
    let mut args: Vec<String> = ["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"]
        .map(String::from)
        .to_vec();
    match mode {
        Mode::Cache { max_mib } => {
            args.extend(["-m".into(), max_mib.to_string(), "-c".into(), "4096".into()]);
        }
        Mode::Plain => args.extend(["-m".into(), "64".into()]),
    }
    if as_root {
        args.extend(["-u".into(), ROOT_RUNS_AS.into()]);
    }
    args.into_iter().map(OsString::from).collect()
}

/// The installed `memcached` with [`args`] (for this process's user), working in `dir`.
pub fn command(port: u16, dir: &Path, mode: Mode) -> Result<Command> {
    let as_root = nix::unistd::Uid::effective().is_root();
    let mut cmd = Command::new(Engine::Memcached.locate()?);
    cmd.args(args(port, mode, as_root)).current_dir(dir);
    Ok(cmd)
}

/// Starts Memcached on loopback `port`, working in `dir` (which must exist), its output in
/// `log`, and waits until it answers [`PROBE`] ([`spawn`], then [`Server::wait_answering`]).
/// The server is killed when dropped, and when it exits first or does not answer within
/// `within` (the error says which).
pub fn start(port: u16, dir: &Path, mode: Mode, log: &Log, within: Duration) -> Result<Server> {
    spawn(port, dir, mode, log)?.wait_answering(addr(port), PROBE, within)
}

/// Starts Memcached without waiting for it; killed when dropped.
pub fn spawn(port: u16, dir: &Path, mode: Mode, log: &Log) -> Result<Server> {
    Ok(Server::spawn(command(port, dir, mode)?, Engine::Memcached.program(), log)?.kill_on_drop())
}

/// `127.0.0.1:port`, where it answers.
pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(mode: Mode, as_root: bool) -> String {
        args(11300, mode, as_root)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn each_mode_has_its_arguments_and_root_becomes_nobody() {
        assert_eq!(
            joined(Mode::Cache { max_mib: 256 }, false),
            "-l 127.0.0.1 -p 11300 -U 0 -m 256 -c 4096"
        );
        assert_eq!(
            joined(Mode::Plain, true),
            "-l 127.0.0.1 -p 11300 -U 0 -m 64 -u nobody"
        );
    }
}
