//! The photo pipeline end to end on the embedded engines (SQLite catalog and queue, blobs on
//! the filesystem), with the faults it is built for: a crash between an upload's commit and its
//! publish, a duplicate publish, a job delivered twice, a poison file, bad uploads.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_blobs::{BlobError, BlobKey, BlobStore};
use strata_photos::catalog::{Catalog, JobId, JobState};
use strata_photos::process::Size;
use strata_photos::relay::{payload, queue_name, relay_once};
use strata_photos::service::MAX_BLOB_BYTES;
use strata_photos::testdata;
use strata_photos::upload::{Format, MAX_UPLOAD_BYTES, UploadError};
use strata_photos::worker::{Outcome, Worker};
use strata_photos::{PhotoDirs, Photos, SubmitError};
use strata_queue::conformance::quick_policy;
use strata_queue::sqlite::SqliteQueue;
use strata_queue::{Outgoing, QueuePolicy};
use tokio::sync::Notify;

const DEADLINE: Duration = Duration::from_secs(20);

fn open(dir: &Path, policy: QueuePolicy) -> Photos {
    Photos::open(&PhotoDirs::in_data_dir(dir), policy).expect("open the pipeline")
}

fn worker(p: &Photos) -> Worker {
    Worker {
        catalog: p.catalog.clone(),
        queue: p.queue.clone(),
        blobs: p.blobs.clone(),
        heartbeat: Duration::from_millis(100),
        edges: Default::default(),
    }
}

/// Receives the next photo job and handles it.
async fn work_one(p: &Photos) -> Outcome {
    let d = p
        .queue
        .receive(&queue_name(), DEADLINE)
        .await
        .expect("receive")
        .expect("a job is delivered");
    worker(p).handle(&d).await.expect("handled")
}

fn blob_files(dir: &Path) -> usize {
    fn walk(p: &Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&dir.join("photos/blobs/objects"))
}

#[tokio::test]
async fn an_upload_becomes_every_size_of_the_users_photo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), quick_policy());
    let job = p
        .submit(
            JobId(1),
            12,
            testdata::image(Format::Jpeg, 800, 600),
            Some("image/jpeg"),
        )
        .await
        .expect("accepted");
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(
        p.photo(12).await.expect("photo"),
        None,
        "nothing served before processing"
    );
    assert_eq!(relay_once(&p.catalog, &*p.queue).await.expect("relay"), 1);
    assert_eq!(work_one(&p).await, Outcome::Done);
    let photo = p
        .photo(12)
        .await
        .expect("photo")
        .expect("the user has a photo");
    assert_eq!(
        (photo.width, photo.height, photo.format),
        (800, 600, Format::Jpeg)
    );
    let sizes: Vec<Size> = photo.variants.iter().map(|(s, _)| *s).collect();
    assert_eq!(sizes, Size::ALL);
    let k64 = photo.key(Size::S64).expect("64").clone();
    let bytes = p.published(&k64).await.expect("read").expect("served");
    let img = testdata::decode(&bytes);
    assert_eq!((img.width(), img.height()), (64, 48));
    let job = p.job(JobId(1)).await.expect("job").expect("recorded");
    assert_eq!((job.state, job.attempts), (JobState::Done, 1));
    assert_eq!(
        p.published(&job.upload).await.expect("read"),
        None,
        "the raw upload is never served"
    );
    assert_eq!(
        blob_files(dir.path()),
        4,
        "the raw upload was removed once processed"
    );
}

