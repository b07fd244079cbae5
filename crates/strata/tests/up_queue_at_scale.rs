//! The queue tier at scale, through `strata up -f deploy/11-queue-at-scale.toml`: jobs on a
//! RabbitMQ node (`rabbitmq-1`), photos in SeaweedFS (`s3-1`), three API servers behind the
//! balancer and two workers — the short version of the faults benchmark
//! (`bench/queue_faults.py`).
//!
//! Uploads go on while, in turn, the RabbitMQ VM is killed with SIGKILL (its role restarts it)
//! and — while it is still down — `worker-1` is killed too; then `api-2` is killed. Every upload
//! answered 202 must end `done` with its photo served by content address, the one poison file
//! (a PNG whose pixels are corrupt) must end in the dead-letter queue after its attempts, and
//! nothing else may be there.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cleanup, admin_client, explain, role, status_json, strata, up_topology};
use nix::sys::signal::Signal;
use serde_json::Value;
use strata_photos::testdata;
use strata_photos::upload::Format;

const PRESET: &str = include_str!("../../../deploy/11-queue-at-scale.toml");

/// Users, each uploading one photo.
const USERS: usize = 60;

fn pid_of(status: &Value, name: &str) -> u32 {
    role(status, name)["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("{name} has no pid: {status:#}"))
}

/// The RabbitMQ VM (`beam.smp`) under the `rabbitmq-1` role.
fn beam_of(role_pid: u32) -> u32 {
    strata_engines::process::descendants(role_pid)
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim().starts_with("beam"))
        })
        .expect("the RabbitMQ VM runs under rabbitmq-1")
}

