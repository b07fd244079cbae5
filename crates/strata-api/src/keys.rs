//! Signing keys for access tokens: Ed25519 (JWS `EdDSA`), one file per key in a directory every
//! API server of a deployment reads.
//!
//! - A key file is `<kid>.ed25519` holding the PKCS#8 document (mode 0600). Key ids are the
//!   creation time in milliseconds plus a random suffix, so names sort by age.
//! - The newest key signs; every key in the directory verifies. [`rotate`] adds a key and keeps
//!   the newest [`KEEP_KEYS`]: tokens signed by a key that was pruned stop verifying. So at most
//!   two rotations fit in one access-token lifetime: a third would prune the key that signed
//!   until the first, whose tokens may still be live — [`rotate`] refuses it unless forced.
//! - [`revoke`] removes one key at once (after making a new signing key if it was the newest):
//!   every token it signed stops verifying, everywhere, within [`CHECK_EVERY`] plus one scan.
//! - Servers look at the directory's modification time at most every [`CHECK_EVERY`] (one
//!   `stat`) and read it again when it changed, when it changed less than a second ago (so two
//!   changes within one clock tick are not missed), or every [`RESCAN_EVERY`] regardless; and at
//!   once (at most every 100 ms) when a token names a key id they do not know — so a key added
//!   or revoked on one machine is seen everywhere without a restart. `strata up` makes the first
//!   key before it starts the API servers, so that they share it from the start.
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
/// How often a server reads the key directory even when its modification time says nothing
/// changed.
pub const RESCAN_EVERY: Duration = Duration::from_secs(10);
/// How often a server checks whether the key directory changed (one `stat`): the bound on how
/// long a revoked key keeps verifying, or a rotated one keeps signing.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);
/// A directory changed less than this long ago is read again at every check.
const SETTLE: Duration = Duration::from_secs(1);
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
    /// [`revoke`] was given a key id the directory does not hold.
    #[error("{} holds no key {kid}; its keys are: {}", dir.display(), known.join(", "))]
    UnknownKey {
        dir: PathBuf,
        kid: String,
        known: Vec<String>,
    },
    /// [`rotate`] would prune a key whose tokens may still be live.
    #[error(
        "rotating now would retire key {pruned}, which signed tokens until {} s ago — they may \
         still be live (access tokens last {} s): rotate at most twice per access-token lifetime, \
         wait {} s, or force it (revoke-key retires one key on purpose)",
        signed_until_ago.as_secs(), access_ttl.as_secs(), access_ttl.saturating_sub(*signed_until_ago).as_secs().max(1)
    )]
    TooSoon {
        pruned: String,
        signed_until_ago: Duration,
        access_ttl: Duration,
    },
    #[error("cannot remove {}: {error}", path.display())]
    Remove {
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
    set: Arc<Mutex<Loaded>>,
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

/// When a key was made, from its id (milliseconds since the epoch).
fn created_ms(kid: &str) -> Option<u64> {
    kid.split('-').next()?.parse().ok()
}

/// Adds a new newest key to `dir` (creating it) and prunes all but the newest [`KEEP_KEYS`].
/// Returns the new key id.
///
/// With `access_ttl` given, refuses ([`KeyError::TooSoon`]) when a key it would prune signed
/// tokens less than `access_ttl` (plus [`CHECK_EVERY`], the servers' pick-up delay) ago; `None`
/// forces the rotation.
pub fn rotate(dir: &Path, access_ttl: Option<Duration>) -> Result<String, KeyError> {
    if let Some(access_ttl) = access_ttl
        && dir.is_dir()
    {
        let kids = key_ids(dir)?;
        // After adding one, the oldest `len + 1 - KEEP_KEYS` go; the youngest of them signed
        // until the key after it was made.
        if kids.len() >= KEEP_KEYS {
            let pruned = &kids[kids.len() - KEEP_KEYS];
            let successor = &kids[kids.len() - KEEP_KEYS + 1];
            let now = strata_store::accounts::now_ms();
            let ago = Duration::from_millis(now.saturating_sub(created_ms(successor).unwrap_or(0)));
            if ago < access_ttl + CHECK_EVERY {
                return Err(KeyError::TooSoon {
                    pruned: pruned.clone(),
                    signed_until_ago: ago,
                    access_ttl,
                });
            }
        }
    }
    let (kid, pkcs8) = generate()?;
    write_key(dir, &kid, &pkcs8)?;
    let kids = key_ids(dir)?;
    for old in kids.iter().take(kids.len().saturating_sub(KEEP_KEYS)) {
        let _ = std::fs::remove_file(dir.join(format!("{old}{KEY_SUFFIX}")));
    }
    Ok(kid)
}

/// What [`revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The key that signs from now on.
    pub signing: String,
    /// Whether that key was made for the purpose (the revoked key was the newest).
    pub made_new: bool,
}

