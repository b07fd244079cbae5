//! Opening a connection to a multi-host URL host by host, each host under a deadline of its
//! own that covers the whole opening — TCP connect, startup, authentication and the
//! `target_session_attrs` check — starting with the host that answered last.
//!
//! tokio-postgres bounds only the TCP connect of each host (`connect_timeout`). A host that
//! accepts the connection and then never answers — a frozen server, or a relay in front of one
//! whose link is cut — holds the whole attempt until the pool's deadline cancels it, so the
//! hosts after it are never tried: after a failover, every new connection would wait on the
//! dead host instead of reaching the new primary. Here:
//!
//! - each host gets `per_host`, and the next host is started after `stagger` without waiting
//!   for the first to give up (as Happy Eyeballs does): the first host to open a usable
//!   connection wins;
//! - each attempt runs in a task of its own and ends on its own, even when the caller stops
//!   waiting (a client gone, a call's deadline): the host that answered is remembered either
//!   way, and tried first from then on, so only the first connections after a failover pay for
//!   the dead host.
//!
//! And a connection whose call did not finish — its caller's deadline passed, or its caller
//! went away — is never used again ([`Unfinished`]): its server may not answer at all.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Connect;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::config::Host;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, Error, NoTls, Socket};

/// Longest wait for one host before the next is tried alongside it.
const STAGGER: Duration = Duration::from_millis(500);

/// A [`Connect`] that tries the URL's hosts one by one, each within `per_host`.
#[derive(Debug)]
pub(super) struct HostByHost {
    per_host: Duration,
    stagger: Duration,
    /// Index of the host that answered last: tried first.
    preferred: Arc<AtomicUsize>,
}

