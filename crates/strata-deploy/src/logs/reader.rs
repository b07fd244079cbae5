//! One log file read line by line, in bounded memory, each line given the time and level it
//! carries — its own, or else those of the line before it in the file.
//!
//! Why inherit: a line that states no time is, in practice, the continuation of the one before
//! it (a panic's backtrace, a multi-line message, PostgreSQL's `DETAIL:` under an `ERROR:`),
//! so it belongs at that time, at that level, and next to it in the merged output. Lines
//! before the first one that states a time have none.
//!
//! Lines are capped at [`MAX_LINE`] bytes (the rest of a longer line is skipped and counted),
//! so a file without newlines cannot exhaust memory. With `--since`, a large file is entered
//! by binary search on the times of its lines rather than read from the start: this assumes a
//! file is in time order, which an appending writer guarantees except across a backwards step
//! of the clock.

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

use super::filter::Filter;
use super::line::{Stamp, stamp};
use super::time::Timestamp;

/// The longest line kept whole; longer ones are cut here and marked.
pub const MAX_LINE: usize = 1 << 20;
/// Files smaller than this are read from the start even with `--since`.
const SEEK_ABOVE: u64 = 1 << 20;
/// How many lines a binary-search probe reads looking for one that states its time.
const PROBE_LINES: usize = 64;

/// A line and the time and level it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub text: String,
    pub stamp: Stamp,
}

pub struct LogReader<R> {
    reader: BufReader<R>,
    /// The offset in the file of the next byte to read.
    offset: u64,
    /// What the previous line carried.
    last: Stamp,
    buf: Vec<u8>,
}

enum Raw {
    Line,
    /// The file ends inside a line (a writer is in the middle of it).
    Partial,
    Eof,
}

impl<R: Read + Seek> LogReader<R> {
    /// Reads from the start of `inner`.
    pub fn new(inner: R) -> LogReader<R> {
        LogReader {
            reader: BufReader::new(inner),
            offset: 0,
            last: Stamp::default(),
            buf: Vec::new(),
        }
    }

    /// Reads from near the first line at or after `since`: a line boundary before which every
    /// line is older (for a file in time order). `len` is the file's length.
    pub fn starting_near(inner: R, len: u64, since: Timestamp) -> io::Result<LogReader<R>> {
        let mut r = LogReader::new(inner);
        if len < SEEK_ABOVE {
            return Ok(r);
        }
        // Invariant: the first timed line after `lo` is older than `since` (or lo = 0); the
        // one after `hi` is not, or there is none to be found.
        let (mut lo, mut hi) = (0u64, len);
        while hi - lo > SEEK_ABOVE / 4 {
            let mid = lo + (hi - lo) / 2;
            match r.probe(mid)? {
                Some(t) if t < since => lo = mid,
                _ => hi = mid,
            }
        }
        r.seek_to_line_at(lo)?;
        Ok(r)
    }

