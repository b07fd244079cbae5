//! A small etcd v3 client over etcd's own JSON gateway: what the control plane needs of etcd
//! (keys, compare-and-set transactions, leases, a watch, membership) and nothing more.
//!
//! **Why not the `etcd-client` crate.** It speaks gRPC through tonic and prost, and prost's
//! build script needs `protoc`; a fresh machine with only Rust must build Strata. etcd 3.4
//! serves the same API as HTTP/1.1 + JSON on its client URL (`POST /v3/kv/range`, …, the
//! grpc-gateway), which `reqwest` speaks. Its conventions, which this module hides:
//! - keys and values are base64; 64-bit integers are JSON strings (`"revision":"7"`), and
//!   fields at their zero value are left out (`succeeded`, `kvs`, `count`, an event's
//!   `type` when it is a put);
//! - an error is a non-2xx answer `{"error":…,"message":…,"code":N}` with N a gRPC code; a
//!   streaming endpoint (`lease/keepalive`, `watch`) wraps each message in `{"result":…}` and
//!   puts each on its own line;
//! - a keepalive of a lease that is gone is not an error: it answers without a TTL.
//!
//! Every call has a deadline. The endpoints are tried in turn, starting with the last one that
//! answered: a member that is down, frozen or without a leader (gRPC codes 14 and 4) is skipped.
//! Errors say which: [`EtcdError::Unreachable`] (no endpoint could serve the request),
//! [`EtcdError::Refused`] (etcd answered no), [`EtcdError::Malformed`] (an answer that is not
//! etcd's). Answers are bounded ([`MAX_ANSWER`]), a watch's lines too.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

mod wire;

pub use wire::{
    CmpOp, Compare, Event, KeyValue, Lease, Member, Op, OpResponse, Range, Target, Txn, TxnResponse,
};
use wire::{
    RawDelete, RawError, RawHeaderOnly, RawLease, RawMember, RawMemberAdd, RawMembers, RawRange,
    RawResult, RawTxn, parse_watch_line, put_body,
};

/// The largest answer (or watch line) read, in bytes: the control plane's keys are small.
pub const MAX_ANSWER: usize = 4 << 20;

/// Why a request to etcd failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint could serve it: down, out of time, or without a leader (each one's reason).
    #[error("no etcd endpoint answered ({0})")]
    Unreachable(String),
    /// etcd answered with an error (a lease that does not exist, a bad request, …).
    #[error("etcd refused the request: {message} (gRPC code {code})")]
    Refused { code: i32, message: String },
    /// An answer that is not what etcd sends.
    #[error("etcd's answer is malformed: {0}")]
    Malformed(String),
}

type Result<T, E = EtcdError> = std::result::Result<T, E>;

/// Parses an endpoint, `http://HOST:PORT` (a bare `HOST:PORT` gets `http://`): the value of
/// `--etcd` and `--join`.
pub fn parse_endpoint(text: &str) -> Result<String, String> {
    let rest = text.strip_prefix("http://").unwrap_or(text);
    let rest = rest.trim_end_matches('/');
    let valid = rest.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains(['/', '@', '?', '#'])
            && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    if text.contains("://") && !text.starts_with("http://") || !valid {
        return Err(format!(
            "`{text}` is not an etcd endpoint (http://HOST:PORT; TLS is not supported)"
        ));
    }
    Ok(format!("http://{rest}"))
}

/// A client of one etcd cluster through several of its members' endpoints.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    http: reqwest::Client,
    endpoints: Arc<[String]>,
    /// The endpoint tried first: the last one that answered.
    preferred: Arc<AtomicUsize>,
    timeout: Duration,
}

/// Why one endpoint did not serve a request: try the next one, or give this answer.
enum Attempt {
    Next(String),
    Final(EtcdError),
}

