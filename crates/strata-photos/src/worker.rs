//! The worker: receives photo jobs, renders them, stores the results and applies them to the
//! catalog — once, however often a job is delivered.
//!
//! Per delivery: [`Catalog::begin`] (a settled job is acknowledged and skipped), the upload's
//! bytes from the blob store, [`process::render`] on a blocking thread, each size stored
//! (content-addressed: a second run stores nothing new), [`Catalog::complete`] (applies the
//! result once), then the blobs nothing uses any more are deleted and the message acknowledged.
//! A failure is handed back to the queue ([`Queue::nack`]): retried after a back-off, and after
//! its last attempt a dead letter, its job marked failed. While a job runs its lease is extended,
//! so a slow photo is not handed to a second worker.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_blobs::{BlobKey, BlobStore};
use strata_queue::{Delivery, Failed, Queue, QueueError};

use crate::catalog::{Begin, Catalog, Completed, JobState};
use crate::process;
use crate::relay::{PHOTOS_QUEUE, parse_payload, parse_trace, queue_name};
use strata_core::edge_purge::{EdgePurger, user_key};
use strata_core::trace::{Sampler, TraceContext};
use tracing::Instrument as _;

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The photo is being served.
    Done,
    /// Already done or superseded: a duplicate delivery, acknowledged without work.
    Duplicate(JobState),
    /// A newer upload or a delete came first; the result was discarded.
    Superseded,
    /// Failed; it will be tried again after this back-off.
    Retrying(Duration),
    /// Failed on its last attempt: a dead letter now, its job failed.
    DeadLettered,
    /// Not a job this catalog knows: acknowledged and dropped.
    Unknown,
}

/// Processes photo jobs.
#[derive(Clone)]
pub struct Worker {
    pub catalog: Catalog,
    pub queue: Arc<dyn Queue>,
    pub blobs: Arc<dyn BlobStore>,
    /// How often a running job's lease is extended.
    pub heartbeat: Duration,
    /// The CDN edges that keep users' photo redirects: purged of the user's objects
    /// (`user-<id>`) when a new photo becomes the user's (inactive without edges).
    pub edges: EdgePurger,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("catalog", &self.catalog)
            .finish()
    }
}

/// A failure while processing, with the words kept in the job and the dead letter.
struct JobFailure(String);

impl Worker {
    /// Handles one delivery to the end: acknowledged, or handed back as failed.
    pub async fn handle(&self, delivery: &Delivery) -> Result<Outcome, QueueError> {
        let started = Instant::now();
        let Some(job_id) = parse_payload(&delivery.message.payload) else {
            tracing::warn!(message = %delivery.message.id, "A message on the photos queue is not a photo job; dropped.");
            self.queue.ack(delivery).await?;
            return Ok(Outcome::Unknown);
        };
        // The job continues the upload's trace (its message names the publish as parent).
        let sent = parse_trace(&delivery.message.payload);
        let here = sent.map_or_else(
            || TraceContext::start(Sampler::default().sample()),
            |t| t.child(),
        );
        let span = tracing::info_span!(
            "worker.job",
            trace_id = %here.trace_id,
            span_id = %here.span_id,
            parent_id = sent.map(|s| tracing::field::display(s.span_id)),
            sampled = here.sampled,
            job = %job_id,
            attempt = delivery.message.attempt,
            outcome = tracing::field::Empty,
        );
        self.handle_job(delivery, job_id, started)
            .instrument(span)
            .await
    }

    async fn handle_job(
        &self,
        delivery: &Delivery,
        job_id: crate::catalog::JobId,
        started: Instant,
    ) -> Result<Outcome, QueueError> {
        let result = {
            // Keep the lease while the job runs.
            let beat = self.heartbeat_task(delivery.clone());
            let r = self.process(job_id).await;
            beat.abort();
            r
        };
        let outcome = match result {
            Ok(outcome) => {
                self.queue.ack(delivery).await?;
                outcome
            }
            Err(JobFailure(error)) => match self.queue.nack(delivery, &error).await? {
                Failed::RetryAfter(after) => {
                    self.record_failure(job_id, error, false).await;
                    Outcome::Retrying(after)
                }
                Failed::DeadLettered => {
                    self.record_failure(job_id, error, true).await;
                    Outcome::DeadLettered
                }
            },
        };
        let label = match &outcome {
            Outcome::Done => "done",
            Outcome::Duplicate(_) => "duplicate",
            Outcome::Superseded => "superseded",
            Outcome::Retrying(_) => "retried",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Unknown => "unknown",
        };
        crate::service::describe_metrics();
        metrics::counter!("strata_queue_jobs_total", "queue" => PHOTOS_QUEUE, "outcome" => label)
            .increment(1);
        metrics::histogram!("strata_queue_job_duration_seconds", "queue" => PHOTOS_QUEUE)
            .record(started.elapsed().as_secs_f64());
        tracing::Span::current().record("outcome", label);
        tracing::info!(job = %job_id, attempt = delivery.message.attempt, ?outcome,
            elapsed_ms = started.elapsed().as_millis() as u64, "Handled a photo job.");
        Ok(outcome)
    }

    async fn record_failure(&self, job: crate::catalog::JobId, error: String, dead: bool) {
        if let Err(e) = self.catalog.fail(job, error, dead).await {
            tracing::warn!(%job, error = %e, "Could not record a failed photo job in the catalog.");
        }
    }

