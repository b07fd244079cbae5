//! Targeted cache control (RFC 9213): `CDN-Cache-Control`, the directives an origin gives CDN
//! caches only.
//!
//! The edge is a CDN cache, and `CDN-Cache-Control` is the one targeted field on its list.
//! When a response carries it with a valid, non-empty value, the edge decides storing,
//! freshness and serving stale from its directives alone, and ignores the response's
//! `Cache-Control` and `Expires` (§2.1); otherwise (absent, empty, or not a valid Structured
//! Fields Dictionary, §2.2) the field is ignored as if absent and `Cache-Control` rules as
//! usual. The field itself is not consumed: it is stored and forwarded unchanged, so an edge
//! in front of another edge reads it too, and clients get the origin's `Cache-Control`.
//!
//! The rules in [`crate::rules`] read a *cache view* of the response ([`cache_view`]): the
//! same headers with `Cache-Control` replaced by the targeted directives and `Expires`
//! removed. Every directive keeps its `Cache-Control` meaning there (`no-store`, `private`,
//! `no-cache`, `must-revalidate`, `max-age`, `s-maxage`, `stale-if-error`, …), as RFC 9213
//! requires; `Set-Cookie`, `Vary` and `Authorization` are judged exactly as before.
//!
//! The field is parsed by the `sfv` crate (RFC 8941). A member maps back to a directive by its
//! value: `true` is the bare name, `false` drops it, an integer is `name=N` (a negative one
//! `name=0`), a token or a string `name=value`; a decimal, a byte sequence or an inner list
//! fits no directive and is dropped, and so is a number of seconds (`max-age`, `s-maxage`,
//! `stale-*`, …) that is not an integer (§2.1: `max-age="60"` is not consumed). Parameters
//! are ignored (§2.2).

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// RFC 9213 §3.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The directives whose value is a number of seconds (RFC 9111 §1.2.2; RFC 5861).
const DELTA_SECONDS: [&str; 6] = [
    "max-age",
    "s-maxage",
    "stale-while-revalidate",
    "stale-if-error",
    "max-stale",
    "min-fresh",
];

/// The response as the edge's caching rules read it: with a valid, non-empty
/// `CDN-Cache-Control`, its directives as `Cache-Control` and no `Expires`; otherwise the
/// response itself.
pub fn cache_view(response: &HeaderMap) -> Cow<'_, HeaderMap> {
    let Some(directives) = targeted_directives(response) else {
        return Cow::Borrowed(response);
    };
    let mut view = response.clone();
    view.remove(header::CACHE_CONTROL);
    view.remove(header::EXPIRES);
    if !directives.is_empty()
        && let Ok(value) = HeaderValue::from_str(&directives)
    {
        view.insert(header::CACHE_CONTROL, value);
    }
    Cow::Owned(view)
}

