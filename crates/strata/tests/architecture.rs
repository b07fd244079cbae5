//! The architecture, checked: which crate may depend on which (`docs/architecture.md` draws the
//! same map), no circular imports between the modules of a crate, every crate's top doc naming
//! its tier and what it depends on, a thin binary, and no source file past ~700 lines of
//! non-test code unless its top doc says why one concept needs it.
//!
//! These read the workspace's files; they build nothing. A change that breaks a rule fails
//! here with the rule and the place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    dir.canonicalize().unwrap_or(dir)
}

/// Each crate and the Strata crates it may depend on (normal dependencies; any crate may use
/// strata-testkit in its tests).
const ALLOWED: &[(&str, &[&str])] = &[
    ("strata-core", &[]),
    ("strata-engines", &[]),
    ("strata-store", &["strata-core"]),
    ("strata-cache", &["strata-core", "strata-engines"]),
    ("strata-lb", &["strata-core"]),
    ("strata-dns", &["strata-core"]),
    ("strata-link", &["strata-core"]),
    ("strata-edge", &["strata-core", "strata-lb"]),
    ("strata-queue", &["strata-core", "strata-engines"]),
    ("strata-blobs", &["strata-core", "strata-engines"]),
    (
        "strata-photos",
        &["strata-core", "strata-queue", "strata-blobs"],
    ),
    (
        "strata-api",
        &[
            "strata-core",
            "strata-store",
            "strata-cache",
            "strata-photos",
            "strata-blobs",
            "strata-queue",
        ],
    ),
    (
        "strata-control",
        &["strata-core", "strata-engines", "strata-store"],
    ),
    (
        "strata-bench",
        &[
            "strata-core",
            "strata-store",
            "strata-deploy",
            "strata-edge",
            "strata-engines",
            "strata-photos",
            "strata-queue",
        ],
    ),
    (
        "strata-deploy",
        &[
            "strata-core",
            "strata-engines",
            "strata-store",
            "strata-cache",
            "strata-lb",
            "strata-api",
            "strata-control",
            "strata-photos",
            "strata-queue",
            "strata-blobs",
            "strata-edge",
            "strata-dns",
            "strata-link",
            "strata-observe",
        ],
    ),
    ("strata-testkit", &["strata-engines"]),
    ("strata-observe", &["strata-core", "strata-engines"]),
    (
        "strata",
        &[
            "strata-core",
            "strata-engines",
            "strata-store",
            "strata-cache",
            "strata-lb",
            "strata-edge",
            "strata-api",
            "strata-control",
            "strata-bench",
            "strata-deploy",
            "strata-queue",
            "strata-photos",
            "strata-dns",
            "strata-observe",
        ],
    ),
];

/// The most lines of non-test code in one source file, unless its top doc says why.
const MAX_FILE_LINES: usize = 700;
/// What the top doc of a longer file must say.
const LONG_FILE_REASON: &str = "Why this file is long:";
/// The most lines of non-test code in the binary crate.
const MAX_BINARY_LINES: usize = 1000;

fn crates() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(workspace().join("crates"))
        .expect("crates/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists())
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            (name, p)
        })
        .collect();
    out.sort();
    out
}

/// The Strata crates named in one section (`[dependencies]`) of a Cargo.toml.
fn strata_deps(manifest: &str, section: &str) -> BTreeSet<String> {
    let mut inside = false;
    let mut deps = BTreeSet::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == section;
            continue;
        }
        if inside
            && let Some((name, _)) = line.split_once('=')
            && name.trim().starts_with("strata")
        {
            deps.insert(name.trim().to_string());
        }
    }
    deps
}

