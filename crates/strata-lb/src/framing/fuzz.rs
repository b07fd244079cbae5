//! Property tests of the framing guard over arbitrary byte streams, and over valid requests
//! mutated, each fed to the guard cut at every position:
//!
//! - it never panics;
//! - what it passes to the parser does not depend on how the stream was cut;
//! - what it passes is exactly what an independent reference framer expects: the requests it
//!   framed (heads strictly checked, bodies by `Content-Length` or the chunked grammar), in
//!   order, then what ends the stream — a refused head replaced by [`REFUSED_HEAD`], a broken
//!   chunked body cut where it breaks and ended by [`REFUSED_BODY`], an incomplete head held
//!   back, or everything after an upgrade or HTTP/2's preface;
//! - hyper's own HTTP/1.1 server, reading what the guard passes, serves no request the
//!   reference did not frame, with the same method, target and body, in the same order.
//!
//! The reference frames the whole stream at once, line by line, where the guard follows it
//! byte by byte across reads; only the head checks ([`strict::check`]) are shared.
//! `PROPTEST_CASES` sets the number of cases of each property (256 by default).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;

use super::*;

/// A request the reference framed: its method, target and body (`None` when the body did not
/// complete or broke).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Framed {
    method: String,
    target: String,
    body: Option<Vec<u8>>,
    /// HTTP/1.1 without `Connection`, `Expect` or `Upgrade`: hyper serves it and reads on.
    plain: bool,
    /// An upgrade: the guard stepped aside after its head, so its body is not its to frame.
    upgrade: bool,
}

#[derive(Debug, Default)]
struct Reference {
    /// What the parser must be given.
    out: Vec<u8>,
    framed: Vec<Framed>,
    /// The rest passes as it comes (HTTP/2, an upgrade).
    aside: bool,
}

/// How a chunked body ends: complete (decoded, bytes used), incomplete, or broken at a byte.
enum Chunks {
    Done(Vec<u8>, usize),
    Incomplete,
    Broken(usize),
}