impl HostByHost {
    pub(super) fn new(per_host: Duration) -> Self {
        Self {
            per_host,
            stagger: per_host.min(STAGGER),
            preferred: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// One configuration per host of `config`, with everything else of it.
pub(super) fn one_per_host(config: &Config) -> Vec<Config> {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let mut one = Config::new();
            match host {
                Host::Tcp(name) => one.host(name),
                Host::Unix(path) => one.host_path(path),
            };
            // One port for every host, or one per host (checked by the URL parser).
            if let Some(port) = ports.get(i).or(ports.first()) {
                one.port(*port);
            }
            if let Some(addr) = config.get_hostaddrs().get(i) {
                one.hostaddr(*addr);
            }
            if let Some(user) = config.get_user() {
                one.user(user);
            }
            if let Some(password) = config.get_password() {
                one.password(password);
            }
            if let Some(dbname) = config.get_dbname() {
                one.dbname(dbname);
            }
            if let Some(options) = config.get_options() {
                one.options(options);
            }
            if let Some(name) = config.get_application_name() {
                one.application_name(name);
            }
            if let Some(timeout) = config.get_connect_timeout() {
                one.connect_timeout(*timeout);
            }
            one.target_session_attrs(config.get_target_session_attrs());
            one.ssl_mode(config.get_ssl_mode());
            one.channel_binding(config.get_channel_binding());
            one
        })
        .collect()
}

type Opened = Result<(Client, Connection<Socket, NoTlsStream>), Error>;

impl HostByHost {
    /// Starts the attempt on host `i` of `count` in a task of its own, which reports to `done`.
    /// A host that answers becomes the preferred one; a preferred host that fails gives way to
    /// the next, so that connections make progress even when every caller stops waiting before
    /// the next host is started.
    fn attempt(&self, i: usize, count: usize, host: Config, done: mpsc::Sender<(usize, Opened)>) {
        let per_host = self.per_host;
        let preferred = self.preferred.clone();
        tokio::spawn(async move {
            let opened = match tokio::time::timeout(per_host, host.connect(NoTls)).await {
                Ok(opened) => opened,
                Err(_) => Err(Error::__private_api_timeout()),
            };
            if opened.is_ok() {
                preferred.store(i, Ordering::Relaxed);
            } else {
                let _ = preferred.compare_exchange(
                    i,
                    (i + 1) % count,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            // Nobody waits any more: the connection closes as it is dropped.
            let _ = done.send((i, opened)).await;
        });
    }
}

impl Connect for HostByHost {
    fn connect(&self, config: &Config) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), Error>> {
        let hosts = one_per_host(config);
        Box::pin(async move {
            let count = hosts.len();
            let first = self.preferred.load(Ordering::Relaxed) % count.max(1);
            let mut order = (0..count).map(|k| (first + k) % count);
            let (done, mut reports) = mpsc::channel(count.max(1));
            let (mut started, mut ended) = (0, 0);
            let mut last_error = None;
            while ended < count {
                if started == ended {
                    match order.next() {
                        Some(i) => {
                            self.attempt(i, count, hosts[i].clone(), done.clone());
                            started += 1;
                        }
                        None => break,
                    }
                }
                tokio::select! {
                    report = reports.recv() => {
                        let Some((i, opened)) = report else { break };
                        ended += 1;
                        match opened {
                            Ok((client, connection)) => {
                                let task = tokio::spawn(async move {
                                    if let Err(e) = connection.await {
                                        tracing::debug!(error = %e, "postgres connection ended");
                                    }
                                });
                                return Ok((client, task));
                            }
                            Err(e) => {
                                tracing::debug!(host = i, error = %e, "postgres host not usable");
                                last_error = Some(e);
                            }
                        }
                    }
                    () = tokio::time::sleep(self.stagger), if started < count => {
                        if let Some(i) = order.next() {
                            self.attempt(i, count, hosts[i].clone(), done.clone());
                            started += 1;
                        }
                    }
                }
            }
            Err(last_error.unwrap_or_else(Error::__private_api_timeout))
        })
    }
}

/// The connections whose call did not finish, by when each was opened: the pool discards
/// them the next time it would lend them ([`Abandoned::hook`]). Marked at once as the call is
/// dropped — the connection itself goes back to the pool a moment later, as the call's future
/// is dropped — so no later call can be lent it, whichever happens first.
#[derive(Clone, Debug, Default)]
pub(super) struct Abandoned(Arc<Mutex<VecDeque<Instant>>>);

/// At most this many marks are kept: a marked connection the pool dropped some other way
/// (closed, or every connection dropped after a failover) leaves its mark behind, and the
/// oldest give way. Far more than a pool ever holds.
const MARKS_KEPT: usize = 256;

impl Abandoned {
    fn mark(&self, created: Instant) {
        let mut marks = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if marks.len() >= MARKS_KEPT {
            marks.pop_front();
        }
        marks.push_back(created);
    }

    /// True, once, for a connection that was marked.
    fn take(&self, created: Instant) -> bool {
        let mut marks = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match marks.iter().position(|mark| *mark == created) {
            Some(at) => {
                marks.remove(at);
                true
            }
            None => false,
        }
    }

    /// The pool's `pre_recycle` hook: a marked connection is discarded, and the pool opens or
    /// lends another.
    pub(super) fn hook(&self) -> deadpool_postgres::Hook {
        let abandoned = self.clone();
        deadpool_postgres::Hook::sync_fn(move |_, metrics| {
            if abandoned.take(metrics.created) {
                Err(deadpool_postgres::HookError::message(
                    "its last call did not finish",
                ))
            } else {
                Ok(())
            }
        })
    }
}

/// A pooled connection lent to one call: unless [`Unfinished::finished`] is called, the
/// connection is never lent again — a call that never finished (its deadline passed, or its
/// caller went away) leaves a connection that may lead to a server that answers nothing, and
/// the next call given it would wait the same way.
pub(super) struct Unfinished<'a> {
    /// Borrowed: every call makes a guard.
    abandoned: &'a Abandoned,
    /// When the connection was opened: which one it is.
    created: Instant,
    finished: bool,
}

impl<'a> Unfinished<'a> {
    pub(super) fn new(abandoned: &'a Abandoned, client: &deadpool_postgres::Object) -> Self {
        Self {
            abandoned,
            created: deadpool_postgres::Object::metrics(client).created,
            finished: false,
        }
    }

