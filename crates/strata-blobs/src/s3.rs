//! The S3-compatible blob store: one object per blob, `<prefix><key>` in one bucket, on any
//! service that speaks S3 with path-style addresses (SeaweedFS, which the tests run, MinIO,
//! Ceph's RGW, AWS itself).
//!
//! **Client.** Requests are signed by `rusty-s3` (signature V4 as presigned URLs; no HTTP or
//! XML stack of its own, only `hmac`, `sha2`, `url` and `jiff`) and sent by the workspace's
//! `reqwest` (hyper underneath), which the web tier already builds. `object_store` (its `aws`
//! feature) or `aws-sdk-s3` would bring their own HTTP stacks, credential chains, XML and TLS
//! crates — hundreds of crates to compile for four kinds of request.
//!
//! **TLS.** An `https://` endpoint is spoken to over rustls (the `ring` provider the balancer
//! already builds), trusting the system's roots (`/etc/ssl/certs`) plus those of
//! [`S3Options::ca_file`] (a PEM bundle: a private CA, or a test's self-signed certificate).
//! A store opened on `https://` never follows a redirect to plain HTTP. `http://` stays for a
//! service on loopback or a private network.
//!
//! **Guarantees** (the trait's, and how S3 keeps them):
//! - *a blob is entirely visible or not at all*: a blob is sent in one `PUT` of its whole
//!   length, and an S3 `PUT` is atomic per object — the object appears when the upload
//!   completed, never in part (SeaweedFS writes the chunks first and the filer entry that names
//!   them last). Blobs are bounded by [`S3Options::max_bytes`], at most S3's single-`PUT`
//!   limit of 5 GiB, so no multipart upload is needed;
//! - *a put that returned is durable*: it returns after the service answered 200 to the `PUT`,
//!   which S3 services give once the object is stored (how durably is the service's promise;
//!   SeaweedFS's is tested by killing it with SIGKILL mid-writes). The body carries a
//!   `Content-MD5`, so bytes damaged on the way are refused, not stored;
//! - *what `get` returns hashes to its key*: checked on every read ([`BlobError::Corrupt`]);
//!   a body longer than the size bound is refused without being read whole;
//! - *every call has a deadline* ([`S3Options::timeout`], the whole call, retries included).
//!
//! **Retries.** Blobs are content-addressed, so every request here is idempotent — a `PUT` sent
//! twice stores the same bytes under the same name. A request that failed in transport or got
//! a 500/503 is sent again (3 tries, 100 ms then 200 ms apart) while the deadline allows.
//!
//! **Differences from the filesystem store.** `delete` asks whether the object exists, then
//! deletes it (S3's `DELETE` does not say whether there was anything): two concurrent deletes
//! of one blob may both answer `true`. A put does not look first: storing bytes already there
//! sends them again. Credentials come from [`S3Options`] or the environment
//! ([`S3Credentials::from_env`]) and are never printed.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::{Method, StatusCode, header};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::{BlobError, BlobKey, BlobStore};

/// S3's limit for one `PUT`: blobs are never larger.
pub const MAX_PUT_BYTES: usize = 5 << 30;

/// How long a signed request stays valid beyond the call's deadline (clock skew).
const SIGNATURE_SLACK: Duration = Duration::from_secs(300);

/// An access key and its secret. `Debug` shows the key, never the secret.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<hidden>")
            .finish()
    }
}