impl EtcdClient {
    /// A client of the cluster at `endpoints` (`http://127.0.0.1:PORT`), each request with a
    /// deadline of `timeout` per endpoint tried.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(EtcdError::Unreachable("no endpoint given".into()));
        }
        let http = reqwest::Client::builder()
            // Loopback members: a proxy from the environment must not be used.
            .no_proxy()
            .connect_timeout(timeout.min(Duration::from_millis(500)))
            .build()
            .map_err(|e| EtcdError::Unreachable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoints: endpoints.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            timeout,
        })
    }

    /// The same client with another deadline per request.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The deadline of one request to one endpoint.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One key (`None`: it does not exist), and the store's revision.
    pub async fn get(&self, key: &[u8]) -> Result<(Option<KeyValue>, i64)> {
        let range = self.range(json!({"key": B64.encode(key)})).await?;
        Ok((range.kvs.into_iter().next(), range.revision))
    }

    /// Every key that starts with `prefix`, in key order.
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<Range> {
        self.range(json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix))}))
            .await
    }

    async fn range(&self, body: Value) -> Result<Range> {
        let raw: RawRange = self.call("kv/range", &body).await?;
        raw.parse()
    }

    /// Puts `value` under `key` (attached to `lease` if any); the revision of the change.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: Option<i64>) -> Result<i64> {
        let raw: RawHeaderOnly = self.call("kv/put", &put_body(key, value, lease)).await?;
        Ok(raw.header.revision)
    }

    /// Deletes `key`; how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: &[u8]) -> Result<i64> {
        let raw: RawDelete = self
            .call("kv/deleterange", &json!({"key": B64.encode(key)}))
            .await?;
        Ok(raw.deleted)
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: &Txn) -> Result<TxnResponse> {
        let body = json!({
            "compare": txn.compare.iter().map(Compare::to_json).collect::<Vec<_>>(),
            "success": txn.success.iter().map(Op::to_json).collect::<Vec<_>>(),
            "failure": txn.failure.iter().map(Op::to_json).collect::<Vec<_>>(),
        });
        let raw: RawTxn = self.call("kv/txn", &body).await?;
        raw.parse()
    }

    /// Grants a lease of `ttl` seconds.
    pub async fn grant(&self, ttl: i64) -> Result<Lease> {
        let raw: RawLease = self
            .call("lease/grant", &json!({"TTL": ttl.to_string()}))
            .await?;
        if raw.ttl <= 0 {
            return Err(EtcdError::Malformed("a lease granted without a TTL".into()));
        }
        Ok(Lease {
            id: raw.id,
            ttl: raw.ttl,
        })
    }

    /// Renews lease `id` once; its TTL from now, in seconds — 0 when the lease is gone
    /// (expired or revoked).
    pub async fn keepalive(&self, id: i64) -> Result<i64> {
        let raw: RawResult<RawLease> = self
            .call("lease/keepalive", &json!({"ID": id.to_string()}))
            .await?;
        match raw {
            RawResult::Result(lease) => Ok(lease.ttl),
            RawResult::Error(e) => Err(e.refused()),
        }
    }

    /// Revokes lease `id`, deleting its keys; a lease already gone is no error.
    pub async fn revoke(&self, id: i64) -> Result<()> {
        match self
            .call::<Value>("lease/revoke", &json!({"ID": id.to_string()}))
            .await
        {
            Ok(_) => Ok(()),
            Err(EtcdError::Refused {
                code: NOT_FOUND, ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The members of the cluster.
    pub async fn members(&self) -> Result<Vec<Member>> {
        let raw: RawMembers = self.call("cluster/member/list", &json!({})).await?;
        raw.members.into_iter().map(RawMember::parse).collect()
    }

    /// Adds a member reached at `peer_urls` (it must then start, with
    /// `--initial-cluster-state existing`); the new member and every member after the change.
    pub async fn add_member(&self, peer_urls: &[String]) -> Result<(Member, Vec<Member>)> {
        let raw: RawMemberAdd = self
            .call("cluster/member/add", &json!({"peerURLs": peer_urls}))
            .await?;
        let member = raw
            .member
            .ok_or_else(|| EtcdError::Malformed("member add answered no member".into()))?
            .parse()?;
        let members = raw
            .members
            .into_iter()
            .map(RawMember::parse)
            .collect::<Result<_>>()?;
        Ok((member, members))
    }

    /// Watches `key` from revision `from` (its changes at `from` and after), through the first
    /// endpoint that accepts the watch.
    pub async fn watch(&self, key: &[u8], from: i64) -> Result<Watch> {
        let body =
            json!({"create_request": {"key": B64.encode(key), "start_revision": from.to_string()}});
        let mut failures = Vec::new();
        for (idx, endpoint) in self.in_turn() {
            let url = format!("{endpoint}/v3/watch");
            let sent = tokio::time::timeout(self.timeout, self.http.post(&url).json(&body).send());
            let response = match sent.await {
                Err(_) => {
                    failures.push(format!("{endpoint}: no answer within {:?}", self.timeout));
                    continue;
                }
                Ok(Err(e)) => {
                    failures.push(format!("{endpoint}: {}", chain(&e)));
                    continue;
                }
                Ok(Ok(r)) if !r.status().is_success() => {
                    failures.push(format!("{endpoint}: HTTP {}", r.status()));
                    continue;
                }
                Ok(Ok(r)) => r,
            };
            let mut watch = Watch {
                response,
                buf: Vec::new(),
            };
            // The first message says the watch exists.
            match tokio::time::timeout(self.timeout, watch.next()).await {
                Ok(Ok(_)) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(watch);
                }
                Ok(Err(e)) => failures.push(format!("{endpoint}: {e}")),
                Err(_) => failures.push(format!("{endpoint}: the watch was not created in time")),
            }
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }

    /// The endpoints, the preferred one first.
    fn in_turn(&self) -> impl Iterator<Item = (usize, &String)> + '_ {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(move |i| {
            let idx = (first + i) % n;
            (idx, &self.endpoints[idx])
        })
    }

    /// Posts `body` to `/v3/{path}` at each endpoint in turn until one serves it.
    async fn call<T: serde::de::DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        let mut failures = Vec::new();
        for (idx, endpoint) in self.in_turn() {
            let answer = match self.attempt(endpoint, path, body).await {
                Ok(answer) => answer,
                Err(Attempt::Next(why)) => {
                    failures.push(format!("{endpoint}: {why}"));
                    continue;
                }
                Err(Attempt::Final(e)) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Err(e);
                }
            };
            self.preferred.store(idx, Ordering::Relaxed);
            return serde_json::from_slice(&answer)
                .map_err(|e| EtcdError::Malformed(format!("{path}: {e}")));
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }

    async fn attempt(
        &self,
        endpoint: &str,
        path: &str,
        body: &Value,
    ) -> std::result::Result<Vec<u8>, Attempt> {
        let url = format!("{endpoint}/v3/{path}");
        let exchange = async {
            let mut response = self
                .http
                .post(&url)
                .json(body)
                .send()
                .await
                .map_err(|e| Attempt::Next(chain(&e)))?;
            let mut answer = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| Attempt::Next(chain(&e)))?
            {
                if answer.len() + chunk.len() > MAX_ANSWER {
                    return Err(Attempt::Final(EtcdError::Malformed(format!(
                        "{path}: an answer over {MAX_ANSWER} bytes"
                    ))));
                }
                answer.extend_from_slice(&chunk);
            }
            Ok((response.status(), answer))
        };
        let (status, answer) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Attempt::Next(format!("no answer within {:?}", self.timeout)))??;
        if status.is_success() {
            return Ok(answer);
        }
        match serde_json::from_slice::<RawError>(&answer) {
            Ok(e) if retry_elsewhere(e.code) => Err(Attempt::Next(e.message)),
            Ok(e) => Err(Attempt::Final(e.refused())),
            Err(_) if status.is_server_error() => Err(Attempt::Next(format!("HTTP {status}"))),
            Err(_) => Err(Attempt::Final(EtcdError::Malformed(format!(
                "{path}: HTTP {status}: {}",
                String::from_utf8_lossy(&answer[..answer.len().min(200)])
            )))),
        }
    }
}

