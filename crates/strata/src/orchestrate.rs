//! `strata up`, `down`, `status` and `logs`: the command-line face of `strata-deploy`.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use strata_deploy::control;
use strata_deploy::state;
use strata_deploy::supervisor::{self, POSTGRES_USER, RestartPolicy, SupervisorConfig};
use strata_deploy::topology::{DEFAULT_TOPOLOGY, Topology};
use strata_store::postgres::{NodeStatus, format_lsn, probe_node};

/// How long `up -d` waits for the whole deployment to become ready.
const DETACH_READY_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Topology file (TOML). Default: three API servers on the embedded SQLite data tier.
    #[arg(short = 'f', long = "file", env = "STRATA_TOPOLOGY")]
    pub file: Option<PathBuf>,
    /// Deployment directory: state, logs and data live here.
    #[arg(long, env = "STRATA_DIR", default_value = ".strata")]
    pub dir: PathBuf,
    /// Public entry port on 127.0.0.1 (0 picks a free port).
    #[arg(long, env = "STRATA_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Detach once every role is ready (stop it later with `strata down`).
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Internal: run as the detached supervisor.
    #[arg(long, hide = true)]
    pub supervise: bool,
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Deployment directory.
    #[arg(long, env = "STRATA_DIR", default_value = ".strata")]
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Deployment directory.
    #[arg(long, env = "STRATA_DIR", default_value = ".strata")]
    pub dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Deployment directory.
    #[arg(long, env = "STRATA_DIR", default_value = ".strata")]
    pub dir: PathBuf,
    /// Only this role (e.g. `api-2`; `supervisor` for the detached supervisor's own log).
    pub role: Option<String>,
    /// Keep printing new lines as they are written (Ctrl-C to stop).
    #[arg(short = 'f', long)]
    pub follow: bool,
}

fn load_topology(args: &UpArgs) -> anyhow::Result<Topology> {
    let (text, source) = match &args.file {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the topology file {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            DEFAULT_TOPOLOGY.to_string(),
            "the default topology".to_string(),
        ),
    };
    Topology::parse(&text, args.port).map_err(|e| anyhow::anyhow!("{source}: {e}"))
}

fn refuse_if_running(dir: &Path) -> anyhow::Result<()> {
    if let Some(state) = state::read(dir)?
        && state.running
        && state.supervisor_pid != std::process::id()
        && control::is_alive(state.supervisor_pid)
    {
        anyhow::bail!(
            "a deployment is already running in {} (supervisor pid {}): run `strata down --dir {}` first, or pass another --dir",
            dir.display(),
            state.supervisor_pid,
            dir.display()
        );
    }
    Ok(())
}

fn hint_for(error: &str, port: u16) -> String {
    if error.contains("cannot listen on") {
        format!("\nhint: is port {port} in use? Pass --port with another port (0 picks a free one)")
    } else {
        String::new()
    }
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let topology = load_topology(&args)?;
    refuse_if_running(&args.dir)?;
    std::fs::create_dir_all(state::log_dir(&args.dir)).with_context(|| {
        format!(
            "cannot create the deployment directory {}",
            args.dir.display()
        )
    })?;
    let exe = std::env::current_exe().context("cannot find the strata executable")?;
    if args.detach && !args.supervise {
        return detach(&args, &exe).await;
    }
    strata_core::telemetry::init();
    // The API servers share one key directory: make its first key before any of them starts,
    // so that they do not each make one at the same moment.
    let keys = args.dir.join(state::DATA_DIR).join("keys");
    strata_api::keys::KeyRing::open(&keys)
        .map_err(anyhow::Error::msg)
        .context("cannot prepare the token-signing keys")?;
    let config = SupervisorConfig {
        exe,
        dir: args.dir.clone(),
        public_port: args.port,
        topology,
        ready_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(10),
        policy: RestartPolicy::default(),
    };
    let port = args.port;
    let supervise = args.supervise;
    supervisor::run(config, strata_core::shutdown::requested(), |state| {
        if !supervise {
            println!("{}", supervisor::endpoints_table(state));
            println!(
                "Every role is ready. Ctrl-C stops them all. Logs: strata logs --dir {}",
                args.dir.display()
            );
        }
    })
    .await
    .map_err(|e| {
        let text = e.to_string();
        anyhow::anyhow!("{text}{}", hint_for(&text, port))
    })?;
    if !supervise {
        eprintln!("stopped every role");
    }
    Ok(())
}

