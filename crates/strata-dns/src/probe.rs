//! Whether a DNS server answers: what `strata status` asks of a `dns` role.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RecordType};

/// Sends a query for the root's SOA over UDP and waits up to `timeout` for a response with its
/// id, whatever its code: an authoritative server refuses the root, and that refusal is an
/// answer.
pub fn answers(addr: SocketAddr, timeout: Duration) -> bool {
    let mut query = Message::query();
    query.add_query(Query::query(Name::root(), RecordType::SOA));
    let id = query.metadata.id;
    let Ok(bytes) = query.to_vec() else {
        return false;
    };
    let local = if addr.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let Ok(socket) = UdpSocket::bind(local) else {
        return false;
    };
    if socket.set_read_timeout(Some(timeout)).is_err() || socket.send_to(&bytes, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 1232];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) if from == addr => Message::from_vec(&buf[..n]).is_ok_and(|answer| {
            answer.metadata.id == id && answer.metadata.message_type == MessageType::Response
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_answers_is_seen_and_silence_is_not() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("addr");
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).expect("a query");
            let query = Message::from_vec(&buf[..n]).expect("a query");
            let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
            answer.metadata.response_code = hickory_proto::op::ResponseCode::Refused;
            server
                .send_to(&answer.to_vec().expect("encode"), from)
                .expect("answer");
        });
        assert!(
            answers(addr, Duration::from_secs(5)),
            "a refusal is an answer"
        );
        responder.join().expect("responder");
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert!(!answers(
            silent.local_addr().expect("addr"),
            Duration::from_millis(200)
        ));
    }
}
