//! # strata-blobs — blob storage
//!
//! Tier: blobs (the photos' bytes). Depends on `strata-core` and `strata-engines` only (for
//! [`node`], the SeaweedFS role); the web tier and the workers depend on it. It is a crate of its own, not a module of the queue or of the photo
//! pipeline, because it is a storage tier with engines of its own (the filesystem, and an
//! S3-compatible service) that the web tier, the workers and later the CDN edge all read,
//! and none of them should pull in the others to get at it.
//!
//! [`BlobStore`] holds immutable blobs under **content-addressed keys** ([`BlobKey`]: the
//! SHA-256 of the bytes). So a key names one content forever — URLs built from it can be
//! cached as immutable — and writing the same bytes twice is harmless (a worker that processes
//! a job twice stores nothing new). Guarantees every engine keeps (checked by the suite in
//! [`conformance`]):
//! - a `put` that returned is durable, and **a blob is either entirely visible or not at all**:
//!   a writer that dies halfway leaves nothing readable under any key;
//! - what `get` returns hashes to its key (both engines check on every read);
//! - blobs are bounded in size ([`BlobError::TooLarge`]).
//!
//! Engines:
//! - [`fs::FsBlobStore`] (embedded default): one file per blob, written to `tmp/`, fsynced and
//!   renamed into place;
//! - [`s3::S3BlobStore`]: one object per blob in a bucket of an S3-compatible service
//!   (SeaweedFS, or the user's S3), each put a single atomic `PUT`, every call with a
//!   deadline; tested against a real SeaweedFS killed with SIGKILL under writers.
//!
//! `docs/blobs.md` lists each guarantee with its test, and what differs between the engines.

use std::fmt;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

pub mod conformance;
pub mod fs;
pub mod node;
pub mod s3;

/// A blob's name: the lower-case hex SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey(String);

/// Text that is not a blob key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a blob key: expected 64 lower-case hexadecimal digits (a SHA-256)")]
pub struct InvalidBlobKey(pub String);

impl BlobKey {
    /// The key of some bytes.
    pub fn of(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        let mut hex = String::with_capacity(64);
        for b in digest {
            hex.push_str(&format!("{b:02x}"));
        }
        Self(hex)
    }

    /// Checks text as a key (from a URL, a database row).
    pub fn parse(text: &str) -> Result<Self, InvalidBlobKey> {
        if text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(text.to_string()))
        } else {
            Err(InvalidBlobKey(text.to_string()))
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for BlobKey {
    type Err = InvalidBlobKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Larger than the store accepts.
    #[error("blob of {size} bytes is larger than the store's limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The stored bytes no longer hash to their key (disk corruption, tampering).
    #[error("blob {key} is corrupt: its bytes no longer hash to its key")]
    Corrupt { key: BlobKey },
    /// The engine failed (disk full, permissions, connection).
    #[error("blob store: {0}")]
    Engine(String),
}

/// Immutable, content-addressed blobs.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores the bytes durably and returns their key; storing bytes already there is a no-op.
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobKey, BlobError>;

    /// The bytes under a key, if there are any.
    async fn get(&self, key: &BlobKey) -> Result<Option<Vec<u8>>, BlobError>;

    /// Whether a blob is there, without reading it.
    async fn exists(&self, key: &BlobKey) -> Result<bool, BlobError>;

    /// Removes a blob; `false` if there was none.
    async fn delete(&self, key: &BlobKey) -> Result<bool, BlobError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_the_sha256_of_the_bytes_and_parses_back() {
        let key = BlobKey::of(b"abc");
        assert_eq!(
            key.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(BlobKey::parse(key.as_str()), Ok(key));
    }

    #[test]
    fn text_that_is_not_a_key_is_refused() {
        for bad in [
            "",
            "abc",
            &"A".repeat(64),
            &"g".repeat(64),
            &"a".repeat(65),
            "../../etc/passwd",
        ] {
            assert!(BlobKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
