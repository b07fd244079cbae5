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
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // The process id is asked once: it is a system call, and this runs on every request.
    let pid = *PID.get_or_init(std::process::id);
    let mut id = String::with_capacity(28);
    push_hex(&mut id, nanos, 16);
    push_hex(&mut id, u64::from(pid & 0xffff), 4);
    push_hex(&mut id, n & 0xffff_ffff, 8);
    id
}

/// Appends the low `digits` hex digits of `value`, zero-padded.
fn push_hex(out: &mut String, value: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(char::from(HEX[((value >> (i * 4)) & 0xf) as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct_and_bad_ones_are_refused() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(is_valid(a.as_bytes()));
        assert_eq!(a.len(), 28);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        let pid = format!("{:04x}", std::process::id() & 0xffff);
        assert_eq!(&a[16..20], pid, "the process id sits after the timestamp");
        let (na, nb) = (
            u64::from_str_radix(&a[20..], 16).expect("hex"),
            u64::from_str_radix(&b[20..], 16).expect("hex"),
        );
        assert!(nb > na, "the counter counts");
        assert!(!is_valid(b""));
        assert!(!is_valid(b"has space"));
        assert!(!is_valid(&[b'a'; MAX_LEN + 1]));
        assert!(is_valid(&[b'a'; MAX_LEN]));
    }
}
