//! Two API servers' caches on one embedded database, as `strata up` runs them: two processes,
//! each with its own store (its own SQLite connections) and its own in-process cache (L1)
//! following the database's change log. A write acknowledged by one is read by the other at
//! once — no read-your-writes token, and an L1 TTL of a minute, so nothing but the change log
//! can explain a fresh read. The second process is this test binary run again (the `#[ignore]`d
//! test below), driven over its stdin and stdout.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use axum::body::Bytes;
use strata_api::coherence::UserChangeSource;
use strata_cache::tiered::{Entry, Tiered, TieredConfig};
use strata_core::user::{IdField, UserId, UserProfile};
use strata_store::sqlite::{CHANGES_KEPT, DB_FILE, SqliteStore};
use strata_store::{Precondition, ReadRequirement, Store, StoreError};

const USER: UserId = UserId(12);
const ROUNDS: usize = 200;
/// Set in the environment of the second process: the data directory.
const CHILD_DIR: &str = "STRATA_COHERENCE_TEST_DIR";

/// One API server's read and write path, as `users.rs` runs it.
struct Server {
    store: SqliteStore,
    cache: Tiered<StoreError>,
}

impl Server {
    fn open(dir: &Path, watched: bool) -> Self {
        let store = SqliteStore::open(dir).expect("open the store").store;
        let cache = Tiered::new(
            TieredConfig {
                l1_ttl: Duration::from_secs(60),
                ..TieredConfig::default()
            },
            None,
        );
        if watched {
            let feed = store.change_feed().expect("follow the change log");
            cache.attach_watch(Arc::new(UserChangeSource(Arc::new(feed))));
        }
        Self { store, cache }
    }

    /// The user's version and first name, through the cache.
    async fn read(&self) -> (u64, String) {
        let store = self.store.clone();
        let entry = self
            .cache
            .get_or_load("user:12", move || {
                let store = store.clone();
                async move {
                    Ok(store.get(USER, ReadRequirement::ANY).await?.map(|s| {
                        let body = serde_json::to_vec(&s.user).unwrap_or_default();
                        (s.version, Bytes::from(body))
                    }))
                }
            })
            .await
            .unwrap_or_else(|e| panic!("read: {e:?}"));
        let doc: serde_json::Value =
            serde_json::from_slice(entry.body.as_deref().unwrap_or_default()).expect("json");
        let first = doc["firstName"].as_str().unwrap_or_default().to_string();
        (entry.version, first)
    }

    /// Commits a new first name, then refreshes this server's cache; the new version.
    async fn write(&self, first: &str) -> u64 {
        let doc = serde_json::json!({"firstName": first, "lastName": "Smith",
            "address": {"streetAddress": "21 2nd Street", "city": "New York", "state": "NY", "postalCode": "10021"}});
        let profile = UserProfile::parse(&doc, IdField::Forbidden).expect("profile");
        let receipt = self
            .store
            .replace(USER, &profile, Precondition::None)
            .await
            .expect("replace");
        let body =
            serde_json::to_vec(&strata_core::user::User { id: USER, profile }).expect("serialize");
        self.cache
            .write(
                "user:12",
                Entry::present(receipt.version, Bytes::from(body)),
            )
            .await;
        receipt.version
    }
}

/// Not a test by itself: the second API server, started by the tests below. Lines on stdin:
/// `read`, `write NAME`, `bulk N` (N changes in one transaction on a connection of its own);
/// answers on stdout, prefixed with `@`.
#[tokio::test]
#[ignore = "run as a child process by the tests of this file"]
async fn second_server_process() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let server = Server::open(Path::new(&dir), true);
    let mut lines = BufReader::new(std::io::stdin()).lines();
    while let Some(Ok(line)) = lines.next() {
        let answer = match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("read", _) => {
                let (version, first) = server.read().await;
                format!("@read {version} {first}")
            }
            ("write", name) => format!("@wrote {}", server.write(name).await),
            ("bulk", n) => {
                let n: u64 = n.parse().expect("a count");
                format!("@bulk {}", bulk_changes(Path::new(&dir), n))
            }
            _ => return,
        };
        println!("{answer}");
        std::io::stdout().flush().expect("flush");
    }
}