#[tokio::test]
async fn a_crash_between_commit_and_publish_still_delivers_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let before_crash = open(dir.path(), quick_policy());
        before_crash
            .submit(JobId(7), 3, testdata::image(Format::Png, 100, 100), None)
            .await
            .expect("accepted");
        // The process dies here: committed, never published.
        let stats = before_crash
            .queue
            .stats(&queue_name())
            .await
            .expect("stats");
        assert_eq!(stats.depth(), 0, "nothing was published");
    }
    let after = open(dir.path(), quick_policy());
    assert_eq!(
        relay_once(&after.catalog, &*after.queue)
            .await
            .expect("relay"),
        1,
        "the next relay publishes it"
    );
    assert_eq!(
        relay_once(&after.catalog, &*after.queue)
            .await
            .expect("relay"),
        0,
        "once"
    );
    assert_eq!(
        after.catalog.outbox_len().await.expect("outbox"),
        1,
        "kept a while once sent"
    );
    assert_eq!(
        after
            .catalog
            .prune_sent(Duration::from_secs(3600))
            .await
            .expect("prune"),
        0
    );
    assert_eq!(
        after
            .catalog
            .prune_sent(Duration::ZERO)
            .await
            .expect("prune"),
        1
    );
    assert_eq!(after.catalog.outbox_len().await.expect("outbox"), 0);
    assert_eq!(work_one(&after).await, Outcome::Done);
    assert!(after.photo(3).await.expect("photo").is_some());
}

#[tokio::test]
async fn a_job_published_twice_or_delivered_twice_gives_one_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), quick_policy());
    p.submit(JobId(9), 5, testdata::image(Format::WebP, 300, 200), None)
        .await
        .expect("accepted");
    // A relay that published and died before marking the row sent: the row goes out again.
    p.queue
        .publish(&queue_name(), Outgoing::new(payload(JobId(9))))
        .await
        .expect("publish");
    assert_eq!(relay_once(&p.catalog, &*p.queue).await.expect("relay"), 1);

    // A worker takes it and stalls past its lease; another gets the same message.
    let first = p
        .queue
        .receive(&queue_name(), DEADLINE)
        .await
        .expect("receive")
        .expect("job");
    let deadline = Instant::now() + DEADLINE;
    let second = loop {
        let d = p
            .queue
            .receive(&queue_name(), DEADLINE)
            .await
            .expect("receive")
            .expect("job");
        if d.message.id == first.message.id {
            break d;
        }
        // The other copy: handled first.
        assert_eq!(worker(&p).handle(&d).await.expect("handled"), Outcome::Done);
        assert!(Instant::now() < deadline);
    };
    let photo = p.photo(5).await.expect("photo").expect("processed");
    let files = blob_files(dir.path());
    assert_eq!(
        worker(&p).handle(&second).await.expect("handled"),
        Outcome::Duplicate(JobState::Done)
    );
    assert!(
        worker(&p).handle(&first).await.is_err(),
        "the stalled worker's lease is gone: it cannot settle the message"
    );
    assert_eq!(
        p.photo(5).await.expect("photo").as_ref(),
        Some(&photo),
        "one result"
    );
    assert_eq!(blob_files(dir.path()), files, "nothing new stored");
    let job = p.job(JobId(9)).await.expect("job").expect("job");
    assert_eq!(job.state, JobState::Done);
    assert_eq!(
        p.queue.stats(&queue_name()).await.expect("stats").depth(),
        0
    );
}

#[tokio::test]
async fn a_poison_upload_is_a_dead_letter_after_its_attempts_and_others_go_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), quick_policy());
    p.submit(JobId(20), 1, testdata::poison_png(64, 64), None)
        .await
        .expect("it passes the checks at the edge");
    p.submit(JobId(21), 2, testdata::image(Format::Jpeg, 64, 64), None)
        .await
        .expect("accepted");
    relay_once(&p.catalog, &*p.queue).await.expect("relay");
    let mut outcomes = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while !outcomes.contains(&Outcome::DeadLettered) || !outcomes.contains(&Outcome::Done) {
        assert!(
            Instant::now() < deadline,
            "settled within {DEADLINE:?}: {outcomes:?}"
        );
        outcomes.push(work_one(&p).await);
    }
    let retries = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Retrying(_)))
        .count();
    assert_eq!(
        retries, 2,
        "attempts 1 and 2 retried, attempt 3 dead: {outcomes:?}"
    );
    let job = p.job(JobId(20)).await.expect("job").expect("job");
    assert_eq!(job.state, JobState::Failed);
    assert!(
        job.error
            .as_deref()
            .unwrap_or("")
            .contains("cannot be decoded"),
        "{job:?}"
    );
    let dead = p.queue.dead_letters(&queue_name(), 10).await.expect("dlq");
    assert_eq!(dead.len(), 1, "only the poison: {dead:?}");
    assert_eq!(dead[0].message.payload, payload(JobId(20)));
    assert!(
        p.photo(2).await.expect("photo").is_some(),
        "the healthy photo was processed"
    );
    assert!(p.photo(1).await.expect("photo").is_none());
}

