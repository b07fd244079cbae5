//! Role arguments as data: helpers for the structs that are both parsed from a command line
//! (clap) and rendered back to one (serde, by the orchestrator that starts the role).
//!
//! A value clap parses with `FromStr` is rendered with its `Display` form, which must be the
//! text `FromStr` accepts: `#[serde(serialize_with = "strata_core::args::display")]` on such a
//! field (or [`display_all`] on a list of them). The planner's tests parse every rendered
//! command line back and compare, so a value whose two forms disagree fails a test.

use std::fmt::Display;

use serde::Serializer;
use serde::ser::SerializeSeq as _;

/// Serializes a value as its `Display` text.
pub fn display<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Serializes an optional value as its `Display` text, or nothing.
pub fn display_opt<T: Display, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// Serializes a list as the `Display` text of each element.
pub fn display_all<T: Display, S: Serializer>(values: &[T], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(values.len()))?;
    for v in values {
        seq.serialize_element(&v.to_string())?;
    }
    seq.end()
}
