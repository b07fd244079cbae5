//! The modules of strata-api form no import circle: each one uses (through `crate::` paths, in
//! code or in doc links) only modules listed before it in [`LAYERS`], and none uses an item of
//! the crate root, which only assembles the modules.

use std::path::Path;

/// Every module, each after all those it uses.
const LAYERS: &[&str] = &[
    "hot_keys",
    "edge_purge",
    "problem",
    "request",
    "client",
    "keys",
    "auth",
    "observe",
    "state",
    "idempotency",
    "commit",
    "coherence",
    "credentials",
    "schema",
    "params",
    "responses",
    "users",
    "photos",
    "accounts",
    "sessions",
    "ops",
    "openapi",
    "server",
    "role",
];

/// The names right after each `crate::` in `text` (`crate::{a, b::c}` gives `a` and `b`).
fn crate_paths(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut used = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = group.split('}').next().unwrap_or_default();
                used.extend(group.split(',').map(ident).filter(|n| !n.is_empty()));
            }
            None => used.push(ident(rest)),
        }
    }
    used
}

#[test]
fn each_module_uses_only_modules_listed_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<String> = std::fs::read_dir(&src)
        .expect("src")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_owned))
        .filter(|n| n != "lib")
        .collect();
    files.sort();
    let mut listed: Vec<String> = LAYERS.iter().map(|m| m.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "every module file is placed in LAYERS");

    let mut faults = Vec::new();
    for (i, module) in LAYERS.iter().enumerate() {
        let text = std::fs::read_to_string(src.join(format!("{module}.rs"))).expect("read");
        for used in crate_paths(&text) {
            if used != *module && !LAYERS[..i].contains(&used.as_str()) {
                faults.push(format!("{module} uses crate::{used}"));
            }
        }
        // A top-level module's `super` is the crate root; only tests may glob their own module.
        let supers = text.matches("super::").count();
        let own_globs = text.matches("use super::*;").count();
        if supers != own_globs {
            faults.push(format!("{module} uses the crate root through super::"));
        }
    }
    assert!(
        faults.is_empty(),
        "modules must only use modules listed before them: {faults:#?}"
    );
}

#[test]
fn crate_paths_are_found_alone_and_in_groups() {
    assert_eq!(
        crate_paths("use crate::a::B;\nuse crate::{c, d::E};\n/// [`crate::f`]"),
        ["a", "c", "d", "f"]
    );
}
