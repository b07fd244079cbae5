//! Requests the edge does not cache (methods other than `GET` and `HEAD`, targets it cannot
//! key, upgrades such as WebSocket): to the origin — the edge's, or a route's — and back,
//! streamed both ways. A non-error answer to an unsafe method invalidates what it changed
//! (RFC 9111 §4.4): its URL, and the `Location` / `Content-Location` its answer names on the
//! same host.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use strata_lb::upstream::OutBody;

use crate::key::Url;
use crate::respond::{EdgeBody, origin_problem, relay};
use crate::serve::{Hop, Shared};
use crate::stats::{Outcome, Stats};

impl Shared {
    /// A request the edge does not cache: to the origin and back, streamed. A non-error
    /// answer to an unsafe method invalidates what it changed (RFC 9111 §4.4).
    ///
    /// With `upgrade` (an HTTP/1.1 `Upgrade`, such as WebSocket: the protocol, and the client
    /// side of the tunnel) the origin is asked with `Upgrade` and `Connection: upgrade`
    /// (hop-by-hop, but an upgrade must be asked of the next hop); on a `101` the two sides
    /// are joined and bytes copied both ways until either closes (the balancer's tunnel), and
    /// the `101` goes to the client with its `Upgrade` and `Connection`. Any other answer is
    /// relayed, and the client's connection then closes.
    pub(crate) async fn pass(
        &self,
        parts: http::request::Parts,
        body: Incoming,
        url: Option<Url>,
        upgrade: Option<(HeaderValue, hyper::upgrade::OnUpgrade)>,
        hop: Hop<'_>,
    ) -> (Response<EdgeBody>, Outcome) {
        let Hop {
            client,
            request_id,
            trace,
            from_edge,
            origin,
            target,
        } = hop;
        let method = parts.method.clone();
        let unsafe_method = !matches!(
            method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        let mut headers = parts.headers;
        let client_side = upgrade.map(|(protocol, client_side)| {
            headers.insert(header::UPGRADE, protocol);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            client_side
        });
        client.add_forwarding_headers(&mut headers, request_id, trace);
        let mut req = Request::new(OutBody::Streaming {
            inner: body,
            fault: Arc::new(AtomicBool::new(false)),
        });
        *req.method_mut() = method.clone();
        *req.uri_mut() = target;
        *req.headers_mut() = headers;
        Stats::add(&self.stats.origin_fetches, 1);
        match origin.send(req, client.interim_for(parts.version)).await {
            Ok(mut resp) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(client_side) = client_side
                {
                    let origin_side = hyper::upgrade::on(&mut resp);
                    strata_lb::proxy::tunnel(client_side, origin_side, "origin".into());
                    let (rparts, rest) = resp.into_parts();
                    let body = EdgeBody::Stream { prefix: None, rest };
                    return (Response::from_parts(rparts, body), Outcome::Pass);
                }
                let (rparts, rbody) = resp.into_parts();
                if unsafe_method
                    && (rparts.status.is_success() || rparts.status.is_redirection())
                    && let Some(url) = &url
                {
                    self.invalidate(url, &rparts.headers).await;
                }
                let body = EdgeBody::Stream {
                    prefix: None,
                    rest: rbody,
                };
                (
                    relay(rparts, body, &method, "fwd=method", from_edge),
                    Outcome::Pass,
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, %method, "origin request failed");
                (origin_problem(&e), Outcome::Error)
            }
        }
    }

    /// Removes the URL an unsafe request changed, and those its answer's `Location` and
    /// `Content-Location` name on the same host.
    async fn invalidate(&self, url: &Url, response: &HeaderMap) {
        self.store.remove_url(&url.key()).await;
        Stats::add(&self.stats.invalidations, 1);
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(target) = response.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let Ok(uri) = target.parse::<Uri>() else {
                continue;
            };
            let same_host = uri
                .authority()
                .is_none_or(|a| a.as_str().eq_ignore_ascii_case(&url.host));
            if let (true, Some(path)) = (same_host, uri.path_and_query()) {
                let other = Url {
                    host: url.host.clone(),
                    path: path.as_str().to_string(),
                };
                self.store.remove_url(&other.key()).await;
            }
        }
    }
}
