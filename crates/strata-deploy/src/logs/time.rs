//! Instants in log lines and in `--since`: RFC 3339 timestamps read without a date-time crate
//! (the forms tracing-subscriber and the engines write are few), and durations like `10m`.
//!
//! A [`Timestamp`] is nanoseconds since the Unix epoch, UTC, so lines of every role compare
//! directly. Timestamps without an offset are refused: a local time would order lines wrongly.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant: nanoseconds since 1970-01-01T00:00:00Z (±292 years around it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let nanos = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        };
        Timestamp(nanos)
    }

    pub fn from_unix_nanos(nanos: i64) -> Timestamp {
        Timestamp(nanos)
    }

    pub fn unix_nanos(self) -> i64 {
        self.0
    }

    /// This instant moved `d` into the past (saturating).
    pub fn minus(self, d: Duration) -> Timestamp {
        let d = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(d))
    }

    /// Reads `YYYY-MM-DD(T| )HH:MM:SS[.fraction](Z|±HH:MM|±HHMM| UTC)` at the start of `s`;
    /// returns the instant and how many bytes it took. `T`/`Z` may be lower case.
    pub fn parse_prefix(s: &str) -> Option<(Timestamp, usize)> {
        let b = s.as_bytes();
        let year = digits(b, 0, 4)?;
        let month = digits(b, 5, 2)?;
        let day = digits(b, 8, 2)?;
        let hour = digits(b, 11, 2)?;
        let minute = digits(b, 14, 2)?;
        let second = digits(b, 17, 2)?;
        if b.get(4) != Some(&b'-')
            || b.get(7) != Some(&b'-')
            || !matches!(b.get(10), Some(b'T' | b't' | b' '))
            || b.get(13) != Some(&b':')
            || b.get(16) != Some(&b':')
        {
            return None;
        }
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let mut at = 19;
        let mut nanos = 0i64;
        if b.get(at) == Some(&b'.') || b.get(at) == Some(&b',') {
            at += 1;
            let start = at;
            while at < b.len() && b[at].is_ascii_digit() {
                if at - start < 9 {
                    nanos = nanos * 10 + i64::from(b[at] - b'0');
                }
                at += 1;
            }
            let n = at - start;
            if n == 0 {
                return None;
            }
            for _ in n..9 {
                nanos *= 10;
            }
        }
        let offset_secs: i64 = match b.get(at) {
            Some(b'Z' | b'z') => {
                at += 1;
                0
            }
            Some(sign @ (b'+' | b'-')) => {
                let sign = if *sign == b'+' { 1 } else { -1 };
                let oh = digits(b, at + 1, 2)?;
                let (om, len) = if b.get(at + 3) == Some(&b':') {
                    (digits(b, at + 4, 2)?, 6)
                } else {
                    (digits(b, at + 3, 2)?, 5)
                };
                if oh > 23 || om > 59 {
                    return None;
                }
                at += len;
                sign * (oh * 3600 + om * 60)
            }
            Some(b' ') if b[at..].starts_with(b" UTC") || b[at..].starts_with(b" GMT") => {
                at += 4;
                0
            }
            _ => return None,
        };
        // Leap seconds (":60") count as the next second's start, which keeps the order.
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
        let total = secs.checked_mul(1_000_000_000)?.checked_add(nanos)?;
        Some((Timestamp(total), at))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with nanoseconds: `2026-11-30T03:50:01.123456789Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1_000_000_000);
        let nanos = self.0.rem_euclid(1_000_000_000);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}

/// `--since`: a duration back from now, or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    At(Timestamp),
}

impl Since {
    /// The instant this names, with `now` as the present.
    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            Since::Ago(d) => now.minus(d),
            Since::At(t) => t,
        }
    }
}

impl FromStr for Since {
    type Err = String;

    fn from_str(s: &str) -> Result<Since, String> {
        let s = s.trim();
        if let Some((t, len)) = Timestamp::parse_prefix(s)
            && len == s.len()
        {
            return Ok(Since::At(t));
        }
        parse_duration(s).map(Since::Ago).ok_or_else(|| {
            format!(
                "{s:?} is neither a duration nor an RFC 3339 time: use a number with a unit \
                 (s, m, h or d: `30s`, `10m`, `2h`, `1d`) or a time with its offset \
                 (`2026-11-30T03:50:00Z`)"
            )
        })
    }
}

/// `30s`, `10m`, `2h`, `1d` (also `ms`, and several parts: `1h30m`).
fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = rest.get(..n_len)?.parse().ok()?;
        rest = &rest[n_len..];
        let u_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..u_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return None,
        };
        rest = &rest[u_len..];
        total = total.checked_add(unit.checked_mul(u32::try_from(n).ok()?)?)?;
    }
    Some(total)
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let slice = b.get(at..at + n)?;
    slice.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        match Timestamp::parse_prefix(s) {
            Some((t, n)) if n == s.len() => t,
            other => panic!("{s:?} did not parse whole: {other:?}"),
        }
    }

    #[test]
    fn rfc3339_forms_written_by_roles_and_engines_read_as_the_same_instant() {
        let t = ts("2026-11-30T03:50:01.123456Z");
        assert_eq!(t.to_string(), "2026-11-30T03:50:01.123456000Z");
        assert_eq!(ts("2026-11-30 03:50:01.123456+00:00"), t);
        assert_eq!(ts("2026-11-30T05:50:01.123456+02:00"), t);
        assert_eq!(ts("2026-11-30T03:20:01.123456-0030"), t);
        assert_eq!(ts("2026-11-30 03:50:01.123456 UTC"), t);
        assert_eq!(ts("1970-01-01T00:00:00Z").unix_nanos(), 0);
        assert_eq!(
            ts("2000-03-01T00:00:00Z").unix_nanos(),
            951_868_800 * 1_000_000_000
        );
        assert_eq!(ts("1969-12-31T23:59:59.5Z").unix_nanos(), -500_000_000);
        assert_eq!(
            ts("2024-02-29T00:00:00Z").to_string(),
            "2024-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn times_without_an_offset_or_out_of_range_are_refused() {
        for bad in [
            "2026-11-30T03:50:01",
            "2026-11-30T03:50:01.Z",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-30T24:00:00Z",
            "2026/11/30T03:50:01Z",
            "26-11-30T03:50:01Z",
            "",
        ] {
            assert_eq!(Timestamp::parse_prefix(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn since_takes_durations_and_instants_and_explains_what_it_refused() {
        let now = ts("2026-11-30T12:00:00Z");
        let since = |s: &str| s.parse::<Since>().map(|s| s.resolve(now));
        assert_eq!(since("30s"), Ok(ts("2026-11-30T11:59:30Z")));
        assert_eq!(since("10m"), Ok(ts("2026-11-30T11:50:00Z")));
        assert_eq!(since("2h"), Ok(ts("2026-11-30T10:00:00Z")));
        assert_eq!(since("1d"), Ok(ts("2026-11-29T12:00:00Z")));
        assert_eq!(since("1h30m"), Ok(ts("2026-11-30T10:30:00Z")));
        assert_eq!(
            since("2026-11-30T03:00:00Z"),
            Ok(ts("2026-11-30T03:00:00Z"))
        );
        for bad in ["", "10", "m", "10 minutes", "-5m", "2026-11-30T03:00:00"] {
            let err = since(bad).expect_err("refused");
            assert!(err.contains("`10m`") && err.contains("RFC 3339"), "{err}");
        }
    }
}
