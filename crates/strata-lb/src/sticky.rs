//! Sticky sessions: a signed cookie names the backend that served a client, so its next
//! requests go there too.
//!
//! The cookie value is `base64url(backend name) . base64url(HMAC-SHA256(key, name)[..16])`:
//! it names the backend by its configured name, never its address, and a client cannot forge
//! or alter it (a cookie that fails the check is ignored). When the named backend is not
//! eligible (unhealthy, ejected, draining, removed) the request goes to the algorithm's choice
//! and the cookie is renewed to name the new backend.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const TAG_BYTES: usize = 16;

/// Makes a key file for `--sticky-key-file` (32 random bytes as 64 hex digits, mode 0600)
/// unless `path` is there already: balancers that read one file honour each other's cookies,
/// and a key kept across restarts keeps clients on their backends.
pub fn make_key_file(path: &std::path::Path) -> anyhow::Result<()> {
    use rand::Rng as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    let mut key = [0u8; 32];
    rand::rng().fill(&mut key);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(hex.as_bytes()))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Sticky-session settings of a pool.
#[derive(Clone)]
pub struct Sticky {
    pub cookie: String,
    key: [u8; 32],
}

impl std::fmt::Debug for Sticky {
    // The key is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sticky")
            .field("cookie", &self.cookie)
            .finish_non_exhaustive()
    }
}

impl Sticky {
    /// With an explicit key (several balancers sharing one key honour each other's cookies).
    pub fn with_key(cookie: impl Into<String>, key: [u8; 32]) -> Self {
        Self {
            cookie: cookie.into(),
            key,
        }
    }

    /// With a random key: cookies are valid for this process's lifetime.
    pub fn random(cookie: impl Into<String>) -> Self {
        use rand::Rng as _;
        let mut key = [0u8; 32];
        rand::rng().fill(&mut key);
        Self::with_key(cookie, key)
    }

    fn tag(&self, name: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(name);
        mac.finalize().into_bytes()[..TAG_BYTES].to_vec()
    }

    /// The cookie value that names `backend`.
    pub fn value_for(&self, backend: &str) -> String {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(backend),
            URL_SAFE_NO_PAD.encode(self.tag(backend.as_bytes()))
        )
    }

    /// The backend a cookie value names, if the signature checks out.
    pub fn backend_in(&self, value: &str) -> Option<String> {
        let (name, tag) = value.split_once('.')?;
        let name = URL_SAFE_NO_PAD.decode(name).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).ok()?;
        mac.update(&name);
        // Constant-time comparison of the truncated tag.
        mac.verify_truncated_left(&tag).ok()?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        String::from_utf8(name).ok()
    }

    /// Finds this pool's cookie among the request's `Cookie` headers.
    pub fn from_headers(&self, headers: &http::HeaderMap) -> Option<String> {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == self.cookie).then(|| self.backend_in(v))?
            })
    }

    /// The `Set-Cookie` value that pins a client to `backend`.
    pub fn set_cookie(&self, backend: &str) -> String {
        format!(
            "{}={}; Path=/; HttpOnly; SameSite=Lax",
            self.cookie,
            self.value_for(backend)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_cookie_round_trips_and_a_tampered_one_is_ignored() {
        let s = Sticky::with_key("srv", [7; 32]);
        let v = s.value_for("api-2");
        assert!(!v.contains("api-2"), "the name is encoded, not shown: {v}");
        assert_eq!(s.backend_in(&v).as_deref(), Some("api-2"));
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode("api-3"),
            v.split_once('.').expect("dot").1
        );
        assert_eq!(s.backend_in(&forged), None);
        assert_eq!(s.backend_in("garbage"), None);
        assert_eq!(
            Sticky::with_key("srv", [8; 32]).backend_in(&v),
            None,
            "another key rejects it"
        );
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            http::HeaderValue::from_str(&format!("a=1; srv={v}")).expect("ascii"),
        );
        assert_eq!(s.from_headers(&h).as_deref(), Some("api-2"));
    }
}
