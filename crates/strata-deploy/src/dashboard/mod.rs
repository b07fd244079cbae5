//! `strata dashboard`: the deployment's live dashboard, one web page served on loopback by a
//! role of the deployment (`[observe] dashboard = true` plans `dashboard-1`).
//!
//! - `GET /` — the page (`page.html`, inline CSS and JS, nothing fetched from elsewhere; its
//!   URLs relative, so that it works at `/` here and under `/dashboard/` through an edge,
//!   `--route`; an `ETag` and `no-cache`, so an edge stores it and revalidates it): every
//!   role as a box in its tier, coloured by health; the data tier's clusters, each primary
//!   with an arrow to each replica labelled with its lag, and the shard groups with their
//!   slots and users ([`data`]); each tier's requests/s, p99 and error ratio
//!   over the last five minutes; Prometheus's alerts ([`alerts`]); the slowest recent traces,
//!   each opening a waterfall of its spans; kill, restart, freeze and resume buttons, and drain
//!   and undrain on API servers behind a balancer.
//! - `GET /events` — server-sent events, one snapshot a second; at most [`MAX_CLIENTS`] at once.
//! - `GET /api/snapshot` — the latest snapshot as JSON.
//! - `POST /api/roles/{name}/kill|restart|freeze|resume` — an admin's bearer token required
//!   ([`admin`]); `…/drain|undrain` with the same check, asked of every balancer ([`drain`]).
//! - `POST /api/chaos` — an admin starts one bounded `strata chaos` run ([`chaos`]), and
//!   `DELETE /api/chaos` stops it; its progress and verdict are in the snapshot.
//! - `GET /api/traces/{trace_id}` — one trace's spans from every role ([`traces`]).
//! - `POST /api/login` — an email and password exchanged for an access token at an API server.
//! - `GET /healthz` — for `strata status`.
//!
//! Every other answer says `Cache-Control: no-store`: live, and some an admin's.
//!
//! One scrape loop ([`collect`]) feeds every client through a `watch` channel: a page costs
//! the roles nothing more. The maths of rates and quantiles is in [`metrics`].

pub mod admin;
pub mod alerts;
pub mod chaos;
pub mod collect;
pub mod data;
pub mod drain;
pub mod metrics;
pub mod problem;
pub mod traces;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use strata_core::ready::ReadyLine;
use tokio::sync::{Notify, Semaphore, watch};

use self::admin::Action;
use self::problem::Problem;
pub use crate::roles::DashboardArgs;

/// The listener the role announces.
pub const LISTENER: &str = DashboardArgs::LISTENER;
/// The most `/events` clients served at once.
pub const MAX_CLIENTS: usize = 16;
/// The largest request body read (a login).
const MAX_BODY: usize = 8 * 1024;
/// The page.
const PAGE: &str = include_str!("page.html");
/// The page's entity tag: a digest of its bytes (FNV-1a, 64 bits), fixed when it is built.
const PAGE_TAG: &str = {
    const DIGEST: u64 = fnv1a(PAGE.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const TAG: [u8; 18] = {
        let mut tag = [b'"'; 18];
        let mut i = 0;
        while i < 16 {
            tag[1 + i] = HEX[((DIGEST >> (60 - 4 * i)) & 0xf) as usize];
            i += 1;
        }
        tag
    };
    match std::str::from_utf8(&TAG) {
        Ok(tag) => tag,
        Err(_) => panic!("an entity tag is ASCII"),
    }
};

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// What every handler shares.
#[derive(Clone)]
struct Shared {
    dir: Arc<PathBuf>,
    name: Arc<str>,
    snapshots: watch::Receiver<Arc<str>>,
    clients: Arc<Semaphore>,
    http: reqwest::Client,
    /// Asks the roles for a trace's spans, with the scrape's timeouts.
    traces_http: reqwest::Client,
    /// Wakes the scrape loop to publish the roles at once after a button acted.
    nudge: Arc<Notify>,
    /// The chaos run started from the page.
    chaos: Arc<chaos::Chaos>,
}

fn app(shared: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/events", get(events))
        .route("/api/snapshot", get(snapshot))
        .route("/api/login", post(login))
        .route("/api/roles/{name}/{action}", post(act))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/chaos", post(start_chaos).delete(stop_chaos))
        .fallback(|| async { Problem::NotFound("No such page: the dashboard is at /.".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(no_store_unless_said))
        .with_state(shared)
}

/// Every answer but the page's is `no-store` (RFC 9111 §5.2.2.5): no cache, an edge's
/// included, keeps it.
async fn no_store_unless_said(mut r: Response) -> Response {
    r.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

/// Whether an `If-None-Match` list names the page's tag (weak comparison, RFC 9110 §13.1.2).
fn names_the_page(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == PAGE_TAG)
}

/// `GET /`: the page, with its `ETag` and `no-cache` (stored by the edges and browsers, and
/// revalidated before each use: a `304` without a body when it has not changed).
async fn page(headers: HeaderMap) -> Response {
    let mut r = if names_the_page(&headers) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = PAGE.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(PAGE_TAG));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ),
    );
    r
}

