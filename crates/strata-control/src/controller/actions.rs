//! What the controller does to the servers, each step safe to repeat: check the primary, ask a
//! standby how much WAL it has, promote, open a promoted server to writes, give it the
//! replication slots and its synchronous quorum, re-point a replica, and see who streams.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use strata_engines::postgres::{self, SUPERUSER as POSTGRES_USER};
use strata_store::postgres::probe_node;

use crate::cluster::slot_name;

/// A server's URL for the controller's own connections.
fn node_url(addr: &str) -> String {
    format!("postgresql://{POSTGRES_USER}@{addr}/postgres")
}

/// Connects to one server with a deadline; the connection's driver runs until the client is
/// dropped.
pub async fn connect(addr: &str, timeout: Duration) -> anyhow::Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = node_url(addr).parse().context("bad node address")?;
    config.connect_timeout(timeout);
    let (client, connection) = tokio::time::timeout(timeout, config.connect(tokio_postgres::NoTls))
        .await
        .context("no answer in time")?
        .context("cannot connect")?;
    tokio::spawn(connection);
    Ok(client)
}

/// One check of the primary: it answers within `timeout` (connecting included) and is not in
/// recovery.
pub async fn check_primary(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    let status = probe_node(&node_url(addr), timeout).await?;
    anyhow::ensure!(!status.in_recovery, "the primary is in recovery");
    Ok(())
}

/// How much WAL a standby has received and flushed (it replays all of it when promoted), if it
/// answers within `timeout` and is a standby.
pub async fn standby_position(addr: &str, timeout: Duration) -> Option<u64> {
    let status = probe_node(&node_url(addr), timeout).await.ok()?;
    status.in_recovery.then_some(status.received.0)
}

/// Kills a server — its postmaster and every backend — if the pid in its `postmaster.pid` is
/// that server (never a process that reused a stale pid). SIGKILL works on stalled, stopped
/// processes too. Returns whether there was one to kill.
pub fn kill_server(data: &Path) -> bool {
    match postgres::running_postmaster(data) {
        Some(pid) => {
            strata_engines::process::signal_tree(pid, Signal::SIGKILL);
            true
        }
        None => false,
    }
}

/// `synchronous_standby_names` for a quorum of `sync` (`ANY 1 ("pg-2", "pg-3")`), or empty.
pub fn standby_names(sync: &[String]) -> String {
    if sync.is_empty() {
        return String::new();
    }
    format!(
        "ANY 1 ({})",
        sync.iter()
            .map(|n| format!("\"{}\"", n.replace('"', "")))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Promotes the server at `addr` if it is still a standby, and opens it to writes. Safe to run
/// again: a server already promoted is only opened.
pub async fn promote(addr: &str, timeout: Duration) -> anyhow::Result<tokio_postgres::Client> {
    let client = connect(addr, timeout).await?;
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .try_get(0)?;
    if in_recovery {
        let promoted = tokio::time::timeout(
            Duration::from_secs(30),
            client.query_one("SELECT pg_promote(true, 25)", &[]),
        )
        .await
        .context("pg_promote took over 30 s")?
        .context("pg_promote failed")?;
        anyhow::ensure!(
            promoted.try_get::<_, bool>(0)?,
            "the server was not promoted in time"
        );
    }
    // A server that was a primary before may have started refusing writes (see the PostgreSQL
    // role); the published state names this one the primary now.
    client
        .batch_execute("ALTER SYSTEM SET default_transaction_read_only = off")
        .await
        .context("cannot open the server to writes")?;
    client
        .execute("SELECT pg_reload_conf()", &[])
        .await
        .context("cannot reload the configuration")?;
    Ok(client)
}

/// Gives the primary a replication slot, reserving WAL from now, for each of `others`.
pub async fn ensure_slots(
    primary: &tokio_postgres::Client,
    others: &[&String],
) -> anyhow::Result<()> {
    for other in others {
        let slot = slot_name(other);
        primary
            .execute(
                &format!(
                    "SELECT pg_create_physical_replication_slot('{slot}', true) WHERE NOT EXISTS \
                     (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
                ),
                &[],
            )
            .await
            .with_context(|| format!("cannot create the slot of {other}"))?;
    }
    Ok(())
}

/// Sets the primary's synchronous quorum to `sync` and reloads.
pub async fn set_quorum(primary: &tokio_postgres::Client, sync: &[String]) -> anyhow::Result<()> {
    // ALTER SYSTEM cannot run in a transaction block: one statement per call.
    primary
        .batch_execute(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{}'",
            standby_names(sync).replace('\'', "''")
        ))
        .await
        .context("cannot set the synchronous quorum")?;
    primary
        .execute("SELECT pg_reload_conf()", &[])
        .await
        .context("cannot reload the configuration")?;
    Ok(())
}

/// Points the standby `name` at `addr` at the primary at `primary_addr` (`ALTER SYSTEM`,
/// reload: it follows without a restart).
pub async fn repoint(
    name: &str,
    addr: &str,
    primary_addr: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (host, port) = primary_addr
        .rsplit_once(':')
        .context("an address is HOST:PORT")?;
    let conninfo = format!("host={host} port={port} user={POSTGRES_USER} application_name={name}");
    let c = connect(addr, timeout).await?;
    c.batch_execute(&format!("ALTER SYSTEM SET primary_conninfo = '{conninfo}'"))
        .await
        .context("ALTER SYSTEM failed")?;
    c.execute("SELECT pg_reload_conf()", &[])
        .await
        .context("reload failed")?;
    Ok(())
}

/// The standbys streaming from the primary at `addr` right now, by name.
pub async fn streaming(addr: &str, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let client = connect(addr, timeout).await?;
    let rows = tokio::time::timeout(
        timeout,
        client.query(
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
            &[],
        ),
    )
    .await
    .context("no answer in time")??;
    rows.iter()
        .map(|r| r.try_get::<_, String>(0).map_err(Into::into))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quorum_names_every_standby_quoted_or_nothing() {
        assert_eq!(
            standby_names(&["pg-2".into(), "pg-3".into()]),
            "ANY 1 (\"pg-2\", \"pg-3\")"
        );
        assert_eq!(standby_names(&["a\"b".into()]), "ANY 1 (\"ab\")");
        assert_eq!(standby_names(&[]), "");
    }
}
