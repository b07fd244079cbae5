//! Cache keys: which stored object a request names.
//!
//! An object is found in two steps. Its *URL* (host and path with query, [`Url`]) names every
//! variant of a resource; the origin's `Vary` then says which request headers pick a variant
//! among them (RFC 9111 §4.1), and [`variant`] writes those headers' values into the variant's
//! key. `Accept-Encoding` is normalized first ([`normalize_accept_encoding`]), so that the
//! hundreds of ways browsers spell it make at most a handful of variants, not one each.
//!
//! Credentials never reach a key or the disk in clear: the values of `Authorization` and
//! `Cookie`, when `Vary` names them, are replaced by their SHA-256 ([`cache_view`]).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

/// The content codings a normalized `Accept-Encoding` may name, in the order it names them.
const CODINGS: [&str; 3] = ["br", "gzip", "zstd"];

/// The most bytes of a URL (host and target) the edge keys; longer requests are not cached.
pub const MAX_URL: usize = 8 * 1024;

/// The resource a request names: lower-case host (with port, if given) and the target's path
/// and query, exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Url {
    pub host: String,
    pub path: String,
}

impl Url {
    /// The URL of a request: the authority of an absolute-form target, else `Host`; `None`
    /// when the target has no path (`OPTIONS *`) or the URL is too long to key.
    pub fn of(uri: &http::Uri, headers: &HeaderMap) -> Option<Self> {
        let host = match uri.authority() {
            Some(a) => a.as_str().to_ascii_lowercase(),
            None => headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase(),
        };
        let path = uri.path_and_query()?.as_str().to_string();
        if !path.starts_with('/') || host.len() + path.len() > MAX_URL {
            return None;
        }
        Some(Self { host, path })
    }

    /// The key of the resource: every variant of it is stored under this key.
    pub fn key(&self) -> String {
        format!("{}{}", self.host, self.path)
    }
}

/// Rewrites `Accept-Encoding` to the codings of [`CODINGS`] the client accepts (q > 0), in
/// a fixed order, or removes it when it accepts none of them.
pub fn normalize_accept_encoding(headers: &mut HeaderMap) {
    if !headers.contains_key(header::ACCEPT_ENCODING) {
        return;
    }
    let mut accepted = [false; CODINGS.len()];
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            if coding == "*" {
                accepted = [true; CODINGS.len()];
            } else if let Some(i) = CODINGS.iter().position(|c| *c == coding) {
                accepted[i] = true;
            }
        }
    }
    let names: Vec<&str> = CODINGS
        .iter()
        .zip(accepted)
        .filter(|(_, a)| *a)
        .map(|(c, _)| *c)
        .collect();
    headers.remove(header::ACCEPT_ENCODING);
    if !names.is_empty()
        && let Ok(v) = HeaderValue::from_str(&names.join(", "))
    {
        headers.insert(header::ACCEPT_ENCODING, v);
    }
}