    pub(super) fn finished(mut self) {
        self.finished = true;
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.abandoned.mark(self.created);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_connection_is_discarded_once_and_the_marks_stay_bounded() {
        let abandoned = Abandoned::default();
        let (first, second) = (Instant::now(), Instant::now() + Duration::from_nanos(1));
        abandoned.mark(first);
        assert!(!abandoned.take(second), "only the marked connection");
        assert!(abandoned.take(first));
        assert!(
            !abandoned.take(first),
            "discarded once: the mark goes with it"
        );
        for k in 0..(MARKS_KEPT as u64 + 10) {
            abandoned.mark(first + Duration::from_nanos(k));
        }
        assert_eq!(abandoned.0.lock().expect("marks").len(), MARKS_KEPT);
        assert!(!abandoned.take(first), "the oldest marks gave way");
        assert!(abandoned.take(first + Duration::from_nanos(MARKS_KEPT as u64 + 9)));
    }

    #[test]
    fn every_host_keeps_the_rest_of_the_url() {
        let config: Config = "postgresql://strata:pw@127.0.0.1:5001,127.0.0.2:5002/users?target_session_attrs=read-write&application_name=x"
            .parse()
            .expect("url");
        let hosts = one_per_host(&config);
        assert_eq!(hosts.len(), 2);
        for (one, port) in hosts.iter().zip([5001, 5002]) {
            assert_eq!(one.get_hosts().len(), 1);
            assert_eq!(one.get_ports(), &[port]);
            assert_eq!(one.get_user(), Some("strata"));
            assert_eq!(one.get_password(), Some(&b"pw"[..]));
            assert_eq!(one.get_dbname(), Some("users"));
            assert_eq!(one.get_application_name(), Some("x"));
            assert_eq!(
                one.get_target_session_attrs(),
                tokio_postgres::config::TargetSessionAttrs::ReadWrite
            );
        }
        let one_port: Config = "host=a,b port=7 user=u".parse().expect("kv");
        let hosts = one_per_host(&one_port);
        assert_eq!(hosts[1].get_ports(), &[7]);
        assert_eq!(hosts[1].get_hosts(), &[Host::Tcp("b".into())]);
    }

    /// A host that accepts connections and never answers (what a frozen server or a relay on a
    /// cut link looks like) costs one `per_host`; the next host is reached, and tried first from
    /// then on.
    #[tokio::test]
    async fn a_host_that_accepts_and_never_answers_is_passed_over() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent_addr = silent.local_addr().expect("addr");
        // Accepts and holds every connection, answering nothing.
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                held.push(socket);
            }
        });
        // The second host refuses at once: the error is the last host's.
        let refused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let refused_addr = refused.local_addr().expect("addr");
        drop(refused);
        let url = format!(
            "postgresql://u@127.0.0.1:{},127.0.0.1:{}/db",
            silent_addr.port(),
            refused_addr.port()
        );
        let config: Config = url.parse().expect("url");
        let connect = HostByHost::new(Duration::from_millis(200));
        assert_eq!(connect.stagger, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let outcome = connect.connect(&config).await;
        let took = started.elapsed();
        let Err(error) = outcome else {
            panic!("no host can answer")
        };
        assert!(
            took < Duration::from_secs(2),
            "the silent host held the attempt for {took:?}"
        );
        // The refused host was tried after the stagger, and the silent one given its deadline.
        assert!(took >= Duration::from_millis(200), "took {took:?}");
        assert!(!error.to_string().is_empty());
        holder.abort();
    }
}
