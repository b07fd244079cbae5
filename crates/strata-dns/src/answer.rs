//! From one query's bytes to one response's bytes: the authoritative logic, with no sockets.
//!
//! - A packet shorter than a header, or that is itself a response, is dropped (no answer:
//!   answering responses would let two servers loop).
//! - A packet whose header parses but whose rest does not (a truncated question, a compression
//!   pointer loop, a broken OPT or ECS option) gets FORMERR, with its question when that much
//!   parses. A query with an invalid ECS option (address bits set past its source prefix, a
//!   prefix too long for its family) gets FORMERR too.
//! - From the header alone, before the rest is decoded: other opcodes get NOTIMP, and a
//!   question count other than one FORMERR.
//! - EDNS versions above 0: BADVERS. Classes other than IN, names outside the zone and zone
//!   transfers: REFUSED (without AA).
//! - In the zone: SOA and NS at the apex; A/AAAA (and ANY: both) for each service name, chosen
//!   per query by [`crate::policy`]; NODATA (NOERROR, no answer, the SOA in the authority
//!   section) for names that exist with other types, empty non-terminals included; NXDOMAIN
//!   with the SOA for names that do not exist. Every answer in the zone has AA set.
//! - Over UDP a response is at most 512 bytes, or the client's EDNS payload size capped at
//!   [`MAX_UDP_PAYLOAD`]; one that does not fit is sent without records and with TC set, so
//!   the client asks again over TCP, where it is answered in full.
//! - ECS (RFC 7871): the client's location is looked up from the option's address when it has
//!   a source prefix above 0, else from the packet's source address. A response to a query
//!   that carried ECS echoes the family, address and source prefix; its scope prefix is the
//!   prefix length of the GeoIP network that decided the answer, or 0 when the answer did not
//!   depend on the address (other policies, SOA/NS, NXDOMAIN, NODATA).
//!
//! Two paths make the response. The reference path decodes the query into a hickory-proto
//! `Message`, decides, and encodes the response: it handles every packet. The fast path
//! ([`fast`]) handles the common one — one A/AAAA question for a service name, with at most an
//! ECS option — from and into bytes, and hands anything else to the reference path.

mod fast;

pub use fast::Scratch;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable as _, BinDecoder};

use crate::config::{DnsConfig, Policy};
use crate::geoip::GeoDb;
use crate::health::HealthTable;
use crate::policy;

/// The largest UDP response, and the EDNS payload size this server advertises (the DNS
/// flag day 2020 value: no IP fragmentation on common paths).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// The UDP response limit without EDNS (RFC 1035).
pub const PLAIN_UDP_PAYLOAD: u16 = 512;

/// How a query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The zone's data and the live state answers are made from.
#[derive(Debug)]
pub struct Responder {
    config: Arc<DnsConfig>,
    health: Arc<HealthTable>,
    geo: Option<Arc<GeoDb>>,
    soa: Record,
    ns: Vec<Record>,
    /// Every name that exists in the zone: the apex, the services, in-zone nameservers, and
    /// the empty non-terminals between them and the apex.
    names: HashSet<Name>,
    /// Each service name in wire form, lower case (the fast path's match).
    service_wire: Vec<Vec<u8>>,
    /// Whether the last policy answer found no data centre healthy (logged on changes).
    all_down: AtomicBool,
}

/// What a query resolved to, before encoding.
struct Outcome {
    rcode: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    /// The ECS scope prefix, when the query carried ECS.
    scope: u8,
}

impl Outcome {
    fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            scope: 0,
        }
    }
}

