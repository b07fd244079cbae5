//! The embedded engine's schema: its migrations, in order. `PRAGMA user_version` holds how
//! many have been applied (see `migrate` in the parent module).

/// Schema migrations, in order. `PRAGMA user_version` holds how many have been applied.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: users, the commit counter, and the format marker.
    "CREATE TABLE strata_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
     INSERT INTO strata_meta (key, value) VALUES ('format', 'strata-users');
     CREATE TABLE strata_commit (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
     INSERT INTO strata_commit (id, seq) VALUES (1, 0);
     CREATE TABLE users (
         id INTEGER PRIMARY KEY,
         version INTEGER NOT NULL CHECK (version >= 1),
         profile TEXT NOT NULL,
         commit_seq INTEGER NOT NULL
     );",
    // 2: accounts (deleted with their user), sessions and login-failure counters.
    "CREATE TABLE accounts (
         user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
         email TEXT NOT NULL UNIQUE,
         password_hash TEXT NOT NULL,
         roles TEXT NOT NULL DEFAULT '',
         created_ms INTEGER NOT NULL
     );
     CREATE TABLE sessions (
         id TEXT PRIMARY KEY,
         user_id INTEGER NOT NULL,
         created_ms INTEGER NOT NULL,
         expires_ms INTEGER NOT NULL,
         last_used_ms INTEGER NOT NULL,
         generation INTEGER NOT NULL,
         revoked INTEGER NOT NULL DEFAULT 0,
         refresh_hash TEXT NOT NULL,
         used_hashes TEXT NOT NULL DEFAULT '',
         user_agent TEXT NOT NULL,
         ip TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX sessions_by_user ON sessions (user_id, created_ms);
     CREATE TABLE auth_failures (
         key TEXT PRIMARY KEY,
         window_end_ms INTEGER NOT NULL,
         count INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 3: idempotency records (see `crate::idempotency`); status 0 while claimed.
    "CREATE TABLE idempotency (
         key TEXT PRIMARY KEY,
         fingerprint TEXT NOT NULL,
         resource_id INTEGER NOT NULL,
         owner TEXT NOT NULL,
         claim_until_ms INTEGER NOT NULL,
         expires_ms INTEGER NOT NULL,
         status INTEGER NOT NULL DEFAULT 0,
         headers TEXT NOT NULL DEFAULT '',
         body BLOB NOT NULL DEFAULT x''
     ) WITHOUT ROWID;
     CREATE INDEX idempotency_by_expiry ON idempotency (expires_ms);",
    // 4: sharding — fences (rows that moved to another shard group, see `crate::shard::fence`)
    // and this group's part of the global email index (`crate::shard::email_index`).
    "CREATE TABLE shard_fence (id INTEGER PRIMARY KEY, fence TEXT NOT NULL);
     CREATE TABLE email_index (
         email TEXT PRIMARY KEY,
         user_id INTEGER NOT NULL,
         slot INTEGER NOT NULL,
         committed INTEGER NOT NULL,
         claimed_ms INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX email_index_by_slot ON email_index (slot);",
    // 5: resharding — the hash slot of each user indexed (so a slot range is read without a
    // scan), and a change log that triggers fill while a resharding captures this group's
    // changes (`shard_capture` not empty); see `crate::reshard`.
    "CREATE INDEX users_by_hash_slot ON users (strata_hash_slot(id), id);
     CREATE TABLE shard_capture (tag TEXT PRIMARY KEY) WITHOUT ROWID;
     CREATE TABLE shard_changes (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         kind INTEGER NOT NULL,
         key TEXT NOT NULL
     );
     CREATE TRIGGER users_captured_insert AFTER INSERT ON users
         WHEN EXISTS (SELECT 1 FROM shard_capture)
         BEGIN INSERT INTO shard_changes (kind, key) VALUES (0, NEW.id); END;
     CREATE TRIGGER users_captured_update AFTER UPDATE ON users
         WHEN EXISTS (SELECT 1 FROM shard_capture)
         BEGIN INSERT INTO shard_changes (kind, key) VALUES (0, NEW.id); END;
     CREATE TRIGGER users_captured_delete AFTER DELETE ON users
         WHEN EXISTS (SELECT 1 FROM shard_capture)
         BEGIN INSERT INTO shard_changes (kind, key) VALUES (0, OLD.id); END;
     CREATE TRIGGER accounts_captured_insert AFTER INSERT ON accounts
         WHEN EXISTS (SELECT 1 FROM shard_capture)
         BEGIN INSERT INTO shard_changes (kind, key) VALUES (0, NEW.user_id); END;
     CREATE TRIGGER accounts_captured_update AFTER UPDATE ON accounts
         WHEN EXISTS (SELECT 1 FROM shard_capture)
         BEGIN INSERT INTO shard_changes (kind, key) VALUES (0, NEW.user_id); END;
     CREATE TRIGGER accounts_captured_delete AFTER DELETE ON accounts
         WHEN EXISTS (SELECT 1 FROM shard_capture)
         BEGIN INSERT INTO shard_changes (kind, key) VALUES (0, OLD.user_id); END;
     CREATE TRIGGER emails_captured_insert AFTER INSERT ON email_index
         WHEN EXISTS (SELECT 1 FROM shard_capture)
         BEGIN INSERT INTO shard_changes (kind, key) VALUES (1, NEW.email); END;
     CREATE TRIGGER emails_captured_update AFTER UPDATE ON email_index
         WHEN EXISTS (SELECT 1 FROM shard_capture)
         BEGIN INSERT INTO shard_changes (kind, key) VALUES (1, NEW.email); END;
     CREATE TRIGGER emails_captured_delete AFTER DELETE ON email_index
         WHEN EXISTS (SELECT 1 FROM shard_capture)
         BEGIN INSERT INTO shard_changes (kind, key) VALUES (1, OLD.email); END;",
    // 6: the change log API servers follow to keep their in-process caches coherent (see
    // `changes.rs`): one row per user written, in the write's own transaction, with the
    // version it now has (a delete: its tombstone's, the deleted version + 1); a row with no
    // user (NULL) when anything may have changed — a fence added or removed (rows moved
    // between groups), a bulk load (which sets `cache_changes_quiet` for its transaction and
    // logs one such row instead of one per user). Trimmed as it grows: every 1,024th row
    // deletes those 8,192 or more behind it.
    "CREATE TABLE cache_changes (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         user_id INTEGER,
         version INTEGER NOT NULL
     );
     CREATE TABLE cache_changes_quiet (id INTEGER PRIMARY KEY);
     CREATE TRIGGER users_logged_insert AFTER INSERT ON users
         WHEN NOT EXISTS (SELECT 1 FROM cache_changes_quiet)
         BEGIN INSERT INTO cache_changes (user_id, version) VALUES (NEW.id, NEW.version); END;
     CREATE TRIGGER users_logged_update AFTER UPDATE ON users
         WHEN NOT EXISTS (SELECT 1 FROM cache_changes_quiet)
         BEGIN INSERT INTO cache_changes (user_id, version) VALUES (NEW.id, NEW.version); END;
     CREATE TRIGGER users_logged_delete AFTER DELETE ON users
         WHEN NOT EXISTS (SELECT 1 FROM cache_changes_quiet)
         BEGIN INSERT INTO cache_changes (user_id, version) VALUES (OLD.id, OLD.version + 1); END;
     CREATE TRIGGER fences_logged_insert AFTER INSERT ON shard_fence
         BEGIN INSERT INTO cache_changes (user_id, version) VALUES (NULL, 0); END;
     CREATE TRIGGER fences_logged_delete AFTER DELETE ON shard_fence
         BEGIN INSERT INTO cache_changes (user_id, version) VALUES (NULL, 0); END;
     CREATE TRIGGER cache_changes_trimmed AFTER INSERT ON cache_changes
         WHEN NEW.seq % 1024 = 0
         BEGIN DELETE FROM cache_changes WHERE seq <= NEW.seq - 8192; END;",
];