impl S3Credentials {
    /// `STRATA_S3_ACCESS_KEY` and `STRATA_S3_SECRET_KEY`, else AWS's `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`.
    pub fn from_env() -> Result<Self, BlobError> {
        let pair = |key: &str, secret: &str| {
            Some(Self {
                access_key: std::env::var(key).ok()?,
                secret_key: std::env::var(secret).ok()?,
            })
        };
        pair("STRATA_S3_ACCESS_KEY", "STRATA_S3_SECRET_KEY")
            .or_else(|| pair("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
            .ok_or_else(|| {
                BlobError::Engine(
                    "no S3 credentials: set STRATA_S3_ACCESS_KEY and STRATA_S3_SECRET_KEY \
                     (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                        .into(),
                )
            })
    }
}

impl S3Credentials {
    /// Reads a credentials file: `access_key=…` and `secret_key=…` lines (written by
    /// [`S3Credentials::write_new`], or by hand; `#` starts a comment).
    pub fn from_file(path: &std::path::Path) -> Result<Self, BlobError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            BlobError::Engine(format!(
                "cannot read the S3 credentials file {}: {e}",
                path.display()
            ))
        })?;
        let (mut access_key, mut secret_key) = (None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("access_key", v)) if !v.is_empty() => access_key = Some(v.to_string()),
                Some(("secret_key", v)) if !v.is_empty() => secret_key = Some(v.to_string()),
                _ => {
                    return Err(BlobError::Engine(format!(
                        "the S3 credentials file {} has a line that is neither `access_key=…` nor `secret_key=…`",
                        path.display()
                    )));
                }
            }
        }
        match (access_key, secret_key) {
            (Some(access_key), Some(secret_key)) => Ok(Self {
                access_key,
                secret_key,
            }),
            _ => Err(BlobError::Engine(format!(
                "the S3 credentials file {} needs both `access_key=…` and `secret_key=…`",
                path.display()
            ))),
        }
    }

    /// Writes these credentials to a new file readable by its owner only; an existing file is
    /// left alone and read instead (so a service's identity survives restarts).
    pub fn write_new(&self, path: &std::path::Path) -> Result<Self, BlobError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut file) => {
                let text = format!(
                    "# S3 credentials of a Strata object store; keep private.\naccess_key={}\nsecret_key={}\n",
                    self.access_key, self.secret_key
                );
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| {
                        BlobError::Engine(format!("cannot write {}: {e}", path.display()))
                    })?;
                Ok(self.clone())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::from_file(path),
            Err(e) => Err(BlobError::Engine(format!(
                "cannot create {}: {e}",
                path.display()
            ))),
        }
    }
}

/// Where and how the store keeps its blobs.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// The service, `http://host:port` (buckets are addressed by path: `<endpoint>/<bucket>`).
    pub endpoint: String,
    /// The signing region (`us-east-1` for services that have none).
    pub region: String,
    /// Created when missing.
    pub bucket: String,
    /// Put before every key (`photos/`), so several stores can share a bucket.
    pub prefix: String,
    pub credentials: S3Credentials,
    /// The largest blob accepted (at most [`MAX_PUT_BYTES`]).
    pub max_bytes: usize,
    /// The deadline of each call, retries included.
    pub timeout: Duration,
    /// More roots to trust for an `https://` endpoint (PEM, one or several certificates).
    pub ca_file: Option<std::path::PathBuf>,
}

impl S3Options {
    /// Options with the default region (`us-east-1`), no prefix and a 30 s deadline.
    pub fn new(
        endpoint: impl Into<String>,
        bucket: impl Into<String>,
        credentials: S3Credentials,
        max_bytes: usize,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            prefix: String::new(),
            credentials,
            max_bytes,
            timeout: Duration::from_secs(30),
            ca_file: None,
        }
    }
}

/// The store. Cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    bucket: std::sync::Arc<Bucket>,
    credentials: std::sync::Arc<Credentials>,
    http: reqwest::Client,
    prefix: String,
    max_bytes: usize,
    timeout: Duration,
    /// `<endpoint>/<bucket>`, how errors name the store.
    name: String,
}

/// Why a request got no answer, or its answer.
enum Sent {
    Answer(reqwest::Response),
    Failed(String),
}

