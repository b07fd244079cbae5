//! The proxy: accept HTTP/1.1 and h2c (prior knowledge) from clients, forward each request to
//! a backend over a pooled keep-alive connection ([`crate::upstream`]), and stream the answer
//! back.
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1, and any named in `Connection`) are removed both
//!   ways; `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` are added; `X-Request-Id` is
//!   kept when valid, generated otherwise, sent to the backend and returned to the client.
//! - **Retries.** A request that failed before any response byte arrived moves on to the next
//!   candidate when that is safe: it is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or
//!   any request with an `Idempotency-Key`), or it certainly never reached the backend (no
//!   connection, or hyper handed it back unwritten). It keeps moving until a backend answers;
//!   one that timed out is retried once only. Only bodies that can be replayed are retried: empty ones and
//!   those up to [`REPLAY_LIMIT`] bytes with a declared length, which are buffered; larger bodies
//!   stream through once. Retries spend a budget ([`RetryBudget`]) of at most 20% extra load.
//! - A pool with no eligible backend answers 503 problem+json at once; a backend that fails
//!   every attempt gives 502, one that is too slow 504. Error bodies never name a backend.
//!
//! Why this file is long: one request's path — header hygiene, the choice of candidates, each
//! attempt with its deadline, the retry decision and the response body that returns its
//! connection — is one concept whose steps share the same state; split apart, each piece
//! would need the others' internals. The connections themselves live in [`crate::upstream`],
//! the answers the balancer writes itself in [`crate::answers`], the smuggling guard and the
//! strict checks of request heads in [`crate::framing`] and [`crate::strict`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use strata_core::trace::{Sampler, SpanId, TraceContext};
use tracing::Instrument as _;

use crate::answers::{bad_body, https_redirect, problem};
pub use crate::hop::strip_hop_by_hop;
use crate::interim::Interim;
use crate::selection::{HashOn, RequestKey};
use crate::upstream::{OutBody, SendError, Upstream};
use crate::{Algorithm, Pool, Timeouts};

pub use crate::answers::ProxyBody;
pub use crate::upstream::BoxError;

/// What the balancer knows of a client connection, computed once per connection rather than
/// once per request.
#[derive(Debug)]
pub struct ClientConn {
    pub peer: SocketAddr,
    pub secure: bool,
    /// The client's address, as `X-Forwarded-For` names it.
    ip: HeaderValue,
    /// `Forwarded: for=…;proto=…`.
    forwarded: HeaderValue,
    /// Interim responses on their way to the client; its transport's guard writes them
    /// ([`crate::framing::FramingGuard::with_interim`]).
    pub interim: Arc<Interim>,
}

impl ClientConn {
    pub fn new(peer: SocketAddr, secure: bool) -> Self {
        let ip = peer.ip().to_string();
        let proto = if secure { "https" } else { "http" };
        let forwarded = if peer.is_ipv6() {
            format!("for=\"[{ip}]\";proto={proto}")
        } else {
            format!("for={ip};proto={proto}")
        };
        Self {
            peer,
            secure,
            ip: HeaderValue::from_maybe_shared(Bytes::from(ip))
                .unwrap_or(HeaderValue::from_static("unknown")),
            forwarded: HeaderValue::from_maybe_shared(Bytes::from(forwarded))
                .unwrap_or(HeaderValue::from_static("for=unknown")),
            interim: Interim::new(),
        }
    }

    /// Where a request of this `version` may be sent interim responses: HTTP/1.1 only.
    pub fn interim_for(&self, version: Version) -> Option<&Interim> {
        crate::interim::may_send(version).then_some(&*self.interim)
    }

