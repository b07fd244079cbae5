//! # strata-lb — the load balancer tier
//!
//! Tier: load balancer. Depends on `strata-core` only (readiness line, metrics recorder); it
//! proxies HTTP to any backend and knows nothing of the API behind it.
//!
//! One concern per module, after Pingora's load-balancing split:
//! - [`selection`]: the balancing algorithms, each an immutable selector returning candidates
//!   in preference order (failover is "take the next one");
//! - [`backend`]: one backend's health, ejection, drain state and counters;
//! - [`pool`]: backends + algorithm, the selector rebuilt (behind `ArcSwap`) when the set of
//!   eligible backends changes;
//! - [`health`]: active checks with rise/fall thresholds, and probes that re-admit ejected
//!   backends;
//! - [`proxy`]: the request path — header hygiene, forwarding, retries within a budget;
//! - [`upstream`]: each worker's keep-alive connections to the backends;
//! - [`framing`]: the request-smuggling guard under the HTTP/1.1 parser, and [`strict`], the
//!   RFC 9112 checks it makes of every request head;
//! - [`answers`]: the response body type and the answers the balancer writes itself;
//! - [`admin`]: the runtime API on its own port;
//! - [`role`]: `strata lb`, the balancer as a role process: its command line and startup.
//!
//! The proxy core — [`server_builder`] (the client side's limits and timeouts), the
//! [`framing`] guard, [`upstream`] connections and the header hygiene of [`proxy`] — is shared
//! with the CDN edge (`strata-edge`), so both proxies speak HTTP one way.
//!
//! Guarantees: an idempotent request never fails because backends died (it moves on to the
//! next one until one answers); a non-idempotent request is retried only when it certainly never reached a
//! backend; a pool with no eligible backend answers 503 at once; backend addresses never
//! appear in responses.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use framing::FramingGuard;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub mod admin;
pub mod answers;
pub mod backend;
pub mod drains;
pub mod framing;
pub mod health;
mod hop;
pub mod interim;
pub mod pool;
pub mod proxy;
pub mod ratelimit;
pub mod role;
pub mod selection;
pub mod sticky;
pub mod strict;
pub mod tls;
pub mod upstream;

pub use backend::OutlierPolicy;
pub use health::HealthConfig;
pub use pool::{BackendSpec, Pool};
pub use selection::{Algorithm, AlgorithmName, HashOn};

/// Every timeout of the proxy.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Opening a connection to a backend.
    pub connect: Duration,
    /// From sending a request to a backend until its response head arrives.
    pub header: Duration,
    /// An idle pooled backend connection is closed after this.
    pub idle: Duration,
    /// Everything up to the response head, retries included.
    pub total: Duration,
    /// A client must send its whole request head within this (slowloris defence).
    pub client_header: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_millis(1000),
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(15),
            client_header: Duration::from_secs(10),
        }
    }
}

/// The HTTP server side of a client connection, as every proxy of Strata serves it: HTTP/1.1
/// and h2c, a request head within `client_header` (slowloris defence; also how long an idle
/// keep-alive connection waits for the next request), heads up to 64 KiB. Serve it over a
/// [`FramingGuard`], which checks every HTTP/1.1 head strictly before the parser sees it.
pub fn server_builder(client_header: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(client_header)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024);
    builder
}

/// A load balancer's whole configuration.
#[derive(Debug, Clone)]
pub struct LbConfig {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub pool_name: String,
    pub algorithm: Algorithm,
    pub backends: Vec<BackendSpec>,
    pub health: HealthConfig,
    pub outlier: OutlierPolicy,
    pub timeouts: Timeouts,
    /// Retries may add at most this fraction of the request rate.
    pub retry_ratio: f64,
    /// Client connections accepted at once; more are closed on accept.
    pub max_connections: usize,
    /// Proxy worker threads, each with its own runtime and backend connection pool; 0: one per
    /// core.
    pub workers: usize,
    /// Per-client-IP limit: (requests per second, burst). `None`: no limit.
    pub rate_limit: Option<(f64, u32)>,
    /// Sticky sessions by signed cookie. `None`: off.
    pub sticky: Option<sticky::Sticky>,
    /// TLS termination on a second listener. `None`: plain HTTP only.
    pub tls: Option<TlsListen>,
    /// The local address connections to backends are made from. `None`: the system's choice.
    pub source: Option<std::net::IpAddr>,
    /// Which new traces are recorded (a request's `traceparent` decides for its own trace).
    pub trace_sampler: strata_core::trace::Sampler,
    /// Where drains are kept across restarts ([`drains`]). `None`: in memory only.
    pub drain_file: Option<std::path::PathBuf>,
}

