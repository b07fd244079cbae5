//! What a purge names ([`Selector`]): one URL, every URL under a prefix, or every object an
//! origin tagged with a surrogate key; and how ([`Mode`]): hard (removed) or soft (marked
//! stale, so the next request revalidates it with the origin, and `stale-if-error` can still
//! answer while the origin is down).
//!
//! A URL is given as `http://host/path?query` (that host only) or `/path?query` (on every
//! host). A purge that matches nothing is not an error: it answers `purged: 0`.

use serde::{Deserialize, Serialize};

use crate::object::Meta;

/// The longest URL, prefix or key a purge may name.
pub const MAX_SELECTOR: usize = 8 * 1024;

/// What a purge removes or marks stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every variant of one URL.
    Url { host: Option<String>, path: String },
    /// Every URL whose path starts with `path`.
    Prefix { host: Option<String>, path: String },
    /// Every object whose `Surrogate-Key` lists this key.
    SurrogateKey(String),
}

/// Hard: removed from memory and disk. Soft: kept, but stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Hard,
    Soft,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hard => "hard",
            Mode::Soft => "soft",
        }
    }
}

/// A purge request, as the admin API takes it: exactly one of `url`, `prefix` and `key`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub soft: bool,
}

/// Splits `http://host/path` into its lower-case host and path, or takes `/path` as it is.
fn host_and_path(url: &str) -> Result<(Option<String>, String), String> {
    if url.starts_with('/') {
        return Ok((None, url.to_string()));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is neither /path nor http://host/path"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok((Some(host.to_ascii_lowercase()), path.to_string()))
}

impl PurgeRequest {
    /// The selector and mode, or why the request names none.
    pub fn parse(&self) -> Result<(Selector, Mode), String> {
        let mode = if self.soft { Mode::Soft } else { Mode::Hard };
        let given = [&self.url, &self.prefix, &self.key]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given != 1 {
            return Err("name exactly one of \"url\", \"prefix\" and \"key\"".into());
        }
        let long = |s: &str| s.len() > MAX_SELECTOR || s.chars().any(char::is_control);
        let selector = if let Some(url) = &self.url {
            if long(url) {
                return Err("the URL is too long or holds control characters".into());
            }
            let (host, path) = host_and_path(url)?;
            Selector::Url { host, path }
        } else if let Some(prefix) = &self.prefix {
            if long(prefix) {
                return Err("the prefix is too long or holds control characters".into());
            }
            let (host, path) = host_and_path(prefix)?;
            Selector::Prefix { host, path }
        } else {
            let key = self.key.clone().unwrap_or_default();
            if key.is_empty() || long(&key) || key.contains(char::is_whitespace) {
                return Err("a surrogate key is 1 to 8192 characters without spaces".into());
            }
            Selector::SurrogateKey(key)
        };
        Ok((selector, mode))
    }
}

impl Selector {
    /// The kind, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Selector::Url { .. } => "url",
            Selector::Prefix { .. } => "prefix",
            Selector::SurrogateKey(_) => "key",
        }
    }

    /// Whether it names an object with this host, path and surrogate keys.
    pub fn matches(&self, host: &str, path: &str, keys: &[String]) -> bool {
        match self {
            Selector::Url { host: h, path: p } => {
                h.as_deref().is_none_or(|h| h == host) && p == path
            }
            Selector::Prefix { host: h, path: p } => {
                h.as_deref().is_none_or(|h| h == host) && path.starts_with(p.as_str())
            }
            Selector::SurrogateKey(k) => keys.iter().any(|key| key == k),
        }
    }

    pub fn matches_meta(&self, meta: &Meta) -> bool {
        self.matches(&meta.host, &meta.path, &meta.surrogate_keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<(Selector, Mode), String> {
        serde_json::from_str::<PurgeRequest>(json)
            .map_err(|e| e.to_string())?
            .parse()
    }

    #[test]
    fn purges_parse_into_selectors() {
        assert_eq!(
            parse(r#"{"url":"http://Example.com/a?b=1"}"#),
            Ok((
                Selector::Url {
                    host: Some("example.com".into()),
                    path: "/a?b=1".into()
                },
                Mode::Hard
            ))
        );
        assert_eq!(
            parse(r#"{"prefix":"/static/","soft":true}"#),
            Ok((
                Selector::Prefix {
                    host: None,
                    path: "/static/".into()
                },
                Mode::Soft
            ))
        );
        assert!(parse(r#"{"url":"/a","key":"k"}"#).is_err());
        assert!(parse(r#"{}"#).is_err());
        assert!(parse(r#"{"key":"a b"}"#).is_err());
        assert!(parse(r#"{"url":"ftp://x/"}"#).is_err());
        assert!(parse(r#"{"url":"/a","extra":1}"#).is_err());
    }

    #[test]
    fn selectors_match_by_host_path_prefix_and_key() {
        let url = Selector::Url {
            host: None,
            path: "/a".into(),
        };
        assert!(url.matches("x.test", "/a", &[]));
        assert!(!url.matches("x.test", "/a?b", &[]));
        let prefix = Selector::Prefix {
            host: Some("x.test".into()),
            path: "/s/".into(),
        };
        assert!(prefix.matches("x.test", "/s/1.css", &[]));
        assert!(!prefix.matches("y.test", "/s/1.css", &[]));
        let key = Selector::SurrogateKey("user-12".into());
        assert!(key.matches("x", "/", &["user-12".into()]));
        assert!(!key.matches("x", "/", &["user-1".into()]));
    }
}
