//! [`Photos`]: what the web tier holds to accept, describe, serve and delete photos — the
//! catalog, the blob store, the queue, and a relay woken by every upload.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_blobs::fs::FsBlobStore;
use strata_blobs::{BlobKey, BlobStore};
use strata_queue::sqlite::SqliteQueue;
use strata_queue::{Queue, QueuePolicy};
use tokio::sync::Notify;

use crate::catalog::{Catalog, Job, JobId, Photo};
use crate::upload::{self, MAX_UPLOAD_BYTES, UploadError};

/// Describes the pipeline's metrics to the recorder, once.
pub fn describe_metrics() {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(
            "strata_queue_jobs_total",
            "Photo jobs handled, by outcome: done, duplicate, superseded, retried, dead_lettered, unknown."
        );
        metrics::describe_histogram!(
            "strata_queue_job_duration_seconds",
            metrics::Unit::Seconds,
            "Time to handle one delivery of a photo job, settling it with the queue included."
        );
        metrics::describe_gauge!(
            "strata_queue_messages",
            "Messages in a queue, by state: ready, delayed, in_flight, dead."
        );
        metrics::describe_gauge!(
            "strata_queue_oldest_ready_age_seconds",
            metrics::Unit::Seconds,
            "How long the oldest deliverable message has waited."
        );
    });
}

/// The largest blob the pipeline stores: an upload (up to the upload limit) or what is
/// rendered from it.
pub const MAX_BLOB_BYTES: usize = MAX_UPLOAD_BYTES * 4;

/// Where the photo pipeline keeps things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoDirs {
    /// The catalog (`photos.db`) and the blobs (`blobs/`).
    pub photos: PathBuf,
    /// The embedded queue (`queue.db`).
    pub queue: PathBuf,
}

impl PhotoDirs {
    /// `photos/` and `queue/` in a data directory.
    pub fn in_data_dir(data: &Path) -> Self {
        Self {
            photos: data.join("photos"),
            queue: data.join("queue"),
        }
    }
}

/// Why an upload was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The upload itself is at fault (413, 415, 422).
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// Storing it failed (503).
    #[error("storing the photo failed: {0}")]
    Storage(String),
}

/// The photo pipeline, as the web tier and the worker open it.
#[derive(Clone)]
pub struct Photos {
    pub catalog: Catalog,
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn Queue>,
    relay_wake: Arc<Notify>,
}

impl std::fmt::Debug for Photos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Photos")
            .field("catalog", &self.catalog)
            .finish()
    }
}

impl Photos {
    /// Opens the catalog, the filesystem blob store and the embedded queue (the engines a
    /// deployment chooses: [`crate::role::PhotoOptions::open`]).
    pub fn open(dirs: &PhotoDirs, policy: QueuePolicy) -> anyhow::Result<Self> {
        let catalog = Catalog::open(&dirs.photos)?;
        // Blobs: the uploads (up to the upload limit) and what is rendered from them.
        let blobs = FsBlobStore::open(&dirs.photos.join("blobs"), MAX_BLOB_BYTES)?;
        let queue = SqliteQueue::open(&dirs.queue, policy)?;
        Ok(Self::new(catalog, Arc::new(blobs), Arc::new(queue)))
    }

    /// Over engines opened elsewhere.
    pub fn new(catalog: Catalog, blobs: Arc<dyn BlobStore>, queue: Arc<dyn Queue>) -> Self {
        Self {
            catalog,
            blobs,
            queue,
            relay_wake: Arc::new(Notify::new()),
        }
    }

