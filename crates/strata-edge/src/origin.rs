//! The way to the origin: the balancer's keep-alive connections ([`strata_lb::upstream`]),
//! a deadline for the response head, another for the body, and a bound on what is read into
//! memory.
//!
//! A response the edge might store is read whole, up to the largest object it stores; one
//! that declares a larger `Content-Length`, or turns out larger as it streams, is passed on
//! to the client as it comes (the bytes read so far, then the rest) and not stored. A
//! response head the parser refuses (malformed, over 256 KiB), a connection that fails, a body
//! cut short — each is an [`OriginError`], answered 502 (or a stale copy, where
//! `stale-if-error` allows).
//!
//! **A failing origin** (no answer, or a `502`/`503`/`504`) is remembered until it answers
//! again: meanwhile a stale object that `stale-if-error` covers is answered at once
//! ([`Origin::failing`]) instead of each request waiting for the origin's failure — a frozen
//! origin costs a request the whole header timeout. One request a second still asks the origin
//! (a probe; the first after each failure), and any answer from it ends the failing state.
//!
//! **An event stream** (`Content-Type: text/event-stream`, server-sent events) never ends, so
//! it is never read whole: it is passed on as it comes, and never stored.
//!
//! A route's origin ([`crate::route`]) is another [`Origin`] over the same connection pool
//! ([`Origin::sibling`]): the same timeouts and limits, a failing state of its own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Request, Response, header};
use http_body_util::BodyExt;
use strata_lb::Timeouts;
use strata_lb::interim::Interim;
use strata_lb::upstream::{OutBody, PooledBody, Upstream};

/// Why the origin gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("the origin could not be reached or broke the exchange: {0}")]
    Failed(String),
    #[error("the origin did not answer in time")]
    Timeout,
}

impl OriginError {
    /// The problem's status and slug for the client.
    pub fn answer(&self) -> (http::StatusCode, &'static str, &'static str) {
        match self {
            OriginError::Failed(_) => (
                http::StatusCode::BAD_GATEWAY,
                "upstream-failed",
                "The origin could not be reached.",
            ),
            OriginError::Timeout => (
                http::StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "The origin did not answer in time.",
            ),
        }
    }
}

/// An origin response as the edge read it.
pub enum Fetched {
    /// The whole body, in memory.
    Whole(http::response::Parts, Bytes),
    /// Too large to keep: the bytes read so far, and the rest, still streaming.
    Streaming(http::response::Parts, Bytes, PooledBody),
}

/// How often a failing origin is asked again by a request that could be answered stale.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The origin server.
#[derive(Debug, Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    upstream: Upstream,
    timeouts: Timeouts,
    body_timeout: Duration,
    /// While the origin fails: when a request that could be answered stale asks it again.
    next_probe: Arc<Mutex<Option<Instant>>>,
}

impl Origin {
    pub fn new(addr: SocketAddr, timeouts: Timeouts, body_timeout: Duration) -> Self {
        Self {
            addr,
            upstream: Upstream::new(timeouts.connect, timeouts.idle, None),
            timeouts,
            body_timeout,
            next_probe: Arc::new(Mutex::new(None)),
        }
    }

    /// Another origin at `addr` over the same connection pool, with the same timeouts and
    /// limits, and a failing state of its own.
    pub fn sibling(&self, addr: SocketAddr) -> Self {
        Self {
            addr,
            upstream: self.upstream.clone(),
            timeouts: self.timeouts,
            body_timeout: self.body_timeout,
            next_probe: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether a request that may be answered with a stale copy (`stale-if-error`) should be,
    /// without asking the origin: the origin failed last and this is not the moment to probe
    /// it again. When it is, this request is the probe (the next one is a probe time plus the
    /// header timeout away, unless the probe's outcome comes first).
    pub fn failing(&self) -> bool {
        let now = Instant::now();
        let mut next = self.next_probe.lock().unwrap_or_else(|p| p.into_inner());
        match *next {
            None => false,
            Some(at) if now >= at => {
                *next = Some(now + self.timeouts.header + PROBE_EVERY);
                false
            }
            Some(_) => true,
        }
    }

    /// Records how an exchange with the origin went.
    fn outcome(&self, failed: bool) {
        let mut next = self.next_probe.lock().unwrap_or_else(|p| p.into_inner());
        match (failed, next.is_some()) {
            (true, _) => {
                *next = Some(Instant::now() + PROBE_EVERY);
            }
            (false, true) => {
                *next = None;
                tracing::info!(origin = %self.addr, "the origin answers again");
            }
            (false, false) => {}
        }
    }

    /// Closes idle connections past the idle timeout; run periodically.
    pub fn reap(&self) {
        self.upstream.reap();
    }

    /// Sends a request (origin-form target); the response head within the header timeout.
    /// The interim responses the origin sends first (`103 Early Hints`) go on to `interim`,
    /// the client's connection, when there is one ([`strata_lb::interim`]).
    pub async fn send(
        &self,
        mut req: Request<OutBody>,
        interim: Option<&Interim>,
    ) -> Result<Response<PooledBody>, OriginError> {
        if !req.headers().contains_key(header::HOST)
            && let Ok(v) = http::HeaderValue::from_str(&self.addr.to_string())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        let sent = strata_lb::interim::relayed(req, interim, |req| {
            tokio::time::timeout(self.timeouts.header, self.upstream.send(self.addr, req))
        })
        .await;
        let result = match sent {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                if matches!(e, strata_lb::upstream::SendError::Connect(_)) {
                    self.upstream.forget(self.addr);
                }
                Err(OriginError::Failed(e.to_string()))
            }
            Err(_) => Err(OriginError::Timeout),
        };
        let gateway_error = |r: &Response<PooledBody>| matches!(r.status().as_u16(), 502..=504);
        self.outcome(result.as_ref().map_or(true, gateway_error));
        result
    }

    /// Sends a request and reads the answer's body whole if it is at most `max` bytes.
    pub async fn fetch(
        &self,
        req: Request<OutBody>,
        max: u64,
        interim: Option<&Interim>,
    ) -> Result<Fetched, OriginError> {
        let resp = self.send(req, interim).await?;
        let (mut parts, mut body) = resp.into_parts();
        crate::rules::sanitize_age(&mut parts.headers);
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) || event_stream(&parts.headers) {
            return Ok(Fetched::Streaming(parts, Bytes::new(), body));
        }
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(max) as usize);
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(OriginError::Timeout),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(OriginError::Failed(format!("body: {e}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                if buf.len() as u64 > max {
                    return Ok(Fetched::Streaming(parts, buf.freeze(), body));
                }
            }
        }
        Ok(Fetched::Whole(parts, buf.freeze()))
    }
}

/// Whether a response is an event stream (`text/event-stream`): it never ends.
pub fn event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/event-stream"))
}
