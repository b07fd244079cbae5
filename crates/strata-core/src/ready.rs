//! The readiness protocol between a role process and whoever started it.
//!
//! A role binds all its listeners first (port 0 unless told otherwise), then prints exactly one
//! JSON line to stdout — `{"ready":true,"role":"api","addrs":{"http":"127.0.0.1:41234"}}` — and
//! only then serves. The orchestrator (`strata up`) and the test harness read that line with a
//! timeout; it is how port-0 addresses reach them without the bind-release-rebind race.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write;

use serde::{Deserialize, Serialize};

/// Exit status of a role process that could not bind its listening address because another
/// process holds it (1 is any other failure, 2 a command-line mistake). The supervisor turns it
/// into "port N is in use" rather than a generic crash.
pub const EXIT_ADDRESS_IN_USE: i32 = 3;

/// Whether an error, or any error in its chain of causes, is an I/O "address in use".
pub fn is_address_in_use(error: &(dyn Error + 'static)) -> bool {
    let mut next: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::AddrInUse
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The one line a role prints once it is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyLine {
    pub ready: bool,
    pub role: String,
    /// Listener name (`http`, `admin`, …) to `ip:port`.
    pub addrs: BTreeMap<String, String>,
}

impl ReadyLine {
    pub fn new(role: impl Into<String>) -> Self {
        Self {
            ready: true,
            role: role.into(),
            addrs: BTreeMap::new(),
        }
    }

    pub fn with_addr(mut self, name: impl Into<String>, addr: impl ToString) -> Self {
        self.addrs.insert(name.into(), addr.to_string());
        self
    }

    /// Prints the line to stdout and flushes it.
    pub fn announce(&self) -> std::io::Result<()> {
        let line = serde_json::to_string(self).map_err(std::io::Error::other)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()
    }

    /// Parses a line, returning `None` for anything that is not a readiness line.
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str::<Self>(line.trim())
            .ok()
            .filter(|r| r.ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen")]
    struct Wrapper(#[source] std::io::Error);

    #[test]
    fn an_address_in_use_is_found_anywhere_in_the_chain() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let e = std::net::TcpListener::bind(addr).expect_err("taken");
        assert!(is_address_in_use(&Wrapper(e)));
        let other = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no");
        assert!(!is_address_in_use(&Wrapper(other)));
    }

    #[test]
    fn a_ready_line_round_trips_and_other_lines_are_ignored() {
        let line = ReadyLine::new("api").with_addr("http", "127.0.0.1:4000");
        let text = serde_json::to_string(&line).expect("json");
        assert_eq!(
            text,
            r#"{"ready":true,"role":"api","addrs":{"http":"127.0.0.1:4000"}}"#
        );
        assert_eq!(ReadyLine::parse(&text), Some(line));
        assert_eq!(ReadyLine::parse("starting up"), None);
        assert_eq!(
            ReadyLine::parse(r#"{"ready":false,"role":"api","addrs":{}}"#),
            None
        );
    }
}
