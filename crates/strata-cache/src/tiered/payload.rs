//! The L2 payload inside a versioned record, apart from the read-through logic that uses it.

use bytes::{BufMut, Bytes, BytesMut};

use super::Entry;

/// The L2 payload inside a versioned record: `P`resent or `A`bsent, expiry (ms since the
/// epoch), load time (ms), body.
pub(super) fn encode_l2(entry: &Entry, expires_ms: u64, delta_ms: u32) -> Bytes {
    let body = entry.body.as_deref().unwrap_or_default();
    let mut out = BytesMut::with_capacity(13 + body.len());
    out.put_u8(if entry.body.is_some() { b'P' } else { b'A' });
    out.put_u64(expires_ms);
    out.put_u32(delta_ms);
    out.put_slice(body);
    out.freeze()
}

pub(super) fn decode_l2(version: u64, payload: &Bytes) -> Option<(Entry, u64, u32)> {
    let kind = *payload.first()?;
    let expires_ms = u64::from_be_bytes(payload.get(1..9)?.try_into().ok()?);
    let delta_ms = u32::from_be_bytes(payload.get(9..13)?.try_into().ok()?);
    let body = payload.slice(13..);
    let entry = match kind {
        b'P' => Entry::present(version, body),
        b'A' if body.is_empty() => Entry::absent(version),
        _ => return None,
    };
    Some((entry, expires_ms, delta_ms))
}