#[tokio::test]
async fn a_bad_upload_stores_nothing_and_queues_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), quick_policy());
    let jpeg = testdata::image(Format::Jpeg, 64, 64);
    let cases: Vec<(Vec<u8>, Option<&str>, &str)> = vec![
        (b"just text".to_vec(), Some("image/png"), "not an image"),
        (jpeg.clone(), Some("image/png"), "a lying content type"),
        (jpeg[..jpeg.len() / 2].to_vec(), None, "a truncated file"),
        (
            testdata::png_bomb(30_000, 30_000),
            Some("image/png"),
            "a decompression bomb",
        ),
        (vec![0xFF; MAX_UPLOAD_BYTES + 1], None, "11 MB"),
    ];
    for (i, (bytes, content_type, what)) in cases.into_iter().enumerate() {
        match p
            .submit(JobId(100 + i as u64), 1, bytes, content_type)
            .await
        {
            Err(SubmitError::Upload(e)) => {
                let expected = match what {
                    "not an image" => matches!(e, UploadError::NotAnImage),
                    "a lying content type" => matches!(e, UploadError::ContentTypeMismatch { .. }),
                    "a truncated file" => matches!(e, UploadError::Truncated { .. }),
                    "a decompression bomb" => matches!(e, UploadError::TooManyPixels { .. }),
                    _ => matches!(e, UploadError::TooLarge { .. }),
                };
                assert!(expected, "{what}: {e}");
            }
            other => panic!("{what} is refused, not {other:?}"),
        }
    }
    assert_eq!(blob_files(dir.path()), 0, "nothing stored");
    assert!(
        p.catalog.unsent(10).await.expect("outbox").is_empty(),
        "nothing in the outbox"
    );
    assert_eq!(
        p.queue.stats(&queue_name()).await.expect("stats").depth(),
        0,
        "nothing queued"
    );
    assert!(p.job(JobId(100)).await.expect("job").is_none());
}

#[tokio::test]
async fn a_newer_upload_wins_and_a_delete_removes_the_photo_and_its_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), quick_policy());
    p.submit(JobId(30), 4, testdata::image(Format::Png, 90, 90), None)
        .await
        .expect("first");
    p.submit(JobId(31), 4, testdata::image(Format::Png, 120, 60), None)
        .await
        .expect("second");
    relay_once(&p.catalog, &*p.queue).await.expect("relay");
    let a = work_one(&p).await;
    let b = work_one(&p).await;
    assert_eq!(
        (a, b),
        (Outcome::Duplicate(JobState::Superseded), Outcome::Done),
        "the first upload was superseded before it ran"
    );
    let photo = p.photo(4).await.expect("photo").expect("photo");
    assert_eq!(
        (photo.width, photo.height),
        (120, 60),
        "the newer one is served"
    );
    let distinct: std::collections::BTreeSet<_> = photo.variants.iter().map(|(_, k)| k).collect();
    assert_eq!(
        distinct.len(),
        2,
        "64 px, and the rest: the photo fits 128 px, so sizes share a blob"
    );
    assert_eq!(
        blob_files(dir.path()),
        distinct.len(),
        "the superseded upload's bytes are gone, the served ones all there"
    );
    for (_, key) in &photo.variants {
        assert!(
            p.published(key).await.expect("read").is_some(),
            "{key} is served"
        );
    }
    assert!(p.delete(4).await.expect("delete"));
    assert_eq!(p.photo(4).await.expect("photo"), None);
    for (_, key) in &photo.variants {
        assert_eq!(p.published(key).await.expect("read"), None);
    }
    assert_eq!(blob_files(dir.path()), 0, "its blobs are deleted");
    assert!(
        !p.delete(4).await.expect("delete"),
        "nothing left to delete"
    );
}

