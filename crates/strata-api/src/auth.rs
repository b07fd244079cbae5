//! Authentication: passwords, access tokens, refresh tokens, cookies and CSRF, and the
//! [`Principal`] a handler gets for an authenticated request.
//!
//! - **Passwords** are hashed with argon2id ([`PasswordPolicy`]: 19 MiB, 2 passes, 1 lane by
//!   default — OWASP's minimum), on the blocking pool, at most one hash per core at a time; a
//!   login that cannot get a turn within 2 s gets 503. Unknown emails are checked against a
//!   dummy hash so that both answers take as long.
//! - **Access tokens** are JWTs signed with Ed25519 (`alg` pinned to `EdDSA`; `kid` names the
//!   key, see [`crate::keys`]), with `iss`, `aud`, `sub` (the user id), `sid` (the session),
//!   `roles`, `iat`, `exp`. A request's token is checked for signature, algorithm, issuer,
//!   audience and expiry; its session is looked up in the shared session store and its account
//!   in the account store, both at once: a logged out or revoked session, a deleted account or a
//!   withdrawn role stops counting at once, on every server. The token's `roles` claim tells
//!   clients what they held when it was issued; rights come from the account as it is now.
//! - **Refresh tokens** are opaque: `rt1.<session id>.<32 random bytes>`; only the SHA-256 of the
//!   random part is stored. Each use rotates it; replaying an old one revokes the session.
//! - **Browser mode**: tokens travel in `HttpOnly; Secure; SameSite=Strict` cookies, and every
//!   unsafe request authenticated by cookie must repeat the session's CSRF token in
//!   `X-CSRF-Token` (the token is derived from the refresh secret; its hash rides in the access
//!   token, so checking it needs no lookup).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use strata_core::user::UserId;
use strata_store::accounts::{ADMIN_ROLE, AccountStore, SessionStore, now_ms};
use subtle::ConstantTimeEq;

use crate::client::TrustedProxies;
use crate::keys::KeyRing;
use crate::problem::ApiError;

/// Who issues and who accepts access tokens.
pub const ISSUER: &str = "strata";
pub const AUDIENCE: &str = "strata-api";
/// Cookie names. `__Host-` pins a cookie to this host, path `/` and HTTPS.
pub const ACCESS_COOKIE: &str = "__Host-strata-access";
pub const REFRESH_COOKIE: &str = "__Host-strata-refresh";
pub const CSRF_COOKIE: &str = "__Host-strata-csrf";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");
/// Longest accepted password, in characters (argon2 takes any length; bounding it bounds work).
pub const PASSWORD_MAX_CHARS: usize = 128;
pub const PASSWORD_MIN_CHARS: usize = 8;
/// Longest accepted token or cookie value.
const TOKEN_MAX_BYTES: usize = 4096;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    pub memory_kib: u32,
    pub iterations: u32,
    pub lanes: u32,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            lanes: 1,
        }
    }
}

/// Everything authentication is configured with.
#[derive(Clone)]
pub struct AuthConfig {
    pub keys: KeyRing,
    pub sessions: Arc<dyn SessionStore>,
    /// Accounts (roles, password hashes): read on every authenticated request.
    pub accounts: Arc<dyn AccountStore>,
    pub password: PasswordPolicy,
    pub access_ttl: Duration,
    pub session_ttl: Duration,
    /// Failed logins per account (per email, registered or not) within `failure_window`.
    pub max_failures_per_account: u64,
    /// Failed logins per client address within `failure_window`.
    pub max_failures_per_ip: u64,
    pub failure_window: Duration,
    /// The proxies whose `X-Forwarded-For`/`Forwarded` name the client (see [`crate::client`]).
    pub trusted_proxies: TrustedProxies,
    /// Concurrent argon2 computations.
    hashing: Arc<tokio::sync::Semaphore>,
    dummy_hash: Arc<tokio::sync::OnceCell<String>>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("password", &self.password)
            .field("access_ttl", &self.access_ttl)
            .finish_non_exhaustive()
    }
}

impl AuthConfig {
    pub fn new(
        keys: KeyRing,
        sessions: Arc<dyn SessionStore>,
        accounts: Arc<dyn AccountStore>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            keys,
            sessions,
            accounts,
            password: PasswordPolicy::default(),
            access_ttl: Duration::from_secs(10 * 60),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            max_failures_per_account: 5,
            max_failures_per_ip: 50,
            failure_window: Duration::from_secs(15 * 60),
            trusted_proxies: TrustedProxies::NONE,
            hashing: Arc::new(tokio::sync::Semaphore::new(cores)),
            dummy_hash: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    fn argon2(&self) -> Result<argon2::Argon2<'static>, ApiError> {
        let p = self.password;
        let params = argon2::Params::new(p.memory_kib, p.iterations, p.lanes, None)
            .map_err(|e| ApiError::Internal(format!("argon2 parameters: {e}")))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }

