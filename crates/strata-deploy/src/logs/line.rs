//! What one log line says about itself: its time and level, read from a Strata role's JSON
//! line or, as well as a few patterns allow, from an engine's text line.
//!
//! Strata roles write tracing-subscriber's JSON lines:
//! `{"timestamp":"2026-11-30T03:50:01.123456Z","level":"INFO","message":"…","target":"…",
//! <event fields>,"spans":[{"name":"…",<span fields>}]}`. Their time and level are read from
//! that fixed prefix without a JSON parse (most lines are skipped by time or level, so this is
//! the hot path); anything else starting with `{` is parsed. Engine text lines are read for a
//! leading RFC 3339 time (PostgreSQL, RabbitMQ), a `ts=`/`time=` field (Prometheus), and a
//! level word (`level=warn`, `[error]`, `FATAL:`).

use std::fmt;
use std::str::FromStr;

use super::time::Timestamp;

/// A log level, ordered from the most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// A level word as roles and engines write it, any case: the five tracing levels and the
    /// engines' synonyms (`warning`, `notice`, PostgreSQL's `LOG`, `FATAL`, `PANIC`, `DEBUG1`…).
    pub fn from_word(word: &str) -> Option<Level> {
        let w = word.to_ascii_lowercase();
        Some(match w.as_str() {
            "trace" => Level::Trace,
            "debug" | "debug1" | "debug2" | "debug3" | "debug4" | "debug5" => Level::Debug,
            "info" | "log" | "notice" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" | "err" | "fatal" | "panic" | "crit" | "critical" | "alert" | "emerg" => {
                Level::Error
            }
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--level`: exactly the five tracing levels, any case.
impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Level, String> {
        match s.to_ascii_lowercase().as_str() {
            "trace" => Ok(Level::Trace),
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warn" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            _ => Err(format!(
                "unknown level {s:?}: use one of trace, debug, info, warn, error"
            )),
        }
    }
}

/// What a line states about itself; `None` where it says nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    pub time: Option<Timestamp>,
    pub level: Option<Level>,
    /// The line is a JSON object (a Strata role's line), so it may carry id fields.
    pub json: bool,
}

/// Reads the time and level a line states.
pub fn stamp(line: &str) -> Stamp {
    if line.starts_with('{') {
        if let Some(s) = tracing_prefix(line) {
            return s;
        }
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(line) {
            let time = map
                .get("timestamp")
                .and_then(|v| v.as_str())
                .and_then(whole_timestamp);
            let level = map
                .get("level")
                .and_then(|v| v.as_str())
                .and_then(Level::from_word);
            return Stamp {
                time,
                level,
                json: true,
            };
        }
    }
    text_stamp(line)
}

/// The fast path: `{"timestamp":"<rfc3339>","level":"<LEVEL>"`, exactly as tracing-subscriber
/// writes it.
fn tracing_prefix(line: &str) -> Option<Stamp> {
    let rest = line.strip_prefix("{\"timestamp\":\"")?;
    let (time, n) = Timestamp::parse_prefix(rest)?;
    let rest = rest[n..].strip_prefix("\",\"level\":\"")?;
    let end = rest.find('"')?;
    let level = Level::from_word(&rest[..end])?;
    Some(Stamp {
        time: Some(time),
        level: Some(level),
        json: true,
    })
}

fn whole_timestamp(s: &str) -> Option<Timestamp> {
    Timestamp::parse_prefix(s).and_then(|(t, n)| (n == s.len()).then_some(t))
}

/// How far into a text line its time and level are looked for.
const TEXT_HEAD: usize = 200;

fn text_stamp(line: &str) -> Stamp {
    let mut end = line.len().min(TEXT_HEAD);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let head = &line[..end];
    let time = Timestamp::parse_prefix(head).map(|(t, _)| t).or_else(|| {
        ["ts=", "time="].iter().find_map(|key| {
            let at = field_start(head, key)?;
            Timestamp::parse_prefix(head[at..].trim_start_matches('"')).map(|(t, _)| t)
        })
    });
    Stamp {
        time,
        level: text_level(head),
        json: false,
    }
}

/// Where the value of a logfmt `key=` starts, when `key` begins a word.
fn field_start(head: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = head[from..].find(key) {
        let at = from + i;
        if at == 0 || head.as_bytes()[at - 1] == b' ' {
            return Some(at + key.len());
        }
        from = at + key.len();
    }
    None
}

/// The first level word written as `level=W`, `[W]` or `W:` in the head of a text line.
fn text_level(head: &str) -> Option<Level> {
    if let Some(at) = field_start(head, "level=") {
        let value = head[at..].trim_start_matches('"');
        let word: String = value
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        if let Some(level) = Level::from_word(&word) {
            return Some(level);
        }
    }
    let bytes = head.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphabetic() || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let len = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        let word = &head[i..i + len];
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + len).copied();
        let bracketed = before == Some(b'[') && after == Some(b']');
        // `LOG:`/`ERROR:` are PostgreSQL's; upper case only, so prose ("error: …") in a
        // message is not taken for a level.
        let labelled = after == Some(b':') && word.bytes().all(|b| !b.is_ascii_lowercase());
        if (bracketed || labelled)
            && let Some(level) = Level::from_word(word)
        {
            return Some(level);
        }
        i += len;
    }
    None
}

/// Whether a JSON line carries `field` equal to `want`: at the top level, under `fields` (a
/// subscriber that does not flatten events), or in any entry of `spans`.
pub fn has_field(line: &str, field: &str, want: &str) -> bool {
    // Cheap test first: the value must occur in the line at all (as written, unless JSON
    // escapes it).
    if !want.contains(['"', '\\']) && !line.contains(want) {
        return false;
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    let is = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()) == Some(want);
    if is(map.get(field)) {
        return true;
    }
    if let Some(serde_json::Value::Object(fields)) = map.get("fields")
        && is(fields.get(field))
    {
        return true;
    }
    if let Some(serde_json::Value::Array(spans)) = map.get("spans") {
        return spans.iter().any(|s| is(s.get(field)));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<Timestamp> {
        Timestamp::parse_prefix(s).map(|(t, _)| t)
    }

    #[test]
    fn a_role_line_states_its_time_and_level_by_the_fast_path_or_the_parser() {
        let line = r#"{"timestamp":"2026-11-30T03:50:01.123456Z","level":"WARN","message":"slow","target":"strata_api"}"#;
        let want = Stamp {
            time: t("2026-11-30T03:50:01.123456Z"),
            level: Some(Level::Warn),
            json: true,
        };
        assert_eq!(tracing_prefix(line), Some(want));
        assert_eq!(stamp(line), want);
        // Another key order goes through the parser, with the same result.
        let reordered = r#"{"level":"warn","timestamp":"2026-11-30T03:50:01.123456Z"}"#;
        assert_eq!(tracing_prefix(reordered), None);
        assert_eq!(stamp(reordered), want);
        // A brace that is not JSON is text.
        assert!(!stamp("{not json").json);
    }

    #[test]
    fn engine_lines_state_their_time_and_level_where_their_format_allows() {
        let pg = "2026-11-30 03:50:01.123 UTC [4242] FATAL:  role \"x\" does not exist";
        assert_eq!(stamp(pg).time, t("2026-11-30T03:50:01.123Z"));
        assert_eq!(stamp(pg).level, Some(Level::Error));
        let rabbit = "2026-11-30 03:50:01.123456+00:00 [warning] <0.228.0> memory high";
        assert_eq!(stamp(rabbit).time, t("2026-11-30T03:50:01.123456Z"));
        assert_eq!(stamp(rabbit).level, Some(Level::Warn));
        let prom = "ts=2026-11-30T03:50:01.5Z caller=main.go:1 level=info msg=\"Server is ready\"";
        assert_eq!(stamp(prom).time, t("2026-11-30T03:50:01.5Z"));
        assert_eq!(stamp(prom).level, Some(Level::Info));
        let slog = "time=2026-11-30T03:50:01.5Z level=ERROR source=x.go:1 msg=oops";
        assert_eq!(stamp(slog).level, Some(Level::Error));
        let redis = "4242:M 30 Nov 2026 03:50:01.123 * Ready to accept connections tcp";
        assert_eq!(stamp(redis), Stamp::default());
        // Prose is not a level: lower-case "error:" in a sentence, "info" inside a word.
        assert_eq!(stamp("could not connect, error: refused").level, None);
        assert_eq!(stamp("misinformation").level, None);
    }

    #[test]
    fn levels_parse_in_any_case_and_a_bad_one_names_the_accepted_values() {
        assert_eq!("WARN".parse::<Level>(), Ok(Level::Warn));
        assert_eq!("error".parse::<Level>(), Ok(Level::Error));
        assert!(Level::Debug < Level::Info && Level::Warn < Level::Error);
        let err = "loud".parse::<Level>().expect_err("refused");
        assert!(err.contains("trace, debug, info, warn, error"), "{err}");
    }

    #[test]
    fn a_field_matches_at_the_top_level_or_in_any_span() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let top = format!(r#"{{"message":"m","trace_id":"{id}"}}"#);
        let span = format!(
            r#"{{"message":"m","spans":[{{"name":"a"}},{{"name":"b","trace_id":"{id}"}}]}}"#
        );
        let nested = format!(r#"{{"fields":{{"trace_id":"{id}"}}}}"#);
        let elsewhere = format!(r#"{{"message":"{id}","request_id":"{id}"}}"#);
        assert!(has_field(&top, "trace_id", id));
        assert!(has_field(&span, "trace_id", id));
        assert!(has_field(&nested, "trace_id", id));
        assert!(!has_field(&elsewhere, "trace_id", id));
        assert!(has_field(&elsewhere, "request_id", id));
        assert!(!has_field(&format!("text {id}"), "trace_id", id));
        assert!(has_field(r#"{"request_id":"a\"b"}"#, "request_id", "a\"b"));
    }

    /// A writer into a shared buffer, for a subscriber under test.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_written_as_roles_write_them_are_read_by_the_fast_path_with_their_ids() {
        // The subscriber as `strata_core::telemetry::init` builds it for a log file.
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", trace_id = %id);
            let _entered = span.enter();
            tracing::warn!(request_id = "r-1", "slow \"quoted\" request");
        });
        let bytes = buffer.0.lock().map(|b| b.clone()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let line = text.lines().next().unwrap_or_default();
        let s = tracing_prefix(line).unwrap_or_else(|| panic!("not the fast path: {line}"));
        assert_eq!(s.level, Some(Level::Warn), "{line}");
        assert!(s.time.is_some_and(|t| t <= Timestamp::now()), "{line}");
        assert!(has_field(line, "trace_id", id), "{line}");
        assert!(has_field(line, "request_id", "r-1"), "{line}");
    }
}
