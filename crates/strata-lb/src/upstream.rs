//! Keep-alive HTTP/1.1 connections to backends, one pool per worker thread.
//!
//! Built on hyper's connection-level client (`hyper::client::conn::http1`), not on a general
//! purpose client: a worker's requests and the connections that carry them live on one thread,
//! so the pool is a plain map behind an uncontended lock, keyed by backend address. A
//! connection goes back to the pool the moment its response body has been read to the end —
//! no task is spawned per request to watch for that — and is checked on the way out: one the
//! backend closed, or one not yet ready for a new request, is dropped, never waited on.
//!
//! A request that hyper hands back unsent (the pooled connection closed just before it was
//! written) is sent again on another connection, transparently: it certainly never reached
//! the backend.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle connections kept per backend and worker.
const MAX_IDLE_PER_BACKEND: usize = 256;

/// A request body on its way to a backend: bytes held in memory (replayable), or the client's
/// body streamed through once.
#[derive(Debug)]
pub enum OutBody {
    Full(Full<Bytes>),
    /// `fault` is raised when reading the client's body fails (a malformed chunk, a client
    /// that vanished mid-body): that failure is the client's, not the backend's.
    Streaming {
        inner: Incoming,
        fault: Arc<AtomicBool>,
    },
}

impl OutBody {
    pub fn full(bytes: Bytes) -> Self {
        Self::Full(Full::new(bytes))
    }
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            OutBody::Full(full) => Pin::new(full).poll_frame(cx).map_err(|e| match e {}),
            OutBody::Streaming { inner, fault } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    fault.store(true, Ordering::Release);
                    Poll::Ready(Some(Err(e.into())))
                }
                other => other.map_err(BoxError::from),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutBody::Full(full) => full.is_end_stream(),
            OutBody::Streaming { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutBody::Full(full) => full.size_hint(),
            OutBody::Streaming { inner, .. } => inner.size_hint(),
        }
    }
}

/// Why a request got no response from a backend.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened: the request certainly never reached the backend.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// hyper handed the request back without writing it.
    #[error("request not sent: {0}")]
    Unsent(hyper::Error),
    /// The exchange failed after the request (or part of it) may have been written.
    #[error("{0}")]
    Failed(hyper::Error),
}

impl SendError {
    /// True when the backend certainly never saw the request.
    pub fn never_sent(&self) -> bool {
        matches!(self, SendError::Connect(_) | SendError::Unsent(_))
    }
}

struct IdleConnection {
    sender: SendRequest<OutBody>,
    since: Instant,
}

type IdleMap = Mutex<HashMap<SocketAddr, VecDeque<IdleConnection>>>;
type IdleGuard<'a> = std::sync::MutexGuard<'a, HashMap<SocketAddr, VecDeque<IdleConnection>>>;

fn lock(idle: &IdleMap) -> IdleGuard<'_> {
    idle.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connects to `addr`, from `source` when one is set.
async fn connect_from(
    source: Option<std::net::IpAddr>,
    addr: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let Some(ip) = source else {
        return tokio::net::TcpStream::connect(addr).await;
    };
    let socket = match ip {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

/// A worker's connections to every backend.
#[derive(Clone)]
pub struct Upstream {
    idle: Arc<IdleMap>,
    builder: Arc<Builder>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// The local address to connect from (`None`: the system's choice).
    source: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("idle", &self.idle_count())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        source: Option<std::net::IpAddr>,
    ) -> Self {
        let mut builder = Builder::new();
        // A request is written with one send, not a vectored write: requests are mostly a head
        // alone, and body chunks are copied in behind it.
        builder.writev(false).max_buf_size(256 * 1024);
        Self {
            idle: Arc::default(),
            builder: Arc::new(builder),
            connect_timeout,
            idle_timeout,
            source,
        }
    }

    fn idle_map(&self) -> IdleGuard<'_> {
        lock(&self.idle)
    }

    /// Idle connections held, over every backend.
    pub fn idle_count(&self) -> usize {
        self.idle_map().values().map(VecDeque::len).sum()
    }

    /// The most recently used idle connection to `addr` that can take a request now.
    fn checkout(&self, addr: SocketAddr) -> Option<SendRequest<OutBody>> {
        let mut idle = self.idle_map();
        let queue = idle.get_mut(&addr)?;
        while let Some(conn) = queue.pop_back() {
            // Closed by the backend, or still finishing its last exchange: dropped (a busy
            // one closes once that exchange is done), never waited on.
            if conn.sender.is_ready() {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Puts a connection back, most recently used last. Expired ones are left to [`reap`].
    ///
    /// [`reap`]: Upstream::reap
    fn checkin(idle: &IdleMap, addr: SocketAddr, sender: SendRequest<OutBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(idle);
        let queue = idle.entry(addr).or_default();
        if queue.len() < MAX_IDLE_PER_BACKEND {
            queue.push_back(IdleConnection {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes connections idle for longer than the idle timeout. Run periodically.
    pub fn reap(&self) {
        let timeout = self.idle_timeout;
        let mut idle = self.idle_map();
        for queue in idle.values_mut() {
            queue.retain(|c| c.since.elapsed() < timeout && !c.sender.is_closed());
        }
        idle.retain(|_, q| !q.is_empty());
    }

    /// Drops every idle connection to `addr` (a backend removed or found dead).
    pub fn forget(&self, addr: SocketAddr) {
        self.idle_map().remove(&addr);
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<OutBody>, SendError> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, connect_from(self.source, addr)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(SendError::Connect(e)),
                Err(_) => {
                    return Err(SendError::Connect(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect timed out",
                    )));
                }
            };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(std::io::Error::other(e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "backend connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends `req` (origin-form URI, `Host` set) to the backend at `addr` over a pooled
    /// connection, or a new one.
    pub async fn send(
        &self,
        addr: SocketAddr,
        mut req: Request<OutBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        while let Some(mut sender) = self.checkout(addr) {
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.wrap(resp, sender, addr)),
                Err(mut e) => match e.take_message() {
                    // The connection closed before the request was written: another one.
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
        let mut sender = self.connect(addr).await?;
        match sender.try_send_request(req).await {
            Ok(resp) => Ok(self.wrap(resp, sender, addr)),
            Err(mut e) => {
                let unsent = e.take_message().is_some();
                let error = e.into_error();
                Err(if unsent {
                    SendError::Unsent(error)
                } else {
                    SendError::Failed(error)
                })
            }
        }
    }

    fn wrap(
        &self,
        resp: Response<Incoming>,
        sender: SendRequest<OutBody>,
        addr: SocketAddr,
    ) -> Response<PooledBody> {
        // An upgraded connection (101) belongs to its tunnel; it is never reused.
        let reusable = resp.status() != http::StatusCode::SWITCHING_PROTOCOLS;
        let (parts, inner) = resp.into_parts();
        let mut body = PooledBody {
            inner,
            release: reusable.then(|| Release {
                idle: self.idle.clone(),
                addr,
                sender,
            }),
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        Response::from_parts(parts, body)
    }
}

struct Release {
    idle: Arc<IdleMap>,
    addr: SocketAddr,
    sender: SendRequest<OutBody>,
}

/// A backend's response body. When it has been read to the end, its connection goes back to
/// the pool; dropped before that, the connection is closed (it is mid-message).
pub struct PooledBody {
    inner: Incoming,
    release: Option<Release>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").finish_non_exhaustive()
    }
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(r) = self.release.take() {
            Upstream::checkin(&r.idle, r.addr, r.sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.release = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
