//! The dashboard's drain and undrain buttons: an API server is taken out of (or put back into)
//! every balancer's rotation without stopping it, so requests in flight finish and no new one
//! reaches it. Each balancer names its backends after the API roles (`api-1`, …) and keeps its
//! drain state on its admin listener (`POST /admin/backends/{name}/drain|undrain`,
//! `GET /admin/backends`); the dashboard asks every balancer of the deployment at once, each
//! with a timeout, and says which did not answer. Each balancer keeps its drains in its drain
//! file (`DIR/lb/<name>.drained.json`), so one that restarts drains them again.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::problem::Problem;
use crate::roles::RoleKind;
use crate::state::{DeploymentState, RoleState};

/// How long a balancer has to answer a drain, an undrain or a listing.
pub const BALANCER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a balancer has to answer `GET /admin/backends` (the scrape loop's timeout).
const LISTING_TIMEOUT: Duration = Duration::from_millis(800);
/// The most of a balancer's `GET /admin/backends` answer read.
const MAX_LISTING: usize = 256 * 1024;

/// One balancer's answer to a drain or an undrain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalancerAnswer {
    pub balancer: String,
    /// Whether the balancer drains the backend now.
    pub draining: bool,
}

/// What a drain or an undrain did, for the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drained {
    pub role: String,
    pub action: &'static str,
    /// Every balancer that has the role as a backend, with what it does now.
    pub balancers: Vec<BalancerAnswer>,
}

/// What one balancer said.
enum Said {
    Done,
    /// It has no backend of that name.
    NoSuchBackend,
    Silent(String),
}

/// The deployment's balancers with their admin addresses (`None` while one has none yet).
fn balancers(state: &DeploymentState) -> Vec<(&RoleState, Option<&String>)> {
    state
        .roles
        .iter()
        .filter(|r| r.kind == RoleKind::Lb)
        .map(|r| (r, r.addrs.get("admin")))
        .collect()
}

/// Drains (or undrains) the API server `role` on every balancer of the deployment: 200 once
/// every balancer that fronts it has; a problem naming `name` for a role that is not an API
/// server behind a balancer, and 503 naming `name` when a balancer did not answer in time
/// (those that answered have acted: the drain is partial until it is asked again).
pub async fn drain(
    http: &reqwest::Client,
    state: &DeploymentState,
    role: &RoleState,
    draining: bool,
    timeout: Duration,
) -> Result<Drained, Problem> {
    let action = if draining { "drain" } else { "undrain" };
    if role.kind != RoleKind::Api {
        return Err(Problem::NotBalanced(format!(
            "{} is a {} role: only an API server behind a balancer can be drained.",
            role.name,
            role.kind.as_str()
        )));
    }
    let lbs = balancers(state);
    if lbs.is_empty() {
        return Err(Problem::NotBalanced(format!(
            "This deployment has no balancer ([lb] in the topology): nothing sends {} requests that a drain could stop.",
            role.name
        )));
    }
    let asks = lbs.iter().map(|(lb, admin)| async move {
        let Some(admin) = admin else {
            return Said::Silent(format!("{} has no admin address yet", lb.name));
        };
        let url = format!("http://{admin}/admin/backends/{}/{action}", role.name);
        match http.post(url).timeout(timeout).send().await {
            Ok(r) if r.status().is_success() => Said::Done,
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Said::NoSuchBackend,
            Ok(r) => Said::Silent(format!("{} at {admin} answered {}", lb.name, r.status())),
            Err(e) if e.is_timeout() => Said::Silent(format!(
                "{} at {admin} did not answer within {} ms",
                lb.name,
                timeout.as_millis()
            )),
            Err(e) => Said::Silent(format!(
                "{} at {admin} did not answer: {}",
                lb.name,
                e.without_url()
            )),
        }
    });
    let said = futures_util::future::join_all(asks).await;
    let mut answers = Vec::new();
    let mut silent = Vec::new();
    for ((lb, _), said) in lbs.iter().zip(said) {
        match said {
            Said::Done => answers.push(BalancerAnswer {
                balancer: lb.name.clone(),
                draining,
            }),
            Said::NoSuchBackend => {}
            Said::Silent(why) => silent.push(why),
        }
    }
    if !silent.is_empty() {
        let done: Vec<&str> = answers.iter().map(|a| a.balancer.as_str()).collect();
        return Err(Problem::BalancerSilent(format!(
            "{}; the {action} of {} is partial (done by: {}): ask again.",
            silent.join("; "),
            role.name,
            if done.is_empty() {
                "none".to_string()
            } else {
                done.join(", ")
            }
        )));
    }
    if answers.is_empty() {
        return Err(Problem::NotBalanced(format!(
            "No balancer of this deployment has {} as a backend.",
            role.name
        )));
    }
    tracing::warn!(role = %role.name, action, "a backend was drained or undrained from the dashboard");
    Ok(Drained {
        role: role.name.clone(),
        action,
        balancers: answers,
    })
}

