//! The request path: from a client's request to an answer from the store, the origin, or
//! both.
//!
//! ```text
//! GET/HEAD ─► lookup (memory, then disk) ─┬─ fresh ─────────────────────────► hit
//!                                         ├─ stale, stale-while-revalidate ──► stale answer + refresh in the background
//!                                         ├─ stale, stale-if-error, the origin failing ──► stale answer (one probe a second asks it)
//!                                         ├─ stale ──► conditional request ──┬─ 304 ► stored headers updated, revalidated answer
//!                                         │   (one per URL: collapsed)       ├─ 200 ► stored anew
//!                                         │                                  └─ error ► stale-if-error? stale : 502/504
//!                                         └─ none ──► origin (one per URL: collapsed) ─► stored if RFC 9111 allows
//! other methods ─► origin, streamed both ways (crate::pass)
//! ```
//!
//! "The origin" is the edge's, or a route's for a path under its prefix ([`crate::route`]).
//!
//! A request's conditional and range headers never reach the origin on the way to the store:
//! the edge fetches whole objects and answers conditions and ranges itself
//! ([`crate::respond`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_cache_semantics::AfterResponse;
use hyper::body::Incoming;
use strata_lb::Timeouts;
use strata_lb::proxy::{ClientConn, Trace, strip_hop_by_hop};
use tracing::Instrument as _;

use crate::asked::Asked;
use crate::collapse::{Flights, Leader, Role};
use crate::key::{self, Url};
use crate::object::{self, Freshness, Meta, Object};
use crate::origin::{Fetched, Origin};
use crate::respond::{
    EdgeBody, from_object, https_redirect, origin_problem, problem, relay, via, with_keys,
};
use crate::route::{Routes, Target};
use crate::rules::{self, NotStored};
use crate::stats::{Outcome, Stats};
use crate::store::Store;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// How many times a request waits for another's fetch before it fetches for itself.
const COLLAPSE_ROUNDS: usize = 3;

/// Everything the request path shares.
pub struct Shared {
    pub store: Store,
    /// Static files the edge serves itself, if any.
    pub files: Option<crate::files::StaticFiles>,
    pub flights: Arc<Flights>,
    pub origin: Origin,
    /// Path prefixes sent to other origins.
    pub routes: Routes,
    pub stats: Arc<Stats>,
    pub timeouts: Timeouts,
    /// Which new traces are recorded.
    pub sampler: strata_core::trace::Sampler,
    /// Plain-HTTP requests are redirected to HTTPS on this port.
    pub redirect_to_https: Option<u16>,
    /// How long a revalidation may keep a request whose stale copy may be answered
    /// ([`crate::EdgeConfig::stale_grace`]).
    pub stale_grace: std::time::Duration,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("origin", &self.origin.addr)
            .finish_non_exhaustive()
    }
}

/// Who asked for a request the edge passes on, under which ids, and where it goes.
pub(crate) struct Hop<'a> {
    pub client: &'a ClientConn,
    pub request_id: &'a HeaderValue,
    pub trace: &'a Trace,
    /// The request came through another edge.
    pub from_edge: bool,
    pub origin: &'a Origin,
    /// The origin-form target the origin is asked for.
    pub target: Uri,
}

