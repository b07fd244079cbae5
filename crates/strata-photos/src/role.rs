//! `strata worker`: a photo worker as a process. It opens the catalog, the blob store and the
//! embedded queue, serves `/metrics` and `/healthz` on `--listen`, prints its readiness line, then runs `--concurrency` consumers and an outbox
//! relay (a backstop for uploads whose API server died before publishing) until SIGTERM,
//! Ctrl-C or — with `--exit-on-stdin-eof` — its supervisor's exit. Stopping drains: each job in
//! progress finishes within `--drain-secs` or is handed back to the queue. With
//! `--purge-edge`/`--purge-edges-state` it purges a user's objects from the CDN edges when it
//! makes a new photo theirs (the redirect to it changes; `strata_core::edge_purge`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use strata_core::edge_purge::{EdgePurger, PurgeTargets};
use strata_core::ready::ReadyLine;
use strata_queue::QueuePolicy;

use crate::service::{PhotoDirs, Photos};

/// A URL with its `user:password@` left out.
fn without_userinfo(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}
use crate::worker::Worker;

/// Where the photo pipeline lives, for every role that opens it (API servers and workers):
/// the catalog's directory, and which queue and blob store — embedded (a SQLite queue and the
/// filesystem, under the data directory) unless a RabbitMQ URL or an S3 endpoint is given.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct PhotoOptions {
    /// Directory of the photo catalog and its blobs (default: `photos` in the data directory).
    #[arg(long, env = "STRATA_PHOTOS_DIR")]
    pub photos_dir: Option<PathBuf>,
    /// Directory of the embedded queue (default: `queue` in the data directory).
    #[arg(long, env = "STRATA_QUEUE_DIR")]
    pub queue_dir: Option<PathBuf>,
    /// RabbitMQ broker for the photo jobs, `amqp://USER:PASSWORD@HOST:PORT/VHOST` (the embedded
    /// queue when unset). Read from the environment by `strata up`, never from a command line.
    #[arg(long, env = "STRATA_QUEUE_URL", hide_env_values = true)]
    pub queue_url: Option<String>,
    /// Prefix of every RabbitMQ queue and exchange, so that deployments can share a broker.
    #[arg(long, env = "STRATA_QUEUE_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub queue_namespace: String,
    /// S3-compatible service for the photos' blobs, `http://HOST:PORT` or `https://…` (the
    /// filesystem when unset). Credentials: `--s3-credentials-file`, else `STRATA_S3_ACCESS_KEY` and
    /// `STRATA_S3_SECRET_KEY`.
    #[arg(long, env = "STRATA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// The bucket (created when missing).
    #[arg(long, env = "STRATA_S3_BUCKET", default_value = DEFAULT_BUCKET)]
    pub s3_bucket: String,
    /// File with the S3 credentials: `access_key=…` and `secret_key=…` lines.
    #[arg(long, env = "STRATA_S3_CREDENTIALS_FILE")]
    pub s3_credentials_file: Option<PathBuf>,
    /// More roots to trust for an `https://` S3 service, as PEM (a private CA); the system's
    /// roots are always trusted.
    #[arg(long, env = "STRATA_S3_CA_FILE")]
    pub s3_ca_file: Option<PathBuf>,
}

/// The RabbitMQ namespace when none is given.
pub const DEFAULT_NAMESPACE: &str = "strata";
/// The S3 bucket when none is given.
pub const DEFAULT_BUCKET: &str = "strata-photos";

impl Default for PhotoOptions {
    fn default() -> Self {
        Self {
            photos_dir: None,
            queue_dir: None,
            queue_url: None,
            queue_namespace: DEFAULT_NAMESPACE.into(),
            s3_endpoint: None,
            s3_bucket: DEFAULT_BUCKET.into(),
            s3_credentials_file: None,
            s3_ca_file: None,
        }
    }
}

