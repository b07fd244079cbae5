//! `strata dns` as an operator runs it: the binary reads its configuration, checks the
//! balancer, announces its port, answers the service name with that balancer's address over
//! UDP, and stops on SIGTERM; a command line with mistakes is refused with every one listed.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A balancer's health endpoint: answers 200 to every request, until the test ends.
fn healthy_balancer() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    addr
}

#[test]
fn strata_dns_answers_with_the_healthy_balancer_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let balancer = healthy_balancer();
    let config = dir.path().join("dns.toml");
    std::fs::write(
        &config,
        format!(
            "zone = \"strata.test.\"\nservices = [\"www\"]\npolicy = \"failover\"\n\
             [[datacenter]]\nname = \"us-east\"\nbalancers = [\"{balancer}\"]\n"
        ),
    )
    .expect("write config");
    let mut child = Command::new(STRATA)
        .args(["dns", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run strata dns");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the readiness line");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    let addr: SocketAddr = ready["addrs"]["dns"]
        .as_str()
        .expect("the dns listener")
        .parse()
        .expect("ip:port");
    assert!(strata_dns::probe::answers(addr, Duration::from_secs(5)));

    let mut query = Message::query();
    query.add_query(Query::query(
        Name::from_ascii("www.strata.test.").expect("name"),
        RecordType::A,
    ));
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket
        .send_to(&query.to_vec().expect("encode"), addr)
        .expect("send");
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf).expect("an answer");
    let answer = Message::from_vec(&buf[..n]).expect("a DNS message");
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    let addresses: Vec<RData> = answer.answers.iter().map(|r| r.data.clone()).collect();
    assert_eq!(
        addresses,
        [RData::A(Ipv4Addr::LOCALHOST.into())],
        "the balancer's address"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = child.wait().expect("exit");
    assert!(status.success(), "stops cleanly: {status:?}");
}

#[test]
fn a_command_line_with_mistakes_is_refused_with_every_one_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(STRATA)
        .args(["dns", "--listen", "0.0.0.0:5353", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .expect("run strata dns");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must be a loopback address"), "{stderr}");
    assert!(stderr.contains("missing.toml"), "{stderr}");
}