fn json(body: Arc<str>) -> Response {
    let mut r = body.to_string().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn snapshot(State(s): State<Shared>) -> Response {
    let latest = s.snapshots.borrow().clone();
    json(latest)
}

/// `GET /events`: the latest snapshot at once, then each new one, as `data:` lines.
async fn events(State(s): State<Shared>) -> Response {
    let Ok(permit) = s.clients.clone().try_acquire_owned() else {
        return Problem::Unavailable(format!(
            "{MAX_CLIENTS} pages are watching already; close one or use GET /api/snapshot."
        ))
        .into_response();
    };
    let mut rx = s.snapshots.clone();
    rx.mark_changed();
    let stream = futures_util::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        rx.changed().await.ok()?;
        let data = rx.borrow_and_update().clone();
        let frame = Bytes::from(format!("data: {data}\n\n"));
        Some((Ok::<_, std::convert::Infallible>(frame), (rx, permit)))
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /api/traces/{trace_id}`: every role's spans of one trace.
async fn trace(State(s): State<Shared>, Path(trace_id): Path<String>) -> Response {
    match traces::spans(&s.traces_http, &s.dir, &trace_id).await {
        Ok(found) => {
            let mut r = axum::Json(found).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(p) => p.into_response(),
    }
}

async fn login(State(s): State<Shared>, body: Bytes) -> Response {
    admin::login(&s.http, &s.dir, &body).await
}

async fn act(
    State(s): State<Shared>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let draining = match action.as_str() {
        "drain" => Some(true),
        "undrain" => Some(false),
        _ => None,
    };
    let signal = Action::parse(&action);
    if draining.is_none() && signal.is_none() {
        return Problem::UnknownAction(action.chars().take(64).collect()).into_response();
    }
    let token = match admin::bearer(&headers) {
        Ok(t) => t,
        Err(p) => return p.into_response(),
    };
    if let Err(p) = admin::require_admin(&s.http, &s.dir, token).await {
        return p.into_response();
    }
    let (Some(action), None) = (signal, draining) else {
        return drain_role(&s, &name, draining == Some(true)).await;
    };
    // Signalling waits (briefly) for the signal to take effect: a blocking thread's work.
    let (dir, own) = (s.dir.clone(), s.name.clone());
    let done = tokio::task::spawn_blocking(move || admin::act(&dir, &own, &name, action)).await;
    match done {
        Ok(Ok(done)) => {
            s.nudge.notify_one();
            (StatusCode::ACCEPTED, axum::Json(done)).into_response()
        }
        Ok(Err(p)) => p.into_response(),
        Err(e) => Problem::Unavailable(format!("The action did not finish: {e}")).into_response(),
    }
}

/// `POST /api/chaos`: `{"duration_secs", "rate", "faults"}` (each optional) → 202 with the
/// run, 409 while one runs.
async fn start_chaos(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let token = match admin::bearer(&headers) {
        Ok(t) => t,
        Err(p) => return p.into_response(),
    };
    if let Err(p) = admin::require_admin(&s.http, &s.dir, token).await {
        return p.into_response();
    }
    let scenario = match chaos::Scenario::parse(&body) {
        Ok(scenario) => scenario,
        Err(p) => return p.into_response(),
    };
    match admin::read_state(&s.dir) {
        Ok(state) if state.running => {}
        Ok(_) => {
            return Problem::Conflict("The deployment is stopping or stopped.".into())
                .into_response();
        }
        Err(p) => return p.into_response(),
    }
    match s.chaos.start(scenario) {
        Ok(run) => {
            s.nudge.notify_one();
            (StatusCode::ACCEPTED, axum::Json(run)).into_response()
        }
        Err(p) => p.into_response(),
    }
}

/// `DELETE /api/chaos`: an admin stops the running chaos run → 202 with it (it ends
/// `stopped`), 409 when none runs.
async fn stop_chaos(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let token = match admin::bearer(&headers) {
        Ok(t) => t,
        Err(p) => return p.into_response(),
    };
    if let Err(p) = admin::require_admin(&s.http, &s.dir, token).await {
        return p.into_response();
    }
    match s.chaos.stop_asked() {
        Ok(run) => {
            s.nudge.notify_one();
            (StatusCode::ACCEPTED, axum::Json(run)).into_response()
        }
        Err(p) => p.into_response(),
    }
}

/// `POST /api/roles/{name}/drain|undrain`, once the token is an admin's.
async fn drain_role(s: &Shared, name: &str, draining: bool) -> Response {
    let found = admin::read_state(&s.dir).and_then(|state| {
        let role = admin::role_named(&state, name)?.clone();
        if !state.running {
            return Err(Problem::Conflict(
                "The deployment is stopping or stopped.".into(),
            ));
        }
        Ok((state, role))
    });
    let (state, role) = match found {
        Ok(found) => found,
        Err(p) => return p.into_response(),
    };
    match drain::drain(&s.http, &state, &role, draining, drain::BALANCER_TIMEOUT).await {
        Ok(done) => {
            s.nudge.notify_one();
            axum::Json(done).into_response()
        }
        Err(p) => p.into_response(),
    }
}

/// Serves the dashboard until told to stop.
pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "the dashboard serves on loopback only, not {}: it can kill roles",
        args.listen
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe().context("cannot find the strata binary for chaos runs")?;
    let chaos = chaos::Chaos::new(exe, args.dir.clone());
    let collector = collect::Collector::new(args.dir.clone(), args.name.clone(), chaos.clone())?;
    let (tx, rx) = watch::channel::<Arc<str>>(Arc::from("{}"));
    let nudge = Arc::new(Notify::new());
    let scraping = tokio::spawn(collect::run(collector, tx, nudge.clone()));
    // Stopping the scrape loop drops the sender, which ends every `/events` stream, so the
    // graceful shutdown does not wait for pages that never close.
    let stop_scraping = scraping.abort_handle();
    let shared = Shared {
        dir: Arc::new(args.dir.clone()),
        name: Arc::from(args.name.as_str()),
        snapshots: rx,
        clients: Arc::new(Semaphore::new(MAX_CLIENTS)),
        http: reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .build()?,
        traces_http: traces::client()?,
        nudge,
        chaos: chaos.clone(),
    };
    // Listening for the stop signal before announcing readiness: a SIGTERM sent the moment
    // the role is ready stops it cleanly.
    let stop = strata_core::shutdown::signal(args.exit_on_stdin_eof);
    ReadyLine::new(&args.name)
        .with_addr(LISTENER, addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role = %args.name, %addr, "the dashboard is ready");
    axum::serve(listener, app(shared))
        .with_graceful_shutdown(async move {
            stop.await;
            stop_scraping.abort();
            chaos.stop();
        })
        .await
        .context("the dashboard's server failed")?;
    scraping.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_page_has_an_etag_and_answers_304_to_it() {
        assert_eq!(PAGE_TAG.len(), 18);
        assert!(PAGE_TAG.starts_with('"') && PAGE_TAG.ends_with('"'));
        let r = page(HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::ETAG], PAGE_TAG);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        for asked in [
            PAGE_TAG.to_string(),
            format!("\"x\", W/{PAGE_TAG}"),
            "*".into(),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::IF_NONE_MATCH,
                HeaderValue::from_str(&asked).expect("value"),
            );
            let r = page(headers).await;
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{asked}");
            assert_eq!(r.headers()[header::ETAG], PAGE_TAG);
        }
        let mut other = HeaderMap::new();
        other.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        assert_eq!(page(other).await.status(), StatusCode::OK);
    }

    #[test]
    fn the_page_asks_for_everything_by_relative_urls() {
        for absolute in [
            "fetch(\"/",
            "EventSource(\"/",
            "href=\"/",
            "src=\"/",
            "action=\"/",
        ] {
            assert!(!PAGE.contains(absolute), "{absolute} in page.html");
        }
        assert!(PAGE.contains("fetch(\"api/snapshot") || PAGE.contains("EventSource(\"events\")"));
    }
}
