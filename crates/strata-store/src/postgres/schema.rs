//! The PostgreSQL schema as versioned migrations: `strata_meta.schema_version` holds how many
//! are applied; `PgStore::migrate` applies the rest under an advisory lock.

/// Advisory lock key held while migrating ("strata" in ASCII).
pub(super) const MIGRATION_LOCK: i64 = 0x7374_7261_7461;

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
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
