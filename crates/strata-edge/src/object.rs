//! A stored response ([`Object`]): its head, its body, the policy that says when it may be
//! reused, and the keys purges find it by; and its encoding in a file of the disk store.
//!
//! On disk an object is one file: a magic line, the length of its metadata (4 bytes, big
//! endian), the metadata as JSON, then the body. Files are written whole under a temporary
//! name and renamed into place, so a crash leaves either the old object or the new one.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Uri};
use http_cache_semantics::{BeforeRequest, CachePolicy};
use serde::{Deserialize, Serialize};

use crate::rules::Staleness;

/// The first bytes of every object file (the format's version is in it).
pub const MAGIC: &[u8] = b"STRATA-EDGE-OBJECT-1\n";
/// The most metadata bytes an object file may declare.
pub const MAX_META: usize = 1024 * 1024;
/// The header on the origin's responses that lists an object's surrogate keys.
pub const SURROGATE_KEY: &str = "surrogate-key";
/// The most surrogate keys kept per object, and the longest one.
const MAX_SURROGATE_KEYS: usize = 64;
const MAX_SURROGATE_KEY_LEN: usize = 256;

/// The request a cache policy is made from and checked against: a GET of the same target,
/// with only the headers [`crate::key::cache_view`] keeps.
pub fn policy_request(parts: &http::request::Parts, vary: &[String]) -> http::request::Parts {
    let mut req = Request::new(());
    *req.uri_mut() = parts
        .uri
        .path_and_query()
        .map_or(Uri::from_static("/"), |p| Uri::from(p.clone()));
    *req.headers_mut() = crate::key::cache_view(&parts.headers, vary);
    req.into_parts().0
}

/// Everything about a stored response but its body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The variant's key ([`crate::key::variant`]).
    pub key: String,
    /// The key of its URL ([`crate::key::Url::key`]).
    pub url: String,
    pub host: String,
    pub path: String,
    /// The request headers that select this variant (the response's `Vary`).
    pub vary: Vec<String>,
    pub status: u16,
    /// The response's headers, hop-by-hop ones removed.
    #[serde(with = "http_serde::header_map")]
    pub headers: HeaderMap,
    pub policy: CachePolicy,
    /// Freshness lifetime, fixed when the response (or its last revalidation) arrived.
    pub lifetime_ms: u64,
    pub staleness: Staleness,
    pub surrogate_keys: Vec<String>,
    /// Marked stale by a soft purge: it must be revalidated before it is served fresh again.
    pub invalidated: bool,
}

/// A stored response.
#[derive(Debug, Clone)]
pub struct Object {
    pub meta: Meta,
    pub body: Bytes,
}

/// How a stored object stands for a request at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Stale by this much (past its lifetime; zero when it is stale because it was purged
    /// softly or the request asked for something fresher).
    Stale(Duration),
}

impl Object {
    /// The bytes this object costs in memory, roughly: body, headers (twice: the policy
    /// keeps its own copy) and keys.
    pub fn weight(&self) -> u64 {
        let headers: usize = self
            .meta
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        (self.body.len() + 2 * headers + self.meta.key.len() * 3 + 1024) as u64
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_millis(self.meta.lifetime_ms)
    }

    /// Its age now (RFC 9111 §4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.meta.policy.age(now)
    }

    /// How far past its freshness lifetime it is now.
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.age(now).saturating_sub(self.lifetime())
    }

    /// Whether it is fresh for a request that sets no limits of its own (no `Cache-Control`,
    /// no `Pragma`): then RFC 9111 §4.2 reduces to its age against its lifetime, which is what
    /// the policy would say at several times the cost (it copies the stored headers to answer;
    /// `freshness_by_age_agrees_with_the_policy` holds the two together). The request must
    /// already match the object (URL, host and `Vary`), as the store's lookup makes sure.
    pub fn freshness_by_age(&self, now: SystemTime) -> Freshness {
        let age = self.age(now);
        match age.checked_sub(self.lifetime()) {
            None => Freshness::Fresh,
            Some(by) => Freshness::Stale(by),
        }
    }

    /// Whether the object may answer `parts` as it is (a request's `no-cache`, `max-age`,
    /// `min-fresh` and `Pragma` count; without them, its age alone decides).
    pub fn freshness_for(&self, parts: &http::request::Parts, now: SystemTime) -> Freshness {
        if self.meta.invalidated {
            return Freshness::Stale(self.staleness(now));
        }
        if !parts.headers.contains_key(header::CACHE_CONTROL)
            && !parts.headers.contains_key(header::PRAGMA)
        {
            return self.freshness_by_age(now);
        }
        let view = policy_request(parts, &self.meta.vary);
        match self.meta.policy.before_request(&view, now) {
            BeforeRequest::Fresh(_) => Freshness::Fresh,
            BeforeRequest::Stale { .. } => Freshness::Stale(self.staleness(now)),
        }
    }

    /// Whether RFC 5861's `stale-if-error` lets it answer now, when the origin fails.
    pub fn may_serve_on_error(&self, now: SystemTime) -> bool {
        let sie = self.meta.staleness.if_error;
        sie > 0 && self.staleness(now).as_secs() <= sie
    }

    /// A copy marked stale (a soft purge).
    pub fn invalidated(&self) -> Self {
        let mut copy = self.clone();
        copy.meta.invalidated = true;
        copy
    }

    /// The file form: magic, metadata length, metadata, body.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let meta = serde_json::to_vec(&self.meta)?;
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + meta.len() + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    /// Reads the metadata at the start of an object file; with it, how many bytes precede the
    /// body.
    pub fn decode_meta(bytes: &[u8]) -> Option<(Meta, usize)> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        if len > MAX_META {
            return None;
        }
        let meta = serde_json::from_slice(rest.get(4..4 + len)?).ok()?;
        Some((meta, MAGIC.len() + 4 + len))
    }

    /// Reads a whole object file.
    pub fn decode(bytes: Vec<u8>) -> Option<Self> {
        let (meta, start) = Self::decode_meta(&bytes)?;
        let body = Bytes::from(bytes).slice(start..);
        Some(Self { meta, body })
    }
}