/// `n` changes to the user committed in one transaction by a connection of its own — what a
/// much busier set of servers would have written meanwhile (one replace at a time would cost
/// an fsync each). The user's version afterwards.
fn bulk_changes(dir: &Path, n: u64) -> u64 {
    let raw = rusqlite::Connection::open(dir.join(DB_FILE)).expect("raw connection");
    raw.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    raw.execute_batch("PRAGMA synchronous = OFF; BEGIN IMMEDIATE;")
        .expect("begin");
    for _ in 0..n {
        raw.execute("UPDATE users SET version = version + 1 WHERE id = 12", [])
            .expect("update");
    }
    raw.execute_batch("COMMIT;").expect("commit");
    raw.query_row("SELECT version FROM users WHERE id = 12", [], |r| r.get(0))
        .expect("version")
}

struct SecondServer {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
}

impl SecondServer {
    fn start(dir: &Path) -> Self {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "second_server_process",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_DIR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the second server process");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(answer) = line.strip_prefix('@') {
                    let _ = tx.send(answer.to_string());
                }
            }
        });
        Self {
            child,
            stdin,
            answers,
        }
    }

    fn ask(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("send to the second server");
        self.stdin.flush().expect("flush");
        self.answers
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the second server answers {line:?} within 30 s"))
    }

    fn read(&mut self) -> (u64, String) {
        let answer = self.ask("read");
        let mut parts = answer.splitn(3, ' ');
        assert_eq!(parts.next(), Some("read"), "{answer}");
        let version = parts.next().and_then(|v| v.parse().ok()).expect("version");
        (version, parts.next().unwrap_or_default().to_string())
    }

    fn write(&mut self, name: &str) -> u64 {
        let answer = self.ask(&format!("write {name}"));
        answer
            .strip_prefix("wrote ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("an acknowledged write: {answer}"))
    }
}

impl Drop for SecondServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn database() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let opened = SqliteStore::open(dir.path()).expect("open");
    assert!(opened.created);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_database_read_each_others_acknowledged_writes_at_once() {
    let dir = database();
    let here = Server::open(dir.path(), true);
    here.store.ensure_canonical_user().await.expect("user 12");
    // A control: the same cache without the change log, which only its TTL would refresh.
    let unwatched = Server::open(dir.path(), false);
    let mut there = SecondServer::start(dir.path());

    let (mut stale, mut control_stale) = (0, 0);
    for round in 0..ROUNDS {
        // Both caches hold the current version before the write.
        let before = here.read().await;
        assert!(
            here.cache.l1_peek("user:12").await.is_some(),
            "L1 holds the user"
        );
        assert_eq!(there.read(), before);
        unwatched.read().await;
        let name = format!("r{round}");
        if round % 2 == 0 {
            let version = there.write(&name);
            if here.read().await != (version, name.clone()) {
                stale += 1;
            }
            if unwatched.read().await.1 != name {
                control_stale += 1;
            }
        } else {
            let version = here.write(&name).await;
            if there.read() != (version, name) {
                stale += 1;
            }
        }
    }
    assert_eq!(
        stale, 0,
        "stale reads out of {ROUNDS} right after an acknowledged write through the other process"
    );
    assert_eq!(
        control_stale,
        ROUNDS / 2,
        "without the change log the other process's writes are not seen (the test can fail)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_whose_position_was_trimmed_from_the_log_starts_again_empty() {
    let dir = database();
    let here = Server::open(dir.path(), true);
    here.store.ensure_canonical_user().await.expect("user 12");
    let mut there = SecondServer::start(dir.path());
    let (v1, _) = here.read().await;
    assert_eq!(there.read().0, v1);

    // Far more changes than the log keeps, committed by another process, then one write.
    let bumped = there.ask(&format!("bulk {}", CHANGES_KEPT + 2_000));
    assert_eq!(bumped, format!("bulk {}", v1 + CHANGES_KEPT + 2_000));
    let (read, _) = here.read().await;
    assert_eq!(
        read,
        v1 + CHANGES_KEPT + 2_000,
        "the cache saw that it fell behind the trimmed log, and dropped what it held"
    );
    let version = there.write("after");
    assert_eq!(here.read().await, (version, "after".to_string()));
}
