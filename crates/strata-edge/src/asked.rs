//! One request, as the cache sees it, and what the edge asks the origin for it.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Uri};
use strata_lb::interim::Interim;
use strata_lb::proxy::{ClientConn, Trace};
use strata_lb::upstream::OutBody;

use crate::key::Url;
use crate::object::Object;
use crate::origin::Origin;

/// Request headers that ask the origin for less than the whole, current object: the edge
/// answers them itself from the stored object.
const CONDITIONAL: [HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// One request, as the cache sees it.
#[derive(Clone)]
pub(crate) struct Asked {
    pub parts: http::request::Parts,
    pub url: Url,
    pub client: Arc<ClientConn>,
    pub request_id: HeaderValue,
    pub trace: Trace,
    /// The request came through another edge (its `Via` names one): answers keep their
    /// surrogate keys, so that edge can purge by them too.
    pub from_edge: bool,
    /// The origin it goes to, and the target that origin is asked for.
    pub origin: Origin,
    pub target: Uri,
    /// The client waits for this request's answer (it is not a refresh in the background):
    /// interim responses from the origin may go on to it.
    pub foreground: bool,
}

impl Asked {
    /// The same request, for work in the background: nothing of it goes to the client.
    pub fn in_background(&self) -> Self {
        Self {
            foreground: false,
            ..self.clone()
        }
    }

    /// Where the origin's interim responses go: the client's connection, for a request it
    /// waits on over HTTP/1.1 ([`strata_lb::interim`]). A background task has none: its
    /// offer could land in the middle of another answer on that connection.
    pub fn interim(&self) -> Option<&Interim> {
        self.foreground
            .then(|| self.client.interim_for(self.parts.version))
            .flatten()
    }

    /// The origin request for a cached GET or HEAD: a GET of the whole object, conditional
    /// on `stored`'s validators when it is given.
    pub fn origin_request(&self, stored: Option<&Object>) -> Request<OutBody> {
        let mut headers = self.parts.headers.clone();
        for name in CONDITIONAL {
            headers.remove(name);
        }
        self.client
            .add_forwarding_headers(&mut headers, &self.request_id, &self.trace);
        if let Some(stored) = stored {
            if let Some(etag) = stored.meta.headers.get(header::ETAG) {
                headers.insert(header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(modified) = stored.meta.headers.get(header::LAST_MODIFIED) {
                headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
            }
        }
        let mut req = Request::new(OutBody::full(Bytes::new()));
        *req.uri_mut() = self.target.clone();
        *req.headers_mut() = headers;
        req
    }
}
