//! The dashboard's buttons that break things: kill a role (SIGKILL to its process and the
//! engine under it — a crash) or restart it (SIGTERM — a clean stop); either way the supervisor
//! starts it again. Freeze (SIGSTOP to the role's whole process tree: it neither answers nor
//! dies, as a machine that stalls) and resume (SIGCONT) leave the supervisor out: a frozen
//! role stays frozen until resumed, killed or restarted (drain and undrain, in [`super::drain`],
//! pass the same check). Only an admin may: the bearer token is checked by asking one of the
//! deployment's own API servers an admin-only question with it, so the dashboard holds no key
//! and no account store of its own. The token is passed on, never logged.
//!
//! `POST /api/login` exchanges an email and password for an access token at an API server's
//! `POST /sessions`, so the page needs nothing but the dashboard's address.

use std::path::Path;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nix::sys::signal::Signal;
use strata_engines::process;

use super::problem::Problem;
use crate::roles::RoleKind;
use crate::state::{self, DeploymentState, RolePhase, RoleState};

/// How long the API server has to answer a token check or a login.
const API_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a kill waits for the process to be gone, and a freeze or a resume for it to be
/// stopped or running, before it answers.
const SIGNAL_WAIT: Duration = Duration::from_secs(1);
/// The longest bearer token accepted (a Strata access token is a few hundred bytes).
const MAX_TOKEN: usize = 4096;
/// Two account ids asked about with the token. Only an admin may see an account that is not
/// their own (anyone else is answered 403), and no one owns both, so an answer of "here it is"
/// (2xx) or "there is none" (404 `user-not-found`) to both comes from an admin's token only.
const ACCOUNTS_ASKED: [&str; 2] = ["9223372036854775807", "9223372036854775806"];
/// The longest role name looked up.
const MAX_ROLE_NAME: usize = 64;

/// What a button does to a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL to the role's process and its descendants: a crash.
    Kill,
    /// SIGTERM to the role's process: it stops cleanly.
    Restart,
    /// SIGSTOP to the role's process and its descendants: it stalls.
    Freeze,
    /// SIGCONT to the role's process and its descendants: a frozen role goes on.
    Resume,
}

impl Action {
    /// The action named in `POST /api/roles/{name}/{action}`.
    pub fn parse(name: &str) -> Option<Action> {
        Some(match name {
            "kill" => Action::Kill,
            "restart" => Action::Restart,
            "freeze" => Action::Freeze,
            "resume" => Action::Resume,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Restart => "restart",
            Action::Freeze => "freeze",
            Action::Resume => "resume",
        }
    }
}

/// The bearer token of a request, or why there is none.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Problem> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Problem::Unauthenticated(
            "Send `Authorization: Bearer <access token>` of an admin (log in with POST /api/login)."
                .into(),
        )
    })?;
    let text = value.to_str().map_err(|_| {
        Problem::Unauthenticated("The Authorization header is not valid text.".into())
    })?;
    let token = text
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| {
            !t.is_empty() && t.len() <= MAX_TOKEN && t.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            Problem::Unauthenticated(
                "The Authorization header is not `Bearer <access token>`.".into(),
            )
        })?;
    Ok(token)
}

/// An API server of the deployment that is ready, and not frozen: its HTTP address.
fn api_server(state: &DeploymentState) -> Result<String, Problem> {
    state
        .roles
        .iter()
        .filter(|r| r.kind == RoleKind::Api && r.state == RolePhase::Ready)
        .filter(|r| r.pid.is_none_or(|p| !process::is_stopped(p)))
        .find_map(|r| r.addrs.get("http").cloned())
        .ok_or_else(|| {
            Problem::Unavailable(
                "No API server is ready to check the token; try again in a moment.".into(),
            )
        })
}

pub(super) fn read_state(dir: &Path) -> Result<DeploymentState, Problem> {
    state::read(dir)
        .map_err(|e| Problem::Unavailable(format!("{e}")))?
        .ok_or_else(|| Problem::Unavailable("No deployment runs in this directory.".into()))
}

/// Whether `token` is an admin's, asked of an API server ([`ACCOUNTS_ASKED`]); a bad token is
/// answered 401 there.
pub async fn require_admin(http: &reqwest::Client, dir: &Path, token: &str) -> Result<(), Problem> {
    let api = api_server(&read_state(dir)?)?;
    for id in ACCOUNTS_ASKED {
        admin_may_see(http, &api, token, id).await?;
    }
    Ok(())
}

