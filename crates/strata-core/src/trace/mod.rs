//! Traces across tiers: W3C Trace Context (`traceparent`), the sampling decision, and the
//! spans each process keeps and exports.
//!
//! - [`TraceContext`]: parse a `traceparent` header strictly (a malformed one is ignored and a
//!   new trace starts; it is never propagated), start a trace, make a child span id, render
//!   the header for the next hop.
//! - [`Sampler`]: the head-based decision taken where a trace starts (the balancer, the edge,
//!   or an API server reached directly); a caller's decision (the `sampled` flag) is followed.
//! - [`layer`]: a `tracing` layer that turns the spans of sampled traces into records, kept
//!   in a bounded in-process [`store`] (recent and slowest traces, served at `/traces` by
//!   every role) and handed to the [`otlp`] exporter when a collector is configured.
//!
//! Spans join a trace through their fields: a span declaring `trace_id`, `span_id` and
//! (optionally) `parent_id` and `sampled` starts this process's part of the trace; spans
//! opened inside it belong to the same trace. Every log
//! line written inside such a span carries its `trace_id`, which is how `strata logs --trace`
//! joins the lines of one request across roles.

pub mod layer;
pub mod otlp;
pub mod store;

use std::fmt;

/// The header name (lower case, as HTTP/2 requires).
pub const TRACEPARENT: &str = "traceparent";

/// A 16-byte trace id; never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id; never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A fresh random id.
    pub fn random() -> Self {
        loop {
            let v: [u8; 16] = rand::random();
            if v != [0; 16] {
                return Self(v);
            }
        }
    }

    /// Parses 32 lower-case hex digits; `None` for anything else or for all zeros.
    pub fn parse(s: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        decode_hex(s.as_bytes(), &mut out)?;
        (out != [0; 16]).then_some(Self(out))
    }
}

impl SpanId {
    /// A fresh random id.
    pub fn random() -> Self {
        loop {
            let v: [u8; 8] = rand::random();
            if v != [0; 8] {
                return Self(v);
            }
        }
    }

