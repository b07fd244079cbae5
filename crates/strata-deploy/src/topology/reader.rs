//! The one field reader every table of a topology file goes through.
//!
//! A [`Document`] is the file parsed by `toml_edit`, which keeps the byte span of every key and
//! value, so a mistake is reported on its own line however the table was written: under a
//! `[cache]` header, as dotted keys (`cache.nodes = 2`) or as an inline table
//! (`cache = { engine = "redis" }`).
//!
//! A [`Section`] is one table. Its typed getters (`int`, `port`, `bool`, `choice`, …) mark the
//! key as known, return the value when it is right and otherwise record an error on the key's
//! line saying which key it is (`lb.tls_port`), what it must be and what was found. When the
//! table has been read, [`Section::finish`] reports every key no getter asked for, with the keys
//! that were asked for as the known list — so that list cannot drift from the code.

use std::fmt::Display;
use std::ops::RangeInclusive;

use clap::ValueEnum;
use toml_edit::{ImDocument, Item, TableLike, Value};

use super::TopologyError;

/// A parsed topology file.
pub(crate) struct Document<'t> {
    doc: ImDocument<&'t str>,
    lines: Lines,
}

/// Where each line of the text starts, to turn byte offsets into 1-based line numbers.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        Lines(
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        )
    }

    fn at(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset)
    }
}

impl<'t> Document<'t> {
    /// Parses `text`; a syntax error is the one mistake reported, on its line.
    pub fn parse(text: &'t str) -> Result<Self, TopologyError> {
        let lines = Lines::new(text);
        match ImDocument::parse(text) {
            Ok(doc) => Ok(Document { doc, lines }),
            Err(e) => Err(TopologyError {
                line: e.span().map(|span| lines.at(span.start)),
                message: format!(
                    "not valid TOML: {}",
                    e.message().trim_end().replace('\n', "; ")
                ),
            }),
        }
    }

    /// The top-level table, whose errors go to `errors`.
    pub fn root<'d>(&'d self, errors: &'d mut Vec<TopologyError>) -> Section<'d> {
        Section {
            path: String::new(),
            table: self.doc.as_table(),
            lines: &self.lines,
            line: None,
            read: Vec::new(),
            errors,
        }
    }

    /// The line of `section.key`, or of the section when the key is absent.
    pub fn line_of(&self, section: &str, key: &str) -> Option<usize> {
        let root: &dyn TableLike = self.doc.as_table();
        let table = root.get(section)?.as_table_like()?;
        key_line(table, key, &self.lines).or_else(|| key_line(root, section, &self.lines))
    }

    /// The line of the table `section`, if the file has it.
    pub fn line_of_table(&self, section: &str) -> Option<usize> {
        let root: &dyn TableLike = self.doc.as_table();
        root.get(section)?;
        key_line(root, section, &self.lines)
    }

    /// The line of entry `index` of the array `section.key`, else of the key.
    pub fn line_of_entry(&self, section: &str, key: &str, index: usize) -> Option<usize> {
        self.doc
            .as_table()
            .get(section)
            .and_then(|table| table.get(key)?.as_array()?.get(index)?.span())
            .map(|span| self.lines.at(span.start))
            .or_else(|| self.line_of(section, key))
    }
}

/// The line of `key` in `table`: where the key is written, else where its value is.
fn key_line(table: &dyn TableLike, key: &str, lines: &Lines) -> Option<usize> {
    let span = table
        .key(key)
        .and_then(toml_edit::Key::span)
        .or_else(|| table.get(key).and_then(Item::span))?;
    Some(lines.at(span.start))
}

/// One table of the file being read.
pub(crate) struct Section<'d> {
    /// `lb`, or empty for the top level.
    path: String,
    table: &'d dyn TableLike,
    lines: &'d Lines,
    /// The table's own line (its header or first key).
    line: Option<usize>,
    /// Every key a getter asked for, in the order asked.
    read: Vec<&'static str>,
    errors: &'d mut Vec<TopologyError>,
}

