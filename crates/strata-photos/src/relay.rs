//! The outbox relay: publishes the catalog's unsent outbox rows to the photos queue and marks
//! them sent. Any process holding the catalog and the queue may run one (API servers and
//! workers both do): after a crash between an upload's commit and its publish, whichever relay
//! runs next publishes the job. A relay claims the rows it publishes for [`CLAIM`], so relays
//! in several processes do not publish the same rows; a relay that dies holding a claim leaves
//! its rows to the others once the claim runs out. A row can still be published twice (a relay
//! dies between publishing and marking the row sent, or a claim runs out while the broker is
//! slow); the worker absorbs the duplicate (see [`crate::catalog`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use strata_core::trace::TraceContext;
use strata_queue::{Outgoing, Queue, QueueName};
use tokio::sync::Notify;
use tracing::Instrument as _;

use crate::catalog::{Catalog, JobId};

/// The queue photo jobs travel on.
pub const PHOTOS_QUEUE: &str = "photos";
/// Rows published per round.
pub const BATCH: usize = 100;
/// How often a relay looks for rows written by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The photos queue's name.
pub fn queue_name() -> QueueName {
    // A constant that follows the naming rules.
    QueueName::parse(PHOTOS_QUEUE).unwrap_or_else(|e| unreachable!("{e}"))
}

/// A job's message: its id, as text. Everything else is in the catalog.
pub fn payload(job: JobId) -> Vec<u8> {
    format!("photo-job {job}").into_bytes()
}

/// A job's message carrying the trace it belongs to: `photo-job ID TRACEPARENT` (the queue's
/// messages have no headers on every engine, so the context travels in the text).
pub fn traced_payload(job: JobId, trace: &TraceContext) -> Vec<u8> {
    format!("photo-job {job} {}", trace.header()).into_bytes()
}

/// The job a message names, if it is one of ours.
pub fn parse_payload(bytes: &[u8]) -> Option<JobId> {
    let text = std::str::from_utf8(bytes)
        .ok()?
        .strip_prefix("photo-job ")?;
    let id = text.split(' ').next()?;
    id.parse().ok().map(JobId)
}

/// The trace a job's message carries; `None` without one or with a malformed one (the worker
/// then starts its own).
pub fn parse_trace(bytes: &[u8]) -> Option<TraceContext> {
    let text = std::str::from_utf8(bytes)
        .ok()?
        .strip_prefix("photo-job ")?;
    let (_, traceparent) = text.split_once(' ')?;
    TraceContext::parse(traceparent.as_bytes())
}

/// Why a relay round stopped short.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("publishing a photo job: {0}")]
    Queue(#[from] strata_queue::QueueError),
}

/// How long a published outbox row is kept (for a look after an incident) before a relay
/// deletes it.
pub const KEEP_SENT: Duration = Duration::from_secs(3600);

/// How long a relay holds the rows it claimed: long enough to publish a batch to a slow broker.
pub const CLAIM: Duration = Duration::from_secs(30);

/// Claims and publishes up to [`BATCH`] unsent rows; returns how many.
pub async fn relay_once(catalog: &Catalog, queue: &dyn Queue) -> Result<usize, RelayError> {
    let name = queue_name();
    let rows = catalog.claim_unsent(BATCH, CLAIM).await?;
    for (i, row) in rows.iter().enumerate() {
        // The publish is a span of the upload's trace, and the worker's span its child.
        let upload = row
            .traceparent
            .as_deref()
            .and_then(|t| TraceContext::parse(t.as_bytes()));
        let (message, span) = match upload {
            Some(upload) => {
                let here = upload.child();
                let span = if here.sampled {
                    tracing::info_span!(
                        "queue.publish",
                        trace_id = %here.trace_id,
                        span_id = %here.span_id,
                        parent_id = %upload.span_id,
                        sampled = true,
                        job = %row.job,
                        queue = PHOTOS_QUEUE,
                    )
                } else {
                    tracing::Span::none()
                };
                (traced_payload(row.job, &here), span)
            }
            None => (payload(row.job), tracing::Span::none()),
        };
        let published = queue
            .publish(&name, Outgoing::new(message))
            .instrument(span)
            .await;
        if let Err(e) = published {
            // Not published: the claims go back, so the next round (this relay's or another's)
            // takes these rows at once rather than after the claim runs out.
            let left: Vec<i64> = rows[i..].iter().map(|r| r.row).collect();
            if let Err(release) = catalog.release_claims(left).await {
                tracing::warn!(error = %release, "The outbox relay could not release its claims.");
            }
            return Err(e.into());
        }
        catalog.mark_sent(row.row).await?;
        tracing::debug!(job = %row.job, "Published a photo job from the outbox.");
    }
    Ok(rows.len())
}

/// Relays until `stop` resolves: at once when `wake` is notified (an upload in this process),
/// else every [`POLL_INTERVAL`]. Failures are logged and retried on the next round.
pub async fn run(
    catalog: Catalog,
    queue: Arc<dyn Queue>,
    wake: Arc<Notify>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut last_prune = std::time::Instant::now();
    loop {
        if last_prune.elapsed() >= KEEP_SENT / 60 {
            last_prune = std::time::Instant::now();
            if let Err(e) = catalog.prune_sent(KEEP_SENT).await {
                tracing::warn!(error = %e, "The outbox relay could not prune published rows.");
            }
        }
        let woken = wake.notified();
        match relay_once(&catalog, &*queue).await {
            Ok(n) if n == BATCH => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "The outbox relay could not publish; it retries shortly.")
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = woken => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_foreign_ones_are_not_jobs() {
        assert_eq!(parse_payload(&payload(JobId(42))), Some(JobId(42)));
        assert_eq!(parse_trace(&payload(JobId(42))), None);
        for bad in [&b"42"[..], b"photo-job x", b"photo-job ", b"\xff"] {
            assert_eq!(parse_payload(bad), None);
        }
        let trace = TraceContext::start(true);
        let traced = traced_payload(JobId(43), &trace);
        assert_eq!(parse_payload(&traced), Some(JobId(43)));
        assert_eq!(parse_trace(&traced), Some(trace));
        // A malformed trace is ignored, the job is still the job.
        let bad_trace = b"photo-job 44 00-zz-11-01";
        assert_eq!(parse_payload(bad_trace), Some(JobId(44)));
        assert_eq!(parse_trace(bad_trace), None);
    }
}