impl PhotoOptions {
    /// Opens the pipeline these options name: the catalog under `data`, and the queue and
    /// blob store engines (each consumer taking `prefetch` deliveries ahead on RabbitMQ).
    pub async fn open(
        &self,
        data: &std::path::Path,
        policy: QueuePolicy,
        prefetch: u16,
    ) -> anyhow::Result<Photos> {
        let dirs = self.dirs(data);
        let catalog = crate::catalog::Catalog::open(&dirs.photos).with_context(|| {
            format!("cannot open the photo catalog in {}", dirs.photos.display())
        })?;
        let blobs: std::sync::Arc<dyn strata_blobs::BlobStore> = match &self.s3_endpoint {
            None => std::sync::Arc::new(
                strata_blobs::fs::FsBlobStore::open(
                    &dirs.photos.join("blobs"),
                    crate::service::MAX_BLOB_BYTES,
                )
                .with_context(|| {
                    format!(
                        "cannot open the blobs in {}",
                        dirs.photos.join("blobs").display()
                    )
                })?,
            ),
            Some(endpoint) => {
                let credentials = match &self.s3_credentials_file {
                    Some(file) => strata_blobs::s3::S3Credentials::from_file(file)?,
                    None => strata_blobs::s3::S3Credentials::from_env()?,
                };
                let mut options = strata_blobs::s3::S3Options::new(
                    endpoint.clone(),
                    self.s3_bucket.clone(),
                    credentials,
                    crate::service::MAX_BLOB_BYTES,
                );
                options.prefix = "photos/".into();
                options.ca_file = self.s3_ca_file.clone();
                std::sync::Arc::new(
                    strata_blobs::s3::S3BlobStore::open(options)
                        .await
                        .with_context(|| format!("cannot open the S3 store at {endpoint}"))?,
                )
            }
        };
        let queue: std::sync::Arc<dyn strata_queue::Queue> = match &self.queue_url {
            None => std::sync::Arc::new(
                strata_queue::sqlite::SqliteQueue::open(&dirs.queue, policy).with_context(
                    || format!("cannot open the embedded queue in {}", dirs.queue.display()),
                )?,
            ),
            Some(url) => {
                let mut config = strata_queue::rabbitmq::RabbitConfig::new(url.clone(), policy);
                config.namespace = strata_queue::QueueName::parse(&self.queue_namespace)
                    .context("--queue-namespace")?;
                config.prefetch = prefetch.max(1);
                std::sync::Arc::new(strata_queue::rabbitmq::RabbitQueue::new(config))
            }
        };
        Ok(Photos::new(catalog, blobs, queue))
    }

    /// Where the jobs and blobs go, for logs: no password, no key.
    pub fn describe(&self, data: &std::path::Path) -> String {
        let dirs = self.dirs(data);
        let queue = match &self.queue_url {
            None => format!("embedded queue in {}", dirs.queue.display()),
            Some(url) => format!("RabbitMQ at {}", without_userinfo(url)),
        };
        let blobs = match &self.s3_endpoint {
            None => format!("blobs in {}", dirs.photos.join("blobs").display()),
            Some(endpoint) => format!("blobs in S3 {endpoint}/{}", self.s3_bucket),
        };
        format!("catalog in {}, {queue}, {blobs}", dirs.photos.display())
    }

    /// The directories, with the defaults under `data`.
    pub fn dirs(&self, data: &std::path::Path) -> PhotoDirs {
        let defaults = PhotoDirs::in_data_dir(data);
        PhotoDirs {
            photos: self.photos_dir.clone().unwrap_or(defaults.photos),
            queue: self.queue_dir.clone().unwrap_or(defaults.queue),
        }
    }
}

/// Everything a worker is told on its command line.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct WorkerArgs {
    /// Address of the worker's `/metrics` (port 0 picks a free port; loopback by default).
    #[arg(long, env = "STRATA_WORKER_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Data directory of the deployment (the photos and the queue live under it by default).
    #[arg(long, env = "STRATA_DATA", default_value = ".strata/data")]
    pub data: PathBuf,
    #[command(flatten)]
    #[serde(flatten)]
    pub photos: PhotoOptions,
    /// Jobs processed at once (each on a core of its own while it resizes).
    #[arg(long, env = "STRATA_WORKER_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub concurrency: u64,
    /// Deliveries a job gets before it becomes a dead letter.
    #[arg(long, env = "STRATA_WORKER_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Seconds a job may run without a heartbeat before another worker may take it.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub visibility_timeout_secs: u64,
    /// Seconds a stopping worker gives its jobs in progress before handing them back.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_secs: u64,
    /// The CDN edges to purge of a user's objects when a new photo becomes theirs.
    #[command(flatten)]
    #[serde(flatten)]
    pub edges: PurgeTargets,
    /// Seconds the edges may keep a photo's redirect without asking (the API servers'
    /// `--shared-max-age-secs`): each purge is retried that long, and 30 s more.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub shared_max_age_secs: u64,
    /// This role's name in its topology (shown in the readiness line and logs).
    #[arg(long, default_value = "worker")]
    pub name: String,
    /// Exit when standard input reaches end-of-file (set by `strata up`).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl WorkerArgs {
    /// A worker over the data directory `data`, every other setting at its default (the same
    /// defaults clap gives; a test keeps the two in step).
    pub fn new(data: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data,
            photos: PhotoOptions::default(),
            concurrency: 1,
            max_attempts: 5,
            visibility_timeout_secs: 30,
            drain_secs: 30,
            edges: PurgeTargets::default(),
            shared_max_age_secs: 0,
            name: "worker".into(),
            exit_on_stdin_eof: false,
        }
    }

    /// The queue policy these arguments ask for.
    pub fn policy(&self) -> QueuePolicy {
        QueuePolicy {
            max_attempts: self.max_attempts,
            visibility_timeout: Duration::from_secs(self.visibility_timeout_secs),
            ..QueuePolicy::default()
        }
    }
}

