//! Drains that outlive the balancer: with a drain file (`--drain-file`), every drain and
//! undrain through the admin API rewrites the file with the names of the backends drained
//! now, and a balancer that starts (or restarts) drains them again before it takes a request.
//!
//! The file is small JSON, `{"drained":["api-2"]}`, replaced whole (a temporary file renamed
//! over it), so a crash leaves the old set or the new one. A name the balancer has no backend
//! for is skipped; a file that cannot be read or parsed is reported and ignored — the balancer
//! then starts with every backend in rotation, which serves rather than refuses.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The most bytes of a drain file read.
const MAX_FILE: u64 = 64 * 1024;

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct DrainFile {
    drained: Vec<String>,
}

/// The backends a drain file names; none when there is no file. A file that cannot be read
/// or parsed is an error, for the caller to report.
pub fn load(path: &Path) -> Result<Vec<String>, String> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!("{} is over {MAX_FILE} bytes", path.display()));
    }
    serde_json::from_str::<DrainFile>(&text)
        .map(|f| f.drained)
        .map_err(|e| format!("{} is not a drain file: {e}", path.display()))
}

/// Replaces the drain file with `drained`, whole or not at all.
pub fn save(path: &Path, drained: &[String]) -> std::io::Result<()> {
    let text = serde_json::to_string(&DrainFile {
        drained: drained.to_vec(),
    })
    .map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_set_loads_back_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lb").join("lb-1.drained.json");
        assert_eq!(load(&path), Ok(Vec::new()));
        save(&path, &["api-2".into(), "api-3".into()]).expect("save");
        assert_eq!(load(&path), Ok(vec!["api-2".to_string(), "api-3".into()]));
        save(&path, &[]).expect("save");
        assert_eq!(load(&path), Ok(Vec::new()));
        assert!(!dir.path().join("lb").join("lb-1.drained.json.tmp").exists());
    }

    #[test]
    fn a_broken_or_huge_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.json");
        for bad in ["{", "{\"drained\":\"api-1\"}", "{\"drained\":[],\"x\":1}"] {
            std::fs::write(&path, bad).expect("write");
            assert!(load(&path).is_err(), "{bad}");
        }
        std::fs::write(&path, " ".repeat(MAX_FILE as usize + 10)).expect("write");
        assert!(load(&path).expect_err("huge").contains("over"));
    }
}