    /// Parses 16 lower-case hex digits; `None` for anything else or for all zeros.
    pub fn parse(s: &str) -> Option<Self> {
        let mut out = [0u8; 8];
        decode_hex(s.as_bytes(), &mut out)?;
        (out != [0; 8]).then_some(Self(out))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// Where a request is in its trace: the trace, the span that sent it (or, once this process
/// has made its own span, that span), and whether the trace is recorded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl TraceContext {
    /// A new trace with a new root span.
    pub fn start(sampled: bool) -> Self {
        Self {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            sampled,
        }
    }

    /// The same trace, a new span id (this hop's span, child of `self.span_id`).
    pub fn child(&self) -> Self {
        Self {
            span_id: SpanId::random(),
            ..*self
        }
    }

    /// Parses a `traceparent` value by W3C Trace Context level 1: `version-traceid-parentid-flags`,
    /// lower-case hex, version `ff` invalid, version `00` exactly 55 characters, a later version
    /// at least 55 with a `-` after them; trace and parent ids not all zeros. Surrounding spaces
    /// and tabs are allowed. Anything else is `None`: the receiver starts a new trace.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let value = trim_ows(value);
        if value.len() < 55 {
            return None;
        }
        let mut version = [0u8; 1];
        decode_hex(&value[0..2], &mut version)?;
        match version[0] {
            0xff => return None,
            0x00 if value.len() != 55 => return None,
            0x00 => {}
            _ if value.len() > 55 && value[55] != b'-' => return None,
            _ => {}
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace = [0u8; 16];
        decode_hex(&value[3..35], &mut trace)?;
        let mut span = [0u8; 8];
        decode_hex(&value[36..52], &mut span)?;
        let mut flags = [0u8; 1];
        decode_hex(&value[53..55], &mut flags)?;
        if trace == [0; 16] || span == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id: TraceId(trace),
            span_id: SpanId(span),
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The `traceparent` value naming this context's span as the parent of the next hop.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }
}

/// Names this process in stored and exported traces (`api`, `lb`, `edge`, `worker`); the
/// first call wins.
pub fn set_service(name: &str) {
    let _ = SERVICE.set(Box::leak(name.to_owned().into_boxed_str()));
}

/// The name given to [`set_service`], `strata` before.
pub fn service() -> &'static str {
    SERVICE.get().copied().unwrap_or("strata")
}

static SERVICE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Runs `fut` with `ctx` as the [`current`] trace context (a request's, inside its server).
pub async fn scope<F: std::future::Future>(ctx: TraceContext, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// The trace context of the request being served by this task, if [`scope`] set one: what
/// work handed to another process (a queued job) carries as its `traceparent`.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// What a server does with a request: continue the caller's trace (a child of its span) when
/// `traceparent` is valid, else start a new one with `sampler`'s decision. Returns this hop's
/// context and the caller's span id (the parent), if any.
pub fn continue_or_start(
    traceparent: Option<&[u8]>,
    sampler: &Sampler,
) -> (TraceContext, Option<SpanId>) {
    match traceparent.and_then(TraceContext::parse) {
        Some(caller) => (caller.child(), Some(caller.span_id)),
        None => (TraceContext::start(sampler.sample()), None),
    }
}

/// Head-based sampling at a fixed rate.
#[derive(Clone, Copy, Debug)]
pub struct Sampler {
    /// Sample when a random u64 is below this (`u64::MAX` = always; 0 = never).
    threshold: u64,
    rate: f64,
}

impl Sampler {
    /// `rate` in [0, 1]: the share of new traces recorded.
    pub fn new(rate: f64) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&rate) || rate.is_nan() {
            return Err(format!(
                "a trace sampling rate is between 0 and 1 (0.01 records one trace in a hundred): got {rate}"
            ));
        }
        let threshold = if rate >= 1.0 {
            u64::MAX
        } else {
            (rate * u64::MAX as f64) as u64
        };
        Ok(Self { threshold, rate })
    }

    /// Never sample (still propagates ids, so logs join).
    pub const fn never() -> Self {
        Self {
            threshold: 0,
            rate: 0.0,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// One decision.
    pub fn sample(&self) -> bool {
        match self.threshold {
            0 => false,
            u64::MAX => true,
            t => rand::random::<u64>() < t,
        }
    }
}

impl Default for Sampler {
    /// One trace in a hundred.
    fn default() -> Self {
        Self::new(DEFAULT_SAMPLE_RATE).unwrap_or(Self::never())
    }
}

/// The default share of traces recorded where a trace starts.
pub const DEFAULT_SAMPLE_RATE: f64 = 0.01;

/// A sampling rate as a setting (`--trace-sample 0.01`): a number in [0, 1], checked when
/// parsed, so a value of this type always makes a [`Sampler`].
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct SampleRate(f64);

// Never NaN (refused when parsed), so equality is an equivalence.
impl Eq for SampleRate {}

impl SampleRate {
    pub fn new(rate: f64) -> Result<Self, String> {
        Sampler::new(rate).map(|_| Self(rate))
    }

    pub fn get(self) -> f64 {
        self.0
    }

    pub fn sampler(self) -> Sampler {
        Sampler::new(self.0).unwrap_or(Sampler::never())
    }
}

impl Default for SampleRate {
    fn default() -> Self {
        Self(DEFAULT_SAMPLE_RATE)
    }
}

impl std::str::FromStr for SampleRate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rate: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("expected a number between 0 and 1 (e.g. 0.01), got {s:?}"))?;
        Self::new(rate)
    }
}