/// Runs `strata worker` until it is told to stop, then drains.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    strata_core::trace::layer::set_service("worker");
    let policy = args.policy();
    let prefetch = u16::try_from(args.concurrency).unwrap_or(u16::MAX);
    let photos = args
        .photos
        .open(&args.data, policy, prefetch)
        .await
        .with_context(|| {
            format!(
                "cannot open the photo pipeline ({})",
                args.photos.describe(&args.data)
            )
        })?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let relay = {
        let (photos, stop) = (photos.clone(), stopped(stop_rx.clone()));
        tokio::spawn(async move { photos.relay(stop).await })
    };
    let worker = Worker {
        catalog: photos.catalog.clone(),
        queue: photos.queue.clone(),
        blobs: photos.blobs.clone(),
        heartbeat: policy.visibility_timeout / 3,
        edges: EdgePurger::start(
            &args.edges,
            Duration::from_secs(args.shared_max_age_secs + 30),
        ),
    };
    let metrics = strata_core::telemetry::prometheus();
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {} for /metrics: is another process using that port? Pass another --listen (port 0 picks a free one)",
            args.listen
        )
    })?;
    let metrics_addr = listener
        .local_addr()
        .context("the metrics listener's address")?;
    let metrics_server = {
        let photos = photos.clone();
        let router = axum::Router::new()
            .route(
                "/healthz",
                axum::routing::get(|| async { r#"{"status":"alive"}"# }),
            )
            .route("/traces", axum::routing::get(traces))
            .route("/traces/{trace_id}", axum::routing::get(trace))
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let (photos, metrics) = (photos.clone(), metrics.clone());
                    async move {
                        photos.record_queue_gauges().await;
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            metrics.render(),
                        )
                    }
                }),
            );
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "The worker's metrics listener failed.");
            }
        })
    };
    // Listening for the stop signal before announcing readiness: a SIGTERM sent the moment
    // the role is ready stops it cleanly.
    let stop = strata_core::shutdown::signal(args.exit_on_stdin_eof);
    ReadyLine::new(&args.name)
        .with_addr("metrics", metrics_addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role = %args.name, concurrency = args.concurrency,
        pipeline = %args.photos.describe(&args.data), "Processing photo jobs.");
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });
    worker
        .run(
            usize::try_from(args.concurrency).unwrap_or(1),
            Duration::from_secs(args.drain_secs),
            stopped(stop_rx),
        )
        .await;
    let _ = relay.await;
    let _ = metrics_server.await;
    tracing::info!(role = %args.name, "Stopped after draining the jobs in progress.");
    Ok(())
}

/// `GET /traces?limit=N`: this worker's recent and slowest recorded traces.
async fn traces(
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let limit = strata_core::trace::store::limit_from_query(query.as_deref());
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        strata_core::trace::store::index_json(limit),
    )
}

/// `GET /traces/{trace_id}`: the spans of one trace this worker keeps.
async fn trace(
    axum::extract::Path(trace_id): axum::extract::Path<String>,
) -> (
    axum::http::StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
) {
    let (status, content_type, body) = strata_core::trace::store::trace_response(&trace_id);
    (
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST),
        [(axum::http::header::CONTENT_TYPE, content_type)],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    #[test]
    fn the_constructor_has_the_defaults_of_the_command_line() {
        use clap::Parser as _;
        let parsed = Cli::try_parse_from(["worker", "--data", "/d"]).expect("parses");
        assert_eq!(parsed.worker, WorkerArgs::new("/d".into()));
    }
}