    /// Adds what a backend learns of this client: `X-Forwarded-For` (appended to any the
    /// request carried), `X-Forwarded-Proto`, `Forwarded`, the request's id and its trace
    /// (`traceparent` naming this hop's span; a `tracestate` goes on only with the trace it
    /// belongs to, so it is dropped when this hop started a new trace).
    pub fn add_forwarding_headers(
        &self,
        headers: &mut HeaderMap,
        request_id: &HeaderValue,
        trace: &Trace,
    ) {
        headers.insert(TRACEPARENT, trace.header());
        if trace.parent.is_none() {
            headers.remove(TRACESTATE);
        }
        let xff = match headers.get(X_FORWARDED_FOR) {
            Some(prior) => {
                let mut v = Vec::with_capacity(prior.len() + 2 + self.ip.len());
                v.extend_from_slice(prior.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(self.ip.as_bytes());
                HeaderValue::from_maybe_shared(Bytes::from(v)).unwrap_or(self.ip.clone())
            }
            None => self.ip.clone(),
        };
        headers.insert(X_FORWARDED_FOR, xff);
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if self.secure { "https" } else { "http" }),
        );
        headers.append(header::FORWARDED, self.forwarded.clone());
        headers.insert(REQUEST_ID, request_id.clone());
    }
}

/// Where a request is in its trace at this hop (W3C Trace Context).
#[derive(Clone, Debug)]
pub struct Trace {
    /// The trace, with this hop's span id.
    pub ctx: TraceContext,
    /// The caller's span, when the request came with a valid `traceparent`.
    pub parent: Option<SpanId>,
}

impl Trace {
    /// Continues the request's trace when its `traceparent` is valid; otherwise (none, or
    /// malformed, which is never passed on) starts one, recorded as `sampler` decides.
    pub fn from_headers(headers: &HeaderMap, sampler: &Sampler) -> Self {
        let (ctx, parent) = strata_core::trace::continue_or_start(
            headers.get(TRACEPARENT).map(HeaderValue::as_bytes),
            sampler,
        );
        Self { ctx, parent }
    }

    /// `traceparent` for the next hop (this hop's span as the parent). Made only when a
    /// request goes on (an edge's cache hit never does).
    pub fn header(&self) -> HeaderValue {
        HeaderValue::from_maybe_shared(Bytes::from(self.ctx.header()))
            .unwrap_or(HeaderValue::from_static(""))
    }

    /// The balancer's span of this request when the trace is recorded; a disabled span
    /// (which costs nothing) otherwise. Its `status`, `backend` and `attempts` are recorded
    /// later.
    pub fn span(&self, method: &Method) -> tracing::Span {
        if !self.ctx.sampled {
            return tracing::Span::none();
        }
        tracing::info_span!(
            "lb",
            trace_id = %self.ctx.trace_id,
            span_id = %self.ctx.span_id,
            parent_id = self.parent.map(tracing::field::display),
            sampled = true,
            method = %method,
            status = tracing::field::Empty,
            backend = tracing::field::Empty,
            attempts = tracing::field::Empty,
        )
    }
}

/// The request's `X-Request-Id` when it is valid (printable ASCII, at most 128 bytes), a new
/// one otherwise.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&REQUEST_ID) {
        Some(v) if strata_core::request_id::is_valid(v.as_bytes()) => v.clone(),
        _ => HeaderValue::from_maybe_shared(Bytes::from(strata_core::request_id::generate()))
            .unwrap_or(HeaderValue::from_static("unknown")),
    }
}

/// Largest request body buffered so that the request can be retried.
pub const REPLAY_LIMIT: u64 = 64 * 1024;
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static(strata_core::trace::TRACEPARENT);
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Retries may add at most `ratio` of the request rate, plus a small reserve so a quiet pool
/// can still retry.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a retry token.
    milli_tokens: AtomicU64,
    deposit_milli: u64,
    max_milli: u64,
}

impl RetryBudget {
    pub fn new(ratio: f64, reserve: u64) -> Self {
        let max_milli = reserve.max(1) * 1000;
        Self {
            milli_tokens: AtomicU64::new(max_milli),
            deposit_milli: (ratio * 1000.0) as u64,
            max_milli,
        }
    }

    pub fn deposit(&self) {
        // Full (the steady state): a read only, so workers do not bounce the cache line.
        if self.milli_tokens.load(Ordering::Relaxed) >= self.max_milli {
            return;
        }
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t + self.deposit_milli).min(self.max_milli))
            });
    }

    pub fn try_withdraw(&self) -> bool {
        self.milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(1000))
            .is_ok()
    }
}

