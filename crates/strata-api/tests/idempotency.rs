//! `Idempotency-Key` over real HTTP: repeats answered from the shared store (on this server and
//! on another), a key reused for another request, simultaneous duplicates, scopes per user,
//! malformed keys, and a request whose first attempt died after committing.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, LOCATION, RETRY_AFTER};
use serde_json::{Value, json};
use strata_api::idempotency::{CLAIM_TTL, RECORD_TTL, fingerprint};
use strata_core::user::{IdField, User, UserId, UserProfile};
use strata_store::Store;
use strata_store::idempotency::{Begin, Claim, IdempotencyStore};
use strata_store::sqlite::SqliteStore;

const KEY: &str = "idempotency-key";

/// A profile whose last name marks the users one test creates.
fn marked(marker: &str) -> Value {
    let mut p = jane();
    p["lastName"] = json!(marker);
    p
}

/// How many users carry `marker` as their last name (every page, bounded).
async fn count_marked(app: &TestApp, marker: &str) -> usize {
    let mut n = 0;
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let path = match &cursor {
            Some(c) => format!("/users?limit=100&cursor={c}"),
            None => "/users?limit=100".to_owned(),
        };
        let page: Value = app.get(&path).await.json().await.expect("page");
        n += page["users"]
            .as_array()
            .expect("users")
            .iter()
            .filter(|u| u["lastName"] == marker)
            .count();
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return n,
        }
    }
    panic!("more than 1000 pages");
}

async fn post_keyed(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .post(url)
        .header(KEY, key)
        .json(body)
        .send()
        .await
        .expect("POST")
}

