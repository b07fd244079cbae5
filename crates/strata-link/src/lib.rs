//! The network between data centres, emulated: `strata relay` listens on one address and
//! forwards every TCP connection to another, delivering each direction's bytes `--delay-ms`
//! after they arrived — a one-way latency, so a request and its answer cost twice the delay.
//!
//! Tier: the links between a topology's data centres (docs/datacenters.md). Depends on
//! `strata-core` only (readiness line, shutdown, logging).
//!
//! Guarantees: bytes arrive in order and unchanged, each no earlier than the delay after it was
//! read; an end of stream (FIN) is passed on after the same delay; a connection whose other side
//! fails or closes with an error is closed on both sides — once what was read from that side
//! before has been delivered, after its delay, as bytes on a wire still arrive after their
//! sender died. Memory is bounded: each direction
//! buffers at most [`MAX_CHUNKS_IN_FLIGHT`] reads of at most [`CHUNK`] bytes, after which the
//! relay stops reading from the sender (TCP back-pressure), so a slow receiver slows its sender
//! rather than growing the relay. Connecting to the target gives up after `--connect-timeout-ms`
//! and closes the client's connection.
//!
//! A new connection pays the TCP handshake's round trip too: the relay connects to the target
//! one delay after it accepted (the SYN's way there), and delivers the client's first bytes no
//! earlier than a connection made across the link could have sent them (after the SYN-ACK's
//! way back) plus their own way there. Not emulated: bandwidth limits, loss and jitter — those
//! need `tc netem` in network namespaces (root), which this crate does not do yet.
//!
//! **A cut link.** With `--cut-file PATH`, the link is cut while that file exists (checked every
//! [`CUT_POLL`]): no byte is delivered either way and no new connection reaches the target, as
//! across a network partition — the relay still accepts connections and reads what it may
//! buffer, then holds the senders back (TCP back-pressure), so nothing is refused or reset.
//! When the file is removed, what was held is delivered, in order, and held connections go on,
//! as TCP's retransmissions would after a partition heals. The file outlives the relay: one
//! restarted while it exists starts cut. `strata up` gives every relay on the link between two
//! data centres the same file, which `strata datacenter cut A B` / `heal A B` write and remove.
//! Each relay says when a cut is in force with a file of its own ([`cut_seen_path`]), which
//! `strata datacenter cut` waits for.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use strata_core::ready::ReadyLine;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The listener the role announces.
pub const LISTENER: &str = "relay";

/// The most bytes read at once from one side.
pub const CHUNK: usize = 16 * 1024;

/// The most reads buffered per direction (so at most 1 MiB each way per connection).
pub const MAX_CHUNKS_IN_FLIGHT: usize = 64;

/// How often a relay with a cut file looks for it.
pub const CUT_POLL: Duration = Duration::from_millis(50);

/// `strata relay …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct RelayArgs {
    /// Loopback address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Where every connection is forwarded to.
    #[arg(long)]
    pub to: SocketAddr,
    /// One-way delay of each direction, milliseconds (0 to 10000).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub delay_ms: u64,
    /// How long connecting to the target may take, milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub connect_timeout_ms: u64,
    /// The link is cut while this file exists: nothing is delivered either way until it is
    /// removed (set by `strata up`; `strata datacenter cut` writes it).
    #[arg(long)]
    pub cut_file: Option<std::path::PathBuf>,
    /// This role's name in its topology.
    #[arg(long, default_value = "relay")]
    pub name: String,
    /// Exit when standard input reaches end-of-file (set by `strata up`).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl RelayArgs {
    /// A relay to `to` with `delay_ms` each way, every other setting at its default.
    pub fn new(to: SocketAddr, delay_ms: u64) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            to,
            delay_ms,
            connect_timeout_ms: 2000,
            cut_file: None,
            name: "relay".into(),
            exit_on_stdin_eof: false,
        }
    }
}

/// A bound relay: [`Relay::addr`] is where it listens, [`Relay::run`] serves.
pub struct Relay {
    listener: TcpListener,
    to: SocketAddr,
    delay: Duration,
    connect_timeout: Duration,
    /// `true` while the link is cut.
    cut: watch::Receiver<bool>,
}