    /// Runs one argon2 computation on the blocking pool, waiting at most 2 s for a turn.
    async fn with_hasher<T: Send + 'static>(
        &self,
        work: impl FnOnce(argon2::Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let argon = self.argon2()?;
        let permit =
            tokio::time::timeout(Duration::from_secs(2), self.hashing.clone().acquire_owned())
                .await
                .map_err(|_| {
                    ApiError::Unavailable("every password hasher stayed busy for 2 s".into())
                })?
                .map_err(|_| ApiError::Unavailable("the password hasher is closed".into()))?;
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(argon)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("the password hasher failed: {e}")))?;
        metrics::histogram!("strata_auth_password_hash_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(result)
    }

    /// An argon2id PHC string for `password`.
    pub async fn hash_password(&self, password: &str) -> Result<String, ApiError> {
        use argon2::PasswordHasher as _;
        let password = password.to_owned();
        self.with_hasher(move |argon| {
            let mut bytes = [0u8; 16];
            rand::fill(&mut bytes);
            let salt = argon2::password_hash::SaltString::encode_b64(&bytes)
                .map_err(|e| ApiError::Internal(format!("argon2 salt: {e}")))?;
            argon
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| ApiError::Internal(format!("argon2: {e}")))
        })
        .await?
    }

    /// Whether `password` matches `hash` (constant time inside argon2). `None` checks against a
    /// dummy hash and answers false, taking as long as a real check.
    pub async fn verify_password(
        &self,
        password: &str,
        hash: Option<&str>,
    ) -> Result<bool, ApiError> {
        use argon2::PasswordVerifier as _;
        let hash = match hash {
            Some(h) => h.to_owned(),
            None => {
                let dummy = self
                    .dummy_hash
                    .get_or_try_init(|| self.hash_password("not a password of anyone"))
                    .await?;
                dummy.clone()
            }
        };
        let real = !hash.is_empty();
        let password = password.to_owned();
        let matched = self
            .with_hasher(move |argon| {
                argon2::PasswordHash::new(&hash)
                    .map(|parsed| argon.verify_password(password.as_bytes(), &parsed).is_ok())
                    .unwrap_or(false)
            })
            .await?;
        Ok(matched && real)
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id, in decimal.
    pub sub: String,
    /// The session.
    pub sid: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub iat: u64,
    pub exp: u64,
    /// SHA-256 (base64url) of the session's CSRF token; browser sessions only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf: Option<String>,
}

fn sha256_b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(data))
}

/// The stored form of a refresh secret.
pub fn refresh_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The CSRF token of a browser session at this refresh generation.
pub fn csrf_token(secret: &str) -> String {
    sha256_b64(format!("strata-csrf:{secret}").as_bytes())
}

/// A new random value, base64url.
pub fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A new session id: 32 hex digits.
pub fn new_session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A refresh token's parts.
pub struct RefreshToken {
    pub session_id: String,
    pub secret: String,
}

impl RefreshToken {
    pub fn new(session_id: &str) -> Self {
        Self {
            session_id: session_id.to_owned(),
            secret: random_b64(32),
        }
    }

    pub fn encode(&self) -> String {
        format!("rt1.{}.{}", self.session_id, self.secret)
    }

    /// Parses `rt1.<32 hex>.<base64url>`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() > TOKEN_MAX_BYTES {
            return None;
        }
        let mut parts = text.splitn(3, '.');
        let (tag, sid, secret) = (parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let b64 = |s: &str| {
            (20..=100).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (tag == "rt1" && hex(sid) && b64(secret)).then(|| Self {
            session_id: sid.to_ascii_lowercase(),
            secret: secret.to_owned(),
        })
    }
}

/// Signs an access token for this user and session.
pub fn issue_access_token(
    auth: &AuthConfig,
    user: UserId,
    session_id: &str,
    roles: &[String],
    csrf: Option<&str>,
) -> Result<String, ApiError> {
    let now = now_ms() / 1000;
    let claims = Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: user.to_string(),
        sid: session_id.to_owned(),
        roles: roles.to_vec(),
        iat: now,
        exp: now + auth.access_ttl.as_secs(),
        csrf: csrf.map(|t| sha256_b64(t.as_bytes())),
    };
    sign_claims(&auth.keys, &claims)
}

/// Signs any claims with the newest key (also what tests use to make expired tokens).
pub fn sign_claims(keys: &KeyRing, claims: &Claims) -> Result<String, ApiError> {
    let (kid, key) = keys
        .signing()
        .ok_or_else(|| ApiError::Internal("no signing key".into()))?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid);
    jsonwebtoken::encode(&header, claims, &key)
        .map_err(|e| ApiError::Internal(format!("cannot sign a token: {e}")))
}

/// Checks an access token's signature, algorithm, key, issuer, audience and expiry.
pub fn verify_access_token(keys: &KeyRing, token: &str) -> Result<Claims, ApiError> {
    let bad = |why: &str| ApiError::Unauthenticated(format!("The access token {why}."));
    if token.len() > TOKEN_MAX_BYTES {
        return Err(bad("is too long"));
    }
    // The header is parsed first only to find the key; the algorithm is pinned below, so a
    // token saying `none` or `HS256` never reaches a verifier.
    let header = jsonwebtoken::decode_header(token).map_err(|_| bad("is malformed"))?;
    if header.alg != jsonwebtoken::Algorithm::EdDSA {
        return Err(bad("uses an algorithm other than EdDSA"));
    }
    let kid = header.kid.ok_or_else(|| bad("names no key (kid)"))?;
    let key = keys
        .verifying(&kid)
        .ok_or_else(|| bad("is signed by an unknown key"))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 5;
    jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => bad("has expired"),
            jsonwebtoken::errors::ErrorKind::InvalidSignature => bad("has an invalid signature"),
            _ => bad("is not valid"),
        })
}

