//! etcd as Strata runs it (`etcd` from Debian's `etcd-server`, 3.4): the argument list of one
//! member of a cluster, its readiness probe (`GET /health` answering `{"health":"true"}`, which
//! etcd 3.4 says only once the member sees a leader and a quorum read succeeds), and starting
//! it on loopback ports — for the `strata etcd` role and the test kit alike.
//!
//! A member listens for clients and for its peers on two loopback ports, keeps its data in one
//! directory (etcd creates it, mode 0700), and beats and elects at loopback speed: a heartbeat
//! every 100 ms, a new election after 1 s without one (etcd's defaults are the same; they are
//! written out so that a change of default cannot slow a failover). With these settings etcd's
//! shortest lease is 2 s (it raises shorter TTLs to 1.5 election timeouts, rounded up).

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::daemon::{Log, Server};
use crate::{Engine, Result};

/// The heartbeat interval, in milliseconds.
pub const HEARTBEAT_MS: u32 = 100;
/// How long a follower waits without a heartbeat before it calls an election, in milliseconds.
pub const ELECTION_MS: u32 = 1000;
/// The token every cluster Strata creates starts with (`--initial-cluster-token`): it keeps a
/// member from joining a cluster that merely happens to use the same peer URLs.
pub const TOKEN: &str = "strata";

/// Whether a member starts a new cluster or joins one that runs (`--initial-cluster-state`).
/// Both are ignored by a member that already has data: it rejoins the cluster it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialState {
    /// A new cluster of the members listed.
    New,
    /// A running cluster this member was added to (`member add`).
    Existing,
}

impl InitialState {
    fn flag(self) -> &'static str {
        match self {
            InitialState::New => "new",
            InitialState::Existing => "existing",
        }
    }
}

/// One member of an etcd cluster, on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name in the cluster (unique; `etcd-1`).
    pub name: String,
    /// Its data directory (`--data-dir`), created by etcd.
    pub data_dir: PathBuf,
    /// Where clients reach it: `http://127.0.0.1:client_port`.
    pub client_port: u16,
    /// Where the other members reach it: `http://127.0.0.1:peer_port`.
    pub peer_port: u16,
    /// Every member of the cluster at its start (this one included): name and peer URL.
    pub initial_cluster: Vec<(String, String)>,
    pub state: InitialState,
    /// `--initial-cluster-token`.
    pub token: String,
}

impl Member {
    /// The one member of a new cluster.
    pub fn first(name: &str, data_dir: PathBuf, client_port: u16, peer_port: u16) -> Self {
        Self {
            name: name.to_string(),
            data_dir,
            client_port,
            peer_port,
            initial_cluster: vec![(name.to_string(), url(peer_port))],
            state: InitialState::New,
            token: TOKEN.to_string(),
        }
    }

    /// `http://127.0.0.1:CLIENT_PORT`.
    pub fn client_url(&self) -> String {
        url(self.client_port)
    }

    /// `http://127.0.0.1:PEER_PORT`.
    pub fn peer_url(&self) -> String {
        url(self.peer_port)
    }

    /// `127.0.0.1:CLIENT_PORT`.
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }
}

/// `http://127.0.0.1:PORT`.
pub fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// `etcd`'s arguments for `member`.
pub fn args(member: &Member) -> Vec<OsString> {
    let cluster = member
        .initial_cluster
        .iter()
        .map(|(name, peer)| format!("{name}={peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let client = member.client_url();
    let peer = member.peer_url();
    let pairs: [(&str, OsString); 16] = [
        ("--name", member.name.clone().into()),
        ("--data-dir", member.data_dir.clone().into()),
        ("--listen-client-urls", client.clone().into()),
        ("--advertise-client-urls", client.into()),
        ("--listen-peer-urls", peer.clone().into()),
        ("--initial-advertise-peer-urls", peer.into()),
        ("--initial-cluster", cluster.into()),
        ("--initial-cluster-state", member.state.flag().into()),
        ("--initial-cluster-token", member.token.clone().into()),
        ("--heartbeat-interval", HEARTBEAT_MS.to_string().into()),
        ("--election-timeout", ELECTION_MS.to_string().into()),
        // Old revisions are dropped after an hour: the history stays bounded.
        ("--auto-compaction-mode", "periodic".into()),
        ("--auto-compaction-retention", "1h".into()),
        ("--logger", "zap".into()),
        ("--log-outputs", "stderr".into()),
        ("--log-level", "warn".into()),
    ];
    pairs
        .into_iter()
        .flat_map(|(flag, value)| [OsString::from(flag), value])
        .collect()
}

/// The installed `etcd` with [`args`]. etcd also reads `ETCD_*` variables, which would add to
/// (or clash with) these flags: the child gets none.
pub fn command(member: &Member) -> Result<Command> {
    let mut cmd = Command::new(Engine::Etcd.locate()?);
    cmd.args(args(member));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ETCD_") {
            cmd.env_remove(name);
        }
    }
    Ok(cmd)
}

