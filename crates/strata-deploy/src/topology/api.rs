//! `[api]`: how many stateless API servers run, and the fixed ports of some of them.

use super::reader::Section;
use super::{ApiSpec, MAX_COUNT};

/// Reads `[api]`: `count` (required) and `ports`.
pub(super) fn read(sec: &mut Section<'_>) -> ApiSpec {
    if !sec.has("count") {
        sec.error(
            "count",
            format!("`api.count` is required (1 to {MAX_COUNT})"),
        );
    }
    ApiSpec {
        count: sec.int("count", 1..=MAX_COUNT).unwrap_or(0),
        ports: sec.ports("ports").unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;

    #[test]
    fn counts_must_be_integers_in_range() {
        for bad in ["-1", "65", "\"three\"", "2.5"] {
            let e = errors(&format!("[api]\ncount = {bad}\n"));
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert_eq!(e[0].line, Some(2));
            let what = if bad.parse::<i64>().is_ok() {
                ""
            } else {
                "an integer "
            };
            assert_eq!(
                e[0].message,
                format!("`api.count` must be {what}between 1 and 64, not {bad}")
            );
        }
        assert!(Topology::parse("[api]\ncount = 64\n", 8080).is_ok());
        let e = errors("[api]\nports = [9001]\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(1), "the table's line: {e:?}");
        assert_eq!(e[0].message, "`api.count` is required (1 to 64)");
    }
}