/// The value of cookie `name`, if sent (the first one).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &'a str) -> Option<&'a str> {
    cookies(headers, name).next()
}

/// Every value sent for cookie `name`, in order.
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: HttpOnly unless it is the CSRF cookie, which scripts must read.
pub fn set_cookie(name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let http_only = if name == CSRF_COOKIE {
        ""
    } else {
        "; HttpOnly"
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={}; Secure; SameSite=Strict{http_only}",
        max_age.as_secs()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// Whether a method changes state (and so needs CSRF protection when cookies authenticate it).
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Compares two strings in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserId,
    pub session_id: String,
    pub roles: Vec<String>,
    /// Authenticated by cookie (browser mode) rather than by `Authorization`.
    pub by_cookie: bool,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    /// May this caller change user `id`'s profile?
    pub fn may_change(&self, id: UserId) -> Result<(), ApiError> {
        if self.user == id || self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "You may change only your own profile (user {}), not user {id}.",
                self.user
            )))
        }
    }

    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("Only an admin may {what}.")))
        }
    }
}

/// Authenticates a request from its parts.
pub async fn authenticate(auth: &AuthConfig, parts: &Parts) -> Result<Principal, ApiError> {
    let bearer = match parts.headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                ApiError::Unauthenticated("The Authorization header is not valid text.".into())
            })?;
            let (scheme, token) = text.split_once(' ').ok_or_else(|| {
                ApiError::Unauthenticated("Authorization must be `Bearer <access token>`.".into())
            })?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(ApiError::Unauthenticated(
                    "Authorization must use the Bearer scheme.".into(),
                ));
            }
            Some(token.trim())
        }
    };
    let (token, by_cookie) = match bearer {
        Some(t) => (t, false),
        None => match cookie(&parts.headers, ACCESS_COOKIE) {
            Some(t) => (t, true),
            None => {
                return Err(ApiError::Unauthenticated(
                    "This request needs an access token (Authorization: Bearer, or the session cookie).".into(),
                ));
            }
        },
    };
    let claims = verify_access_token(&auth.keys, token)?;
    if by_cookie && is_unsafe(&parts.method) {
        let sent = parts
            .headers
            .get(&CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::CsrfRejected)?;
        let expected = claims.csrf.as_deref().ok_or(ApiError::CsrfRejected)?;
        if !same(&sha256_b64(sent.as_bytes()), expected) {
            return Err(ApiError::CsrfRejected);
        }
    }
    let user: UserId = claims
        .sub
        .parse::<u64>()
        .map(UserId)
        .map_err(|_| ApiError::Unauthenticated("The access token names no user.".into()))?;
    // Both point reads at once: the session (logged out, revoked, expired?) and the account
    // (deleted? which roles now?). A token proves who signed in, not what they may still do.
    let (session, account) = tokio::join!(
        auth.sessions.session(&claims.sid),
        auth.accounts.account(user)
    );
    match session? {
        Some(s) if s.user_id == user && s.is_active(now_ms()) => {}
        _ => {
            return Err(ApiError::Unauthenticated(
                "The session of this access token has ended (logged out, revoked or expired)."
                    .into(),
            ));
        }
    }
    let account = account?.ok_or_else(|| {
        ApiError::Unauthenticated("The account of this access token no longer exists.".into())
    })?;
    Ok(Principal {
        user,
        session_id: claims.sid,
        roles: account.roles,
        by_cookie,
    })
}

/// A handler that takes a [`Principal`] gets only authenticated requests, from any state that
/// holds the authentication settings.
impl<S> FromRequestParts<S> for Principal
where
    S: AsRef<AuthConfig> + Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // Authenticated already by a middleware in front of the handler (an idempotency key's
        // scope is its user): the same request, checked once.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        authenticate(state.as_ref(), parts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_parse_only_in_their_own_shape() {
        let t = RefreshToken::new(&new_session_id());
        let parsed = RefreshToken::parse(&t.encode()).expect("parses");
        assert_eq!(parsed.session_id, t.session_id);
        assert_eq!(parsed.secret, t.secret);
        for bad in [
            "",
            "rt1",
            "rt1..x",
            "rt2.0123456789abcdef0123456789abcdef.aaaaaaaaaaaaaaaaaaaaaaaa",
            "rt1.0123456789abcdef0123456789abcdeg.aaaaaaaaaaaaaaaaaaaaaaaa",
            "rt1.0123456789abcdef0123456789abcdef.short",
            "rt1.0123456789abcdef0123456789abcdef.aaaaaaaaaaaaaaaaaaaa aaaa",
        ] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn comparisons_are_exact() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }
}
