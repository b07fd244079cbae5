//! A backend for upgrade tests, shared by the balancer's and the edge's (`#[path]`): a request
//! asking for an upgrade (`Upgrade: …`) is answered `101 Switching Protocols` with the same
//! protocol, and the connection then echoes bytes; any other request — and an upgrade asked on
//! [`DECLINED`] — gets a plain `200`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The path on which an upgrade is declined.
pub const DECLINED: &str = "/declined";

/// Starts the backend on a free loopback port.
pub async fn upgrading_echo() -> SocketAddr {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(
                    |mut req: hyper::Request<hyper::body::Incoming>| async move {
                        let empty = http_body_util::Empty::<bytes::Bytes>::new;
                        let asked = req.headers().get("upgrade").cloned();
                        let Some(asked) = asked.filter(|_| req.uri().path() != DECLINED) else {
                            return Ok::<_, std::convert::Infallible>(
                                hyper::Response::new(empty()),
                            );
                        };
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(up) = on.await {
                                let mut io = hyper_util::rt::TokioIo::new(up);
                                let mut buf = [0u8; 64];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        });
                        let mut r = hyper::Response::new(empty());
                        *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                        r.headers_mut().insert("upgrade", asked);
                        r.headers_mut().insert(
                            "connection",
                            hyper::header::HeaderValue::from_static("upgrade"),
                        );
                        Ok(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}
