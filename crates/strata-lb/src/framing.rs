//! A request-smuggling guard under the HTTP/1.1 parser: it follows the framing of every request
//! on a client connection, withholds each request head until it is complete, and checks it
//! strictly ([`crate::strict`], RFC 9112) before the parser sees it.
//!
//! hyper's parser is lenient where leniency lets the balancer and a backend read one byte
//! stream as different requests (a bare LF for a line end, no `Host` or two, both
//! `Content-Length` and `Transfer-Encoding` — which hyper, as RFC 9112 §6.1 allows, frames by
//! the latter, dropping the length). The guard refuses such a head: it hands the parser
//! [`REFUSED_HEAD`] in its place, which hyper answers `400 Bad Request` before closing the
//! connection, and reads nothing more. Earlier requests on the connection are answered first,
//! in order.
//!
//! The guard reads requests the way the parser will: a head (ended by an empty line), then a
//! body of `Content-Length` bytes or chunked (sizes, data, trailers — each line checked
//! against RFC 9112 §7.1), then the next head. A chunked body that breaks the grammar is cut
//! where it breaks and ended by [`REFUSED_BODY`], bytes the parser's chunked decoder refuses in
//! whatever state it is outside chunk data (the balancer then answers 400 and closes). Only two
//! things make it step aside and pass bytes as they come: HTTP/2's preface at the start of a
//! connection (HTTP/2 has its own strict framing), and a valid HTTP/1.1 `Upgrade` request
//! (what follows may be another protocol; if the backend declines the upgrade the balancer
//! closes the connection after its answer, so those bytes are never parsed as requests).
//!
//! Its cost is one copy of each request through its own small buffers and a second parse of
//! each head, with the strict checks a pass over the head it already holds.
//!
//! On the way out it writes the connection's interim responses (`103 Early Hints`), which
//! hyper's server cannot send: committed at a flush, ahead of anything hyper writes next
//! ([`crate::interim`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::interim::Interim;
use crate::strict::{self, Framing, MAX_HEAD, Refusal};

/// A head the parser refuses (an invalid method token), given in place of a refused one.
pub const REFUSED_HEAD: &[u8] = b"SMUGGLED\x01 / HTTP/1.1\r\n\r\n";
/// Ends a chunked body cut where it broke the grammar: the parser's chunked decoder refuses a
/// CR followed by NUL in every state but chunk data (a CR may end a size line, an extension,
/// chunk data or a trailer; NUL may follow none of them, nor start a size or a line).
pub const REFUSED_BODY: &[u8] = b"\r\0";
/// HTTP/2's connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The most buffer capacity a connection keeps between requests.
const KEPT_CAPACITY: usize = 1024;
/// Vectored writes up to this many bytes in all are joined into one write.
const COALESCE_LIMIT: usize = 4096;
/// The most headers a head may have (as the parser allows).
const MAX_HEADERS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Inside a body of known length: this many bytes remain.
    Fixed(u64),
    /// In a chunk size: its value so far and how many hex digits it has.
    ChunkSize {
        size: u64,
        digits: u8,
    },
    /// Whitespace after a chunk size: an extension must follow.
    ChunkSpace {
        size: u64,
    },
    /// In a chunk's extensions (ignored, as RFC 9112 §7.1.1 allows).
    ChunkExt {
        size: u64,
    },
    /// The LF that ends a chunk-size line.
    ChunkSizeLf {
        size: u64,
    },
    /// Inside chunk data: this many bytes remain.
    ChunkData(u64),
    /// The CR, then the LF, after chunk data.
    ChunkDataCr,
    ChunkDataLf,
    /// At the start of a trailer line (or of the empty line that ends the message), in a
    /// trailer field's name, in its value, at the LF ending it; each with the trailer
    /// section's length so far.
    TrailerStart(usize),
    TrailerName(usize),
    TrailerValue(usize),
    TrailerLf(usize),
    /// The LF of the empty line that ends a chunked message.
    EndLf,
    /// Not following any more: everything passes as it is.
    Aside,
    /// A request was refused: nothing more is read.
    Refused,
}

/// The guard: wraps a client connection's byte stream (plain TCP or TLS).
pub struct FramingGuard<S> {
    inner: S,
    state: State,
    /// Nothing has been passed on yet: HTTP/2's preface may come.
    fresh: bool,
    /// Head bytes held back until the head is complete.
    head: Vec<u8>,
    /// Bytes ready for the parser.
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
    /// The connection's interim responses, written beneath hyper ([`crate::interim`]).
    interim: Option<Arc<Interim>>,
}