impl Shared {
    /// Serves one client request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: Arc<ClientConn>,
    ) -> Result<Response<EdgeBody>, Infallible> {
        // An upgrade that does not happen ends the connection after its answer: the guard
        // passed the bytes after the request on unparsed (they may be another protocol).
        let upgrade =
            req.version() == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE);
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let via = via(req.version());
        let request_id = strata_lb::proxy::request_id(req.headers());
        let trace = Trace::from_headers(req.headers(), &self.sampler);
        let span = crate::respond::span(&trace, &method);
        let trace_id = trace.ctx.trace_id;
        let (mut response, outcome) = self
            .serve(req, client, request_id.clone(), trace)
            .instrument(span.clone())
            .await;
        self.stats.request(outcome);
        self.stats.latency(started.elapsed());
        response
            .headers_mut()
            .insert(REQUEST_ID, request_id.clone());
        response.headers_mut().append(header::VIA, via);
        if upgrade && response.status() != StatusCode::SWITCHING_PROTOCOLS {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        span.record("status", response.status().as_u16());
        span.record("cache", outcome.as_str());
        let _in_span = span.enter();
        tracing::info!(
            %method,
            status = response.status().as_u16(),
            outcome = outcome.as_str(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            request_id = %String::from_utf8_lossy(request_id.as_bytes()),
            trace_id = %trace_id,
            "served"
        );
        Ok(response)
    }

    async fn serve(
        self: &Arc<Self>,
        req: Request<Incoming>,
        client: Arc<ClientConn>,
        request_id: HeaderValue,
        trace: Trace,
    ) -> (Response<EdgeBody>, Outcome) {
        if !client.secure
            && let Some(port) = self.redirect_to_https
        {
            return (
                https_redirect(req.headers(), req.uri(), port),
                Outcome::Redirect,
            );
        }
        let via = via(req.version());
        let (mut parts, body) = req.into_parts();
        let upgrade = crate::upgrade::take_upgrade(&mut parts);
        strip_hop_by_hop(&mut parts.headers);
        let from_edge = through_edge(&parts.headers);
        parts.headers.append(header::VIA, via);
        key::normalize_accept_encoding(&mut parts.headers);
        if let Some(authority) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, v);
        }
        if let Some(files) = &self.files
            && files.owns(parts.uri.path())
        {
            drop(body);
            let response = files
                .serve(
                    &parts.method,
                    parts.uri.path(),
                    &parts.headers,
                    self.store.max_object,
                )
                .await;
            return (response, Outcome::Static);
        }
        let (origin, target) = match self.routes.target(&self.origin, &parts.uri) {
            Target::Origin(origin, target) => (origin, target),
            Target::Redirect(response) => return (response, Outcome::Redirect),
        };
        let url = Url::of(&parts.uri, &parts.headers);
        match (&parts.method, url, upgrade) {
            (&Method::GET | &Method::HEAD, Some(url), None) => {
                drop(body);
                let asked = Asked {
                    parts,
                    url,
                    client,
                    request_id,
                    trace,
                    from_edge,
                    origin,
                    target,
                    foreground: true,
                };
                self.cached(asked).await
            }
            (_, url, upgrade) => {
                let hop = Hop {
                    client: &client,
                    request_id: &request_id,
                    trace: &trace,
                    from_edge,
                    origin: &origin,
                    target,
                };
                self.pass(parts, body, url, upgrade, hop).await
            }
        }
    }

    async fn cached(self: &Arc<Self>, asked: Asked) -> (Response<EdgeBody>, Outcome) {
        let key = asked.url.key();
        let only_if_cached = rules::directives(&asked.parts.headers)
            .iter()
            .any(|(n, _)| n == "only-if-cached");
        let mut collapsed = false;
        for _ in 0..COLLAPSE_ROUNDS {
            let now = SystemTime::now();
            let found = self.store.lookup(&key, &asked.parts.headers).await;
            if let Some(object) = &found {
                match object.freshness_for(&asked.parts, now) {
                    Freshness::Fresh => {
                        let ttl = object.lifetime().saturating_sub(object.age(now)).as_secs();
                        let detail = if collapsed {
                            format!("hit; ttl={ttl}; detail=collapsed")
                        } else {
                            format!("hit; ttl={ttl}")
                        };
                        return (self.answer(object, &asked, now, &detail), Outcome::Hit);
                    }
                    Freshness::Stale(by) => {
                        let swr = object.meta.staleness.while_revalidate;
                        if swr > 0
                            && by.as_secs() <= swr
                            && rules::request_accepts_stale(&asked.parts.headers)
                        {
                            Stats::add(&self.stats.stale_while_revalidate, 1);
                            let response = self.answer(
                                object,
                                &asked,
                                now,
                                "hit; detail=stale-while-revalidate",
                            );
                            self.refresh_in_background(&asked, object.clone());
                            return (response, Outcome::Stale);
                        }
                        // The origin failed last: answer stale at once rather than wait for
                        // it to fail again (unless this request is the one that asks it).
                        let sie = object.meta.staleness.if_error;
                        if sie > 0 && by.as_secs() <= sie && asked.origin.failing() {
                            Stats::add(&self.stats.stale_if_error, 1);
                            let response =
                                self.answer(object, &asked, now, "hit; detail=stale-if-error");
                            return (response, Outcome::Stale);
                        }
                    }
                }
            }
            // RFC 9111 §5.2.1.7: a stored response or nothing.
            if only_if_cached {
                return (
                    problem(
                        StatusCode::GATEWAY_TIMEOUT,
                        "not-cached",
                        "The request asked for a stored response only (only-if-cached), and none may be used.",
                    ),
                    Outcome::Error,
                );
            }
            if found.is_none() && self.flights.pass(&key).await {
                break;
            }
            let flight = self.store.flight_key(&key, &asked.parts.headers).await;
            match self.flights.join(&flight) {
                Role::Leader(leader) => {
                    return match found {
                        Some(stale) if self.graced(&stale, now) => {
                            self.revalidate_within_grace(&asked, stale, leader).await
                        }
                        Some(stale) => self.revalidate(&asked, stale, leader, false).await,
                        None => self.fetch(&asked, Some(leader)).await,
                    };
                }
                Role::Follower(rx) => {
                    collapsed = true;
                    Stats::add(&self.stats.collapsed, 1);
                    let graced = found.as_ref().filter(|s| self.graced(s, now));
                    let wait = graced.map_or(self.timeouts.total, |_| self.stale_grace);
                    if !Flights::wait(rx, wait).await {
                        if let Some(stale) = graced {
                            return self.answer_in_grace(&asked, stale);
                        }
                        break;
                    }
                }
            }
        }
        // The fetch it waited for did not settle in time: the origin is asked again.
        let stored = self.store.lookup(&key, &asked.parts.headers).await;
        self.fetch_or_stale(&asked, stored.as_deref(), false).await
    }

    /// A whole fetch from the origin, without the validators of `stale`; should the origin fail
    /// (no answer, or a 5xx), the copy `stale-if-error` allows is the answer (RFC 5861 §4).
    async fn fetch_or_stale(
        &self,
        asked: &Asked,
        stale: Option<&Object>,
        background: bool,
    ) -> (Response<EdgeBody>, Outcome) {
        let (response, outcome) = self.fetch(asked, None).await;
        if outcome == Outcome::Error || response.status().is_server_error() {
            let now = SystemTime::now();
            if let Some(stale) = stale.filter(|s| s.may_serve_on_error(now)) {
                let answered = (outcome != Outcome::Error).then(|| response.status());
                return self.stale_on_error(asked, stale, now, answered, background);
            }
        }
        (response, outcome)
    }

    /// A stored object's answer to the request.
    fn answer(
        &self,
        object: &Object,
        asked: &Asked,
        now: SystemTime,
        detail: &str,
    ) -> Response<EdgeBody> {
        let response = with_keys(
            from_object(
                object,
                &asked.parts.method,
                &asked.parts.headers,
                now,
                detail,
            ),
            object,
            asked.from_edge,
        );
        if let Some(n) = hyper::body::Body::size_hint(response.body()).exact() {
            Stats::add(&self.stats.bytes_from_cache, n);
        }
        response
    }

    fn refresh_in_background(self: &Arc<Self>, asked: &Asked, stale: Arc<Object>) {
        let Some(leader) = self.flights.try_lead(&stale.meta.key) else {
            return;
        };
        let this = self.clone();
        let asked = asked.in_background();
        tokio::spawn(async move {
            let _ = this.revalidate(&asked, stale, leader, true).await;
        });
    }

    /// Whether a request for `stale` waits at most [`Shared::stale_grace`] for the origin:
    /// `stale-if-error` lets the edge answer it, and no purge marked it outdated.
    fn graced(&self, stale: &Object, now: SystemTime) -> bool {
        !self.stale_grace.is_zero() && !stale.meta.invalidated && stale.may_serve_on_error(now)
    }

    /// The stale copy, answered because the origin has not revalidated it within the grace.
    fn answer_in_grace(&self, asked: &Asked, stale: &Object) -> (Response<EdgeBody>, Outcome) {
        Stats::add(&self.stats.stale_grace, 1);
        let now = SystemTime::now();
        let response = self.answer(stale, asked, now, "hit; detail=stale-grace");
        (response, Outcome::Stale)
    }

    /// [`Self::revalidate`] in a task of its own, awaited for the grace at most: then the stale
    /// copy is the answer, and the revalidation goes on to update the store (its followers
    /// wait for it, or for their own grace).
    async fn revalidate_within_grace(
        self: &Arc<Self>,
        asked: &Asked,
        stale: Arc<Object>,
        leader: Leader,
    ) -> (Response<EdgeBody>, Outcome) {
        let this = self.clone();
        let (task_asked, task_stale) = (asked.in_background(), stale.clone());
        let mut revalidation =
            tokio::spawn(
                async move { this.revalidate(&task_asked, task_stale, leader, true).await },
            );
        tokio::select! {
            done = &mut revalidation => match done {
                Ok((response, outcome)) => {
                    if outcome == Outcome::Stale {
                        Stats::add(&self.stats.stale_if_error, 1);
                    }
                    (response, outcome)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a revalidation task ended without an answer");
                    self.answer_in_grace(asked, &stale)
                }
            },
            () = tokio::time::sleep(self.stale_grace) => self.answer_in_grace(asked, &stale),
        }
    }

    /// Asks the origin whether a stale object is still good (`If-None-Match`,
    /// `If-Modified-Since`), and answers with what it says.
    async fn revalidate(
        self: &Arc<Self>,
        asked: &Asked,
        stale: Arc<Object>,
        leader: Leader,
        background: bool,
    ) -> (Response<EdgeBody>, Outcome) {
        let req = asked.origin_request(Some(&stale));
        Stats::add(&self.stats.origin_fetches, 1);
        let fetched = asked
            .origin
            .fetch(req, self.store.max_object, asked.interim())
            .await;
        let now = SystemTime::now();
        match fetched {
            Ok(Fetched::Whole(mut rparts, _)) if rparts.status == StatusCode::NOT_MODIFIED => {
                rules::lend_validators(&mut rparts.headers, &stale.meta.headers);
                let view = object::policy_request(&asked.parts, &stale.meta.vary);
                let status = StatusCode::from_u16(stale.meta.status).unwrap_or(StatusCode::OK);
                // The 304 updates the stored headers as they came from the origin (a policy
                // made from them says whether it is about them); the stored policy was made
                // from their cache view, whose `Cache-Control` may be `CDN-Cache-Control`'s.
                let stored = rules::policy(&view, status, &stale.meta.headers, now);
                match stored.after_response(&view, &rparts, now) {
                    AfterResponse::NotModified(..) => {
                        Stats::add(&self.stats.revalidations_not_modified, 1);
                        strip_hop_by_hop(&mut rparts.headers);
                        let mut headers =
                            rules::updated_by_304(&stale.meta.headers, &rparts.headers);
                        let keys = if rparts.headers.contains_key(object::SURROGATE_KEY) {
                            object::surrogate_keys(&rparts.headers)
                        } else {
                            stale.meta.surrogate_keys.clone()
                        };
                        headers.remove(object::SURROGATE_KEY);
                        let terms = rules::terms(&view, status, &headers, now);
                        let object = Object {
                            meta: Meta {
                                lifetime_ms: u64::try_from(terms.lifetime.as_millis())
                                    .unwrap_or(u64::MAX),
                                staleness: terms.staleness,
                                headers,
                                policy: terms.policy,
                                surrogate_keys: keys,
                                invalidated: false,
                                ..stale.meta.clone()
                            },
                            body: stale.body.clone(),
                        };
                        let object = self.store.insert(object).await;
                        drop(leader);
                        (
                            self.answer(&object, asked, now, "fwd=stale; fwd-status=304"),
                            Outcome::Revalidated,
                        )
                    }
                    AfterResponse::Modified(..) => {
                        // A 304 for validators the edge did not send: ask for the whole object.
                        Stats::add(&self.stats.revalidations_failed, 1);
                        drop(leader);
                        self.fetch_or_stale(asked, Some(&stale), background).await
                    }
                }
            }
            Ok(Fetched::Whole(rparts, body))
                if rparts.status.is_server_error() && stale.may_serve_on_error(now) =>
            {
                Stats::add(&self.stats.revalidations_failed, 1);
                Stats::add(&self.stats.bytes_from_origin, body.len() as u64);
                drop(leader);
                self.stale_on_error(asked, &stale, now, Some(rparts.status), background)
            }
            Ok(fetched) => {
                Stats::add(&self.stats.revalidations_modified, 1);
                self.store_or_relay(asked, fetched, leader).await
            }
            Err(e) => {
                Stats::add(&self.stats.revalidations_failed, 1);
                drop(leader);
                if stale.may_serve_on_error(now) {
                    return self.stale_on_error(asked, &stale, now, None, background);
                }
                tracing::warn!(error = %e, "revalidation failed and the object may not be served stale");
                (origin_problem(&e), Outcome::Error)
            }
        }
    }

    fn stale_on_error(
        &self,
        asked: &Asked,
        stale: &Object,
        now: SystemTime,
        status: Option<StatusCode>,
        background: bool,
    ) -> (Response<EdgeBody>, Outcome) {
        if !background {
            Stats::add(&self.stats.stale_if_error, 1);
        }
        let detail = match status {
            Some(s) => format!(
                "fwd=stale; fwd-status={}; detail=stale-if-error",
                s.as_u16()
            ),
            None => "fwd=stale; detail=stale-if-error".to_string(),
        };
        (self.answer(stale, asked, now, &detail), Outcome::Stale)
    }

    /// Fetches the whole object from the origin and stores it when it may.
    async fn fetch(&self, asked: &Asked, leader: Option<Leader>) -> (Response<EdgeBody>, Outcome) {
        let req = asked.origin_request(None);
        Stats::add(&self.stats.origin_fetches, 1);
        match asked
            .origin
            .fetch(req, self.store.max_object, asked.interim())
            .await
        {
            Ok(fetched) => self.store_or_relay(asked, fetched, leader).await,
            Err(e) => {
                tracing::warn!(error = %e, "origin fetch failed");
                (origin_problem(&e), Outcome::Error)
            }
        }
    }

    /// Stores an origin's answer if it may be, and answers the request with it.
    async fn store_or_relay(
        &self,
        asked: &Asked,
        fetched: Fetched,
        leader: impl Sized,
    ) -> (Response<EdgeBody>, Outcome) {
        let key = asked.url.key();
        let method = &asked.parts.method;
        match fetched {
            Fetched::Whole(rparts, body) => {
                Stats::add(&self.stats.bytes_from_origin, body.len() as u64);
                let now = SystemTime::now();
                match self.object(asked, &rparts, body.clone(), now) {
                    Ok(object) => {
                        let object = self.store.insert(object).await;
                        self.flights.unmark_pass(&key).await;
                        drop(leader);
                        let response = with_keys(
                            from_object(
                                &object,
                                method,
                                &asked.parts.headers,
                                now,
                                "fwd=miss; stored",
                            ),
                            &object,
                            asked.from_edge,
                        );
                        (response, Outcome::Miss)
                    }
                    Err(reason) => {
                        self.stats.not_stored(reason.reason());
                        self.flights.mark_pass(&key).await;
                        drop(leader);
                        let mut parts = rparts;
                        if let Ok(v) = HeaderValue::from_str(&body.len().to_string()) {
                            parts.headers.insert(header::CONTENT_LENGTH, v);
                        }
                        (
                            relay(
                                parts,
                                EdgeBody::full(body),
                                method,
                                "fwd=miss",
                                asked.from_edge,
                            ),
                            Outcome::Miss,
                        )
                    }
                }
            }
            Fetched::Streaming(rparts, prefix, rest) => {
                Stats::add(&self.stats.bytes_from_origin, prefix.len() as u64);
                self.stats
                    .not_stored(if crate::origin::event_stream(&rparts.headers) {
                        "event-stream"
                    } else {
                        NotStored::TooLarge.reason()
                    });
                self.flights.mark_pass(&key).await;
                drop(leader);
                let body = EdgeBody::Stream {
                    prefix: Some(prefix),
                    rest,
                };
                (
                    relay(rparts, body, method, "fwd=miss", asked.from_edge),
                    Outcome::Miss,
                )
            }
        }
    }

    /// The object to store for an origin's answer, or why there is none.
    fn object(
        &self,
        asked: &Asked,
        rparts: &http::response::Parts,
        body: Bytes,
        now: SystemTime,
    ) -> Result<Object, NotStored> {
        if body.len() as u64 > self.store.max_object {
            return Err(NotStored::TooLarge);
        }
        let vary = key::vary_names(&rparts.headers).ok_or(NotStored::VaryStar)?;
        let view = object::policy_request(&asked.parts, &vary);
        let mut headers = rparts.headers.clone();
        strip_hop_by_hop(&mut headers);
        let storable = rules::storable(&view, rparts.status, &headers, now)?;
        let surrogate_keys = object::surrogate_keys(&headers);
        headers.remove(object::SURROGATE_KEY);
        let url = asked.url.key();
        Ok(Object {
            meta: Meta {
                key: key::variant(&url, &vary, &asked.parts.headers),
                url,
                host: asked.url.host.clone(),
                path: asked.url.path.clone(),
                vary,
                status: rparts.status.as_u16(),
                headers,
                policy: storable.policy,
                lifetime_ms: u64::try_from(storable.lifetime.as_millis()).unwrap_or(u64::MAX),
                staleness: storable.staleness,
                surrogate_keys,
                invalidated: false,
            },
            body,
        })
    }
}

/// Whether a request came through a Strata edge.
fn through_edge(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::VIA)
        .iter()
        .any(|v| String::from_utf8_lossy(v.as_bytes()).contains("strata-edge"))
}