/// Polls `strata status` until `name` runs as a process other than `old` and is healthy.
fn wait_restarted(dir: &std::path::Path, name: &str, old: u32) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = status_json(dir);
        let r = role(&s, name);
        if r["pid"].as_u64().is_some_and(|p| p != u64::from(old)) && r["healthy"] == true {
            return s;
        }
        assert!(Instant::now() < deadline, "{name} is not back: {s:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn create_user(admin: &reqwest::Client, lb: &str, i: usize) -> u64 {
    let profile = serde_json::json!({"firstName": format!("Photo{i}"), "lastName": "Owner",
        "address": {"streetAddress": "1 Queue St", "city": "Brokerville", "state": "TS", "postalCode": "00501"},
        "phoneNumbers": []});
    let r = admin
        .post(format!("http://{lb}/users"))
        .json(&profile)
        .send()
        .await
        .expect("POST /users");
    assert_eq!(r.status().as_u16(), 201, "create user {i}");
    let doc: Value = r.json().await.expect("user json");
    doc["id"]
        .as_u64()
        .or_else(|| doc["id"].as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("a user id in {doc}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_survive_a_broker_a_worker_and_an_api_server_killed_and_poison_ends_in_the_dlq() {
    if let Err(missing) = strata_engines::Engine::SeaweedFs.locate() {
        panic!("{missing}");
    }
    let (_tmp, dir) = up_topology(PRESET);
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb")
        .to_string();
    let broker_url = format!(
        "amqp://guest:guest@{}/%2f",
        role(&status, "rabbitmq-1")["addrs"]["amqp"]
            .as_str()
            .expect("amqp")
    );
    let admin = admin_client(&dir, &lb).await;
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(create_user(&admin, &lb, i).await);
    }
    let poison_owner = create_user(&admin, &lb, USERS).await;

    // Uploads at a steady pace from two clients; each answer recorded.
    let accepted: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    // When each accepted upload was answered, to show that the faults overlapped the uploads.
    let answered: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let refused: Arc<Mutex<Vec<(u64, u16)>>> = Arc::default();
    // Set once api-2 is killed: each client keeps its last uploads until then (up to 90 s), so
    // uploads overlap the last fault however long the broker takes to come back.
    let api_killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut uploaders = Vec::new();
    for half in users.chunks(USERS / 2) {
        let (admin, lb, half) = (admin.clone(), lb.clone(), half.to_vec());
        let (accepted, refused, answered) = (accepted.clone(), refused.clone(), answered.clone());
        let api_killed = api_killed.clone();
        uploaders.push(tokio::spawn(async move {
            let held_back = half.len().saturating_sub(3);
            for (n, user) in half.into_iter().enumerate() {
                if n == held_back {
                    let deadline = Instant::now() + Duration::from_secs(90);
                    while !api_killed.load(std::sync::atomic::Ordering::SeqCst)
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                let side = 200 + 8 * u32::try_from(n).unwrap_or(0);
                let r = admin
                    .put(format!("http://{lb}/users/{user}/photo"))
                    .header("content-type", "image/jpeg")
                    .body(testdata::image(Format::Jpeg, side, side * 3 / 4))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let job = r.headers()["location"]
                            .to_str()
                            .expect("location")
                            .to_string();
                        accepted.lock().expect("lock").insert(user, job);
                        answered.lock().expect("lock").push(Instant::now());
                    }
                    Ok(r) => refused
                        .lock()
                        .expect("lock")
                        .push((user, r.status().as_u16())),
                    Err(_) => refused.lock().expect("lock").push((user, 0)),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    let poison = admin
        .put(format!("http://{lb}/users/{poison_owner}/photo"))
        .header("content-type", "image/png")
        .body(testdata::poison_png(64, 64))
        .send()
        .await
        .expect("PUT poison");
    assert_eq!(
        poison.status().as_u16(),
        202,
        "the poison passes the upload checks"
    );
    let poison_job = poison.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();

    // Fault 1: the broker's VM, killed outright. Fault 2, while it is down: a worker.
    let d = dir.clone();
    let killed_flag = api_killed.clone();
    let (broker_down, api_down) = tokio::task::spawn_blocking(move || {
        let s = status_json(&d);
        let broker = pid_of(&s, "rabbitmq-1");
        let worker = pid_of(&s, "worker-1");
        let killed = Instant::now();
        strata_engines::process::signal(beam_of(broker), Signal::SIGKILL);
        strata_engines::process::signal(worker, Signal::SIGKILL);
        wait_restarted(&d, "rabbitmq-1", broker);
        let broker_down = killed..Instant::now();
        wait_restarted(&d, "worker-1", worker);
        // Fault 3: an API server, while uploads go on.
        let api = pid_of(&status_json(&d), "api-2");
        let killed = Instant::now();
        strata_engines::process::signal(api, Signal::SIGKILL);
        killed_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        wait_restarted(&d, "api-2", api);
        (broker_down, killed..Instant::now())
    })
    .await
    .expect("faults");
    for u in uploaders {
        u.await.expect("uploader");
    }
    let answered = answered.lock().expect("lock").clone();
    let during =
        |window: &std::ops::Range<Instant>| answered.iter().filter(|t| window.contains(t)).count();
    let after_api_kill = answered.iter().filter(|t| **t >= api_down.start).count();
    eprintln!(
        "accepted while the broker was down: {} (for {:?}); after api-2 was killed: {after_api_kill}",
        during(&broker_down),
        broker_down.end - broker_down.start
    );
    assert!(
        during(&broker_down) > 0 && after_api_kill > 0,
        "the uploads must overlap the faults: {} accepted while the broker was down, {after_api_kill} after api-2 was killed",
        during(&broker_down)
    );
    let accepted = accepted.lock().expect("lock").clone();
    let refused = refused.lock().expect("lock").clone();
    // Only the API server's death may refuse an upload (its connections cut mid-request).
    assert!(
        refused.len() <= 3 && accepted.len() + refused.len() == USERS,
        "accepted {}, refused {refused:?}",
        accepted.len()
    );

    // Every accepted upload is processed, its photo served by content address.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pending: BTreeMap<u64, String> = accepted.clone();
    while !pending.is_empty() {
        let mut still = BTreeMap::new();
        for (user, job) in pending {
            let state = common::job_doc(&admin, &lb, &job).await;
            match state["state"].as_str() {
                Some("done") => {}
                // A problem answer (no state: the API could not read the job just then) is
                // asked again; the deadline bounds it.
                Some("queued" | "processing") | None => {
                    still.insert(user, job);
                }
                other => panic!(
                    "job {job} of user {user} ended {other:?}: {state}{}",
                    common::logs(&dir, 40)
                ),
            }
        }
        pending = still;
        assert!(
            Instant::now() < deadline || pending.is_empty(),
            "{} jobs not done within 120 s: {pending:?}{}",
            pending.len(),
            common::logs(&dir, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for user in accepted.keys() {
        let r = no_redirects
            .get(format!("http://{lb}/users/{user}/photo?size=64"))
            .send()
            .await
            .expect("GET photo");
        assert_eq!(r.status().as_u16(), 307, "user {user}'s photo");
        let url = r.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        let img = no_redirects
            .get(format!("http://{lb}{url}"))
            .send()
            .await
            .expect("GET image");
        assert_eq!(img.status().as_u16(), 200, "{url}");
        let decoded = testdata::decode(&img.bytes().await.expect("bytes"));
        assert_eq!(decoded.width().max(decoded.height()), 64, "{url}");
    }

    // The poison: failed after its attempts, and the only dead letter.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = common::job_doc(&admin, &lb, &poison_job).await;
        if state["state"] == "failed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the poison did not fail: {state}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Only the poison is dead. Its job may have been published twice (the outbox relay's
    // publish was cut by the broker's death before its confirm, so the relay published it
    // again), each copy ending dead; a copy dead-lettered twice is listed once.
    let queue_cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["queue", "--url", &broker_url])
            .args(args)
            .output()
            .expect("run strata queue");
        assert!(
            out.status.success(),
            "{}",
            explain(&format!("strata queue {args:?}"), &out, &dir)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = queue_cli(&["dlq", "list", "--limit", "100"]);
    let poison_id = poison_job.rsplit('/').next().expect("the poison's job id");
    let letters: Vec<&str> = listed.lines().collect();
    assert!(
        !letters.is_empty()
            && letters
                .iter()
                .all(|l| l.contains(&format!("\"photo-job {poison_id}"))),
        "only the poison (job {poison_id}) is dead: {listed}"
    );
    let stats: Value = serde_json::from_str(&queue_cli(&["stats", "--json"])).expect("stats json");
    let photos = &stats[0];
    assert_eq!(photos["queue"], "photos", "{stats}");
    assert_eq!(
        photos["dead"],
        letters.len(),
        "as listed: {stats}\n{listed}"
    );
    assert_eq!(photos["ready"], 0, "{stats}");
    assert_eq!(photos["in_flight"], 0, "{stats}");

    let out = strata(&["down"], &dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata down", &out, &dir)
    );
}
