//! A request-smuggling guard under the HTTP/1.1 parser: it follows the framing of every request
//! on a client connection and withholds each request head until it is complete, so that a head
//! carrying both `Content-Length` and `Transfer-Encoding` can be refused before the parser sees
//! it.
//!
//! hyper, like RFC 9112 §6.1 allows, frames such a request by `Transfer-Encoding`, drops the
//! `Content-Length` and closes the connection after answering; the balancer's own code never
//! sees that both were there. RFC 9112's other choice — refusing the request — is the one this
//! guard takes: it hands the parser a malformed head instead, which hyper answers `400 Bad
//! Request` before closing the connection. Earlier requests on the connection are answered
//! first, in order.
//!
//! The guard reads requests the way the parser will: a head (ended by an empty line), then a
//! body of `Content-Length` bytes or chunked (sizes, data, trailers), then the next head.
//! Whatever it cannot follow — a head that does not parse, HTTP/2's preface, an upgrade or
//! CONNECT (the bytes after them may be a tunnel), a bad chunk size — makes it step aside for
//! the rest of the connection, leaving the parser to refuse what is malformed (it does: 400 and
//! close). A head that grows past the parser's own limit is passed on for the parser to refuse.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A head the parser refuses (an invalid method token), given in place of an ambiguous one.
const REFUSED_HEAD: &[u8] = b"SMUGGLED\x01 / HTTP/1.1\r\n\r\n";
/// The most header bytes the guard holds back; the parser's own limit is the same, so a longer
/// head is refused by it.
const MAX_HEAD: usize = 64 * 1024;
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
    /// Reading a chunk-size line: the size so far, and whether the extensions have started.
    ChunkSize { size: u64, digits: u8, ext: bool },
    /// Inside chunk data: this many bytes remain, then the line end.
    ChunkData(u64),
    /// After chunk data, before its line end.
    ChunkEnd,
    /// In the trailer section: the length of the current line so far.
    Trailers(usize),
    /// Not following any more: everything passes as it is.
    Aside,
    /// An ambiguous head was refused: nothing more is read.
    Refused,
}

/// The guard: wraps a client connection's byte stream (plain TCP or TLS).
pub struct FramingGuard<S> {
    inner: S,
    state: State,
    /// Head bytes held back until the head is complete.
    head: Vec<u8>,
    /// Bytes ready for the parser.
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
}

impl<S> FramingGuard<S> {
    pub fn new(inner: S) -> Self {
        FramingGuard {
            inner,
            state: State::Head,
            head: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
        }
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
                        State::ChunkEnd
                    } else {
                        State::ChunkData(remaining - n as u64)
                    };
                }
                _ => {
                    // Byte by byte through the chunk lines (short).
                    let b = bytes[0];
                    self.out.push(b);
                    bytes = &bytes[1..];
                    self.state = chunk_step(self.state, b);
                }
            }
        }
    }

    /// Looks at the held-back head: refuses it, passes it on, or waits for more. Returns the
    /// bytes after the head, to be followed in the state its framing set.
    fn examine_head(&mut self) -> Vec<u8> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            let parsed = request.parse(&self.head);
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if self.head.len() < MAX_HEAD => return Vec::new(),
                // Too long, HTTP/2's preface, or not HTTP/1.x at all: the parser decides.
                _ => {
                    self.step_aside();
                    return Vec::new();
                }
            };
            let framing = framing_of(&request);
            match framing {
                Framing::Ambiguous => {
                    tracing::debug!(
                        "a request with both Content-Length and Transfer-Encoding: refused"
                    );
                    metrics::counter!("strata_lb_smuggling_refused_total").increment(1);
                    self.head.clear();
                    self.out.extend_from_slice(REFUSED_HEAD);
                    self.state = State::Refused;
                    return Vec::new();
                }
                Framing::Unfollowable => {
                    self.step_aside();
                    return Vec::new();
                }
                Framing::Length(n) => {
                    self.state = if n == 0 { State::Head } else { State::Fixed(n) }
                }
                Framing::Chunked => {
                    self.state = State::ChunkSize {
                        size: 0,
                        digits: 0,
                        ext: false,
                    }
                }
            }
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
    }
}

