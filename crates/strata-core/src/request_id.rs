//! Request ids: what every tier accepts from a client in `X-Request-Id`, and how a missing one
//! is made. The balancer and the API servers use the same rules, so one id follows a request
//! through every log.

use std::sync::atomic::{AtomicU64, Ordering};

/// The longest id accepted from a client.
pub const MAX_LEN: usize = 128;

/// A client's id is kept when it is 1 to 128 bytes of printable ASCII; otherwise a new one is
/// generated (so ids can never inject spaces, newlines or control bytes into logs).
pub fn is_valid(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(u8::is_ascii_graphic)
}

/// A new id: nanoseconds since the Unix epoch, the process id and a counter, in hex. Unique
/// within a machine without coordination.
pub fn generate() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{nanos:016x}{:04x}{:08x}",
        std::process::id() & 0xffff,
        n & 0xffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct_and_bad_ones_are_refused() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(is_valid(a.as_bytes()));
        assert!(!is_valid(b""));
        assert!(!is_valid(b"has space"));
        assert!(!is_valid(&[b'a'; MAX_LEN + 1]));
        assert!(is_valid(&[b'a'; MAX_LEN]));
    }
}
