//! Interim responses through the edge: a `103 Early Hints` (or `102 Processing`) the origin
//! sends ahead of its answer reaches an HTTP/1.1 client ahead of the edge's answer, in order,
//! for cached and passed-on requests alike; it is never stored (a hit has none) and its fields
//! never join the stored answer's; an HTTP/1.0 client is sent none (RFC 9110 §15.2); an origin
//! sending them without end has only the first 16 passed on.
//!
//! hyper's server cannot send interim responses: the edge writes them beneath it
//! (`strata_lb::interim`). The origin here is written by hand for the same reason.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestEdge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer as the client read it: status, fields (names lower-cased), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a head (without its empty line) into the status or request line and its fields.
fn split_head(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let fields = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (first, fields)
}

fn content_length(fields: &[(String, String)]) -> usize {
    fields
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Reads a head (up to its empty line) from `buf`, reading more from `s` as needed; `None` at
/// the end of the stream.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 16 * 1024];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> Vec<u8> {
    while buf.len() < len {
        let mut chunk = [0u8; 16 * 1024];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..len.min(buf.len())).collect()
}

/// Reads answers until `finals` final (non-1xx) ones are complete, interim ones included, in
/// the order they came; within 10 s.
async fn read_answers(s: &mut TcpStream, finals: usize) -> Vec<Answer> {
    let read = async {
        let mut buf = Vec::new();
        let mut answers = Vec::new();
        let mut done = 0;
        while done < finals {
            let Some(head) = read_head(s, &mut buf).await else {
                break;
            };
            let (line, fields) = split_head(&head);
            let status: u16 = line
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("a status line: {line:?}"));
            let body = if status >= 200 {
                done += 1;
                let len = content_length(&fields);
                read_body(s, &mut buf, len).await
            } else {
                Vec::new()
            };
            answers.push(Answer {
                status,
                fields,
                body,
            });
        }
        answers
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the answers within 10 s")
}

/// An origin that answers a path under `/hinted` with `103 Early Hints` (and, under
/// `/hinted-two`, a `102 Processing` before it), then a cacheable `200` whose body is the path;
/// any other path with the `200` alone. It keeps the paths it was asked for.
async fn hinting_origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_head(&mut s, &mut buf).await {
                    let (line, fields) = split_head(&head);
                    let _ = read_body(&mut s, &mut buf, content_length(&fields)).await;
                    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                    log.lock().expect("log").push(path.clone());
                    if path.starts_with("/hinted-two") {
                        let _ = s.write_all(b"HTTP/1.1 102 Processing\r\n\r\n").await;
                    }
                    if path.starts_with("/hinted-many") {
                        let many = "HTTP/1.1 102 Processing\r\n\r\n".repeat(40);
                        let _ = s.write_all(many.as_bytes()).await;
                    }
                    if path.starts_with("/hinted") {
                        let hint = "HTTP/1.1 103 Early Hints\r\n\
                                    Link: </s.css>; rel=preload; as=style\r\n\
                                    X-My-Header: test\r\n\
                                    Keep-Alive: timeout=5\r\n\r\n";
                        let _ = s.write_all(hint.as_bytes()).await;
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: {}\r\n\r\n{path}",
                        path.len()
                    );
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// An edge in front of [`hinting_origin`], the paths the origin was asked for, and a client
/// connection to the edge.
async fn edge_and_client() -> (TestEdge, Arc<Mutex<Vec<String>>>, TcpStream) {
    let (origin, seen) = hinting_origin().await;
    let edge = TestEdge::start(origin, None).await;
    let client = TcpStream::connect(edge.addr).await.expect("connect");
    (edge, seen, client)
}

fn asked(seen: &Mutex<Vec<String>>, path: &str) -> usize {
    seen.lock()
        .expect("log")
        .iter()
        .filter(|p| *p == path)
        .count()
}

fn assert_early_hint(a: &Answer) {
    assert_eq!(a.status, 103, "{a:?}");
    assert_eq!(a.field("link"), Some("</s.css>; rel=preload; as=style"));
    assert_eq!(a.field("x-my-header"), Some("test"));
    assert_eq!(a.field("keep-alive"), None, "hop-by-hop fields stay behind");
}

#[tokio::test]
async fn an_early_hint_reaches_the_client_ahead_of_the_answer_and_is_never_stored() {
    let (edge, seen, mut s) = edge_and_client().await;
    let get = b"GET /hinted-1 HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(get).await.expect("send");
    let answers = read_answers(&mut s, 1).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_early_hint(&answers[0]);
    assert_eq!(answers[1].status, 200);
    assert_eq!(answers[1].body, b"/hinted-1");
    assert_eq!(
        answers[1].field("x-my-header"),
        None,
        "the hint's fields are not the answer's"
    );

    // Again, on the same connection: a hit, with no interim response and none of its fields.
    s.write_all(get).await.expect("send");
    let again = read_answers(&mut s, 1).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].status, 200);
    assert!(
        again[0]
            .field("cache-status")
            .is_some_and(|v| v.contains("hit")),
        "{again:?}"
    );
    assert_eq!(again[0].field("x-my-header"), None);
    assert_eq!(asked(&seen, "/hinted-1"), 1);

    // Two in a row (102, then 103) both come, in order; so does one for a passed-on POST.
    s.write_all(b"GET /hinted-two HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let two = read_answers(&mut s, 1).await;
    let statuses: Vec<u16> = two.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [102, 103, 200], "{two:?}");
    // An origin that sends 40 before its answer: 16 are passed on, then the answer.
    s.write_all(b"GET /hinted-many HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let many = read_answers(&mut s, 1).await;
    let processing = many.iter().filter(|a| a.status == 102).count();
    assert_eq!(
        processing,
        strata_lb::interim::MAX_PER_REQUEST,
        "{:?}",
        many.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(
        many.last().map(|a| a.body.as_slice()),
        Some(&b"/hinted-many"[..])
    );
    s.write_all(b"POST /hinted-post HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .expect("send");
    let posted = read_answers(&mut s, 1).await;
    assert_eq!(posted.len(), 2, "{posted:?}");
    assert_early_hint(&posted[0]);
    assert_eq!(posted[1].body, b"/hinted-post");
    edge.stop().await;
}

#[tokio::test]
async fn pipelined_requests_each_get_their_hints_in_order() {
    let (edge, _, mut s) = edge_and_client().await;
    s.write_all(
        b"GET /hinted-a HTTP/1.1\r\nHost: x\r\n\r\nGET /plain HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /hinted-b HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .expect("send");
    let answers = read_answers(&mut s, 3).await;
    let order: Vec<(u16, Vec<u8>)> = answers.iter().map(|a| (a.status, a.body.clone())).collect();
    assert_eq!(
        order,
        [
            (103, Vec::new()),
            (200, b"/hinted-a".to_vec()),
            (200, b"/plain".to_vec()),
            (103, Vec::new()),
            (200, b"/hinted-b".to_vec()),
        ],
        "{answers:?}"
    );
    edge.stop().await;
}

#[tokio::test]
async fn an_http_1_0_client_is_sent_no_interim_response() {
    let (edge, seen, mut s) = edge_and_client().await;
    s.write_all(b"GET /hinted-old HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let answers = read_answers(&mut s, 1).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].body, b"/hinted-old");
    assert_eq!(
        asked(&seen, "/hinted-old"),
        1,
        "the origin did send its hint"
    );
    edge.stop().await;
}
