//! `1xx` interim responses (`103 Early Hints`, `102 Processing`, …) passed on to an HTTP/1.1
//! client ahead of the final answer, as RFC 9110 §15.2 asks of a proxy.
//!
//! hyper's client hands a request's interim responses to a callback ([`relayed`]); its server has
//! no way to send one (a service returns the final answer only). So they are written beneath
//! hyper, by the connection's [`crate::framing::FramingGuard`], at a point where they cannot
//! land inside another answer. hyper's HTTP/1 server offers that point: it answers requests
//! one at a time, polls a request's service future only with its write buffer empty (the
//! previous answer all handed to the transport), writes that request's answer only once the
//! future is ready, and asks its transport to flush only with the write buffer empty.
//!
//! So a service **offers** an interim response ([`Interim::send`]), and the guard
//! **commits** what was offered at its next flush: everything hyper wrote before is then
//! ahead of it, and nothing of this request's answer is written yet. Committed bytes go out
//! before anything else hyper writes. The service waits (at most [`COMMIT_WITHIN`]) until its
//! offer is committed before it returns the final answer, which therefore follows it. Only
//! the request's own service future may offer (never a task in the background, which could
//! offer while another answer is being written). An offer not committed in time is dropped:
//! interim responses are advisory, and the final answer is not held for one.
//!
//! Not passed on: `100 Continue` (hyper answers the client's `Expect` itself), `101` (an
//! upgrade is a final answer), anything to an HTTP/1.0 client (RFC 9110 §15.2 forbids it), and
//! anything over HTTP/2 (hyper's server cannot send one there either). Interim responses are
//! never stored. Hop-by-hop fields are removed; each is bounded ([`MAX_INTERIM`]), as is what a
//! request may have waiting ([`MAX_WAITING`]) and how many it passes on ([`MAX_PER_REQUEST`]:
//! an upstream sending `1xx` without end cannot hold its request past its deadline).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{HeaderMap, Request, StatusCode, Version};
use tokio::sync::{Notify, mpsc};

use crate::hop::strip_hop_by_hop;

/// The largest interim response passed on, head and fields; a larger one is dropped.
pub const MAX_INTERIM: usize = 8 * 1024;
/// The most interim bytes a request may have offered and not yet written.
pub const MAX_WAITING: usize = 32 * 1024;
/// How long an offer may wait to be committed before it is dropped.
pub const COMMIT_WITHIN: Duration = Duration::from_secs(2);
/// The most interim responses passed on for one request (and kept on their way): an upstream
/// that sends more, or a client that does not take one in time, has the rest dropped, and its
/// answer is awaited alone, so its deadline holds.
pub const MAX_PER_REQUEST: usize = 16;

/// One client connection's interim responses: offered by its requests, written by its guard.
#[derive(Debug, Default)]
pub struct Interim {
    state: Mutex<State>,
    /// Set while anything is offered or committed: the guard looks at it on every write and
    /// flush, and takes the lock only when it is set.
    busy: AtomicBool,
    committed: Notify,
}

#[derive(Debug, Default)]
struct State {
    offered: Vec<u8>,
    committed: Vec<u8>,
    /// How much of `committed` is written.
    written: usize,
    /// How many offers were committed.
    commits: u64,
}