#[tokio::test]
async fn a_running_worker_processes_uploads_and_stops_when_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = open(dir.path(), quick_policy());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker(&p).run(2, Duration::from_secs(5), async move {
        let _ = stop_rx.await;
    }));
    let relay = {
        let p = p.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        (
            tokio::spawn(async move {
                p.relay(async move {
                    let _ = rx.await;
                })
                .await
            }),
            tx,
        )
    };
    for user in 1..=3u64 {
        p.submit(
            JobId(user),
            user,
            testdata::image(Format::Jpeg, 200, 100),
            None,
        )
        .await
        .expect("accepted");
    }
    let deadline = Instant::now() + DEADLINE;
    for user in 1..=3u64 {
        while p.photo(user).await.expect("photo").is_none() {
            assert!(
                Instant::now() < deadline,
                "user {user}'s photo processed in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(DEADLINE, run)
        .await
        .expect("the worker stops")
        .expect("joined");
    let _ = relay.1.send(());
    relay.0.await.expect("relay stops");
}

#[tokio::test]
async fn relays_in_two_processes_publish_each_outbox_row_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two openings of one pipeline: what two API servers hold.
    let (a, b) = (
        open(dir.path(), quick_policy()),
        open(dir.path(), quick_policy()),
    );
    let bytes = testdata::image(Format::Png, 16, 16);
    for i in 0..250u64 {
        let p = if i % 2 == 0 { &a } else { &b };
        p.submit(JobId(1000 + i), 1000 + i, bytes.clone(), None)
            .await
            .expect("submit");
    }
    // Both relays run rounds at the same time until the outbox is empty.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (x, y) = tokio::join!(
            relay_once(&a.catalog, &*a.queue),
            relay_once(&b.catalog, &*b.queue)
        );
        x.expect("relay a");
        y.expect("relay b");
        if a.catalog.unsent(1).await.expect("outbox").is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the outbox did not empty");
    }
    let stats = a.queue.stats(&queue_name()).await.expect("stats");
    assert_eq!(
        stats.ready, 250,
        "each job published exactly once: {stats:?}"
    );
}

/// A pipeline whose blob store can be held in the middle of a put: the bytes stored, the
/// answer not yet back (as with a blob store across a network).
fn gated(dir: &Path) -> (Photos, Arc<Gate>) {
    let dirs = PhotoDirs::in_data_dir(dir);
    let gate = Arc::new(Gate::default());
    let blobs = GatedPuts {
        inner: strata_blobs::fs::FsBlobStore::open(&dirs.photos.join("blobs"), MAX_BLOB_BYTES)
            .expect("blobs"),
        gate: gate.clone(),
    };
    let p = Photos::new(
        Catalog::open(&dirs.photos).expect("catalog"),
        Arc::new(blobs),
        Arc::new(SqliteQueue::open(&dirs.queue, quick_policy()).expect("queue")),
    );
    (p, gate)
}

#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    entered: Notify,
    release: Notify,
}

impl Gate {
    /// The next put stops after storing its bytes, until [`Gate::open`].
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
    async fn entered(&self) {
        tokio::time::timeout(DEADLINE, self.entered.notified())
            .await
            .expect("a put reached the gate");
    }
    fn open(&self) {
        self.release.notify_one();
    }
}

struct GatedPuts {
    inner: strata_blobs::fs::FsBlobStore,
    gate: Arc<Gate>,
}

