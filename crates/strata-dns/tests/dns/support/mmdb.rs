//! A small MaxMind DB writer (format 2.0, https://maxmind.github.io/MaxMind-DB/), enough to
//! make a GeoLite2-City-shaped database for the loopback test networks: an IPv6 tree with
//! IPv4 at ::/96, 24-bit records, and a data section of maps, strings, doubles and integers.
//! No maintained Rust crate writes the format; a user supplies a real database.

use std::net::IpAddr;

/// A value in the data section.
#[derive(Debug, Clone)]
pub enum Value {
    Str(String),
    F64(f64),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
}

impl Value {
    pub fn map(pairs: Vec<(&str, Value)>) -> Self {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
    pub fn str(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

/// A GeoLite2-City-shaped record.
pub fn city(latitude: f64, longitude: f64, country: &str, continent: &str) -> Value {
    Value::map(vec![
        (
            "continent",
            Value::map(vec![("code", Value::str(continent))]),
        ),
        (
            "country",
            Value::map(vec![("iso_code", Value::str(country))]),
        ),
        (
            "location",
            Value::map(vec![
                ("latitude", Value::F64(latitude)),
                ("longitude", Value::F64(longitude)),
            ]),
        ),
    ])
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (size_bits, extra): (u8, Vec<u8>) = if size < 29 {
        (size as u8, vec![])
    } else if size < 29 + 256 {
        (29, vec![(size - 29) as u8])
    } else if size < 285 + 65_536 {
        let s = (size - 285) as u16;
        (30, s.to_be_bytes().to_vec())
    } else {
        let s = (size - 65_821) as u32;
        (31, s.to_be_bytes()[1..].to_vec())
    };
    if kind <= 7 {
        out.push((kind << 5) | size_bits);
    } else {
        out.push(size_bits);
        out.push(kind - 7);
    }
    out.extend(extra);
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::F64(f) => {
            control(out, 3, 8);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::U16(v) => {
            control(out, 5, 2);
            out.extend_from_slice(&v.to_be_bytes());
        }
        Value::U32(v) => {
            control(out, 6, 4);
            out.extend_from_slice(&v.to_be_bytes());
        }
        Value::U64(v) => {
            control(out, 9, 8);
            out.extend_from_slice(&v.to_be_bytes());
        }
        Value::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(&Value::Str(k.clone()), out);
                encode(v, out);
            }
        }
        Value::Array(items) => {
            control(out, 11, items.len());
            for v in items {
                encode(v, out);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

/// Builds a database mapping each network (`ip`, prefix length) to its record. Networks must
/// not overlap.
pub fn build(networks: &[(IpAddr, u8, Value)]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (ip, len, value) in networks {
        let offset = data.len();
        encode(value, &mut data);
        let (bits, len) = match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(*v4)), 96 + u32::from(*len)),
            IpAddr::V6(v6) => (u128::from(*v6), u32::from(*len)),
        };
        assert!(len > 0, "a network of prefix 0 is not supported");
        let mut node = 0;
        for i in 0..len {
            let bit = ((bits >> (127 - i)) & 1) as usize;
            if i == len - 1 {
                assert!(
                    matches!(nodes[node][bit], Rec::Empty),
                    "overlapping networks"
                );
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    Rec::Empty => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                    Rec::Data(_) => panic!("overlapping networks"),
                };
            }
        }
    }
    let node_count = nodes.len();
    let mut out = Vec::new();
    for pair in &nodes {
        for rec in pair {
            let v = match *rec {
                Rec::Empty => node_count,
                Rec::Node(n) => n,
                Rec::Data(off) => node_count + 16 + off,
            };
            assert!(v < 1 << 24, "the test database outgrew 24-bit records");
            out.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let metadata = Value::map(vec![
        ("binary_format_major_version", Value::U16(2)),
        ("binary_format_minor_version", Value::U16(0)),
        ("build_epoch", Value::U64(1_700_000_000)),
        ("database_type", Value::str("Strata-Test-City")),
        (
            "description",
            Value::map(vec![("en", Value::str("loopback test networks"))]),
        ),
        ("ip_version", Value::U16(6)),
        ("languages", Value::Array(vec![Value::str("en")])),
        ("node_count", Value::U32(node_count as u32)),
        ("record_size", Value::U16(24)),
    ]);
    encode(&metadata, &mut out);
    out
}
