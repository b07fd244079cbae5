//! The dashboard's chaos button: `POST /api/chaos` starts one bounded `strata chaos` run on
//! this deployment (open-loop authenticated writes and reads through its entry point, with
//! kills, stops and restarts of its roles unless asked for none; every acknowledged write read
//! back at the end). One run at a time; its progress (the faults as they are applied) and its
//! verdict go into every snapshot. The run is the same `strata` binary as the dashboard, a
//! child process: the dashboard stops it (SIGINT, so that it resumes what it froze) when it
//! stops itself, when an admin stops it (`DELETE /api/chaos`: the run ends `stopped`, with no
//! verdict, its writes not read back), and kills it if it outlives its bound.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use strata_engines::process;
use tokio::io::AsyncReadExt as _;

use super::problem::Problem;

/// The shortest and longest run, in seconds.
pub const DURATION_SECS: (u64, u64) = (5, 300);
/// The highest rate asked for: writes per second, and as many reads.
pub const MAX_RATE: u32 = 200;
/// How long a run waits, after its load, for the deployment to be healthy again.
const HEALTH_TIMEOUT_SECS: u64 = 60;
/// Beyond its load and its health wait, the time a run has to read its writes back before it
/// is stopped.
const SLACK: Duration = Duration::from_secs(120);
/// The progress lines kept (the latest), and the longest kept of each.
const MAX_LINES: usize = 20;
const MAX_LINE: usize = 200;
/// The most of the verdict file read.
const MAX_VERDICT: u64 = 4 * 1024 * 1024;
/// What a run stopped by an admin says instead of a verdict.
const STOPPED: &str = "stopped from the dashboard before its end: every process it froze was resumed; its writes were not read back, so there is no verdict";
/// The faults listed in the snapshot's summary of a verdict.
const MAX_FAULTS_SHOWN: usize = 30;

/// What a run is asked to do: `{"duration_secs": 30, "rate": 20, "faults": true}`, each
/// optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scenario {
    pub duration_secs: u64,
    pub rate: u32,
    pub faults: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Asked {
    duration_secs: Option<u64>,
    rate: Option<u32>,
    faults: Option<bool>,
}

impl Scenario {
    /// A request's body (empty: every default) as a scenario within the bounds.
    pub fn parse(body: &[u8]) -> Result<Scenario, Problem> {
        let asked: Asked = if body.iter().all(u8::is_ascii_whitespace) {
            Asked {
                duration_secs: None,
                rate: None,
                faults: None,
            }
        } else {
            serde_json::from_slice(body).map_err(|e| {
                Problem::BadRequest(format!(
                    "The body must be JSON like {{\"duration_secs\": 30, \"rate\": 20, \"faults\": true}} ({e})."
                ))
            })?
        };
        let s = Scenario {
            duration_secs: asked.duration_secs.unwrap_or(30),
            rate: asked.rate.unwrap_or(20),
            faults: asked.faults.unwrap_or(true),
        };
        let (shortest, longest) = DURATION_SECS;
        if !(shortest..=longest).contains(&s.duration_secs) {
            return Err(Problem::BadChaos(
                "duration_secs",
                format!(
                    "A run lasts {shortest} to {longest} seconds, not {}.",
                    s.duration_secs
                ),
            ));
        }
        if !(1..=MAX_RATE).contains(&s.rate) {
            return Err(Problem::BadChaos(
                "rate",
                format!(
                    "A run sends 1 to {MAX_RATE} writes per second (and as many reads), not {}.",
                    s.rate
                ),
            ));
        }
        Ok(s)
    }
}

/// A run as the snapshot shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChaosView {
    #[serde(flatten)]
    pub scenario: Scenario,
    pub pid: Option<u32>,
    pub started_at_ms: u64,
    /// Seconds since it started, or that it took.
    pub elapsed_s: f64,
    /// `running`, then `passed` (no acknowledged write lost, back to full health), `failed`, or
    /// `stopped` (by an admin, before its end).
    pub state: &'static str,
    /// Its latest progress lines (each fault as it is applied).
    pub lines: Vec<String>,
    /// A summary of its verdict, once it has one.
    pub verdict: Option<serde_json::Value>,
    pub error: Option<String>,
}

