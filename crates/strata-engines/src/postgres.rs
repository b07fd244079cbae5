//! PostgreSQL as Strata runs it, the one place that knows how: who owns a server (the
//! `postgres` user when Strata runs as root, since PostgreSQL refuses root), a data directory
//! that owner can use, `initdb`, starting `postgres` and waiting until `pg_isready` says it
//! accepts connections, `psql`, `pg_basebackup`, `pg_rewind`, `postgresql.auto.conf`, and a
//! postmaster left running in a data directory.
//!
//! Every server Strata creates has the superuser [`SUPERUSER`] with trust authentication and
//! listens on loopback only. The `strata postgres` role decides what to run (which server to
//! follow, its settings); the test kit runs throwaway servers in temporary directories; both
//! do it through [`Postgres`].

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::daemon::{self, Log, NotReady, Server};
use crate::install::{self, Engine, NotInstalled};
use crate::{Context as _, Error, Result, process};

/// The superuser of the servers Strata runs (trust authentication, loopback only).
pub const SUPERUSER: &str = "strata";
/// The database the API servers use on the servers Strata runs.
pub const DATABASE: &str = "strata";
/// The user a server runs as when Strata runs as root.
pub const OWNER_USER: &str = "postgres";

/// The user and group a server runs as, when not as this process's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Who runs a server: the `postgres` user when we are root (`Some`), else ourselves (`None`).
/// Root without a `postgres` user is an error that says what to do.
pub fn server_owner() -> Result<Option<Owner>> {
    owner_for(nix::unistd::Uid::effective().is_root(), || {
        nix::unistd::User::from_name(OWNER_USER)
            .ok()
            .flatten()
            .map(|u| Owner {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            })
    })
}

/// [`server_owner`], given whether we are root and how to look the `postgres` user up.
fn owner_for(root: bool, postgres_user: impl FnOnce() -> Option<Owner>) -> Result<Option<Owner>> {
    if !root {
        return Ok(None);
    }
    postgres_user().map(Some).ok_or_else(|| {
        Error::failed(
            "running as root, but PostgreSQL refuses to run as root and there is no `postgres` \
             user to run it as: install postgresql-15 (it creates one) or run strata as a normal user",
        )
    })
}

/// PostgreSQL's bin directory: `$STRATA_PG_BIN` (an error when it holds no server), else the
/// newest `/usr/lib/postgresql/<major>/bin` (Debian's layout).
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("STRATA_PG_BIN") {
        let dir = PathBuf::from(dir);
        if !dir.join("postgres").exists() {
            return Err(Error::failed(format!(
                "STRATA_PG_BIN={} has no `postgres` binary: point it at PostgreSQL's bin directory",
                dir.display()
            )));
        }
        return Ok(dir);
    }
    install::postgres_bin_dir().ok_or(Error::NotInstalled(NotInstalled {
        engine: Engine::Postgres,
    }))
}

/// Makes `dir` (created if need be) a directory the server owner can use, with mode 0700 (a
/// server refuses a data directory others can read). When the owner is another user, `dir`
/// becomes theirs, and the `ours` directories just above it
/// (the caller's own: a deployment's `DIR/postgres/<role>` has 2, a test's `ROOT/data` 1) are
/// made traversable (o+x, never readable) where they are not; a directory further up that the
/// owner cannot cross is an error that says what to do.
pub fn prepare_data_dir(dir: &Path, owner: Option<Owner>, ours: usize) -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    std::fs::create_dir_all(dir)
        .doing(|| format!("cannot create the data directory {}", dir.display()))?;
    let private = || {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .doing(|| format!("cannot set the mode of {}", dir.display()))
    };
    let Some(Owner { uid, gid }) = owner else {
        return private();
    };
    let dir = dir
        .canonicalize()
        .doing(|| format!("cannot resolve {}", dir.display()))?;
    let base = dir.ancestors().nth(ours).map(Path::to_path_buf);
    for above in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(above).doing(|| format!("cannot read {}", above.display()))?;
        if meta.uid() == uid || meta.mode() & 0o001 != 0 {
            continue;
        }
        let inside = base.as_deref().is_some_and(|b| above.starts_with(b));
        if !inside {
            return Err(Error::failed(format!(
                "PostgreSQL runs as the `postgres` user, which cannot enter {} (mode {:o}): put the \
                 deployment directory somewhere it can reach (strata up --dir /var/lib/strata), \
                 or run strata as a normal user",
                above.display(),
                meta.mode() & 0o7777
            )));
        }
        let mut perms = meta.permissions();
        perms.set_mode((meta.mode() & 0o7777) | 0o001);
        std::fs::set_permissions(above, perms)
            .doing(|| format!("cannot make {} traversable", above.display()))?;
    }
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
        .doing(|| format!("cannot give {} to the postgres user", dir.display()))?;
    private()
}