/// `HTAB / SP..~ / obs-text`: the bytes of a chunk extension or a trailer value.
fn text(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// The chunked grammar of RFC 9112 §7.1 over a whole body: sizes of 1 to 16 hex digits,
/// optional whitespace only before an extension, extensions' contents ignored, CRLF line
/// ends, trailer fields `token ":" text`.
fn chunked(s: &[u8]) -> Chunks {
    let mut body = Vec::new();
    let mut i = 0;
    // A byte that must be `want` at `i`.
    macro_rules! expect {
        ($want:expr) => {
            match s.get(i) {
                None => return Chunks::Incomplete,
                Some(&b) if b == $want => i += 1,
                Some(_) => return Chunks::Broken(i),
            }
        };
    }
    loop {
        let start = i;
        while i < s.len() && s[i].is_ascii_hexdigit() && i - start < 16 {
            i += 1;
        }
        let digits = &s[start..i];
        if i == s.len() {
            return Chunks::Incomplete;
        }
        if digits.is_empty() || s[i].is_ascii_hexdigit() {
            return Chunks::Broken(i);
        }
        let size = digits.iter().fold(0u64, |n, &d| {
            n << 4 | u64::from((d as char).to_digit(16).unwrap_or(0))
        });
        if s[i] == b' ' || s[i] == b'\t' {
            while i < s.len() && (s[i] == b' ' || s[i] == b'\t') {
                i += 1;
            }
            if i == s.len() {
                return Chunks::Incomplete;
            }
            if s[i] != b';' {
                return Chunks::Broken(i);
            }
        }
        if s[i] == b';' {
            while i < s.len() && text(s[i]) {
                i += 1;
            }
        }
        expect!(b'\r');
        expect!(b'\n');
        if size == 0 {
            break;
        }
        let Some(data) = usize::try_from(size).ok().and_then(|n| s.get(i..i + n)) else {
            return Chunks::Incomplete;
        };
        body.extend_from_slice(data);
        i += data.len();
        expect!(b'\r');
        expect!(b'\n');
    }
    // Trailers, then the empty line.
    loop {
        if s.get(i) == Some(&b'\r') {
            i += 1;
            expect!(b'\n');
            return Chunks::Done(body, i);
        }
        let name = i;
        while i < s.len() && is_tchar(s[i]) {
            i += 1;
        }
        if i == s.len() {
            return Chunks::Incomplete;
        }
        if i == name {
            return Chunks::Broken(i);
        }
        expect!(b':');
        while i < s.len() && text(s[i]) {
            i += 1;
        }
        expect!(b'\r');
        expect!(b'\n');
    }
}

/// Frames a whole stream as the guard must.
fn reference(s: &[u8]) -> Reference {
    let mut r = Reference::default();
    let mut pos = 0;
    let mut first = true;
    while pos < s.len() {
        let rest = &s[pos..];
        if first {
            if rest.starts_with(PREFACE) {
                r.out.extend_from_slice(rest);
                r.aside = true;
                return r;
            }
            if PREFACE.starts_with(rest) {
                return r;
            }
        }
        first = false;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let (len, framing) = match request.parse(rest) {
            Ok(httparse::Status::Complete(len)) => match strict::check(&rest[..len], &request) {
                Ok(framing) => (len, framing),
                Err(_) => {
                    r.out.extend_from_slice(REFUSED_HEAD);
                    return r;
                }
            },
            Ok(httparse::Status::Partial) => {
                if strict::check_partial(rest).is_err() {
                    r.out.extend_from_slice(REFUSED_HEAD);
                }
                return r;
            }
            Err(_) => {
                r.out.extend_from_slice(REFUSED_HEAD);
                return r;
            }
        };
        let plain = request.version == Some(1)
            && request.headers.iter().all(|h| {
                !["connection", "expect", "upgrade"]
                    .iter()
                    .any(|n| h.name.eq_ignore_ascii_case(n))
            });
        let mut framed = Framed {
            method: request.method.unwrap_or_default().to_string(),
            target: request.path.unwrap_or_default().to_string(),
            body: None,
            plain,
            upgrade: framing == Framing::Upgrade,
        };
        r.out.extend_from_slice(&rest[..len]);
        let body = &rest[len..];
        match framing {
            Framing::Upgrade => {
                r.out.extend_from_slice(body);
                r.framed.push(framed);
                r.aside = true;
                return r;
            }
            Framing::Length(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                r.out.extend_from_slice(&body[..n.min(body.len())]);
                if n > body.len() {
                    r.framed.push(framed);
                    return r;
                }
                framed.body = Some(body[..n].to_vec());
                pos += len + n;
            }
            Framing::Chunked => match chunked(body) {
                Chunks::Done(decoded, used) => {
                    r.out.extend_from_slice(&body[..used]);
                    framed.body = Some(decoded);
                    pos += len + used;
                }
                Chunks::Incomplete => {
                    r.out.extend_from_slice(body);
                    r.framed.push(framed);
                    return r;
                }
                Chunks::Broken(at) => {
                    r.out.extend_from_slice(&body[..at]);
                    r.out.extend_from_slice(REFUSED_BODY);
                    r.framed.push(framed);
                    return r;
                }
            },
        }
        r.framed.push(framed);
    }
    r
}

/// What the guard passes on when the client sends `pieces` one after another.
fn guard(pieces: &[&[u8]]) -> Vec<u8> {
    let mut g = FramingGuard::new(());
    for p in pieces {
        g.follow(p);
    }
    g.out
}

/// The requests hyper's HTTP/1.1 server (configured as the balancer's) serves from `input`,
/// each with its body, or `None` where the body failed.
fn served_by_hyper(runtime: &tokio::runtime::Runtime, input: Vec<u8>) -> Vec<Framed> {
    let served: Arc<Mutex<Vec<Framed>>> = Arc::default();
    let log = served.clone();
    runtime.block_on(async move {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let log = log.clone();
                async move {
                    // As the balancer does, a HTTP/1.1 upgrade not taken closes the connection.
                    let upgrade = req.version() == http::Version::HTTP_11
                        && req.headers().contains_key(http::header::UPGRADE);
                    let (parts, body) = req.into_parts();
                    // Served as soon as its head is (the balancer forwards it then), its body
                    // recorded once whole.
                    let at = log.lock().map(|mut log| {
                        log.push(Framed {
                            method: parts.method.to_string(),
                            target: parts.uri.to_string(),
                            body: None,
                            plain: true,
                            upgrade: false,
                        });
                        log.len() - 1
                    });
                    let body = body.collect().await.ok().map(|b| b.to_bytes().to_vec());
                    if let (Ok(at), Ok(mut log)) = (at, log.lock()) {
                        log[at].body = body;
                    }
                    let mut response = hyper::Response::new(Full::new(Bytes::new()));
                    if upgrade {
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
        let connection = hyper::server::conn::http1::Builder::new()
            .max_buf_size(MAX_HEAD)
            // The client below sends everything, then half-closes: each request is still
            // served.
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let talk = async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = client.write_all(&input).await;
            let _ = client.shutdown().await;
            let mut answers = Vec::new();
            let _ = client.read_to_end(&mut answers).await;
        };
        let done = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::join!(connection, talk)
        })
        .await;
        assert!(done.is_ok(), "hyper did not finish within 10 s");
    });
    served.lock().map(|s| s.clone()).unwrap_or_default()
}