impl Responder {
    pub fn new(
        config: Arc<DnsConfig>,
        health: Arc<HealthTable>,
        geo: Option<Arc<GeoDb>>,
        serial: u32,
    ) -> Self {
        let zone = config.zone.clone();
        let mname = config
            .nameservers
            .first()
            .cloned()
            .unwrap_or_else(|| zone.clone());
        let rname = Name::from_ascii("hostmaster")
            .and_then(|h| h.append_domain(&zone))
            .unwrap_or_else(|_| zone.clone());
        let soa = Record::from_rdata(
            zone.clone(),
            config.zone_ttl.min(config.negative_ttl),
            RData::SOA(SOA::new(
                mname,
                rname,
                serial,
                3600,
                600,
                86_400,
                config.negative_ttl,
            )),
        );
        let ns = config
            .nameservers
            .iter()
            .map(|n| Record::from_rdata(zone.clone(), config.zone_ttl, RData::NS(NS(n.clone()))))
            .collect();
        let mut names = HashSet::new();
        let in_zone = config
            .services
            .iter()
            .chain(config.nameservers.iter().filter(|n| zone.zone_of(n)));
        for name in in_zone {
            for labels in zone.num_labels()..=name.num_labels() {
                names.insert(name.trim_to(usize::from(labels)));
            }
        }
        names.insert(zone);
        let service_wire = config.services.iter().map(wire_lowercase).collect();
        Self {
            config,
            health,
            geo,
            soa,
            ns,
            names,
            service_wire,
            all_down: AtomicBool::new(false),
        }
    }