/// The header names a response's `Vary` lists, lower case, sorted, without repeats; `None`
/// for `Vary: *` (no later request can match it: RFC 9111 §4.1).
pub fn vary_names(response: &HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for value in response.get_all(header::VARY) {
        for name in String::from_utf8_lossy(value.as_bytes()).split(',') {
            let name = name.trim().to_ascii_lowercase();
            if name == "*" {
                return None;
            }
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

fn is_credential(name: &str) -> bool {
    name == "authorization" || name == "cookie"
}

fn digest(value: &[u8]) -> HeaderValue {
    let hex: String = Sha256::digest(value)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    HeaderValue::from_str(&format!("sha256:{hex}")).unwrap_or(HeaderValue::from_static("sha256"))
}

/// The request headers a cache policy may keep and match: `Host`, `Cache-Control`, `Pragma`,
/// whether `Authorization` is present (its value hashed), and the headers `vary` names
/// (credentials hashed). Nothing else of a request is stored.
pub fn cache_view(request: &HeaderMap, vary: &[String]) -> HeaderMap {
    let mut view = HeaderMap::new();
    for name in [header::HOST, header::CACHE_CONTROL, header::PRAGMA] {
        for v in request.get_all(&name) {
            view.append(name.clone(), v.clone());
        }
    }
    lower_directive_names(&mut view);
    if let Some(v) = request.get(header::AUTHORIZATION) {
        view.insert(header::AUTHORIZATION, digest(v.as_bytes()));
    }
    for name in vary {
        let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        view.remove(&header_name);
        for v in request.get_all(&header_name) {
            let v = if is_credential(name) {
                digest(v.as_bytes())
            } else {
                v.clone()
            };
            view.append(header_name.clone(), v);
        }
    }
    view
}

/// The key of one variant: the URL's key, then each header `vary` names with the request's
/// values (credentials hashed). Two requests get the same variant exactly when they agree on
/// every header `Vary` names.
pub fn variant(url_key: &str, vary: &[String], request: &HeaderMap) -> String {
    let mut key = String::with_capacity(url_key.len() + 16);
    key.push_str(url_key);
    for name in vary {
        key.push('\0');
        key.push_str(name);
        key.push('=');
        let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for (i, v) in request.get_all(&header_name).iter().enumerate() {
            if i > 0 {
                key.push_str(", ");
            }
            if is_credential(name) {
                key.push_str(&String::from_utf8_lossy(digest(v.as_bytes()).as_bytes()));
            } else {
                key.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
        }
    }
    key
}

/// Lower-cases the directive names of every `Cache-Control` line (not quoted strings, not
/// values): `No-CaChE` is `no-cache` (RFC 9111 §5.2).
pub fn lower_directive_names(headers: &mut HeaderMap) {
    let lines: Vec<_> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .cloned()
        .collect();
    if lines
        .iter()
        .all(|l| !l.as_bytes().iter().any(u8::is_ascii_uppercase))
    {
        return;
    }
    headers.remove(header::CACHE_CONTROL);
    for line in lines {
        let mut out = Vec::with_capacity(line.len());
        let (mut quoted, mut in_value) = (false, false);
        for &b in line.as_bytes() {
            match b {
                b'"' => quoted = !quoted,
                b',' if !quoted => in_value = false,
                b'=' if !quoted => in_value = true,
                _ => {}
            }
            out.push(if quoted || in_value {
                b
            } else {
                b.to_ascii_lowercase()
            });
        }
        headers.append(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(&out).unwrap_or(line),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(value: &str) -> Option<String> {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("value"),
        );
        normalize_accept_encoding(&mut h);
        h.get(header::ACCEPT_ENCODING)
            .map(|v| v.to_str().expect("ascii").to_string())
    }

    #[test]
    fn accept_encoding_is_normalized_to_a_few_spellings() {
        assert_eq!(normalized("gzip, deflate, br").as_deref(), Some("br, gzip"));
        assert_eq!(
            normalized("br;q=1.0, gzip;q=0.8, *;q=0.1").as_deref(),
            Some("br, gzip, zstd")
        );
        assert_eq!(normalized("GZIP").as_deref(), Some("gzip"));
        assert_eq!(normalized("gzip;q=0, identity").as_deref(), None);
        assert_eq!(normalized("deflate").as_deref(), None);
    }

    #[test]
    fn vary_star_matches_nothing_and_names_are_sorted() {
        let mut h = HeaderMap::new();
        h.append(
            header::VARY,
            HeaderValue::from_static("Accept-Language, accept-encoding"),
        );
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        assert_eq!(
            vary_names(&h),
            Some(vec!["accept-encoding".into(), "accept-language".into()])
        );
        h.append(header::VARY, HeaderValue::from_static("*"));
        assert_eq!(vary_names(&h), None);
    }

    #[test]
    fn credentials_never_appear_in_keys_or_views() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("sid=secret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        let vary = vec!["cookie".to_string()];
        let key = variant("example.com/a", &vary, &h);
        assert!(!key.contains("secret") && key.contains("sha256:"));
        let view = cache_view(&h, &vary);
        for (_, v) in &view {
            assert!(!String::from_utf8_lossy(v.as_bytes()).contains("secret"));
        }
        assert!(view.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn urls_come_from_the_authority_or_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("Example.COM:8080"));
        let uri: http::Uri = "/a?b=1".parse().expect("uri");
        let url = Url::of(&uri, &h).expect("url");
        assert_eq!(url.key(), "example.com:8080/a?b=1");
        let uri: http::Uri = "http://other.test/x".parse().expect("uri");
        assert_eq!(Url::of(&uri, &h).expect("url").key(), "other.test/x");
        let uri: http::Uri = "*".parse().expect("uri");
        assert!(Url::of(&uri, &h).is_none());
    }
}
