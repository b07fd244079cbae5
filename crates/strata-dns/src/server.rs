//! The sockets: one UDP socket and one TCP listener on the same loopback port, and the loops
//! that feed [`Responder`].
//!
//! UDP: [`UDP_WORKERS`] tasks share the socket and answer each datagram before reading the
//! next, so the work in flight is bounded by design (a query is answered from memory in
//! microseconds; nothing in it waits). Each task keeps its receive and send buffers and its
//! [`Scratch`] from datagram to datagram, so the fast path allocates nothing per query. TCP (RFC 7766): at most [`MAX_TCP_CONNECTIONS`]
//! connections (more are closed at once), each answering length-prefixed queries in turn
//! until the client closes it or stays idle for [`TCP_IDLE`]; a query must arrive whole
//! within [`TCP_READ`] once started, and each answer be taken within [`TCP_WRITE`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::answer::{Responder, Scratch, Transport};
use crate::config::DnsConfig;
use crate::geoip::GeoDb;
use crate::health::{Checker, HealthTable};

/// Tasks answering UDP.
pub const UDP_WORKERS: usize = 2;
/// TCP connections served at once.
pub const MAX_TCP_CONNECTIONS: usize = 128;
/// How long an open TCP connection may wait for its next query.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// How long one query may take to arrive once its length has.
pub const TCP_READ: Duration = Duration::from_secs(3);
/// How long a client may take to read one answer.
pub const TCP_WRITE: Duration = Duration::from_secs(3);

/// Tries at finding a port free for both UDP and TCP when asked for port 0.
const BIND_TRIES: usize = 20;

/// A server with its sockets bound and its first health checks done, not yet serving.
#[derive(Debug)]
pub struct DnsServer {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    addr: SocketAddr,
    responder: Arc<Responder>,
    checker: Checker,
}

impl DnsServer {
    /// Checks every balancer once, then binds `listen` (UDP and TCP, one port; port 0 picks
    /// one free for both).
    pub async fn build(
        config: DnsConfig,
        geo: Option<GeoDb>,
        listen: SocketAddr,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            listen.ip().is_loopback(),
            "--listen must be a loopback address: got {listen}"
        );
        let config = Arc::new(config);
        let health = Arc::new(HealthTable::all_up(&config.datacentres));
        let mut checker = Checker::new(health.clone(), config.health.clone(), &config.datacentres)
            .following(config.primary_file.clone(), &config.datacentres);
        checker.first_round().await;
        let (udp, tcp) = bind(listen).await?;
        let addr = udp.local_addr().context("cannot read the UDP address")?;
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let responder = Responder::new(config, health, geo.map(Arc::new), serial);
        Ok(Self {
            udp: Arc::new(udp),
            tcp,
            addr,
            responder: Arc::new(responder),
            checker,
        })
    }

    /// The address both sockets are bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves (and checks health) until the returned future is dropped. It returns only if a
    /// loop ended, which none does on its own: the role then exits with an error, to be
    /// restarted.
    pub async fn run(self) {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.checker.run());
        for _ in 0..UDP_WORKERS {
            tasks.spawn(serve_udp(self.udp.clone(), self.responder.clone()));
        }
        tasks.spawn(serve_tcp(self.tcp, self.responder));
        // The tasks run forever; the set aborts them all when this future is dropped.
        if let Some(ended) = tasks.join_next().await {
            tracing::error!(?ended, "a DNS server loop ended");
        }
    }
}

async fn bind(listen: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let tries = if listen.port() == 0 { BIND_TRIES } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = UdpSocket::bind(listen)
            .await
            .with_context(|| format!("cannot bind UDP {listen}"))?;
        let bound = udp.local_addr().context("cannot read the UDP address")?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::other("no try made"));
    Err(anyhow::Error::new(e).context(format!("cannot bind TCP on the UDP port of {listen}")))
}

/// Answers one packet into `out`, or `false` to send nothing; a panic while answering (a bug,
/// perhaps in a decoder fed hostile bytes) costs that packet only, not the loop that serves
/// every other client.
fn respond(
    responder: &Responder,
    packet: &[u8],
    peer: SocketAddr,
    transport: Transport,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> bool {
    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        responder.respond_into(packet, peer.ip(), transport, scratch, out)
    }));
    answer.unwrap_or_else(|_| {
        tracing::error!(%peer, len = packet.len(), "answering a packet panicked: dropped");
        false
    })
}

async fn serve_udp(socket: Arc<UdpSocket>, responder: Arc<Responder>) {
    let mut buf = vec![0u8; 65_536];
    let mut scratch = Scratch::new();
    let mut answer = Vec::with_capacity(usize::from(crate::answer::MAX_UDP_PAYLOAD));
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // ICMP errors from earlier sends surface here; the socket is still good.
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        let Some(packet) = buf.get(..len) else {
            continue;
        };
        if respond(
            &responder,
            packet,
            peer,
            Transport::Udp,
            &mut scratch,
            &mut answer,
        ) && let Err(e) = socket.send_to(&answer, peer).await
        {
            tracing::debug!(%peer, error = %e, "UDP send failed");
        }
    }
}

async fn serve_tcp(listener: TcpListener, responder: Arc<Responder>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many TCP connections: closing a new one");
            drop(stream);
            continue;
        };
        let responder = responder.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, peer, &responder).await {
                tracing::debug!(%peer, error = %e, "TCP connection ended");
            }
            drop(slot);
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    responder: &Responder,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 65_535];
    let mut scratch = Scratch::new();
    let mut answer = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        let len = usize::from(u16::from_be_bytes(len));
        let Some(packet) = buf.get_mut(..len) else {
            return Ok(());
        };
        if len == 0 {
            return Ok(());
        }
        tokio::time::timeout(TCP_READ, stream.read_exact(packet))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow query"))??;
        if !respond(
            responder,
            packet,
            peer,
            Transport::Tcp,
            &mut scratch,
            &mut answer,
        ) {
            // Nothing to say to a packet we drop: the connection is not a DNS client's.
            return Ok(());
        };
        let Ok(answer_len) = u16::try_from(answer.len()) else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&answer_len.to_be_bytes());
        framed.extend_from_slice(&answer);
        tokio::time::timeout(TCP_WRITE, stream.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow reader"))??;
    }
}