/// Checks every property for one stream.
fn check_stream(runtime: &tokio::runtime::Runtime, s: &[u8], cuts: &[usize]) {
    let expected = reference(s);
    let whole = guard(&[s]);
    prop_assert_eq_bytes(&whole, &expected.out, s, "whole");
    for cut in 0..=s.len() {
        prop_assert_eq_bytes(&guard(&[&s[..cut], &s[cut..]]), &expected.out, s, "cut");
    }
    let mut pieces = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let c = c % (s.len() + 1);
        if c > at {
            pieces.push(&s[at..c]);
            at = c;
        }
    }
    pieces.push(&s[at..]);
    prop_assert_eq_bytes(&guard(&pieces), &expected.out, s, "pieces");

    if expected.out.starts_with(PREFACE) {
        return; // HTTP/2: its own framing, not this parser's.
    }
    let served = served_by_hyper(runtime, whole);
    assert!(
        served.len() <= expected.framed.len(),
        "hyper served {} requests, the guard framed {}: {:?}\n{:?}",
        served.len(),
        expected.framed.len(),
        served,
        String::from_utf8_lossy(s)
    );
    for (got, framed) in served.iter().zip(&expected.framed) {
        assert_eq!(
            (&got.method, &got.target),
            (&framed.method, &framed.target),
            "{:?}",
            String::from_utf8_lossy(s)
        );
        // A body hyper read whole is the one framed; one it did not is one that did not
        // complete.
        if got.body.is_some() && !framed.upgrade {
            assert_eq!(got.body, framed.body, "{:?}", String::from_utf8_lossy(s));
        }
    }
    // hyper reads on after each plain request the guard framed whole.
    let plain = expected
        .framed
        .iter()
        .take_while(|f| f.plain && f.body.is_some())
        .count();
    assert!(
        served.len() >= plain.min(expected.framed.len()),
        "hyper served {served:?}, the guard framed {:?}: {:?}",
        expected.framed,
        String::from_utf8_lossy(s)
    );
}

fn prop_assert_eq_bytes(got: &[u8], expected: &[u8], input: &[u8], how: &str) {
    assert!(
        got == expected,
        "{how}: the guard passed\n{:?}\nthe reference expects\n{:?}\nfor\n{:?}",
        String::from_utf8_lossy(got),
        String::from_utf8_lossy(expected),
        String::from_utf8_lossy(input)
    );
}