/// How `initdb` creates a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// `--data-checksums`: checksums catch corrupt pages, and let `pg_rewind` work on a server
    /// that crashed (its crash recovery runs without command-line settings). The roles' servers
    /// have them.
    pub checksums: bool,
    /// `--no-sync`: do not wait for the new files to reach the disk (the test kit's throwaway
    /// servers).
    pub no_sync: bool,
}

/// `initdb`'s arguments: superuser [`SUPERUSER`], trust authentication, UTF-8, the C locale.
pub fn initdb_args(data: &Path, options: InitOptions) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-D".into(), data.into()];
    args.extend(
        [
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        .map(OsString::from),
    );
    if options.checksums {
        args.push("--data-checksums".into());
    }
    if options.no_sync {
        args.push("--no-sync".into());
    }
    args
}

/// `postgres`'s arguments: the data directory, the port, and `-c name=value` per setting.
pub fn server_args<K: AsRef<str>, V: AsRef<str>>(
    data: &Path,
    port: u16,
    settings: &[(K, V)],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "-D".into(),
        data.into(),
        "-p".into(),
        port.to_string().into(),
    ];
    for (name, value) in settings {
        args.push("-c".into());
        args.push(format!("{}={}", name.as_ref(), value.as_ref()).into());
    }
    args
}

/// `pg_basebackup`'s arguments: a copy of the server at `host:port` into `data`, set up as its
/// standby (`-R`), with the WAL streamed alongside and a fast checkpoint; `-S slot` to use (and
/// keep WAL through) a physical replication slot.
pub fn basebackup_args(data: &Path, host: &str, port: &str, slot: Option<&str>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-D".into(), data.into()];
    args.extend(
        [
            "-h", host, "-p", port, "-U", SUPERUSER, "-R", "-X", "stream", "-c", "fast",
        ]
        .map(OsString::from),
    );
    if let Some(slot) = slot {
        args.extend(["-S", slot].map(OsString::from));
    }
    args
}

/// `pg_rewind`'s arguments: undo what `data` wrote after it diverged from the server at
/// `host:port`, and set it up as that server's standby (`-R`).
pub fn rewind_args(data: &Path, host: &str, port: &str) -> Vec<OsString> {
    vec![
        "-D".into(),
        data.into(),
        format!("--source-server=host={host} port={port} user={SUPERUSER} dbname=postgres").into(),
        "-R".into(),
    ]
}

/// `HOST:PORT` → (`HOST`, `PORT`).
fn split_addr(addr: &str) -> Result<(&str, &str)> {
    addr.rsplit_once(':')
        .ok_or_else(|| Error::failed(format!("an address is HOST:PORT, not {addr:?}")))
}

/// An installed PostgreSQL and the user its servers run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postgres {
    bin: PathBuf,
    owner: Option<Owner>,
}

impl Postgres {
    /// The installed PostgreSQL ([`bin_dir`]) and this process's server owner
    /// ([`server_owner`]), or why not.
    pub fn find() -> Result<Self> {
        Ok(Self::new(bin_dir()?, server_owner()?))
    }

    /// The binaries in `bin`, run as `owner` (`None`: as ourselves).
    pub fn new(bin: PathBuf, owner: Option<Owner>) -> Self {
        Self { bin, owner }
    }

    /// The bin directory.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Who the servers run as (`None`: this process's user).
    pub fn owner(&self) -> Option<Owner> {
        self.owner
    }

    /// A command for one of PostgreSQL's programs, run as the server owner, in `/` (which the
    /// owner can always enter), with the C locale's messages and stdin from /dev/null.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.stdin(Stdio::null()).env("LC_ALL", "C").current_dir("/");
        if let Some(Owner { uid, gid }) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// [`prepare_data_dir`] for this server owner.
    pub fn prepare_data_dir(&self, dir: &Path, ours: usize) -> Result<()> {
        prepare_data_dir(dir, self.owner, ours)
    }

