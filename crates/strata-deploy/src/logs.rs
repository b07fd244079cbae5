//! `strata logs`: every role's log (`DIR/logs/<role>.log`), merged and prefixed by role, once
//! or followed as they grow.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::state;

/// Prints the logs of the deployment in `dir` (of `role` only, when given), each line prefixed
/// by its role; with `follow`, keeps printing new lines until Ctrl-C (or a day has passed).
pub async fn print(dir: &Path, role: Option<&str>, follow: bool) -> anyhow::Result<()> {
    let deployment = dir;
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
                "no role {role:?} in {} (known: {})",
                deployment.display(),
                known.join(", ")
            );
        }
    }
    let width = files.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
    let mut offsets = vec![0u64; files.len()];
    let mut pending = vec![String::new(); files.len()];
    let started = Instant::now();
    loop {
        for (i, (role, path)) in files.iter().enumerate() {
            let Ok(mut f) = std::fs::File::open(path) else {
                continue;
            };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offsets[i] {
                offsets[i] = 0; // truncated
            }
            if len == offsets[i] {
                continue;
            }
            f.seek(SeekFrom::Start(offsets[i]))?;
            let mut chunk = Vec::new();
            f.take(len - offsets[i]).read_to_end(&mut chunk)?;
            offsets[i] = len;
            pending[i].push_str(&String::from_utf8_lossy(&chunk));
            while let Some(pos) = pending[i].find('\n') {
                let line: String = pending[i].drain(..=pos).collect();
                println!("{role:<width$} | {}", line.trim_end_matches('\n'));
            }
        }
        if !follow {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        // Bounded: following stops by itself after a day.
        if started.elapsed() > Duration::from_secs(86_400) {
            return Ok(());
        }
    }
}
