//! The PostgreSQL schema as versioned migrations: `strata_meta.schema_version` holds how many
//! are applied; `PgStore::migrate` applies the rest under an advisory lock.

/// Advisory lock key held while migrating ("strata" in ASCII).
pub(super) const MIGRATION_LOCK: i64 = 0x7374_7261_7461;
/// Advisory lock of a shard group's fences: every write of a fenced store holds it shared for
/// its transaction; adding or removing a fence, and starting a change capture, hold it
/// exclusively — so no write straddles a fence ("strafe").
pub(super) const FENCE_LOCK: i64 = 0x7374_7261_6665;
/// Advisory lock the change-capture trigger holds until its transaction ends, so changes are
/// numbered in commit order ("stracap"); taken only while a resharding captures.
#[allow(dead_code)] // The trigger's SQL spells it out; a test checks that they agree.
pub(super) const CAPTURE_LOCK: i64 = 0x73_7472_6163_6170;

/// Schema migrations, in order. `strata_meta.schema_version` holds how many are applied.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: users. `profile` is the canonical JSON profile (without the id).
    "CREATE TABLE users (
         id bigint PRIMARY KEY CHECK (id >= 0),
         version bigint NOT NULL CHECK (version >= 1),
         profile jsonb NOT NULL
     );",
    // 2: accounts (deleted with their user), sessions and login-failure counters.
    "CREATE TABLE accounts (
         user_id bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
         email text NOT NULL UNIQUE,
         password_hash text NOT NULL,
         roles text NOT NULL DEFAULT '',
         created_ms bigint NOT NULL
     );
     CREATE TABLE sessions (
         id text PRIMARY KEY,
         user_id bigint NOT NULL,
         created_ms bigint NOT NULL,
         expires_ms bigint NOT NULL,
         last_used_ms bigint NOT NULL,
         generation bigint NOT NULL,
         revoked boolean NOT NULL DEFAULT false,
         refresh_hash text NOT NULL,
         used_hashes text NOT NULL DEFAULT '',
         user_agent text NOT NULL,
         ip text NOT NULL
     );
     CREATE INDEX sessions_by_user ON sessions (user_id, created_ms);
     CREATE TABLE auth_failures (
         key text PRIMARY KEY,
         window_end_ms bigint NOT NULL,
         count bigint NOT NULL
     );",
    // 3: idempotency records (see `crate::idempotency`); status 0 while claimed.
    "CREATE TABLE idempotency (
         key text PRIMARY KEY,
         fingerprint text NOT NULL,
         resource_id bigint NOT NULL,
         owner text NOT NULL,
         claim_until_ms bigint NOT NULL,
         expires_ms bigint NOT NULL,
         status integer NOT NULL DEFAULT 0,
         headers text NOT NULL DEFAULT '',
         body bytea NOT NULL DEFAULT '\\x'
     );
     CREATE INDEX idempotency_by_expiry ON idempotency (expires_ms);",
    // 4: sharding (see `crate::shard` and `crate::reshard`). `hash_slot` is the user's slot
    // under the hash strategy, written by Strata with every row (the hash is computed in Rust),
    // so a resharding reads a slot range through an index. Fences, this group's part of the
    // global email index, and a change log written by triggers only while a resharding
    // captures (`shard_capture` not empty); the capture lock numbers changes in commit order.
    "ALTER TABLE users ADD COLUMN hash_slot smallint;
     CREATE INDEX users_by_hash_slot ON users (hash_slot, id);
     CREATE TABLE shard_fence (id bigserial PRIMARY KEY, fence text NOT NULL);
     CREATE TABLE email_index (
         email text PRIMARY KEY,
         user_id bigint NOT NULL,
         slot integer NOT NULL,
         committed boolean NOT NULL,
         claimed_ms bigint NOT NULL
     );
     CREATE INDEX email_index_by_slot ON email_index (slot, email);
     CREATE TABLE shard_capture (tag text PRIMARY KEY);
     CREATE TABLE shard_changes (
         seq bigserial PRIMARY KEY,
         kind smallint NOT NULL,
         key text NOT NULL
     );
     CREATE FUNCTION strata_capture() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
         IF NOT EXISTS (SELECT 1 FROM shard_capture) THEN
             RETURN NULL;
         END IF;
         PERFORM pg_advisory_xact_lock(32497656930722160);
         IF TG_TABLE_NAME = 'email_index' THEN
             IF TG_OP = 'DELETE' THEN
                 INSERT INTO shard_changes (kind, key) VALUES (1, OLD.email);
             ELSE
                 INSERT INTO shard_changes (kind, key) VALUES (1, NEW.email);
             END IF;
         ELSIF TG_TABLE_NAME = 'users' THEN
             IF TG_OP = 'DELETE' THEN
                 INSERT INTO shard_changes (kind, key) VALUES (0, OLD.id::text);
             ELSE
                 INSERT INTO shard_changes (kind, key) VALUES (0, NEW.id::text);
             END IF;
         ELSE
             IF TG_OP = 'DELETE' THEN
                 INSERT INTO shard_changes (kind, key) VALUES (0, OLD.user_id::text);
             ELSE
                 INSERT INTO shard_changes (kind, key) VALUES (0, NEW.user_id::text);
             END IF;
         END IF;
         RETURN NULL;
     END $$;
     CREATE TRIGGER users_captured AFTER INSERT OR UPDATE OR DELETE ON users
         FOR EACH ROW EXECUTE FUNCTION strata_capture();
     CREATE TRIGGER accounts_captured AFTER INSERT OR UPDATE OR DELETE ON accounts
         FOR EACH ROW EXECUTE FUNCTION strata_capture();
     CREATE TRIGGER emails_captured AFTER INSERT OR UPDATE OR DELETE ON email_index
         FOR EACH ROW EXECUTE FUNCTION strata_capture();",
    // 5: the log of committed user changes that API servers follow from their own database —
    // in a data centre, its replica — to keep their caches coherent (see `follow`). A trigger
    // logs each change in its transaction: the user and its new version (a delete: the deleted
    // version + 1, as the delete's receipt says), with the transaction's id, by which a
    // follower reads exactly what committed since its previous snapshot. Every 1,024th row
    // trims the rows 8,192 or more behind it and records the newest transaction id it may
    // have removed, so a follower whose snapshot is older knows it missed some. A bulk load
    // (`strata.bulk`) logs nothing: it only adds users, whose only cached entries are
    // absences, which expire within seconds.
    "CREATE TABLE cache_changes (
         seq bigserial PRIMARY KEY,
         xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
         user_id bigint NOT NULL,
         version bigint NOT NULL
     );
     CREATE INDEX cache_changes_by_xid ON cache_changes (xid);
     CREATE TABLE cache_changes_trimmed (through xid8 NOT NULL);
     INSERT INTO cache_changes_trimmed VALUES ('0'::xid8);
     CREATE FUNCTION strata_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
     DECLARE
         logged bigint;
         horizon xid8;
     BEGIN
         IF current_setting('strata.bulk', true) = 'on' THEN
             RETURN NULL;
         END IF;
         IF TG_OP = 'DELETE' THEN
             INSERT INTO cache_changes (user_id, version) VALUES (OLD.id, OLD.version + 1)
                 RETURNING seq INTO logged;
         ELSE
             INSERT INTO cache_changes (user_id, version) VALUES (NEW.id, NEW.version)
                 RETURNING seq INTO logged;
         END IF;
         IF logged % 1024 = 0 THEN
             SELECT xid INTO horizon FROM cache_changes
                 WHERE seq <= logged - 8192 ORDER BY seq DESC LIMIT 1;
             IF horizon IS NOT NULL THEN
                 DELETE FROM cache_changes WHERE xid <= horizon;
                 UPDATE cache_changes_trimmed SET through = horizon WHERE through < horizon;
             END IF;
         END IF;
         RETURN NULL;
     END $$;
     CREATE TRIGGER users_logged AFTER INSERT OR UPDATE OR DELETE ON users
         FOR EACH ROW EXECUTE FUNCTION strata_log_change();",
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[cfg(test)]
mod tests {
    #[test]
    fn the_capture_trigger_takes_the_capture_lock() {
        let trigger = super::MIGRATIONS[3];
        assert!(trigger.contains(&format!("pg_advisory_xact_lock({})", super::CAPTURE_LOCK)));
    }
}
