//! The fast path: the common query answered straight from its bytes into the response's, with
//! no `Message` decoded or encoded and, once an answering task is warm, nothing allocated.
//!
//! It takes exactly one shape of packet — the one resolvers send for a service name:
//!
//! - a header with QR clear, opcode QUERY, QDCOUNT 1, ANCOUNT and NSCOUNT 0, ARCOUNT 0 or 1;
//! - one question, its name in labels (no compression pointer) equal, ignoring ASCII case, to
//!   a service name, type A or AAAA, class IN;
//! - with ARCOUNT 1, an OPT record (root owner, version 0, no extended RCODE bits) holding no
//!   option or one valid ECS option (known family, source prefix within it, exactly the address
//!   octets that prefix needs, no bit set past it, scope 0);
//! - nothing after that.
//!
//! Its answer must hold at least one address and fit the transport's limit. Anything else —
//! any other name, type or class, another option, a malformed or suspicious byte, NODATA, a
//! response that would be truncated — returns `false` untouched, and the caller takes the
//! reference path ([`Responder::respond_reference`]), which decides every other case. Both
//! paths read the same policy code and health table, and a test holds the fast path's answers
//! equal to the reference path's (`tests/dns/fastpath.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::SeedableRng as _;
use rand::rngs::SmallRng;

use super::{MAX_UDP_PAYLOAD, PLAIN_UDP_PAYLOAD, Responder, Transport};
use crate::config::Policy;
use crate::policy::{self, OrderCache, Selection};

const MAX_NAME_LEN: usize = 255;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const OPTION_ECS: u16 = 8;
/// A compression pointer to offset 12: the question's name, right after the header.
const POINTER_TO_QUESTION: [u8; 2] = [0xc0, 0x0c];

/// What one answering task keeps from query to query: the geo orders it has computed, its
/// random source for shuffling, and a buffer for the addresses.
#[derive(Debug)]
pub struct Scratch {
    orders: OrderCache,
    rng: SmallRng,
    ips: Vec<IpAddr>,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            orders: OrderCache::default(),
            rng: SmallRng::from_rng(&mut rand::rng()),
            ips: Vec::new(),
        }
    }

    /// How many GeoIP records' orders it holds (tests and measurements).
    pub fn cached_orders(&self) -> usize {
        self.orders.len()
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// A query of the shape the fast path takes, as parsed.
struct FastQuery<'a> {
    id: u16,
    recursion_desired: bool,
    checking_disabled: bool,
    /// The question as sent (name, type, class): echoed byte for byte.
    question: &'a [u8],
    /// The question's name in wire form, root label included.
    name: &'a [u8],
    v6: bool,
    edns: Option<FastEdns<'a>>,
}

struct FastEdns<'a> {
    payload: u16,
    ecs: Option<Ecs<'a>>,
}

#[derive(Clone, Copy)]
struct Ecs<'a> {
    family: u16,
    source_prefix: u8,
    /// The address octets as sent: exactly those the source prefix needs.
    octets: &'a [u8],
    addr: IpAddr,
}

/// A bounded reader over a packet: every read is checked, none panics.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

/// The query, when `packet` has exactly the fast path's shape.
fn parse(packet: &[u8]) -> Option<FastQuery<'_>> {
    let mut c = Cursor {
        bytes: packet,
        at: 0,
    };
    let id = c.u16()?;
    let flags = c.u16()?;
    let [high, low] = flags.to_be_bytes();
    // QR clear (a query) and opcode 0 (QUERY); the other query flags do not change the answer.
    if high & 0xf8 != 0 {
        return None;
    }
    let counts = [c.u16()?, c.u16()?, c.u16()?, c.u16()?];
    let [1, 0, 0, additionals @ (0 | 1)] = counts else {
        return None;
    };
    let name_start = c.at;
    loop {
        let len = c.u8()?;
        if len == 0 {
            break;
        }
        // A compression pointer (or a reserved label type) goes the reference way.
        if len & 0xc0 != 0 {
            return None;
        }
        c.take(usize::from(len))?;
        if c.at - name_start > MAX_NAME_LEN {
            return None;
        }
    }
    let name = packet.get(name_start..c.at)?;
    let qtype = c.u16()?;
    if c.u16()? != CLASS_IN || !matches!(qtype, TYPE_A | TYPE_AAAA) {
        return None;
    }
    let question = packet.get(name_start..c.at)?;
    let edns = if additionals == 1 {
        Some(parse_opt(&mut c)?)
    } else {
        None
    };
    if !c.done() {
        return None;
    }
    Some(FastQuery {
        id,
        recursion_desired: high & 0x01 != 0,
        checking_disabled: low & 0x10 != 0,
        question,
        name,
        v6: qtype == TYPE_AAAA,
        edns,
    })
}

/// An OPT record with no option or one valid ECS option.
fn parse_opt<'a>(c: &mut Cursor<'a>) -> Option<FastEdns<'a>> {
    if c.u8()? != 0 || c.u16()? != TYPE_OPT {
        return None;
    }
    let payload = c.u16()?;
    let (extended_rcode, version) = (c.u8()?, c.u8()?);
    let _flags = c.u16()?;
    if extended_rcode != 0 || version != 0 {
        return None;
    }
    let rdata_len = c.u16()?;
    let mut options = Cursor {
        bytes: c.take(usize::from(rdata_len))?,
        at: 0,
    };
    if options.done() {
        return Some(FastEdns { payload, ecs: None });
    }
    if options.u16()? != OPTION_ECS {
        return None;
    }
    let len = options.u16()?;
    let mut body = Cursor {
        bytes: options.take(usize::from(len))?,
        at: 0,
    };
    if !options.done() {
        return None;
    }
    let family = body.u16()?;
    let source_prefix = body.u8()?;
    let scope_prefix = body.u8()?;
    let octets = body.bytes.get(body.at..)?;
    let width: u8 = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if scope_prefix != 0
        || source_prefix > width
        || octets.len() != usize::from(source_prefix.div_ceil(8))
    {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes.get_mut(..octets.len())?.copy_from_slice(octets);
    let addr = if family == 1 {
        let [a, b, c, d, ..] = bytes;
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    };
    let bits = match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    // Bits past the source prefix: FORMERR, which is the reference path's to give.
    if !super::mask(bits, width, source_prefix) {
        return None;
    }
    Some(FastEdns {
        payload,
        ecs: Some(Ecs {
            family,
            source_prefix,
            octets,
            addr,
        }),
    })
}

