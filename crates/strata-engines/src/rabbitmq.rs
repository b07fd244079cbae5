//! RabbitMQ as Strata runs it (`rabbitmq-server` from the installed package): one private node
//! per directory, on loopback ports of its own, that never meets the machine's own RabbitMQ.
//!
//! A RabbitMQ node is an Erlang VM, and Erlang finds its nodes through a port mapper (`epmd`) on
//! port 4369 that every node of the machine shares, with a cookie in `$HOME/.erlang.cookie`. A
//! node of Strata's gets all of it to itself, under its directory:
//! - its own `epmd`, on a free port (`ERL_EPMD_PORT`), started here as a child before the node
//!   and stopped with it — not left behind as a daemon the way Erlang starts one by itself;
//! - its own node name (`strata-<amqp port>@localhost`), AMQP port and distribution port, all
//!   bound to 127.0.0.1 (never 5672, 25672 or 4369 unless asked for);
//! - `home/` (the cookie, mode 0400), `mnesia/` (its data: definitions, quorum queue logs),
//!   `log/`, `rabbitmq.conf`, an empty `enabled_plugins` (no management plugin) and an empty
//!   `rabbitmq-env.conf`, so nothing in `/etc/rabbitmq` applies to it.
//!
//! Debian's `/usr/sbin/rabbitmq-server` becomes the `rabbitmq` user and uses the system node's
//! directories, so the script it wraps is run instead ([`Engine::locate`]); as root the node
//! runs as root, which RabbitMQ allows. The script stays in the foreground with the VM as its
//! child (it turns SIGTERM into a clean stop), so killing a node means killing that process
//! tree, which [`Broker::kill9`] does.
//!
//! Ready means the AMQP listener answers a protocol header with `connection.start` ([`PROBE`]):
//! RabbitMQ opens its listeners last, once every queue it holds has recovered, so this is also
//! the moment clients can work — and it costs no Erlang VM, which `rabbitmq-diagnostics ping`
//! would.

use std::ffi::OsString;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::daemon::{Log, Probe, Server};
use crate::{Context as _, Engine, Error, Result, process};

/// The AMQP 0-9-1 protocol header answered by a method frame (type 1) on channel 0: the
/// broker's `connection.start`. The node is ready.
pub const PROBE: Probe = Probe {
    ask: b"AMQP\x00\x00\x09\x01",
    expect: &[1, 0, 0],
};

/// Erlang's port mapper, from the `erlang-base` package that RabbitMQ depends on.
pub const EPMD: &str = "epmd";

/// The loopback ports of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Clients (AMQP 0-9-1).
    pub amqp: u16,
    /// Erlang distribution: the CLI tools and other nodes.
    pub dist: u16,
    /// The node's own port mapper.
    pub epmd: u16,
}

impl Ports {
    /// Three loopback ports that were free a moment ago.
    pub fn free() -> std::io::Result<Self> {
        // Held together, so that the three differ.
        let listeners = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
        Ok(Self {
            amqp: port(0)?,
            dist: port(1)?,
            epmd: port(2)?,
        })
    }
}

/// One node: its directory and its ports. Everything it writes is under `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub dir: PathBuf,
    pub ports: Ports,
    /// The Erlang node name's first part when it must not change with the ports (a role's
    /// node, whose data is kept under its name); `strata-<amqp port>` when `None`.
    pub stable_name: Option<String>,
}

impl Node {
    pub fn new(dir: impl Into<PathBuf>, ports: Ports) -> Self {
        Self {
            dir: dir.into(),
            ports,
            stable_name: None,
        }
    }

    /// The same node under a name that does not depend on its ports, so that it finds its data
    /// (kept per node name) when it comes back on other ports. Each node has its own port
    /// mapper, so the name need not be unique on the machine.
    pub fn with_stable_name(mut self, name: &str) -> Self {
        self.stable_name = Some(name.to_string());
        self
    }

    /// Its Erlang node name: unique per AMQP port on the machine unless a stable name is set.
    pub fn name(&self) -> String {
        match &self.stable_name {
            Some(name) => format!("{name}@localhost"),
            None => format!("strata-{}@localhost", self.ports.amqp),
        }
    }