/// `up -d`: start the supervisor in the background, wait until it reports every role ready.
async fn detach(args: &UpArgs, exe: &Path) -> anyhow::Result<()> {
    let log_path = state::log_dir(&args.dir).join("supervisor.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("up")
        .arg("--supervise")
        .arg("--dir")
        .arg(&args.dir)
        .arg("--port")
        .arg(args.port.to_string());
    if let Some(file) = &args.file {
        cmd.arg("--file").arg(file);
    }
    use std::os::unix::process::CommandExt as _;
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    let mut child = cmd.spawn().context("cannot start the supervisor")?;
    let pid = child.id();
    let deadline = Instant::now() + DETACH_READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = supervisor::tail(&log_path, 20).join("\n");
            anyhow::bail!(
                "the deployment did not start ({status}):\n{tail}{}",
                hint_for(&tail, args.port)
            );
        }
        if let Ok(Some(state)) = state::read(&args.dir)
            && state.supervisor_pid == pid
            && state.running
            && state.all_ready()
        {
            println!("{}", supervisor::endpoints_table(&state));
            println!(
                "Running in the background (supervisor pid {pid}). See `strata status --dir {0}`, `strata logs --dir {0}`; stop with `strata down --dir {0}`.",
                args.dir.display()
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            control::signal(pid, nix::sys::signal::Signal::SIGTERM);
            anyhow::bail!(
                "the deployment was not ready within {} s; it was stopped. See {}",
                DETACH_READY_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

use state::no_deployment;

pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    if state::read(&args.dir)?.is_none() {
        return Err(no_deployment(&args.dir));
    }
    let report = control::down(&args.dir, Duration::from_secs(15)).await?;
    if report.stopped.is_empty() && report.killed.is_empty() {
        println!("nothing was running in {}", args.dir.display());
    } else {
        if !report.stopped.is_empty() {
            println!("stopped: {}", report.stopped.join(", "));
        }
        if !report.killed.is_empty() {
            println!(
                "killed after the grace period: {}",
                report.killed.join(", ")
            );
        }
    }
    Ok(())
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let state = state::read(&args.dir)?.ok_or_else(|| no_deployment(&args.dir))?;
    let supervisor_alive = control::is_alive(state.supervisor_pid);
    let mut roles = Vec::new();
    let mut databases: std::collections::HashMap<&str, PgNode> = Default::default();
    for r in &state.roles {
        let alive = r.pid.is_some_and(control::is_alive);
        let healthy = match (alive, r.addrs.get("http"), r.addrs.get("postgres")) {
            (true, Some(addr), _) => control::http_healthy(addr, Duration::from_secs(1)).await,
            (true, None, Some(addr)) => {
                let url = format!("postgresql://{POSTGRES_USER}@{addr}/postgres");
                match probe_node(&url, Duration::from_secs(1)).await {
                    Ok(node) => {
                        databases.insert(r.name.as_str(), PgNode { node, lag: 0 });
                        true
                    }
                    Err(_) => false,
                }
            }
            _ => false,
        };
        roles.push((r, alive, healthy));
    }
    // Fenced former primaries waiting for `strata db rejoin` (rejoin = "manual").
    let postgres_dir = args.dir.join(supervisor::POSTGRES_DIR);
    let awaiting_rejoin =
        |name: &str| strata_control::cluster::awaiting_rejoin_path(&postgres_dir, name).exists();
    // Replica lag in bytes of WAL, against the primary's position.
    let primary = databases
        .values()
        .find(|d| !d.node.in_recovery)
        .map(|d| d.node.position.0);
    if let Some(primary) = primary {
        for d in databases.values_mut() {
            if d.node.in_recovery {
                d.lag = primary.saturating_sub(d.node.position.0);
            }
        }
    }
    if args.json {
        let doc = serde_json::json!({
            "topology": state.topology,
            "dir": args.dir,
            "supervisor": {"pid": state.supervisor_pid, "alive": supervisor_alive},
            "running": state.running && supervisor_alive,
            "roles": roles.iter().map(|(r, alive, healthy)| serde_json::json!({
                "name": r.name, "kind": r.kind, "pid": r.pid, "alive": alive, "healthy": healthy,
                "addrs": r.addrs, "restarts": r.restarts, "state": r.state, "lastError": r.last_error,
                "database": match databases.get(r.name.as_str()) {
                    Some(d) => Some(serde_json::json!({
                        "role": if d.node.in_recovery { "replica" } else { "primary" },
                        "lsn": format_lsn(d.node.position.0),
                        "lagBytes": d.lag,
                    })),
                    None if awaiting_rejoin(&r.name) => Some(serde_json::json!({
                        "role": "fenced",
                        "awaitingRejoin": true,
                    })),
                    None => None,
                },
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "deployment {:?} in {}: supervisor pid {} {}",
        state.topology,
        args.dir.display(),
        state.supervisor_pid,
        if supervisor_alive && state.running {
            "running"
        } else {
            "not running"
        }
    );
    let mut rows = vec![
        [
            "ROLE", "KIND", "PID", "STATE", "HEALTH", "RESTARTS", "ADDRESS",
        ]
        .map(String::from),
    ];
    for (r, alive, healthy) in &roles {
        let phase = r.state.as_str().to_string();
        rows.push([
            r.name.clone(),
            r.kind.as_str().into(),
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            phase,
            match (alive, healthy) {
                (true, true) => "healthy".into(),
                (true, false) => "unhealthy".into(),
                _ => "down".into(),
            },
            r.restarts.to_string(),
            {
                let addrs = r.addrs.values().cloned().collect::<Vec<_>>().join(" ");
                match databases.get(r.name.as_str()) {
                    Some(d) if d.node.in_recovery => format!(
                        "{addrs}  replica at {}, {} B behind",
                        format_lsn(d.node.position.0),
                        d.lag
                    ),
                    Some(d) => format!("{addrs}  primary at {}", format_lsn(d.node.position.0)),
                    None if awaiting_rejoin(&r.name) => format!(
                        "{addrs}  fenced: stopped until `strata db rejoin {}`",
                        r.name
                    ),
                    None => addrs,
                }
            },
        ]);
    }
    print!("{}", supervisor::format_rows(&rows));
    for (r, _, _) in &roles {
        if let Some(e) = &r.last_error {
            println!("{}: {e}", r.name);
        }
    }
    Ok(())
}

/// A database role's answer to `strata status`.
struct PgNode {
    node: NodeStatus,
    /// Bytes of WAL behind the primary (0 for the primary).
    lag: u64,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let dir = state::log_dir(&args.dir);
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .map_err(|_| no_deployment(&args.dir))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let path = e.path();
            let role = path
                .file_name()?
                .to_str()?
                .strip_suffix(".log")?
                .to_string();
            Some((role, path))
        })
        .collect();
    files.sort();
    if let Some(role) = &args.role {
        let known: Vec<String> = files.iter().map(|(r, _)| r.clone()).collect();
        files.retain(|(r, _)| r == role);
        if files.is_empty() {
            anyhow::bail!(
                "no role {role:?} in {} (known: {})",
                args.dir.display(),
                known.join(", ")
            );
        }
    }
    let width = files.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
    let mut offsets = vec![0u64; files.len()];
    let mut pending = vec![String::new(); files.len()];
    let started = Instant::now();
    loop {
        for (i, (role, path)) in files.iter().enumerate() {
            let Ok(mut f) = std::fs::File::open(path) else {
                continue;
            };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offsets[i] {
                offsets[i] = 0; // truncated
            }
            if len == offsets[i] {
                continue;
            }
            f.seek(SeekFrom::Start(offsets[i]))?;
            let mut chunk = Vec::new();
            f.take(len - offsets[i]).read_to_end(&mut chunk)?;
            offsets[i] = len;
            pending[i].push_str(&String::from_utf8_lossy(&chunk));
            while let Some(pos) = pending[i].find('\n') {
                let line: String = pending[i].drain(..=pos).collect();
                println!("{role:<width$} | {}", line.trim_end_matches('\n'));
            }
        }
        if !args.follow {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        // Bounded: following stops by itself after a day.
        if started.elapsed() > Duration::from_secs(86_400) {
            return Ok(());
        }
    }
}