/// One byte through the chunk-size line, the line end after chunk data, or the trailers.
fn chunk_step(state: State, b: u8) -> State {
    match state {
        State::ChunkSize { size, digits, ext } => match b {
            b'\n' if digits == 0 => State::Aside,
            b'\n' if size == 0 => State::Trailers(0),
            b'\n' => State::ChunkData(size),
            b'\r' => State::ChunkSize { size, digits, ext },
            _ if ext => State::ChunkSize { size, digits, ext },
            b';' | b' ' | b'\t' if digits > 0 => State::ChunkSize {
                size,
                digits,
                ext: true,
            },
            _ => match (b as char).to_digit(16) {
                Some(d) if digits < 16 => State::ChunkSize {
                    size: size * 16 + u64::from(d),
                    digits: digits + 1,
                    ext: false,
                },
                // A bad chunk size: the parser refuses it.
                _ => State::Aside,
            },
        },
        State::ChunkEnd => match b {
            b'\n' => State::ChunkSize {
                size: 0,
                digits: 0,
                ext: false,
            },
            b'\r' => State::ChunkEnd,
            _ => State::Aside,
        },
        State::Trailers(line) => match b {
            b'\n' if line == 0 => State::Head,
            b'\n' => State::Trailers(0),
            b'\r' => State::Trailers(line),
            _ if line >= MAX_HEAD => State::Aside,
            _ => State::Trailers(line + 1),
        },
        other => other,
    }
}

enum Framing {
    Length(u64),
    Chunked,
    /// Both `Content-Length` and `Transfer-Encoding`.
    Ambiguous,
    /// An upgrade, CONNECT, or framing the parser will refuse anyway.
    Unfollowable,
}

fn framing_of(request: &httparse::Request<'_, '_>) -> Framing {
    if request.method == Some("CONNECT") {
        return Framing::Unfollowable;
    }
    let mut length: Option<&[u8]> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            if length.is_some_and(|l| l != h.value) {
                return Framing::Unfollowable;
            }
            length = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            return Framing::Unfollowable;
        }
    }
    match (length, transfer_encoding) {
        (Some(_), Some(_)) => Framing::Ambiguous,
        (None, Some(te)) => {
            let last = te.rsplit(|&c| c == b',').next().unwrap_or_default();
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                Framing::Chunked
            } else {
                Framing::Unfollowable
            }
        }
        (Some(len), None) => std::str::from_utf8(len)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .map_or(Framing::Unfollowable, Framing::Length),
        (None, None) => Framing::Length(0),
    }
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
                // The client is done: whatever part of a head it sent goes to the parser, which
                // reports it incomplete.
                this.eof = true;
                let held = std::mem::take(&mut this.head);
                this.out.extend_from_slice(&held);
                continue;
            }
            this.follow(filled);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    /// A small response (head and body together within [`COALESCE_LIMIT`]) goes out as one
    /// plain write — one TLS record rather than one per piece — and a large one as it is,
    /// vectored, without copying its body.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let inner = &mut self.get_mut().inner;
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

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
        let stream: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\nGET /d HTTP/1.1\r\n\r\n";
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
    fn content_length_with_transfer_encoding_is_refused_in_either_order() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 0\r\n\r\n",
        ] {
            let (out, state) = through(&[b"GET /first HTTP/1.1\r\n\r\n", head, b"0\r\n\r\n"]);
            let mut expected = b"GET /first HTTP/1.1\r\n\r\n".to_vec();
            expected.extend_from_slice(REFUSED_HEAD);
            assert_eq!(out, expected, "{}", String::from_utf8_lossy(head));
            assert_eq!(state, State::Refused);
        }
    }

    #[test]
    fn a_smuggled_head_inside_a_body_is_not_taken_for_a_head() {
        // A body that looks like an ambiguous head is data, not a request.
        let body = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream =
            format!("POST /u HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        let (out, state) = through(&[&stream]);
        assert_eq!(out, stream);
        assert_eq!(state, State::Head);
    }

    #[test]
    fn what_cannot_be_followed_is_left_to_the_parser() {
        for stream in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ] {
            let (out, state) = through(&[stream]);
            assert_eq!(out, stream, "{}", String::from_utf8_lossy(stream));
            assert_eq!(state, State::Aside, "{}", String::from_utf8_lossy(stream));
        }
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