impl<S> FramingGuard<S> {
    pub fn new(inner: S) -> Self {
        FramingGuard {
            inner,
            state: State::Head,
            fresh: true,
            head: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
            interim: None,
        }
    }

    /// Writes the interim responses a client connection's requests offer ([`crate::interim`]).
    pub fn with_interim(mut self, interim: Arc<Interim>) -> Self {
        self.interim = Some(interim);
        self
    }

    /// Follows `bytes`, appending to `out` what the parser may see now.
    fn follow(&mut self, input: &[u8]) {
        let mut carried: Vec<u8>;
        let mut bytes = input;
        while !bytes.is_empty() {
            match self.state {
                State::Aside => {
                    self.out.extend_from_slice(bytes);
                    return;
                }
                State::Refused => return,
                State::Head => {
                    self.head.extend_from_slice(bytes);
                    carried = self.examine_head();
                    bytes = &carried;
                }
                State::Fixed(remaining) => {
                    let n = remaining.min(bytes.len() as u64) as usize;
                    self.out.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.state = if remaining == n as u64 {
                        State::Head
                    } else {
                        State::Fixed(remaining - n as u64)
                    };
                }
                State::ChunkData(remaining) => {
                    let n = remaining.min(bytes.len() as u64) as usize;
                    self.out.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.state = if remaining == n as u64 {
                        State::ChunkDataCr
                    } else {
                        State::ChunkData(remaining - n as u64)
                    };
                }
                _ => {
                    // Byte by byte through the chunk lines and trailers (short).
                    let b = bytes[0];
                    match chunk_step(self.state, b) {
                        Some(next) => {
                            self.out.push(b);
                            bytes = &bytes[1..];
                            self.state = next;
                        }
                        None => {
                            self.refuse(Refusal::ChunkedBody, REFUSED_BODY);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Looks at the held-back head: refuses it, passes it on, or waits for more. Returns the
    /// bytes after the head, to be followed in the state its framing set.
    fn examine_head(&mut self) -> Vec<u8> {
        loop {
            if self.fresh {
                let n = self.head.len().min(PREFACE.len());
                if self.head[..n] == PREFACE[..n] {
                    if n == PREFACE.len() {
                        self.step_aside();
                    }
                    return Vec::new();
                }
            }
            let verdict = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut request = httparse::Request::new(&mut headers);
                match request.parse(&self.head) {
                    Ok(httparse::Status::Complete(len)) => {
                        strict::check(&self.head[..len], &request).map(|f| Some((len, f)))
                    }
                    Ok(httparse::Status::Partial) => {
                        strict::check_partial(&self.head).map(|()| None)
                    }
                    Err(_) => Err(Refusal::Syntax),
                }
            };
            let (len, framing) = match verdict {
                Ok(Some(head)) => head,
                Ok(None) => return Vec::new(),
                Err(refusal) => {
                    self.refuse(refusal, REFUSED_HEAD);
                    return Vec::new();
                }
            };
            self.fresh = false;
            self.state = match framing {
                Framing::Upgrade => {
                    self.step_aside();
                    return Vec::new();
                }
                Framing::Length(0) => State::Head,
                Framing::Length(n) => State::Fixed(n),
                Framing::Chunked => State::ChunkSize { size: 0, digits: 0 },
            };
            let rest = self.head.split_off(len);
            let head = std::mem::take(&mut self.head);
            self.out.extend_from_slice(&head);
            if self.state == State::Head && !rest.is_empty() {
                // The next head (pipelined) is already here.
                self.head = rest;
                continue;
            }
            return rest;
        }
    }

    fn step_aside(&mut self) {
        let held = std::mem::take(&mut self.head);
        self.out.extend_from_slice(&held);
        self.state = State::Aside;
        self.fresh = false;
    }

    /// Ends the stream for the parser with `last` (a refused head, or the end of a broken
    /// body); nothing more is read.
    fn refuse(&mut self, refusal: Refusal, last: &[u8]) {
        tracing::debug!(
            reason = refusal.reason(),
            "a malformed or ambiguous request: refused"
        );
        metrics::counter!("strata_lb_refused_requests_total", "reason" => refusal.reason())
            .increment(1);
        self.head = Vec::new();
        self.out.extend_from_slice(last);
        self.state = State::Refused;
        self.fresh = false;
    }
}

/// One byte through a chunk line, the line end after chunk data, or the trailers (RFC 9112
/// §7.1): the next state, or `None` where the grammar breaks. Never laxer than hyper's chunked
/// decoder, so that the parser has accepted everything before the break.
fn chunk_step(state: State, b: u8) -> Option<State> {
    let next = match state {
        State::ChunkSize { size, digits } => match b {
            b'\r' if digits > 0 => State::ChunkSizeLf { size },
            b';' if digits > 0 => State::ChunkExt { size },
            b' ' | b'\t' if digits > 0 => State::ChunkSpace { size },
            _ => {
                let d = (b as char).to_digit(16)?;
                if digits >= 16 {
                    return None;
                }
                State::ChunkSize {
                    size: size << 4 | u64::from(d),
                    digits: digits + 1,
                }
            }
        },
        State::ChunkSpace { size } => match b {
            b' ' | b'\t' => State::ChunkSpace { size },
            b';' => State::ChunkExt { size },
            _ => return None,
        },
        State::ChunkExt { size } => match b {
            b'\r' => State::ChunkSizeLf { size },
            b'\t' | b' '..=b'~' | 0x80..=0xff => State::ChunkExt { size },
            _ => return None,
        },
        State::ChunkSizeLf { size } => match b {
            b'\n' if size == 0 => State::TrailerStart(0),
            b'\n' => State::ChunkData(size),
            _ => return None,
        },
        State::ChunkDataCr if b == b'\r' => State::ChunkDataLf,
        State::ChunkDataLf if b == b'\n' => State::ChunkSize { size: 0, digits: 0 },
        State::TrailerStart(n) => match b {
            b'\r' => State::EndLf,
            _ if is_tchar(b) => State::TrailerName(n + 1),
            _ => return None,
        },
        State::TrailerName(n) => match b {
            b':' => State::TrailerValue(n + 1),
            _ if is_tchar(b) => State::TrailerName(n + 1),
            _ => return None,
        },
        State::TrailerValue(n) => match b {
            b'\r' => State::TrailerLf(n + 1),
            b'\t' | b' '..=b'~' | 0x80..=0xff => State::TrailerValue(n + 1),
            _ => return None,
        },
        State::TrailerLf(n) if b == b'\n' => State::TrailerStart(n + 1),
        State::EndLf if b == b'\n' => State::Head,
        _ => return None,
    };
    match next {
        State::TrailerName(n) | State::TrailerValue(n) if n >= MAX_HEAD => None,
        next => Some(next),
    }
}

/// A `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    // An idle connection keeps no large buffer.
                    if this.out.capacity() > KEPT_CAPACITY {
                        this.out = Vec::new();
                    } else {
                        this.out.clear();
                    }
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof || this.state == State::Refused {
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Aside {
                // Nothing held back any more: read straight into the caller's buffer.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
            let mut read = ReadBuf::uninit(&mut scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let filled = read.filled();
            if filled.is_empty() {
                // The client is done: a head it left incomplete is dropped; the parser sees the
                // connection end between requests.
                this.eof = true;
                this.head = Vec::new();
                continue;
            }
            this.follow(filled);
        }
    }
}

impl<S: AsyncWrite + Unpin> FramingGuard<S> {
    /// Writes committed interim responses, which go before anything hyper writes.
    fn write_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.interim.as_ref().filter(|i| i.busy()) {
            Some(interim) => {
                let inner = &mut self.inner;
                interim.write_committed(|b| Pin::new(&mut *inner).poll_write(cx, b))
            }
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.write_interim(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    /// A small response (head and body together within [`COALESCE_LIMIT`]) goes out as one
    /// plain write — one TLS record rather than one per piece — and a large one as it is,
    /// vectored, without copying its body.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.write_interim(cx))?;
        let inner = &mut this.inner;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if bufs.len() > 1 && total <= COALESCE_LIMIT {
            let mut joined = [0u8; COALESCE_LIMIT];
            let mut len = 0;
            for b in bufs {
                joined[len..len + b.len()].copy_from_slice(b);
                len += b.len();
            }
            return Pin::new(inner).poll_write(cx, &joined[..len]);
        }
        Pin::new(inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes only with its write buffer empty: what its requests offered as interim
    /// responses is committed here, and goes out ahead of anything hyper writes next.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(interim) = this.interim.as_ref().filter(|i| i.busy()) {
            interim.commit();
            ready!(this.write_interim(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    /// What the parser gets when the client sends `chunks` one after another.
    fn through(chunks: &[&[u8]]) -> (Vec<u8>, State) {
        let mut g = FramingGuard::new(());
        for c in chunks {
            g.follow(c);
        }
        (g.out, g.state)
    }

    #[test]
    fn plain_requests_pass_unchanged_however_they_are_cut() {
        let stream: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\r\nPOST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA ; a=\"b c\"\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nGET /d HTTP/1.0\r\n\r\n";
        for cut in 1..stream.len() {
            let (out, state) = through(&[&stream[..cut], &stream[cut..]]);
            assert_eq!(out, stream, "cut at {cut}");
            assert_eq!(state, State::Head, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(through(&bytes).0, stream, "one byte at a time");
    }

    #[test]
    fn a_head_is_held_back_until_complete() {
        let (out, state) = through(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]);
        assert!(out.is_empty());
        assert_eq!(state, State::Head);
    }

    #[test]
    fn a_refused_head_is_replaced_after_the_requests_before_it() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
        ] {
            let first = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n";
            let (out, state) = through(&[first, head, b"0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"]);
            let mut expected = first.to_vec();
            expected.extend_from_slice(REFUSED_HEAD);
            assert_eq!(out, expected, "{}", String::from_utf8_lossy(head));
            assert_eq!(state, State::Refused);
        }
    }

    #[test]
    fn a_smuggled_head_inside_a_body_is_not_taken_for_a_head() {
        // A body that looks like an ambiguous head is data, not a request.
        let body = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = format!(
            "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        stream.extend_from_slice(body);
        let (out, state) = through(&[&stream]);
        assert_eq!(out, stream);
        assert_eq!(state, State::Head);
    }

    #[test]
    fn a_broken_chunked_body_is_cut_where_it_breaks() {
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (body, good) in [
            (&b"zz\r\nabc\r\n0\r\n\r\n"[..], 0),
            (b"3\nabc\r\n0\r\n\r\n", 1),
            (b"3 \r\nabc\r\n0\r\n\r\n", 2),
            (b"3\r\nabcX\r\n0\r\n\r\n", 6),
            (b"3\r\nabc\r\n0\r\nX : y\r\n\r\n", 12),
            (b"3\r\nabc\r\n0\r\n y\r\n\r\n", 11),
            (b"3;a\x00\r\nabc\r\n0\r\n\r\n", 3),
            (b"00000000000000003\r\nabc\r\n0\r\n\r\n", 16),
        ] {
            let mut stream = head.to_vec();
            stream.extend_from_slice(body);
            stream.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let (out, state) = through(&[&stream]);
            let mut expected = head.to_vec();
            expected.extend_from_slice(&body[..good]);
            expected.extend_from_slice(REFUSED_BODY);
            assert_eq!(out, expected, "{}", String::from_utf8_lossy(body));
            assert_eq!(state, State::Refused);
        }
    }

    #[test]
    fn http2_and_upgrades_pass_as_they_come() {
        for stream in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04"[..],
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello",
        ] {
            for cut in 1..stream.len() {
                let (out, state) = through(&[&stream[..cut], &stream[cut..]]);
                assert_eq!(out, stream, "{}", String::from_utf8_lossy(stream));
                assert_eq!(state, State::Aside, "{}", String::from_utf8_lossy(stream));
            }
        }
        // The preface only opens a connection.
        let (out, state) = through(&[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ]);
        assert_eq!(state, State::Refused);
        assert!(out.ends_with(REFUSED_HEAD));
    }

    /// Records how it was written to.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        vectored: Vec<usize>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.vectored.push(bufs.len());
            Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_small_response_is_one_write_and_a_large_one_stays_vectored() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut guard = FramingGuard::new(Recorder::default());
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        let small = [io::IoSlice::new(head), io::IoSlice::new(b"hello")];
        let written = Pin::new(&mut guard).poll_write_vectored(&mut cx, &small);
        assert!(matches!(written, Poll::Ready(Ok(n)) if n == head.len() + 5));
        let mut joined = head.to_vec();
        joined.extend_from_slice(b"hello");
        assert_eq!(guard.inner.writes, vec![joined]);
        assert!(guard.inner.vectored.is_empty());

        let body = vec![1u8; 100 * 1024];
        let large = [io::IoSlice::new(head), io::IoSlice::new(&body)];
        let written = Pin::new(&mut guard).poll_write_vectored(&mut cx, &large);
        assert!(matches!(written, Poll::Ready(Ok(n)) if n == head.len() + body.len()));
        assert_eq!(
            guard.inner.vectored,
            vec![2],
            "passed on vectored, not copied"
        );
        assert_eq!(guard.inner.writes.len(), 1);
    }
}
