//! Logging setup shared by every role.
//!
//! Logs go to stderr — stdout carries only the readiness line — as JSON when stderr is not a
//! terminal (a log file, a collector) and as compact text when a person is watching. The level
//! comes from `STRATA_LOG` (same syntax as `RUST_LOG`), default `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless (the second call does nothing).
pub fn init() {
    let filter = EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::io::stderr().is_terminal() {
        builder.compact().with_target(false).try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    };
}