/// The TLS listener's settings.
#[derive(Clone)]
pub struct TlsListen {
    pub listen: SocketAddr,
    pub config: Arc<rustls::ServerConfig>,
    /// Answer plain-HTTP requests with a 308 redirect to HTTPS instead of proxying them.
    pub redirect_http: bool,
}

impl std::fmt::Debug for TlsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListen")
            .field("listen", &self.listen)
            .field("redirect_http", &self.redirect_http)
            .finish_non_exhaustive()
    }
}

impl LbConfig {
    pub fn new(listen: SocketAddr, admin: SocketAddr, backends: Vec<BackendSpec>) -> Self {
        Self {
            listen,
            admin,
            pool_name: "api".into(),
            algorithm: Algorithm::RoundRobin,
            backends,
            health: HealthConfig::default(),
            outlier: OutlierPolicy::default(),
            timeouts: Timeouts::default(),
            retry_ratio: 0.2,
            max_connections: 10_000,
            workers: 0,
            rate_limit: None,
            sticky: None,
            tls: None,
            source: None,
            trace_sampler: strata_core::trace::Sampler::default(),
            drain_file: None,
        }
    }
}

/// A bound, not yet serving, load balancer.
#[derive(Debug)]
pub struct LoadBalancer {
    listener: TcpListener,
    admin_listener: TcpListener,
    tls_listener: Option<TcpListener>,
    config: LbConfig,
    pool: Arc<Pool>,
}