/// What the proxy needs per request. One per worker thread.
pub struct Proxy {
    pub pool: Arc<Pool>,
    /// This worker's connections to the backends.
    pub upstream: Upstream,
    pub timeouts: Timeouts,
    /// Shared by every worker: the budget is per pool, not per thread.
    pub budget: Arc<RetryBudget>,
    pub limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
    pub sticky: Option<crate::sticky::Sticky>,
    /// Plain-HTTP requests are redirected to HTTPS on this port — except those for
    /// `health_path`, so that a checker in front (`strata dns`) still sees the backends' health.
    pub redirect_to_https: Option<u16>,
    /// The path backends are checked on, which the balancer passes on over plain HTTP too.
    pub health_path: String,
    /// Which new traces are recorded.
    pub sampler: Sampler,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// Whether an answer counts against the backend for passive outlier detection: a 5xx, except
/// a 503 with `Retry-After`. That one is a live server saying a dependency of its (a database
/// failing over) is briefly unavailable — every other server would say the same, and ejecting
/// them all would turn a short write outage into a total one.
fn counts_as_failure<B>(resp: &Response<B>) -> bool {
    let status = resp.status();
    status.is_server_error()
        && !(status == StatusCode::SERVICE_UNAVAILABLE
            && resp.headers().contains_key(header::RETRY_AFTER))
}

fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key(IDEMPOTENCY_KEY)
}

fn hash_key<'a>(on: &HashOn, req: &'a Request<Incoming>) -> Option<&'a [u8]> {
    match on {
        HashOn::Header(name) => req.headers().get(name.as_str()).map(|v| v.as_bytes()),
        HashOn::Path => Some(req.uri().path().as_bytes()),
        HashOn::Cookie(name) => req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then_some(v.as_bytes())
            }),
    }
}

/// The request body: buffered (replayable) or streaming (one attempt). A streaming body that
/// turns out to be malformed (a bad chunk size, say) raises `client_fault`, so the failure is
/// answered 400 to the client instead of being blamed on the backend.
enum RequestBody {
    Replayable(Bytes),
    Streaming(Option<Incoming>, Arc<std::sync::atomic::AtomicBool>),
}

impl RequestBody {
    fn take(&mut self) -> Option<OutBody> {
        match self {
            RequestBody::Replayable(b) => Some(OutBody::full(b.clone())),
            RequestBody::Streaming(s, fault) => s.take().map(|inner| OutBody::Streaming {
                inner,
                fault: fault.clone(),
            }),
        }
    }

    fn client_fault(&self) -> bool {
        matches!(self, RequestBody::Streaming(_, fault) if fault.load(Ordering::Acquire))
    }
}

/// Joins the two halves of an upgraded connection (WebSocket and the like) and copies bytes
/// both ways until either side closes (the balancer's and the edge's).
pub fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    backend: String,
) {
    tokio::spawn(async move {
        match (client.await, upstream.await) {
            (Ok(client), Ok(upstream)) => {
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut upstream = hyper_util::rt::TokioIo::new(upstream);
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((up, down)) => {
                        tracing::debug!(%backend, up, down, "upgraded connection closed")
                    }
                    Err(e) => tracing::debug!(%backend, error = %e, "upgraded connection ended"),
                }
            }
            (c, u) => {
                tracing::warn!(%backend, client_ok = c.is_ok(), upstream_ok = u.is_ok(), "upgrade failed")
            }
        }
    });
}

