//! The load `strata chaos` keeps up while it injects faults: open-loop (requests leave at a
//! fixed rate whatever the answers do, so a stall shows as failed or slow requests, not as
//! fewer requests), authenticated writes that create users, and reads of users whose creation
//! was acknowledged — each read carrying that write's commit token, so a correct deployment
//! answers it with what was written or not at all, never with older data. Every request is
//! recorded: when it left, how long it took, and how it ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::Rng as _;
use serde_json::{Value, json};
use tokio::sync::{Mutex, RwLock};

/// Deadline of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most requests in flight at once: past it a request is recorded as failed without leaving.
const MAX_IN_FLIGHT: usize = 4096;

/// An admin's session against the deployment's entry point: it logs in again when its access
/// token expires.
pub struct Session {
    http: reqwest::Client,
    base: String,
    email: String,
    password: String,
    token: RwLock<String>,
    relogin: Mutex<()>,
}

impl Session {
    /// Signs up an admin account through `base`, grants it the admin role in the deployment's
    /// own account store (as `strata admin grant` does), and logs it in.
    pub async fn admin(dir: &std::path::Path, base: &str, email: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot build an HTTP client")?;
        let password = "chaos admin password".to_string();
        let profile = json!({"firstName": "Chaos", "lastName": "Admin",
            "address": {"streetAddress": "1 Ops Way", "city": "Testville", "state": "TS", "postalCode": "00501"},
            "phoneNumbers": []});
        let r = http
            .post(format!("http://{base}/accounts"))
            .json(&json!({"email": email, "password": password, "profile": profile}))
            .send()
            .await
            .with_context(|| format!("cannot reach the deployment at {base}"))?;
        anyhow::ensure!(
            r.status().as_u16() == 201 || r.status().as_u16() == 409,
            "cannot sign up the chaos admin: {}",
            r.status()
        );
        let parsed = strata_core::email::Email::parse(email)
            .map_err(|e| anyhow::anyhow!("{email:?} is not an email address: it {e}"))?;
        strata_deploy::accounts::open(dir)
            .await?
            .set_role(&parsed, strata_store::accounts::ADMIN_ROLE, true)
            .await
            .context("cannot grant the chaos admin its role")?;
        let session = Self {
            http,
            base: base.to_string(),
            email: email.to_string(),
            password,
            token: RwLock::new(String::new()),
            relogin: Mutex::new(()),
        };
        session.login().await?;
        Ok(session)
    }

    /// The entry point it sends to, `HOST:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn login(&self) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("http://{}/sessions", self.base))
            .json(&json!({"email": self.email, "password": self.password}))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 201, "login answered {}", r.status());
        let body: Value = r.json().await?;
        let token = body["access_token"]
            .as_str()
            .context("no access token")?
            .to_string();
        *self.token.write().await = token;
        Ok(())
    }

    /// Sends a request built by `build`; on a 401 (an expired token) logs in once and sends it
    /// again. The status, or 0 when no answer came.
    pub(crate) async fn send(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> (u16, Option<reqwest::Response>) {
        for attempt in 0..2 {
            let token = self.token.read().await.clone();
            let r = build(&self.http, &self.base)
                .bearer_auth(&token)
                .send()
                .await;
            match r {
                Ok(r) if r.status().as_u16() == 401 && attempt == 0 => {
                    let _one = self.relogin.lock().await;
                    if *self.token.read().await == token {
                        let _ = self.login().await;
                    }
                }
                Ok(r) => return (r.status().as_u16(), Some(r)),
                Err(_) => return (0, None),
            }
        }
        (401, None)
    }
}

/// A write whose creation was acknowledged.
#[derive(Debug, Clone)]
pub struct Acked {
    /// `/users/ID`.
    pub location: String,
    pub first_name: String,
    /// Its commit token (`Strata-Commit`), for reads that must see it.
    pub commit: Option<String>,
}