    /// Creates a cluster in `data` (empty or absent), its messages in `log`.
    pub fn initdb(&self, data: &Path, options: InitOptions, log: &Log) -> Result<()> {
        let mut cmd = self.command("initdb");
        cmd.args(initdb_args(data, options));
        daemon::run(cmd, "initdb", log)
    }

    /// Starts `postgres` on `data` and `port` with `settings`, its output in `log`, and waits
    /// until it accepts connections ([`Postgres::spawn`], then [`Postgres::wait_ready`]).
    pub fn start<K: AsRef<str>, V: AsRef<str>>(
        &self,
        data: &Path,
        port: u16,
        settings: &[(K, V)],
        log: &Log,
        within: Duration,
    ) -> Result<Server> {
        let server = self.spawn(data, port, settings, log)?;
        self.wait_ready(server, port, within)
    }

    /// Starts `postgres` on `data` and `port` with `settings`, its output in `log`, without
    /// waiting. (A caller that must be the server's parent thread, as a role's main thread is,
    /// spawns there and waits elsewhere.)
    pub fn spawn<K: AsRef<str>, V: AsRef<str>>(
        &self,
        data: &Path,
        port: u16,
        settings: &[(K, V)],
        log: &Log,
    ) -> Result<Server> {
        let mut cmd = self.command("postgres");
        cmd.args(server_args(data, port, settings));
        Server::spawn(cmd, "postgres", log)
    }

    /// Waits until the server on `port` accepts connections (`pg_isready`). If it exits first or
    /// is not ready within `within`, it is stopped and the error says so (with its log's last
    /// lines when the log is a file).
    pub fn wait_ready(&self, mut server: Server, port: u16, within: Duration) -> Result<Server> {
        let outcome = server.wait_until(within, Duration::from_millis(50), || self.is_ready(port));
        let message = match outcome {
            Ok(()) => return Ok(server),
            Err(NotReady::Exited(status)) => format!(
                "postgres exited ({status}) before accepting connections{}",
                server.log().hint("see the lines above")
            ),
            Err(NotReady::TimedOut) => format!(
                "postgres did not accept connections within {} s{}",
                within.as_secs(),
                server.log().hint("")
            ),
        };
        server.stop(Signal::SIGQUIT, Duration::from_secs(10));
        Err(Error::failed(message))
    }