/// The response's `CDN-Cache-Control` as `Cache-Control` directives, when it is valid and not
/// empty (its lines joined, as RFC 9110 §5.3 combines them).
pub fn targeted_directives(response: &HeaderMap) -> Option<String> {
    let mut lines = Vec::new();
    for value in response.get_all(CDN_CACHE_CONTROL) {
        lines.push(value.to_str().ok()?);
    }
    if lines.is_empty() {
        return None;
    }
    let members: sfv::Dictionary = sfv::Parser::new(lines.join(", ").as_bytes())
        .with_version(sfv::Version::Rfc8941)
        .parse()
        .ok()?;
    if members.is_empty() {
        return None;
    }
    let directives: Vec<String> = members
        .into_iter()
        .filter_map(|(key, entry)| {
            let name = key.as_str();
            let sfv::ListEntry::Item(item) = entry else {
                return None;
            };
            match item.bare_item {
                // A delta-seconds directive is an Integer and nothing else (§2.1: values that
                // violate the constraints inferred from Cache-Control are not consumed).
                sfv::BareItem::Integer(n) => Some(format!("{name}={}", i64::from(n).max(0))),
                _ if DELTA_SECONDS.contains(&name) => None,
                sfv::BareItem::Boolean(true) => Some(name.to_string()),
                sfv::BareItem::Token(t) => Some(format!("{name}={}", t.as_str())),
                sfv::BareItem::String(s) => Some(format!(
                    "{name}=\"{}\"",
                    s.as_str().replace(['"', '\\'], "")
                )),
                _ => None,
            }
        })
        .collect();
    Some(directives.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    fn targeted(value: &'static str) -> Option<String> {
        targeted_directives(&headers(&[("cdn-cache-control", value)]))
    }

    #[test]
    fn a_dictionary_becomes_cache_control_directives() {
        assert_eq!(
            targeted("max-age=60, stale-if-error=86400").as_deref(),
            Some("max-age=60, stale-if-error=86400")
        );
        assert_eq!(
            targeted("public;x=1, max-age=60;y=\"z\"").as_deref(),
            Some("public, max-age=60"),
            "parameters are ignored"
        );
        assert_eq!(
            targeted("private=\"set-cookie\", no-store, max-age=-5").as_deref(),
            Some("private=\"set-cookie\", no-store, max-age=0")
        );
        assert_eq!(
            targeted("max-age=5, max-age=60").as_deref(),
            Some("max-age=60"),
            "a key given twice keeps its last value"
        );
        assert_eq!(
            targeted("no-cache=?0, max-age=1.5, x=:AAE=:, y=(1 2), z=tok").as_deref(),
            Some("z=tok")
        );
        let mut two = HeaderMap::new();
        two.append(CDN_CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        two.append(
            CDN_CACHE_CONTROL,
            HeaderValue::from_static("stale-if-error=5"),
        );
        assert_eq!(
            targeted_directives(&two).as_deref(),
            Some("max-age=60, stale-if-error=5"),
            "several lines are one field"
        );
    }

    #[test]
    fn a_number_of_seconds_of_the_wrong_type_is_not_consumed() {
        assert_eq!(
            targeted("max-age=\"10000\"").as_deref(),
            Some(""),
            "a String is no number: the field stands, without the directive"
        );
        assert_eq!(
            targeted("public, s-maxage=tok, stale-if-error, stale-while-revalidate=60").as_deref(),
            Some("public, stale-while-revalidate=60")
        );
        let response = headers(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=\"10000\""),
        ]);
        let view = cache_view(&response);
        assert!(view.get(header::CACHE_CONTROL).is_none());
    }

    #[test]
    fn an_empty_or_invalid_field_is_ignored_as_if_absent() {
        for invalid in [
            "",
            "   ",
            "Max-Age=60",
            "max-age=60,",
            "max-age=60 stale-if-error=5",
            "max-age=\"60",
            "max-age=1234567890123456",
            "max-age==1",
            "max-age=60;",
            ",max-age=60",
            "max-age=?2",
        ] {
            assert_eq!(
                targeted_directives(&headers(&[("cdn-cache-control", invalid)])),
                None,
                "{invalid:?}"
            );
        }
        assert_eq!(targeted_directives(&HeaderMap::new()), None);
    }

    #[test]
    fn the_view_replaces_cache_control_and_drops_expires() {
        let response = headers(&[
            ("cache-control", "no-cache"),
            ("expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("cdn-cache-control", "max-age=60"),
            ("etag", "\"1\""),
        ]);
        let view = cache_view(&response);
        assert_eq!(view.get("cache-control").expect("cc"), "max-age=60");
        assert!(view.get("expires").is_none());
        assert_eq!(view.get("etag").expect("etag"), "\"1\"");
        assert_eq!(
            view.get("cdn-cache-control").expect("kept"),
            "max-age=60",
            "the field itself is kept"
        );
        let untouched = headers(&[
            ("cache-control", "no-cache"),
            ("cdn-cache-control", "max-age=60,"),
        ]);
        assert!(matches!(cache_view(&untouched), Cow::Borrowed(_)));
        let empty_directives = headers(&[
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "no-cache=?0"),
        ]);
        assert!(
            cache_view(&empty_directives).get("cache-control").is_none(),
            "a valid field with no usable directive still replaces Cache-Control"
        );
    }
}
