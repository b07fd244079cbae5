//! The dashboard's error answers: RFC 9457 problem+json, with the same `urn:strata:problem:…`
//! types the API servers use. A problem caused by the role named in the path (unknown, not
//! running, frozen or not, the dashboard itself, not behind a balancer or behind one that did
//! not answer a drain) names that parameter in `errors`, as the API
//! servers' problems do: `[{"parameter": "name", "detail": …}]`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a dashboard request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("no Authorization: Bearer token was sent")]
    Unauthenticated(String),
    #[error("the token is not an admin's")]
    Forbidden(String),
    #[error("no role is named {0}")]
    UnknownRole(String),
    /// The role has no process to signal.
    #[error("{0}")]
    NotRunning(String),
    /// Freezing a role that is frozen already.
    #[error("{0}")]
    Frozen(String),
    /// Resuming a role that is not frozen.
    #[error("{0}")]
    NotFrozen(String),
    /// The dashboard's own role.
    #[error("{0}")]
    OwnRole(String),
    /// The deployment is stopping.
    #[error("{0}")]
    Conflict(String),
    /// A drain or an undrain of a role that is not an API server behind a balancer.
    #[error("{0}")]
    NotBalanced(String),
    /// A balancer did not answer a drain or an undrain in time.
    #[error("{0}")]
    BalancerSilent(String),
    /// A chaos run was asked for while one runs.
    #[error("{0}")]
    ChaosRunning(String),
    /// A stop was asked for while no chaos run runs.
    #[error("{0}")]
    ChaosNotRunning(String),
    /// A chaos run's parameter out of bounds: the parameter, and what is wrong.
    #[error("{1}")]
    BadChaos(&'static str, String),
    /// An action a role does not have (what was sent, cut short).
    #[error("no action is named {0}")]
    UnknownAction(String),
    /// A malformed trace id (what was sent, cut short).
    #[error("{0:?} is not a trace id")]
    BadTraceId(String),
    /// No role keeps any span of the trace.
    #[error("no role keeps trace {0}")]
    TraceNotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
}