/// Whether the token may look at account `id`.
async fn admin_may_see(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    id: &str,
) -> Result<(), Problem> {
    let answer = http
        .get(format!("http://{api}/accounts/{id}"))
        .bearer_auth(token)
        .timeout(API_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            Problem::Unavailable(format!(
                "The API server at {api} did not answer: {}",
                e.without_url()
            ))
        })?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let kind = match answer.json::<serde_json::Value>().await {
        Ok(doc) => doc["type"].as_str().unwrap_or("").to_string(),
        Err(_) => String::new(),
    };
    match status {
        StatusCode::NOT_FOUND if kind.ends_with(":user-not-found") => Ok(()),
        StatusCode::UNAUTHORIZED => Err(Problem::Unauthenticated(
            "The access token is not valid (expired, revoked or malformed): log in again.".into(),
        )),
        StatusCode::FORBIDDEN => Err(Problem::Forbidden(
            "Only an admin may kill, restart, freeze, resume, drain or undrain roles (strata admin grant EMAIL)."
                .into(),
        )),
        other => Err(Problem::Unavailable(format!(
            "The API server at {api} could not check the token (it answered {other})."
        ))),
    }
}

/// The role of the deployment named `name` (a well-formed name only), or a problem naming it.
pub(super) fn role_named<'a>(
    state: &'a DeploymentState,
    name: &str,
) -> Result<&'a RoleState, Problem> {
    let valid = !name.is_empty()
        && name.len() <= MAX_ROLE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    state
        .roles
        .iter()
        .find(|r| valid && r.name == name)
        .ok_or_else(|| Problem::UnknownRole(name.chars().take(MAX_ROLE_NAME).collect()))
}

/// What was done, for the answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Done {
    pub role: String,
    pub action: &'static str,
    pub pid: u32,
    pub signal: &'static str,
}