struct Run {
    view: ChaosView,
    started: Instant,
    /// An admin asked to stop it.
    stop_asked: bool,
}

/// The deployment's one chaos run, if any.
pub struct Chaos {
    exe: PathBuf,
    dir: PathBuf,
    run: Mutex<Option<Run>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Chaos {
    /// Runs of `exe chaos --dir DIR …`.
    pub fn new(exe: PathBuf, dir: PathBuf) -> Arc<Chaos> {
        Arc::new(Chaos {
            exe,
            dir,
            run: Mutex::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Run>> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current or last run.
    pub fn view(&self) -> Option<ChaosView> {
        self.lock().as_ref().map(|run| {
            let mut view = run.view.clone();
            if view.state == "running" {
                view.elapsed_s = (run.started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
            }
            view
        })
    }

    fn verdict_path(&self) -> PathBuf {
        self.dir.join("dashboard-chaos-verdict.json")
    }

    /// Starts a run, unless one runs (409 `chaos-running`).
    pub fn start(self: &Arc<Self>, scenario: Scenario) -> Result<ChaosView, Problem> {
        let mut slot = self.lock();
        if let Some(run) = slot.as_ref().filter(|r| r.view.state == "running") {
            return Err(Problem::ChaosRunning(format!(
                "A chaos run started {:.0} s ago is still running (pid {}); wait for its verdict.",
                run.started.elapsed().as_secs_f64(),
                run.view.pid.unwrap_or(0)
            )));
        }
        let out = self.verdict_path();
        let _ = std::fs::remove_file(&out);
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("chaos")
            .arg("--dir")
            .arg(&self.dir)
            .args(["--duration-secs", &scenario.duration_secs.to_string()])
            .args(["--rate", &scenario.rate.to_string()])
            .args(["--health-timeout-secs", &HEALTH_TIMEOUT_SECS.to_string()])
            .arg("--out")
            .arg(&out)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if !scenario.faults {
            cmd.arg("--no-faults");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Problem::Unavailable(format!("Cannot start strata chaos: {e}")))?;
        let pid = child.id();
        let view = ChaosView {
            scenario,
            pid,
            started_at_ms: now_ms(),
            elapsed_s: 0.0,
            state: "running",
            lines: Vec::new(),
            verdict: None,
            error: None,
        };
        *slot = Some(Run {
            view: view.clone(),
            started: Instant::now(),
            stop_asked: false,
        });
        drop(slot);
        tracing::warn!(
            ?pid,
            ?scenario,
            "a chaos run was started from the dashboard"
        );
        let stderr = child.stderr.take();
        let me = self.clone();
        let bound = Duration::from_secs(scenario.duration_secs + HEALTH_TIMEOUT_SECS) + SLACK;
        tokio::spawn(async move {
            let reading = {
                let me = me.clone();
                async move {
                    if let Some(stderr) = stderr {
                        me.read_lines(stderr).await;
                    }
                }
            };
            let waited = tokio::time::timeout(bound, async {
                let (status, ()) = tokio::join!(child.wait(), reading);
                status
            })
            .await;
            let error = match waited {
                Ok(Ok(status)) if status.success() => None,
                Ok(Ok(status)) => Some(format!("strata chaos ended with {status}")),
                Ok(Err(e)) => Some(format!("cannot wait for strata chaos: {e}")),
                Err(_) => {
                    if let Some(pid) = pid {
                        process::signal(pid, Signal::SIGINT);
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let _ = child.kill().await;
                    Some(format!(
                        "stopped after {} s, past its bound",
                        bound.as_secs()
                    ))
                }
            };
            me.finish(error);
        });
        Ok(view)
    }

    /// Keeps the latest [`MAX_LINES`] lines of the run's stderr, each cut at [`MAX_LINE`].
    async fn read_lines(&self, mut stderr: tokio::process::ChildStderr) {
        let mut buf = [0u8; 4096];
        let mut line = Vec::new();
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if b == b'\n' {
                    self.push_line(&line);
                    line.clear();
                } else if line.len() < MAX_LINE {
                    line.push(b);
                }
            }
        }
        if !line.is_empty() {
            self.push_line(&line);
        }
    }

    fn push_line(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).trim().to_string();
        if text.is_empty() {
            return;
        }
        if let Some(run) = self.lock().as_mut() {
            let lines = &mut run.view.lines;
            lines.push(text);
            if lines.len() > MAX_LINES {
                lines.remove(0);
            }
        }
    }

    fn finish(&self, error: Option<String>) {
        let verdict = read_verdict(&self.verdict_path());
        let _ = std::fs::remove_file(self.verdict_path());
        let mut slot = self.lock();
        let Some(run) = slot.as_mut() else { return };
        let lost = verdict
            .as_ref()
            .and_then(|v| v["lost"].as_u64())
            .unwrap_or(1);
        run.view.state = if run.stop_asked {
            "stopped"
        } else if error.is_none() && lost == 0 {
            "passed"
        } else {
            "failed"
        };
        let error = if run.stop_asked {
            Some(STOPPED.to_string())
        } else {
            error
        };
        run.view.elapsed_s = (run.started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        run.view.error = error.or_else(|| {
            verdict
                .is_none()
                .then(|| "strata chaos wrote no verdict".to_string())
        });
        run.view.verdict = verdict;
        tracing::warn!(state = run.view.state, "the dashboard's chaos run ended");
    }

    /// An admin's stop: the running run is interrupted (SIGINT: it resumes every process it
    /// froze, then exits) and ends `stopped`; 409 `chaos-not-running` when none runs.
    pub fn stop_asked(&self) -> Result<ChaosView, Problem> {
        let mut slot = self.lock();
        let Some(run) = slot.as_mut().filter(|r| r.view.state == "running") else {
            return Err(Problem::ChaosNotRunning(
                "No chaos run is going on: the last one has ended (see its state in GET /api/snapshot)."
                    .into(),
            ));
        };
        run.stop_asked = true;
        if let Some(pid) = run.view.pid {
            process::signal(pid, Signal::SIGINT);
        }
        tracing::warn!(pid = ?run.view.pid, "the dashboard's chaos run was stopped by an admin");
        Ok(run.view.clone())
    }

    /// Stops a run that is still going (SIGINT: it resumes every process it froze, then exits).
    pub fn stop(&self) {
        if let Some(run) = self.lock().as_ref().filter(|r| r.view.state == "running")
            && let Some(pid) = run.view.pid
        {
            process::signal(pid, Signal::SIGINT);
        }
    }
}

/// The verdict file's summary: the verdict, seed, requests, losses, health, and the faults
/// (without the second-by-second timeline).
fn read_verdict(path: &Path) -> Option<serde_json::Value> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_VERDICT)
        .read_to_string(&mut text)
        .ok()?;
    summary(&serde_json::from_str(&text).ok()?)
}

/// What the snapshot keeps of a verdict.
pub fn summary(v: &serde_json::Value) -> Option<serde_json::Value> {
    v.get("verdict")?.as_str()?;
    let requests = |k: &str| {
        serde_json::json!({"sent": v[k]["sent"], "ok": v[k]["ok"], "failed": v[k]["failed"],
            "p99_ms": v[k]["p99_ms"]})
    };
    let faults: Vec<serde_json::Value> = v["faults"]
        .as_array()
        .map(|f| {
            f.iter()
                .take(MAX_FAULTS_SHOWN)
                .map(|f| serde_json::json!({"at_s": f["at_s"], "kind": f["kind"], "role": f["role"]}))
                .collect()
        })
        .unwrap_or_default();
    Some(serde_json::json!({
        "verdict": v["verdict"], "seed": v["seed"], "lost": v["lost"],
        "acknowledged": v["acknowledged"], "back_to_full_health_s": v["back_to_full_health_s"],
        "writes": requests("writes"), "reads": requests("reads"),
        "faults": faults, "faults_total": v["faults"].as_array().map_or(0, Vec::len),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_is_bounded_and_names_the_parameter_at_fault() {
        let s = Scenario::parse(b"").expect("defaults");
        assert_eq!((s.duration_secs, s.rate, s.faults), (30, 20, true));
        let s =
            Scenario::parse(br#"{"duration_secs": 5, "rate": 7, "faults": false}"#).expect("valid");
        assert_eq!((s.duration_secs, s.rate, s.faults), (5, 7, false));
        for (body, parameter) in [
            (&br#"{"duration_secs": 4}"#[..], "duration_secs"),
            (br#"{"duration_secs": 301}"#, "duration_secs"),
            (br#"{"rate": 0}"#, "rate"),
            (br#"{"rate": 201}"#, "rate"),
        ] {
            let p = Scenario::parse(body).expect_err("out of bounds");
            assert_eq!(p.body()["errors"][0]["parameter"], parameter, "{p:?}");
            assert_eq!(p.parts().0, axum::http::StatusCode::BAD_REQUEST);
        }
        assert!(matches!(
            Scenario::parse(br#"{"nope": 1}"#),
            Err(Problem::BadRequest(_))
        ));
        assert!(matches!(
            Scenario::parse(b"not json"),
            Err(Problem::BadRequest(_))
        ));
    }

    #[test]
    fn a_verdict_is_summed_up_without_its_timeline() {
        let v = serde_json::json!({"verdict": "survived", "seed": 7, "lost": 0, "acknowledged": 10,
            "writes": {"sent": 10, "ok": 10, "failed": 0, "p99_ms": 3.0},
            "reads": {"sent": 10, "ok": 9, "failed": 1, "p99_ms": 2.0},
            "faults": [{"at_s": 1.5, "kind": "kill", "role": "api-1", "detail": "pid 9"}],
            "timeline": [{"t": 0}]});
        let s = summary(&v).expect("a verdict");
        assert_eq!(s["faults"][0]["role"], "api-1");
        assert_eq!(s["faults_total"], 1);
        assert_eq!(s["reads"]["failed"], 1);
        assert!(s.get("timeline").is_none());
        assert!(summary(&serde_json::json!({})).is_none());
    }

    /// A stand-in for `strata chaos` that prints two progress lines, waits, writes a verdict
    /// to its `--out` and exits.
    fn fake_chaos(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let exe = dir.join("fake-strata");
        std::fs::write(
            &exe,
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --out ] && out=$2; shift; done\n\
             echo '    1.0 s  Kill api-1: SIGKILL to pid 1' >&2\necho 'second line' >&2\n\
             sleep 1\nprintf '{\"verdict\":\"survived\",\"seed\":1,\"lost\":0,\"faults\":[]}' > \"$out\"\n",
        )
        .expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        exe
    }

    #[tokio::test]
    async fn one_run_at_a_time_its_lines_then_its_verdict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chaos = Chaos::new(fake_chaos(dir.path()), dir.path().to_path_buf());
        assert!(chaos.view().is_none());
        let s = Scenario::parse(br#"{"duration_secs": 5, "rate": 1}"#).expect("scenario");
        let view = chaos.start(s).expect("started");
        assert_eq!(view.state, "running");
        let p = chaos.start(s).expect_err("one at a time");
        assert!(matches!(p, Problem::ChaosRunning(_)), "{p:?}");
        assert_eq!(p.parts().0, axum::http::StatusCode::CONFLICT);
        let deadline = Instant::now() + Duration::from_secs(10);
        let done = loop {
            let v = chaos.view().expect("a run");
            if v.state != "running" {
                break v;
            }
            assert!(Instant::now() < deadline, "the run never ended: {v:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(done.state, "passed", "{done:?}");
        assert_eq!(done.lines.len(), 2, "{done:?}");
        assert!(done.lines[0].contains("Kill api-1"), "{done:?}");
        assert_eq!(
            done.verdict.as_ref().map(|v| v["lost"].clone()),
            Some(0.into())
        );
        assert!(!dir.path().join("dashboard-chaos-verdict.json").exists());
        // Another may start once it is over.
        chaos.start(s).expect("a second run");
        chaos.stop();
    }

    #[tokio::test]
    async fn a_run_that_writes_no_verdict_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chaos = Chaos::new(PathBuf::from("/bin/false"), dir.path().to_path_buf());
        chaos
            .start(Scenario::parse(b"").expect("scenario"))
            .expect("started");
        let deadline = Instant::now() + Duration::from_secs(10);
        while chaos.view().is_some_and(|v| v.state == "running") {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let v = chaos.view().expect("a run");
        assert_eq!(v.state, "failed");
        assert!(v.error.is_some(), "{v:?}");
    }
}