impl Problem {
    /// Its status, type slug and title.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Problem::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
            ),
            Problem::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Problem::UnknownRole(_) => (StatusCode::NOT_FOUND, "role-not-found", "Role not found"),
            Problem::NotRunning(_) => (
                StatusCode::CONFLICT,
                "role-not-running",
                "The role is not running",
            ),
            Problem::Frozen(_) => (StatusCode::CONFLICT, "role-frozen", "The role is frozen"),
            Problem::NotFrozen(_) => (
                StatusCode::CONFLICT,
                "role-not-frozen",
                "The role is not frozen",
            ),
            Problem::OwnRole(_) => (StatusCode::CONFLICT, "own-role", "The dashboard's own role"),
            Problem::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Not possible now"),
            Problem::NotBalanced(_) => (
                StatusCode::CONFLICT,
                "role-not-balanced",
                "The role is not an API server behind a balancer",
            ),
            Problem::BalancerSilent(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "balancer-unavailable",
                "A balancer did not answer",
            ),
            Problem::ChaosRunning(_) => (
                StatusCode::CONFLICT,
                "chaos-running",
                "A chaos run is going on",
            ),
            Problem::ChaosNotRunning(_) => (
                StatusCode::CONFLICT,
                "chaos-not-running",
                "No chaos run is going on",
            ),
            Problem::BadChaos(..) => (
                StatusCode::BAD_REQUEST,
                "invalid-parameter",
                "Invalid parameter",
            ),
            Problem::UnknownAction(_) => (
                StatusCode::NOT_FOUND,
                "action-not-found",
                "Action not found",
            ),
            Problem::BadTraceId(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-parameter",
                "Invalid parameter",
            ),
            Problem::TraceNotFound(_) => {
                (StatusCode::NOT_FOUND, "trace-not-found", "Trace not found")
            }
            Problem::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Problem::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            Problem::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
        }
    }

    /// What went wrong, for a person.
    pub fn detail(&self) -> String {
        match self {
            Problem::UnknownRole(name) => format!(
                "There is no role named {name:?} in this deployment (see GET /api/snapshot)."
            ),
            Problem::UnknownAction(action) => format!(
                "A role has no action {action:?}: POST /api/roles/{{name}}/kill, …/restart, …/freeze, …/resume, …/drain or …/undrain."
            ),
            Problem::BadTraceId(id) => format!(
                "{id:?} is not a trace id: 32 lower-case hexadecimal digits, not all zeros."
            ),
            Problem::TraceNotFound(id) => format!(
                "No role keeps a span of trace {id} any more (each keeps its most recent and slowest)."
            ),
            Problem::Unauthenticated(d)
            | Problem::Forbidden(d)
            | Problem::NotRunning(d)
            | Problem::Frozen(d)
            | Problem::NotFrozen(d)
            | Problem::OwnRole(d)
            | Problem::Conflict(d)
            | Problem::NotBalanced(d)
            | Problem::BalancerSilent(d)
            | Problem::ChaosRunning(d)
            | Problem::ChaosNotRunning(d)
            | Problem::BadChaos(_, d)
            | Problem::Unavailable(d)
            | Problem::BadRequest(d)
            | Problem::NotFound(d) => d.clone(),
        }
    }

    /// The request parameter at fault, and what is wrong with it, when there is one: the
    /// role's `name` in `/api/roles/{name}/…`, the `trace_id` in `/api/traces/{trace_id}`, a
    /// chaos run's `duration_secs` or `rate`.
    pub fn fault(&self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Problem::UnknownRole(_) => ("name", "no role of this deployment has this name"),
            Problem::NotRunning(_) => ("name", "this role has no running process"),
            Problem::Frozen(_) => ("name", "this role is frozen already"),
            Problem::NotFrozen(_) => ("name", "this role is not frozen"),
            Problem::OwnRole(_) => ("name", "this role is the dashboard itself"),
            Problem::NotBalanced(_) => ("name", "this role is not an API server behind a balancer"),
            Problem::BalancerSilent(_) => (
                "name",
                "a balancer in front of this role did not answer; the drain state is partial",
            ),
            Problem::BadChaos("duration_secs", _) => ("duration_secs", "5 to 300 seconds"),
            Problem::BadChaos("rate", _) => ("rate", "1 to 200 writes per second"),
            Problem::BadChaos(parameter, _) => (*parameter, "out of bounds"),
            Problem::UnknownAction(_) => {
                ("action", "kill, restart, freeze, resume, drain or undrain")
            }
            Problem::BadTraceId(_) => (
                "trace_id",
                "32 lower-case hexadecimal digits, not all zeros",
            ),
            Problem::TraceNotFound(_) => ("trace_id", "no role keeps a span of this trace"),
            _ => return None,
        })
    }

    /// The problem+json document.
    pub fn body(&self) -> serde_json::Value {
        let (status, slug, title) = self.parts();
        let mut doc = serde_json::json!({
            "type": format!("urn:strata:problem:{slug}"),
            "title": title,
            "status": status.as_u16(),
            "detail": self.detail(),
        });
        if let Some((parameter, detail)) = self.fault() {
            doc["errors"] = serde_json::json!([{"parameter": parameter, "detail": detail}]);
        }
        doc
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (status, _, _) = self.parts();
        let mut r = (status, self.body().to_string()).into_response();
        let headers = r.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"strata\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_is_problem_json_with_its_status_and_the_role_it_names() {
        let r = Problem::UnknownRole("nope-9".into()).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            r.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/problem+json"[..])
        );
        let body = Problem::UnknownRole("nope-9".into()).body();
        assert_eq!(body["type"], "urn:strata:problem:role-not-found");
        assert_eq!(body["status"], 404);
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("nope-9"))
        );
        assert_eq!(body["errors"][0]["parameter"], "name", "{body:#}");
        let r = Problem::Unauthenticated("no token".into()).into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            Problem::Forbidden("x".into()).parts().0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            Problem::Conflict("x".into()).parts().0,
            StatusCode::CONFLICT
        );
        assert!(
            Problem::Conflict("stopping".into())
                .body()
                .get("errors")
                .is_none()
        );
        let r = Problem::Unavailable("busy".into()).into_response();
        assert_eq!(
            r.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn an_unknown_action_names_the_action_parameter() {
        let body = Problem::UnknownAction("explode".into()).body();
        assert_eq!(body["status"], 404);
        assert_eq!(body["type"], "urn:strata:problem:action-not-found");
        assert_eq!(body["errors"][0]["parameter"], "action", "{body:#}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("explode"))
        );
    }

    #[test]
    fn a_role_in_the_wrong_state_is_a_conflict_naming_the_role_parameter() {
        for (p, slug) in [
            (Problem::NotRunning("x".into()), "role-not-running"),
            (Problem::Frozen("x".into()), "role-frozen"),
            (Problem::NotFrozen("x".into()), "role-not-frozen"),
            (Problem::OwnRole("x".into()), "own-role"),
            (Problem::NotBalanced("x".into()), "role-not-balanced"),
        ] {
            assert_eq!(p.fault().map(|f| f.0), Some("name"));
            let body = p.body();
            assert_eq!(body["status"], 409, "{body:#}");
            assert_eq!(body["type"], format!("urn:strata:problem:{slug}"));
            assert_eq!(body["errors"][0]["parameter"], "name", "{body:#}");
            assert!(body["errors"][0]["detail"].is_string());
        }
    }
}
