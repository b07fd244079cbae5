//! The API against its own OpenAPI document, briefly: `bench/api_fuzz.py` runs schemathesis on
//! `/openapi.json` of a real `strata serve` — without credentials, then as an admin — and fails
//! on any 5xx, undocumented status or media type, response that breaks its schema, or
//! schema-valid request refused. The long run (more examples per operation) and its figures are
//! in BENCHMARKS.md; this one keeps a regression in the document or the server from landing.
//!
//! Needs python3 and schemathesis: `./scripts/test` installs it into `target/schemathesis-venv`
//! and names it in `STRATA_SCHEMATHESIS`; run alone, the script installs it there itself.

use std::path::Path;
use std::process::Command;

#[test]
fn the_api_answers_as_its_openapi_document_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("python3")
        .arg(root.join("bench/api_fuzz.py"))
        .args(["--bin", env!("CARGO_BIN_EXE_strata")])
        .args(["--seed", "3", "--max-examples", "8", "--max-time", "45"])
        .output()
        .expect("python3 runs bench/api_fuzz.py (install python3, or run ./scripts/test)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("verdict: nothing found"),
        "the fuzzer found the API and its document disagreeing (or could not run):\n{stdout}\n{stderr}"
    );
    // Every pass ran cases: a pass that tested nothing would prove nothing.
    let passes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("unauthenticated ") || l.starts_with("authenticated"))
        .collect();
    assert_eq!(passes.len(), 3, "{stdout}");
    for line in passes {
        let cases: u64 = line
            .split_whitespace()
            .rev()
            .nth(3)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        assert!(cases > 0, "a pass generated no cases: {line}");
    }
}
