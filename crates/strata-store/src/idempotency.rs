//! Idempotency records: what lets the web tier execute a `POST` or `PATCH` that carries an
//! `Idempotency-Key` once, whichever API server each attempt reaches.
//!
//! A record lives in the shared session store (the store every API server of a deployment
//! shares: the SQLite file or the PostgreSQL database, or Redis) under a scoped key
//! (`u<user>:<key>`, or `anon:<key>`). It holds the request's fingerprint, an id reserved for
//! the resource the request may create, and either a *claim* (an API server is executing the
//! request: its random owner token and until when the claim holds) or the *outcome* (the
//! response to replay). [`IdempotencyStore::begin_idempotent`] is one atomic step on every
//! engine — SQL: one `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING`; Redis: one Lua script —
//! so of many simultaneous attempts exactly one gets [`Begin::Started`].
//!
//! - A record is kept for `record_ttl` (24 h in the web tier) from its first claim, then
//!   forgotten: a later request with that key starts afresh.
//! - A claim lapses at `claim_until`; the next attempt then takes it over and gets the same
//!   reserved id back, so a re-execution recreates the same resource, never a second one.
//! - [`IdempotencyStore::abandon_idempotent`] ends a claim at once (its server answered 5xx, or
//!   gave up on the request) and keeps the reserved id for the next attempt.
//! - Only the claim's owner can finish or abandon it: a server whose claim lapsed and was taken
//!   over cannot overwrite the newer attempt's outcome.

use std::time::Duration;

use async_trait::async_trait;

use crate::StoreError;

/// A response as kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// The headers worth replaying (names lowercase), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// Headers as stored: one `name: value` line each (header values cannot hold a newline).
    pub fn headers_text(&self) -> String {
        self.headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect()
    }

    /// Headers back from their stored text; lines that are not `name: value` are skipped.
    pub fn headers_from_text(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }
}

/// One attempt to start a request under a key.
#[derive(Debug, Clone)]
pub struct Claim {
    /// SHA-256 (hex) of what makes the request the same request.
    pub fingerprint: String,
    /// Random, unique to this attempt: only it may finish or abandon the claim.
    pub owner: String,
    /// The id this attempt would reserve if it is the first one.
    pub resource_id: u64,
    pub now_ms: u64,
    /// How long the claim holds unless finished or abandoned.
    pub claim_ttl: Duration,
    /// How long the record is kept, from its first claim.
    pub record_ttl: Duration,
}

/// What [`IdempotencyStore::begin_idempotent`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// This attempt holds the claim: execute the request with this reserved id (the one
    /// proposed, or the one an earlier, lapsed attempt reserved).
    Started { resource_id: u64 },
    /// Another attempt holds a live claim.
    InProgress,
    /// The request was executed; here is its response.
    Done(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
}

/// Idempotency records, kept by every session store (see the module doc).
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for this attempt, atomically (see [`Begin`]).
    async fn begin_idempotent(&self, key: &str, claim: &Claim) -> Result<Begin, StoreError>;

    /// Stores the outcome of the claim `owner` holds on `key`; false (and nothing stored) when
    /// the claim is no longer this owner's, or the record is gone.
    async fn finish_idempotent(
        &self,
        key: &str,
        owner: &str,
        response: &StoredResponse,
    ) -> Result<bool, StoreError>;

    /// Ends the claim `owner` holds on `key` now, keeping the record (and its reserved id) for
    /// the next attempt. Nothing happens if the claim is not this owner's.
    async fn abandon_idempotent(&self, key: &str, owner: &str) -> Result<(), StoreError>;
}

/// The idempotency suite, written once for every engine.
pub mod contract {
    use super::*;

    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn claim(fingerprint: &str, owner: &str, id: u64, now: u64) -> Claim {
        Claim {
            fingerprint: fingerprint.to_owned(),
            owner: owner.to_owned(),
            resource_id: id,
            now_ms: now,
            claim_ttl: Duration::from_secs(30),
            record_ttl: Duration::from_secs(3600),
        }
    }