/// Starts the member and waits until it is [`healthy`] ([`spawn`], then
/// [`Server::wait_ready`]). Killed when dropped, and when it exits first or is not healthy
/// within `within` (the error says which).
pub fn start(member: &Member, log: &Log, within: Duration) -> Result<Server> {
    let addr = member.client_addr();
    spawn(member, log)?.wait_ready(addr, within, || healthy(addr))
}

/// Starts the member without waiting for it; killed when dropped.
pub fn spawn(member: &Member, log: &Log) -> Result<Server> {
    Ok(Server::spawn(command(member)?, Engine::Etcd.program(), log)?.kill_on_drop())
}

/// Whether the member whose client address is `addr` answers `GET /health` with 200 and
/// `{"health":"true"}` (200 ms to connect, 2 s to answer: etcd's check makes a quorum read
/// that may take a second).
pub fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    // The answer is a few hundred bytes; more is not a health answer.
    let mut answer = Vec::new();
    if (&mut s).take(8192).read_to_end(&mut answer).is_err() {
        return false;
    }
    let answer = String::from_utf8_lossy(&answer);
    answer.starts_with("HTTP/1.1 200") && answer.contains(r#""health":"true""#)
}

/// Whether `pid` is an etcd member working on `data_dir`: its program is `etcd` and its
/// command line says `--data-dir DATA_DIR` (as [`args`] writes it) — so a pid file left by a
/// member that is gone cannot make a role stop another process.
pub fn is_member_of(pid: u32, data_dir: &Path) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() != Engine::Etcd.program() {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let dir = data_dir.as_os_str().as_encoded_bytes();
    args.windows(2)
        .any(|w| w[0] == b"--data-dir" && w[1] == dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_has_its_urls_its_cluster_and_loopback_timeouts() {
        let mut member = Member::first("etcd-2", "/d".into(), 2501, 2502);
        member
            .initial_cluster
            .insert(0, ("etcd-1".into(), url(2402)));
        member.state = InitialState::Existing;
        let joined = args(&member)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            joined,
            "--name etcd-2 --data-dir /d \
             --listen-client-urls http://127.0.0.1:2501 --advertise-client-urls http://127.0.0.1:2501 \
             --listen-peer-urls http://127.0.0.1:2502 --initial-advertise-peer-urls http://127.0.0.1:2502 \
             --initial-cluster etcd-1=http://127.0.0.1:2402,etcd-2=http://127.0.0.1:2502 \
             --initial-cluster-state existing --initial-cluster-token strata \
             --heartbeat-interval 100 --election-timeout 1000 \
             --auto-compaction-mode periodic --auto-compaction-retention 1h \
             --logger zap --log-outputs stderr --log-level warn"
        );
    }

    #[test]
    fn a_single_member_starts_on_free_ports_and_answers_until_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::File(dir.path().join("etcd.log"));
        // A free port can be taken before etcd binds it: try a few.
        let mut last = None;
        for _ in 0..3 {
            let client = crate::daemon::free_port().expect("free port");
            let peer = crate::daemon::free_port().expect("free port");
            let member = Member::first("etcd-1", dir.path().join("data"), client, peer);
            match start(&member, &log, Duration::from_secs(30)) {
                Ok(server) => {
                    assert!(healthy(member.client_addr()));
                    assert!(is_member_of(server.pid(), &member.data_dir));
                    assert!(!is_member_of(server.pid(), dir.path()));
                    assert!(!is_member_of(std::process::id(), &member.data_dir));
                    assert!(dir.path().join("data/member").is_dir(), "its data");
                    server.kill9();
                    assert!(
                        !healthy(member.client_addr()),
                        "a killed member is not healthy"
                    );
                    return;
                }
                Err(e) => last = Some(e),
            }
            let _ = std::fs::remove_dir_all(dir.path().join("data"));
        }
        panic!("etcd did not start: {last:?}");
    }
}