#[async_trait::async_trait]
impl BlobStore for GatedPuts {
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobKey, BlobError> {
        let key = self.inner.put(bytes).await?;
        if self.gate.armed.swap(false, Ordering::SeqCst) {
            self.gate.entered.notify_one();
            self.gate.release.notified().await;
        }
        Ok(key)
    }
    async fn get(&self, key: &BlobKey) -> Result<Option<Vec<u8>>, BlobError> {
        self.inner.get(key).await
    }
    async fn exists(&self, key: &BlobKey) -> Result<bool, BlobError> {
        self.inner.exists(key).await
    }
    async fn delete(&self, key: &BlobKey) -> Result<bool, BlobError> {
        self.inner.delete(key).await
    }
}

/// Content addressing shares one blob between every upload of the same bytes: a worker that
/// finishes one user's copy must not delete the blob another user's upload has just stored
/// and is about to record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_of_the_same_bytes_in_flight_keeps_the_blob_a_finished_job_would_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p, gate) = gated(dir.path());
    let bytes = testdata::image(Format::Jpeg, 96, 72);
    p.submit(JobId(1), 1, bytes.clone(), None)
        .await
        .expect("accepted");
    relay_once(&p.catalog, &*p.queue).await.expect("relay");
    // User 2 uploads the very same bytes: stored, not yet recorded.
    gate.arm();
    let second = {
        let (p, bytes) = (p.clone(), bytes.clone());
        tokio::spawn(async move { p.submit(JobId(2), 2, bytes, None).await })
    };
    gate.entered().await;
    // Meanwhile user 1's job finishes, and would delete its upload.
    assert_eq!(work_one(&p).await, Outcome::Done);
    gate.open();
    second.await.expect("joined").expect("accepted");
    relay_once(&p.catalog, &*p.queue).await.expect("relay");
    let outcome = work_one(&p).await;
    let job = p.job(JobId(2)).await.expect("job").expect("recorded");
    assert_eq!(outcome, Outcome::Done, "user 2's job: {job:?}");
    // Both done, nothing pending: the shared upload is gone now, the sizes stay.
    let photo = p.photo(2).await.expect("photo").expect("served");
    assert!(
        p.blobs.get(&job.upload).await.expect("read").is_none(),
        "the upload is deleted once no job needs it"
    );
    for (size, key) in &photo.variants {
        assert!(p.published(key).await.expect("read").is_some(), "{size:?}");
    }
}

/// The same for rendered sizes: deleting one user's photo must not delete the sizes a worker
/// has just stored for another user's identical photo and is about to record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_a_worker_stored_and_has_not_recorded_survive_a_delete_of_the_same_photo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p, gate) = gated(dir.path());
    let bytes = testdata::image(Format::Png, 150, 100);
    for user in [1, 2] {
        p.submit(JobId(user), user, bytes.clone(), None)
            .await
            .expect("accepted");
    }
    relay_once(&p.catalog, &*p.queue).await.expect("relay");
    assert_eq!(work_one(&p).await, Outcome::Done);
    let first_done = p.job(JobId(1)).await.expect("job").expect("job").state == JobState::Done;
    let (done, pending) = if first_done { (1, 2) } else { (2, 1) };
    // The worker renders the other user's copy; its first size is stored, not yet recorded.
    gate.arm();
    let working = {
        let p = p.clone();
        tokio::spawn(async move { work_one(&p).await })
    };
    gate.entered().await;
    // Meanwhile the first user deletes their photo: its sizes look unused.
    assert!(p.delete(done).await.expect("delete"));
    gate.open();
    assert_eq!(working.await.expect("joined"), Outcome::Done);
    let photo = p.photo(pending).await.expect("photo").expect("served");
    for (size, key) in &photo.variants {
        assert!(
            p.published(key).await.expect("read").is_some(),
            "user {pending}'s {size:?} ({key}) is gone from the blob store"
        );
    }
}