    /// Whether the server on loopback `port` accepts connections now (`pg_isready`).
    pub fn is_ready(&self, port: u16) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-t",
                "1",
            ])
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs one SQL statement on database `db` of the server at `addr` (`HOST:PORT`) and
    /// returns what it printed (unaligned, tuples only, trimmed).
    pub fn psql(&self, addr: &str, db: &str, sql: &str) -> Result<String> {
        self.psql_session(addr, db, &[sql])
    }

    /// Runs statements one after another in one session (so a `SET` holds for the next ones),
    /// stopping at the first error, and returns what they printed.
    pub fn psql_session(&self, addr: &str, db: &str, statements: &[&str]) -> Result<String> {
        let (host, port) = split_addr(addr)?;
        let mut cmd = self.command("psql");
        cmd.args(["-h", host, "-p", port, "-U", SUPERUSER, "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-tA"]);
        for sql in statements {
            cmd.arg("-c").arg(sql);
        }
        let out = cmd.output().doing(|| "cannot run psql".into())?;
        if !out.status.success() {
            return Err(Error::failed(format!(
                "psql at {addr} failed: {}: {}",
                statements.join("; "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Copies the server at `source` (`HOST:PORT`) into the empty directory `data` as its
    /// standby ([`basebackup_args`]), its messages in `log`.
    pub fn basebackup(
        &self,
        data: &Path,
        source: &str,
        slot: Option<&str>,
        log: &Log,
    ) -> Result<()> {
        let (host, port) = split_addr(source)?;
        let mut cmd = self.command("pg_basebackup");
        cmd.args(basebackup_args(data, host, port, slot));
        daemon::run(cmd, "pg_basebackup", log)
    }

    /// Rewinds the stopped server in `data` to follow the server at `source` (`HOST:PORT`)
    /// ([`rewind_args`]), its messages in `log`.
    pub fn rewind(&self, data: &Path, source: &str, log: &Log) -> Result<()> {
        let (host, port) = split_addr(source)?;
        let mut cmd = self.command("pg_rewind");
        cmd.args(rewind_args(data, host, port));
        daemon::run(cmd, "pg_rewind", log)
    }
}

/// Sets `key = 'value'` lines in `data/postgresql.auto.conf`, replacing earlier lines for the
/// same keys (the server must be stopped: a running one rewrites the file on `ALTER SYSTEM`).
pub fn set_auto_conf(data: &Path, settings: &[(&str, String)]) -> Result<()> {
    let path = data.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, edit_auto_conf(&text, settings))
        .doing(|| format!("cannot write {}", path.display()))
}

/// The text of `postgresql.auto.conf` with `settings` set.
fn edit_auto_conf(text: &str, settings: &[(&str, String)]) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| {
            let key = line.split('=').next().unwrap_or("").trim();
            !settings.iter().any(|(k, _)| *k == key)
        })
        .map(str::to_string)
        .collect();
    for (key, value) in settings {
        lines.push(format!("{key} = '{}'", value.replace('\'', "''")));
    }
    lines.join("\n") + "\n"
}

/// Empties a directory, keeping the directory itself (and its owner and mode).
pub fn clear_dir(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).doing(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .doing(|| format!("cannot read {}", dir.display()))?
            .path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.doing(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

/// The postmaster's pid recorded in a data directory (`postmaster.pid`, first line), if any.
/// The process may be gone: check before signalling.
pub fn postmaster_pid(data: &Path) -> Option<u32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The postmaster running on `data`, if its `postmaster.pid` names a live process that is that
/// server (one left by an earlier instance of a role killed with SIGKILL, or the one a
/// controller fences). A stale `postmaster.pid` may name a pid the system has since given to
/// another process: that one is never returned, so it is never signalled.
pub fn running_postmaster(data: &Path) -> Option<u32> {
    postmaster_pid(data).filter(|&pid| process::is_alive(pid) && is_server_of(pid, data))
}

/// Whether `pid` is a PostgreSQL server working on `data`: its program is `postgres`, and its
/// working directory — a postmaster's is its data directory — is `data`.
pub fn is_server_of(pid: u32, data: &Path) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() != "postgres" {
        return false;
    }
    match (
        std::fs::read_link(format!("/proc/{pid}/cwd")),
        data.canonicalize(),
    ) {
        (Ok(cwd), Ok(data)) => cwd == data,
        _ => false,
    }
}

/// Stops a postmaster this process did not start: fast shutdown (SIGINT: roll back, checkpoint,
/// stop) for up to 20 s, then immediate shutdown (SIGQUIT).
pub fn stop_postmaster(pid: u32) {
    process::terminate(
        pid,
        Signal::SIGINT,
        Duration::from_secs(20),
        Signal::SIGQUIT,
        Duration::from_millis(500),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_owner_is_the_postgres_user_only_as_root_and_its_absence_is_explained() {
        let postgres = Owner { uid: 70, gid: 71 };
        let never = || -> Option<Owner> { panic!("no lookup when not root") };
        assert_eq!(owner_for(false, never).expect("not root"), None);
        assert_eq!(
            owner_for(true, || Some(postgres)).expect("root"),
            Some(postgres)
        );
        let e = owner_for(true, || None).expect_err("root without a postgres user");
        assert!(
            e.to_string()
                .contains("there is no `postgres` user to run it as: install postgresql-15"),
            "{e}"
        );
    }

    #[test]
    fn initdb_has_checksums_for_roles_and_no_sync_for_tests() {
        let data = Path::new("/d");
        let base = [
            "-D",
            "/d",
            "-U",
            "strata",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ];
        let role = InitOptions {
            checksums: true,
            no_sync: false,
        };
        let mut want: Vec<&str> = base.to_vec();
        want.push("--data-checksums");
        assert_eq!(strings(initdb_args(data, role)), want);
        let test = InitOptions {
            checksums: false,
            no_sync: true,
        };
        let mut want: Vec<&str> = base.to_vec();
        want.push("--no-sync");
        assert_eq!(strings(initdb_args(data, test)), want);
    }

    #[test]
    fn server_basebackup_and_rewind_arguments() {
        let data = Path::new("/d");
        assert_eq!(
            strings(server_args(
                data,
                5433,
                &[("listen_addresses", "127.0.0.1"), ("fsync", "off")]
            )),
            [
                "-D",
                "/d",
                "-p",
                "5433",
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off"
            ]
        );
        let copy = strings(basebackup_args(data, "127.0.0.1", "5433", Some("pg_2")));
        assert_eq!(
            copy.join(" "),
            "-D /d -h 127.0.0.1 -p 5433 -U strata -R -X stream -c fast -S pg_2"
        );
        assert!(!strings(basebackup_args(data, "h", "1", None)).contains(&"-S".to_string()));
        assert_eq!(
            strings(rewind_args(data, "127.0.0.1", "5433")),
            [
                "-D",
                "/d",
                "--source-server=host=127.0.0.1 port=5433 user=strata dbname=postgres",
                "-R"
            ]
        );
        assert!(split_addr("localhost").is_err());
    }

    #[test]
    fn auto_conf_settings_replace_their_earlier_lines_and_are_quoted() {
        let text =
            "# Do not edit this file manually!\nprimary_conninfo = 'old'\nwork_mem = '4MB'\n";
        let edited = edit_auto_conf(
            text,
            &[
                ("primary_conninfo", "host=h port=1".into()),
                ("synchronous_standby_names", "ANY 1 (\"pg-2\")".into()),
                ("primary_slot_name", "it's".into()),
            ],
        );
        assert_eq!(
            edited,
            "# Do not edit this file manually!\nwork_mem = '4MB'\nprimary_conninfo = 'host=h port=1'\n\
             synchronous_standby_names = 'ANY 1 (\"pg-2\")'\nprimary_slot_name = 'it''s'\n"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        set_auto_conf(dir.path(), &[("a", "1".into())]).expect("set");
        set_auto_conf(dir.path(), &[("a", "2".into()), ("b", "3".into())]).expect("set");
        let written =
            std::fs::read_to_string(dir.path().join("postgresql.auto.conf")).expect("read");
        assert_eq!(written, "a = '2'\nb = '3'\n");
    }

    #[test]
    fn the_postmaster_pid_is_the_first_line_of_postmaster_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(postmaster_pid(dir.path()), None);
        std::fs::write(dir.path().join("postmaster.pid"), "4242\n/data\n").expect("write");
        assert_eq!(postmaster_pid(dir.path()), Some(4242));
        std::fs::write(dir.path().join("postmaster.pid"), "garbage\n").expect("write");
        assert_eq!(postmaster_pid(dir.path()), None);
        // A live pid that is not a PostgreSQL server working there (this test) is never taken
        // for the server: a real one is in tests/servers.rs.
        let me = std::process::id();
        std::fs::write(dir.path().join("postmaster.pid"), format!("{me}\n")).expect("write");
        assert_eq!(running_postmaster(dir.path()), None);
        assert!(!is_server_of(me, dir.path()));
    }

    #[test]
    fn clearing_a_directory_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        std::fs::write(dir.path().join("a/b/f"), "x").expect("write");
        std::fs::write(dir.path().join("g"), "y").expect("write");
        clear_dir(dir.path()).expect("clear");
        assert!(dir.path().is_dir());
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
    }

    #[test]
    fn a_data_dir_for_ourselves_is_created_private() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("postgres/pg-1");
        prepare_data_dir(&data, None, 2).expect("prepare");
        assert!(data.is_dir());
        assert_eq!(
            std::fs::metadata(&data).expect("stat").mode() & 0o7777,
            0o700
        );
    }

    #[test]
    fn a_data_dir_for_another_user_is_theirs_and_reachable_through_ours_only() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: giving a directory to another user needs root");
            return;
        }
        let nobody = Owner {
            uid: 65534,
            gid: 65534,
        };
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").mode() & 0o7777;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let deployment = dir.path().join("deploy");
        std::fs::create_dir(&deployment).expect("mkdir");
        std::fs::set_permissions(&deployment, std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let data = deployment.join("postgres/pg-1");
        // The temporary directory above the deployment is not ours to open.
        let e = prepare_data_dir(&data, Some(nobody), 2).expect_err("unreachable");
        assert!(
            e.to_string().contains(&format!(
                "which cannot enter {} (mode 700)",
                dir.path().canonicalize().expect("canonical").display()
            )),
            "{e}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o701))
            .expect("chmod");
        prepare_data_dir(&data, Some(nobody), 2).expect("prepare");
        assert_eq!(mode(&deployment), 0o701, "traversable, not readable");
        let meta = std::fs::metadata(&data).expect("stat");
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        assert_eq!(mode(&data), 0o700);
    }
}
