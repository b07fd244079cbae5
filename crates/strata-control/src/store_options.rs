//! Which store holds the cluster state, as the options of the processes that read or publish
//! it (`strata control` and `strata postgres`): `--state-store file|etcd`, `--etcd ENDPOINT`
//! (repeated), `--etcd-prefix`. With none of them, the state is where it always was: the file
//! in the deployment's PostgreSQL directory.
//!
//! [`StoreKind`] is defined here once; a topology's `[control] store` names the same choice.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::etcd::client::{EtcdClient, EtcdError, parse_endpoint};
use crate::etcd::store::EtcdStore;
use crate::store::{FileStore, StateStore};

/// The prefix of the control plane's keys in etcd, unless told otherwise.
pub const DEFAULT_PREFIX: &str = "/strata";

/// The deadline of one request to one etcd member.
pub const ETCD_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the cluster state lives: `--state-store` and a topology's `[control] store`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// A file in the deployment's PostgreSQL directory: one machine, one controller.
    #[default]
    File,
    /// etcd: controllers on several machines, one of which leads.
    Etcd,
}

/// The store options of a process that reads or publishes the cluster state.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct StoreOptions {
    /// Where the cluster state lives: `file` (in the PostgreSQL directory; one controller) or
    /// `etcd` (controllers on several machines, one of which leads).
    #[arg(long, value_enum, default_value = "file")]
    pub state_store: StoreKind,
    /// An etcd member's client endpoint, `http://127.0.0.1:PORT` (repeat for each member), with
    /// `--state-store etcd`.
    #[arg(long = "etcd", value_name = "ENDPOINT", value_parser = parse_endpoint)]
    pub etcd: Vec<String>,
    /// The prefix of the control plane's keys in etcd (`PREFIX/state`, `PREFIX/leader`).
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub etcd_prefix: String,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self::file()
    }
}

/// Why the store could not be opened: options that do not go together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("--state-store etcd needs at least one --etcd ENDPOINT")]
    NoEndpoint,
    #[error("--etcd is for --state-store etcd: with the file store it would go unused")]
    EndpointsUnused,
    #[error("--etcd-prefix must start with `/` and hold more than it: got `{0}`")]
    Prefix(String),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

impl StoreOptions {
    /// The state in the file, as without any option.
    pub fn file() -> Self {
        Self {
            state_store: StoreKind::File,
            etcd: Vec::new(),
            etcd_prefix: DEFAULT_PREFIX.to_string(),
        }
    }

    /// The state in the etcd cluster at `endpoints`, under the default prefix.
    pub fn etcd(endpoints: Vec<String>) -> Self {
        Self {
            state_store: StoreKind::Etcd,
            etcd: endpoints,
            etcd_prefix: DEFAULT_PREFIX.to_string(),
        }
    }

    /// Opens the store: the file in `postgres_dir` (`DIR/postgres`), or etcd. Nothing is asked
    /// of etcd yet: a member that is down is no error here.
    pub fn open(&self, postgres_dir: &Path) -> Result<Arc<dyn StateStore>, OpenError> {
        match self.state_store {
            StoreKind::File if !self.etcd.is_empty() => Err(OpenError::EndpointsUnused),
            StoreKind::File => Ok(Arc::new(FileStore::new(postgres_dir))),
            StoreKind::Etcd => {
                if self.etcd.is_empty() {
                    return Err(OpenError::NoEndpoint);
                }
                let prefix = self.etcd_prefix.trim_end_matches('/');
                if !prefix.starts_with('/') || prefix.len() < 2 {
                    return Err(OpenError::Prefix(self.etcd_prefix.clone()));
                }
                let client = EtcdClient::new(self.etcd.clone(), ETCD_TIMEOUT)?;
                Ok(Arc::new(EtcdStore::new(client, prefix)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreOptions,
    }

    fn parse(args: &[&str]) -> Result<StoreOptions, clap::Error> {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied())).map(|c| c.store)
    }

    #[test]
    fn without_options_the_state_is_in_the_file_as_before() {
        assert_eq!(parse(&[]).expect("parses"), StoreOptions::file());
        assert_eq!(StoreOptions::default(), StoreOptions::file());
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StoreOptions::file().open(dir.path()).expect("opens");
        assert!(
            store.describe().ends_with("cluster.json"),
            "{}",
            store.describe()
        );
    }

    #[test]
    fn etcd_needs_endpoints_and_endpoints_need_etcd() {
        let options = parse(&[
            "--state-store",
            "etcd",
            "--etcd",
            "127.0.0.1:2400",
            "--etcd",
            "http://127.0.0.1:2500/",
        ])
        .expect("parses");
        assert_eq!(
            options,
            StoreOptions::etcd(vec![
                "http://127.0.0.1:2400".into(),
                "http://127.0.0.1:2500".into()
            ])
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let store = options.open(dir.path()).expect("opens without asking etcd");
        assert_eq!(
            store.describe(),
            "etcd http://127.0.0.1:2400,http://127.0.0.1:2500 (key /strata/state)"
        );
        assert!(parse(&["--etcd", "https://127.0.0.1:1"]).is_err(), "no TLS");
        assert!(parse(&["--etcd", "127.0.0.1"]).is_err(), "a port");
        let open = |o: StoreOptions| o.open(dir.path()).err();
        assert_eq!(
            open(StoreOptions::etcd(Vec::new())),
            Some(OpenError::NoEndpoint)
        );
        let mut unused = StoreOptions::file();
        unused.etcd = vec!["http://127.0.0.1:1".into()];
        assert_eq!(open(unused), Some(OpenError::EndpointsUnused));
        let mut root = StoreOptions::etcd(vec!["http://127.0.0.1:1".into()]);
        root.etcd_prefix = "/".into();
        assert_eq!(open(root), Some(OpenError::Prefix("/".into())));
    }
}