impl S3BlobStore {
    /// Checks the options, and creates the bucket when it is missing (an existing bucket is
    /// kept as it is). Fails when the service cannot be reached or refuses the credentials.
    pub async fn open(options: S3Options) -> Result<Self, BlobError> {
        let endpoint: url::Url = options.endpoint.parse().map_err(|e| {
            BlobError::Engine(format!(
                "S3 endpoint {:?} is not a URL: {e}",
                options.endpoint
            ))
        })?;
        let https = match endpoint.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(BlobError::Engine(format!(
                    "S3 endpoint {endpoint} is {other}://: use http:// or https://"
                )));
            }
        };
        if options.ca_file.is_some() && !https {
            return Err(BlobError::Engine(format!(
                "a CA file was given for {endpoint}, which is not https://: use an https:// \
                 endpoint, or drop the CA file"
            )));
        }
        if options.max_bytes > MAX_PUT_BYTES {
            return Err(BlobError::Engine(format!(
                "a blob limit of {} bytes is over S3's single-PUT limit of {MAX_PUT_BYTES}",
                options.max_bytes
            )));
        }
        if options.timeout.is_zero() {
            return Err(BlobError::Engine(
                "the S3 timeout must be above zero".into(),
            ));
        }
        let name = format!(
            "{}/{}",
            endpoint.as_str().trim_end_matches('/'),
            options.bucket
        );
        let bucket = Bucket::new(
            endpoint,
            UrlStyle::Path,
            options.bucket.clone(),
            options.region.clone(),
        )
        .map_err(|e| BlobError::Engine(format!("S3 bucket {name}: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.timeout.min(Duration::from_secs(5)))
            // Below the idle timeouts of S3 services, so a pooled connection is not one the
            // service is closing.
            .pool_idle_timeout(Duration::from_secs(20))
            .https_only(https);
        if let Some(file) = &options.ca_file {
            for root in roots_in(file)? {
                builder = builder.add_root_certificate(root);
            }
        }
        let http = builder
            .build()
            .map_err(|e| BlobError::Engine(format!("cannot build the S3 client: {e}")))?;
        let store = Self {
            bucket: std::sync::Arc::new(bucket),
            credentials: std::sync::Arc::new(Credentials::new(
                options.credentials.access_key,
                options.credentials.secret_key,
            )),
            http,
            prefix: options.prefix,
            max_bytes: options.max_bytes,
            timeout: options.timeout,
            name,
        };
        store.ensure_bucket().await?;
        Ok(store)
    }

    /// `<endpoint>/<bucket>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object name of a key: `<prefix><key>`.
    pub fn object_of(&self, key: &BlobKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    async fn ensure_bucket(&self) -> Result<(), BlobError> {
        let deadline = Instant::now() + self.timeout;
        let what = "HEAD bucket";
        let head = self.bucket.head_bucket(Some(&self.credentials));
        let answer = self
            .send(deadline, what, || self.request(Method::HEAD, &head, None))
            .await?;
        match answer.status() {
            s if s.is_success() => return Ok(()),
            StatusCode::NOT_FOUND => {}
            _ => return Err(self.refused(what, answer).await),
        }
        let create = self.bucket.create_bucket(&self.credentials);
        let body = if self.bucket.region() == "us-east-1" {
            Vec::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.bucket.region()
            )
            .into_bytes()
        };
        let what = "create bucket";
        let answer = self
            .send(deadline, what, || {
                self.request(Method::PUT, &create, Some(body.clone()))
            })
            .await?;
        if answer.status().is_success() {
            tracing::info!(bucket = %self.name, "Created the S3 bucket for blobs.");
            return Ok(());
        }
        // Created meanwhile by another process: as good.
        let error = self.refused(what, answer).await;
        if error.to_string().contains("BucketAlreadyOwnedByYou") {
            return Ok(());
        }
        Err(error)
    }

    /// A signed request for `action`, with `body` (its length and MD5 sent and signed).
    fn request<'a, A: S3Action<'a> + Clone>(
        &self,
        method: Method,
        action: &A,
        body: Option<Vec<u8>>,
    ) -> reqwest::RequestBuilder {
        let mut action = action.clone();
        let body = body.map(|bytes| {
            let md5 = base64_md5(&bytes);
            action.headers_mut().insert("content-md5", md5.clone());
            (bytes, md5)
        });
        let url = action.sign(self.timeout + SIGNATURE_SLACK);
        let builder = self.http.request(method, url);
        match body {
            Some((bytes, md5)) => builder
                .header(header::CONTENT_LENGTH, bytes.len())
                .header("content-md5", md5)
                .body(bytes),
            None => builder,
        }
    }

    /// Sends the request `build` makes, again after a transport failure or a 500/503, until
    /// it gets another answer, three tries are spent or `deadline` passes.
    async fn send(
        &self,
        deadline: Instant,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BlobError> {
        let mut last = String::new();
        for attempt in 0..3u32 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let sent = match tokio::time::timeout(left, build().timeout(left).send()).await {
                Err(_) => Sent::Failed("no answer".into()),
                Ok(Err(e)) => Sent::Failed(describe(&e)),
                Ok(Ok(answer)) => Sent::Answer(answer),
            };
            match sent {
                Sent::Answer(a)
                    if a.status() != StatusCode::INTERNAL_SERVER_ERROR
                        && a.status() != StatusCode::SERVICE_UNAVAILABLE =>
                {
                    return Ok(a);
                }
                Sent::Answer(a) => last = format!("answered {}", a.status()),
                Sent::Failed(why) => last = why,
            }
            let pause = Duration::from_millis(100 << attempt);
            if Instant::now() + pause >= deadline {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        Err(BlobError::Engine(format!(
            "S3 {what} on {} failed within {} ms: {last}",
            self.name,
            self.timeout.as_millis()
        )))
    }

    /// An error for an answer that was not the one hoped for: its status, and the S3 error
    /// code and message of its body, if any. A 403 says the credentials are the likely cause.
    async fn refused(&self, what: &str, answer: reqwest::Response) -> BlobError {
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        let code = xml_field(&body, "Code");
        let message = xml_field(&body, "Message");
        let detail = match (code, message) {
            (Some(c), Some(m)) => format!(": {c}: {m}"),
            (Some(c), None) => format!(": {c}"),
            _ => String::new(),
        };
        let hint = if status == StatusCode::FORBIDDEN {
            " (the service refused the credentials: check the access key, the secret and \
             their permissions on the bucket)"
        } else {
            ""
        };
        BlobError::Engine(format!(
            "S3 {what} on {} answered {status}{detail}{hint}",
            self.name
        ))
    }

    /// Reads a body of at most `max_bytes`, before `deadline`.
    async fn read_body(
        &self,
        key: &BlobKey,
        mut answer: reqwest::Response,
        deadline: Instant,
    ) -> Result<Vec<u8>, BlobError> {
        let too_big = || {
            BlobError::Engine(format!(
                "S3 object {} in {} is larger than the limit of {} bytes: not a blob of this store",
                self.object_of(key),
                self.name,
                self.max_bytes
            ))
        };
        let expected = answer.content_length().unwrap_or(0);
        if expected > self.max_bytes as u64 {
            return Err(too_big());
        }
        let mut bytes = Vec::with_capacity(expected as usize);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, answer.chunk())
                .await
                .map_err(|_| {
                    BlobError::Engine(format!(
                        "S3 GET of {} on {} did not finish within {} ms",
                        self.object_of(key),
                        self.name,
                        self.timeout.as_millis()
                    ))
                })?
                .map_err(|e| {
                    BlobError::Engine(format!(
                        "S3 GET of {} on {}: {}",
                        self.object_of(key),
                        self.name,
                        describe(&e)
                    ))
                })?;
            let Some(chunk) = chunk else {
                return Ok(bytes);
            };
            if bytes.len() + chunk.len() > self.max_bytes {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
    }
}

/// The certificates of a PEM bundle; an error says which file and why.
fn roots_in(file: &std::path::Path) -> Result<Vec<reqwest::Certificate>, BlobError> {
    let pem = std::fs::read(file).map_err(|e| {
        BlobError::Engine(format!("cannot read the CA file {}: {e}", file.display()))
    })?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        BlobError::Engine(format!(
            "the CA file {} is not PEM certificates: {e}",
            file.display()
        ))
    })?;
    if roots.is_empty() {
        return Err(BlobError::Engine(format!(
            "the CA file {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            file.display()
        )));
    }
    Ok(roots)
}

/// A transport error without its URL (a presigned URL carries the access key and a signature).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The text of the first `<name>…</name>` in an S3 error body.
fn xml_field<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&format!("</{name}>"))?;
    Some(&body[start..start + len])
}