impl<'d> Section<'d> {
    /// `section.key` as messages name it (`key` alone at the top level).
    pub fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Whether the table has `key` (without marking it as known).
    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// The line of `key`, or of the table when the key is absent.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        key_line(self.table, key, self.lines).or(self.line)
    }

    /// The line of `key` in this table's sub-table `table` (else of `table`).
    pub fn line_of_in(&self, table: &str, key: &str) -> Option<usize> {
        self.table
            .get(table)
            .and_then(Item::as_table_like)
            .and_then(|t| key_line(t, key, self.lines))
            .or_else(|| self.line_of(table))
    }

    /// Records a mistake on the line of `key` (or of the table).
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let line = self.line_of(key);
        self.push(line, message.into());
    }

    fn push(&mut self, line: Option<usize>, message: String) {
        self.errors.push(TopologyError { line, message });
    }

    /// Marks `key` as known and returns its item, if present.
    pub fn get(&mut self, key: &'static str) -> Option<&'d Item> {
        if !self.read.contains(&key) {
            self.read.push(key);
        }
        let table: &'d dyn TableLike = self.table;
        table.get(key)
    }

    /// The one shape of every getter: the value `convert` makes of the item, or an error
    /// "`section.key` must be WHAT, not FOUND".
    pub fn typed<T>(
        &mut self,
        key: &'static str,
        what: impl Display,
        convert: impl FnOnce(&'d Item) -> Option<T>,
    ) -> Option<T> {
        let item = self.get(key)?;
        let value = convert(item);
        if value.is_none() {
            let message = format!("`{}` must be {what}, not {}", self.name(key), found(item));
            self.error(key, message);
        }
        value
    }

    /// An integer in `range`, as the integer type the caller needs. "must be between 1 and 4,
    /// not 9"; "must be an integer between …" when it is not one.
    pub fn int<T: TryFrom<i64>>(
        &mut self,
        key: &'static str,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        let is_integer = self.table.get(key).and_then(Item::as_integer).is_some();
        let what = format!(
            "{}between {} and {}",
            if is_integer { "" } else { "an integer " },
            range.start(),
            range.end()
        );
        self.typed(key, what, |item| {
            item.as_integer()
                .filter(|n| range.contains(n))
                .and_then(|n| T::try_from(n).ok())
        })
    }

    /// A duration in milliseconds, in `range`.
    pub fn millis(&mut self, key: &'static str, range: RangeInclusive<u64>) -> Option<u64> {
        let what = format!(
            "a number of milliseconds from {} to {}",
            range.start(),
            range.end()
        );
        self.typed(key, what, |item| {
            item.as_integer()
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| range.contains(n))
        })
    }

    /// A port to listen on; 0 picks a free one.
    pub fn port(&mut self, key: &'static str) -> Option<u16> {
        self.typed(
            key,
            "a port number from 0 to 65535 (0: any free port)",
            |item| item.as_integer().and_then(|n| u16::try_from(n).ok()),
        )
    }

    /// A list of fixed ports (1 to 65535). A bad entry is reported on its own line and keeps
    /// its place as 0 (any free port, which clashes with nothing), so that the entries after it
    /// still belong to the right instances.
    pub fn ports(&mut self, key: &'static str) -> Option<Vec<u16>> {
        let array = self.typed(key, "an array of port numbers", Item::as_array)?;
        let mut ports = Vec::new();
        for entry in array {
            let port = entry
                .as_integer()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|p| *p != 0);
            if port.is_none() {
                let line = entry
                    .span()
                    .map(|span| self.lines.at(span.start))
                    .or_else(|| self.line_of(key));
                let message = format!(
                    "`{}` entries must be port numbers from 1 to 65535, not {}",
                    self.name(key),
                    found_value(entry)
                );
                self.push(line, message);
            }
            ports.push(port.unwrap_or(0));
        }
        Some(ports)
    }

    /// `true` or `false`.
    pub fn bool(&mut self, key: &'static str) -> Option<bool> {
        self.typed(key, "true or false", Item::as_bool)
    }

    /// A string that `valid` accepts; `what` says which strings are.
    pub fn string(
        &mut self,
        key: &'static str,
        what: &str,
        valid: impl FnOnce(&str) -> bool,
    ) -> Option<String> {
        self.typed(key, what, |item| {
            item.as_str().filter(|s| valid(s)).map(str::to_string)
        })
    }

    /// A list of strings, each of which `valid` accepts (`what` says which are). A bad entry is
    /// reported on its own line.
    pub fn strings(
        &mut self,
        key: &'static str,
        what: &str,
        valid: impl Fn(&str) -> bool,
    ) -> Option<Vec<String>> {
        let array = self.typed(key, format!("an array of {what}"), Item::as_array)?;
        let mut out = Vec::new();
        for entry in array {
            match entry.as_str() {
                Some(s) if valid(s) => out.push(s.to_string()),
                _ => {
                    let line = entry
                        .span()
                        .map(|span| self.lines.at(span.start))
                        .or_else(|| self.line_of(key));
                    let message = format!(
                        "`{}` entries must be {what}, not {}",
                        self.name(key),
                        found_value(entry)
                    );
                    self.push(line, message);
                }
            }
        }
        Some(out)
    }

    /// The path of a file (any non-blank string).
    pub fn path(&mut self, key: &'static str) -> Option<String> {
        self.string(key, "a file path", |s| !s.trim().is_empty())
    }

    /// A string that may hold a password: a bad one is described, never shown.
    pub fn secret(
        &mut self,
        key: &'static str,
        what: &str,
        valid: impl FnOnce(&str) -> bool,
    ) -> Option<String> {
        let item = self.get(key)?;
        match item.as_str() {
            Some(s) if valid(s) => Some(s.to_string()),
            Some(_) => {
                let message = format!("`{}` must be {what}", self.name(key));
                self.error(key, message);
                None
            }
            None => {
                let message = format!("`{}` must be {what}, not {}", self.name(key), found(item));
                self.error(key, message);
                None
            }
        }
    }

    /// One of the values of a `clap::ValueEnum`, by the name its command-line flag takes.
    pub fn choice<T: ValueEnum>(&mut self, key: &'static str) -> Option<T> {
        self.one_of(key, variants::<T>())
    }

    /// One of `options` by name; a near miss is answered with "did you mean".
    pub fn one_of<T>(&mut self, key: &'static str, mut options: Vec<(String, T)>) -> Option<T> {
        let item = self.get(key)?;
        let given = item.as_str();
        if let Some(i) = given.and_then(|s| options.iter().position(|(name, _)| name == s)) {
            return Some(options.swap_remove(i).1);
        }
        let names: Vec<&str> = options.iter().map(|(name, _)| name.as_str()).collect();
        let hint = given.map(|s| suggestion(s, &names)).unwrap_or_default();
        let message = format!(
            "`{}` must be {}, not {}{hint}",
            self.name(key),
            alternatives(&names),
            found(item)
        );
        self.error(key, message);
        None
    }

    /// The table `key`, read by `read` and then finished; `None` (and an error when it is
    /// something else) when it is not a table.
    pub fn table<T>(
        &mut self,
        key: &'static str,
        read: impl FnOnce(&mut Section<'_>) -> T,
    ) -> Option<T> {
        let table = self.typed(key, "a table", Item::as_table_like)?;
        let mut section = Section {
            path: self.name(key),
            table,
            lines: self.lines,
            line: self.line_of(key),
            read: Vec::new(),
            errors: &mut *self.errors,
        };
        let value = read(&mut section);
        section.finish();
        Some(value)
    }

    /// Records a mistake on `line` (a table of an array of tables, found while reading it).
    pub fn error_at(&mut self, line: Option<usize>, message: impl Into<String>) {
        let line = line.or(self.line);
        self.push(line, message.into());
    }

    /// The array of tables `key` (`[[key]]`, or an inline array of tables), each read by `read`
    /// (given the table's line) and then finished; in messages entry `i` is `key[i]` (1-based).
    /// `None` (and an error when it is something else) when it is not an array of tables.
    pub fn tables<T>(
        &mut self,
        key: &'static str,
        mut read: impl FnMut(&mut Section<'_>, Option<usize>) -> T,
    ) -> Option<Vec<T>> {
        let item = self.get(key)?;
        let tables: Vec<(&'d dyn TableLike, Option<usize>)> = match item {
            Item::ArrayOfTables(array) => array
                .iter()
                .map(|t| {
                    let line = t.span().map(|s| self.lines.at(s.start));
                    (t as &dyn TableLike, line)
                })
                .collect(),
            Item::Value(Value::Array(array))
                if array.iter().all(|v| v.as_inline_table().is_some()) =>
            {
                array
                    .iter()
                    .filter_map(|v| {
                        let t = v.as_inline_table()?;
                        let line = v.span().map(|s| self.lines.at(s.start));
                        Some((t as &dyn TableLike, line))
                    })
                    .collect()
            }
            _ => {
                let message = format!(
                    "`{}` must be tables written `[[{key}]]`, not {}",
                    self.name(key),
                    found(item)
                );
                self.error(key, message);
                return None;
            }
        };
        let mut out = Vec::new();
        for (i, (table, line)) in tables.into_iter().enumerate() {
            let line = line.or_else(|| self.line_of(key));
            let mut section = Section {
                path: format!("{}[{}]", self.name(key), i + 1),
                table,
                lines: self.lines,
                line,
                read: Vec::new(),
                errors: &mut *self.errors,
            };
            out.push(read(&mut section, line));
            section.finish();
        }
        Some(out)
    }

    /// Reports every key no getter asked for:
    /// "unknown key `lb.foo` (did you mean `bar`?) (known: …)".
    pub fn finish(self) {
        let path = self.path.clone();
        self.finish_with(|key, known| {
            format!(
                "unknown key `{path}.{key}`{} (known: {})",
                suggestion(key, known),
                known.join(", ")
            )
        });
    }

    /// Reports every key no getter asked for with the message `unknown(key, known keys)`.
    pub fn finish_with(self, unknown: impl Fn(&str, &[&str]) -> String) {
        let table = self.table;
        for (key, _) in table.iter() {
            if !self.read.contains(&key) {
                let line = key_line(table, key, self.lines).or(self.line);
                let message = unknown(key, &self.read);
                self.errors.push(TopologyError { line, message });
            }
        }
    }
}

/// The names and values of a `clap::ValueEnum`, as its flag takes them.
pub(crate) fn variants<T: ValueEnum>() -> Vec<(String, T)> {
    T::value_variants()
        .iter()
        .filter_map(|v| Some((v.to_possible_value()?.get_name().to_string(), v.clone())))
        .collect()
}

/// `"a" or "b"`, `one of "a", "b" or "c"`.
fn alternatives(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match quoted.as_slice() {
        [] => "nothing".to_string(),
        [one] => one.clone(),
        [two @ .., last] => {
            let list = format!("{} or {last}", two.join(", "));
            if quoted.len() > 2 {
                format!("one of {list}")
            } else {
                list
            }
        }
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            row.push((prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

/// " (did you mean `x`?)" for the nearest candidate within two edits, else nothing.
pub(crate) fn suggestion(word: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// What was found instead of the expected value: the value itself when it is short and plain,
/// else its kind.
fn found(item: &Item) -> String {
    match item {
        Item::Value(value) => found_value(value),
        Item::Table(_) => "a table".to_string(),
        Item::ArrayOfTables(_) => "an array of tables".to_string(),
        Item::None => "nothing".to_string(),
    }
}

fn found_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{:?}", s.value()),
        Value::Integer(n) => n.value().to_string(),
        Value::Float(f) => f.value().to_string(),
        Value::Boolean(b) => b.value().to_string(),
        Value::Datetime(_) => "a date".to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::InlineTable(_) => "a table".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `text`'s table `section` with `read`, returning the errors.
    fn read_errors(
        text: &str,
        section: &'static str,
        read: impl FnOnce(&mut Section<'_>),
    ) -> Vec<TopologyError> {
        let doc = Document::parse(text).expect("valid TOML");
        let mut errors = Vec::new();
        let mut root = doc.root(&mut errors);
        root.table(section, read).expect("a table");
        errors
    }

    #[test]
    fn lines_are_right_for_headers_dotted_keys_and_inline_tables() {
        let read = |sec: &mut Section<'_>| {
            sec.int::<u8>("nodes", 1..=4);
            sec.choice::<strata_cache::CacheEngine>("engine");
        };
        for (text, engine, nodes) in [
            (
                "name = \"x\"\n\n[cache]\nengine = \"varnish\"\n\nnodes = 9\n",
                4,
                6,
            ),
            (
                "name = \"x\"\n\n\ncache.engine = \"varnish\"\n\ncache.nodes = 9\n",
                4,
                6,
            ),
            (
                "name = \"x\"\n\n\n\ncache = { engine = \"varnish\", nodes = 9 }\n",
                5,
                5,
            ),
            (
                "[api]\ncount = 1\n\n[cache]\nengine = \"varnish\"\nl2 = { nodes = 9 }\n",
                5,
                6,
            ),
        ] {
            let e = read_errors(text, "cache", read);
            assert_eq!(e.len(), 2, "{text}: {e:?}");
            let line = |key: &str| {
                e.iter()
                    .find(|e| e.message.contains(key))
                    .and_then(|e| e.line)
            };
            assert_eq!(line("`cache.engine`"), Some(engine), "{text}: {e:?}");
            assert_eq!(
                line("cache.nodes").or(line("`cache.l2`")),
                Some(nodes),
                "{text}: {e:?}"
            );
        }
        let doc = Document::parse("[cache]\nengine = \"redis\"\n\nnodes = 9\n").expect("valid");
        assert_eq!(doc.line_of("cache", "nodes"), Some(4));
        assert_eq!(doc.line_of("cache", "max_mib"), Some(1), "the table's line");
        assert_eq!(doc.line_of("lb", "count"), None);
    }

    #[test]
    fn unknown_keys_are_named_with_the_keys_that_were_read() {
        let e = read_errors("[t]\nalpha = 1\nbetta = 2\n\ngamma = true\n", "t", |sec| {
            sec.int::<i64>("alpha", 0..=9);
            sec.bool("beta");
        });
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0],
            TopologyError {
                line: Some(3),
                message: "unknown key `t.betta` (did you mean `beta`?) (known: alpha, beta)".into()
            }
        );
        assert_eq!(e[1].line, Some(5));
        assert_eq!(e[1].message, "unknown key `t.gamma` (known: alpha, beta)");
    }

    #[test]
    fn a_choice_lists_the_values_of_its_enum_and_suggests_the_nearest() {
        let e = read_errors("[lb]\nalgorithm = \"Round-robin\"\n", "lb", |sec| {
            sec.choice::<strata_lb::AlgorithmName>("algorithm");
        });
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].message,
            "`lb.algorithm` must be one of \"round-robin\", \"weighted-round-robin\", \
             \"least-connections\", \"power-of-two\", \"ip-hash\", \"consistent-hash\" or \
             \"random\", not \"Round-robin\" (did you mean `round-robin`?)"
        );
    }

    #[test]
    fn bad_values_say_what_was_expected_and_found_but_secrets_are_not_shown() {
        let e = read_errors(
            "[s]\nport = 70000\non = \"yes\"\nms = 5\nlist = [80, \"x\"]\nurl = \"pw\"\nsub = 1\n",
            "s",
            |sec| {
                assert_eq!(sec.port("port"), None);
                assert_eq!(sec.bool("on"), None);
                assert_eq!(sec.millis("ms", 100..=1000), None);
                assert_eq!(sec.ports("list"), Some(vec![80, 0]));
                assert_eq!(sec.secret("url", "a URL", |s| s.contains("://")), None);
                assert!(sec.table("sub", |_| ()).is_none());
            },
        );
        let messages: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "`s.port` must be a port number from 0 to 65535 (0: any free port), not 70000",
                "`s.on` must be true or false, not \"yes\"",
                "`s.ms` must be a number of milliseconds from 100 to 1000, not 5",
                "`s.list` entries must be port numbers from 1 to 65535, not \"x\"",
                "`s.url` must be a URL",
                "`s.sub` must be a table, not 1",
            ]
        );
        let lines: Vec<Option<usize>> = e.iter().map(|e| e.line).collect();
        assert_eq!(
            lines,
            [Some(2), Some(3), Some(4), Some(5), Some(6), Some(7)]
        );
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let e = Document::parse("a = 1\nb = [1,\nc = 2\n")
            .err()
            .expect("invalid");
        assert!(e.message.starts_with("not valid TOML: "), "{e:?}");
        assert!(!e.message.contains('\n'), "{e:?}");
        assert_eq!(e.line, Some(3), "{e:?}");
    }
}
