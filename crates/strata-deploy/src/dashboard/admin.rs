//! The dashboard's buttons that break things: kill a role (SIGKILL to its process and the
//! engine under it — a crash) or restart it (SIGTERM — a clean stop); either way the supervisor
//! starts it again. Only an admin may: the bearer token is checked by asking one of the
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
use crate::state::{self, DeploymentState, RolePhase};

/// How long the API server has to answer a token check or a login.
const API_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a kill waits for the process to be gone before it answers.
const KILL_WAIT: Duration = Duration::from_secs(1);
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
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Restart => "restart",
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

/// An API server of the deployment that is ready: its HTTP address.
fn api_server(state: &DeploymentState) -> Result<String, Problem> {
    state
        .roles
        .iter()
        .filter(|r| r.kind == RoleKind::Api && r.state == RolePhase::Ready)
        .find_map(|r| r.addrs.get("http").cloned())
        .ok_or_else(|| {
            Problem::Unavailable(
                "No API server is ready to check the token; try again in a moment.".into(),
            )
        })
}

fn read_state(dir: &Path) -> Result<DeploymentState, Problem> {
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
            "Only an admin may kill or restart roles (strata admin grant EMAIL).".into(),
        )),
        other => Err(Problem::Unavailable(format!(
            "The API server at {api} could not check the token (it answered {other})."
        ))),
    }
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
/// dashboard (`own`) or not running. Blocking: a kill waits up to [`KILL_WAIT`] for the
/// process to be gone.
pub fn act(dir: &Path, own: &str, name: &str, action: Action) -> Result<Done, Problem> {
    let valid = !name.is_empty()
        && name.len() <= MAX_ROLE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let state = read_state(dir)?;
    let role = state
        .roles
        .iter()
        .find(|r| valid && r.name == name)
        .ok_or_else(|| Problem::UnknownRole(name.chars().take(MAX_ROLE_NAME).collect()))?;
    if role.name == own {
        return Err(Problem::Conflict(format!(
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
        Problem::Conflict(format!(
            "{name} is not running right now (it is {}): there is no process to {}.",
            role.state.as_str(),
            action.as_str()
        ))
    })?;
    let signal = match action {
        Action::Kill => {
            process::signal_all(pid, Signal::SIGKILL);
            // So that the snapshot published next shows it gone.
            process::wait_gone(pid, KILL_WAIT);
            "SIGKILL"
        }
        Action::Restart => {
            process::signal(pid, Signal::SIGTERM);
            "SIGTERM"
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
    fn an_unknown_role_a_stopped_one_and_the_dashboard_itself_are_refused() {
        use crate::state::RoleState;
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
        assert!(matches!(p, Problem::Conflict(_)), "{p:?}");
        let p = act(dir.path(), "dashboard-1", "api-1", Action::Restart).expect_err("no pid");
        assert!(
            matches!(&p, Problem::Conflict(d) if d.contains("not running")),
            "{p:?}"
        );
    }
}