/// Sends the action's signal to role `name` of the deployment in `dir`, unless it is this
/// dashboard (`own`), not running, or already in the state asked for (a freeze of a frozen
/// role, a resume of one that runs). Blocking: it waits up to [`SIGNAL_WAIT`] for the signal's
/// effect.
pub fn act(dir: &Path, own: &str, name: &str, action: Action) -> Result<Done, Problem> {
    let state = read_state(dir)?;
    let role = role_named(&state, name)?;
    if role.name == own {
        return Err(Problem::OwnRole(format!(
            "{own} is this dashboard: it will not {} itself (use strata down, or kill its pid by hand).",
            action.as_str()
        )));
    }
    if !state.running {
        return Err(Problem::Conflict(
            "The deployment is stopping or stopped: nothing would restart the role.".into(),
        ));
    }
    let pid = role.pid.filter(|p| process::is_alive(*p)).ok_or_else(|| {
        Problem::NotRunning(format!(
            "{name} is not running right now (it is {}): there is no process to {}.",
            role.state.as_str(),
            action.as_str()
        ))
    })?;
    let frozen = process::is_stopped(pid);
    // Each waits (briefly) for its effect, so that the snapshot published next shows it.
    let signal = match action {
        Action::Kill => {
            process::signal_all(pid, Signal::SIGKILL);
            process::wait_gone(pid, SIGNAL_WAIT);
            "SIGKILL"
        }
        Action::Restart => {
            process::signal(pid, Signal::SIGTERM);
            if frozen {
                // A stopped process acts on SIGTERM only once it runs again.
                process::signal_all(pid, Signal::SIGCONT);
            }
            "SIGTERM"
        }
        Action::Freeze if frozen => {
            return Err(Problem::Frozen(format!(
                "{name} is frozen already (pid {pid}): resume it first."
            )));
        }
        Action::Freeze => {
            process::signal_all(pid, Signal::SIGSTOP);
            process::wait_stopped(pid, SIGNAL_WAIT);
            "SIGSTOP"
        }
        Action::Resume if !frozen => {
            return Err(Problem::NotFrozen(format!(
                "{name} is not frozen (pid {pid} runs): there is nothing to resume."
            )));
        }
        Action::Resume => {
            process::signal_all(pid, Signal::SIGCONT);
            let deadline = std::time::Instant::now() + SIGNAL_WAIT;
            while process::is_stopped(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            "SIGCONT"
        }
    };
    tracing::warn!(role = %name, pid, signal, "a role was signalled from the dashboard");
    Ok(Done {
        role: name.to_string(),
        action: action.as_str(),
        pid,
        signal,
    })
}

/// `POST /api/login`: `{"email","password"}` → the API's answer to `POST /sessions`, with only
/// the access token and its lifetime kept from a success.
pub async fn login(http: &reqwest::Client, dir: &Path, body: &[u8]) -> Response {
    let doc: serde_json::Value = match serde_json::from_slice(body) {
        Ok(doc) => doc,
        Err(_) => {
            return Problem::BadRequest(
                "The body must be JSON: {\"email\": \"…\", \"password\": \"…\"}.".into(),
            )
            .into_response();
        }
    };
    let (Some(email), Some(password)) = (doc["email"].as_str(), doc["password"].as_str()) else {
        return Problem::BadRequest("Both `email` and `password` are needed.".into())
            .into_response();
    };
    let api = match read_state(dir).and_then(|s| api_server(&s)) {
        Ok(api) => api,
        Err(p) => return p.into_response(),
    };
    let answer = http
        .post(format!("http://{api}/sessions"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .timeout(API_TIMEOUT)
        .send()
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            return Problem::Unavailable(format!(
                "The API server at {api} did not answer: {}",
                e.without_url()
            ))
            .into_response();
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let doc: serde_json::Value = answer.json().await.unwrap_or_default();
    if status.is_success() {
        let kept = serde_json::json!({
            "access_token": doc["access_token"],
            "token_type": doc["token_type"],
            "expires_in": doc["expires_in"],
        });
        return (status, axum::Json(kept)).into_response();
    }
    let mut r = (status, doc.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/problem+json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_a_well_formed_bearer_token_is_taken() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer(&h), Err(Problem::Unauthenticated(_))));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(bearer(&h), Err(Problem::Unauthenticated(_))));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(bearer(&h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer a.b.c"),
        );
        assert_eq!(bearer(&h).ok(), Some("a.b.c"));
        let long = format!("Bearer {}", "x".repeat(MAX_TOKEN + 1));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&long).expect("header"),
        );
        assert!(bearer(&h).is_err());
    }

    #[test]
    fn actions_are_named_in_the_path() {
        for a in [
            Action::Kill,
            Action::Restart,
            Action::Freeze,
            Action::Resume,
        ] {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("drain"), None);
    }

    #[test]
    fn a_role_is_frozen_once_resumed_once_and_a_frozen_api_server_checks_no_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let pid = sleeper.id();
        let mut addrs = std::collections::BTreeMap::new();
        addrs.insert("http".to_string(), "127.0.0.1:1".to_string());
        let state = DeploymentState {
            topology: "t".into(),
            shard_map: None,
            supervisor_pid: std::process::id(),
            running: true,
            roles: vec![RoleState {
                name: "api-1".into(),
                kind: RoleKind::Api,
                pid: Some(pid),
                addrs,
                restarts: 0,
                state: RolePhase::Ready,
                last_error: None,
            }],
        };
        state::write(dir.path(), &state).expect("write");
        assert!(api_server(&state).is_ok());
        let p = act(dir.path(), "dashboard-1", "api-1", Action::Resume).expect_err("runs");
        assert!(matches!(p, Problem::NotFrozen(_)), "{p:?}");
        let done = act(dir.path(), "dashboard-1", "api-1", Action::Freeze).expect("freeze");
        assert_eq!((done.signal, done.pid), ("SIGSTOP", pid));
        assert!(process::is_stopped(pid), "stopped when answered");
        assert!(
            matches!(api_server(&state), Err(Problem::Unavailable(_))),
            "a frozen API server would never answer a token check"
        );
        let p = act(dir.path(), "dashboard-1", "api-1", Action::Freeze).expect_err("frozen");
        assert!(matches!(p, Problem::Frozen(_)), "{p:?}");
        let done = act(dir.path(), "dashboard-1", "api-1", Action::Resume).expect("resume");
        assert_eq!(done.signal, "SIGCONT");
        assert!(!process::is_stopped(pid), "running when answered");
        process::signal(pid, Signal::SIGKILL);
        let _ = sleeper.wait();
    }

    #[test]
    fn an_unknown_role_a_stopped_one_and_the_dashboard_itself_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let role = |name: &str, kind, pid| RoleState {
            name: name.into(),
            kind,
            pid,
            addrs: Default::default(),
            restarts: 0,
            state: RolePhase::Ready,
            last_error: None,
        };
        let state = DeploymentState {
            topology: "t".into(),
            shard_map: None,
            supervisor_pid: std::process::id(),
            running: true,
            roles: vec![
                role("dashboard-1", RoleKind::Dashboard, Some(std::process::id())),
                role("api-1", RoleKind::Api, None),
            ],
        };
        state::write(dir.path(), &state).expect("write");
        let p = act(dir.path(), "dashboard-1", "nope-9", Action::Kill).expect_err("unknown");
        assert_eq!(p, Problem::UnknownRole("nope-9".into()));
        let p = act(dir.path(), "dashboard-1", "../../x", Action::Kill).expect_err("invalid");
        assert!(matches!(p, Problem::UnknownRole(_)));
        let p = act(dir.path(), "dashboard-1", "dashboard-1", Action::Kill).expect_err("self");
        assert!(matches!(p, Problem::OwnRole(_)), "{p:?}");
        let p = act(dir.path(), "dashboard-1", "api-1", Action::Restart).expect_err("no pid");
        assert!(
            matches!(&p, Problem::NotRunning(d) if d.contains("not running")),
            "{p:?}"
        );
        let p = act(dir.path(), "dashboard-1", "api-1", Action::Freeze).expect_err("no pid");
        assert!(matches!(&p, Problem::NotRunning(_)), "{p:?}");
    }
}