    /// Checks an upload and, if it passes, stores its bytes and records its job (with the
    /// outbox row) in one transaction; the relay is woken to publish it. Nothing is stored
    /// when a check fails.
    pub async fn submit(
        &self,
        job: JobId,
        user: u64,
        bytes: Vec<u8>,
        content_type: Option<&str>,
    ) -> Result<Job, SubmitError> {
        let inspected = upload::inspect(&bytes, content_type)?;
        let storage = |e: &dyn std::fmt::Display| SubmitError::Storage(e.to_string());
        // Held before it is stored: a job finishing with the same bytes must not delete the
        // blob before this upload is recorded (`catalog::blob_locks`).
        let hold = self
            .catalog
            .hold_blobs(vec![BlobKey::of(&bytes)])
            .await
            .map_err(|e| storage(&e))?;
        let key = match self.blobs.put(bytes).await {
            Ok(key) => key,
            Err(e) => {
                self.catalog.release_blobs(hold).await;
                return Err(storage(&e));
            }
        };
        let job = self
            .catalog
            .submit(
                job,
                user,
                (key, hold),
                inspected.format,
                strata_core::trace::current().map(|t| t.header()),
            )
            .await
            .map_err(|e| SubmitError::Storage(e.to_string()))?;
        self.relay_wake.notify_one();
        Ok(job)
    }

    /// Sets the photos queue's gauges from its counts now (called before rendering
    /// `/metrics`). A queue that cannot be read leaves the last values.
    pub async fn record_queue_gauges(&self) {
        describe_metrics();
        let Ok(stats) = self.queue.stats(&crate::relay::queue_name()).await else {
            return;
        };
        let queue = crate::relay::PHOTOS_QUEUE;
        for (state, n) in [
            ("ready", stats.ready),
            ("delayed", stats.delayed),
            ("in_flight", stats.in_flight),
            ("dead", stats.dead),
        ] {
            metrics::gauge!("strata_queue_messages", "queue" => queue, "state" => state)
                .set(n as f64);
        }
        metrics::gauge!("strata_queue_oldest_ready_age_seconds", "queue" => queue)
            .set(stats.oldest_ready_age_ms as f64 / 1000.0);
    }

    /// Runs the outbox relay until `stop` resolves.
    pub async fn relay(&self, stop: impl Future<Output = ()>) {
        crate::relay::run(
            self.catalog.clone(),
            self.queue.clone(),
            self.relay_wake.clone(),
            stop,
        )
        .await;
    }

    /// A job by id.
    pub async fn job(&self, id: JobId) -> anyhow::Result<Option<Job>> {
        Ok(self.catalog.job(id).await?)
    }

    /// A user's processed photo.
    pub async fn photo(&self, user: u64) -> anyhow::Result<Option<Photo>> {
        Ok(self.catalog.photo(user).await?)
    }

    /// The bytes of a rendered size, if some photo is served from that blob. Raw uploads are
    /// never served: they may carry metadata.
    pub async fn published(&self, key: &BlobKey) -> anyhow::Result<Option<Vec<u8>>> {
        if !self.catalog.is_published(key.clone()).await? {
            return Ok(None);
        }
        Ok(self.blobs.get(key).await?)
    }

    /// Deletes a user's photo (and supersedes a pending upload); `false` if there was none.
    pub async fn delete(&self, user: u64) -> anyhow::Result<bool> {
        let Some(unreferenced) = self.catalog.delete(user).await? else {
            return Ok(false);
        };
        delete_claimed(&self.catalog, &*self.blobs, unreferenced).await;
        Ok(true)
    }
}

/// Deletes blobs the catalog has claimed for deletion, then drops the claims of those that
/// went (a failed delete keeps its claim until it runs out, and the blob stays behind).
pub(crate) async fn delete_claimed(catalog: &Catalog, blobs: &dyn BlobStore, keys: Vec<BlobKey>) {
    let mut deleted = Vec::with_capacity(keys.len());
    for key in keys {
        match blobs.delete(&key).await {
            Ok(_) => deleted.push(key),
            Err(e) => {
                tracing::warn!(%key, error = %e, "Could not delete a blob nothing uses; it stays behind.")
            }
        }
    }
    if let Err(e) = catalog.deleted_blobs(deleted).await {
        tracing::warn!(error = %e, "Could not drop the claims on deleted blobs; they run out by themselves.");
    }
}
