//! What the balancer answers a client: the response body type (a backend's body, streamed, or
//! one the balancer wrote), and the answers it writes itself — RFC 9457 problems, the redirect
//! to HTTPS. Kept apart from [`crate::proxy`], whose subject is the request's way to a backend.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Frame, Incoming, SizeHint};

use crate::upstream::{BoxError, PooledBody};

/// A response body to a client: a backend's, streamed, or one the balancer wrote itself.
#[derive(Debug)]
pub enum ProxyBody {
    Upstream(PooledBody),
    Full(Full<Bytes>),
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Full::new(bytes.into()))
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }
}

impl hyper::body::Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            ProxyBody::Full(full) => Pin::new(full).poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Full(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Full(full) => full.size_hint(),
        }
    }
}

/// An RFC 9457 problem+json answer (503s with `Retry-After: 1`).
pub fn problem(status: StatusCode, slug: &str, detail: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "type": format!("urn:strata:problem:{slug}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut r = Response::new(ProxyBody::full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// `308 Permanent Redirect` to the same path over HTTPS.
pub(crate) fn https_redirect(req: &Request<Incoming>, port: u16) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Some(location) = https_location(req.headers(), req.uri(), port) {
        r.headers_mut().insert(header::LOCATION, location);
    }
    r
}

/// Where a plain-HTTP request is sent by a redirect to HTTPS (the balancer's and the edge's):
/// `https://HOST:PORT/PATH?QUERY`, with HOST from the request's `Host` (its port dropped),
/// `localhost` when that is missing or not a plain host name or address — so a forged `Host`
/// cannot make the redirect point at another scheme or inject a header.
pub fn https_location(
    headers: &http::HeaderMap,
    uri: &http::Uri,
    port: u16,
) -> Option<HeaderValue> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            h.rsplit_once(':')
                .map_or(h, |(name, _)| name)
                .trim_matches(|c| c == '[' || c == ']')
                .to_string()
        })
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
        })
        .unwrap_or_else(|| "localhost".into());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    HeaderValue::from_str(&format!("https://{host}:{port}{path}")).ok()
}

/// 400 for a malformed request body; the connection is closed after it.
pub(crate) fn bad_body() -> Response<ProxyBody> {
    let mut r = problem(
        StatusCode::BAD_REQUEST,
        "malformed-body",
        "The request body is malformed (for example an invalid chunk size).",
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}