#[test]
fn every_crate_depends_only_on_the_crates_its_tier_allows() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(c, deps)| (*c, deps.iter().copied().collect()))
        .collect();
    let mut problems = Vec::new();
    for (name, dir) in crates() {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        let Some(may) = allowed.get(name.as_str()) else {
            problems.push(format!(
                "{name} is not in the dependency map: add it to ALLOWED here and to docs/architecture.md"
            ));
            continue;
        };
        for dep in strata_deps(&manifest, "[dependencies]") {
            if !may.contains(dep.as_str()) {
                problems.push(format!("{name} depends on {dep}, which its tier may not"));
            }
        }
        for dep in strata_deps(&manifest, "[dev-dependencies]") {
            if dep != "strata-testkit" && !may.contains(dep.as_str()) {
                problems.push(format!("{name}'s tests depend on {dep}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The text of a crate root's top doc comment (`//!` lines).
fn top_doc(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
        .map(|l| l.trim_start_matches("//!").trim())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_crate_says_its_tier_and_what_it_depends_on() {
    let mut problems = Vec::new();
    for (name, dir) in crates() {
        let root = ["src/lib.rs", "src/main.rs"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
            .expect("a crate root");
        let doc = top_doc(&std::fs::read_to_string(&root).expect("read"));
        if name == "strata" {
            // The binary composes every tier.
            if !doc.contains("composes") {
                problems.push(format!("{}: say what the binary composes", root.display()));
            }
            continue;
        }
        if !doc.contains("Tier:") {
            problems.push(format!("{}: the top doc names no `Tier:`", root.display()));
        }
        if !doc.contains("epends on") {
            problems.push(format!(
                "{}: the top doc does not say what the crate depends on",
                root.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The lines of a source file before its test module (`#[cfg(test)]` at the start of a line).
fn non_test_lines(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .count()
}

/// Whether a file holds only tests (`tests.rs` declared under `#[cfg(test)]`).
fn is_test_file(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()) == Some("tests.rs")
}

#[test]
fn no_source_file_is_long_without_saying_why_and_the_binary_stays_thin() {
    let mut problems = Vec::new();
    let mut binary = 0;
    for (name, dir) in crates() {
        for file in rust_files(&dir.join("src")) {
            if is_test_file(&file) {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("read");
            let lines = non_test_lines(&text);
            if name == "strata" {
                binary += lines;
            }
            if lines > MAX_FILE_LINES && !top_doc(&text).contains(LONG_FILE_REASON) {
                problems.push(format!(
                    "{}: {lines} lines of non-test code; split it, or say in its top doc \"{LONG_FILE_REASON} …\"",
                    file.display()
                ));
            }
        }
    }
    if binary >= MAX_BINARY_LINES {
        problems.push(format!(
            "the binary holds {binary} lines of non-test code (under {MAX_BINARY_LINES}): move logic to the crate of its tier"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A crate's modules by path (`plan`, `plan::api`), each with its source file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for file in rust_files(src) {
        if is_test_file(&file) {
            continue;
        }
        let rel = file.strip_prefix(src).expect("under src");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let last = parts.pop().unwrap_or_default();
        match last.as_str() {
            "lib.rs" | "main.rs" | "mod.rs" => {}
            other => parts.push(other.trim_end_matches(".rs").to_string()),
        }
        out.insert(parts.join("::"), file);
    }
    out
}

/// The module paths a piece of code names through `crate::…` and `super::…` paths (grouped
/// imports included), resolved against the crate's modules from the module `at`. An item path
/// resolves to the module that holds it.
fn references(code: &str, at: &str, known: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let parent = |m: &str| {
        m.rsplit_once("::")
            .map_or(String::new(), |(p, _)| p.to_string())
    };
    for (prefix, base) in [("crate::", String::new()), ("super::", parent(at))] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for path in expand(rest) {
                let mut target = base.clone();
                for segment in path.split("::") {
                    let candidate = if target.is_empty() {
                        segment.to_string()
                    } else {
                        format!("{target}::{segment}")
                    };
                    if known.contains_key(&candidate) {
                        target = candidate;
                    } else {
                        break;
                    }
                }
                out.insert(target);
            }
        }
    }
    out
}

/// The paths that follow `crate::` at the start of `text`: one (`a::b::C`) or, for a group
/// (`{a::B, c::{D, E}}`), each member.
fn expand(text: &str) -> Vec<String> {
    let ident = |s: &str| {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect::<String>()
    };
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 1;
        let mut end = group.len();
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = &group[..end];
        let mut members = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    members.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        members.push(&inner[start..]);
        return members
            .into_iter()
            .map(|m| ident(m.trim()).trim_end_matches(':').to_string())
            .filter(|m| !m.is_empty() && m != "self")
            .collect();
    }
    let path = ident(text);
    let path = path.trim_end_matches(':');
    // `crate::a::{b, c}`: the group's parent module.
    vec![path.to_string()]
}

/// The code of a file without comments and without its test module.
fn code_of(text: &str) -> String {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Cycles among sibling modules: for each edge a → b, the children of their closest common
/// parent that contain them depend one on the other. (A module using its parent's items, and
/// the parent calling its children, is how Rust modules nest: not counted.)
fn sibling_cycles(src: &Path) -> Vec<String> {
    let known = modules(src);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let split = |m: &str| -> Vec<String> {
        if m.is_empty() {
            Vec::new()
        } else {
            m.split("::").map(str::to_string).collect()
        }
    };
    for (module, file) in &known {
        let text = std::fs::read_to_string(file).expect("read");
        for target in references(&code_of(&text), module, &known) {
            let (a, b) = (split(module), split(&target));
            let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            if common < a.len() && common < b.len() {
                let from = a[..=common].join("::");
                let to = b[..=common].join("::");
                graph.entry(from).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a cycle through each node.
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(start.clone());
                    cycles.push(cycle.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    cycles.sort();
    cycles.dedup();
    cycles
}

#[test]
fn no_crate_has_circular_imports_between_its_modules() {
    let mut problems = Vec::new();
    for (name, dir) in crates() {
        for cycle in sibling_cycles(&dir.join("src")) {
            problems.push(format!("{name}: {cycle}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_cycle_finder_finds_a_cycle_through_grouped_imports_and_ignores_parents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("plan")).expect("mkdir");
    let files = [
        (
            "lib.rs",
            "pub mod a;\npub mod b;\npub mod plan;\npub struct Root;\n",
        ),
        ("a.rs", "use crate::{Root, b::Thing};\n"),
        (
            "b.rs",
            "// crate::a in a comment is no import\npub struct Thing;\n",
        ),
        (
            "plan/mod.rs",
            "pub mod x;\npub struct P;\nfn f() { x::g() }\n",
        ),
        ("plan/x.rs", "use super::P;\npub fn g() {}\n"),
    ];
    for (path, text) in files {
        std::fs::write(src.join(path), text).expect("write");
    }
    assert!(sibling_cycles(src).is_empty());
    std::fs::write(
        src.join("b.rs"),
        "pub struct Thing;\nfn f() { crate::a::x(); }\n",
    )
    .expect("write");
    assert_eq!(sibling_cycles(src), ["a -> b -> a", "b -> a -> b"]);
}
