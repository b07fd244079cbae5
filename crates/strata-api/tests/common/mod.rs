//! The test harness shared by the API's integration tests: a real server on a free port over
//! SQLite in a temporary directory, with an admin already logged in.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use strata_api::auth::AuthConfig;
use strata_api::keys::KeyRing;
use strata_api::{AppState, Application};
use strata_cache::tiered::{Tiered, TieredConfig};
use strata_core::email::Email;
use strata_core::id::SnowflakeGenerator;
use strata_core::user::{IdField, User, UserId, UserProfile};
use strata_store::accounts::{ADMIN_ROLE, AccountStore};
use strata_store::sqlite::SqliteStore;

pub const CANONICAL: &str = r#"{"id":12,"firstName":"John","lastName":"Smith","address":{"streetAddress":"21 2nd Street","city":"New York","state":"NY","postalCode":10021},"phoneNumbers":["212 555-1234","646555-4567"]}"#;

pub struct TestApp {
    pub base: String,
    /// Sends an admin's access token with every request.
    pub client: reqwest::Client,
    /// Sends no credentials.
    pub anon: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// The server's photo pipeline (no relay or worker runs: tests drive them).
    pub photos: strata_photos::Photos,
}

/// The administrator every test app starts with.
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin password 1";

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }
    pub async fn create(&self, body: &Value) -> Value {
        let r = self.post_json("/users", body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.expect("json")
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A test app whose authentication settings `tune` may change first.
pub async fn spawn_app_with(tune: impl FnOnce(&mut AuthConfig)) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let opened = SqliteStore::open(dir.path()).expect("open store");
    assert!(opened.created);
    let store = Arc::new(opened.store);
    store.ensure_canonical_user().await.expect("canonical user");
    let keys = KeyRing::open(&dir.path().join("keys")).expect("keys");
    let mut auth = AuthConfig::new(keys, store.clone(), store.clone());
    tune(&mut auth);
    // The admin: an account made through the store, then granted the role (as the CLI does).
    let hash = auth.hash_password(ADMIN_PASSWORD).await.expect("hash");
    let admin = User {
        id: UserId(9_000_000_001),
        profile: UserProfile::parse(&jane(), IdField::Forbidden).expect("profile"),
    };
    let admin_email = Email::parse(ADMIN_EMAIL).expect("admin email");
    store
        .create_account(&admin, &admin_email, &hash)
        .await
        .expect("admin account");
    store
        .set_role(&admin_email, ADMIN_ROLE, true)
        .await
        .expect("grant admin");
    let photos = strata_photos::Photos::open(
        &strata_photos::PhotoDirs::in_data_dir(dir.path()),
        strata_queue::conformance::quick_policy(),
    )
    .expect("photo pipeline");
    let state = AppState::new(
        store,
        auth,
        SnowflakeGenerator::new(1).expect("node"),
        Tiered::new(TieredConfig::default(), None),
    )
    .with_photos(photos.clone());
    let app = Application::build("127.0.0.1:0".parse().expect("addr"), state)
        .await
        .expect("bind");
    let base = format!("http://{}", app.addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let anon = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let login: Value = anon
        .post(format!("{base}/sessions"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login json");
    let token = login["access_token"].as_str().expect("access token");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()
        .expect("client");
    TestApp {
        base,
        client,
        anon,
        dir,
        photos,
    }
}

/// Another API server over the same database and key directory as `app` (as `strata up` runs
/// several): its base URL. It shares nothing with `app` in memory.
pub async fn spawn_peer(app: &TestApp) -> String {
    let opened = SqliteStore::open(app.dir.path()).expect("open the same store");
    let store = Arc::new(opened.store);
    let keys = KeyRing::open(&app.dir.path().join("keys")).expect("keys");
    let auth = AuthConfig::new(keys, store.clone(), store.clone());
    let state = AppState::new(
        store,
        auth,
        SnowflakeGenerator::new(2).expect("node"),
        Tiered::new(TieredConfig::default(), None),
    );
    let peer = Application::build("127.0.0.1:0".parse().expect("addr"), state)
        .await
        .expect("bind");
    let base = format!("http://{}", peer.addr());
    tokio::spawn(peer.run_until_stopped(std::future::pending()));
    base
}

pub fn jane() -> Value {
    json!({"firstName":"Jane","lastName":"Doe","address":{"streetAddress":"1 Main St","city":"Boston","state":"MA","postalCode":"02134"},"phoneNumbers":["617 555-0100"]})
}

pub async fn problem(r: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
    let p: Value = r.json().await.expect("problem json");
    assert_eq!(p["status"], status.as_u16());
    assert!(
        p["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:strata:problem:")),
        "{p}"
    );
    assert!(p["title"].is_string() && p["detail"].is_string(), "{p}");
    p
}

pub fn pointers(p: &Value) -> Vec<String> {
    p["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["pointer"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
