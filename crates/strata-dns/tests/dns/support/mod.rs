//! What the DNS tests share: a running server on a free port, real HTTP health endpoints on
//! loopback addresses, a GeoIP database made for the test networks, and a client that speaks
//! DNS over real UDP and TCP sockets.

pub mod mmdb;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use strata_dns::config::DnsConfig;
use strata_dns::geoip::GeoDb;
use strata_dns::server::DnsServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// How long a test waits for one answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// A DNS server serving until dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The GeoIP database of the test networks, written to `dir`:
/// 127.1.0.0/16 → US east (Virginia), 127.2.0.0/16 → US west (California),
/// 10.1.0.0/16 → Ireland, 2001:db8::/32 → US west.
pub fn test_geoip(dir: &std::path::Path) -> PathBuf {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let db = mmdb::build(&[
        (ip("127.1.0.0"), 16, mmdb::city(39.0, -77.5, "US", "NA")),
        (ip("127.2.0.0"), 16, mmdb::city(37.4, -122.1, "US", "NA")),
        (ip("10.1.0.0"), 16, mmdb::city(53.3, -6.3, "IE", "EU")),
        (ip("2001:db8::"), 32, mmdb::city(37.4, -122.1, "US", "NA")),
    ]);
    let path = dir.join("test.mmdb");
    std::fs::write(&path, db).expect("write the test database");
    path
}

/// Starts a server of `config` (TOML) on 127.0.0.1, with the test GeoIP database when `geo`.
pub async fn start_dns(config: &str, geo: bool) -> TestDns {
    start_dns_on(config, geo, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts a server of `config` (TOML) on `listen`.
pub async fn start_dns_on(config: &str, geo: bool, listen: SocketAddr) -> TestDns {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = DnsConfig::parse(config).unwrap_or_else(|e| panic!("test config: {e}"));
    let geo = geo.then(|| GeoDb::open(&test_geoip(dir.path())).expect("open the test database"));
    let server = DnsServer::build(config, geo, listen)
        .await
        .expect("the server starts");
    let addr = server.addr();
    let task = tokio::spawn(server.run());
    TestDns {
        addr,
        task,
        _dir: dir,
    }
}

/// A real HTTP health endpoint on `ip` (a free port), answering 200 or 503 as told.
pub struct HealthEndpoint {
    pub addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HealthEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HealthEndpoint {
    pub async fn start(ip: &str) -> Self {
        let ip: IpAddr = ip.parse().expect("ip");
        let listener = TcpListener::bind((ip, 0))
            .await
            .expect("bind health endpoint");
        let addr = listener.local_addr().expect("addr");
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let ok = flag.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    let mut read = 0;
                    while read < buf.len() {
                        match stream.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                        if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let status = if ok {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            addr,
            healthy,
            task,
        }
    }

    pub fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::SeqCst);
    }
}

/// The smallest configuration: `www.strata.test.` answered by failover from one data centre,
/// `a`, with these balancers.
pub fn one_data_centre(balancers: &[SocketAddr]) -> String {
    let listed: Vec<String> = balancers.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "zone = \"strata.test.\"\nservices = [\"www\"]\npolicy = \"failover\"\n\
         [[datacenter]]\nname = \"a\"\nbalancers = [{}]\n",
        listed.join(", ")
    )
}

/// A query for `name` and `qtype`, without EDNS.
pub fn query(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    m
}

/// Adds EDNS with a payload size and, optionally, an ECS option (`net` as "10.1.0.0/16").
pub fn with_edns(mut m: Message, payload: u16, ecs: Option<&str>) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    if let Some(net) = ecs {
        let subnet: ClientSubnet = net.parse().expect("subnet");
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
    }
    m.set_edns(edns);
    m
}

/// Sends raw bytes over UDP from `from` and returns the first datagram back, if any arrives
/// within `wait`.
pub async fn udp_raw(
    server: SocketAddr,
    from: &str,
    bytes: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let from: IpAddr = from.parse().expect("ip");
    let socket = UdpSocket::bind((from, 0)).await.expect("bind client");
    socket.send_to(bytes, server).await.expect("send");
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Asks over UDP from `from`; returns the response and its size on the wire.
pub async fn udp_from(server: SocketAddr, from: &str, m: &Message) -> (Message, usize) {
    let bytes = m.to_vec().expect("encode");
    let answer = udp_raw(server, from, &bytes, ANSWER_WITHIN)
        .await
        .expect("an answer over UDP");
    let parsed = Message::from_vec(&answer).expect("a well-formed answer");
    assert_eq!(parsed.metadata.id, m.metadata.id, "the answer's id");
    (parsed, answer.len())
}

/// Asks over UDP from 127.0.0.1.
pub async fn udp(server: SocketAddr, m: &Message) -> Message {
    udp_from(server, "127.0.0.1", m).await.0
}

/// Asks over TCP; returns the response and its size.
pub async fn tcp(server: SocketAddr, m: &Message) -> (Message, usize) {
    let bytes = m.to_vec().expect("encode");
    let mut stream = tokio::time::timeout(ANSWER_WITHIN, TcpStream::connect(server))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.expect("write");
    let mut len = [0u8; 2];
    tokio::time::timeout(ANSWER_WITHIN, stream.read_exact(&mut len))
        .await
        .expect("an answer in time")
        .expect("read length");
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await.expect("read answer");
    let parsed = Message::from_vec(&answer).expect("a well-formed answer");
    assert_eq!(parsed.metadata.id, m.metadata.id);
    (parsed, answer.len())
}

/// The addresses in a response's answer section, sorted.
pub fn ips(m: &Message) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// The ECS option of a response, if any.
pub fn ecs(m: &Message) -> Option<ClientSubnet> {
    m.edns.as_ref().and_then(|e| {
        e.options().as_ref().iter().find_map(|(_, o)| match o {
            EdnsOption::Subnet(s) => Some(*s),
            _ => None,
        })
    })
}

/// Polls `check` every 20 ms until it holds or `within` passes; returns how long it took.
pub async fn eventually(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// IP from text.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}
