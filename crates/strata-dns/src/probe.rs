//! Whether a DNS server answers, and what: what `strata status` asks of a `dns` role.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RData, RecordType};

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

/// Asks the server at `addr` for `name`'s A and AAAA records over UDP, waiting up to `timeout`
/// for each answer: the addresses it answers (empty for NXDOMAIN or NODATA), or `None` when it
/// does not answer or `name` is not a domain name. What `strata status` shows of a `dns`
/// role's answers.
pub fn resolve(addr: SocketAddr, name: &str, timeout: Duration) -> Option<Vec<IpAddr>> {
    let local = if addr.is_ipv6() {
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    };
    resolve_from(local, addr, name, timeout)
}

/// [`resolve`], asking from the local address `from` (on Linux any of 127.0.0.0/8): the
/// client a geo policy places by its source address.
pub fn resolve_from(
    from: IpAddr,
    addr: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Option<Vec<IpAddr>> {
    let name = Name::from_ascii(name).ok()?;
    let socket = UdpSocket::bind(SocketAddr::new(from, 0)).ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    let mut out = Vec::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        let mut query = Message::query();
        query.add_query(Query::query(name.clone(), rtype));
        let id = query.metadata.id;
        socket.send_to(&query.to_vec().ok()?, addr).ok()?;
        let mut buf = [0u8; 1232];
        let answer = loop {
            let (n, from) = socket.recv_from(&mut buf).ok()?;
            if from != addr {
                continue;
            }
            match Message::from_vec(&buf[..n]) {
                Ok(m) if m.metadata.id == id => break m,
                _ => continue,
            }
        };
        out.extend(answer.answers.iter().filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        }));
    }
    Some(out)
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

    #[test]
    fn resolve_returns_the_addresses_answered_for_a_and_aaaa() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("addr");
        let responder = std::thread::spawn(move || {
            for _ in 0..2 {
                let mut buf = [0u8; 512];
                let (n, from) = server.recv_from(&mut buf).expect("a query");
                let query = Message::from_vec(&buf[..n]).expect("a query");
                let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
                let q = query.queries[0].clone();
                if q.query_type() == RecordType::A {
                    for ip in [[127, 0, 0, 1], [127, 0, 10, 2]] {
                        answer.add_answer(hickory_proto::rr::Record::from_rdata(
                            q.name().clone(),
                            5,
                            RData::A(std::net::Ipv4Addr::from(ip).into()),
                        ));
                    }
                }
                answer.add_query(q);
                server
                    .send_to(&answer.to_vec().expect("encode"), from)
                    .expect("answer");
            }
        });
        let ips = resolve(addr, "www.strata.test.", Duration::from_secs(5)).expect("answers");
        assert_eq!(
            ips,
            [
                "127.0.0.1".parse::<IpAddr>().expect("ip"),
                "127.0.10.2".parse().expect("ip")
            ]
        );
        responder.join().expect("responder");
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let silent = silent.local_addr().expect("addr");
        assert_eq!(
            resolve(silent, "www.strata.test.", Duration::from_millis(200)),
            None
        );
    }
}
