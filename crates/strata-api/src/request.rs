//! Reading requests at the edge: JSON bodies (media type, size limit, syntax), path ids, and
//! the conditional headers `If-Match` / `If-None-Match`.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use serde_json::Value;
use strata_core::user::UserId;

use crate::problem::ApiError;

/// The largest request body accepted, in bytes. A user at every limit is about 3 KiB of JSON.
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;

/// Which JSON media types a route accepts.
#[derive(Debug, Clone, Copy)]
pub enum JsonKind {
    /// `application/json` (or any `application/*+json`).
    Json,
    /// `application/merge-patch+json` (RFC 7396), or plain `application/json`.
    MergePatch,
}

impl JsonKind {
    fn expected(self) -> &'static str {
        match self {
            JsonKind::Json => "application/json",
            JsonKind::MergePatch => "application/merge-patch+json",
        }
    }
}

/// Reads and parses a JSON body: 415 for a wrong media type, 413 over the limit, 400 for
/// malformed JSON.
pub async fn json_body(headers: &HeaderMap, body: Body, kind: JsonKind) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = content_type
        .as_deref()
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let accepted = match kind {
        JsonKind::Json => {
            essence == "application/json"
                || (essence.starts_with("application/")
                    && essence.ends_with("+json")
                    && essence != "application/merge-patch+json")
        }
        JsonKind::MergePatch => {
            essence == "application/merge-patch+json" || essence == "application/json"
        }
    };
    if !accepted {
        return Err(ApiError::UnsupportedMediaType {
            expected: kind.expected(),
            got: content_type,
        });
    }
    refuse_declared_oversize(headers)?;
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            // `to_bytes` reports the limit through a boxed `LengthLimitError` in the chain.
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(ApiError::PayloadTooLarge {
                        limit: BODY_LIMIT_BYTES,
                    });
                }
                source = s.source();
            }
            if e.to_string().contains("length limit") {
                return Err(ApiError::PayloadTooLarge {
                    limit: BODY_LIMIT_BYTES,
                });
            }
            return Err(ApiError::BodyRead(e.to_string()));
        }
    };
    if bytes.is_empty() {
        return Err(ApiError::MalformedJson("the body is empty".into()));
    }
    serde_json::from_slice::<Value>(&bytes).map_err(|e| ApiError::MalformedJson(format!("{e}")))
}

/// Parses a path id: decimal digits only, fitting in u64.
pub fn user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse::<UserId>()
        .map_err(|_| ApiError::InvalidUserId(raw.to_string()))
}

/// The strong entity tag of a user at a version.
pub fn etag(version: u64) -> String {
    format!("\"v{version}\"")
}

/// The entity tags listed in an `If-Match` / `If-None-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityTags {
    Any,
    /// (weak, opaque tag including quotes)
    List(Vec<(bool, String)>),
}

/// Parses `If-Match`/`If-None-Match`. An unparseable header is a 400 naming it.
pub fn entity_tags(
    headers: &HeaderMap,
    name: header::HeaderName,
) -> Result<Option<EntityTags>, ApiError> {
    let parameter: &'static str = if name == header::IF_MATCH {
        "If-Match"
    } else {
        "If-None-Match"
    };
    let mut tags = Vec::new();
    let mut any = false;
    for value in headers.get_all(&name) {
        let text = value.to_str().map_err(|_| ApiError::InvalidParameter {
            parameter,
            detail: "must be ASCII".into(),
        })?;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "*" {
                any = true;
                continue;
            }
            let (weak, tag) = match part.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, part),
            };
            let valid = tag.len() >= 2
                && tag.starts_with('"')
                && tag.ends_with('"')
                && !tag[1..tag.len() - 1].contains('"');
            if !valid {
                return Err(ApiError::InvalidParameter {
                    parameter,
                    detail: format!(
                        "{part:?} is not an entity tag; use the quoted ETag value, e.g. \"v1\", or *"
                    ),
                });
            }
            tags.push((weak, tag.to_string()));
        }
    }
    Ok(if any {
        Some(EntityTags::Any)
    } else if tags.is_empty() {
        None
    } else {
        Some(EntityTags::List(tags))
    })
}

impl EntityTags {
    /// Strong comparison (for `If-Match`).
    pub fn matches_strong(&self, current: &str) -> bool {
        match self {
            EntityTags::Any => true,
            EntityTags::List(tags) => tags.iter().any(|(weak, t)| !weak && t == current),
        }
    }

    /// Weak comparison (for `If-None-Match`).
    pub fn matches_weak(&self, current: &str) -> bool {
        match self {
            EntityTags::Any => true,
            EntityTags::List(tags) => tags.iter().any(|(_, t)| t == current),
        }
    }

    /// The single version an `If-Match` names, when it names exactly one of ours.
    pub fn single_version(&self) -> Option<u64> {
        match self {
            EntityTags::List(tags) if tags.len() == 1 && !tags[0].0 => tags[0]
                .1
                .strip_prefix("\"v")
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|n| n.parse().ok()),
            _ => None,
        }
    }
}

/// 413 at once for a body whose declared `Content-Length` is over [`BODY_LIMIT_BYTES`], before
/// any of it is read.
pub fn refuse_declared_oversize(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(len) if len > BODY_LIMIT_BYTES as u64 => Err(ApiError::PayloadTooLarge {
            limit: BODY_LIMIT_BYTES,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(name: header::HeaderName, v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(name, HeaderValue::from_str(v).expect("ascii"));
        m
    }

    #[test]
    fn entity_tags_parse_lists_weak_tags_and_star() {
        let t = entity_tags(
            &h(header::IF_NONE_MATCH, "W/\"v3\", \"v4\""),
            header::IF_NONE_MATCH,
        )
        .expect("ok")
        .expect("some");
        assert!(t.matches_weak("\"v3\"") && t.matches_weak("\"v4\""));
        assert!(!t.matches_strong("\"v3\"") && t.matches_strong("\"v4\""));
        assert_eq!(
            entity_tags(&h(header::IF_MATCH, "*"), header::IF_MATCH).expect("ok"),
            Some(EntityTags::Any)
        );
        assert!(entity_tags(&h(header::IF_MATCH, "v3"), header::IF_MATCH).is_err());
        assert_eq!(
            entity_tags(&h(header::IF_MATCH, "\"v17\""), header::IF_MATCH)
                .expect("ok")
                .expect("some")
                .single_version(),
            Some(17)
        );
    }
}
