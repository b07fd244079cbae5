//! The API server: the router (every route, the problem+json fallbacks, the observing
//! middleware) and [`Application`], which binds first and serves after (port 0 allowed).

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::state::AppState;
use crate::{accounts, idempotency, observe, openapi, ops, photos, problem, sessions, users};

/// The router: every route, the problem+json fallbacks, and the observing middleware.
///
/// `Idempotency-Key` is honoured on `POST /users`, `PATCH /users/{id}` (per user) and
/// `POST /accounts` (sign-up); the session routes ignore it — a login or refresh answered from
/// a store would hand out tokens again (see [`idempotency`]).
pub fn app(state: AppState) -> Router {
    use axum::middleware::from_fn_with_state;
    use axum::routing::{get as g, post};
    let per_user = from_fn_with_state(state.clone(), idempotency::per_user);
    let anonymous = from_fn_with_state(state.clone(), idempotency::anonymous);
    Router::new()
        .route(
            "/users",
            post(users::create)
                .route_layer(per_user.clone())
                .get(users::list),
        )
        .route(
            "/users/{id}",
            axum::routing::patch(users::patch)
                .route_layer(per_user)
                .get(users::get_one)
                .put(users::replace)
                .delete(users::delete),
        )
        .route(
            "/users/{id}/photo",
            axum::routing::put(photos::upload)
                .get(photos::get_photo)
                .delete(photos::delete),
        )
        .route("/jobs/{id}", g(photos::job))
        .route("/photos/{key}", g(photos::image))
        .route("/accounts", post(accounts::create).route_layer(anonymous))
        .route("/accounts/{id}", g(accounts::get_one))
        .route(
            "/accounts/{id}/password",
            axum::routing::put(accounts::change_password),
        )
        .route("/sessions", post(sessions::login).get(sessions::list))
        .route("/sessions/refresh", post(sessions::refresh))
        .route("/sessions/current", axum::routing::delete(sessions::logout))
        .route("/sessions/{id}", axum::routing::delete(sessions::revoke))
        .route("/.well-known/jwks.json", g(sessions::jwks))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/traces", get(ops::traces))
        .route("/traces/{trace_id}", get(ops::trace))
        .route("/openapi.json", get(openapi::serve))
        .fallback(|| async { problem::ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { problem::ApiError::MethodNotAllowed })
        .layer(axum::middleware::map_response(no_store_unless_said))
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(state)
}

/// Caching is opt-in per route: a response that does not say how it may be cached (errors,
/// metrics, health) says `no-store`.
async fn no_store_unless_said(mut r: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    r.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

/// A bound, not yet serving, API server.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
}

impl Application {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn build(addr: SocketAddr, state: AppState) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener,
            addr,
            state,
        })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits for in-flight
    /// requests to finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(
            self.listener,
            app(self.state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}
