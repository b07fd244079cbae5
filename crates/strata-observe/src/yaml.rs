//! A small YAML emitter: block mappings and sequences of double-quoted strings and plain
//! numbers, which is all Prometheus's configuration and rule files need. Every string is
//! quoted and escaped, so no value (a PromQL expression with quotes, a path with a colon) can
//! change the document's structure. The workspace has no YAML crate, and emitting this subset
//! is smaller than adding one.

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string, always written double-quoted.
    Str(String),
    /// A number or boolean written as is (the caller makes it).
    Plain(String),
    /// A block sequence (`[]` when empty).
    List(Vec<Value>),
    /// A block mapping in this order (`{}` when empty).
    Map(Vec<(String, Value)>),
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Self {
        Value::Str(s.into())
    }

    /// A mapping from `(key, value)` pairs.
    pub fn map<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Self {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The document: this value and a final newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match self {
            Value::List(items) if !items.is_empty() => write_list(&mut out, items, 0),
            Value::Map(pairs) if !pairs.is_empty() => write_map(&mut out, pairs, 0),
            scalar => {
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
        out
    }
}

/// A string as a double-quoted YAML scalar.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key: plain when it is a simple word, else quoted.
fn key(k: &str) -> String {
    let simple = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if simple { k.to_string() } else { quote(k) }
}

/// Scalars and empty collections, on one line.
fn inline(v: &Value) -> String {
    match v {
        Value::Str(s) => quote(s),
        Value::Plain(p) => p.clone(),
        Value::List(_) => "[]".into(),
        Value::Map(_) => "{}".into(),
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::List(items) if !items.is_empty())
        || matches!(v, Value::Map(pairs) if !pairs.is_empty())
}

fn write_map(out: &mut String, pairs: &[(String, Value)], indent: usize) {
    for (k, v) in pairs {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key(k));
        out.push(':');
        if is_block(v) {
            out.push('\n');
            write_block(out, v, indent + 2);
        } else {
            out.push(' ');
            out.push_str(&inline(v));
            out.push('\n');
        }
    }
}

fn write_list(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        if is_block(item) {
            // The item's first line goes on the dash's line.
            let mut inner = String::new();
            write_block(&mut inner, item, indent + 2);
            out.push(' ');
            out.push_str(&inner[indent + 2..]);
        } else {
            out.push(' ');
            out.push_str(&inline(item));
            out.push('\n');
        }
    }
}

fn write_block(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::List(items) => write_list(out, items, indent),
        Value::Map(pairs) => write_map(out, pairs, indent),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_blocks_are_indented_and_strings_escaped() {
        let doc = Value::map([
            (
                "groups",
                Value::List(vec![Value::map([
                    ("name", Value::str("a")),
                    (
                        "rules",
                        Value::List(vec![Value::map([
                            ("expr", Value::str(r#"x{a="b\c"} > 1"#)),
                            ("labels", Value::map([("severity", Value::str("page"))])),
                        ])]),
                    ),
                ])]),
            ),
            ("empty", Value::List(vec![])),
            ("n", Value::Plain("3".into())),
            ("odd key", Value::str("line\nbreak")),
        ]);
        assert_eq!(
            doc.render(),
            r#"groups:
  - name: "a"
    rules:
      - expr: "x{a=\"b\\c\"} > 1"
        labels:
          severity: "page"
empty: []
n: 3
"odd key": "line\nbreak"
"#
        );
    }

    #[test]
    fn lists_of_lists_and_scalars() {
        let doc = Value::List(vec![
            Value::List(vec![Value::str("a"), Value::str("b")]),
            Value::str("c"),
        ]);
        assert_eq!(doc.render(), "- - \"a\"\n  - \"b\"\n- \"c\"\n");
    }
}