impl Responder {
    /// Answers `packet` on the fast path into `out` (cleared first) and returns `true`, or
    /// returns `false` when the packet or its answer is not of the fast path's shape: then the
    /// reference path must answer it.
    pub fn respond_fast(
        &self,
        packet: &[u8],
        source: IpAddr,
        transport: Transport,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> bool {
        self.try_fast(packet, source, transport, scratch, out)
            .is_some()
    }

    fn try_fast(
        &self,
        packet: &[u8],
        source: IpAddr,
        transport: Transport,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let q = parse(packet)?;
        self.service_wire
            .iter()
            .find(|s| s.eq_ignore_ascii_case(q.name))?;
        let ecs = q.edns.as_ref().and_then(|e| e.ecs);
        let (selection, scope) = self.choose(ecs.as_ref(), source, scratch);
        policy::addresses_into(
            &self.config,
            &self.health,
            selection,
            q.v6,
            &mut scratch.rng,
            &mut scratch.ips,
        );
        if scratch.ips.is_empty() {
            return None; // NODATA: the reference path's.
        }
        let limit = match (transport, &q.edns) {
            (Transport::Tcp, _) => usize::from(u16::MAX),
            (Transport::Udp, None) => usize::from(PLAIN_UDP_PAYLOAD),
            (Transport::Udp, Some(e)) => {
                usize::from(e.payload.clamp(PLAIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD))
            }
        };
        write(&q, &scratch.ips, self.config.ttl, scope, out)?;
        if out.len() > limit {
            return None; // Truncation: the reference path's.
        }
        self.note_all_down(selection);
        Some(())
    }

    /// The policy's data centre for this query and the ECS scope of the answer: what the
    /// reference path's `locate` and [`policy::select`] give, with the geo order taken from the
    /// task's cache.
    fn choose(
        &self,
        ecs: Option<&Ecs<'_>>,
        source: IpAddr,
        scratch: &mut Scratch,
    ) -> (Selection, u8) {
        let dcs = &self.config.datacentres;
        let configured = || policy::first_up(0..dcs.len(), &self.health);
        match self.config.policy {
            Policy::Failover => (
                policy::first_up(
                    policy::failover_order(self.health.preferred(), dcs.len()),
                    &self.health,
                ),
                0,
            ),
            Policy::Weighted => (
                policy::select(&self.config, &self.health, None, &mut scratch.rng),
                0,
            ),
            Policy::Geo => {
                let Some(geo) = &self.geo else {
                    return (configured(), 0);
                };
                let from_ecs = ecs.filter(|e| e.source_prefix > 0);
                let ip = from_ecs.map_or(source, |e| e.addr);
                let Some(placed) = geo.place(ip) else {
                    return (configured(), 0);
                };
                let scope = if from_ecs.is_some() {
                    placed.prefix_len
                } else {
                    0
                };
                let Some(record) = placed.record else {
                    return (configured(), scope);
                };
                let order = scratch.orders.order(record, || {
                    let location = geo.lookup(ip).and_then(|l| l.location);
                    policy::geo_order(dcs, location.as_ref())
                });
                (policy::first_up(order.iter().copied(), &self.health), scope)
            }
        }
    }
}

/// Writes the response: the header, the question as sent, one record per address (its owner
/// a pointer to the question's name), and the OPT record when the query had one, with the ECS
/// option echoed and its scope set. `None` only past the counts a header can carry.
fn write(q: &FastQuery<'_>, ips: &[IpAddr], ttl: u32, scope: u8, out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    out.extend_from_slice(&q.id.to_be_bytes());
    // QR, opcode QUERY, AA, RD as asked; CD as asked, RCODE NOERROR.
    out.push(0x80 | 0x04 | u8::from(q.recursion_desired));
    out.push(if q.checking_disabled { 0x10 } else { 0 });
    let answers = u16::try_from(ips.len()).ok()?;
    for count in [1, answers, 0, u16::from(q.edns.is_some())] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out.extend_from_slice(q.question);
    for ip in ips {
        out.extend_from_slice(&POINTER_TO_QUESTION);
        match ip {
            IpAddr::V4(a) => {
                out.extend_from_slice(&TYPE_A.to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.extend_from_slice(&TYPE_AAAA.to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&a.octets());
            }
        }
    }
    if let Some(edns) = &q.edns {
        out.push(0); // the root
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // extended RCODE, version 0, no flags
        match &edns.ecs {
            None => out.extend_from_slice(&0u16.to_be_bytes()),
            Some(ecs) => {
                let option_len = u16::try_from(4 + ecs.octets.len()).ok()?;
                out.extend_from_slice(&(option_len + 4).to_be_bytes());
                out.extend_from_slice(&OPTION_ECS.to_be_bytes());
                out.extend_from_slice(&option_len.to_be_bytes());
                out.extend_from_slice(&ecs.family.to_be_bytes());
                out.push(ecs.source_prefix);
                out.push(scope);
                out.extend_from_slice(ecs.octets);
            }
        }
    }
    Some(())
}