#[tokio::test]
async fn a_repeated_post_is_executed_once_and_answered_the_same_by_any_server() {
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let body = marked("Once");
    let first = post_keyed(&app.client, &app.url("/users"), "\"k-1\"", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()[LOCATION].clone();
    let first_body = first.bytes().await.expect("body");

    for base in [app.base.clone(), peer.clone()] {
        let again = post_keyed(&app.client, &format!("{base}/users"), "k-1", &body).await;
        assert_eq!(again.status(), StatusCode::CREATED, "a repeat at {base}");
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.headers()[LOCATION], location, "the same Location");
        assert!(again.headers().contains_key("strata-commit"));
        assert!(again.headers().contains_key("etag"));
        assert_eq!(again.headers()["content-type"], "application/json");
        assert_eq!(
            again.bytes().await.expect("body"),
            first_body,
            "byte for byte"
        );
    }
    assert_eq!(count_marked(&app, "Once").await, 1, "one user created");

    // Without a key, the same body creates another user: keys are opt-in.
    assert_eq!(
        app.post_json("/users", &body).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(count_marked(&app, "Once").await, 2);
    // Nothing is kept longer than a day, and a claim outlives any request.
    assert_eq!(RECORD_TTL, Duration::from_secs(24 * 3600));
    assert!(CLAIM_TTL > strata_api::observe::REQUEST_TIMEOUT);
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused_with_422() {
    let app = spawn_app().await;
    let url = app.url("/users");
    let r = post_keyed(&app.client, &url, "k-2", &marked("Reused")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = post_keyed(&app.client, &url, "k-2", &marked("Other")).await;
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(p["type"], "urn:strata:problem:idempotency-mismatch");
    assert_eq!(p["errors"][0]["parameter"], "Idempotency-Key");
    assert_eq!(
        count_marked(&app, "Other").await,
        0,
        "the other request did not run"
    );
    // The same key on another route is another request too.
    let id = app.get("/users/12").await.status();
    assert_eq!(id, StatusCode::OK);
    let r = app
        .client
        .patch(app.url("/users/12"))
        .header(KEY, "k-2")
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"lastName":"Smyth"}"#)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_duplicates_run_once_and_the_others_wait_or_get_the_same_answer() {
    let app = spawn_app().await;
    let peer = spawn_peer(&app).await;
    let body = marked("Simultaneous");
    let urls: Vec<String> = (0..20)
        .map(|i| format!("{}/users", if i % 2 == 0 { &app.base } else { &peer }))
        .collect();
    let sends = urls
        .iter()
        .map(|url| post_keyed(&app.client, url, "k-3", &body));
    let responses = futures_util::future::join_all(sends).await;
    let mut created = Vec::new();
    let mut fresh = 0;
    for r in responses {
        match r.status() {
            StatusCode::CREATED => {
                fresh += usize::from(r.headers().get("idempotent-replayed").is_none());
                created.push(r.bytes().await.expect("body"));
            }
            StatusCode::CONFLICT => {
                assert_eq!(r.headers()[RETRY_AFTER], "1");
                let p = problem(r, StatusCode::CONFLICT).await;
                assert_eq!(p["type"], "urn:strata:problem:idempotency-conflict");
            }
            other => panic!("a duplicate must get 201 or 409, got {other}"),
        }
    }
    assert_eq!(fresh, 1, "exactly one attempt executed");
    assert!(
        created.iter().all(|b| *b == created[0]),
        "every 201 is the same answer"
    );
    assert_eq!(count_marked(&app, "Simultaneous").await, 1);
}

#[tokio::test]
async fn keys_are_per_user_sign_ups_are_replayed_and_logins_ignore_keys() {
    let app = spawn_app().await;
    // The admin uses a key…
    let r = post_keyed(&app.client, &app.url("/users"), "shared", &marked("Scoped")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // …and another user's request with the same key is theirs alone.
    let email = "scoped@example.com";
    let signup = json!({"email": email, "password": "a long enough password", "profile": jane()});
    let r = post_keyed(&app.anon, &app.url("/accounts"), "signup-1", &signup).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let account: Value = r.json().await.expect("json");
    let again = post_keyed(&app.anon, &app.url("/accounts"), "signup-1", &signup).await;
    assert_eq!(
        again.status(),
        StatusCode::CREATED,
        "a repeated sign-up is answered again"
    );
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.expect("json"), account);
    let login: Value = app
        .anon
        .post(app.url("/sessions"))
        .header(KEY, "shared")
        .json(&json!({"email": email, "password": "a long enough password"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let bearer = format!("Bearer {}", login["access_token"].as_str().expect("token"));
    let id = account["id"].as_u64().expect("id");
    let r = app
        .anon
        .patch(app.url(&format!("/users/{id}")))
        .header(AUTHORIZATION, &bearer)
        .header(KEY, "shared")
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"firstName":"Scoped"}"#)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "another user's key is independent"
    );
    assert!(r.headers().get("idempotent-replayed").is_none());
    // A request that does not authenticate is refused as without a key, and claims nothing.
    let r = post_keyed(&app.anon, &app.url("/users"), "shared", &marked("Scoped")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_malformed_key_is_refused_with_400_naming_the_header() {
    let app = spawn_app().await;
    let long = "k".repeat(256);
    for bad in ["", "\"unclosed", long.as_str(), "\"a\"b\""] {
        let r = post_keyed(&app.client, &app.url("/users"), bad, &marked("Bad")).await;
        let p = problem(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            p["errors"][0]["parameter"], "Idempotency-Key",
            "{bad:?}: {p}"
        );
    }
    let r = app
        .client
        .post(app.url("/users"))
        .header(KEY, "one")
        .header(KEY, "two")
        .json(&marked("Bad"))
        .send()
        .await
        .expect("POST");
    let p = problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(p["errors"][0]["parameter"], "Idempotency-Key");
    assert_eq!(count_marked(&app, "Bad").await, 0);
}

/// The case a balancer's retry meets: the first attempt committed the user and its server died
/// before answering, leaving a claim. The claim lapses; the next attempt re-executes with the id
/// the claim reserved and answers with the user already created — never a second one.
#[tokio::test]
async fn a_retry_after_a_server_died_mid_request_answers_the_user_it_created() {
    let app = spawn_app().await;
    let store = SqliteStore::open(app.dir.path()).expect("open").store;
    let body = marked("Survivor");
    let bytes = serde_json::to_vec(&body).expect("json");
    let reserved = 7_700_000_001;
    let claim = Claim {
        fingerprint: fingerprint(&reqwest::Method::POST, "/users", "application/json", &bytes),
        owner: "a server that died".into(),
        resource_id: reserved,
        now_ms: strata_store::accounts::now_ms(),
        claim_ttl: Duration::from_millis(300),
        record_ttl: RECORD_TTL,
    };
    // The admin's scope: user 9000000001 (see common).
    let key = "u9000000001:k-died";
    assert_eq!(
        store.begin_idempotent(key, &claim).await.expect("claim"),
        Begin::Started {
            resource_id: reserved
        }
    );
    let profile = UserProfile::parse(&body, IdField::Forbidden).expect("profile");
    store
        .create(&User {
            id: UserId(reserved),
            profile,
        })
        .await
        .expect("the dead server's write");

    // While the claim lives: 409. Then the retry answers the user created under the key.
    let url = app.url("/users");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let r = post_keyed(&app.client, &url, "k-died", &body).await;
        match r.status() {
            StatusCode::CONFLICT => {}
            StatusCode::CREATED => break r,
            other => panic!("a retry must get 409 then 201, got {other}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the claim never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        answer.headers()[LOCATION],
        format!("/users/{reserved}").as_str()
    );
    let user: Value = answer.json().await.expect("json");
    assert_eq!(user["id"], reserved);
    assert_eq!(count_marked(&app, "Survivor").await, 1, "no second user");
    let replay = post_keyed(&app.client, &url, "k-died", &body).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.expect("json"), user);
}
