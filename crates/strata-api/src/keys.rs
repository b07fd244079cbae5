//! Signing keys for access tokens: Ed25519 (JWS `EdDSA`), one file per key in a directory every
//! API server of a deployment reads.
//!
//! - A key file is `<kid>.ed25519` holding the PKCS#8 document (mode 0600). Key ids are the
//!   creation time in milliseconds plus a random suffix, so names sort by age.
//! - The newest key signs; every key in the directory verifies. [`rotate`] adds a key and keeps
//!   the newest [`KEEP_KEYS`]: tokens signed by a key that was pruned stop verifying, which is
//!   why keys should not be rotated more than twice within one access-token lifetime.
//! - Servers rescan the directory at most every [`RESCAN_EVERY`] when signing, and at once (at
//!   most every 100 ms) when a token names a key id they do not know — so a key added on one
//!   machine is picked up everywhere without a restart. `strata up` makes the first key before it
//!   starts the API servers, so that they share it from the start.
//! - The public halves are served as a JWK Set (RFC 7517, `OKP`/`Ed25519` per RFC 8037) at
//!   `/.well-known/jwks.json`.
//! - Every failure is a [`KeyError`] naming the key, file or directory at fault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::signature::KeyPair as _;

/// How many keys [`rotate`] keeps.
pub const KEEP_KEYS: usize = 3;
/// How often a signing server looks for a newer key.
pub const RESCAN_EVERY: Duration = Duration::from_secs(10);
const KEY_SUFFIX: &str = ".ed25519";

/// Why keys could not be made, stored or read. The text names the key, file or directory and
/// ends with the cause.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {kid} is not an Ed25519 PKCS#8 key: {error}")]
    NotEd25519 {
        kid: String,
        error: ring::error::KeyRejected,
    },
    #[error("cannot generate a key: {0}")]
    Generate(ring::error::Unspecified),
    /// The key directory given to [`KeyRing::open`] cannot be created.
    #[error("cannot create the key directory {}: {error} (pass --keys DIR)", dir.display())]
    KeyDirectory { dir: PathBuf, error: std::io::Error },
    #[error("cannot create {}: {error}", dir.display())]
    CreateDirectory { dir: PathBuf, error: std::io::Error },
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The written key file cannot be renamed into place.
    #[error("cannot install key {kid}: {error}")]
    Install { kid: String, error: std::io::Error },
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// One verifying (and perhaps signing) key.
#[derive(Clone)]
struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public: Vec<u8>,
}

#[derive(Clone, Default)]
struct KeySet {
    /// By kid; the last is the newest.
    keys: BTreeMap<String, Key>,
}

/// The keys of a deployment. Cheap to clone.
#[derive(Clone)]
pub struct KeyRing {
    dir: Option<PathBuf>,
    set: Arc<Mutex<(KeySet, Instant)>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn new_kid() -> String {
    let ms = strata_store::accounts::now_ms();
    format!("{ms:013}-{:04x}", rand::random::<u16>())
}

fn load_key(kid: &str, pkcs8: &[u8]) -> Result<Key, KeyError> {
    let pair =
        ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|error| {
            KeyError::NotEd25519 {
                kid: kid.to_owned(),
                error,
            }
        })?;
    let public = pair.public_key().as_ref().to_vec();
    Ok(Key {
        kid: kid.to_owned(),
        encoding: EncodingKey::from_ed_der(pkcs8),
        decoding: DecodingKey::from_ed_der(&public),
        public,
    })
}

fn generate() -> Result<(String, Vec<u8>), KeyError> {
    let rng = ring::rand::SystemRandom::new();
    let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(KeyError::Generate)?;
    Ok((new_kid(), doc.as_ref().to_vec()))
}

fn write_key(dir: &Path, kid: &str, pkcs8: &[u8]) -> Result<(), KeyError> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).map_err(|error| KeyError::CreateDirectory {
        dir: dir.to_owned(),
        error,
    })?;
    let tmp = dir.join(format!(".{kid}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let write_error = |error| KeyError::Write {
        path: tmp.clone(),
        error,
    };
    let mut file = options.open(&tmp).map_err(write_error)?;
    file.write_all(pkcs8)
        .and_then(|_| file.sync_all())
        .map_err(write_error)?;
    std::fs::rename(&tmp, dir.join(format!("{kid}{KEY_SUFFIX}"))).map_err(|error| {
        KeyError::Install {
            kid: kid.to_owned(),
            error,
        }
    })
}

/// The key ids in `dir`, oldest first.
fn key_ids(dir: &Path) -> Result<Vec<String>, KeyError> {
    let entries = std::fs::read_dir(dir).map_err(|error| KeyError::Read {
        path: dir.to_owned(),
        error,
    })?;
    let mut kids: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(KEY_SUFFIX))
                .filter(|k| !k.is_empty() && !k.starts_with('.'))
                .map(str::to_owned)
        })
        .collect();
    kids.sort();
    Ok(kids)
}

fn scan(dir: &Path) -> Result<KeySet, KeyError> {
    let mut set = KeySet::default();
    for kid in key_ids(dir)? {
        let path = dir.join(format!("{kid}{KEY_SUFFIX}"));
        let bytes = std::fs::read(&path).map_err(|error| KeyError::Read { path, error })?;
        set.keys.insert(kid.clone(), load_key(&kid, &bytes)?);
    }
    Ok(set)
}

