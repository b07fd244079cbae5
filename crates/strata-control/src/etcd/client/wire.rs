//! What travels between Strata and etcd's JSON gateway: the requests and answers of
//! [`super::EtcdClient`] as Rust types, and their JSON — keys and values in base64, 64-bit
//! integers as strings, fields at their zero value left out, enums by name (`"MOD"`,
//! `"EQUAL"`). A separate file so that the client reads as its calls.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{EtcdError, Result};

/// One key and its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The revision that created it (0 for a key that does not exist).
    pub create_revision: i64,
    /// The revision of its last change.
    pub mod_revision: i64,
    /// Changes since it was created (1 after the first put).
    pub version: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// What a range read: the store's revision at the time, and the keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Range {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
}

/// A comparison's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a comparison looks at, and the value it compares with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Value(Vec<u8>),
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Lease(i64),
}

/// One condition of a transaction. A key that does not exist has every number 0, and no value
/// (a value comparison on it fails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CmpOp,
    pub target: Target,
}

impl Compare {
    pub fn new(key: impl Into<Vec<u8>>, op: CmpOp, target: Target) -> Self {
        Self {
            key: key.into(),
            op,
            target,
        }
    }

    pub(super) fn to_json(&self) -> Value {
        let op = match self.op {
            CmpOp::Equal => "EQUAL",
            CmpOp::Greater => "GREATER",
            CmpOp::Less => "LESS",
            CmpOp::NotEqual => "NOT_EQUAL",
        };
        let (target, field, value) = match &self.target {
            Target::Value(v) => ("VALUE", "value", json!(B64.encode(v))),
            Target::Version(n) => ("VERSION", "version", json!(n.to_string())),
            Target::CreateRevision(n) => ("CREATE", "create_revision", json!(n.to_string())),
            Target::ModRevision(n) => ("MOD", "mod_revision", json!(n.to_string())),
            Target::Lease(n) => ("LEASE", "lease", json!(n.to_string())),
        };
        json!({"key": B64.encode(&self.key), "target": target, "result": op, field: value})
    }
}

/// One request of a transaction's branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put a value, attached to a lease when there is one.
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<i64>,
    },
    /// Delete a key.
    Delete { key: Vec<u8> },
    /// Read a key.
    Get { key: Vec<u8> },
}

impl Op {
    pub(super) fn to_json(&self) -> Value {
        match self {
            Op::Put { key, value, lease } => {
                json!({"request_put": put_body(key, value, *lease)})
            }
            Op::Delete { key } => json!({"request_delete_range": {"key": B64.encode(key)}}),
            Op::Get { key } => json!({"request_range": {"key": B64.encode(key)}}),
        }
    }
}

pub(super) fn put_body(key: &[u8], value: &[u8], lease: Option<i64>) -> Value {
    let mut body = json!({"key": B64.encode(key), "value": B64.encode(value)});
    if let Some(lease) = lease {
        body["lease"] = json!(lease.to_string());
    }
    body
}

/// A transaction: if every comparison holds, the success branch runs, else the failure branch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

/// The answer to one request of the branch that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResponse {
    Put,
    Delete { deleted: i64 },
    Range(Vec<KeyValue>),
}

/// Which branch ran, at which revision, and its answers (in the order of its requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub revision: i64,
    pub responses: Vec<OpResponse>,
}

impl TxnResponse {
    /// The key read by the branch's `n`th request, when it was a read that found one.
    pub fn read(&self, n: usize) -> Option<&KeyValue> {
        match self.responses.get(n) {
            Some(OpResponse::Range(kvs)) => kvs.first(),
            _ => None,
        }
    }
}

/// A lease granted: its id and TTL in seconds (etcd may raise the TTL asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl: i64,
}

/// A member of the cluster. One added but not started yet has no name and no client URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub deleted: bool,
    pub kv: KeyValue,
}

pub(super) fn parse_watch_line(line: &[u8]) -> Result<Vec<Event>> {
    let raw: RawResult<RawWatch> =
        serde_json::from_slice(line).map_err(|e| EtcdError::Malformed(format!("watch: {e}")))?;
    let watch = match raw {
        RawResult::Result(w) => w,
        RawResult::Error(e) => return Err(e.refused()),
    };
    if watch.compact_revision > 0 {
        return Err(EtcdError::Refused {
            code: 11,
            message: format!(
                "the revisions watched were compacted (up to {})",
                watch.compact_revision
            ),
        });
    }
    if watch.canceled {
        return Err(EtcdError::Refused {
            code: 1,
            message: format!("the watch was canceled: {}", watch.cancel_reason),
        });
    }
    watch
        .events
        .into_iter()
        .map(|e| {
            Ok(Event {
                deleted: e.kind == "DELETE",
                kv: e.kv.map(RawKv::parse).transpose()?.unwrap_or_default(),
            })
        })
        .collect()
}

// The gateway's JSON, as it comes.

/// A 64-bit integer, written by the gateway as a string (or a number; absent is 0).
fn int<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

fn uint<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

