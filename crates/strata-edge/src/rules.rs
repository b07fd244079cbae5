//! The HTTP caching rules (RFC 9111, RFC 5861) the edge applies, over `http-cache-semantics`.
//!
//! That crate decides what it decides well — whether a response may be stored by a shared
//! cache (`no-store`, `private`, `Authorization`, cacheable statuses, `s-maxage` over
//! `max-age` over `Expires`, heuristic freshness only for statuses cacheable by default),
//! whether a stored response is fresh for a request (request `no-cache`, `max-age`,
//! `min-fresh`), and how a `304 Not Modified` updates a stored response. This module adds
//! what it leaves out:
//!
//! - **never stored**: a response with `Set-Cookie` (someone's login), `Vary: *`, a `206`
//!   (the edge fetches whole objects), one whose freshness headers conflict (two different
//!   `max-age` or `s-maxage` values, or two `Expires` lines: RFC 9111 §4.2.1 lets a cache
//!   treat it as stale; storing what is always stale is pointless), and one that could never
//!   be reused (no freshness, no validator, no `stale-if-error`);
//! - **serving stale** (RFC 5861): `stale-while-revalidate=N` and `stale-if-error=N`, except
//!   when the response forbids serving it stale: `no-cache`, `must-revalidate`,
//!   `proxy-revalidate` or `s-maxage` (which implies `proxy-revalidate` for a shared cache),
//!   RFC 9111 §4.2.4;
//! - **targeted directives** (RFC 9213): with a valid `CDN-Cache-Control`, every rule here
//!   reads its directives instead of `Cache-Control` and `Expires` ([`crate::targeted`]).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};
use http_cache_semantics::{CacheOptions, CachePolicy};

use crate::targeted::cache_view;

/// Why a response was not stored; labels `strata_edge_not_stored_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// RFC 9111 §3 forbids it (no-store, private, Authorization, an uncacheable status or
    /// method).
    Forbidden,
    /// It sets a cookie.
    SetCookie,
    /// `Vary: *`.
    VaryStar,
    /// Its freshness headers conflict.
    Conflicting,
    /// A partial response.
    Partial,
    /// Neither fresh, nor revalidatable, nor servable on error: nothing could reuse it.
    Useless,
    /// Bigger than the largest object the edge stores, or its body did not arrive whole.
    TooLarge,
}

impl NotStored {
    pub fn reason(self) -> &'static str {
        match self {
            NotStored::Forbidden => "forbidden",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::Conflicting => "conflicting-freshness",
            NotStored::Partial => "partial",
            NotStored::Useless => "useless",
            NotStored::TooLarge => "too-large",
        }
    }
}

/// The options of a shared cache: `private` is not stored, `s-maxage` counts, heuristic
/// freshness is 10% of the time since `Last-Modified`.
pub fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..CacheOptions::default()
    }
}

/// The directives of a `Cache-Control` header set, lower case, each with its value.
pub fn directives(headers: &HeaderMap) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for value in headers.get_all(header::CACHE_CONTROL) {
        for item in String::from_utf8_lossy(value.as_bytes()).split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v.trim().trim_matches('"').to_string())),
                None => (item, None),
            };
            out.push((name.trim().to_ascii_lowercase(), value));
        }
    }
    out
}

fn seconds(dirs: &[(String, Option<String>)], name: &str) -> Option<u64> {
    dirs.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref())
        .and_then(|v| v.parse().ok())
}

/// Whether the response's freshness headers contradict each other.
fn conflicting(response: &HeaderMap, dirs: &[(String, Option<String>)]) -> bool {
    let differs = |name: &str| {
        let mut values = dirs.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
        match values.next() {
            Some(first) => values.any(|v| v != first),
            None => false,
        }
    };
    differs("max-age")
        || differs("s-maxage")
        || response.get_all(header::EXPIRES).iter().count() > 1
}

/// What the edge keeps of a response's permission to be served stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Staleness {
    /// Seconds past its freshness it may be served while it is refreshed in the background.
    pub while_revalidate: u64,
    /// Seconds past its freshness it may be served when the origin fails.
    pub if_error: u64,
}

impl Staleness {
    /// The response's RFC 5861 directives, or none where RFC 9111 §4.2.4 forbids serving it
    /// stale.
    pub fn of(response: &HeaderMap) -> Self {
        let dirs = directives(response);
        let forbidden = dirs.iter().any(|(n, _)| {
            matches!(
                n.as_str(),
                "no-cache" | "must-revalidate" | "proxy-revalidate" | "s-maxage"
            )
        });
        if forbidden {
            return Self::default();
        }
        Self {
            while_revalidate: seconds(&dirs, "stale-while-revalidate").unwrap_or(0),
            if_error: seconds(&dirs, "stale-if-error").unwrap_or(0),
        }
    }
}

