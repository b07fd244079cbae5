//! `[workers]`: how many photo workers run, and how many jobs each processes at once.

use super::reader::Section;
use super::{MAX_COUNT, WorkersSpec};

/// Reads `[workers]`: `count` (0 to 64, default 1 when the table is there) and `concurrency`
/// (1 to 64, default 1).
pub(super) fn read(sec: &mut Section<'_>) -> WorkersSpec {
    WorkersSpec {
        count: sec.int("count", 0..=MAX_COUNT).unwrap_or(1),
        concurrency: sec.int("concurrency", 1..=64).unwrap_or(1),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;

    #[test]
    fn workers_are_counted_and_bounded() {
        let t = Topology::parse(
            "[api]\ncount = 1\n[workers]\ncount = 2\nconcurrency = 4\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.workers,
            WorkersSpec {
                count: 2,
                concurrency: 4
            }
        );
        assert_eq!(t.instance_count(), 3);
        let none = Topology::parse("[api]\ncount = 1\n", 8080).expect("valid");
        assert_eq!(none.workers.count, 0, "no table, no workers");
        let e = errors("[api]\ncount = 1\n[workers]\ncount = 65\nconcurrency = 0\nthreads = 2\n");
        assert_eq!(e.len(), 3, "{e:#?}");
        assert_eq!(
            e[0].message,
            "`workers.count` must be between 0 and 64, not 65"
        );
        assert_eq!(
            e[1].message,
            "`workers.concurrency` must be between 1 and 64, not 0"
        );
        assert!(
            e[2].message.contains("unknown key `workers.threads`"),
            "{e:#?}"
        );
    }
}