/// Removes key `kid` from `dir`: every token it signed stops verifying on every server within
/// [`CHECK_EVERY`] and one directory scan. When it is the newest key, a new one is made first so
/// that servers keep signing.
pub fn revoke(dir: &Path, kid: &str) -> Result<Revoked, KeyError> {
    let kids = key_ids(dir)?;
    if !kids.iter().any(|k| k == kid) {
        return Err(KeyError::UnknownKey {
            dir: dir.to_owned(),
            kid: kid.to_owned(),
            known: kids,
        });
    }
    let newest = kids.last().map(String::as_str) == Some(kid);
    let signing = if newest {
        // Forced: the point is to retire a key now.
        rotate(dir, None)?
    } else {
        kids.last().cloned().unwrap_or_default()
    };
    let path = dir.join(format!("{kid}{KEY_SUFFIX}"));
    std::fs::remove_file(&path).map_err(|error| KeyError::Remove { path, error })?;
    // Make the removal durable, so that a crash cannot bring the key back.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Revoked {
        signing,
        made_new: newest,
    })
}

/// The directory's modification time, if it can be read.
fn modified(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(dir).and_then(|m| m.modified()).ok()
}

/// How urgently [`KeyRing::refresh`] looks at the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Before signing or verifying.
    Routine,
    /// A token names a key id the ring does not hold.
    Unknown,
    /// Read it now (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Now,
}

/// What a ring holds and when it last looked.
struct Loaded {
    set: KeySet,
    /// When the directory was last read.
    scanned: Instant,
    /// When its modification time was last looked at.
    checked: Instant,
    /// Its modification time when it was last read.
    mtime: Option<std::time::SystemTime>,
}

impl KeyRing {
    fn holding(dir: Option<PathBuf>, set: KeySet, mtime: Option<std::time::SystemTime>) -> Self {
        let now = Instant::now();
        Self {
            dir,
            set: Arc::new(Mutex::new(Loaded {
                set,
                scanned: now,
                checked: now,
                mtime,
            })),
        }
    }

