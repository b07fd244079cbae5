//! The filters of `strata logs`, parsed at the command line into types that cannot hold a bad
//! value, and the one test a line passes or fails.
//!
//! The rule for lines that do not state a time or level (engine text, continuation lines) is
//! applied before a line gets here (see the reader): such a line carries the time and level
//! of the line before it in its file. A line whose time is still unknown is dropped by
//! `--since`, whose level is unknown by `--level`; only JSON lines carry `trace_id` and
//! `request_id`, so text lines are dropped by `--trace` and `--request`.

use std::fmt;
use std::str::FromStr;

use regex_automata::meta::Regex;

use super::line::{Level, Stamp, has_field};
use super::time::Timestamp;

/// The field name trace ids are logged under (W3C trace-context's trace id).
pub const TRACE_FIELD: &str = "trace_id";
/// The field name request ids are logged under (the `X-Request-Id` of the request).
pub const REQUEST_FIELD: &str = "request_id";

/// A W3C trace-context trace id: 32 lower-case hex digits, not all zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceId(String);

impl TraceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TraceId {
    type Err = String;

    fn from_str(s: &str) -> Result<TraceId, String> {
        let hex = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex || s.bytes().all(|b| b == b'0') {
            let hint = if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                " (lower case, not all zero)"
            } else {
                ""
            };
            return Err(format!(
                "{s:?} is not a trace id: a trace id is 32 lower-case hex digits{hint}, \
                 as in a traceparent header: 4bf92f3577b34da6a3ce929d0e0e4736"
            ));
        }
        Ok(TraceId(s.to_string()))
    }
}

/// A request id as every tier accepts it: 1 to 128 printable ASCII bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RequestId {
    type Err = String;

    fn from_str(s: &str) -> Result<RequestId, String> {
        if strata_core::request_id::is_valid(s.as_bytes()) {
            Ok(RequestId(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a request id: one is 1 to {} printable ASCII characters without \
                 spaces (the X-Request-Id response header)",
                strata_core::request_id::MAX_LEN
            ))
        }
    }
}

/// `--grep`: a regular expression (Rust `regex` syntax) searched for anywhere in the line.
#[derive(Clone)]
pub struct Grep {
    pattern: String,
    regex: Regex,
}

impl Grep {
    pub fn is_match(&self, line: &str) -> bool {
        self.regex.is_match(line)
    }
}

impl fmt::Debug for Grep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Grep").field(&self.pattern).finish()
    }
}

impl FromStr for Grep {
    type Err = String;

    fn from_str(s: &str) -> Result<Grep, String> {
        match Regex::new(s) {
            Ok(regex) => Ok(Grep {
                pattern: s.to_string(),
                regex,
            }),
            Err(e) => {
                let why = match e.syntax_error() {
                    Some(syntax) => syntax.to_string(),
                    None => e.to_string(),
                };
                Err(format!(
                    "not a regular expression: {why}\n(escape special characters with \\, as \
                     in `request\\(`)"
                ))
            }
        }
    }
}

/// Every filter of one `strata logs`; the default passes every line.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only lines at or after this instant.
    pub since: Option<Timestamp>,
    /// Only lines at this level or above.
    pub level: Option<Level>,
    pub grep: Option<Grep>,
    pub trace: Option<TraceId>,
    pub request: Option<RequestId>,
}

impl Filter {
    /// Whether `line`, with the time and level it carries (its own or inherited), is printed.
    /// The cheap tests run first.
    pub fn matches(&self, line: &str, stamp: &Stamp) -> bool {
        let has = |field, id: &str| stamp.json && has_field(line, field, id);
        self.since
            .is_none_or(|since| stamp.time.is_some_and(|t| t >= since))
            && self
                .level
                .is_none_or(|min| stamp.level.is_some_and(|l| l >= min))
            && self.grep.as_ref().is_none_or(|g| g.is_match(line))
            && self
                .trace
                .as_ref()
                .is_none_or(|id| has(TRACE_FIELD, id.as_str()))
            && self
                .request
                .as_ref()
                .is_none_or(|id| has(REQUEST_FIELD, id.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn at(s: &str) -> Timestamp {
        Timestamp::parse_prefix(s).map(|(t, _)| t).expect("a time")
    }

    fn stamp(time: Option<&str>, level: Option<Level>, json: bool) -> Stamp {
        Stamp {
            time: time.map(at),
            level,
            json,
        }
    }

    #[test]
    fn trace_ids_must_be_32_lower_case_hex_digits() {
        assert_eq!(ID.parse::<TraceId>().map(|t| t.0), Ok(ID.to_string()));
        for bad in [
            "",
            "4bf92f3577b34da6",
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "00000000000000000000000000000000",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "4bf92f3577b34da6a3ce929d0e0e47361",
        ] {
            let err = bad.parse::<TraceId>().expect_err("refused");
            assert!(err.contains("32 lower-case hex digits"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn request_ids_follow_the_tiers_rules_and_a_bad_regex_says_why() {
        assert!("0001-abc".parse::<RequestId>().is_ok());
        assert!("with space".parse::<RequestId>().is_err());
        assert!("".parse::<RequestId>().is_err());
        let err = "request(".parse::<Grep>().expect_err("refused");
        assert!(err.contains("unclosed group"), "{err}");
        assert!("GET /users/[0-9]+".parse::<Grep>().is_ok());
    }

    #[test]
    fn each_filter_drops_what_it_should_and_unknown_times_or_levels_fail_it() {
        let json = format!(r#"{{"message":"GET /users","spans":[{{"trace_id":"{ID}"}}]}}"#);
        let info = stamp(Some("2026-11-30T03:50:00Z"), Some(Level::Info), true);
        let all = Filter::default();
        assert!(all.matches(&json, &info));
        assert!(all.matches("engine text", &Stamp::default()));

        let since = Filter {
            since: Some(at("2026-11-30T03:50:00Z")),
            ..Filter::default()
        };
        assert!(since.matches(&json, &info));
        let earlier = stamp(Some("2026-11-30T03:49:59.999Z"), Some(Level::Info), true);
        assert!(!since.matches(&json, &earlier));
        assert!(!since.matches("engine text", &Stamp::default()));

        let warn = Filter {
            level: Some(Level::Warn),
            ..Filter::default()
        };
        assert!(!warn.matches(&json, &info));
        assert!(warn.matches(&json, &stamp(None, Some(Level::Error), true)));
        assert!(!warn.matches("engine text", &Stamp::default()));

        let grep = Filter {
            grep: Some("GET /users$|users\"".parse().expect("a regex")),
            ..Filter::default()
        };
        assert!(grep.matches(&json, &info));
        assert!(!grep.matches("POST /photos", &info));

        let trace = Filter {
            trace: Some(ID.parse().expect("an id")),
            ..Filter::default()
        };
        assert!(trace.matches(&json, &info));
        assert!(!trace.matches(&format!("text with {ID}"), &stamp(None, None, false)));
        let other = Filter {
            trace: Some("0af7651916cd43dd8448eb211c80319c".parse().expect("an id")),
            ..Filter::default()
        };
        assert!(!other.matches(&json, &info));

        let request = Filter {
            request: Some("r-1".parse().expect("an id")),
            ..Filter::default()
        };
        assert!(request.matches(r#"{"request_id":"r-1"}"#, &info));
        assert!(!request.matches(r#"{"request_id":"r-10"}"#, &info));
    }
}
