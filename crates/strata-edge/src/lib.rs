//! # strata-edge — the CDN edge tier
//!
//! Tier: edge (CDN). Depends on `strata-core` (readiness line, shutdown, logging) and on
//! `strata-lb`'s proxy core — its HTTP server settings, the request-smuggling guard and strict
//! RFC 9112 checks, keep-alive origin connections with their timeouts, and header hygiene —
//! so the edge and the balancer speak HTTP one way. Knows nothing of the API behind it.
//!
//! A caching reverse proxy in front of one origin:
//! - [`serve`]: the request path — lookup, freshness, revalidation, stale answers, passing
//!   other methods through and invalidating what they change; `asked`: one request as the
//!   cache sees it, and the origin request made for it;
//! - [`rules`]: the HTTP caching rules (RFC 9111, RFC 5861) over `http-cache-semantics`;
//!   [`targeted`]: `CDN-Cache-Control` (RFC 9213), read by the rules in place of `Cache-Control`;
//! - [`key`]: cache keys, `Vary`, `Accept-Encoding` normalization;
//! - [`store`]: memory (moka: TinyLFU admission, LRU eviction, bounded in bytes) over disk (bounded, LRU,
//!   survives restarts); [`object`]: a stored response and its file format;
//! - [`collapse`]: one origin fetch per URL however many clients wait;
//! - [`origin`]: the way to the origin, with deadlines and bounded reads; the origin's
//!   interim responses (`103 Early Hints`) go on to the client (`strata_lb::interim`);
//! - [`respond`]: answers from stored objects (Age, Cache-Status, 304, ranges);
//! - [`files`]: static files from a directory, served by the edge itself;
//! - [`route`]: path prefixes sent to other origins (the dashboard on the public entry);
//!   [`pass`]: requests the edge does not cache, to their origin and back, and [`upgrade`]:
//!   those asking for an upgrade (WebSocket), tunnelled once the origin answers `101`;
//! - [`purge`], [`admin`]: purge by URL, prefix or surrogate key, hard or soft; `/metrics`;
//! - [`stats`]: the counters; [`role`]: `strata edge` and `strata edge purge`.
//!
//! Guarantees: a response is stored only where RFC 9111 lets a shared cache store it, and
//! never one that sets a cookie, so private data is never served to another client; memory
//! and disk never hold more than their byte budgets; every origin call has a deadline; a
//! failing disk costs the disk cache, never a request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use strata_lb::Timeouts;
use strata_lb::framing::FramingGuard;
use strata_lb::proxy::ClientConn;
use tokio::net::TcpListener;

pub mod admin;
mod asked;
pub mod collapse;
pub mod files;
pub mod key;
pub mod object;
pub mod origin;
pub mod pass;
pub mod purge;
pub mod respond;
pub mod role;
pub mod route;
pub mod rules;
pub mod serve;
pub mod stats;
pub mod store;
pub mod targeted;
pub mod upgrade;

pub use store::StoreConfig;

/// An edge's whole configuration.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub origin: SocketAddr,
    pub store: StoreConfig,
    pub timeouts: Timeouts,
    /// A response body must arrive whole within this.
    pub body_timeout: Duration,
    /// Client connections accepted at once; more are closed on accept.
    pub max_connections: usize,
    /// TLS termination on a second listener (the balancer's: rustls, TLS 1.2 and 1.3, ALPN h2
    /// and http/1.1, SNI). `None`: plain HTTP only. With `redirect_http`, every plain-HTTP
    /// request is answered `308` to the same path on the TLS listener's port.
    pub tls: Option<strata_lb::TlsListen>,
    /// Static files served by the edge itself under a path prefix. `None`: every path goes
    /// to the origin.
    pub files: Option<files::StaticFiles>,
    /// Path prefixes whose requests go to another origin, prefix stripped, straight (not
    /// through a shield). `strata edge` refuses prefixes that overlap each other or the static
    /// files' ([`route::check`]); the first that matches wins.
    pub routes: Vec<route::RouteSpec>,
    /// Which new traces are recorded (a request's `traceparent` decides for its own trace).
    pub trace_sampler: strata_core::trace::Sampler,
    /// How long a request waits for the origin to revalidate a stale object that
    /// `stale-if-error` lets the edge answer, before it is answered with that copy (the
    /// revalidation goes on and updates the store). Zero: it waits for the origin's answer or
    /// failure. Copies purged as outdated are never answered this way.
    pub stale_grace: Duration,
}