    /// The response to one packet from `source`, or `None` to drop it.
    pub fn respond(&self, packet: &[u8], source: IpAddr, transport: Transport) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.respond_into(packet, source, transport, &mut Scratch::new(), &mut out)
            .then_some(out)
    }

    /// The response to one packet from `source` into `out`, or `false` to drop it: the fast
    /// path when it takes the packet, else the reference path. An answering task keeps its
    /// `scratch` and `out` from packet to packet.
    pub fn respond_into(
        &self,
        packet: &[u8],
        source: IpAddr,
        transport: Transport,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> bool {
        if self.respond_fast(packet, source, transport, scratch, out) {
            return true;
        }
        match self.respond_reference(packet, source, transport) {
            Some(bytes) => {
                *out = bytes;
                true
            }
            None => false,
        }
    }

    /// The reference path: the response to any packet, through hickory-proto's `Message`.
    pub fn respond_reference(
        &self,
        packet: &[u8],
        source: IpAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let mut decoder = BinDecoder::new(packet);
        let header = Header::read(&mut decoder).ok()?;
        if header.metadata.message_type != MessageType::Query {
            return None;
        }
        // Decided from the header alone, before decoding the rest: a query's question count
        // also sizes the decoder's allocation, so a count of 65535 is never decoded.
        if header.metadata.op_code != OpCode::Query {
            return header_only(&header, ResponseCode::NotImp);
        }
        if header.counts.queries != 1 {
            return header_only(&header, ResponseCode::FormErr);
        }
        let request = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%source, error = %e, "malformed query: FORMERR");
                let mut response = Message::error_msg(
                    header.metadata.id,
                    header.metadata.op_code,
                    ResponseCode::FormErr,
                );
                response.metadata.recursion_desired = header.metadata.recursion_desired;
                if let Ok(q) = Query::read(&mut decoder) {
                    response.add_query(q);
                }
                return response.to_vec().ok();
            }
        };
        let response = self.answer(&request, source);
        self.encode(&request, response, transport)
    }

    fn answer(&self, request: &Message, source: IpAddr) -> Message {
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.checking_disabled = request.metadata.checking_disabled;
        response.add_queries(request.queries.iter().cloned());
        let ecs = match &request.edns {
            Some(edns) => {
                let mut reply = Edns::new();
                reply.set_max_payload(MAX_UDP_PAYLOAD);
                if edns.version() > 0 {
                    response.metadata.response_code = ResponseCode::BADVERS;
                    response.set_edns(reply);
                    return response;
                }
                response.set_edns(reply);
                match client_subnet(edns) {
                    Ok(ecs) => ecs,
                    Err(()) => {
                        response.metadata.response_code = ResponseCode::FormErr;
                        return response;
                    }
                }
            }
            None => None,
        };
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return response;
        };
        let outcome = self.resolve(query, source, ecs.as_ref());
        response.metadata.response_code = outcome.rcode;
        response.metadata.authoritative = outcome.authoritative;
        response.answers = outcome.answers;
        response.authorities = outcome.authorities;
        response.additionals = outcome.additionals;
        if let (Some(mut ecs), Some(edns)) = (ecs, response.edns.as_mut()) {
            ecs.set_scope_prefix(outcome.scope);
            edns.options_mut().insert(EdnsOption::Subnet(ecs));
        }
        response
    }

    fn resolve(&self, query: &Query, source: IpAddr, ecs: Option<&ClientSubnet>) -> Outcome {
        let name = query.name();
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN
            || !self.config.zone.zone_of(name)
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            return Outcome::refused();
        }
        let mut outcome = Outcome {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            scope: 0,
        };
        let apex = *name == self.config.zone;
        if apex && matches!(qtype, RecordType::SOA | RecordType::ANY) {
            outcome.answers.push(self.soa_answer());
        }
        if apex && matches!(qtype, RecordType::NS | RecordType::ANY) {
            outcome.answers.extend(self.ns.iter().cloned());
            outcome.additionals.extend(self.glue(None, true, true));
        }
        let wants = |t| qtype == t || qtype == RecordType::ANY;
        outcome.answers.extend(self.glue(
            Some(name),
            wants(RecordType::A),
            wants(RecordType::AAAA),
        ));
        if self.config.services.contains(name) && (wants(RecordType::A) || wants(RecordType::AAAA))
        {
            let (client, scope) = self.locate(source, ecs);
            outcome.scope = scope;
            let mut rng = rand::rng();
            let selection = policy::select(&self.config, &self.health, client.as_ref(), &mut rng);
            self.note_all_down(selection);
            for v6 in [false, true] {
                if !wants(if v6 { RecordType::AAAA } else { RecordType::A }) {
                    continue;
                }
                for ip in policy::addresses(&self.config, &self.health, selection, v6, &mut rng) {
                    let rdata = match ip {
                        IpAddr::V4(v4) => RData::A(A(v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                    };
                    outcome
                        .answers
                        .push(Record::from_rdata(name.clone(), self.config.ttl, rdata));
                }
            }
        }
        if outcome.answers.is_empty() {
            if !self.names.contains(name) {
                outcome.rcode = ResponseCode::NXDomain;
            }
            outcome.authorities.push(self.soa.clone());
        }
        outcome
    }

    /// Logs when answers start or stop finding no data centre healthy.
    fn note_all_down(&self, selection: policy::Selection) {
        // Read first: the common case (no change) then leaves the shared flag's cache line
        // alone.
        if self.all_down.load(Ordering::Relaxed) == selection.all_down
            || self.all_down.swap(selection.all_down, Ordering::Relaxed) == selection.all_down
        {
            return;
        }
        let dc = self.config.datacentres.get(selection.dc);
        let dc = dc.map_or("", |d| d.name.as_str());
        if selection.all_down {
            tracing::warn!(%dc, "no data centre is healthy: answering every balancer of the preferred one");
        } else {
            tracing::info!(%dc, "a data centre is healthy again");
        }
    }

    /// The glue records of `owner` (of every in-zone nameserver when `None`), by family.
    fn glue(&self, owner: Option<&Name>, v4: bool, v6: bool) -> Vec<Record> {
        let mut out = Vec::new();
        for (name, ips) in &self.config.glue {
            if owner.is_some_and(|o| o != name) {
                continue;
            }
            for ip in ips {
                let rdata = match *ip {
                    IpAddr::V4(a) if v4 => RData::A(A(a)),
                    IpAddr::V6(a) if v6 => RData::AAAA(AAAA(a)),
                    _ => continue,
                };
                out.push(Record::from_rdata(
                    name.clone(),
                    self.config.zone_ttl,
                    rdata,
                ));
            }
        }
        out
    }

    fn soa_answer(&self) -> Record {
        let mut soa = self.soa.clone();
        soa.ttl = self.config.zone_ttl;
        soa
    }

    /// The client's location for the geo policy, and the ECS scope of an answer made from it.
    fn locate(
        &self,
        source: IpAddr,
        ecs: Option<&ClientSubnet>,
    ) -> (Option<crate::geoip::Location>, u8) {
        if self.config.policy != Policy::Geo {
            return (None, 0);
        }
        let Some(geo) = &self.geo else {
            return (None, 0);
        };
        let from_ecs = ecs.filter(|e| e.source_prefix() > 0);
        let ip = from_ecs.map_or(source, ClientSubnet::addr);
        match geo.lookup(ip) {
            Some(found) => (
                found.location,
                if from_ecs.is_some() {
                    found.prefix_len
                } else {
                    0
                },
            ),
            None => (None, 0),
        }
    }

    /// Encodes a response within the transport's size limit.
    fn encode(
        &self,
        request: &Message,
        mut response: Message,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let limit = match (transport, &request.edns) {
            (Transport::Tcp, _) => usize::from(u16::MAX),
            (Transport::Udp, None) => usize::from(PLAIN_UDP_PAYLOAD),
            (Transport::Udp, Some(edns)) => {
                usize::from(edns.max_payload().clamp(PLAIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD))
            }
        };
        match response.to_vec() {
            Ok(bytes) if bytes.len() <= limit => return Some(bytes),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a response: SERVFAIL");
                response.answers.clear();
                response.authorities.clear();
                response.metadata.response_code = ResponseCode::ServFail;
                return response.to_vec().ok().filter(|b| b.len() <= limit);
            }
        }
        response.answers.clear();
        response.authorities.clear();
        response.additionals.clear();
        response.metadata.truncation = true;
        response.to_vec().ok().filter(|b| b.len() <= limit)
    }
}