/// Adds a new newest key to `dir` (creating it) and prunes all but the newest [`KEEP_KEYS`].
/// Returns the new key id.
pub fn rotate(dir: &Path) -> Result<String, KeyError> {
    let (kid, pkcs8) = generate()?;
    write_key(dir, &kid, &pkcs8)?;
    let kids = key_ids(dir)?;
    for old in kids.iter().take(kids.len().saturating_sub(KEEP_KEYS)) {
        let _ = std::fs::remove_file(dir.join(format!("{old}{KEY_SUFFIX}")));
    }
    Ok(kid)
}

impl KeyRing {
    /// The keys in `dir`; when it holds none, one is created.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        std::fs::create_dir_all(dir).map_err(|error| KeyError::KeyDirectory {
            dir: dir.to_owned(),
            error,
        })?;
        if key_ids(dir)?.is_empty() {
            rotate(dir)?;
        }
        let set = scan(dir)?;
        Ok(Self {
            dir: Some(dir.to_owned()),
            set: Arc::new(Mutex::new((set, Instant::now()))),
        })
    }

    /// A key that lives in memory only (tests, and a single server told to keep no files):
    /// tokens it signs die with the process.
    pub fn ephemeral() -> Result<Self, KeyError> {
        let (kid, pkcs8) = generate()?;
        let mut set = KeySet::default();
        set.keys.insert(kid.clone(), load_key(&kid, &pkcs8)?);
        Ok(Self {
            dir: None,
            set: Arc::new(Mutex::new((set, Instant::now()))),
        })
    }

    fn rescan_if(&self, older_than: Duration) {
        let Some(dir) = &self.dir else { return };
        let mut guard = self.set.lock().unwrap_or_else(|p| p.into_inner());
        if guard.1.elapsed() < older_than {
            return;
        }
        guard.1 = Instant::now();
        match scan(dir) {
            Ok(set) if !set.keys.is_empty() => guard.0 = set,
            Ok(_) => {
                tracing::warn!(dir = %dir.display(), "the key directory is empty; keeping the keys in memory")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot rescan the key directory; keeping the keys in memory")
            }
        }
    }

    /// The newest key: its id and signing half.
    pub(crate) fn signing(&self) -> Option<(String, EncodingKey)> {
        self.rescan_if(RESCAN_EVERY);
        let guard = self.set.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .0
            .keys
            .values()
            .next_back()
            .map(|k| (k.kid.clone(), k.encoding.clone()))
    }

    /// The verifying half of key `kid`, rescanning (at most every 100 ms: a directory of three
    /// files is cheap to read, and the bound keeps garbage key ids from costing more) when it is
    /// unknown.
    pub(crate) fn verifying(&self, kid: &str) -> Option<DecodingKey> {
        let known = |ring: &Self| {
            let guard = ring.set.lock().unwrap_or_else(|p| p.into_inner());
            guard.0.keys.get(kid).map(|k| k.decoding.clone())
        };
        known(self).or_else(|| {
            self.rescan_if(Duration::from_millis(100));
            known(self)
        })
    }

    /// The public keys as a JWK Set.
    pub fn jwks(&self) -> serde_json::Value {
        self.rescan_if(RESCAN_EVERY);
        let guard = self.set.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<serde_json::Value> = guard
            .0
            .keys
            .values()
            .rev()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(&k.public),
                    "kid": k.kid,
                    "use": "sig",
                    "alg": "EdDSA",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_adds_a_newest_key_and_keeps_three() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = KeyRing::open(dir.path()).expect("open");
        let first = ring.signing().expect("a key").0;
        let mut kids = vec![first.clone()];
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(2));
            kids.push(rotate(dir.path()).expect("rotate"));
        }
        assert_eq!(key_ids(dir.path()).expect("ids"), kids[1..].to_vec());
        // The ring still signs with the old key until it rescans; an unknown kid forces that.
        ring.rescan_if(Duration::ZERO);
        assert_eq!(ring.signing().map(|k| k.0), kids.last().cloned());
        assert!(
            ring.verifying(&first).is_none(),
            "a pruned key no longer verifies"
        );
        assert_eq!(
            ring.jwks()["keys"].as_array().map(Vec::len),
            Some(KEEP_KEYS)
        );
    }

    #[test]
    fn a_key_another_server_added_verifies_without_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let here = KeyRing::open(dir.path()).expect("open");
        std::thread::sleep(Duration::from_millis(2));
        let theirs = rotate(dir.path()).expect("rotate");
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            here.verifying(&theirs).is_some(),
            "an unknown kid makes the ring look in the directory again"
        );
        assert!(here.verifying("no-such-key").is_none());
    }

    #[test]
    fn errors_name_what_is_at_fault() {
        let text = |r: Result<(), KeyError>| r.map_err(|e| e.to_string());
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").expect("write");
        let under_a_file = file.join("keys");
        let opened = text(KeyRing::open(&under_a_file).map(|_| ()));
        let prefix = format!(
            "cannot create the key directory {}: ",
            under_a_file.display()
        );
        assert!(
            matches!(&opened, Err(m) if m.starts_with(&prefix) && m.ends_with(" (pass --keys DIR)")),
            "{opened:?}"
        );
        let loaded = text(load_key("k1", b"not a key").map(|_| ()));
        assert!(
            matches!(&loaded, Err(m) if m.starts_with("key k1 is not an Ed25519 PKCS#8 key: ")),
            "{loaded:?}"
        );
        std::fs::write(dir.path().join(format!("k2{KEY_SUFFIX}")), b"junk").expect("write");
        let scanned = text(scan(dir.path()).map(|_| ()));
        assert!(
            matches!(&scanned, Err(m) if m.starts_with("key k2 is not an Ed25519 PKCS#8 key: ")),
            "{scanned:?}"
        );
    }
}