impl Relay {
    /// Binds `listen`.
    pub async fn bind(
        listen: SocketAddr,
        to: SocketAddr,
        delay: Duration,
        connect_timeout: Duration,
    ) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(listen).await?,
            to,
            delay,
            connect_timeout,
            cut: watch::channel(false).1,
        })
    }

    /// Cuts the link while `cut` holds `true`.
    pub fn cut_by(mut self, cut: watch::Receiver<bool>) -> Self {
        self.cut = cut;
        self
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Accepts and relays connections until dropped.
    pub async fn run(self) {
        loop {
            let (client, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (to, delay, timeout) = (self.to, self.delay, self.connect_timeout);
            let mut cut = self.cut.clone();
            let accepted = Instant::now();
            tokio::spawn(async move {
                // The SYN crosses the link before the target hears of the connection (once
                // the link is whole).
                tokio::time::sleep(delay).await;
                whole(&mut cut).await;
                let target = match tokio::time::timeout(timeout, TcpStream::connect(to)).await {
                    Ok(Ok(target)) => target,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, %to, error = %e, "cannot connect to the target");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, %to, "connecting to the target timed out");
                        return;
                    }
                };
                let _ = client.set_nodelay(true);
                let _ = target.set_nodelay(true);
                // Across the link, the client could send only once the SYN-ACK came back.
                relay(client, target, delay, accepted + 2 * delay, cut).await;
            });
        }
    }
}

/// Relays both directions of one connection until both have ended (or one failed); the
/// client's bytes count as sent no earlier than `client_may_send`.
async fn relay(
    client: TcpStream,
    target: TcpStream,
    delay: Duration,
    client_may_send: Instant,
    cut: watch::Receiver<bool>,
) {
    let (client_read, client_write) = client.into_split();
    let (target_read, target_write) = target.into_split();
    let up = direction(
        client_read,
        target_write,
        delay,
        client_may_send,
        cut.clone(),
    );
    let down = direction(target_read, client_write, delay, Instant::now(), cut);
    tokio::pin!(up, down);
    // An error on either side ends the connection — but not before the other direction has
    // delivered what it had already read: those bytes were on the wire when the side failed,
    // and the news of the failure (a reset) takes the link's delay to cross too. A direction
    // that reads nothing more (its side is alive and quiet) is dropped once that delay is over.
    let finish = delay + FAILURE_GRACE;
    tokio::select! {
        ok = &mut up => if ok {
            down.await;
        } else {
            let _ = tokio::time::timeout(finish, &mut down).await;
        },
        ok = &mut down => if ok {
            up.await;
        } else {
            let _ = tokio::time::timeout(finish, &mut up).await;
        },
    }
}

/// Beyond the link's delay, how long the surviving direction of a failed connection may take
/// to deliver what it had read.
const FAILURE_GRACE: Duration = Duration::from_millis(50);

/// One direction: reads from `from`, writes each chunk to `to` once `delay` has passed since it
/// was read (or since `not_before`, if later), then passes the end of stream on. `false`: a
/// side failed.
async fn direction(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    not_before: Instant,
    mut cut: watch::Receiver<bool>,
) -> bool {
    let due = move || Instant::now().max(not_before) + delay;
    // `None` is the end of stream, delivered after the delay like the bytes before it.
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(MAX_CHUNKS_IN_FLIGHT);
    let reader = async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            match from.read(&mut buf).await {
                Ok(0) => {
                    let _ = tx.send((due(), None)).await;
                    return true;
                }
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send((due(), Some(buf))).await.is_err() {
                        return false;
                    }
                }
                Err(_) => {
                    // What was read before the failure is on the wire: the writer delivers it
                    // (the channel closes with the sender), then the connection ends.
                    drop(tx);
                    return false;
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            whole(&mut cut).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return false;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    return true;
                }
            }
        }
        false
    };
    tokio::pin!(reader, writer);
    tokio::select! {
        ok = &mut reader => {
            let delivered = writer.await;
            ok && delivered
        }
        ok = &mut writer => ok,
    }
}

/// Returns once the link is whole (at once if it is not cut).
async fn whole(cut: &mut watch::Receiver<bool>) {
    // The watcher outlives every receiver, so the channel is closed only for a relay that was
    // never given a cut file: whole.
    let _ = cut.wait_for(|cut| !*cut).await;
}

/// Where relay `relay` says it has seen the link whose file is `cut_file` cut: a file that
/// exists while it holds the link cut (`strata datacenter cut` waits for it).
pub fn cut_seen_path(cut_file: &std::path::Path, relay: &str) -> std::path::PathBuf {
    let mut dir = cut_file.as_os_str().to_owned();
    dir.push(".seen");
    std::path::PathBuf::from(dir).join(relay)
}