impl fmt::Display for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for SampleRate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Lower-case hex only (W3C: upper case is invalid).
fn decode_hex(src: &[u8], out: &mut [u8]) -> Option<()> {
    if src.len() != out.len() * 2 {
        return None;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    for (i, pair) in src.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(())
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, b) in bytes.iter().enumerate() {
        buf[2 * i] = HEX[usize::from(b >> 4)];
        buf[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    f.write_str(std::str::from_utf8(&buf[..bytes.len() * 2]).map_err(|_| fmt::Error)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specification_example_parses_and_renders_back() {
        let ctx = TraceContext::parse(GOOD.as_bytes()).expect("valid");
        assert_eq!(ctx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id.to_string(), "00f067aa0ba902b7");
        assert!(ctx.sampled);
        assert_eq!(ctx.header(), GOOD);
        let spaced = format!(" \t{GOOD} ");
        assert_eq!(TraceContext::parse(spaced.as_bytes()), Some(ctx));
        let unsampled = GOOD.replace("-01", "-00");
        assert!(
            !TraceContext::parse(unsampled.as_bytes())
                .expect("valid")
                .sampled
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let bad = [
            "",
            "garbage",
            // upper case hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // all-zero trace id, all-zero parent id
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // version 00 with trailing data
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // a later version with trailing data not after a dash
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // wrong separators, short ids
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-\u{e9}",
        ];
        for b in bad {
            assert_eq!(TraceContext::parse(b.as_bytes()), None, "{b:?}");
        }
        // A later version's extra fields are allowed after a dash.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-anything";
        assert!(TraceContext::parse(future.as_bytes()).is_some());
    }

    #[test]
    fn a_request_continues_a_valid_trace_and_starts_one_otherwise() {
        let always = Sampler::new(1.0).expect("rate");
        let (ctx, parent) = continue_or_start(Some(GOOD.as_bytes()), &Sampler::never());
        assert_eq!(ctx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            parent.map(|p| p.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_ne!(
            ctx.span_id.to_string(),
            "00f067aa0ba902b7",
            "a new span for this hop"
        );
        assert!(ctx.sampled, "the caller's decision is followed");
        let (fresh, parent) = continue_or_start(Some(b"00-junk"), &always);
        assert_eq!(parent, None);
        assert!(fresh.sampled);
        assert_ne!(fresh.trace_id, ctx.trace_id);
        let (none, _) = continue_or_start(None, &Sampler::never());
        assert!(!none.sampled);
    }

    #[test]
    fn sampling_rates_are_checked_and_roughly_kept() {
        assert!(Sampler::new(1.5).is_err());
        assert!(Sampler::new(-0.1).is_err());
        assert!(Sampler::new(f64::NAN).is_err());
        let s = Sampler::new(0.25).expect("rate");
        let n = (0..20_000).filter(|_| s.sample()).count();
        assert!((4_000..6_000).contains(&n), "{n} of 20,000 at 25%");
        assert!((0..100).all(|_| !Sampler::never().sample()));
        let all = Sampler::new(1.0).expect("rate");
        assert!((0..100).all(|_| all.sample()));
    }

    #[test]
    fn a_sample_rate_setting_is_checked_when_parsed() {
        let r: SampleRate = "0.5".parse().expect("valid");
        assert_eq!(r.get(), 0.5);
        assert_eq!(r.to_string().parse::<SampleRate>(), Ok(r));
        for bad in ["2", "-1", "NaN", "lots", ""] {
            let e = bad.parse::<SampleRate>().expect_err(bad);
            assert!(e.contains("between 0 and 1"), "{e}");
        }
        assert_eq!(SampleRate::default().get(), DEFAULT_SAMPLE_RATE);
    }

    #[test]
    fn ids_render_as_lower_case_hex_and_parse_back() {
        let t = TraceId::random();
        assert_eq!(TraceId::parse(&t.to_string()), Some(t));
        let s = SpanId::random();
        assert_eq!(SpanId::parse(&s.to_string()), Some(s));
        assert_eq!(TraceId::parse(&"0".repeat(32)), None);
        assert_eq!(SpanId::parse("xyz"), None);
    }
}
