//! `strata worker` as a process: it processes uploads recorded by another process, drains and
//! exits 0 on SIGTERM, and when one is killed with SIGKILL in the middle of a job, another
//! worker finishes that job once its lease runs out.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use strata_photos::catalog::{JobId, JobState};
use strata_photos::relay::relay_once;
use strata_photos::testdata;
use strata_photos::upload::Format;
use strata_photos::{PhotoDirs, Photos};
use strata_queue::QueuePolicy;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const DEADLINE: Duration = Duration::from_secs(60);

/// A running `strata worker`, killed on drop.
struct WorkerProcess {
    child: Child,
    stderr: mpsc::Receiver<String>,
    /// The address of its `/metrics`, from its readiness line.
    metrics: String,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WorkerProcess {
    fn start(data: &Path) -> Self {
        let mut child = Command::new(STRATA)
            .args([
                "worker",
                "--visibility-timeout-secs",
                "1",
                "--drain-secs",
                "20",
                "--data",
            ])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata worker");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let mut worker = Self {
            child,
            stderr: err_rx,
            metrics: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let ready: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("readiness line {line:?}: {e}"));
                assert_eq!(ready["ready"], true, "{line}");
                worker.metrics = ready["addrs"]["metrics"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
            Err(_) => panic!("no readiness line within 30 s; stderr:\n{}", worker.logs()),
        }
        worker
    }

    fn logs(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
    }
}

fn pipeline(data: &Path) -> Photos {
    Photos::open(&PhotoDirs::in_data_dir(data), QueuePolicy::default()).expect("open the pipeline")
}

async fn wait_for_state(p: &Photos, job: JobId, want: JobState, worker: &WorkerProcess) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let state = p.job(job).await.expect("job").map(|j| j.state);
        if state == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} is {state:?}, not {want:?}, after {DEADLINE:?}; worker log:\n{}",
            worker.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_worker_processes_uploads_from_another_process_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pipeline(dir.path());
    let mut worker = WorkerProcess::start(dir.path());
    p.submit(
        JobId(1),
        12,
        testdata::image(Format::Jpeg, 640, 480),
        Some("image/jpeg"),
    )
    .await
    .expect("accepted");
    relay_once(&p.catalog, &*p.queue).await.expect("relay");
    wait_for_state(&p, JobId(1), JobState::Done, &worker).await;
    assert!(p.photo(12).await.expect("photo").is_some());
    // The job is done in the catalog a moment before the worker acknowledges and counts it.
    let want = [
        r#"strata_queue_jobs_total{queue="photos",outcome="done"} 1"#,
        r#"strata_queue_messages{queue="photos",state="ready"} 0"#,
        r#"strata_queue_messages{queue="photos",state="in_flight"} 0"#,
        r#"strata_queue_job_duration_seconds_count{queue="photos"} 1"#,
    ];
    let deadline = Instant::now() + DEADLINE;
    loop {
        let metrics = reqwest::get(format!("http://{}/metrics", worker.metrics))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text");
        if want.iter().all(|line| metrics.contains(line)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics has {want:?}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    kill(worker.pid(), Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = worker.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker exits after SIGTERM; log:\n{}",
            worker.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        worker.logs()
    );
}

#[tokio::test]
async fn a_worker_killed_mid_job_leaves_the_job_to_another_which_finishes_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pipeline(dir.path());
    // A 12-megapixel photo keeps a worker busy long enough to be caught in the middle.
    let upload = testdata::image(Format::Jpeg, 4000, 3000);
    for attempt in 1..=3u64 {
        let job = JobId(attempt);
        let first = WorkerProcess::start(dir.path());
        p.submit(job, attempt, upload.clone(), None)
            .await
            .expect("accepted");
        relay_once(&p.catalog, &*p.queue).await.expect("relay");
        wait_for_state(&p, job, JobState::Processing, &first).await;
        kill(first.pid(), Signal::SIGKILL).expect("SIGKILL");
        drop(first);
        let after_kill = p.job(job).await.expect("job").expect("job");
        if after_kill.state == JobState::Done {
            // The job finished before the signal landed: try again with another upload.
            continue;
        }
        let second = WorkerProcess::start(dir.path());
        wait_for_state(&p, job, JobState::Done, &second).await;
        let done = p.job(job).await.expect("job").expect("job");
        assert_eq!(
            done.attempts, 2,
            "begun by the killed worker, finished by the other"
        );
        let photo = p.photo(attempt).await.expect("photo").expect("processed");
        assert_eq!((photo.width, photo.height), (4000, 3000));
        return;
    }
    panic!(
        "three times the job finished before SIGKILL landed; the test cannot catch a worker mid-job"
    );
}