/// Says (or stops saying) that `relay` holds its link cut. A failure is logged: the command
/// waiting for it gives up after its deadline and says which relay did not answer.
fn say_seen(cut_file: &std::path::Path, relay: &str, cut: bool) {
    let seen = cut_seen_path(cut_file, relay);
    let done = if cut {
        seen.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&seen, b"cut\n"))
    } else {
        match std::fs::remove_file(&seen) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    };
    if let Err(e) = done {
        tracing::warn!(error = %e, file = %seen.display(), "cannot say whether the link is held cut");
    }
}

/// Follows `file`: the channel holds `true` while it exists. The task ends with the receivers.
/// With `relay` (its name), it also says so in [`cut_seen_path`] once the change is in force.
pub fn watch_cut_file(file: std::path::PathBuf, relay: Option<String>) -> watch::Receiver<bool> {
    let cut_at_start = file.exists();
    if let Some(relay) = &relay {
        say_seen(&file, relay, cut_at_start);
    }
    let (tx, rx) = watch::channel(cut_at_start);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(CUT_POLL) => {}
                () = tx.closed() => return,
            }
            let cut = file.exists();
            tx.send_if_modified(|was| {
                let changed = *was != cut;
                if changed {
                    tracing::warn!(cut, file = %file.display(), "the link is {}", if cut { "cut" } else { "whole again" });
                }
                *was = cut;
                changed
            });
            // Said after the channel changed: every delivery from now on waits on it.
            if let Some(relay) = &relay
                && cut != cut_seen_path(&file, relay).exists()
            {
                say_seen(&file, relay, cut);
            }
        }
    });
    rx
}

