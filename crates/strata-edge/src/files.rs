//! Static content: files from a directory, served by the edge itself under a path prefix
//! (`--static-dir DIR --static-prefix /static/`), with the same answers as stored objects —
//! `ETag` and `Last-Modified` from the file, `Cache-Control: public, max-age=N`, `304`s,
//! byte ranges, `HEAD` ([`crate::respond`]).
//!
//! Only what is plainly a file under the directory is served: every path segment must be
//! made of letters, digits, `-`, `_`, `.` and `~` and not start with a dot (no `..`, no hidden
//! files, no percent-escapes), the file's real path (symbolic links resolved) must still lie
//! under the directory, and it must be a regular file no larger than the largest object.
//! Anything else is a 404 that says nothing of why.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::object::{Meta, Object};
use crate::respond::{EdgeBody, from_object, problem};

/// Where static files come from.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    /// The directory, as given (resolved when a file is served).
    pub dir: PathBuf,
    /// The URL path prefix they are served under, starting and ending with `/`.
    pub prefix: String,
    /// `max-age` of their `Cache-Control`, in seconds.
    pub max_age: u64,
}

/// The file a URL path names under `root`, if the path is one the edge serves.
fn file_path(root: &Path, prefix: &str, path: &str) -> Option<PathBuf> {
    let rest = path.strip_prefix(prefix)?;
    let mut out = root.to_path_buf();
    for segment in rest.split('/') {
        let plain = !segment.is_empty()
            && !segment.starts_with('.')
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
        if !plain {
            return None;
        }
        out.push(segment);
    }
    Some(out)
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

fn not_found() -> Response<EdgeBody> {
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        "There is no such static file.",
    )
}

impl StaticFiles {
    /// Whether a URL path is under the prefix.
    pub fn owns(&self, path: &str) -> bool {
        path.starts_with(&self.prefix)
    }

    /// The answer to a request for a path under the prefix: the file, or a 404 when no file
    /// may be served for it.
    pub async fn serve(
        &self,
        method: &Method,
        path: &str,
        request: &HeaderMap,
        max_object: u64,
    ) -> Response<EdgeBody> {
        if method != Method::GET && method != Method::HEAD {
            let mut r = problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Static files are read with GET or HEAD.",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let Ok(root) = tokio::fs::canonicalize(&self.dir).await else {
            return not_found();
        };
        let Some(candidate) = file_path(&root, &self.prefix, path) else {
            return not_found();
        };
        let Ok(real) = tokio::fs::canonicalize(&candidate).await else {
            return not_found();
        };
        let Ok(meta) = tokio::fs::metadata(&real).await else {
            return not_found();
        };
        if !real.starts_with(&root) || !meta.is_file() || meta.len() > max_object {
            return not_found();
        }
        let Ok(body) = tokio::fs::read(&real).await else {
            return not_found();
        };
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let nanos = modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(&real)),
        );
        let validators = [
            (header::ETAG, format!("\"{:x}-{nanos:x}\"", body.len())),
            (header::LAST_MODIFIED, httpdate::fmt_http_date(modified)),
            (
                header::CACHE_CONTROL,
                format!("public, max-age={}", self.max_age),
            ),
        ];
        for (name, value) in validators {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        let now = SystemTime::now();
        let mut req = http::Request::new(());
        *req.uri_mut() = http::Uri::from_static("/");
        let (parts, ()) = req.into_parts();
        let object = Object {
            meta: Meta {
                key: path.to_string(),
                url: path.to_string(),
                host: String::new(),
                path: path.to_string(),
                vary: Vec::new(),
                status: 200,
                policy: crate::rules::policy(&parts, StatusCode::OK, &headers, now),
                headers,
                lifetime_ms: self.max_age.saturating_mul(1000),
                staleness: Default::default(),
                surrogate_keys: Vec::new(),
                invalidated: false,
            },
            body: Bytes::from(body),
        };
        let mut response = from_object(&object, method, request, now, "hit; detail=static");
        response.headers_mut().remove(header::AGE);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_under_the_prefix_name_files() {
        let root = Path::new("/srv/static");
        let p = |path: &str| file_path(root, "/static/", path);
        assert_eq!(p("/static/app.css"), Some(root.join("app.css")));
        assert_eq!(
            p("/static/img/logo-2.png"),
            Some(root.join("img/logo-2.png"))
        );
        for bad in [
            "/static/",
            "/static/../etc/passwd",
            "/static/a/../../x",
            "/static/.env",
            "/static/a//b",
            "/static/%2e%2e/x",
            "/static/a\\b",
            "/static/a?b",
            "/other/a.css",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }
}
