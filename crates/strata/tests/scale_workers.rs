//! `strata scale workers N` on a running deployment (the default topology, one worker): more
//! workers start and are supervised like the others (one killed with SIGKILL comes back); down
//! to none, an upload waits in the queue; back to one, it is processed; `strata down` stops the
//! added workers too. Bad counts and a missing deployment are refused with a clear error.

mod common;

use std::time::{Duration, Instant};

use common::{Cleanup, admin_client, explain, role, status_json, strata};
use serde_json::Value;
use strata_photos::testdata;
use strata_photos::upload::Format;

fn workers(status: &Value) -> Vec<(String, u64, bool)> {
    status["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter(|r| r["kind"] == "worker")
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["pid"].as_u64().unwrap_or(0),
                r["healthy"] == true,
            )
        })
        .collect()
}

fn scale(dir: &std::path::Path, count: &str) {
    let out = strata(&["scale", "workers", count], dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata scale", &out, dir)
    );
}

async fn job_state(admin: &reqwest::Client, lb: &str, job: &str) -> String {
    common::job_doc(admin, lb, job).await["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn upload(admin: &reqwest::Client, lb: &str) -> String {
    let r = admin
        .put(format!("http://{lb}/users/12/photo"))
        .header("content-type", "image/png")
        .body(testdata::image(Format::Png, 320, 240))
        .send()
        .await
        .expect("PUT photo");
    assert_eq!(r.status().as_u16(), 202);
    r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_scale_up_and_down_while_the_deployment_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("deploy");
    let _cleanup = Cleanup(&dir);

    // Nothing runs yet: a clear refusal.
    let out = strata(&["scale", "workers", "2"], &dir);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no deployment"),
        "{}",
        explain("scale without a deployment", &out, &dir)
    );

    let out = strata(&["up", "-d", "--port", "0"], &dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata up -d", &out, &dir)
    );
    let out = strata(&["scale", "workers", "65"], &dir);
    assert!(!out.status.success(), "65 workers are refused");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("65") && said.contains("0..=64"), "{said}");

    scale(&dir, "3");
    let status = status_json(&dir);
    let now = workers(&status);
    assert_eq!(
        now.iter().map(|w| w.0.as_str()).collect::<Vec<_>>(),
        ["worker-1", "worker-2", "worker-3"],
        "{status:#}"
    );
    assert!(now.iter().all(|w| w.2), "every worker healthy: {now:?}");

    // An added worker is supervised like the planned ones.
    let old = now[2].1;
    strata_engines::process::signal(
        u32::try_from(old).expect("pid"),
        nix::sys::signal::Signal::SIGKILL,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let w = workers(&status_json(&dir));
        if w.len() == 3 && w[2].1 != old && w[2].1 != 0 && w[2].2 {
            break;
        }
        assert!(Instant::now() < deadline, "worker-3 is not back: {w:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb")
        .to_string();
    let admin = admin_client(&dir, &lb).await;

    // None: an upload is accepted and waits.
    scale(&dir, "0");
    let status = status_json(&dir);
    assert!(workers(&status).is_empty(), "{status:#}");
    for pid in now.iter().map(|w| w.1).filter(|p| *p != old) {
        assert!(
            !strata_engines::process::is_alive(u32::try_from(pid).expect("pid")),
            "worker {pid} stopped"
        );
    }
    let job = upload(&admin, &lb).await;
    assert_eq!(
        job_state(&admin, &lb, &job).await,
        "queued",
        "no worker runs"
    );

    // One again: the waiting job is processed.
    scale(&dir, "1");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = job_state(&admin, &lb, &job).await;
        if state == "done" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job is {state} 60 s after a worker came back{}",
            common::logs(&dir, 20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    scale(&dir, "2");
    let added = workers(&status_json(&dir));
    assert_eq!(added.len(), 2, "{added:?}");
    let out = strata(&["down"], &dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata down", &out, &dir)
    );
    for (name, pid, _) in added {
        assert!(
            !strata_engines::process::is_alive(u32::try_from(pid).expect("pid")),
            "{name} was stopped by strata down"
        );
    }
}