impl EdgeConfig {
    /// An edge in front of `origin`, memory only, every other setting at its default.
    pub fn new(listen: SocketAddr, admin: SocketAddr, origin: SocketAddr) -> Self {
        Self {
            listen,
            admin,
            origin,
            store: StoreConfig {
                memory_bytes: 256 * 1024 * 1024,
                disk: None,
                max_object: 8 * 1024 * 1024,
            },
            timeouts: Timeouts::default(),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            tls: None,
            files: None,
            routes: Vec::new(),
            trace_sampler: strata_core::trace::Sampler::default(),
            stale_grace: DEFAULT_STALE_GRACE,
        }
    }
}

/// [`EdgeConfig::stale_grace`]'s default.
pub const DEFAULT_STALE_GRACE: Duration = Duration::from_secs(1);

/// A bound, not yet serving, edge.
#[derive(Debug)]
pub struct Edge {
    listener: TcpListener,
    admin_listener: TcpListener,
    tls_listener: Option<TcpListener>,
    shared: Arc<serve::Shared>,
    config: EdgeConfig,
}

impl Edge {
    /// Opens the store (rebuilding the disk index) and binds both listeners (port 0 allowed).
    pub async fn build(config: EdgeConfig) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let stats = Arc::new(stats::Stats::default());
        let store = store::Store::open(&config.store, stats.clone())
            .await
            .context("cannot open the disk store")?;
        let listener = TcpListener::bind(config.listen).await?;
        let admin_listener = TcpListener::bind(config.admin).await?;
        let tls_listener = match &config.tls {
            Some(t) => Some(TcpListener::bind(t.listen).await?),
            None => None,
        };
        let redirect_to_https = match (&config.tls, &tls_listener) {
            (Some(t), Some(l)) if t.redirect_http => Some(l.local_addr()?.port()),
            _ => None,
        };
        let origin = origin::Origin::new(config.origin, config.timeouts, config.body_timeout);
        let shared = Arc::new(serve::Shared {
            redirect_to_https,
            store,
            files: config.files.clone(),
            flights: Arc::new(collapse::Flights::default()),
            routes: route::Routes::new(&config.routes, &origin),
            origin,
            stats,
            timeouts: config.timeouts,
            sampler: config.trace_sampler,
            stale_grace: config.stale_grace,
        });
        Ok(Self {
            listener,
            admin_listener,
            tls_listener,
            shared,
            config,
        })
    }

    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    /// The TLS listener's address, when TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The edge's counters (tests read them).
    pub fn stats(&self) -> Arc<stats::Stats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting and lets open connections
    /// finish their requests (up to 10 s).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            listener,
            admin_listener,
            tls_listener,
            shared,
            config,
        } = self;
        let acceptor = config
            .tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
        let admin_app = admin::router(shared.clone());
        let admin = tokio::spawn(async move {
            let _ = axum::serve(admin_listener, admin_app).await;
        });
        let origin = shared.origin.clone();
        let every = (config.timeouts.idle / 4).max(Duration::from_secs(1));
        let reaper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                origin.reap();
            }
        });
        let builder = Arc::new(strata_lb::server_builder(config.timeouts.client_header));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
        let handshake_timeout = config.timeouts.client_header;
        tokio::pin!(shutdown);
        loop {
            let accept_tls = async {
                match &tls_listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            };
            let (accepted, secure) = tokio::select! {
                a = listener.accept() => (a, false),
                a = accept_tls => (a, true),
                _ = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "connection limit reached: closing the new connection");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let client = Arc::new(ClientConn::new(peer, secure));
            let interim = client.interim.clone();
            let service = service_fn(move |req| shared.clone().handle(req, client.clone()));
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let acceptor = acceptor.clone().filter(|_| secure);
            tokio::spawn(async move {
                let result = match acceptor {
                    None => {
                        let connection = builder
                            .serve_connection_with_upgrades(
                                TokioIo::new(FramingGuard::new(stream).with_interim(interim)),
                                service,
                            )
                            .into_owned();
                        watcher.watch(connection).await
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => {
                                let connection = builder
                                    .serve_connection_with_upgrades(
                                        TokioIo::new(FramingGuard::new(tls).with_interim(interim)),
                                        service,
                                    )
                                    .into_owned();
                                watcher.watch(connection).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                Ok(())
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                Ok(())
                            }
                        }
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                drop(permit);
            });
        }
        drop(listener);
        drop(tls_listener);
        let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
        reaper.abort();
        admin.abort();
        Ok(())
    }
}