    fn response(body: &str) -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("location".into(), "/users/77".into()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    async fn begin(store: &dyn IdempotencyStore, key: &str, c: &Claim) -> Begin {
        store
            .begin_idempotent(key, c)
            .await
            .unwrap_or_else(|e| panic!("begin_idempotent {key}: {e}"))
    }

    /// Runs every idempotency check against a store with no records.
    pub async fn idempotency(store: &dyn IdempotencyStore) {
        let now = now_ms();
        // First claim starts; a second attempt while it holds is in progress; another request
        // under the same key is a mismatch.
        let k = "u1:first";
        assert_eq!(
            begin(store, k, &claim("fp-a", "o1", 77, now)).await,
            Begin::Started { resource_id: 77 }
        );
        assert_eq!(
            begin(store, k, &claim("fp-a", "o2", 78, now + 1)).await,
            Begin::InProgress,
            "a live claim makes a duplicate wait"
        );
        assert_eq!(
            begin(store, k, &claim("fp-b", "o3", 79, now + 1)).await,
            Begin::Mismatch,
            "the same key for another request"
        );
        // Only the owner finishes; then every attempt gets the response back.
        let done = response("{\"id\":77}\n\u{1}binary\u{0}");
        assert_eq!(
            store.finish_idempotent(k, "o2", &done).await.ok(),
            Some(false),
            "another attempt cannot finish the claim"
        );
        assert_eq!(
            store.finish_idempotent(k, "o1", &done).await.ok(),
            Some(true)
        );
        assert_eq!(
            begin(store, k, &claim("fp-a", "o4", 80, now + 2)).await,
            Begin::Done(done.clone()),
            "a finished request is replayed, byte for byte"
        );
        assert_eq!(
            store
                .finish_idempotent(k, "o1", &response("other"))
                .await
                .ok(),
            Some(false),
            "an outcome is stored once"
        );
        assert_eq!(
            begin(store, k, &claim("fp-b", "o5", 81, now + 2)).await,
            Begin::Mismatch
        );
        // Scopes are keys: the same client key under another user is independent.
        assert_eq!(
            begin(store, "u2:first", &claim("fp-b", "o6", 82, now)).await,
            Begin::Started { resource_id: 82 }
        );

        // A claim lapses: the next attempt takes it over with the id the first one reserved,
        // and the lapsed owner can no longer finish it.
        let k = "u1:lapse";
        let short = Claim {
            claim_ttl: Duration::from_millis(100),
            ..claim("fp-l", "l1", 90, now)
        };
        assert_eq!(
            begin(store, k, &short).await,
            Begin::Started { resource_id: 90 }
        );
        assert_eq!(
            begin(store, k, &claim("fp-l", "l2", 91, now + 50)).await,
            Begin::InProgress
        );
        assert_eq!(
            begin(store, k, &claim("fp-l", "l3", 92, now + 100)).await,
            Begin::Started { resource_id: 90 },
            "a lapsed claim is taken over with the reserved id"
        );
        assert_eq!(
            store
                .finish_idempotent(k, "l1", &response("late"))
                .await
                .ok(),
            Some(false),
            "the lapsed owner cannot store its outcome"
        );
        assert_eq!(
            begin(store, k, &claim("fp-x", "l4", 93, now + 200)).await,
            Begin::Mismatch,
            "a lapsed claim still belongs to its request"
        );

        // Abandoning ends the claim at once and keeps the reserved id; only the owner can.
        let k = "u1:abandon";
        assert_eq!(
            begin(store, k, &claim("fp-ab", "a1", 100, now)).await,
            Begin::Started { resource_id: 100 }
        );
        store
            .abandon_idempotent(k, "someone-else")
            .await
            .unwrap_or_else(|e| panic!("abandon_idempotent: {e}"));
        assert_eq!(
            begin(store, k, &claim("fp-ab", "a2", 101, now + 1)).await,
            Begin::InProgress,
            "only the owner abandons"
        );
        store
            .abandon_idempotent(k, "a1")
            .await
            .unwrap_or_else(|e| panic!("abandon_idempotent: {e}"));
        assert_eq!(
            begin(store, k, &claim("fp-ab", "a3", 102, now + 1)).await,
            Begin::Started { resource_id: 100 },
            "an abandoned claim is taken at once, with the reserved id"
        );

        // Records expire: after record_ttl the key starts afresh, even for another request.
        let k = "u1:expire";
        let brief = Claim {
            record_ttl: Duration::from_millis(300),
            ..claim("fp-e", "e1", 110, now_ms())
        };
        assert_eq!(
            begin(store, k, &brief).await,
            Begin::Started { resource_id: 110 }
        );
        assert_eq!(
            store.finish_idempotent(k, "e1", &response("e")).await.ok(),
            Some(true)
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match begin(store, k, &claim("fp-f", "e2", 111, now_ms())).await {
                Begin::Started { resource_id } => {
                    assert_eq!(resource_id, 111, "an expired record's id is not reused");
                    break;
                }
                Begin::Mismatch => {}
                other => panic!("an expiring record answers Mismatch, then Started: {other:?}"),
            }
            assert!(
                std::time::Instant::now() < deadline && attempts < 200,
                "the record did not expire within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Claiming is atomic: of 50 simultaneous attempts exactly one starts.
        let k = "u1:concurrent";
        let claims: Vec<Claim> = (0..50)
            .map(|i| claim("fp-c", &format!("c{i}"), 200 + i, now))
            .collect();
        let outcomes =
            futures_util::future::join_all(claims.iter().map(|c| store.begin_idempotent(k, c)))
                .await;
        let started = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Begin::Started { .. })))
            .count();
        let waiting = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Begin::InProgress)))
            .count();
        assert_eq!(
            (started, waiting),
            (1, 49),
            "one attempt starts, the others wait: {outcomes:?}"
        );
    }
}