    /// The offset of the next unread byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn get_ref(&self) -> &R {
        self.reader.get_ref()
    }

    /// Starts over from the beginning (the file was truncated).
    pub fn restart(&mut self) -> io::Result<()> {
        self.reader.seek(SeekFrom::Start(0))?;
        self.offset = 0;
        self.last = Stamp::default();
        Ok(())
    }

    /// The next line with what it carries. With `hold_partial`, a last line without its
    /// newline is left unread (to be read whole later) instead of returned.
    pub fn next_line(&mut self, hold_partial: bool) -> io::Result<Option<Entry>> {
        let start = self.offset;
        match self.read_raw()? {
            Raw::Eof => return Ok(None),
            Raw::Partial if hold_partial => {
                self.reader.seek(SeekFrom::Start(start))?;
                self.offset = start;
                return Ok(None);
            }
            Raw::Partial | Raw::Line => {}
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        let own = stamp(&text);
        let carried = Stamp {
            time: own.time.or(self.last.time),
            level: own.level.or(self.last.level),
            json: own.json,
        };
        self.last = carried;
        Ok(Some(Entry {
            text,
            stamp: carried,
        }))
    }

    /// The next line that `filter` passes.
    pub fn next_match(&mut self, filter: &Filter, hold_partial: bool) -> io::Result<Option<Entry>> {
        while let Some(entry) = self.next_line(hold_partial)? {
            if filter.matches(&entry.text, &entry.stamp) {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Reads one line into `buf`, without its line ending.
    fn read_raw(&mut self) -> io::Result<Raw> {
        self.buf.clear();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut self.buf)?;
        self.offset += n as u64;
        if n == 0 {
            return Ok(Raw::Eof);
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            return Ok(Raw::Line);
        }
        if n < MAX_LINE {
            return Ok(Raw::Partial);
        }
        let skipped = self.skip_line()?;
        self.buf
            .extend_from_slice(format!(" … [{skipped} more bytes]").as_bytes());
        Ok(Raw::Line)
    }

    /// Skips through the next newline; returns how many bytes before it were skipped.
    fn skip_line(&mut self) -> io::Result<u64> {
        let mut skipped = 0u64;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok(skipped);
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.reader.consume(i + 1);
                    self.offset += i as u64 + 1;
                    return Ok(skipped + i as u64);
                }
                None => {
                    let len = available.len();
                    self.reader.consume(len);
                    self.offset += len as u64;
                    skipped += len as u64;
                }
            }
        }
    }

    /// Positions at the first line that starts at or after `at`.
    fn seek_to_line_at(&mut self, at: u64) -> io::Result<()> {
        self.last = Stamp::default();
        if at == 0 {
            self.reader.seek(SeekFrom::Start(0))?;
            self.offset = 0;
            return Ok(());
        }
        // From the byte before: if it is a newline, `at` starts a line.
        self.reader.seek(SeekFrom::Start(at - 1))?;
        self.offset = at - 1;
        self.skip_line()?;
        Ok(())
    }

    /// The time of the first line after `at` that states one, among the next few lines.
    fn probe(&mut self, at: u64) -> io::Result<Option<Timestamp>> {
        self.seek_to_line_at(at)?;
        for _ in 0..PROBE_LINES {
            match self.read_raw()? {
                Raw::Eof => break,
                Raw::Line | Raw::Partial => {
                    if let Some(t) = stamp(&String::from_utf8_lossy(&self.buf)).time {
                        return Ok(Some(t));
                    }
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::logs::line::Level;

    fn json(time: &str, level: &str, msg: &str) -> String {
        format!(r#"{{"timestamp":"{time}","level":"{level}","message":"{msg}"}}"#)
    }

    fn all(r: &mut LogReader<Cursor<Vec<u8>>>, hold: bool) -> Vec<Entry> {
        let mut out = Vec::new();
        while let Some(e) = r.next_line(hold).expect("in memory") {
            out.push(e);
        }
        out
    }

    #[test]
    fn lines_without_a_time_carry_the_previous_lines_time_and_level() {
        let text = format!(
            "engine banner\n{}\npanicked at x.rs:1\r\n  0: backtrace\n{}\n",
            json("2026-11-30T03:50:01Z", "ERROR", "boom"),
            json("2026-11-30T03:50:02Z", "INFO", "fine"),
        );
        let mut r = LogReader::new(Cursor::new(text.into_bytes()));
        let lines = all(&mut r, false);
        let carried: Vec<_> = lines
            .iter()
            .map(|e| {
                (
                    e.text.as_str(),
                    e.stamp.time.map(|t| t.to_string()),
                    e.stamp.level,
                )
            })
            .collect();
        let t1 = Some("2026-11-30T03:50:01.000000000Z".to_string());
        assert_eq!(carried[0], ("engine banner", None, None));
        assert_eq!(
            carried[2],
            ("panicked at x.rs:1", t1.clone(), Some(Level::Error))
        );
        assert_eq!(carried[3], ("  0: backtrace", t1, Some(Level::Error)));
        assert_eq!(carried[4].2, Some(Level::Info));
        assert!(lines[1].stamp.json && !lines[2].stamp.json);
    }

    #[test]
    fn a_last_line_without_its_newline_waits_when_following() {
        let mut r = LogReader::new(Cursor::new(b"one\ntw".to_vec()));
        assert_eq!(all(&mut r, true).len(), 1);
        assert_eq!(r.offset(), 4);
        let mut r = LogReader::new(Cursor::new(b"one\ntw".to_vec()));
        let texts: Vec<_> = all(&mut r, false).into_iter().map(|e| e.text).collect();
        assert_eq!(texts, ["one", "tw"]);
    }

    #[test]
    fn an_overlong_line_is_cut_and_the_next_line_is_whole() {
        let mut text = vec![b'x'; MAX_LINE + 10];
        text.extend_from_slice(b"\nnext\n");
        let mut r = LogReader::new(Cursor::new(text));
        let lines = all(&mut r, false);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].text.ends_with(" … [10 more bytes]"));
        assert_eq!(lines[0].text.len(), MAX_LINE + " … [10 more bytes]".len());
        assert_eq!(lines[1].text, "next");
    }

    #[test]
    fn since_enters_a_large_file_near_its_time_and_loses_no_line_at_or_after_it() {
        // ~4 MB: one line a millisecond from 03:00:00, with continuation lines among them.
        let base = Timestamp::parse_prefix("2026-11-30T03:00:00Z")
            .map(|(t, _)| t)
            .expect("a time");
        let mut text = String::new();
        let n = 30_000i64;
        for i in 0..n {
            let t = Timestamp::from_unix_nanos(base.unix_nanos() + i * 1_000_000);
            text.push_str(&json(
                &t.to_string(),
                "INFO",
                &format!("line {i} {}", "p".repeat(60)),
            ));
            text.push('\n');
            if i % 7 == 0 {
                text.push_str(&format!("continuation of {i}\n"));
            }
        }
        let len = text.len() as u64;
        assert!(len > 3 * SEEK_ABOVE);
        let since = Timestamp::from_unix_nanos(base.unix_nanos() + 20_006 * 1_000_000);
        let filter = Filter {
            since: Some(since),
            ..Filter::default()
        };
        let mut r = LogReader::starting_near(Cursor::new(text.into_bytes()), len, since)
            .expect("in memory");
        let start = r.offset();
        assert!(start > len / 2, "entered at {start} of {len}");
        let mut got = Vec::new();
        while let Some(e) = r.next_match(&filter, false).expect("in memory") {
            got.push(e.text);
        }
        assert!(got[0].contains("\"line 20006 "), "{}", got[0]);
        assert_eq!(got[1], "continuation of 20006");
        let expected = (n - 20_006) + (20_006..n).filter(|i| i % 7 == 0).count() as i64;
        assert_eq!(got.len() as i64, expected);
    }
}