fn unbase64(field: &str, text: &str) -> Result<Vec<u8>> {
    B64.decode(text)
        .map_err(|e| EtcdError::Malformed(format!("{field} is not base64: {e}")))
}

#[derive(Deserialize, Default)]
pub(super) struct RawHeader {
    #[serde(default, deserialize_with = "int")]
    pub(super) revision: i64,
}

#[derive(Deserialize)]
pub(super) struct RawHeaderOnly {
    #[serde(default)]
    pub(super) header: RawHeader,
}

#[derive(Deserialize)]
pub(super) struct RawKv {
    #[serde(default)]
    pub(super) key: String,
    #[serde(default)]
    pub(super) value: String,
    #[serde(default, deserialize_with = "int")]
    pub(super) create_revision: i64,
    #[serde(default, deserialize_with = "int")]
    pub(super) mod_revision: i64,
    #[serde(default, deserialize_with = "int")]
    pub(super) version: i64,
    #[serde(default, deserialize_with = "int")]
    pub(super) lease: i64,
}

impl RawKv {
    pub(super) fn parse(self) -> Result<KeyValue> {
        Ok(KeyValue {
            key: unbase64("a key", &self.key)?,
            value: unbase64("a value", &self.value)?,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct RawRange {
    #[serde(default)]
    pub(super) header: RawHeader,
    #[serde(default)]
    pub(super) kvs: Vec<RawKv>,
}

impl RawRange {
    pub(super) fn parse(self) -> Result<Range> {
        Ok(Range {
            revision: self.header.revision,
            kvs: self
                .kvs
                .into_iter()
                .map(RawKv::parse)
                .collect::<Result<_>>()?,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct RawDelete {
    #[serde(default, deserialize_with = "int")]
    pub(super) deleted: i64,
}

#[derive(Deserialize)]
pub(super) struct RawTxn {
    #[serde(default)]
    pub(super) header: RawHeader,
    #[serde(default)]
    pub(super) succeeded: bool,
    #[serde(default)]
    pub(super) responses: Vec<RawOpResponse>,
}

#[derive(Deserialize)]
pub(super) struct RawOpResponse {
    pub(super) response_range: Option<RawRange>,
    pub(super) response_put: Option<Value>,
    pub(super) response_delete_range: Option<RawDelete>,
}

impl RawTxn {
    pub(super) fn parse(self) -> Result<TxnResponse> {
        let responses = self
            .responses
            .into_iter()
            .map(
                |r| match (r.response_range, r.response_put, r.response_delete_range) {
                    (Some(range), _, _) => Ok(OpResponse::Range(range.parse()?.kvs)),
                    (_, Some(_), _) => Ok(OpResponse::Put),
                    (_, _, Some(d)) => Ok(OpResponse::Delete { deleted: d.deleted }),
                    _ => Err(EtcdError::Malformed(
                        "a transaction's answer of no kind".into(),
                    )),
                },
            )
            .collect::<Result<_>>()?;
        Ok(TxnResponse {
            succeeded: self.succeeded,
            revision: self.header.revision,
            responses,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct RawLease {
    #[serde(rename = "ID", default, deserialize_with = "int")]
    pub(super) id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int")]
    pub(super) ttl: i64,
}

/// A streaming endpoint's message.
#[derive(Deserialize)]
pub(super) enum RawResult<T> {
    #[serde(rename = "result")]
    Result(T),
    #[serde(rename = "error")]
    Error(RawError),
}

#[derive(Deserialize)]
pub(super) struct RawError {
    #[serde(default, alias = "grpc_code")]
    pub(super) code: i32,
    #[serde(default)]
    pub(super) message: String,
}

impl RawError {
    pub(super) fn refused(self) -> EtcdError {
        EtcdError::Refused {
            code: self.code,
            message: self.message,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct RawMembers {
    #[serde(default)]
    pub(super) members: Vec<RawMember>,
}

#[derive(Deserialize)]
pub(super) struct RawMemberAdd {
    pub(super) member: Option<RawMember>,
    #[serde(default)]
    pub(super) members: Vec<RawMember>,
}

#[derive(Deserialize)]
pub(super) struct RawMember {
    #[serde(rename = "ID", deserialize_with = "uint")]
    pub(super) id: u64,
    #[serde(default)]
    pub(super) name: String,
    #[serde(rename = "peerURLs", default)]
    pub(super) peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub(super) client_urls: Vec<String>,
}

impl RawMember {
    pub(super) fn parse(self) -> Result<Member> {
        Ok(Member {
            id: self.id,
            name: self.name,
            peer_urls: self.peer_urls,
            client_urls: self.client_urls,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct RawWatch {
    #[serde(default)]
    pub(super) events: Vec<RawEvent>,
    #[serde(default)]
    pub(super) canceled: bool,
    #[serde(default)]
    pub(super) cancel_reason: String,
    #[serde(default, deserialize_with = "int")]
    pub(super) compact_revision: i64,
}

#[derive(Deserialize)]
pub(super) struct RawEvent {
    #[serde(rename = "type", default)]
    pub(super) kind: String,
    pub(super) kv: Option<RawKv>,
}