    /// Where clients connect: the default virtual host as `guest` (allowed from loopback only).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.ports.amqp)
    }

    /// `127.0.0.1:<amqp port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.amqp))
    }

    /// `$HOME` of the node and of its CLI tools: the Erlang cookie.
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// The node's data: definitions and quorum queue logs.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("mnesia")
    }

    /// `rabbitmq.conf`'s text.
    pub fn config(&self) -> String {
        [
            "# Written by Strata for a private node; the ports are set by the environment.",
            "log.console = true",
            "log.console.level = info",
            "log.file = false",
            "",
        ]
        .join("\n")
    }

    /// The environment `rabbitmq-server` reads (every path under [`Node::dir`]).
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let d = |p: &str| self.dir.join(p).into_os_string();
        let n = |v: u16| OsString::from(v.to_string());
        vec![
            ("HOME", self.home().into_os_string()),
            ("ERL_EPMD_PORT", n(self.ports.epmd)),
            ("RABBITMQ_NODENAME", self.name().into()),
            ("RABBITMQ_USE_LONGNAME", "false".into()),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT", n(self.ports.amqp)),
            ("RABBITMQ_DIST_PORT", n(self.ports.dist)),
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}".into(),
            ),
            ("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf")),
            ("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE", d("advanced.config")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins")),
            ("RABBITMQ_MNESIA_BASE", self.data_dir().into_os_string()),
            (
                "RABBITMQ_MNESIA_DIR",
                self.data_dir().join(self.name()).into_os_string(),
            ),
            ("RABBITMQ_LOG_BASE", d("log")),
            ("RABBITMQ_PID_FILE", d("rabbitmq.pid")),
        ]
    }

    /// Creates the directories, the configuration and the cookie (kept when they exist: a
    /// restarted node finds its own).
    pub fn prepare(&self) -> Result<()> {
        for dir in [self.home(), self.data_dir(), self.dir.join("log")] {
            std::fs::create_dir_all(&dir)
                .doing(|| format!("cannot create RabbitMQ directory {}", dir.display()))?;
        }
        let write = |name: &str, text: &str| {
            let path = self.dir.join(name);
            std::fs::write(&path, text).doing(|| format!("cannot write {}", path.display()))
        };
        write("rabbitmq.conf", &self.config())?;
        write("enabled_plugins", "[].\n")?;
        write("rabbitmq-env.conf", "")?;
        let cookie = self.home().join(".erlang.cookie");
        if !cookie.exists() {
            write_cookie(&cookie)?;
        }
        Ok(())
    }
}

/// A random cookie, readable by its owner only (Erlang refuses a cookie others can read).
fn write_cookie(path: &Path) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut random = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .doing(|| "cannot read /dev/urandom for an Erlang cookie".into())?;
    let text: String = random.iter().map(|b| format!("{b:02X}")).collect();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .doing(|| format!("cannot write the Erlang cookie {}", path.display()))
}

/// The installed `rabbitmq-server` script with the node's environment, working in its
/// directory.
pub fn command(node: &Node) -> Result<Command> {
    let mut cmd = Command::new(Engine::RabbitMq.locate()?);
    cmd.envs(node.env()).current_dir(&node.dir);
    Ok(cmd)
}

/// The node's own `epmd`, in the foreground, on loopback.
pub fn epmd_command(node: &Node) -> Result<Command> {
    let epmd = crate::install::on_path(EPMD).ok_or(crate::NotInstalled {
        engine: Engine::RabbitMq,
    })?;
    let mut cmd = Command::new(epmd);
    cmd.args([
        "-address",
        "127.0.0.1",
        "-port",
        &node.ports.epmd.to_string(),
    ])
    .current_dir(&node.dir);
    Ok(cmd)
}

/// A running node and its port mapper. Dropping it kills both (and the VM's helpers).
#[derive(Debug)]
pub struct Broker {
    node: Node,
    log: Log,
    epmd: Option<Server>,
    server: Option<Server>,
}

