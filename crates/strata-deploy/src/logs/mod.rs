//! `strata logs`: every role's log (`DIR/logs/<role>.log`) merged in time order and prefixed by
//! role, filtered by time, level, a regular expression, a trace id or a request id; once, or
//! followed as the files grow.
//!
//! - [`time`]: instants and `--since`; [`line`]: what a line states (time, level, id fields);
//! - [`filter`]: the filters, parsed at the command line; [`reader`]: one file, line by line,
//!   in bounded memory, lines without a time carrying the previous line's;
//! - [`merge`]: the k-way merge of the files, one pending line per file.
//!
//! Trace ids are matched in the field [`filter::TRACE_FIELD`] (`trace_id`), request ids in
//! [`filter::REQUEST_FIELD`] (`request_id`), at the top level of a JSON line or in any of its
//! `spans`: code that wants its lines found by `--trace` logs the id under that name.

pub mod filter;
pub mod line;
pub mod merge;
pub mod reader;
pub mod time;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use filter::{Filter, Grep, RequestId, TraceId};
pub use line::Level;
pub use time::{Since, Timestamp};

use crate::state;
use reader::{Entry, LogReader};

/// What to print.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this role's log.
    pub role: Option<String>,
    /// Keep printing new lines until Ctrl-C (or a day has passed).
    pub follow: bool,
    /// One JSON object per line, with `role` added, instead of `role | line`.
    pub json: bool,
    pub filter: Filter,
}

struct Source {
    role: String,
    reader: LogReader<File>,
}

/// Prints the logs of the deployment in `dir` as `options` say. Lines of all files come in
/// time order (each file's own order kept); following, new lines come as they are read.
pub async fn print(dir: &Path, options: &Options) -> anyhow::Result<()> {
    let files = role_files(dir, options.role.as_deref())?;
    let width = files.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
    let out = Output {
        width,
        json: options.json,
    };
    let mut sources = Vec::with_capacity(files.len());
    for (role, path) in files {
        // A file removed since it was listed has nothing to print.
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let reader = match options.filter.since {
            Some(since) => {
                let len = file.metadata()?.len();
                LogReader::starting_near(file, len, since)?
            }
            None => LogReader::new(file),
        };
        sources.push(Source { role, reader });
    }
    if !out.ignoring_closed_pipe(print_merged(&mut sources, options, &out))? || !options.follow {
        return Ok(());
    }
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        if !out.ignoring_closed_pipe(print_new(&mut sources, &options.filter, &out))? {
            return Ok(());
        }
        // Bounded: following stops by itself after a day.
        if started.elapsed() > Duration::from_secs(86_400) {
            return Ok(());
        }
    }
}

/// `DIR/logs/*.log` as (role, path), in role order; only `role`'s when given.
fn role_files(deployment: &Path, role: Option<&str>) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let dir = state::log_dir(deployment);
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .map_err(|_| state::no_deployment(deployment))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let path = e.path();
            let role = path
                .file_name()?
                .to_str()?
                .strip_suffix(".log")?
                .to_string();
            Some((role, path))
        })
        .collect();
    files.sort();
    if let Some(role) = role {
        let known: Vec<String> = files.iter().map(|(r, _)| r.clone()).collect();
        files.retain(|(r, _)| r == role);
        if files.is_empty() {
            anyhow::bail!(
                "no role {role:?} in {}: the roles with logs are {}",
                deployment.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    Ok(files)
}

/// Everything already in the files, merged in time order. Following, a last line still being
/// written is left for [`print_new`].
fn print_merged(sources: &mut [Source], options: &Options, out: &Output) -> io::Result<()> {
    let stdout = io::stdout();
    let mut w = io::BufWriter::new(stdout.lock());
    let (filter, hold) = (&options.filter, options.follow);
    let roles: Vec<String> = sources.iter().map(|s| s.role.clone()).collect();
    let lines: Vec<_> = sources
        .iter_mut()
        .map(|s| std::iter::from_fn(|| s.reader.next_match(filter, hold).transpose()))
        .collect();
    merge::merge(
        lines,
        |e: &Entry| e.stamp.time,
        |i, e| out.write(&mut w, &roles[i], &e),
    )?;
    w.flush()
}

/// The lines written since the last read, file by file.
fn print_new(sources: &mut [Source], filter: &Filter, out: &Output) -> io::Result<()> {
    let stdout = io::stdout();
    let mut w = io::BufWriter::new(stdout.lock());
    for s in sources.iter_mut() {
        let len = s.reader.get_ref().metadata()?.len();
        if len < s.reader.offset() {
            s.reader.restart()?; // truncated
        }
        while let Some(e) = s.reader.next_match(filter, true)? {
            out.write(&mut w, &s.role, &e)?;
        }
    }
    w.flush()
}

struct Output {
    width: usize,
    json: bool,
}

impl Output {
    fn write(&self, w: &mut impl Write, role: &str, e: &Entry) -> io::Result<()> {
        if !self.json {
            return writeln!(w, "{role:<width$} | {}", e.text, width = self.width);
        }
        let object = match serde_json::from_str::<serde_json::Value>(&e.text) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.insert("role".into(), role.into());
                map
            }
            // Engine text: the line whole, as the message.
            _ => {
                let mut map = serde_json::Map::new();
                map.insert("role".into(), role.into());
                map.insert("message".into(), e.text.clone().into());
                map
            }
        };
        serde_json::to_writer(&mut *w, &object)?;
        w.write_all(b"\n")
    }

    /// `Ok(false)` when stdout was closed (`strata logs | head`): stop quietly.
    fn ignoring_closed_pipe(&self, r: io::Result<()>) -> anyhow::Result<bool> {
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