impl Interim {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers an encoded interim response; true once it is committed (it goes out before the
    /// final answer, which may now be returned), false if it was refused (too large) or not
    /// committed within `within` (then it is withdrawn, and never sent).
    pub async fn send(&self, head: &[u8], within: Duration) -> bool {
        let target = {
            let mut s = self.lock();
            let waiting = s.offered.len() + s.committed.len() - s.written;
            if head.len() > MAX_INTERIM || waiting + head.len() > MAX_WAITING {
                return false;
            }
            s.offered.extend_from_slice(head);
            self.busy.store(true, Ordering::Release);
            s.commits + 1
        };
        let committed = async {
            loop {
                let notified = self.committed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.lock().commits >= target {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(within, committed).await.is_ok() {
            return true;
        }
        let mut s = self.lock();
        if s.commits >= target {
            return true;
        }
        s.offered.clear();
        if s.committed.is_empty() {
            self.busy.store(false, Ordering::Release);
        }
        false
    }

    /// Whether anything is offered or committed (cheap: no lock).
    pub(crate) fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// At a flush (hyper's write buffer is empty): what was offered is committed.
    pub(crate) fn commit(&self) {
        let mut s = self.lock();
        if s.offered.is_empty() {
            return;
        }
        let offered = std::mem::take(&mut s.offered);
        s.committed.extend_from_slice(&offered);
        s.commits += 1;
        drop(s);
        self.committed.notify_waiters();
    }

    /// Writes what is committed, through `write` (the transport's), until all of it is written
    /// or `write` is not ready.
    pub(crate) fn write_committed(
        &self,
        mut write: impl FnMut(&[u8]) -> std::task::Poll<std::io::Result<usize>>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let mut s = self.lock();
        while s.written < s.committed.len() {
            let n = match write(&s.committed[s.written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            s.written += n;
        }
        s.committed.clear();
        s.written = 0;
        if s.offered.is_empty() {
            self.busy.store(false, Ordering::Release);
        }
        Poll::Ready(Ok(()))
    }
}

/// The interim response a client is sent for one an upstream sent, if it is passed on at all:
/// `HTTP/1.1`, the status and its reason, the fields without hop-by-hop ones.
pub fn encode(status: StatusCode, headers: &HeaderMap) -> Option<Vec<u8>> {
    if !status.is_informational()
        || status == StatusCode::CONTINUE
        || status == StatusCode::SWITCHING_PROTOCOLS
    {
        return None;
    }
    let mut fields = headers.clone();
    strip_hop_by_hop(&mut fields);
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        status
            .canonical_reason()
            .unwrap_or("Informational")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in &fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
        if out.len() > MAX_INTERIM {
            return None;
        }
    }
    out.extend_from_slice(b"\r\n");
    (out.len() <= MAX_INTERIM).then_some(out)
}

/// Whether a client request may be sent interim responses: HTTP/1.1 only.
pub fn may_send(version: Version) -> bool {
    version == Version::HTTP_11
}

/// Sends `req` upstream with `send` (its exchange, deadline included), passing the interim
/// responses the upstream sends first on to `client` when there is one (each offered as it
/// comes, at most [`MAX_PER_REQUEST`], all before the answer); without one, just the exchange.
pub async fn relayed<B, F: Future>(
    mut req: Request<B>,
    client: Option<&Interim>,
    send: impl FnOnce(Request<B>) -> F,
) -> F::Output {
    match client {
        Some(client) => {
            let relay = arm(&mut req);
            relay.until(client, send(req)).await
        }
        None => send(req).await,
    }
}

/// The interim responses an upstream sends for one request, on their way to the client.
struct Relay {
    rx: mpsc::Receiver<Vec<u8>>,
}

/// Arms a request to an upstream: the interim responses it is sent are kept (encoded for the
/// client, at most a few) for [`Relay::until`] to pass on.
fn arm<B>(req: &mut Request<B>) -> Relay {
    let (tx, rx) = mpsc::channel(MAX_PER_REQUEST);
    hyper::ext::on_informational(req, move |res| {
        if let Some(head) = encode(res.status(), res.headers()) {
            let _ = tx.try_send(head);
        }
    });
    Relay { rx }
}

impl Relay {
    /// Awaits `answer` (the exchange the request was sent on), passing each interim response
    /// the upstream sends to `client` as it comes, and any left when the answer is ready (they
    /// came before it) before returning it.
    async fn until<F: Future>(mut self, client: &Interim, answer: F) -> F::Output {
        tokio::pin!(answer);
        // Passed on so far; MAX_PER_REQUEST once no more are.
        let mut relayed = 0;
        let output = loop {
            tokio::select! {
                biased;
                Some(head) = self.rx.recv(), if relayed < MAX_PER_REQUEST => {
                    relayed = Self::pass_on(client, &head, relayed).await;
                }
                output = &mut answer => break output,
            }
        };
        while relayed < MAX_PER_REQUEST
            && let Ok(head) = self.rx.try_recv()
        {
            relayed = Self::pass_on(client, &head, relayed).await;
        }
        output
    }

    /// Offers `head` to the client; how many are passed on now (all of them, once one is not).
    async fn pass_on(client: &Interim, head: &[u8], relayed: usize) -> usize {
        if client.send(head, COMMIT_WITHIN).await {
            relayed + 1
        } else {
            MAX_PER_REQUEST
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::task::Poll;

    #[test]
    fn early_hints_keep_their_fields_and_lose_hop_by_hop_ones() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static("</s.css>; rel=preload; as=style"),
        );
        h.insert("connection", HeaderValue::from_static("x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        let out = encode(StatusCode::EARLY_HINTS, &h).expect("passed on");
        assert_eq!(
            String::from_utf8(out).expect("text"),
            "HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload; as=style\r\n\r\n"
        );
        let processing = encode(StatusCode::PROCESSING, &HeaderMap::new()).expect("passed on");
        assert_eq!(processing, b"HTTP/1.1 102 Processing\r\n\r\n");
    }

    #[test]
    fn continue_switching_final_and_oversized_answers_are_not_passed_on() {
        let none = HeaderMap::new();
        assert!(encode(StatusCode::CONTINUE, &none).is_none());
        assert!(encode(StatusCode::SWITCHING_PROTOCOLS, &none).is_none());
        assert!(encode(StatusCode::OK, &none).is_none());
        let mut big = HeaderMap::new();
        for i in 0..20 {
            let name = http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).expect("name");
            big.insert(
                name,
                HeaderValue::from_str(&"a".repeat(500)).expect("value"),
            );
        }
        assert!(encode(StatusCode::EARLY_HINTS, &big).is_none());
        assert!(may_send(Version::HTTP_11));
        assert!(!may_send(Version::HTTP_10) && !may_send(Version::HTTP_2));
    }

    /// An offer waits for a commit; a commit makes it writable; what is written goes out
    /// whole, across writes that take part of it.
    #[tokio::test]
    async fn an_offer_is_written_only_after_a_commit() {
        let interim = Interim::new();
        let sender = interim.clone();
        let offer = tokio::spawn(async move {
            sender
                .send(b"HTTP/1.1 102 Processing\r\n\r\n", Duration::from_secs(30))
                .await
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !interim.busy() {
            assert!(std::time::Instant::now() < deadline, "the offer never came");
            tokio::task::yield_now().await;
        }
        let mut out = Vec::new();
        // Before a commit nothing is written.
        let nothing = interim.write_committed(|b| {
            out.extend_from_slice(b);
            Poll::Ready(Ok(b.len()))
        });
        assert!(matches!(nothing, Poll::Ready(Ok(()))));
        assert!(out.is_empty() && interim.busy());
        interim.commit();
        assert!(
            offer.await.expect("task"),
            "the committed offer is confirmed"
        );
        // A transport that takes 5 bytes at a time, then is not ready.
        let mut calls = 0;
        let partial = interim.write_committed(|b| {
            calls += 1;
            if calls > 3 {
                return Poll::Pending;
            }
            let n = b.len().min(5);
            out.extend_from_slice(&b[..n]);
            Poll::Ready(Ok(n))
        });
        assert!(partial.is_pending() && interim.busy());
        let done = interim.write_committed(|b| {
            out.extend_from_slice(b);
            Poll::Ready(Ok(b.len()))
        });
        assert!(matches!(done, Poll::Ready(Ok(()))));
        assert_eq!(out, b"HTTP/1.1 102 Processing\r\n\r\n");
        assert!(!interim.busy());
    }

    #[tokio::test]
    async fn an_offer_not_committed_in_time_is_withdrawn() {
        let interim = Interim::new();
        assert!(
            !interim
                .send(
                    b"HTTP/1.1 103 Early Hints\r\n\r\n",
                    Duration::from_millis(20)
                )
                .await
        );
        interim.commit();
        let mut out = Vec::new();
        let _ = interim.write_committed(|b| {
            out.extend_from_slice(b);
            Poll::Ready(Ok(b.len()))
        });
        assert!(out.is_empty(), "a withdrawn offer is never written");
        let too_big = vec![b'a'; MAX_INTERIM + 1];
        assert!(!interim.send(&too_big, Duration::from_secs(1)).await);
    }
}