/// `Content-MD5`: the base64 of the body's MD5.
fn base64_md5(bytes: &[u8]) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobKey, BlobError> {
        if bytes.len() > self.max_bytes {
            return Err(BlobError::TooLarge {
                size: bytes.len(),
                max: self.max_bytes,
            });
        }
        let deadline = Instant::now() + self.timeout;
        let key = BlobKey::of(&bytes);
        let object = self.object_of(&key);
        let mut put = self.bucket.put_object(Some(&self.credentials), &object);
        put.headers_mut()
            .insert("content-type", "application/octet-stream");
        let what = format!("PUT of {object}");
        let answer = self
            .send(deadline, &what, || {
                self.request(Method::PUT, &put, Some(bytes.clone()))
                    .header(header::CONTENT_TYPE, "application/octet-stream")
            })
            .await?;
        if answer.status().is_success() {
            Ok(key)
        } else {
            Err(self.refused(&what, answer).await)
        }
    }

    async fn get(&self, key: &BlobKey) -> Result<Option<Vec<u8>>, BlobError> {
        let deadline = Instant::now() + self.timeout;
        let object = self.object_of(key);
        let get = self.bucket.get_object(Some(&self.credentials), &object);
        let what = format!("GET of {object}");
        let answer = self
            .send(deadline, &what, || self.request(Method::GET, &get, None))
            .await?;
        match answer.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                // A missing bucket is an error, not an absent blob.
                let error = self.refused(&what, answer).await;
                if error.to_string().contains("NoSuchBucket") {
                    return Err(error);
                }
                return Ok(None);
            }
            _ => return Err(self.refused(&what, answer).await),
        }
        let bytes = self.read_body(key, answer, deadline).await?;
        if BlobKey::of(&bytes) != *key {
            return Err(BlobError::Corrupt { key: key.clone() });
        }
        Ok(Some(bytes))
    }

    async fn exists(&self, key: &BlobKey) -> Result<bool, BlobError> {
        let deadline = Instant::now() + self.timeout;
        let object = self.object_of(key);
        let head = self.bucket.head_object(Some(&self.credentials), &object);
        let what = format!("HEAD of {object}");
        let answer = self
            .send(deadline, &what, || self.request(Method::HEAD, &head, None))
            .await?;
        match answer.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.refused(&what, answer).await),
        }
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool, BlobError> {
        if !self.exists(key).await? {
            return Ok(false);
        }
        let deadline = Instant::now() + self.timeout;
        let object = self.object_of(key);
        let delete = self.bucket.delete_object(Some(&self.credentials), &object);
        let what = format!("DELETE of {object}");
        let answer = self
            .send(deadline, &what, || {
                self.request(Method::DELETE, &delete, None)
            })
            .await?;
        if answer.status().is_success() {
            Ok(true)
        } else {
            Err(self.refused(&what, answer).await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_their_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>The request signature we calculated does not match</Message></Error>";
        assert_eq!(xml_field(body, "Code"), Some("SignatureDoesNotMatch"));
        assert_eq!(
            xml_field(body, "Message"),
            Some("The request signature we calculated does not match")
        );
        assert_eq!(xml_field(body, "Resource"), None);
        assert_eq!(xml_field("<Code>unclosed", "Code"), None);
    }

    #[test]
    fn content_md5_is_the_base64_of_the_md5() {
        assert_eq!(base64_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }

    #[test]
    fn credentials_never_print_their_secret() {
        let c = S3Credentials {
            access_key: "AK".into(),
            secret_key: "hush-hush".into(),
        };
        let options = S3Options::new("http://127.0.0.1:1", "b", c, 10);
        assert!(!format!("{options:?}").contains("hush"));
        assert!(format!("{options:?}").contains("AK"));
    }

    #[tokio::test]
    async fn options_that_cannot_work_are_refused_before_any_request() {
        let c = || S3Credentials {
            access_key: "AK".into(),
            secret_key: "SK".into(),
        };
        for (endpoint, max, expect) in [
            ("not a url", 10, "is not a URL"),
            ("ftp://s3.example.com", 10, "use http:// or https://"),
            ("http://127.0.0.1:1", MAX_PUT_BYTES + 1, "single-PUT limit"),
        ] {
            let e = S3BlobStore::open(S3Options::new(endpoint, "b", c(), max))
                .await
                .expect_err(endpoint);
            assert!(e.to_string().contains(expect), "{endpoint}: {e}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        for (endpoint, ca_file, expect) in [
            ("http://127.0.0.1:1", not_pem.clone(), "not https://"),
            ("https://127.0.0.1:1", not_pem, "holds no certificate"),
            (
                "https://127.0.0.1:1",
                dir.path().join("missing.pem"),
                "cannot read the CA file",
            ),
        ] {
            let mut options = S3Options::new(endpoint, "b", c(), 10);
            options.ca_file = Some(ca_file);
            let e = S3BlobStore::open(options).await.expect_err(endpoint);
            assert!(e.to_string().contains(expect), "{endpoint}: {e}");
        }
    }
}
