//! What the edge answers a client: the body type ([`EdgeBody`]), and answers made from a
//! stored object — with its current `Age`, a `Cache-Status` (RFC 9211) saying how it was
//! served, `304 Not Modified` to a client whose validator matches (RFC 9110 §13.1), and byte
//! ranges of the object (RFC 9110 §14): one range gives `206 Partial Content`, an
//! unsatisfiable one `416`, several (or a stale `If-Range`) the whole object; and the
//! answers relayed from the origin, the problems the edge writes itself, and `Via`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::{Frame, SizeHint};
use strata_lb::proxy::{BoxError, ProxyBody, strip_hop_by_hop};
use strata_lb::upstream::PooledBody;

use crate::object::{self, Object};
use crate::origin::OriginError;

/// RFC 9211's header.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// The name the edge signs its `Cache-Status` entries with.
const CACHE_NAME: &str = "strata-edge";

/// A response body to a client: bytes the edge holds, or an origin's body streamed (after
/// the bytes already read of it).
#[derive(Debug)]
pub enum EdgeBody {
    Full(Full<Bytes>),
    Stream {
        prefix: Option<Bytes>,
        rest: PooledBody,
    },
}

impl EdgeBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Full::new(bytes.into()))
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }
}

impl From<ProxyBody> for EdgeBody {
    fn from(body: ProxyBody) -> Self {
        match body {
            ProxyBody::Full(full) => EdgeBody::Full(full),
            ProxyBody::Upstream(rest) => EdgeBody::Stream { prefix: None, rest },
        }
    }
}