    fn heartbeat_task(&self, delivery: Delivery) -> tokio::task::JoinHandle<()> {
        let (queue, every) = (self.queue.clone(), self.heartbeat);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = queue.extend(&delivery).await {
                    tracing::warn!(error = %e, "Could not extend a photo job's lease.");
                    return;
                }
            }
        })
    }

    async fn process(&self, job_id: crate::catalog::JobId) -> Result<Outcome, JobFailure> {
        let fail = |what: &str, e: &dyn std::fmt::Display| JobFailure(format!("{what}: {e}"));
        let job = match self
            .catalog
            .begin(job_id)
            .await
            .map_err(|e| fail("catalog", &e))?
        {
            Begin::Run(job) => job,
            Begin::Settled(job) => {
                if job.state == JobState::Superseded {
                    self.delete_upload_if_unused(&job).await;
                }
                return Ok(Outcome::Duplicate(job.state));
            }
            Begin::Missing => return Ok(Outcome::Unknown),
        };
        let Some(bytes) = self
            .blobs
            .get(&job.upload)
            .await
            .map_err(|e| fail("reading the upload", &e))?
        else {
            // A run of the same job that finished meanwhile removed it.
            return match self
                .catalog
                .job(job_id)
                .await
                .map_err(|e| fail("catalog", &e))?
            {
                Some(j) if j.state.is_settled() => Ok(Outcome::Duplicate(j.state)),
                _ => Err(JobFailure(
                    "the uploaded file is missing from the blob store".into(),
                )),
            };
        };
        let rendered = tokio::task::spawn_blocking(move || process::render(&bytes))
            .await
            .map_err(|e| fail("the rendering task", &e))?
            .map_err(|e| JobFailure(e.to_string()))?;
        // Held before they are stored: deleting another photo with the same sizes must not
        // take them before this result is recorded (`catalog::blob_locks`).
        let keys = rendered
            .variants
            .iter()
            .map(|(_, bytes)| BlobKey::of(bytes))
            .collect();
        let hold = self
            .catalog
            .hold_blobs(keys)
            .await
            .map_err(|e| fail("catalog", &e))?;
        let mut variants = Vec::with_capacity(rendered.variants.len());
        for (size, bytes) in rendered.variants {
            match self.blobs.put(bytes).await {
                Ok(key) => variants.push((size, key)),
                Err(e) => {
                    self.catalog.release_blobs(hold).await;
                    return Err(fail("storing a rendered size", &e));
                }
            }
        }
        let completed = self
            .catalog
            .complete(
                job_id,
                (rendered.format, rendered.width, rendered.height),
                variants,
                hold,
            )
            .await
            .map_err(|e| fail("catalog", &e))?;
        let (outcome, unreferenced) = match completed {
            Completed::Applied { unreferenced } => {
                // The redirect to the user's photo now points elsewhere.
                self.edges.purge(user_key(job.user));
                (Outcome::Done, unreferenced)
            }
            Completed::Superseded { unreferenced } => (Outcome::Superseded, unreferenced),
            Completed::AlreadyDone => return Ok(Outcome::Duplicate(JobState::Done)),
        };
        self.delete_quietly(unreferenced).await;
        self.delete_upload_if_unused(&job).await;
        Ok(outcome)
    }

    /// The raw upload (metadata and all) is kept only until its job is settled.
    async fn delete_upload_if_unused(&self, job: &crate::catalog::Job) {
        match self.catalog.claim_upload(job.upload.clone(), job.id).await {
            Ok(true) => self.delete_quietly(vec![job.upload.clone()]).await,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Could not tell whether an upload is still needed; it stays.")
            }
        }
    }

    /// Deletes blobs the catalog claimed for deletion.
    async fn delete_quietly(&self, keys: Vec<BlobKey>) {
        crate::service::delete_claimed(&self.catalog, &*self.blobs, keys).await;
    }

    /// Runs `concurrency` consumers until `stop` resolves, then drains: each finishes the job
    /// it holds within `drain`, or hands it back to the queue (deliverable at once elsewhere,
    /// not counted as an attempt).
    pub async fn run(
        self,
        concurrency: usize,
        drain: Duration,
        stop: impl Future<Output = ()> + Send + 'static,
    ) {
        let stopping = tokio_util_stop(stop);
        let mut consumers = Vec::new();
        for n in 0..concurrency.max(1) {
            let (worker, mut stopping) = (self.clone(), stopping.clone());
            consumers.push(tokio::spawn(async move {
                let name = queue_name();
                loop {
                    if *stopping.borrow() {
                        return;
                    }
                    let received = tokio::select! {
                        _ = stopping.changed() => return,
                        r = worker.queue.receive(&name, Duration::from_secs(1)) => r,
                    };
                    let delivery = match received {
                        Ok(Some(d)) => d,
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!(consumer = n, error = %e, "Could not receive from the photos queue; retrying in a second.");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    let handling = worker.handle(&delivery);
                    tokio::pin!(handling);
                    let done = tokio::select! {
                        r = &mut handling => Some(r),
                        _ = stopping.changed() => None,
                    };
                    let result = match done {
                        Some(r) => r,
                        // Stopping: give the job its drain time, then hand it back.
                        None => match tokio::time::timeout(drain, &mut handling).await {
                            Ok(r) => r,
                            Err(_) => {
                                tracing::warn!(message = %delivery.message.id, "A photo job did not finish within the drain time; handed back to the queue.");
                                if let Err(e) = worker.queue.release(&delivery).await {
                                    tracing::warn!(error = %e, "Could not hand a photo job back; it returns when its lease runs out.");
                                }
                                return;
                            }
                        },
                    };
                    if let Err(e) = result {
                        tracing::warn!(consumer = n, error = %e, "A photo job could not be settled with the queue; it returns when its lease runs out.");
                    }
                }
            }));
        }
        for c in consumers {
            let _ = c.await;
        }
    }
}

/// A watch channel that turns `true` when `stop` resolves.
fn tokio_util_stop(
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        let _ = tx.send(true);
    });
    rx
}