/// The surrogate keys an origin gave a response: `Surrogate-Key: a b c` (space separated,
/// several lines allowed), bounded in number and length; over-long keys are dropped.
pub fn surrogate_keys(headers: &HeaderMap) -> Vec<String> {
    let mut keys: Vec<String> = headers
        .get_all(SURROGATE_KEY)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_ascii_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|k| k.len() <= MAX_SURROGATE_KEY_LEN)
        .collect();
    keys.sort();
    keys.dedup();
    keys.truncate(MAX_SURROGATE_KEYS);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrogate_keys_are_split_deduplicated_and_bounded() {
        let mut h = HeaderMap::new();
        h.append(
            SURROGATE_KEY,
            http::HeaderValue::from_static("user-12  users"),
        );
        h.append(SURROGATE_KEY, http::HeaderValue::from_static("users"));
        assert_eq!(surrogate_keys(&h), ["user-12", "users"]);
        let many = (0..100)
            .map(|i| format!("k{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        h.insert(
            SURROGATE_KEY,
            http::HeaderValue::from_str(&many).expect("value"),
        );
        assert_eq!(surrogate_keys(&h).len(), MAX_SURROGATE_KEYS);
    }

    #[test]
    fn freshness_by_age_agrees_with_the_policy() {
        use http::header;
        use http_cache_semantics::BeforeRequest;
        let arrived = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let date = httpdate::fmt_http_date(arrived);
        let modified = httpdate::fmt_http_date(arrived - Duration::from_secs(1000));
        let expires = httpdate::fmt_http_date(arrived + Duration::from_secs(45));
        let responses: Vec<Vec<(&str, String)>> = vec![
            vec![("cache-control", "max-age=60".into())],
            vec![
                ("cache-control", "public, max-age=60".into()),
                ("age", "30".into()),
            ],
            vec![("cache-control", "max-age=10, s-maxage=100".into())],
            vec![(
                "cache-control",
                "public, max-age=0, must-revalidate, s-maxage=20".into(),
            )],
            vec![("expires", expires.clone())],
            vec![("last-modified", modified.clone())],
            vec![
                ("cache-control", "no-cache".into()),
                ("etag", "\"v1\"".into()),
            ],
            vec![
                ("cache-control", "max-age=0".into()),
                ("etag", "\"v1\"".into()),
            ],
            vec![(
                "cache-control",
                "max-age=60, stale-while-revalidate=30".into(),
            )],
            vec![("cache-control", "max-age=5".into()), ("age", "10".into())],
            // CDN-Cache-Control (RFC 9213) in place of Cache-Control and Expires.
            vec![
                ("cache-control", "no-cache".into()),
                (
                    "cdn-cache-control",
                    "public, max-age=30, stale-if-error=60".into(),
                ),
                ("etag", "\"v1\"".into()),
            ],
            vec![
                (
                    "cache-control",
                    "public, max-age=0, must-revalidate, s-maxage=5".into(),
                ),
                ("expires", expires.clone()),
                ("cdn-cache-control", "max-age=20".into()),
            ],
        ];
        let mut req = http::Request::new(());
        *req.uri_mut() = "/a".parse().expect("uri");
        req.headers_mut()
            .insert(header::HOST, http::HeaderValue::from_static("example.com"));
        let view = req.into_parts().0;
        for pairs in responses {
            let mut headers = HeaderMap::new();
            headers.insert(header::DATE, date.parse().expect("date"));
            for (n, v) in &pairs {
                headers.append(*n, v.parse().expect("value"));
            }
            let Ok(s) = crate::rules::storable(&view, http::StatusCode::OK, &headers, arrived)
            else {
                continue;
            };
            let object = Object {
                meta: Meta {
                    key: "k".into(),
                    url: "u".into(),
                    host: "example.com".into(),
                    path: "/a".into(),
                    vary: Vec::new(),
                    status: 200,
                    headers: headers.clone(),
                    policy: s.policy,
                    lifetime_ms: u64::try_from(s.lifetime.as_millis()).expect("ms"),
                    staleness: s.staleness,
                    surrogate_keys: Vec::new(),
                    invalidated: false,
                },
                body: Bytes::new(),
            };
            for after in [
                0, 1, 4, 5, 6, 19, 20, 21, 29, 30, 31, 44, 45, 46, 59, 60, 61, 99, 100, 101, 3600,
            ] {
                let now = arrived + Duration::from_secs(after);
                let by_policy = matches!(
                    object.meta.policy.before_request(&view, now),
                    BeforeRequest::Fresh(_)
                );
                let by_age = object.freshness_by_age(now) == Freshness::Fresh;
                assert_eq!(by_age, by_policy, "{pairs:?} after {after} s");
            }
        }
    }

    #[test]
    fn truncated_or_foreign_files_do_not_decode() {
        assert!(Object::decode(b"not an object".to_vec()).is_none());
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Object::decode(bytes).is_none());
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&10u32.to_be_bytes());
        bytes.extend_from_slice(b"{\"a\"");
        assert!(Object::decode(bytes).is_none());
    }
}