impl Proxy {
    /// Serves one client request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: Arc<ClientConn>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        // A HTTP/1.1 upgrade that does not happen ends the connection after its answer: the
        // guard under the parser passed the bytes after the request on as they came (they may
        // have been another protocol), so no request may be read from them.
        let upgrade =
            req.version() == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE);
        let mut response = self.serve(req, &client).await;
        if upgrade && response.status() != StatusCode::SWITCHING_PROTOCOLS {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(response)
    }

    async fn serve(&self, req: Request<Incoming>, client: &ClientConn) -> Response<ProxyBody> {
        let started = Instant::now();
        if !client.secure
            && let Some(port) = self.redirect_to_https
            && req.uri().path() != self.health_path
        {
            return https_redirect(&req, port);
        }
        let request_id = request_id(req.headers());
        if let Some(limiter) = &self.limiter
            && let Err(wait) = limiter.check(client.peer.ip(), started)
        {
            let mut r = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests from this address; retry after the time in Retry-After.",
            );
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r.headers_mut().insert(REQUEST_ID, request_id);
            metrics::counter!("strata_lb_rate_limited_total", "pool" => self.pool.name.clone())
                .increment(1);
            return r;
        }
        let method = req.method().clone();
        let trace = Trace::from_headers(req.headers(), &self.sampler);
        let span = trace.span(&method);
        let (mut response, backend_used, attempts) = self
            .forward(req, client, &request_id, &trace, started)
            .instrument(span.clone())
            .await;
        response
            .headers_mut()
            .insert(REQUEST_ID, request_id.clone());
        let status = response.status().as_u16();
        let elapsed = started.elapsed().as_secs_f64();
        match (&backend_used, status) {
            (Some(b), 200) => {
                let m = b.ok_metrics(&self.pool.name);
                m.requests.increment(1);
                m.latency.record(elapsed);
            }
            _ => {
                let backend = backend_used
                    .as_ref()
                    .map_or_else(|| "none".to_string(), |b| b.name.clone());
                let labels = [
                    ("pool", self.pool.name.clone()),
                    ("backend", backend),
                    ("status", status.to_string()),
                ];
                metrics::counter!("strata_lb_requests_total", &labels).increment(1);
                if status >= 500 {
                    metrics::counter!("strata_lb_errors_total", &labels).increment(1);
                }
                metrics::histogram!("strata_lb_request_duration_seconds", &labels).record(elapsed);
            }
        }
        let backend = backend_used.as_ref().map_or("none", |b| b.name.as_str());
        span.record("status", status);
        span.record("backend", backend);
        span.record("attempts", attempts);
        let _in_span = span.enter();
        tracing::info!(
            method = %method,
            status,
            backend,
            attempts,
            latency_ms = elapsed * 1000.0,
            request_id = %String::from_utf8_lossy(request_id.as_bytes()),
            trace_id = %trace.ctx.trace_id,
            "proxied"
        );
        response
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        client: &ClientConn,
        request_id: &HeaderValue,
        trace: &Trace,
        started: Instant,
    ) -> (
        Response<ProxyBody>,
        Option<Arc<crate::backend::Backend>>,
        u32,
    ) {
        // Everything up to the response head, retries included, ends by this deadline.
        let deadline = tokio::time::Instant::from_std(started) + self.timeouts.total;
        self.budget.deposit();
        let key_owned: Option<Vec<u8>> = match &self.pool.algorithm {
            Algorithm::ConsistentHash { on } => hash_key(on, &req).map(<[u8]>::to_vec),
            _ => None,
        };
        let key = RequestKey {
            client_ip: client.peer.ip(),
            hash_key: key_owned.as_deref(),
        };
        let mut candidates = self.pool.candidates(&key);
        // Sticky sessions: the backend the client's cookie names goes first, if it is eligible.
        let pinned = self
            .sticky
            .as_ref()
            .and_then(|s| s.from_headers(req.headers()));
        if let Some(name) = &pinned
            && let Some(pos) = candidates.iter().position(|b| &b.name == name)
        {
            let b = candidates.remove(pos);
            candidates.insert(0, b);
        }
        if candidates.is_empty() {
            return (
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no-backend",
                    "No backend is available to serve this request; retry later.",
                ),
                None,
                0,
            );
        }
        let idempotent = is_idempotent(req.method(), req.headers());
        let (mut parts, incoming) = req.into_parts();
        // An HTTP/1.1 Upgrade (WebSocket): the client side of the tunnel, taken now, joined to
        // the backend's once the backend answers 101.
        // (RFC 9110 §7.8: `Upgrade` in a HTTP/1.0 request is ignored.)
        let upgrade = if parts.version == Version::HTTP_11 {
            parts.headers.get(header::UPGRADE).cloned()
        } else {
            None
        };
        let mut client_upgrade = upgrade
            .as_ref()
            .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
        let declared_len = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
        let mut body = match (declared_len, chunked) {
            (Some(n), false) if n <= REPLAY_LIMIT => {
                let read = Limited::new(incoming, REPLAY_LIMIT as usize).collect();
                match tokio::time::timeout_at(deadline, read).await {
                    Ok(Ok(collected)) => RequestBody::Replayable(collected.to_bytes()),
                    Ok(Err(_)) => {
                        return (
                            problem(
                                StatusCode::BAD_REQUEST,
                                "unreadable-body",
                                "The request body could not be read.",
                            ),
                            None,
                            0,
                        );
                    }
                    Err(_) => {
                        return (
                            problem(
                                StatusCode::REQUEST_TIMEOUT,
                                "body-timeout",
                                "The request body did not arrive in time.",
                            ),
                            None,
                            0,
                        );
                    }
                }
            }
            (None, false)
                if matches!(
                    parts.method,
                    Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
                ) =>
            {
                RequestBody::Replayable(Bytes::new())
            }
            _ => RequestBody::Streaming(
                Some(incoming),
                Arc::new(std::sync::atomic::AtomicBool::new(false)),
            ),
        };

        let mut headers = std::mem::take(&mut parts.headers);
        strip_hop_by_hop(&mut headers);
        if let Some(protocol) = &upgrade {
            // Upgrade and Connection are hop-by-hop, but an upgrade must be asked of the next hop.
            headers.insert(header::UPGRADE, protocol.clone());
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        client.add_forwarding_headers(&mut headers, request_id, trace);
        // The target's authority, when it has one, names the host: a HTTP/2 client names it
        // there, and a HTTP/1.1 request in absolute-form is to be read by it, not by its `Host`
        // (RFC 9112 §3.2.2).
        if let Some(authority) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(authority.as_str())
        {
            headers.insert(header::HOST, v);
        }
        let target = match parts.uri.path_and_query() {
            Some(p) => Uri::from(p.clone()),
            None => Uri::from_static("/"),
        };

        let mut last: Option<(StatusCode, &'static str)> = None;
        let mut attempts = 0u32;
        // A request that could not even connect (certainly never processed), or an idempotent
        // one whose connection failed before any response byte (a backend killed under a
        // pooled keep-alive connection), moves on to the next backend until one answers, as
        // nginx's proxy_next_upstream does — so that several backends dying at once cost no
        // request. A timed-out request is retried at most once: it may be merely slow, and
        // sending it everywhere would multiply the load. Every move after the first attempt is
        // paid from the retry budget.
        let mut last_moves_on = false;
        for backend in candidates.iter() {
            if attempts >= 2 && !last_moves_on {
                break;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                last = Some((StatusCode::GATEWAY_TIMEOUT, "upstream-timeout"));
                break;
            }
            if attempts > 0 {
                if !self.budget.try_withdraw() {
                    break;
                }
                metrics::counter!("strata_lb_retries_total", "pool" => self.pool.name.clone())
                    .increment(1);
            }
            let Some(upstream_body) = body.take() else {
                break;
            };
            attempts += 1;
            let mut upstream = Request::new(upstream_body);
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = target.clone();
            let mut attempt_headers = headers.clone();
            if !attempt_headers.contains_key(header::HOST)
                && let Ok(v) = HeaderValue::from_str(&backend.addr.to_string())
            {
                attempt_headers.insert(header::HOST, v);
            }
            *upstream.headers_mut() = attempt_headers;
            backend.requests.fetch_add(1, Ordering::Relaxed);
            backend.in_flight.fetch_add(1, Ordering::AcqRel);
            // Interim responses (`103 Early Hints`) go on to an HTTP/1.1 client as they come.
            let answer_by = (now + self.timeouts.header).min(deadline);
            let result =
                crate::interim::relayed(upstream, client.interim_for(parts.version), |upstream| {
                    tokio::time::timeout_at(answer_by, self.upstream.send(backend.addr, upstream))
                })
                .await;
            backend.in_flight.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok(Ok(mut resp)) => {
                    if counts_as_failure(&resp) {
                        self.note_failure(backend);
                    } else {
                        backend.record_success();
                    }
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                        && let Some(client_side) = client_upgrade.take()
                    {
                        tunnel(
                            client_side,
                            hyper::upgrade::on(&mut resp),
                            backend.name.clone(),
                        );
                        // The 101 keeps Upgrade and Connection: they are the answer to the client.
                        let (rparts, rbody) = resp.into_parts();
                        return (
                            Response::from_parts(rparts, ProxyBody::Upstream(rbody)),
                            Some(backend.clone()),
                            attempts,
                        );
                    }
                    let (mut rparts, rbody) = resp.into_parts();
                    strip_hop_by_hop(&mut rparts.headers);
                    if let Some(sticky) = &self.sticky
                        && pinned.as_deref() != Some(backend.name.as_str())
                        && let Ok(v) = HeaderValue::from_str(&sticky.set_cookie(&backend.name))
                    {
                        rparts.headers.append(header::SET_COOKIE, v);
                    }
                    return (
                        Response::from_parts(rparts, ProxyBody::Upstream(rbody)),
                        Some(backend.clone()),
                        attempts,
                    );
                }
                Ok(Err(_)) if body.client_fault() => {
                    return (bad_body(), Some(backend.clone()), attempts);
                }
                Ok(Err(e)) => {
                    // No response byte arrived (an error here comes before the response head).
                    let never_sent = e.never_sent();
                    last_moves_on = never_sent || idempotent;
                    tracing::warn!(backend = %backend.name, error = %e, "backend request failed");
                    if matches!(e, SendError::Connect(_)) {
                        self.upstream.forget(backend.addr);
                    }
                    self.note_failure(backend);
                    last = Some((StatusCode::BAD_GATEWAY, "upstream-failed"));
                    if !(idempotent || never_sent) {
                        break;
                    }
                }
                Err(_) => {
                    last_moves_on = false;
                    tracing::warn!(backend = %backend.name, "backend did not answer in time");
                    self.note_failure(backend);
                    last = Some((StatusCode::GATEWAY_TIMEOUT, "upstream-timeout"));
                    if !idempotent {
                        break;
                    }
                }
            }
        }
        let (status, slug) = last.unwrap_or((StatusCode::BAD_GATEWAY, "upstream-failed"));
        let detail = if status == StatusCode::GATEWAY_TIMEOUT {
            "The backend did not answer in time."
        } else {
            "The backend could not be reached."
        };
        (problem(status, slug, detail), None, attempts)
    }

    fn note_failure(&self, backend: &crate::backend::Backend) {
        if backend.record_failure(&self.pool.outlier) {
            tracing::warn!(backend = %backend.name, pool = %self.pool.name, "ejected after consecutive failures");
            metrics::counter!("strata_lb_ejections_total", "pool" => self.pool.name.clone(), "backend" => backend.name.clone()).increment(1);
            self.pool.rebuild();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn the_retry_budget_allows_about_a_fifth_extra() {
        let b = RetryBudget::new(0.2, 1);
        assert!(b.try_withdraw(), "the reserve allows one retry");
        assert!(!b.try_withdraw());
        for _ in 0..100 {
            b.deposit();
        }
        let mut retries = 0;
        while b.try_withdraw() {
            retries += 1;
        }
        assert_eq!(retries, 1, "capped at the reserve");
        let b = RetryBudget::new(0.2, 100);
        while b.try_withdraw() {}
        for _ in 0..100 {
            b.deposit();
        }
        let mut retries = 0;
        while b.try_withdraw() {
            retries += 1;
        }
        assert_eq!(retries, 20, "100 requests earn 20 retries");
    }
}