impl LoadBalancer {
    /// Binds both listeners (port 0 allowed).
    pub async fn build(config: LbConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let admin_listener = TcpListener::bind(config.admin).await?;
        let tls_listener = match &config.tls {
            Some(t) => Some(TcpListener::bind(t.listen).await?),
            None => None,
        };
        let pool = Arc::new(Pool::new(
            config.pool_name.clone(),
            config.algorithm.clone(),
            config.outlier,
            &config.backends,
        ));
        if let Some(path) = &config.drain_file {
            match drains::load(path) {
                Ok(names) => {
                    for name in names {
                        if pool.set_draining(&name, true) {
                            tracing::info!(backend = %name, "drained, as the drain file says");
                        }
                    }
                }
                Err(e) => tracing::warn!("{e}; every backend starts in rotation"),
            }
        }
        Ok(Self {
            listener,
            admin_listener,
            tls_listener,
            config,
            pool,
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

    pub fn pool(&self) -> Arc<Pool> {
        self.pool.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting and lets open connections finish
    /// their requests (up to 10 s).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let tls_port = self.tls_addr().map(|a| a.port());
        let Self {
            listener,
            admin_listener,
            tls_listener,
            config,
            pool,
        } = self;
        let acceptor = config
            .tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
        let redirect_to = config
            .tls
            .as_ref()
            .filter(|t| t.redirect_http)
            .and(tls_port);
        let health = tokio::spawn(health::run(pool.clone(), config.health.clone()));
        let admin_app = admin::router_with_drain_file(pool.clone(), config.drain_file.clone());
        let admin = tokio::spawn(async move {
            let _ = axum::serve(admin_listener, admin_app).await;
        });
        let budget = Arc::new(proxy::RetryBudget::new(config.retry_ratio, 10));
        let limiter = config
            .rate_limit
            .map(|(rate, burst)| Arc::new(ratelimit::RateLimiter::new(rate, burst)));
        let builder = Arc::new(server_builder(config.timeouts.client_header));
        let worker_count = if config.workers == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        } else {
            config.workers
        };
        let mut workers = Vec::with_capacity(worker_count);
        let mut handoffs = Vec::with_capacity(worker_count);
        for index in 0..worker_count {
            let (tx, rx) = tokio::sync::mpsc::channel(config.max_connections.max(1));
            let worker = Worker {
                proxy: Arc::new(proxy::Proxy {
                    pool: pool.clone(),
                    upstream: upstream::Upstream::new(
                        config.timeouts.connect,
                        config.timeouts.idle,
                        config.source,
                    ),
                    timeouts: config.timeouts,
                    budget: budget.clone(),
                    sticky: config.sticky.clone(),
                    redirect_to_https: redirect_to,
                    health_path: config.health.path.clone(),
                    limiter: limiter.clone(),
                    sampler: config.trace_sampler,
                }),
                builder: builder.clone(),
                acceptor: acceptor.clone(),
                handshake_timeout: config.timeouts.client_header,
            };
            workers.push(
                std::thread::Builder::new()
                    .name(format!("lb-worker-{index}"))
                    .spawn(move || worker.run(rx))?,
            );
            handoffs.push(tx);
        }
        let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
        tokio::pin!(shutdown);
        let mut next = 0usize;
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
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            // Connections go to the workers in turn; a worker whose thread is gone is skipped.
            let mut handoff = Some(Handoff {
                stream,
                peer,
                secure,
                permit,
            });
            for _ in 0..handoffs.len() {
                let tx = &handoffs[next % handoffs.len()];
                next = next.wrapping_add(1);
                match handoff.take().map(|h| tx.try_send(h)) {
                    Some(Err(
                        tokio::sync::mpsc::error::TrySendError::Full(h)
                        | tokio::sync::mpsc::error::TrySendError::Closed(h),
                    )) => handoff = Some(h),
                    _ => break,
                }
            }
        }
        drop(listener);
        drop(tls_listener);
        // Closing the hand-off channels tells each worker to stop and drain its connections.
        drop(handoffs);
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
        health.abort();
        admin.abort();
        Ok(())
    }
}

/// An accepted client connection on its way to a worker.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    secure: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// One proxy worker: a thread with its own single-threaded runtime and its own pool of backend
/// connections, like an nginx worker process. A client connection and the backend connections
/// that serve it live on one thread, so a request crosses no thread boundary and no lock is
/// contended on its way through; the workers share only the pool's health and counters.
struct Worker {
    proxy: Arc<proxy::Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    handshake_timeout: Duration,
}

impl Worker {
    fn run(self, mut handoffs: tokio::sync::mpsc::Receiver<Handoff>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a proxy worker's runtime");
                return;
            }
        };
        runtime.block_on(async move {
            // Idle backend connections past the idle timeout are closed.
            let upstream = self.proxy.upstream.clone();
            let every = (self.proxy.timeouts.idle / 4).max(Duration::from_secs(1));
            let reaper = tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    upstream.reap();
                }
            });
            let graceful = hyper_util::server::graceful::GracefulShutdown::new();
            let open = metrics::gauge!("strata_lb_open_connections");
            while let Some(handoff) = handoffs.recv().await {
                let Handoff {
                    stream,
                    peer,
                    secure,
                    permit,
                } = handoff;
                let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                    continue;
                };
                let proxy = self.proxy.clone();
                let client = Arc::new(proxy::ClientConn::new(peer, secure));
                let interim = client.interim.clone();
                let service = service_fn(move |req| proxy.clone().handle(req, client.clone()));
                let builder = self.builder.clone();
                let watcher = graceful.watcher();
                let acceptor = self.acceptor.clone();
                let handshake_timeout = self.handshake_timeout;
                let open = open.clone();
                open.increment(1.0);
                tokio::spawn(async move {
                    let result = match (secure, acceptor) {
                        (true, Some(acceptor)) => {
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => {
                                    watcher
                                        .watch(
                                            builder
                                                .serve_connection_with_upgrades(
                                                    TokioIo::new(
                                                        FramingGuard::new(tls)
                                                            .with_interim(interim),
                                                    ),
                                                    service,
                                                )
                                                .into_owned(),
                                        )
                                        .await
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
                        _ => {
                            watcher
                                .watch(
                                    builder
                                        .serve_connection_with_upgrades(
                                            TokioIo::new(
                                                FramingGuard::new(stream).with_interim(interim),
                                            ),
                                            service,
                                        )
                                        .into_owned(),
                                )
                                .await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "client connection ended with an error");
                    }
                    open.decrement(1.0);
                    drop(permit);
                });
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
            reaper.abort();
        });
    }
}