/// `name` in wire form (length-prefixed labels, then the root), lower case.
fn wire_lowercase(name: &Name) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.iter() {
        out.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

/// A response of just a header: the query's id, opcode and RD, and `rcode`.
fn header_only(header: &Header, rcode: ResponseCode) -> Option<Vec<u8>> {
    let mut response = Message::error_msg(header.metadata.id, header.metadata.op_code, rcode);
    response.metadata.recursion_desired = header.metadata.recursion_desired;
    response.to_vec().ok()
}

/// The query's ECS option: none, one valid one, or `Err` (FORMERR) for several or an invalid
/// one (RFC 7871 §7.1.1).
fn client_subnet(edns: &Edns) -> Result<Option<ClientSubnet>, ()> {
    let all = edns.options().get_all(EdnsCode::Subnet);
    let ecs = match all.as_slice() {
        [] => return Ok(None),
        [EdnsOption::Subnet(ecs)] => *ecs,
        _ => return Err(()),
    };
    let prefix = ecs.source_prefix();
    let valid = match ecs.addr() {
        IpAddr::V4(a) => prefix <= 32 && mask(u128::from(u32::from(a)), 32, prefix),
        IpAddr::V6(a) => prefix <= 128 && mask(u128::from(a), 128, prefix),
    };
    if valid { Ok(Some(ecs)) } else { Err(()) }
}

/// Whether `bits` (an address of `width` bits) has no bit set past `prefix`.
fn mask(bits: u128, width: u8, prefix: u8) -> bool {
    let host_bits = u32::from(width - prefix.min(width));
    let host_mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    bits & host_mask == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_addresses_with_bits_past_the_prefix_are_invalid() {
        assert!(mask(0x0a01_0000, 32, 16));
        assert!(!mask(0x0a01_0001, 32, 16));
        assert!(mask(0, 32, 0));
        assert!(mask(u128::MAX, 128, 128));
        assert!(!mask(1, 128, 0));
    }
}