/// Which backends each balancer drains now, from its `GET /admin/backends`: backend name →
/// the balancers draining it. A balancer that does not answer keeps what it said last
/// (`known`), so a frozen balancer does not make a drain look lifted; one gone from the state
/// is forgotten.
pub async fn drained_now(
    http: &reqwest::Client,
    state: &DeploymentState,
    known: &mut BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, Vec<String>> {
    let lbs = balancers(state);
    let asks = lbs.iter().map(|(_, admin)| async move {
        let admin = admin.as_ref()?;
        let url = format!("http://{admin}/admin/backends");
        let body = listing(http, url).await?;
        draining_in(&body)
    });
    let listed = futures_util::future::join_all(asks).await;
    known.retain(|lb, _| lbs.iter().any(|(r, _)| &r.name == lb));
    for ((lb, _), listed) in lbs.iter().zip(listed) {
        if let Some(names) = listed {
            known.insert(lb.name.clone(), names);
        }
    }
    let mut by_backend: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (lb, names) in known.iter() {
        for name in names {
            by_backend.entry(name.clone()).or_default().push(lb.clone());
        }
    }
    by_backend
}

/// A balancer's `GET /admin/backends` body, when it answers 2xx in time within
/// [`MAX_LISTING`] bytes.
async fn listing(http: &reqwest::Client, url: String) -> Option<String> {
    let mut response = http.get(url).timeout(LISTING_TIMEOUT).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_LISTING {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).ok()
}

/// The names of the backends a balancer's `GET /admin/backends` answer says it drains.
pub fn draining_in(body: &str) -> Option<Vec<String>> {
    let doc: serde_json::Value = serde_json::from_str(body).ok()?;
    let backends = doc["backends"].as_array()?;
    Some(
        backends
            .iter()
            .filter(|b| b["draining"] == true)
            .filter_map(|b| b["name"].as_str())
            .filter(|n| n.len() <= 64)
            .map(str::to_string)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::RolePhase;
    use strata_lb::{Algorithm, BackendSpec, OutlierPolicy, Pool};

    fn role(name: &str, kind: RoleKind, admin: Option<String>) -> RoleState {
        let mut addrs = BTreeMap::new();
        if let Some(a) = admin {
            addrs.insert("admin".to_string(), a);
        }
        RoleState {
            name: name.into(),
            kind,
            pid: None,
            addrs,
            restarts: 0,
            state: RolePhase::Ready,
            last_error: None,
        }
    }

    fn deployment(roles: Vec<RoleState>) -> DeploymentState {
        DeploymentState {
            topology: "t".into(),
            shard_map: None,
            supervisor_pid: std::process::id(),
            running: true,
            roles,
        }
    }

    /// A real balancer's admin listener (the lb crate's own router) fronting `backends`.
    async fn balancer(backends: &[&str]) -> (String, Arc<Pool>) {
        let specs: Vec<BackendSpec> = backends
            .iter()
            .enumerate()
            .map(|(i, n)| BackendSpec {
                name: (*n).to_string(),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1 + i as u16)),
                weight: 1,
            })
            .collect();
        let pool = Arc::new(Pool::new(
            "api",
            Algorithm::RoundRobin,
            OutlierPolicy::default(),
            &specs,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let router = strata_lb::admin::router(pool.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (addr, pool)
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
    }

    #[tokio::test]
    async fn a_drain_asks_every_balancer_and_the_listing_shows_it_until_undrained() {
        let (a, pool_a) = balancer(&["api-1", "api-2"]).await;
        let (b, pool_b) = balancer(&["api-1", "api-2"]).await;
        let state = deployment(vec![
            role("lb-1", RoleKind::Lb, Some(a)),
            role("lb-2", RoleKind::Lb, Some(b)),
            role("api-1", RoleKind::Api, None),
            role("api-2", RoleKind::Api, None),
        ]);
        let http = client();
        let done = drain(&http, &state, &state.roles[3], true, BALANCER_TIMEOUT)
            .await
            .expect("drained");
        assert_eq!(done.action, "drain");
        let names: Vec<&str> = done.balancers.iter().map(|b| b.balancer.as_str()).collect();
        assert_eq!(names, ["lb-1", "lb-2"]);
        for pool in [&pool_a, &pool_b] {
            let views = pool.views();
            assert!(views.iter().any(|v| v.name == "api-2" && v.draining));
            assert!(views.iter().any(|v| v.name == "api-1" && !v.draining));
        }
        let mut known = BTreeMap::new();
        let now = drained_now(&http, &state, &mut known).await;
        assert_eq!(now.get("api-2"), Some(&vec!["lb-1".into(), "lb-2".into()]));
        assert!(!now.contains_key("api-1"));

        drain(&http, &state, &state.roles[3], false, BALANCER_TIMEOUT)
            .await
            .expect("undrained");
        assert!(pool_a.views().iter().all(|v| !v.draining));
        let now = drained_now(&http, &state, &mut known).await;
        assert!(now.is_empty(), "{now:?}");
    }

    #[tokio::test]
    async fn a_balancer_that_does_not_answer_makes_a_problem_naming_it() {
        let (a, pool_a) = balancer(&["api-1"]).await;
        // Accepts connections and never answers.
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mute_addr = mute.local_addr().expect("addr").to_string();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = mute.accept().await {
                held.push(s);
            }
        });
        let state = deployment(vec![
            role("lb-1", RoleKind::Lb, Some(a)),
            role("lb-2", RoleKind::Lb, Some(mute_addr.clone())),
            role("api-1", RoleKind::Api, None),
        ]);
        let http = client();
        let p = drain(
            &http,
            &state,
            &state.roles[2],
            true,
            Duration::from_millis(300),
        )
        .await
        .expect_err("lb-2 is mute");
        let Problem::BalancerSilent(detail) = &p else {
            panic!("{p:?}")
        };
        assert!(
            detail.contains("lb-2") && detail.contains(&mute_addr),
            "{detail}"
        );
        assert!(detail.contains("done by: lb-1"), "{detail}");
        assert_eq!(p.body()["errors"][0]["parameter"], "name");
        assert_eq!(p.parts().0, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(pool_a.views()[0].draining, "lb-1 acted");

        // The listing keeps what a silent balancer said last.
        let mut known = BTreeMap::from([("lb-2".to_string(), vec!["api-9".to_string()])]);
        let now = tokio::time::timeout(
            Duration::from_secs(5),
            drained_now(&client_with_timeout(), &state, &mut known),
        )
        .await
        .expect("bounded");
        assert_eq!(now.get("api-1"), Some(&vec!["lb-1".to_string()]));
        assert_eq!(now.get("api-9"), Some(&vec!["lb-2".to_string()]));
    }

    fn client_with_timeout() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(300))
            .build()
            .expect("client")
    }

    #[tokio::test]
    async fn only_an_api_server_behind_a_balancer_can_be_drained() {
        let (a, _pool) = balancer(&["api-1"]).await;
        let http = client();
        let state = deployment(vec![
            role("lb-1", RoleKind::Lb, Some(a)),
            role("api-1", RoleKind::Api, None),
            role("api-2", RoleKind::Api, None),
            role("worker-1", RoleKind::Worker, None),
        ]);
        for i in [2, 3, 0] {
            let p = drain(&http, &state, &state.roles[i], true, BALANCER_TIMEOUT)
                .await
                .expect_err("not balanced");
            assert!(matches!(p, Problem::NotBalanced(_)), "{p:?}");
            assert_eq!(p.body()["type"], "urn:strata:problem:role-not-balanced");
            assert_eq!(p.body()["errors"][0]["parameter"], "name");
        }
        let alone = deployment(vec![role("api-1", RoleKind::Api, None)]);
        let p = drain(&http, &alone, &alone.roles[0], true, BALANCER_TIMEOUT)
            .await
            .expect_err("no balancer");
        assert!(
            matches!(&p, Problem::NotBalanced(d) if d.contains("no balancer")),
            "{p:?}"
        );
    }

    #[test]
    fn the_listing_names_the_drained_backends_only() {
        let body = r#"{"pool":"api","backends":[{"name":"api-1","draining":false},{"name":"api-2","draining":true}]}"#;
        assert_eq!(draining_in(body), Some(vec!["api-2".to_string()]));
        assert_eq!(draining_in("not json"), None);
        assert_eq!(draining_in("{}"), None);
    }
}