/// Prepares `node`'s directory, starts its port mapper and the node with their output in
/// `log`, and waits until the node answers [`PROBE`]; killed if it exits first or does not
/// answer within `within` (the error says which).
pub fn start(node: Node, log: &Log, within: Duration) -> Result<Broker> {
    node.prepare()?;
    let epmd_addr = SocketAddr::from(([127, 0, 0, 1], node.ports.epmd));
    let epmd = Server::spawn(epmd_command(&node)?, EPMD, log)?
        .kill_on_drop()
        .wait_ready(epmd_addr, within, || {
            std::net::TcpStream::connect_timeout(&epmd_addr, Duration::from_millis(200)).is_ok()
        })?;
    let mut broker = Broker {
        node,
        log: log.clone(),
        epmd: Some(epmd),
        server: None,
    };
    broker.restart(within)?;
    Ok(broker)
}

impl Broker {
    /// The node it runs.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Where clients connect.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// The process id of the node's start script (the VM is its child), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Server::pid)
    }

    /// Whether the node is running (it may not be ready).
    pub fn is_running(&mut self) -> bool {
        self.server
            .as_mut()
            .is_some_and(|s| matches!(s.try_wait(), Ok(None)))
    }

    /// `kill -9` of the node: its script, the VM and the VM's helpers, at once. Its data and
    /// its port mapper stay, for [`Broker::restart`].
    pub fn kill9(&mut self) {
        if let Some(server) = self.server.take() {
            kill_tree(server);
        }
    }

    /// Starts the node again on the same directory and ports (killing it first if it runs),
    /// and waits until it answers within `within`.
    pub fn restart(&mut self, within: Duration) -> Result<()> {
        self.kill9();
        let mut server =
            Server::spawn(command(&self.node)?, Engine::RabbitMq.program(), &self.log)?;
        let addr = self.node.addr();
        let outcome = server.wait_until(within, Duration::from_millis(50), || PROBE.answers(addr));
        if let Err(why) = outcome {
            let message = match why {
                crate::daemon::NotReady::Exited(status) => format!(
                    "RabbitMQ node {} exited at start ({status}){}",
                    self.node.name(),
                    self.log.hint("")
                ),
                crate::daemon::NotReady::TimedOut => format!(
                    "RabbitMQ node {} did not answer on {addr} within {} s{}",
                    self.node.name(),
                    within.as_secs(),
                    self.log.hint("")
                ),
            };
            kill_tree(server);
            return Err(Error::failed(message));
        }
        self.server = Some(server);
        Ok(())
    }

    /// Stops the node cleanly (SIGTERM: the script stops the VM), killing what is left after
    /// `grace`; then its port mapper.
    pub fn stop(mut self, grace: Duration) {
        if let Some(server) = self.server.take() {
            let tree = process::descendants(server.pid());
            server.stop(Signal::SIGTERM, grace);
            for pid in tree {
                if process::is_alive(pid) {
                    process::signal(pid, Signal::SIGKILL);
                }
            }
        }
        if let Some(epmd) = self.epmd.take() {
            epmd.kill9();
        }
    }
}

/// Kills a node's script and every process under it, deepest first, and reaps the script.
fn kill_tree(server: Server) {
    process::signal_all(server.pid(), Signal::SIGKILL);
    server.kill9();
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if let Some(epmd) = self.epmd.take() {
            epmd.kill9();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_keeps_everything_in_its_directory_and_on_its_ports() {
        let node = Node::new(
            "/d",
            Ports {
                amqp: 41000,
                dist: 41001,
                epmd: 41002,
            },
        );
        assert_eq!(node.name(), "strata-41000@localhost");
        assert_eq!(node.url(), "amqp://guest:guest@127.0.0.1:41000/%2f");
        let env = node.env();
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("HOME").as_deref(), Some("/d/home"));
        assert_eq!(get("ERL_EPMD_PORT").as_deref(), Some("41002"));
        assert_eq!(get("RABBITMQ_DIST_PORT").as_deref(), Some("41001"));
        assert_eq!(
            get("RABBITMQ_NODE_IP_ADDRESS").as_deref(),
            Some("127.0.0.1")
        );
        for (key, value) in &env {
            let value = value.to_string_lossy();
            if value.starts_with('/') {
                assert!(
                    value.starts_with("/d/"),
                    "{key}={value} is under the node's directory"
                );
            }
        }
    }
}