/// gRPC codes worth trying on another member: 14 (unavailable: no leader, not started,
/// stopping) and 4 (deadline exceeded: the request timed out inside etcd).
fn retry_elsewhere(code: i32) -> bool {
    matches!(code, 4 | 14)
}

/// gRPC's code for "not found".
const NOT_FOUND: i32 = 5;

/// An error and its causes, joined (reqwest's own message names the URL only).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// The end of the range of keys that start with `prefix`: the prefix with its last byte that
/// can grow grown by one (etcd's `range_end`); `\0` (every key) when no byte can.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// An open watch: its changes, batch by batch, as etcd streams them.
pub struct Watch {
    response: reqwest::Response,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl Watch {
    /// The next batch of changes — empty for etcd's messages that carry none (the watch's
    /// creation, progress). An error when the stream ends or breaks, or when the revision
    /// watched from was compacted away (the caller reads the key afresh): the watch is over.
    /// No deadline: callers bound it.
    pub async fn next(&mut self) -> Result<Vec<Event>> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return parse_watch_line(&line);
            }
            if self.buf.len() > MAX_ANSWER {
                return Err(EtcdError::Malformed(format!(
                    "a watch message over {MAX_ANSWER} bytes"
                )));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) => return Err(EtcdError::Unreachable("the watch ended".into())),
                Err(e) => {
                    return Err(EtcdError::Unreachable(format!(
                        "the watch broke: {}",
                        chain(&e)
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use strata_testkit::EtcdServer;

    use super::*;

    fn client_of(endpoints: Vec<String>) -> EtcdClient {
        EtcdClient::new(endpoints, Duration::from_secs(2)).expect("client")
    }

    #[test]
    fn endpoints_are_http_host_and_port() {
        assert_eq!(
            parse_endpoint("127.0.0.1:2379"),
            Ok("http://127.0.0.1:2379".into())
        );
        assert_eq!(
            parse_endpoint("http://localhost:2379/"),
            Ok("http://localhost:2379".into())
        );
        for bad in [
            "https://127.0.0.1:1",
            "127.0.0.1",
            "http://:1",
            "http://a:0",
            "a/b:1",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_prefix_range_ends_after_the_last_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_transactions_leases_watches_and_members_on_a_real_etcd() {
        let etcd = EtcdServer::start();
        // The first endpoint is down: every call goes on to the next one.
        let dead = format!("http://127.0.0.1:{}", strata_testkit::free_port());
        let client = client_of(vec![dead, etcd.endpoint()]);

        assert_eq!(client.get(b"/t/a").await.expect("get").0, None);
        let rev = client.put(b"/t/a", b"1", None).await.expect("put");
        client.put(b"/t/b", b"2", None).await.expect("put");
        client.put(b"/u", b"3", None).await.expect("put");
        let (a, now) = client.get(b"/t/a").await.expect("get");
        let a = a.expect("exists");
        assert_eq!(
            (a.value.as_slice(), a.mod_revision, a.version),
            (&b"1"[..], rev, 1)
        );
        assert!(now > rev);
        let under = client.get_prefix(b"/t/").await.expect("prefix");
        let keys: Vec<&[u8]> = under.kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, [&b"/t/a"[..], b"/t/b"]);

        // A transaction runs its success branch only if every comparison holds; its failure
        // branch's reads say why it did not.
        let set_a = |compare: Vec<Compare>| Txn {
            compare,
            success: vec![Op::Put {
                key: b"/t/a".to_vec(),
                value: b"x".to_vec(),
                lease: None,
            }],
            failure: vec![Op::Get {
                key: b"/t/a".to_vec(),
            }],
        };
        let cmp = |target| Compare::new(&b"/t/a"[..], CmpOp::Equal, target);
        let stale = client
            .txn(&set_a(vec![cmp(Target::ModRevision(rev - 1))]))
            .await
            .expect("txn");
        assert!(!stale.succeeded);
        assert_eq!(stale.read(0).map(|kv| kv.mod_revision), Some(rev));
        for holds in [
            vec![
                cmp(Target::ModRevision(rev)),
                cmp(Target::Value(b"1".to_vec())),
            ],
            vec![cmp(Target::Version(2)), cmp(Target::CreateRevision(rev))],
        ] {
            let done = client.txn(&set_a(holds)).await.expect("txn");
            assert!(done.succeeded);
            assert_eq!(done.responses, [OpResponse::Put]);
        }
        let create_if_absent = Txn {
            compare: vec![Compare::new(
                &b"/t/c"[..],
                CmpOp::Equal,
                Target::CreateRevision(0),
            )],
            success: vec![Op::Put {
                key: b"/t/c".to_vec(),
                value: b"c".to_vec(),
                lease: None,
            }],
            failure: Vec::new(),
        };
        assert!(client.txn(&create_if_absent).await.expect("txn").succeeded);
        assert!(!client.txn(&create_if_absent).await.expect("txn").succeeded);
        assert_eq!(client.delete(b"/t/c").await, Ok(1));
        assert_eq!(client.delete(b"/t/c").await, Ok(0));

        // A lease: keys attached to it go with it.
        let lease = client.grant(5).await.expect("grant");
        assert_eq!(lease.ttl, 5);
        client
            .put(b"/t/l", b"l", Some(lease.id))
            .await
            .expect("put");
        let on_lease = Compare::new(&b"/t/l"[..], CmpOp::Equal, Target::Lease(lease.id));
        let check = Txn {
            compare: vec![on_lease],
            ..Txn::default()
        };
        assert!(client.txn(&check).await.expect("txn").succeeded);
        assert_eq!(client.keepalive(lease.id).await, Ok(5));
        client.revoke(lease.id).await.expect("revoke");
        client
            .revoke(lease.id)
            .await
            .expect("revoking again is no error");
        assert_eq!(client.keepalive(lease.id).await, Ok(0), "gone");
        assert_eq!(client.get(b"/t/l").await.expect("get").0, None);
        assert!(!client.txn(&check).await.expect("txn").succeeded);
        match client.put(b"/t/l", b"l", Some(lease.id)).await {
            Err(EtcdError::Refused {
                code: NOT_FOUND, ..
            }) => {}
            other => panic!("a put on a revoked lease: {other:?}"),
        }

        // A watch from a revision sees the changes since, then the next ones as they come.
        let mut watch = client.watch(b"/t/b", rev).await.expect("watch");
        let first = watch.next().await.expect("events");
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0].kv.value, b"2");
        client.delete(b"/t/b").await.expect("delete");
        let deleted = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("in time")
            .expect("events");
        assert!(
            deleted[0].deleted && deleted[0].kv.key == b"/t/b",
            "{deleted:?}"
        );

        let members = client.members().await.expect("members");
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].name, "etcd-1");
        assert_eq!(members[0].client_urls, [etcd.endpoint()]);
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable_and_a_stranger_is_malformed() {
        let nobody = format!("http://127.0.0.1:{}", strata_testkit::free_port());
        match client_of(vec![nobody.clone()]).get(b"k").await {
            Err(EtcdError::Unreachable(why)) => assert!(why.contains(&nobody), "{why}"),
            other => panic!("{other:?}"),
        }
        // An HTTP server that is not etcd.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                    )
                    .await;
            }
        });
        match client_of(vec![format!("http://{addr}")]).get(b"k").await {
            Err(EtcdError::Malformed(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