/// One request and how it ended.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it left, from the start of the load.
    pub at: Duration,
    pub latency: Duration,
    /// The status; 0 when no answer came in time (or it never left).
    pub status: u16,
    /// A read that answered 200 with other data than was written.
    pub wrong: bool,
}

impl Record {
    pub fn ok(&self) -> bool {
        matches!(self.status, 200 | 201) && !self.wrong
    }
}

/// Everything the load saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub writes: Vec<Record>,
    pub reads: Vec<Record>,
    pub acked: Vec<Acked>,
}

/// Creates a user; `Ok` with what was acknowledged.
async fn write(session: &Session, n: u64) -> (u16, Option<Acked>) {
    let first_name = format!("C{n}");
    let body = json!({"firstName": first_name, "lastName": "Chaos",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"}});
    let (status, response) = session
        .send(|http, base| http.post(format!("http://{base}/users")).json(&body))
        .await;
    let acked = match (status, response) {
        (201, Some(r)) => r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(|location| Acked {
                location: location.to_string(),
                first_name,
                commit: r
                    .headers()
                    .get("strata-commit")
                    .and_then(|c| c.to_str().ok())
                    .map(str::to_string),
            }),
        _ => None,
    };
    (status, acked)
}

/// Reads an acknowledged user with its commit token: `(status, wrong)`.
pub async fn read(session: &Session, user: &Acked) -> (u16, bool) {
    let (status, response) = session
        .send(|http, base| {
            let mut r = http.get(format!("http://{base}{}", user.location));
            if let Some(token) = &user.commit {
                r = r.header("strata-read-after", token);
            }
            r
        })
        .await;
    match (status, response) {
        (200, Some(r)) => match r.json::<Value>().await {
            Ok(v) => (200, v["firstName"] != user.first_name.as_str()),
            Err(_) => (0, false),
        },
        (status, _) => (status, false),
    }
}

/// Runs writes and reads, each at `rate` per second, for `duration`.
pub async fn run(session: Arc<Session>, rate: f64, duration: Duration) -> Outcome {
    let started = Instant::now();
    let acked: Arc<RwLock<Vec<Acked>>> = Arc::default();
    let writes: Arc<Mutex<Vec<Record>>> = Arc::default();
    let reads: Arc<Mutex<Vec<Record>>> = Arc::default();
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0u64;
    while started.elapsed() < duration {
        ticks.tick().await;
        n += 1;
        let at = started.elapsed();
        if in_flight.load(std::sync::atomic::Ordering::Relaxed) >= MAX_IN_FLIGHT {
            let r = Record {
                at,
                latency: Duration::ZERO,
                status: 0,
                wrong: false,
            };
            writes.lock().await.push(r.clone());
            reads.lock().await.push(r);
            continue;
        }
        let pick = {
            let known = acked.read().await;
            (!known.is_empty()).then(|| known[rand::rng().random_range(0..known.len())].clone())
        };
        for task in 0..2 {
            let (session, acked, writes, reads, in_flight) = (
                session.clone(),
                acked.clone(),
                writes.clone(),
                reads.clone(),
                in_flight.clone(),
            );
            let pick = pick.clone();
            in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tasks.spawn(async move {
                let sent = Instant::now();
                if task == 0 {
                    let (status, ack) = write(&session, n).await;
                    if let Some(ack) = ack {
                        acked.write().await.push(ack);
                    }
                    writes.lock().await.push(Record {
                        at,
                        latency: sent.elapsed(),
                        status,
                        wrong: false,
                    });
                } else if let Some(user) = pick {
                    let (status, wrong) = read(&session, &user).await;
                    reads.lock().await.push(Record {
                        at,
                        latency: sent.elapsed(),
                        status,
                        wrong,
                    });
                }
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        // Reap finished tasks as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let take = |m: Arc<Mutex<Vec<Record>>>| async move {
        let mut v = std::mem::take(&mut *m.lock().await);
        v.sort_by_key(|r| r.at);
        v
    };
    Outcome {
        writes: take(writes).await,
        reads: take(reads).await,
        acked: std::mem::take(&mut *acked.write().await),
    }
}