/// A response the edge may store: its policy, and how long it is fresh.
pub struct Storable {
    pub policy: CachePolicy,
    /// The freshness lifetime (RFC 9111 §4.2.1), fixed when the response arrived.
    pub lifetime: Duration,
    pub staleness: Staleness,
}

/// Whether a response to `request` (the cache view of a GET) may be stored, and on what
/// terms.
pub fn storable(
    request: &http::request::Parts,
    status: StatusCode,
    response: &HeaderMap,
    now: SystemTime,
) -> Result<Storable, NotStored> {
    if request.method != Method::GET {
        return Err(NotStored::Forbidden);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        return Err(NotStored::Partial);
    }
    if response.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if crate::key::vary_names(response).is_none() {
        return Err(NotStored::VaryStar);
    }
    let view = cache_view(response);
    let dirs = directives(&view);
    if conflicting(&view, &dirs) {
        return Err(NotStored::Conflicting);
    }
    let terms = terms(request, status, response, now);
    if !terms.policy.is_storable() {
        return Err(NotStored::Forbidden);
    }
    let validator =
        response.contains_key(header::ETAG) || response.contains_key(header::LAST_MODIFIED);
    if terms.lifetime.is_zero() && !validator && terms.staleness.if_error == 0 {
        return Err(NotStored::Useless);
    }
    Ok(terms)
}

/// The terms on which the edge keeps a response it stores, or one a `304` has just updated:
/// its policy, lifetime and permission to be served stale, all read from its cache view
/// (`CDN-Cache-Control` in place of `Cache-Control` and `Expires` when it has one, RFC 9213).
pub fn terms(
    request: &http::request::Parts,
    status: StatusCode,
    response: &HeaderMap,
    now: SystemTime,
) -> Storable {
    let mut view = cache_view(response).into_owned();
    plain(&mut view);
    Storable {
        policy: policy(request, status, &view, now),
        lifetime: lifetime(request, status, &view, now),
        staleness: Staleness::of(&view),
    }
}

/// Makes a response's freshness headers plain for `http-cache-semantics`, which matches
/// directive names exactly and reads `Expires` as an RFC 2822 date: directive names lower case
/// (RFC 9111 §5.2: they compare case-insensitively), and one `Expires` rewritten as an
/// IMF-fixdate when it is a valid HTTP-date in any of its three formats (RFC 9110 §5.6.7), or
/// as `0`, already expired, when it is not (RFC 9111 §5.3: `Thu, 18  Aug  2050 …` with two
/// spaces is no date). What clients see is not changed: this is the view the rules read.
fn plain(view: &mut HeaderMap) {
    crate::key::lower_directive_names(view);
    let expires: Vec<_> = view.get_all(header::EXPIRES).iter().cloned().collect();
    if let [value] = expires.as_slice() {
        let date = std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|v| httpdate::parse_http_date(&date_case(v.trim())).ok());
        let plain = date.map_or_else(|| "0".to_string(), httpdate::fmt_http_date);
        if let Ok(plain) = http::HeaderValue::from_str(&plain) {
            view.insert(header::EXPIRES, plain);
        }
    }
}