/// Runs the relay role until SIGTERM, Ctrl-C or (with `--exit-on-stdin-eof`) its supervisor's
/// exit.
pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    strata_core::telemetry::init();
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "--listen must be a loopback address (127.0.0.0/8 or ::1): got {}",
            args.listen
        );
    }
    let relay = Relay::bind(
        args.listen,
        args.to,
        Duration::from_millis(args.delay_ms),
        Duration::from_millis(args.connect_timeout_ms),
    )
    .await
    .with_context(|| format!("cannot listen on {}", args.listen))?;
    let relay = match &args.cut_file {
        Some(file) => relay.cut_by(watch_cut_file(file.clone(), Some(args.name.clone()))),
        None => relay,
    };
    let addr = relay.addr();
    let stop = strata_core::shutdown::signal(args.exit_on_stdin_eof);
    ReadyLine::new(&args.name)
        .with_addr(LISTENER, addr)
        .announce()
        .context("cannot write the readiness line")?;
    tracing::info!(role = %args.name, %addr, to = %args.to, delay_ms = args.delay_ms, "relaying");
    tokio::select! {
        () = relay.run() => {}
        () = stop => {}
    }
    tracing::info!(role = %args.name, "relay stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn relay_to(to: SocketAddr, delay_ms: u64) -> SocketAddr {
        let relay = Relay::bind(
            "127.0.0.1:0".parse().expect("addr"),
            to,
            Duration::from_millis(delay_ms),
            Duration::from_millis(500),
        )
        .await
        .expect("bind");
        let addr = relay.addr();
        tokio::spawn(relay.run());
        addr
    }

    #[tokio::test]
    async fn a_round_trip_through_the_relay_costs_twice_the_delay_and_keeps_the_bytes() {
        let relay = relay_to(echo().await, 40).await;
        let mut s = TcpStream::connect(relay).await.expect("connect");
        // A new connection's first exchange pays the handshake's round trip as well.
        let start = std::time::Instant::now();
        s.write_all(b"hello").await.expect("write");
        let mut hello = [0u8; 5];
        s.read_exact(&mut hello).await.expect("read");
        let took = start.elapsed();
        assert_eq!(&hello, b"hello");
        assert!(
            took >= Duration::from_millis(160),
            "first exchange {took:?}"
        );
        assert!(
            took < Duration::from_millis(1500),
            "first exchange {took:?}"
        );
        for round in 0..3u8 {
            let sent: Vec<u8> = (0..100_000u32).map(|i| (i as u8) ^ round).collect();
            let start = std::time::Instant::now();
            let (mut r, mut w) = s.split();
            let write = async {
                w.write_all(&sent).await.expect("write");
            };
            let mut got = vec![0u8; sent.len()];
            let read = async {
                r.read_exact(&mut got).await.expect("read");
            };
            tokio::join!(write, read);
            let took = start.elapsed();
            assert_eq!(got, sent, "the bytes come back unchanged and in order");
            assert!(took >= Duration::from_millis(80), "round trip {took:?}");
            assert!(took < Duration::from_millis(1500), "round trip {took:?}");
        }
        // The end of stream is passed on: the echo server closes, and so does the relay.
        s.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest))
            .await
            .expect("closed within 2 s")
            .expect("read");
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_cut_link_delivers_nothing_and_connects_nothing_until_it_is_healed() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("cut");
        // An echo target that counts its connections.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = listener.local_addr().expect("addr");
        let (conn_tx, mut connections) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = conn_tx.send(());
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let relay = Relay::bind(
            "127.0.0.1:0".parse().expect("addr"),
            target,
            Duration::from_millis(5),
            Duration::from_millis(2000),
        )
        .await
        .expect("bind")
        .cut_by(watch_cut_file(file.clone(), Some("test-relay".into())));
        let addr = relay.addr();
        tokio::spawn(relay.run());

        let mut open = TcpStream::connect(addr).await.expect("connect");
        open.write_all(b"before").await.expect("write");
        let mut got = [0u8; 6];
        open.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"before");
        assert!(connections.recv().await.is_some());

        let seen = cut_seen_path(&file, "test-relay");
        assert!(!seen.exists(), "not cut yet");
        std::fs::write(&file, b"cut").expect("cut");
        // The relay says when the cut is in force.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !seen.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the relay never said it holds the link cut"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // An open connection: what it sends is held. A new one: accepted, never connected.
        open.write_all(b"during").await.expect("write");
        let mut late = TcpStream::connect(addr).await.expect("accepted while cut");
        late.write_all(b"late").await.expect("write");
        let mut one = [0u8; 1];
        let held = tokio::time::timeout(Duration::from_millis(500), open.read(&mut one)).await;
        assert!(held.is_err(), "nothing comes back while the link is cut");
        assert!(
            connections.try_recv().is_err(),
            "no new connection reaches the target while the link is cut"
        );

        std::fs::remove_file(&file).expect("heal");
        let mut got = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(5), open.read_exact(&mut got))
            .await
            .expect("delivered once healed")
            .expect("read");
        assert_eq!(&got, b"during", "what was held arrives, unchanged");
        let mut got = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), late.read_exact(&mut got))
            .await
            .expect("connected once healed")
            .expect("read");
        assert_eq!(&got, b"late");
        assert!(connections.recv().await.is_some());
        assert!(!seen.exists(), "healed: no longer said to be held cut");
    }

    /// A target that reads a 5-byte hello, sends its last bytes, then resets the connection
    /// (SO_LINGER 0): a process killed right after writing.
    async fn dying_target() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut hello = [0u8; 5];
                let _ = s.read_exact(&mut hello).await;
                let _ = s.write_all(b"last words").await;
                let _ = s.set_zero_linger();
                // Give the bytes time to reach the relay before the reset.
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(s);
            }
        });
        target
    }

    #[tokio::test]
    async fn what_a_side_sent_before_it_died_still_arrives_after_the_delay() {
        let target = dying_target().await;
        let relay = relay_to(target, 200).await;
        let mut s = TcpStream::connect(relay).await.expect("connect");
        s.write_all(b"hello").await.expect("write");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        assert_eq!(got, b"last words", "the bytes on the wire are delivered");
    }

    /// As above, but the other direction fails first: the client keeps sending (a replica's
    /// replies), so the relay's writes to the dead target fail before the target's last bytes
    /// are due. Those bytes are on the wire all the same, and arrive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_a_side_sent_before_it_died_arrives_when_the_other_direction_fails_first() {
        let target = dying_target().await;
        let relay = relay_to(target, 300).await;
        let s = TcpStream::connect(relay).await.expect("connect");
        let (mut read, mut write) = s.into_split();
        write.write_all(b"hello").await.expect("write");
        // The replies: every 5 ms, for at most 3 s or until the relay closes the connection.
        let sender = tokio::spawn(async move {
            for _ in 0..600 {
                if write.write_all(b"ack").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut got)).await;
        sender.abort();
        assert_eq!(got, b"last words", "the bytes on the wire are delivered");
    }

    #[tokio::test]
    async fn a_target_that_refuses_closes_the_client_connection() {
        let free = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let gone = free.local_addr().expect("addr");
        drop(free);
        let relay = relay_to(gone, 10).await;
        let mut s = TcpStream::connect(relay).await.expect("connect");
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("closed within 2 s")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