    /// The keys in `dir`; when it holds none, one is created.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        std::fs::create_dir_all(dir).map_err(|error| KeyError::KeyDirectory {
            dir: dir.to_owned(),
            error,
        })?;
        if key_ids(dir)?.is_empty() {
            rotate(dir, None)?;
        }
        let mtime = modified(dir);
        let set = scan(dir)?;
        Ok(Self::holding(Some(dir.to_owned()), set, mtime))
    }

    /// A key that lives in memory only (tests, and a single server told to keep no files):
    /// tokens it signs die with the process.
    pub fn ephemeral() -> Result<Self, KeyError> {
        let (kid, pkcs8) = generate()?;
        let mut set = KeySet::default();
        set.keys.insert(kid.clone(), load_key(&kid, &pkcs8)?);
        Ok(Self::holding(None, set, None))
    }

    /// Reads the directory again if it is due. Normally ([`Look::Routine`]) its modification
    /// time is looked at most every [`CHECK_EVERY`], and it is read when that changed (or changed
    /// within the last second), or every [`RESCAN_EVERY`] regardless. For a key id the ring does
    /// not know ([`Look::Unknown`]) it is looked at every time and read when it changed or was
    /// last read 100 ms ago or more: a directory of three files is cheap to read, and the bound
    /// keeps garbage key ids from costing more.
    fn refresh(&self, look: Look) {
        let Some(dir) = &self.dir else { return };
        let mut loaded = self.set.lock().unwrap_or_else(|p| p.into_inner());
        if look == Look::Routine && loaded.checked.elapsed() < CHECK_EVERY {
            return;
        }
        loaded.checked = Instant::now();
        let mtime = modified(dir);
        let due = match look {
            Look::Now => true,
            Look::Unknown => {
                mtime != loaded.mtime || loaded.scanned.elapsed() >= Duration::from_millis(100)
            }
            Look::Routine => {
                let settling = mtime
                    .and_then(|m| m.elapsed().ok())
                    .is_none_or(|age| age < SETTLE);
                mtime != loaded.mtime || settling || loaded.scanned.elapsed() >= RESCAN_EVERY
            }
        };
        if !due {
            return;
        }
        loaded.scanned = Instant::now();
        // Taken before the scan: a change during it makes the next check read again.
        loaded.mtime = mtime;
        match scan(dir) {
            Ok(set) if !set.keys.is_empty() => loaded.set = set,
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
        self.refresh(Look::Routine);
        let loaded = self.set.lock().unwrap_or_else(|p| p.into_inner());
        loaded
            .set
            .keys
            .values()
            .next_back()
            .map(|k| (k.kid.clone(), k.encoding.clone()))
    }

    /// The verifying half of key `kid`; the directory is looked at as [`Self::refresh`] says.
    pub(crate) fn verifying(&self, kid: &str) -> Option<DecodingKey> {
        let known = |ring: &Self| {
            let loaded = ring.set.lock().unwrap_or_else(|p| p.into_inner());
            loaded.set.keys.get(kid).map(|k| k.decoding.clone())
        };
        self.refresh(Look::Routine);
        known(self).or_else(|| {
            self.refresh(Look::Unknown);
            known(self)
        })
    }

    /// The public keys as a JWK Set.
    pub fn jwks(&self) -> serde_json::Value {
        self.refresh(Look::Routine);
        let loaded = self.set.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<serde_json::Value> = loaded
            .set
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
            kids.push(rotate(dir.path(), None).expect("rotate"));
        }
        assert_eq!(key_ids(dir.path()).expect("ids"), kids[1..].to_vec());
        // The ring still signs with the old key until it reads the directory again.
        ring.refresh(Look::Now);
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
    fn rotation_refuses_to_retire_a_key_whose_tokens_may_still_be_live() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ttl = Some(Duration::from_secs(600));
        // Three keys made long ago (ids start with their creation time).
        for kid in [
            "0000000001000-0001",
            "0000000002000-0002",
            "0000000003000-0003",
        ] {
            let (_, pkcs8) = generate().expect("generate");
            write_key(dir.path(), kid, &pkcs8).expect("write");
        }
        // Retires the first, which stopped signing when the second was made: long ago.
        let fresh = rotate(dir.path(), ttl).expect("a rotation that retires an old key");
        // Would retire the second, which stopped signing long ago too.
        std::thread::sleep(Duration::from_millis(2));
        let fresher = rotate(dir.path(), ttl).expect("again");
        // Would retire the third, which signed until `fresh` was made a moment ago.
        let refused = rotate(dir.path(), ttl).map_err(|e| e.to_string());
        assert!(
            matches!(&refused, Err(m) if m.starts_with("rotating now would retire key 0000000003000-0003")
                && m.contains("access tokens last 600 s")),
            "{refused:?}"
        );
        assert_eq!(
            key_ids(dir.path()).expect("ids"),
            vec!["0000000003000-0003".to_owned(), fresh, fresher],
            "a refused rotation changes nothing"
        );
        rotate(dir.path(), None).expect("forced");
    }

    #[test]
    fn a_revoked_key_stops_verifying_on_every_ring_within_the_check_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (here, there) = (
            KeyRing::open(dir.path()).expect("open"),
            KeyRing::open(dir.path()).expect("open"),
        );
        let first = here.signing().expect("a key").0;
        std::thread::sleep(Duration::from_millis(2));
        let second = rotate(dir.path(), None).expect("rotate");
        assert!(here.verifying(&first).is_some() && there.verifying(&second).is_some());

        let revoked = revoke(dir.path(), &first).expect("revoke an older key");
        assert_eq!(
            revoked,
            Revoked {
                signing: second.clone(),
                made_new: false
            }
        );
        let deadline = Instant::now() + Duration::from_secs(1);
        while here.verifying(&first).is_some() || there.verifying(&first).is_some() {
            assert!(
                Instant::now() < deadline,
                "a revoked key still verifies after 1 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        // Revoking the signing key makes a new one first.
        let revoked = revoke(dir.path(), &second).expect("revoke the newest key");
        assert!(revoked.made_new && revoked.signing != second);
        let deadline = Instant::now() + Duration::from_secs(1);
        while there.signing().map(|k| k.0) != Some(revoked.signing.clone())
            || there.verifying(&second).is_some()
        {
            assert!(
                Instant::now() < deadline,
                "the ring neither signs with the new key nor stops verifying the old one"
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        let unknown = revoke(dir.path(), "no-such-key").map_err(|e| e.to_string());
        let expected = format!(
            "{} holds no key no-such-key; its keys are: {}",
            dir.path().display(),
            revoked.signing
        );
        assert_eq!(unknown, Err(expected));
    }

    #[test]
    fn a_key_another_server_added_verifies_without_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let here = KeyRing::open(dir.path()).expect("open");
        std::thread::sleep(Duration::from_millis(2));
        let theirs = rotate(dir.path(), None).expect("rotate");
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