/// An HTTP-date with its names in their canonical case (`THU` is `Thu`, `gmt` is `GMT`): the
/// format is case-sensitive, but a cache is encouraged to read timestamps robustly (RFC 9110
/// §5.6.7), and a wrongly cased name is no doubt about the time.
fn date_case(date: &str) -> String {
    let mut out = String::with_capacity(date.len());
    let mut word_start = true;
    for c in date.chars() {
        out.push(if word_start {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        word_start = !c.is_ascii_alphabetic();
    }
    out.replace("Gmt", "GMT")
}

/// A response's freshness lifetime (RFC 9111 §4.2.1): how long after it was generated it is
/// fresh, whatever its age now. (`http-cache-semantics` gives only what is left of it, which
/// is zero for every stale response; so the lifetime is read from the same response with its
/// `Age` taken away, at the moment it arrived.)
pub fn lifetime(
    request: &http::request::Parts,
    status: StatusCode,
    response: &HeaderMap,
    arrived: SystemTime,
) -> Duration {
    let mut headers = response.clone();
    headers.remove(header::AGE);
    policy(request, status, &headers, arrived).time_to_live(arrived)
}

/// The policy of a response to `request` that arrived at `arrived`.
pub fn policy(
    request: &http::request::Parts,
    status: StatusCode,
    response: &HeaderMap,
    arrived: SystemTime,
) -> CachePolicy {
    let mut head = http::Response::new(());
    *head.status_mut() = status;
    *head.headers_mut() = response.clone();
    let (parts, ()) = head.into_parts();
    CachePolicy::new_options(request, &parts, arrived, options())
}

/// The largest `Age` the edge keeps: 2^31 seconds (RFC 9111 §5.1 has a cache send this
/// when an age overflows what it can represent).
pub const MAX_AGE_HEADER: u64 = 1 << 31;

/// Makes an origin's `Age` safe to compute with: one non-negative integer of at most
/// [`MAX_AGE_HEADER`] seconds. A list (`Age: 7200, 0`, or several lines) counts by its first
/// member, the others discarded (RFC 9111 §5.1); a larger one is clamped; an invalid one (not
/// digits) is dropped, as if absent. (Arithmetic on an `Age` near `u64::MAX` would overflow.)
pub fn sanitize_age(response: &mut HeaderMap) {
    let Some(first) = response.get(header::AGE).cloned() else {
        return;
    };
    response.remove(header::AGE);
    let text = String::from_utf8_lossy(first.as_bytes());
    let text = text.split(',').next().unwrap_or_default().trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return;
    }
    let age = text
        .parse::<u64>()
        .unwrap_or(MAX_AGE_HEADER)
        .min(MAX_AGE_HEADER);
    response.insert(header::AGE, http::HeaderValue::from(age));
}

/// A `304` without validators, to the edge's conditional request for one stored object, is
/// about that object (RFC 9110 §15.4.5 does not make it repeat `Last-Modified`): it is lent
/// the stored validators, so that the policy takes it as such.
pub fn lend_validators(not_modified: &mut HeaderMap, stored: &HeaderMap) {
    if not_modified.contains_key(header::ETAG) || not_modified.contains_key(header::LAST_MODIFIED) {
        return;
    }
    for name in [header::ETAG, header::LAST_MODIFIED] {
        if let Some(v) = stored.get(&name) {
            not_modified.insert(name, v.clone());
        }
    }
}

/// The fields of a `304` that do not update the stored response: they frame the 304, not the
/// stored body (`Age` is the 304's, or none).
const NOT_UPDATED_BY_304: [header::HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
    header::CONTENT_RANGE,
];

/// A stored response's headers updated by a `304` (RFC 9111 §3.2): each field of the 304
/// replaces the stored lines of that name, or is added (`http-cache-semantics` only replaces
/// fields the stored response has, keeps one line of each, and rewrites `Date`); the age is
/// the 304's, as the origin has just vouched for the object. `not_modified` is without its
/// hop-by-hop fields.
pub fn updated_by_304(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut headers = stored.clone();
    headers.remove(header::AGE);
    for name in not_modified.keys() {
        if NOT_UPDATED_BY_304.contains(name) {
            continue;
        }
        headers.remove(name);
        for value in not_modified.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Whether a request lets the edge answer it stale while refreshing: it asks for nothing
/// fresher (`no-cache`, `max-age`, `min-fresh`, `Pragma: no-cache`).
pub fn request_accepts_stale(request: &HeaderMap) -> bool {
    let pragma = request
        .get(header::PRAGMA)
        .is_some_and(|p| String::from_utf8_lossy(p.as_bytes()).contains("no-cache"));
    !pragma
        && !directives(request)
            .iter()
            .any(|(n, _)| matches!(n.as_str(), "no-cache" | "max-age" | "min-fresh"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn get() -> http::request::Parts {
        let mut req = http::Request::new(());
        *req.uri_mut() = "/a".parse().expect("uri");
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("example.com"));
        req.into_parts().0
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    fn verdict(pairs: &[(&'static str, &'static str)]) -> Result<Duration, NotStored> {
        storable(&get(), StatusCode::OK, &headers(pairs), SystemTime::now()).map(|s| s.lifetime)
    }

    #[test]
    fn s_maxage_wins_over_max_age_and_expires_for_a_shared_cache() {
        assert_eq!(
            verdict(&[("cache-control", "max-age=10, s-maxage=100")]),
            Ok(Duration::from_secs(100))
        );
        assert_eq!(
            verdict(&[
                ("cache-control", "max-age=10"),
                ("expires", "Thu, 01 Jan 2099 00:00:00 GMT")
            ]),
            Ok(Duration::from_secs(10))
        );
    }

    #[test]
    fn private_no_store_set_cookie_vary_star_and_conflicts_are_never_stored() {
        assert_eq!(
            verdict(&[("cache-control", "private, max-age=60")]).err(),
            Some(NotStored::Forbidden)
        );
        assert_eq!(
            verdict(&[("cache-control", "no-store")]).err(),
            Some(NotStored::Forbidden)
        );
        assert_eq!(
            verdict(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]).err(),
            Some(NotStored::SetCookie)
        );
        assert_eq!(
            verdict(&[("cache-control", "max-age=60"), ("vary", "*")]).err(),
            Some(NotStored::VaryStar)
        );
        assert_eq!(
            verdict(&[("cache-control", "max-age=60, max-age=5")]).err(),
            Some(NotStored::Conflicting)
        );
        assert_eq!(verdict(&[]).err(), Some(NotStored::Useless));
    }

    #[test]
    fn the_lifetime_of_a_response_that_arrives_stale_is_its_max_age() {
        assert_eq!(
            verdict(&[("cache-control", "max-age=10"), ("age", "100")]),
            Ok(Duration::from_secs(10))
        );
    }

    #[test]
    fn ages_are_clamped_or_dropped_before_any_arithmetic() {
        let sane = |v: &'static str| {
            let mut h = headers(&[("age", v)]);
            sanitize_age(&mut h);
            h.get("age").map(|v| v.to_str().expect("ascii").to_string())
        };
        assert_eq!(sane("42").as_deref(), Some("42"));
        assert_eq!(sane("18446744073709551615").as_deref(), Some("2147483648"));
        assert_eq!(
            sane("99999999999999999999999").as_deref(),
            Some("2147483648")
        );
        assert_eq!(sane("-1"), None);
        assert_eq!(sane("1.5"), None);
        assert_eq!(sane("abc"), None);
    }

    #[test]
    fn an_age_list_counts_by_its_first_member() {
        let sane = |v: &'static str| {
            let mut h = headers(&[("age", v)]);
            sanitize_age(&mut h);
            h.get("age").map(|v| v.to_str().expect("ascii").to_string())
        };
        assert_eq!(sane("7200, 0").as_deref(), Some("7200"));
        assert_eq!(sane("0,7200").as_deref(), Some("0"));
        assert_eq!(sane("x, 0"), None);
        let mut two = headers(&[("age", "7200"), ("age", "0")]);
        sanitize_age(&mut two);
        assert_eq!(two.get_all("age").iter().count(), 1);
        assert_eq!(two.get("age").map(|v| v.as_bytes()), Some(&b"7200"[..]));
    }

    #[test]
    fn directive_names_are_compared_case_insensitively() {
        assert_eq!(
            verdict(&[
                ("cache-control", "No-CaChE, max-age=3600"),
                ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
            ])
            .err(),
            Some(NotStored::Useless),
            "no-cache with no validator: nothing could reuse it"
        );
        assert_eq!(
            verdict(&[("cache-control", "Max-Age=60")]),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            verdict(&[("cache-control", "PRIVATE, max-age=60")]).err(),
            Some(NotStored::Forbidden)
        );
        let mut request = headers(&[("cache-control", "No-Cache, Max-Age=\"A\"")]);
        crate::key::lower_directive_names(&mut request);
        assert_eq!(
            request.get("cache-control").map(|v| v.as_bytes()),
            Some(&b"no-cache, max-age=\"A\""[..])
        );
    }

    #[test]
    fn an_expires_that_is_no_http_date_is_already_expired() {
        let date = ("date", "Thu, 01 Jan 2026 00:00:00 GMT");
        for invalid in ["Thu, 18  Aug  2050 02:01:18 GMT", "0", "2050-08-18"] {
            assert_eq!(
                verdict(&[date, ("expires", invalid)]).err(),
                Some(NotStored::Useless),
                "{invalid}"
            );
        }
        // The three formats of an HTTP-date (RFC 9110 §5.6.7), names in any case.
        for valid in [
            "Thu, 18 Aug 2050 02:01:18 GMT",
            "THU, 18 aug 2050 02:01:18 gMT",
            "Thursday, 18-Aug-50 02:01:18 GMT",
            "Thu Aug 18 02:01:18 2050",
        ] {
            let lifetime = verdict(&[date, ("expires", valid)]).expect(valid);
            assert!(lifetime > Duration::from_secs(86_400 * 365 * 24), "{valid}");
        }
    }

    #[test]
    fn heuristic_freshness_only_without_explicit_expiry() {
        let lifetime = verdict(&[
            ("date", "Thu, 01 Jan 2026 10:00:00 GMT"),
            ("last-modified", "Thu, 01 Jan 2026 00:00:00 GMT"),
        ])
        .expect("storable");
        // 10% of the 10 hours since Last-Modified.
        assert_eq!(lifetime, Duration::from_secs(3600));
    }

    #[test]
    fn directives_that_forbid_stale_answers_turn_off_rfc_5861() {
        let s = Staleness::of(&headers(&[(
            "cache-control",
            "max-age=1, stale-while-revalidate=30, stale-if-error=60",
        )]));
        assert_eq!((s.while_revalidate, s.if_error), (30, 60));
        for forbid in [
            "must-revalidate",
            "no-cache",
            "proxy-revalidate",
            "s-maxage=5",
        ] {
            let v = format!("max-age=1, stale-while-revalidate=30, stale-if-error=60, {forbid}");
            let mut h = HeaderMap::new();
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_str(&v).expect("value"),
            );
            assert_eq!(Staleness::of(&h), Staleness::default(), "{forbid}");
        }
    }

    #[test]
    fn cdn_cache_control_replaces_cache_control_and_expires_for_the_edge() {
        assert_eq!(
            verdict(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60")
            ]),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            verdict(&[
                ("cache-control", "max-age=0, s-maxage=5"),
                ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                ("cdn-cache-control", "max-age=30"),
            ]),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(
            verdict(&[
                ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                ("cdn-cache-control", "stale-if-error=60"),
            ]),
            Ok(Duration::ZERO),
            "Expires is ignored with the targeted field"
        );
        for refused in ["no-store", "private", "private, max-age=60"] {
            let mut h = headers(&[("cache-control", "public, max-age=60")]);
            h.insert(
                "cdn-cache-control",
                HeaderValue::from_str(refused).expect("value"),
            );
            assert_eq!(
                storable(&get(), StatusCode::OK, &h, SystemTime::now())
                    .err()
                    .map(NotStored::reason),
                Some("forbidden"),
                "{refused}"
            );
        }
        assert_eq!(
            verdict(&[
                ("cdn-cache-control", "public, max-age=60"),
                ("set-cookie", "a=b")
            ])
            .err(),
            Some(NotStored::SetCookie)
        );
        assert_eq!(
            verdict(&[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store,")
            ]),
            Ok(Duration::from_secs(60)),
            "an invalid targeted field is ignored"
        );
    }

    #[test]
    fn cdn_cache_control_may_allow_serving_stale_that_cache_control_forbids() {
        let profile = headers(&[
            (
                "cache-control",
                "public, max-age=0, must-revalidate, s-maxage=60",
            ),
            ("cdn-cache-control", "max-age=60, stale-if-error=86400"),
        ]);
        let t = terms(&get(), StatusCode::OK, &profile, SystemTime::now());
        assert_eq!(t.lifetime, Duration::from_secs(60));
        assert_eq!(t.staleness.if_error, 86_400);
        let forbidding = headers(&[
            ("cache-control", "max-age=60, stale-if-error=600"),
            (
                "cdn-cache-control",
                "max-age=60, stale-if-error=600, must-revalidate",
            ),
        ]);
        let t = terms(&get(), StatusCode::OK, &forbidding, SystemTime::now());
        assert_eq!(t.staleness, Staleness::default());
    }

    #[test]
    fn authorization_is_stored_only_when_the_response_allows_it() {
        let mut req = get();
        req.headers
            .insert(header::AUTHORIZATION, HeaderValue::from_static("sha256:x"));
        let h = headers(&[("cache-control", "max-age=60")]);
        assert!(storable(&req, StatusCode::OK, &h, SystemTime::now()).is_err());
        let h = headers(&[("cache-control", "public, max-age=60")]);
        assert!(storable(&req, StatusCode::OK, &h, SystemTime::now()).is_ok());
        let h = headers(&[
            ("cache-control", "public, max-age=60"),
            ("cdn-cache-control", "max-age=60"),
        ]);
        assert!(
            storable(&req, StatusCode::OK, &h, SystemTime::now()).is_err(),
            "the targeted field's directives decide, and it has no `public`"
        );
        let h = headers(&[
            ("cache-control", "no-cache"),
            ("cdn-cache-control", "public, max-age=60"),
        ]);
        assert!(storable(&req, StatusCode::OK, &h, SystemTime::now()).is_ok());
    }
}
