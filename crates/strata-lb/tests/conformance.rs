//! RFC 9112 conformance of the balancer's HTTP/1.1 front, as raw bytes: each case is the exact
//! byte stream a client sends to a real running balancer, in front of a real backend that
//! records every request it receives in full, and the expected outcome — the statuses answered
//! in order, whether the connection is then closed or kept (kept is proven by a further request
//! answered on it), and exactly which requests the backend received (none, for a refused one).
//!
//! Valid messages must pass unchanged in meaning; malformed or ambiguous ones must be answered
//! 400 with the connection closed and nothing forwarded, after the requests pipelined before
//! them. Run with `--nocapture` to see each case; the last line counts the cases that passed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use strata_lb::{BackendSpec, LbConfig, LoadBalancer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the backend received: one complete request (head and whole body).
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    headers: http::HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// The target of the request a test sends to prove a connection is still open.
const PROBE: &str = "/conformance-probe";

/// A backend that records each request once its body has fully arrived (a request whose body
/// never completes is not recorded), and answers `200` with "METHOD TARGET".
async fn recording_backend(log: Log) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let Ok(body) = body.collect().await else {
                            return Err("the request body did not complete");
                        };
                        let target = parts.uri.to_string();
                        let answer = format!("{} {target}", parts.method);
                        if target != "/healthz" && target != PROBE {
                            log.lock().expect("log").push(Received {
                                method: parts.method.to_string(),
                                target,
                                headers: parts.headers,
                                body: body.to_bytes(),
                            });
                        }
                        Ok(hyper::Response::new(Full::new(Bytes::from(answer))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A request the backend must have received.
#[derive(Debug, Clone)]
struct Forwarded {
    method: &'static str,
    target: String,
    /// `None`: the client sent none (HTTP/1.0); the balancer names the backend.
    host: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(&'static str, Vec<u8>)>,
}

fn fwd(method: &'static str, target: &str) -> Forwarded {
    Forwarded {
        method,
        target: target.into(),
        host: Some("x"),
        body: Vec::new(),
        headers: Vec::new(),
    }
}

impl Forwarded {
    fn host(mut self, host: Option<&'static str>) -> Self {
        self.host = host;
        self
    }
    fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }
    fn header(mut self, name: &'static str, value: &[u8]) -> Self {
        self.headers.push((name, value.to_vec()));
        self
    }

    fn check(&self, got: &Received) -> Result<(), String> {
        let host = got.headers.get("host").map(|v| v.as_bytes());
        let mut wrong = Vec::new();
        if got.method != self.method {
            wrong.push(format!("method {}", got.method));
        }
        if got.target != self.target {
            wrong.push(format!("target {}", got.target));
        }
        if let Some(h) = self.host
            && host != Some(h.as_bytes())
        {
            wrong.push(format!("host {:?}", host.map(String::from_utf8_lossy)));
        }
        if got.body != self.body {
            wrong.push(format!("body {:?}", String::from_utf8_lossy(&got.body)));
        }
        for (name, value) in &self.headers {
            let v = got.headers.get(*name).map(|v| v.as_bytes());
            if v != Some(value.as_slice()) {
                wrong.push(format!("{name} {:?}", v.map(String::from_utf8_lossy)));
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "expected {self:?}, the backend got {}",
                wrong.join(", ")
            ))
        }
    }
}

struct Case {
    name: &'static str,
    rfc: &'static str,
    send: Vec<u8>,
    /// Final statuses, in order (interim 1xx answers are skipped).
    statuses: Vec<u16>,
    closed: bool,
    forwarded: Vec<Forwarded>,
    /// Which final answers (by position) are to HEAD requests, and so carry no body.
    bodiless: Vec<usize>,
}

/// A valid exchange: these answers, the connection kept (unless `closed`), these requests
/// forwarded.
fn valid(
    name: &'static str,
    rfc: &'static str,
    send: impl AsRef<[u8]>,
    forwarded: Vec<Forwarded>,
) -> Case {
    Case {
        name,
        rfc,
        send: send.as_ref().to_vec(),
        statuses: vec![200; forwarded.len()],
        closed: false,
        forwarded,
        bodiless: Vec::new(),
    }
}

/// A refused request: 400, closed, nothing forwarded.
fn refused(name: &'static str, rfc: &'static str, send: impl AsRef<[u8]>) -> Case {
    refused_after(name, rfc, send, Vec::new())
}

/// A refused request after valid ones pipelined before it: those answered and forwarded in
/// order, then 400 and the connection closed.
fn refused_after(
    name: &'static str,
    rfc: &'static str,
    send: impl AsRef<[u8]>,
    before: Vec<Forwarded>,
) -> Case {
    let mut statuses = vec![200; before.len()];
    statuses.push(400);
    Case {
        name,
        rfc,
        send: send.as_ref().to_vec(),
        statuses,
        closed: true,
        forwarded: before,
        bodiless: Vec::new(),
    }
}

fn closes(mut case: Case) -> Case {
    case.closed = true;
    case
}

/// The answers at these positions are to HEAD requests.
fn bodiless(mut case: Case, at: &[usize]) -> Case {
    case.bodiless = at.to_vec();
    case
}

fn cases() -> Vec<Case> {
    let post =
        |framing: &str, body: &str| format!("POST /p HTTP/1.1\r\nHost: x\r\n{framing}\r\n{body}");
    let chunked = |body: &str| post("Transfer-Encoding: chunked\r\n", body);
    let line_at_limit = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(8192 - "GET / HTTP/1.1".len())
    );
    let line_over_limit = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(8193 - "GET / HTTP/1.1".len())
    );
    let long_target = format!("/{}", "a".repeat(8192 - "GET / HTTP/1.1".len()));
    let mut many = String::from("GET /many HTTP/1.1\r\nHost: x\r\n");
    for i in 0..60 {
        many.push_str(&format!("X-Field-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let mut too_many = String::from("GET /many HTTP/1.1\r\nHost: x\r\n");
    for i in 0..100 {
        too_many.push_str(&format!("X-Field-{i}: {i}\r\n"));
    }
    too_many.push_str("\r\n");
    let mut too_long = String::from("GET /long HTTP/1.1\r\nHost: x\r\n");
    for i in 0..70 {
        too_long.push_str(&format!("X-Filler-{i}: {}\r\n", "f".repeat(1000)));
    }
    too_long.push_str("\r\n");

    vec![
        // --- valid: must pass -------------------------------------------------------------
        valid("GET in origin-form", "§3.2.1", "GET /a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n", vec![fwd("GET", "/a/b?c=d")]),
        valid("Host with a port", "§3.2, RFC 9110 §7.2", "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", vec![fwd("GET", "/").host(Some("example.com:8080"))]),
        valid("Host as an IPv6 literal with a port", "§3.2, RFC 3986 §3.2.2", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", vec![fwd("GET", "/").host(Some("[::1]:8080"))]),
        valid("an empty Host", "§3.2", "GET / HTTP/1.1\r\nHost:\r\n\r\n", vec![fwd("GET", "/").host(Some(""))]),
        valid("header names in any case", "§5.1, RFC 9110 §5.1", "POST /p HTTP/1.1\r\nhOsT: x\r\nCONTENT-length: 5\r\nx-MiXeD: v\r\n\r\nhello", vec![fwd("POST", "/p").body(b"hello").header("x-mixed", b"v")]),
        valid("optional whitespace around values", "§5.1", "GET / HTTP/1.1\r\nHost: \t x \t\r\nX-Ows:  \t a b \t \r\nX-Tight:c\r\n\r\n", vec![fwd("GET", "/").header("x-ows", b"a b").header("x-tight", b"c")]),
        valid("an empty field value", "§5.1, RFC 9110 §5.5", "GET / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n\r\n", vec![fwd("GET", "/").header("x-empty", b"")]),
        valid("obs-text in a field value", "RFC 9110 §5.5", b"GET / HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\r\n\r\n", vec![fwd("GET", "/").header("x-latin", b"caf\xe9")]),
        valid("an extension method", "§3.1, RFC 9110 §9.1", "PURGE /cache HTTP/1.1\r\nHost: x\r\n\r\n", vec![fwd("PURGE", "/cache")]),
        valid("a body framed by Content-Length", "§6.2", post("Content-Length: 11\r\n", "hello world"), vec![fwd("POST", "/p").body(b"hello world")]),
        valid("Content-Length: 0", "§6.2", post("Content-Length: 0\r\n", ""), vec![fwd("POST", "/p")]),
        valid("chunked with extensions", "§7.1.1", chunked("5;name=value\r\nhello\r\n6 ; q=\"x y\";n\r\n world\r\n0;last\r\n\r\n"), vec![fwd("POST", "/p").body(b"hello world")]),
        valid("chunked with trailers", "§7.1.2", chunked("5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other:  d \r\n\r\n"), vec![fwd("POST", "/p").body(b"hello")]),
        valid("chunked: upper-case hex and coding name", "§7.1, §7", "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", vec![fwd("POST", "/p").body(b"0123456789")]),
        valid("chunked: an empty body", "§7.1", chunked("0\r\n\r\n"), vec![fwd("POST", "/p")]),
        valid("pipelining: answers in order", "§9.3.2", format!("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n{}GET /3 HTTP/1.1\r\nHost: x\r\n\r\n", post("Content-Length: 2\r\n", "hi")), vec![fwd("GET", "/1"), fwd("POST", "/p").body(b"hi"), fwd("GET", "/3")]),
        valid("pipelining after a chunked body", "§9.3.2, §7.1", format!("{}GET /next HTTP/1.1\r\nHost: x\r\n\r\n", chunked("3\r\nabc\r\n0\r\n\r\n")), vec![fwd("POST", "/p").body(b"abc"), fwd("GET", "/next")]),
        closes(valid("HTTP/1.0 without Host (allowed), closed after", "§3.2, §9.3", "GET /old HTTP/1.0\r\n\r\n", vec![fwd("GET", "/old").host(None)])),
        valid("HTTP/1.0 keep-alive", "§9.3, RFC 9112 Appendix C.2.2", "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", vec![fwd("GET", "/old").host(None)]),
        closes(valid("HTTP/1.0 with Host and a body", "§6.2", "POST /old HTTP/1.0\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", vec![fwd("POST", "/old").body(b"abc")])),
        valid("absolute-form", "§3.2.2", "GET http://x/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n", vec![fwd("GET", "/abs?q=1")]),
        valid("absolute-form: its authority is the host, not Host", "§3.2.2", "GET http://a.example:8080/p HTTP/1.1\r\nHost: other.example\r\n\r\n", vec![fwd("GET", "/p").host(Some("a.example:8080"))]),
        valid("absolute-form: https, no path", "§3.2.2, RFC 9110 §4.2.2", "GET https://b.example HTTP/1.1\r\nHost: b.example\r\n\r\n", vec![fwd("GET", "/").host(Some("b.example"))]),
        valid("asterisk-form for OPTIONS", "§3.2.4", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", vec![fwd("OPTIONS", "*")]),
        valid("an empty line before the request line", "§2.2", "\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n", vec![fwd("GET", "/after")]),
        valid("percent-encoding and sub-delims in the target", "§3.2, RFC 3986 §2", "GET /a%20b/c;d=e,f!$&'()*+@:?g=%2F/? HTTP/1.1\r\nHost: x\r\n\r\n", vec![fwd("GET", "/a%20b/c;d=e,f!$&'()*+@:?g=%2F/?")]),
        valid("a query as browsers send it", "§3.2, WHATWG URL", "GET /s?q={a|b}^[1] HTTP/1.1\r\nHost: x\r\n\r\n", vec![fwd("GET", "/s?q={a|b}^[1]")]),
        valid("a request line of exactly 8 KiB", "§3 (limit)", line_at_limit, vec![fwd("GET", &long_target)]),
        valid("60 header fields", "§5", many, vec![fwd("GET", "/many").header("x-field-59", b"59")]),
        valid("Expect: 100-continue with its body", "RFC 9110 §10.1.1", "POST /p HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok", vec![fwd("POST", "/p").body(b"ok")]),
        bodiless(valid("HEAD: the answer has no body", "§6.3, RFC 9110 §9.3.2", "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n", vec![fwd("HEAD", "/h")]), &[0]),
        bodiless(valid("HEAD pipelined before a GET", "§9.3.2, §6.3", "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n", vec![fwd("HEAD", "/h"), fwd("GET", "/g")]), &[0]),
        valid("a lower-case method is another method", "§3.1, RFC 9110 §9.1", "get /lc HTTP/1.1\r\nHost: x\r\n\r\n", vec![fwd("get", "/lc")]),
        valid("GET with a body framed by Content-Length", "§6.2, RFC 9110 §9.3.1", "GET /g HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /after HTTP/1.1\r\nHost: x\r\n\r\n", vec![fwd("GET", "/g").body(b"abc"), fwd("GET", "/after")]),
        valid("a Content-Length with leading zeros", "§6.3, RFC 9110 §8.6 (1*DIGIT)", post("Content-Length: 005\r\n", "hello"), vec![fwd("POST", "/p").body(b"hello")]),
        valid("chunk sizes with leading zeros", "§7.1", chunked("0005\r\nhello\r\n000\r\n\r\n"), vec![fwd("POST", "/p").body(b"hello")]),
        valid("chunks cut across many chunks", "§7.1", chunked("1\r\na\r\n1\r\nb\r\n1\r\nc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"), vec![fwd("POST", "/p").body(b"abc0123456789abcdef")]),
        // --- invalid: 400, closed, nothing forwarded --------------------------------------------
        refused("HTTP/1.1 without Host", "§3.2", "GET / HTTP/1.1\r\n\r\n"),
        refused("two Host lines, the same value", "§3.2", "GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n"),
        refused("two Host lines, different values", "§3.2", "GET / HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n"),
        refused("HTTP/1.0 with two Host lines", "§3.2", "GET / HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n"),
        refused("a Host with a space", "§3.2, RFC 9110 §7.2", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
        refused("a Host with user info", "§3.2, RFC 9110 §4.2.4", "GET / HTTP/1.1\r\nHost: user@x\r\n\r\n"),
        refused("a Host with a bad port", "§3.2, RFC 3986 §3.2.3", "GET / HTTP/1.1\r\nHost: x:8o\r\n\r\n"),
        refused("bare LF line endings throughout", "§2.2", "GET / HTTP/1.1\nHost: x\n\n"),
        refused("a bare LF ending one header line", "§2.2", "GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n"),
        refused("a bare LF ending the request line", "§2.2", "GET / HTTP/1.1\nHost: x\r\n\r\n"),
        refused("a bare LF ending the head", "§2.2", "GET / HTTP/1.1\r\nHost: x\r\n\n"),
        refused("a bare LF before the request line", "§2.2", "\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("a header name with a non-token byte", "§5.1, RFC 9110 §5.1", "GET / HTTP/1.1\r\nHost: x\r\nBad[Name]: v\r\n\r\n"),
        refused("a header name with a space inside", "§5.1", "GET / HTTP/1.1\r\nHost: x\r\nX Y: v\r\n\r\n"),
        refused("whitespace between field name and colon", "§5.1", "GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
        refused("NUL in a field value", "§5.1, RFC 9110 §5.5", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
        refused("a lone CR in a field value", "§2.2, RFC 9110 §5.5", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"),
        refused("obs-fold", "§5.2", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
        refused("whitespace before the first header line", "§2.2", "GET / HTTP/1.1\r\n Host: x\r\n\r\n"),
        refused("a request line over 8 KiB", "§3 (limit)", line_over_limit),
        refused("a method that is not a token", "§3.1", "G<T / HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("two spaces after the method", "§3", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("HTTP/1.2", "§2.3", "GET / HTTP/1.2\r\nHost: x\r\n\r\n"),
        refused("a target without a leading slash", "§3.2", "GET nopath HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("a target with a fragment", "§3.2, RFC 3986 §3.5", "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("a bad percent-encoding", "§3.2, RFC 3986 §2.1", "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("non-ASCII in the target", "§3.2, RFC 3986 §2", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("a backslash in the target", "§3.2, RFC 3986 §2", "GET /a\\..\\b HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("asterisk-form for GET", "§3.2.4", "GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("authority-form for GET", "§3.2.3", "GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("absolute-form with another scheme", "§3.2.2", "GET ftp://x/f HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("absolute-form with user info", "§3.2.2, RFC 9110 §4.2.4", "GET http://u@x/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("CONNECT (no tunnels)", "RFC 9110 §9.3.6", "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n"),
        refused("HTTP/2.0 in a HTTP/1 request line", "§2.3, §2.5", "GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
        refused("a version in lower case", "§2.3 (HTTP-name is case-sensitive)", "GET / http/1.1\r\nHost: x\r\n\r\n"),
        refused("a request line without a version", "§3 (HTTP/0.9 is not served)", "GET /\r\nHost: x\r\n\r\n"),
        refused("a space inside the target", "§3, §3.2", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("a tab between method and target", "§3", "GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("a NUL in the target", "§3.2", "GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n"),
        refused("101 header fields (over the limit of 100)", "§5 (limit)", too_many),
        refused("a head over 64 KiB", "§5 (limit)", too_long),
        refused("a header field without a colon", "§5.1", "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n"),
        refused("an empty header name", "§5.1", "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n"),
        refused_after("HTTP/2's preface after a HTTP/1.1 request", "§2.5, RFC 9113 §3.4", "GET /first HTTP/1.1\r\nHost: x\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", vec![fwd("GET", "/first")]),
        refused("Content-Length and Transfer-Encoding", "§6.1, §6.3", post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")),
        refused("Transfer-Encoding and Content-Length", "§6.1, §6.3", post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")),
        refused("two different Content-Lengths", "§6.3, RFC 9110 §8.6", post("Content-Length: 4\r\nContent-Length: 5\r\n", "abcde")),
        refused("two equal Content-Lengths", "RFC 9110 §8.6", post("Content-Length: 5\r\nContent-Length: 5\r\n", "abcde")),
        refused("a Content-Length list", "§6.3, RFC 9110 §8.6", post("Content-Length: 5, 5\r\n", "abcde")),
        refused("a Content-Length with a letter", "§6.3", post("Content-Length: 5a\r\n", "abcde")),
        refused("a Content-Length with a sign", "§6.3", post("Content-Length: +5\r\n", "abcde")),
        refused("a negative Content-Length", "§6.3", post("Content-Length: -1\r\n", "")),
        refused("a Content-Length past 64 bits", "§6.3", post("Content-Length: 18446744073709551616\r\n", "")),
        refused("an empty Content-Length", "§6.3", post("Content-Length:\r\n", "")),
        refused("Transfer-Encoding: gzip (chunked not last)", "§6.1, §6.3", post("Transfer-Encoding: gzip\r\n", "abc")),
        refused("Transfer-Encoding: chunked, gzip", "§6.1", post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n")),
        refused("Transfer-Encoding: gzip, chunked (a coding not applied)", "§6.1", post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n")),
        refused("chunked twice in one line", "§6.1", post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n")),
        refused("chunked twice in two lines", "§6.1", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")),
        refused("a chunked coding with a parameter", "§7", post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n")),
        refused("Transfer-Encoding on HTTP/1.0", "§6.1", "POST /p HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        refused_after("valid, then a bare LF: the first answered", "§9.3.2, §2.2", "GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\nHost: x\n\n", vec![fwd("GET", "/first")]),
        refused_after("two valid, then CL+TE: both answered in order", "§9.3.2, §6.1", format!("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n{}{}", post("Content-Length: 1\r\n", "z"), post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")), vec![fwd("GET", "/1"), fwd("POST", "/p").body(b"z")]),
        refused_after("valid, then no Host", "§9.3.2, §3.2", "GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\n\r\n", vec![fwd("GET", "/first")]),
        // Bodies: the head went out, the body never completes; the backend gets no request.
        refused("a chunk size that is not hex", "§7.1", chunked("zz\r\nabc\r\n0\r\n\r\n")),
        refused("a chunk-size line ended by a bare LF", "§7.1, §2.2", chunked("5\nhello\r\n0\r\n\r\n")),
        refused("chunk data not followed by CRLF", "§7.1", chunked("5\r\nhelloXX0\r\n\r\n")),
        refused("whitespace after a chunk size without an extension", "§7.1.1", chunked("5 \r\nhello\r\n0\r\n\r\n")),
        refused("a trailer line with obs-fold", "§7.1.2, §5.2", chunked("5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n")),
        refused("a trailer field with whitespace before the colon", "§7.1.2, §5.1", chunked("5\r\nhello\r\n0\r\nX-T : a\r\n\r\n")),
        refused("a chunk size past 64 bits", "§7.1", chunked("10000000000000000\r\nhello\r\n0\r\n\r\n")),
        refused("a chunk size with a sign", "§7.1", chunked("+5\r\nhello\r\n0\r\n\r\n")),
        refused("an empty chunk size", "§7.1", chunked("\r\nhello\r\n0\r\n\r\n")),
        refused("a NUL in a chunk extension", "§7.1.1", chunked("5;a=\0\r\nhello\r\n0\r\n\r\n")),
        refused("a lone CR in a chunk extension", "§7.1.1, §2.2", chunked("5;a\rb\r\nhello\r\n0\r\n\r\n")),
        refused("chunk data longer than its size", "§7.1", chunked("3\r\nhello\r\n0\r\n\r\n")),
        refused("the last chunk without the final CRLF, then a request", "§7.1", chunked("0\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")),
        refused("Transfer-Encoding: identity", "§6.1, §7", post("Transfer-Encoding: identity\r\n", "abc")),
        refused("a Content-Length with a space inside", "§6.3", post("Content-Length: 1 1\r\n", "abcdefghijk")),
        // An upgrade the backend declines: answered, then closed; what followed never parsed.
        Case {
            name: "a declined upgrade closes the connection",
            rfc: "RFC 9110 §7.8",
            send: b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /smuggled HTTP/1.1\nHost: x\n\n".to_vec(),
            statuses: vec![200],
            closed: true,
            forwarded: vec![fwd("GET", "/ws")],
            bodiless: Vec::new(),
        },
    ]
}

/// Reads HTTP/1.1 responses off a connection.
struct Responses {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Responses {
    /// More bytes; `false` at the end of the connection (a reset counts as its end: a server
    /// that closes with unread bytes from the client resets).
    async fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n > 0)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(false),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// The next final response's status and body; `None` when the connection ended cleanly.
    /// A `bodiless` answer (to HEAD) has no body whatever its framing headers say.
    async fn next(&mut self, bodiless: bool) -> Result<Option<(u16, Vec<u8>)>, String> {
        loop {
            let parsed = {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut response = httparse::Response::new(&mut headers);
                match response.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let length = response
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok());
                        let chunked = response
                            .headers
                            .iter()
                            .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
                        Some((response.code.unwrap_or(0), len, length, chunked))
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(e) => return Err(format!("unparsable response: {e}")),
                }
            };
            let Some((status, head, length, chunked)) = parsed else {
                if !self.fill().await? {
                    return if self.buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(format!(
                            "the connection ended inside a response: {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ))
                    };
                }
                continue;
            };
            if (100..200).contains(&status) {
                self.buf.drain(..head);
                continue;
            }
            let body = if bodiless {
                self.buf.drain(..head);
                Vec::new()
            } else if chunked {
                self.chunked_body(head).await?
            } else {
                let length = length.unwrap_or(0);
                while self.buf.len() < head + length {
                    if !self.fill().await? {
                        return Err("the connection ended inside a body".into());
                    }
                }
                let body = self.buf[head..head + length].to_vec();
                self.buf.drain(..head + length);
                body
            };
            return Ok(Some((status, body)));
        }
    }

    async fn chunked_body(&mut self, head: usize) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        let mut at = head;
        loop {
            let line_end = loop {
                if let Some(i) = self.buf[at..].windows(2).position(|w| w == b"\r\n") {
                    break at + i;
                }
                if !self.fill().await? {
                    return Err("the connection ended inside a chunked body".into());
                }
            };
            let size = std::str::from_utf8(&self.buf[at..line_end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
                .ok_or("a bad chunk size in a response")?;
            at = line_end + 2;
            while self.buf.len() < at + size + 2 {
                if !self.fill().await? {
                    return Err("the connection ended inside a chunk".into());
                }
            }
            if size == 0 {
                // No trailers from these servers: the empty line follows.
                self.buf.drain(..at + 2);
                return Ok(body);
            }
            body.extend_from_slice(&self.buf[at..at + size]);
            at += size + 2;
        }
    }
}

/// Runs one case; `Err` says how the outcome differed.
async fn run(lb: SocketAddr, log: &Log, case: &Case) -> Result<(), String> {
    log.lock().expect("log").clear();
    let stream = TcpStream::connect(lb)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut responses = Responses {
        stream,
        buf: Vec::new(),
    };
    responses
        .stream
        .write_all(&case.send)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        let mut statuses = Vec::new();
        loop {
            if !case.closed && statuses.len() == case.statuses.len() {
                // Kept open: a further request on the connection is answered.
                responses
                    .stream
                    .write_all(format!("GET {PROBE} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                    .await
                    .map_err(|e| format!("the connection was not kept: {e}"))?;
                return match responses.next(false).await? {
                    Some((200, body)) if body == format!("GET {PROBE}").as_bytes() => {
                        Ok((statuses, false))
                    }
                    Some((status, body)) => Err(format!(
                        "after {statuses:?}, the probe got {status} {:?}",
                        String::from_utf8_lossy(&body)
                    )),
                    None => Ok((statuses, true)),
                };
            }
            match responses
                .next(case.bodiless.contains(&statuses.len()))
                .await?
            {
                Some((status, _)) => statuses.push(status),
                None => return Ok((statuses, true)),
            }
        }
    })
    .await
    .map_err(|_| "no outcome within 5 s".to_string())?;
    let (statuses, closed) = outcome?;
    if statuses != case.statuses {
        return Err(format!(
            "statuses {statuses:?}, expected {:?}",
            case.statuses
        ));
    }
    if closed != case.closed {
        return Err(format!(
            "the connection was {}",
            if closed { "closed" } else { "kept" }
        ));
    }
    // Every forwarded request was answered before its response reached the client, so the
    // log is complete; a request whose body broke never completes, so it is never logged.
    let got = log.lock().expect("log").clone();
    if got.len() != case.forwarded.len() {
        return Err(format!(
            "the backend got {} requests ({:?}), expected {}",
            got.len(),
            got.iter()
                .map(|r| format!("{} {}", r.method, r.target))
                .collect::<Vec<_>>(),
            case.forwarded.len()
        ));
    }
    for (expected, received) in case.forwarded.iter().zip(&got) {
        expected.check(received)?;
    }
    Ok(())
}

#[tokio::test]
async fn rfc9112_conformance_of_raw_byte_streams() {
    let log: Log = Arc::default();
    let backend = recording_backend(log.clone()).await;
    let mut config = LbConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        "127.0.0.1:0".parse().expect("addr"),
        vec![BackendSpec {
            name: "recorder".into(),
            addr: backend,
            weight: 1,
        }],
    );
    config.workers = 1;
    let lb = LoadBalancer::build(config).await.expect("bind");
    let addr = lb.addr().expect("addr");
    tokio::spawn(lb.run_until_stopped(std::future::pending()));

    let cases = cases();
    let mut failures = Vec::new();
    let (mut valid, mut invalid) = (0, 0);
    for case in &cases {
        if case.statuses.contains(&400) {
            invalid += 1;
        } else {
            valid += 1;
        }
        match run(addr, &log, case).await {
            Ok(()) => println!("pass  {:<60} {}", case.name, case.rfc),
            Err(why) => {
                println!("FAIL  {:<60} {}: {why}", case.name, case.rfc);
                failures.push(case.name);
            }
        }
    }
    println!(
        "RFC 9112 conformance: {}/{} cases passed ({valid} valid messages, {invalid} refused)",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(cases.len() >= 40);
    assert!(failures.is_empty(), "failed: {failures:?}");
}