/// Pieces of HTTP/1.1 that, joined at random, make streams near the grammar's edges.
const TOKENS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\n",
    b"POST /p HTTP/1.1\r\n",
    b"HEAD /h HTTP/1.0\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    b"GET http://a.example/x HTTP/1.1\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"Host: x\r\n",
    b"Host: [::1]:80\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 10\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Upgrade: websocket\r\n",
    b"Connection: close\r\n",
    b"X-A: b\r\n",
    b"\r\n",
    b"\r",
    b"\n",
    b" ",
    b"\t",
    b":",
    b";",
    b"\0",
    b"0",
    b"3",
    b"a",
    b"f",
    b"abc",
    b"3\r\nabc\r\n",
    b"0\r\n\r\n",
    b"0\r\nX-T: t\r\n\r\n",
    b"3;e=\"v\"\r\nabc\r\n",
    b"ffffffffffffffff\r\n",
    b"\xff",
];

/// A valid request: a head with a Host, then a body framed one of three ways.
fn valid_request() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "HEAD", "OPTIONS", "PURGE"]),
        prop::sample::select(vec!["/", "/a?b=c", "/x%20y", "http://h.example:8080/p"]),
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]),
        prop::collection::vec(any::<u8>(), 0..40),
        0..3u8,
        prop::collection::vec(
            prop::sample::select(vec![
                "X-A: 1",
                "Accept: */*",
                "Connection: keep-alive",
                "Expect: 100-continue",
            ]),
            0..3,
        ),
        (
            1..9usize,
            prop::sample::select(vec!["", ";e=1", " ;e", ";e=\"a b\""]),
            prop::sample::select(vec!["", "X-Trailer: t\r\n"]),
        ),
    )
        .prop_map(
            |(method, target, version, body, framing, extra, (size, ext, trailer))| {
                let mut s = format!("{method} {target} {version}\r\nHost: h.example\r\n");
                for e in extra {
                    s.push_str(e);
                    s.push_str("\r\n");
                }
                let mut s = s.into_bytes();
                match framing {
                    0 if version == "HTTP/1.1" => {
                        s.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                        for piece in body.chunks(size) {
                            s.extend_from_slice(format!("{:x}{ext}\r\n", piece.len()).as_bytes());
                            s.extend_from_slice(piece);
                            s.extend_from_slice(b"\r\n");
                        }
                        s.extend_from_slice(format!("0{ext}\r\n{trailer}\r\n").as_bytes());
                    }
                    1 => s.extend_from_slice(b"\r\n"),
                    _ => {
                        s.extend_from_slice(
                            format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                        );
                        s.extend_from_slice(&body);
                    }
                }
                s
            },
        )
}

/// Valid requests pipelined, then mutated: bytes replaced, inserted, removed; cut short.
fn mutated_requests() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(valid_request(), 1..4),
        prop::collection::vec((any::<usize>(), 0..6u8, any::<u8>()), 0..4),
        any::<Option<usize>>(),
    )
        .prop_map(|(requests, mutations, cut)| {
            let mut s = requests.concat();
            for (at, kind, byte) in mutations {
                if s.is_empty() {
                    break;
                }
                let at = at % s.len();
                let special = b"\r\n :;\0\t0"[usize::from(byte) % 8];
                // Line ends are where framing breaks: some mutations go to one of them.
                let crs: Vec<usize> = (0..s.len()).filter(|&i| s[i] == b'\r').collect();
                let cr = crs.get(at % crs.len().max(1)).copied();
                match kind {
                    4 if cr.is_some() => {
                        s.remove(cr.unwrap_or(at));
                    }
                    5 if cr.is_some() => s[cr.unwrap_or(at)] = special,
                    0 => s[at] = byte,
                    1 => s.insert(at, special),
                    2 => {
                        s.remove(at);
                    }
                    _ => s[at] = special,
                }
            }
            if let Some(cut) = cut {
                s.truncate(cut % (s.len() + 1));
            }
            s
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes(s in prop::collection::vec(any::<u8>(), 0..200), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        check_stream(&runtime(), &s, &cuts);
    }

    #[test]
    fn http_tokens_joined_at_random(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..24), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        check_stream(&runtime(), &tokens.concat(), &cuts);
    }

    #[test]
    fn valid_requests_mutated_and_cut(s in mutated_requests(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        check_stream(&runtime(), &s, &cuts);
    }
}