impl hyper::body::Body for EdgeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            EdgeBody::Full(full) => Pin::new(full).poll_frame(cx).map_err(|e| match e {}),
            EdgeBody::Stream { prefix, rest } => {
                if let Some(bytes) = prefix.take().filter(|b| !b.is_empty()) {
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Pin::new(rest).poll_frame(cx).map_err(BoxError::from)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EdgeBody::Full(full) => full.is_end_stream(),
            EdgeBody::Stream { prefix, rest } => {
                prefix.as_ref().is_none_or(Bytes::is_empty) && rest.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EdgeBody::Full(full) => full.size_hint(),
            EdgeBody::Stream { prefix, rest } => {
                let extra = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}

/// An RFC 9457 problem answer (the balancer's format).
pub fn problem(status: StatusCode, slug: &str, detail: &str) -> Response<EdgeBody> {
    strata_lb::answers::problem(status, slug, detail).map(EdgeBody::from)
}

/// Adds `strata-edge; <detail>` to the answer's `Cache-Status`, after the entries of the
/// caches nearer the origin, which are kept (RFC 9211 §2: the list reads from the origin to the
/// client). Through a shield, a client sees how the shield served the response as well: a
/// stale copy it answered while the origin failed says `detail=stale-if-error` there. (A stored
/// response keeps the entries it arrived with, or those of the `304` that last updated it.)
pub fn set_cache_status(headers: &mut HeaderMap, detail: &str) {
    let mut members: Vec<String> = headers
        .get_all(CACHE_STATUS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .collect();
    members.push(format!("{CACHE_NAME}; {detail}"));
    if let Ok(v) = HeaderValue::from_str(&members.join(", ")) {
        headers.insert(CACHE_STATUS, v);
    }
}

/// Whether an entity tag in a list (`If-None-Match`) matches `etag`, by weak comparison.
fn etag_listed(list: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    list.trim() == "*" || list.split(',').any(|t| bare(t) == bare(etag))
}

/// Whether the client's validators say it already has this object (RFC 9110 §13.2.2:
/// `If-None-Match` first; `If-Modified-Since` only without it).
fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(inm) = request.get(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return inm.to_str().is_ok_and(|l| etag_listed(l, etag));
    }
    let parse = |v: Option<&HeaderValue>| {
        v.and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    match (
        parse(request.get(header::IF_MODIFIED_SINCE)),
        parse(stored.get(header::LAST_MODIFIED)),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// A single byte range of a `len`-byte object, as `start..end` (end exclusive).
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Serve the whole object (no range, several ranges, or a header the edge ignores).
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

fn range(value: &str, len: u64) -> Range {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first.is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                Range::Unsatisfiable
            } else {
                Range::Part(len.saturating_sub(n), len)
            }
        }
        (false, Some(start), end) if last.is_empty() || end.is_some() => {
            if end.is_some_and(|e| e < start) {
                return Range::Whole;
            }
            if start >= len {
                return Range::Unsatisfiable;
            }
            let end = end.map_or(len, |e| e.saturating_add(1).min(len));
            Range::Part(start, end)
        }
        _ => Range::Whole,
    }
}

/// Whether `If-Range` (if any) still names this object: an exact strong entity tag, or its
/// `Last-Modified` date.
fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(v) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let v = v.trim();
    if v.starts_with('"') {
        return stored
            .get(header::ETAG)
            .and_then(|e| e.to_str().ok())
            .is_some_and(|e| e.trim() == v);
    }
    !v.starts_with("W/")
        && stored
            .get(header::LAST_MODIFIED)
            .and_then(|l| l.to_str().ok())
            .is_some_and(|l| l.trim() == v)
}

/// The answer to `method` (GET or HEAD) with `request`'s headers, from a stored object.
pub fn from_object(
    object: &Object,
    method: &Method,
    request: &HeaderMap,
    now: SystemTime,
    cache_status: &str,
) -> Response<EdgeBody> {
    let mut headers = object.meta.headers.clone();
    headers.remove(header::CONTENT_LENGTH);
    if let Ok(v) = HeaderValue::from_str(&object.age(now).as_secs().to_string()) {
        headers.insert(header::AGE, v);
    }
    set_cache_status(&mut headers, cache_status);
    let status = StatusCode::from_u16(object.meta.status).unwrap_or(StatusCode::OK);
    let len = object.body.len() as u64;
    let mut response = Response::new(EdgeBody::empty());
    if status == StatusCode::OK && not_modified(request, &object.meta.headers) {
        // RFC 9110 §15.4.5: the 304 carries the validators and caching fields, no body.
        for name in [
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::CONTENT_LANGUAGE,
        ] {
            headers.remove(name);
        }
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.headers_mut() = headers;
        return response;
    }
    let mut body = object.body.clone();
    let mut status = status;
    if status == StatusCode::OK {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let asked = request
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .filter(|_| if_range_holds(request, &object.meta.headers));
        match asked.map_or(Range::Whole, |v| range(v, len)) {
            Range::Whole => {}
            Range::Part(start, end) => {
                status = StatusCode::PARTIAL_CONTENT;
                body = body.slice(start as usize..end as usize);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            Range::Unsatisfiable => {
                status = StatusCode::RANGE_NOT_SATISFIABLE;
                body = Bytes::new();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&body.len().to_string()) {
        headers.insert(header::CONTENT_LENGTH, v);
    }
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    if method != Method::HEAD {
        *response.body_mut() = EdgeBody::full(body);
    }
    response
}

/// An origin's failure, as the client's problem answer.
pub fn origin_problem(e: &OriginError) -> Response<EdgeBody> {
    let (status, slug, detail) = e.answer();
    problem(status, slug, detail)
}

/// A response head and body as the origin sent them, hop-by-hop headers removed.
pub fn relay(
    mut parts: http::response::Parts,
    body: EdgeBody,
    method: &Method,
    cache_status: &str,
    keep_keys: bool,
) -> Response<EdgeBody> {
    strip_hop_by_hop(&mut parts.headers);
    if !keep_keys {
        parts.headers.remove(object::SURROGATE_KEY);
    }
    set_cache_status(&mut parts.headers, cache_status);
    let body = if method == Method::HEAD {
        EdgeBody::empty()
    } else {
        body
    };
    Response::from_parts(parts, body)
}

/// An answer from a stored object, with the object's surrogate keys when it goes to another
/// edge.
pub fn with_keys(
    mut response: Response<EdgeBody>,
    object: &Object,
    from_edge: bool,
) -> Response<EdgeBody> {
    if from_edge
        && !object.meta.surrogate_keys.is_empty()
        && let Ok(v) = HeaderValue::from_str(&object.meta.surrogate_keys.join(" "))
    {
        response.headers_mut().insert(object::SURROGATE_KEY, v);
    }
    response
}

/// `Via` for a message received in `version` (RFC 9110 §7.6.3: a proxy adds itself both
/// ways).
pub fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_10 => "1.0 strata-edge",
        Version::HTTP_2 => "2 strata-edge",
        _ => "1.1 strata-edge",
    })
}

/// The edge's span of a request when its trace is recorded; a disabled span (which costs
/// nothing) otherwise. Its `status` and `cache` outcome are recorded when it is answered.
pub fn span(trace: &strata_lb::proxy::Trace, method: &Method) -> tracing::Span {
    if !trace.ctx.sampled {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "edge",
        trace_id = %trace.ctx.trace_id,
        span_id = %trace.ctx.span_id,
        parent_id = trace.parent.map(tracing::field::display),
        sampled = true,
        method = %method,
        status = tracing::field::Empty,
        cache = tracing::field::Empty,
    )
}

/// `308 Permanent Redirect` to the same path over HTTPS on `port` (the balancer's Location
/// rule: [`strata_lb::answers::https_location`]).
pub fn https_redirect(headers: &HeaderMap, uri: &http::Uri, port: u16) -> Response<EdgeBody> {
    let mut r = Response::new(EdgeBody::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Some(location) = strata_lb::answers::https_location(headers, uri, port) {
        r.headers_mut().insert(header::LOCATION, location);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(range("bytes=0-4", 10), Range::Part(0, 5));
        assert_eq!(range("bytes=5-", 10), Range::Part(5, 10));
        assert_eq!(range("bytes=-3", 10), Range::Part(7, 10));
        assert_eq!(range("bytes=-30", 10), Range::Part(0, 10));
        assert_eq!(range("bytes=8-100", 10), Range::Part(8, 10));
        assert_eq!(range("bytes=10-", 10), Range::Unsatisfiable);
        assert_eq!(range("bytes=-0", 10), Range::Unsatisfiable);
        assert_eq!(range("bytes=0-1,4-5", 10), Range::Whole);
        assert_eq!(range("bytes=5-2", 10), Range::Whole);
        assert_eq!(range("items=0-1", 10), Range::Whole);
        assert_eq!(range("bytes=a-b", 10), Range::Whole);
    }

    proptest::proptest! {
        #[test]
        fn any_range_header_gives_a_slice_inside_the_object(value in ".{0,40}", len in 0u64..64) {
            match range(&value, len) {
                Range::Part(start, end) => proptest::prop_assert!(start < end && end <= len),
                Range::Whole | Range::Unsatisfiable => {}
            }
        }

        #[test]
        fn any_byte_range_spec_gives_a_slice_inside_the_object(
            first in proptest::option::of(0u64..100),
            last in proptest::option::of(0u64..100),
            len in 0u64..64,
        ) {
            let spec = format!(
                "bytes={}-{}",
                first.map(|f| f.to_string()).unwrap_or_default(),
                last.map(|l| l.to_string()).unwrap_or_default()
            );
            match range(&spec, len) {
                Range::Part(start, end) => proptest::prop_assert!(start < end && end <= len),
                Range::Whole | Range::Unsatisfiable => {}
            }
        }
    }

    #[test]
    fn entity_tags_compare_weakly_for_if_none_match() {
        assert!(etag_listed("\"a\", W/\"b\"", "\"b\""));
        assert!(etag_listed("*", "\"x\""));
        assert!(!etag_listed("\"a\"", "\"b\""));
    }
}
