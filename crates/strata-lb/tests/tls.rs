//! TLS termination over real sockets: a rustls client against the balancer's TLS listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use strata_lb::tls::{self, CertFiles};
use strata_lb::{BackendSpec, LbConfig, LoadBalancer, TlsListen};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/who",
            get(|headers: axum::http::HeaderMap| async move {
                format!(
                    "proto={}",
                    headers
                        .get("x-forwarded-proto")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                )
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

struct Started {
    plain: SocketAddr,
    tls: SocketAddr,
}

async fn start(certs: Vec<tls::LoadedCert>, redirect_http: bool) -> Started {
    let specs = vec![BackendSpec {
        name: "a".into(),
        addr: backend().await,
        weight: 1,
    }];
    let mut config = LbConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        "127.0.0.1:0".parse().expect("addr"),
        specs,
    );
    config.tls = Some(TlsListen {
        listen: "127.0.0.1:0".parse().expect("addr"),
        config: tls::server_config(certs).expect("tls config"),
        redirect_http,
    });
    let lb = LoadBalancer::build(config).await.expect("bind");
    let started = Started {
        plain: lb.addr().expect("addr"),
        tls: lb.tls_addr().expect("tls addr"),
    };
    tokio::spawn(lb.run_until_stopped(std::future::pending()));
    started
}

fn client(trusted: &[&std::path::Path], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for path in trusted {
        for cert in CertificateDer::pem_file_iter(path).expect("pem") {
            roots.add(cert.expect("cert")).expect("root");
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn https_get(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> (String, Option<Vec<u8>>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let server_name = ServerName::try_from(name.to_string()).expect("name");
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .expect("handshake");
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    tls.write_all(
        format!("GET /who HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), alpn)
}

fn write_cert(dir: &std::path::Path, host: &str) -> CertFiles {
    let generated = rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("cert");
    let cert = dir.join(format!("{host}.pem"));
    let key = dir.join(format!("{host}.key"));
    std::fs::write(&cert, generated.cert.pem()).expect("write");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write");
    CertFiles {
        name: Some(host.into()),
        cert,
        key,
    }
}

#[tokio::test]
async fn https_requests_are_terminated_and_forwarded_with_proto_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("dev.pem");
    let lb = start(vec![tls::dev_cert(&pem).expect("dev cert")], false).await;
    let connector = client(&[&pem], &[b"http/1.1"]);
    let (answer, alpn) = https_get(&connector, lb.tls, "localhost").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("proto=https"), "{answer}");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let h2 = client(&[&pem], &[b"h2"]);
    let tcp = tokio::net::TcpStream::connect(lb.tls)
        .await
        .expect("connect");
    let tls_stream = h2
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    assert_eq!(
        tls_stream.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "HTTP/2 is offered by ALPN"
    );
}

#[tokio::test]
async fn sni_picks_the_certificate_of_the_requested_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write_cert(dir.path(), "a.test");
    let b = write_cert(dir.path(), "b.test");
    let certs = vec![tls::load(&a).expect("a"), tls::load(&b).expect("b")];
    let lb = start(certs, false).await;
    // Each client trusts only one host's certificate: the handshake succeeds only if the
    // balancer presented that host's certificate.
    for (files, host) in [(&a, "a.test"), (&b, "b.test")] {
        let (answer, _) = https_get(&client(&[&files.cert], &[b"http/1.1"]), lb.tls, host).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
}

#[tokio::test]
async fn a_broken_handshake_is_dropped_and_the_listener_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("dev.pem");
    let lb = start(vec![tls::dev_cert(&pem).expect("dev cert")], false).await;
    let mut raw = tokio::net::TcpStream::connect(lb.tls)
        .await
        .expect("connect");
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut out))
        .await
        .is_ok();
    assert!(closed, "plain HTTP on the TLS port is dropped");
    let (answer, _) = https_get(&client(&[&pem], &[b"http/1.1"]), lb.tls, "localhost").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn plain_http_can_be_redirected_to_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("dev.pem");
    let lb = start(vec![tls::dev_cert(&pem).expect("dev cert")], true).await;
    let mut s = tokio::net::TcpStream::connect(lb.plain)
        .await
        .expect("connect");
    s.write_all(b"GET /who?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 308"), "{answer}");
    assert!(
        answer.contains(&format!(
            "location: https://127.0.0.1:{}/who?x=1",
            lb.tls.port()
        )),
        "{answer}"
    );
    // The health path is passed on over plain HTTP: a checker in front (`strata dns`) sees
    // the backends' health, not a redirect.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = tokio::net::TcpStream::connect(lb.plain)
            .await
            .expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let answer = String::from_utf8_lossy(&out).to_ascii_lowercase();
        assert!(!answer.starts_with("http/1.1 308"), "{answer}");
        if answer.starts_with("http/1.1 200") {
            assert!(answer.ends_with("ok"), "{answer}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the health path answers 200: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
