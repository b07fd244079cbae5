//! The users API over real HTTP, against the embedded SQLite engine in a temporary directory.

mod common;

use common::*;

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH, LOCATION};
use serde_json::{Value, json};
use strata_core::user::{IdField, UserProfile};

#[tokio::test]
async fn user_12_is_the_canonical_john_smith_field_for_field() {
    let app = spawn_app().await;
    let r = app.get("/users/12").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    assert!(r.headers().contains_key(ETAG));
    assert_eq!(r.text().await.expect("body"), CANONICAL);
}

#[tokio::test]
async fn if_none_match_with_the_current_etag_answers_304_and_a_stale_one_200() {
    let app = spawn_app().await;
    let tag = app.get("/users/12").await.headers()[ETAG].clone();
    let r = app
        .client
        .get(app.url("/users/12"))
        .header(IF_NONE_MATCH, tag.clone())
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()[ETAG], tag);
    let r = app
        .client
        .get(app.url("/users/12"))
        .header(IF_NONE_MATCH, "\"v999\"")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn creating_a_user_answers_201_with_location_and_a_snowflake_id() {
    let app = spawn_app().await;
    let r = app.post_json("/users", &jane()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()[LOCATION].to_str().expect("ascii").to_string();
    assert!(r.headers().contains_key("strata-commit"));
    let body: Value = r.json().await.expect("json");
    let id = body["id"].as_u64().expect("numeric id");
    assert_eq!(location, format!("/users/{id}"));
    let parts = strata_core::id::decompose(id);
    assert_eq!(parts.node_id, 1, "issued by node 1");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    assert!(
        parts.unix_ms <= now_ms && now_ms - parts.unix_ms < 60_000,
        "id carries the creation time"
    );
    let fetched: Value = app.get(&location).await.json().await.expect("json");
    assert_eq!(fetched, body);
    assert_eq!(
        fetched["address"]["postalCode"],
        json!("02134"),
        "leading zero kept as a string"
    );
}

#[tokio::test]
async fn postal_codes_come_back_in_the_form_they_were_sent() {
    let app = spawn_app().await;
    for postal in [json!(10021), json!("02134"), json!("SW1A 1AA"), json!(0)] {
        let mut body = jane();
        body["address"]["postalCode"] = postal.clone();
        let created = app.create(&body).await;
        let id = created["id"].as_u64().expect("id");
        let text = app
            .get(&format!("/users/{id}"))
            .await
            .text()
            .await
            .expect("text");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["address"]["postalCode"], postal, "{text}");
    }
}

#[tokio::test]
async fn put_replaces_the_whole_profile_and_honours_if_match() {
    let app = spawn_app().await;
    let created = app.create(&jane()).await;
    let id = created["id"].as_u64().expect("id");
    let path = format!("/users/{id}");
    let tag1 = app.get(&path).await.headers()[ETAG].clone();
    let mut replacement = jane();
    replacement["firstName"] = json!("Janet");
    replacement
        .as_object_mut()
        .expect("object")
        .remove("phoneNumbers");
    let r = app
        .client
        .put(app.url(&path))
        .header(IF_MATCH, tag1.clone())
        .json(&replacement)
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    let tag2 = r.headers()[ETAG].clone();
    assert_ne!(tag1, tag2);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["firstName"], "Janet");
    assert_eq!(
        body["phoneNumbers"],
        json!([]),
        "full replace drops what was left out"
    );
    // The old ETag is stale now.
    let r = app
        .client
        .put(app.url(&path))
        .header(IF_MATCH, tag1)
        .json(&jane())
        .send()
        .await
        .expect("PUT");
    problem(r, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(
        app.get(&path).await.json::<Value>().await.expect("json")["firstName"],
        "Janet",
        "a refused write changed nothing"
    );
    // An id in the body must match the path.
    let mut wrong = jane();
    wrong["id"] = json!(id + 1);
    let p = problem(
        app.client
            .put(app.url(&path))
            .json(&wrong)
            .send()
            .await
            .expect("PUT"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&p), vec!["/id"]);
    // Replacing a user that does not exist is a 404.
    problem(
        app.client
            .put(app.url("/users/999"))
            .json(&jane())
            .send()
            .await
            .expect("PUT"),
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn patch_applies_a_json_merge_patch() {
    let app = spawn_app().await;
    let r = app
        .client
        .patch(app.url("/users/12"))
        .header(CONTENT_TYPE, "application/merge-patch+json")
        .body(r#"{"address":{"city":"Brooklyn","postalCode":"11201"},"phoneNumbers":null}"#)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["firstName"], "John", "untouched fields stay");
    assert_eq!(body["address"]["streetAddress"], "21 2nd Street");
    assert_eq!(body["address"]["city"], "Brooklyn");
    assert_eq!(body["address"]["postalCode"], "11201");
    assert_eq!(body["phoneNumbers"], json!([]), "null removes a member");
    // Removing a required member is a 422 naming it, and changes nothing.
    let r = app
        .client
        .patch(app.url("/users/12"))
        .header(CONTENT_TYPE, "application/merge-patch+json")
        .body(r#"{"firstName":null,"address":{"state":7}}"#)
        .send()
        .await
        .expect("PATCH");
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let mut ptrs = pointers(&p);
    ptrs.sort();
    assert_eq!(ptrs, vec!["/address/state", "/firstName"]);
    assert_eq!(
        app.get("/users/12")
            .await
            .json::<Value>()
            .await
            .expect("json")["firstName"],
        "John"
    );
    // A merge patch must be sent as one.
    let r = app
        .client
        .patch(app.url("/users/12"))
        .header(CONTENT_TYPE, "text/plain")
        .body("{}")
        .send()
        .await
        .expect("PATCH");
    problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let r = app
        .client
        .patch(app.url("/users/12"))
        .header(CONTENT_TYPE, "application/merge-patch+json")
        .header(IF_MATCH, "\"v1\"")
        .body("{}")
        .send()
        .await
        .expect("PATCH");
    problem(r, StatusCode::PRECONDITION_FAILED).await;
}

#[tokio::test]
async fn concurrent_patches_are_all_applied_and_none_is_lost() {
    let app = Arc::new(spawn_app().await);
    let created = app.create(&jane()).await;
    let id = created["id"].as_u64().expect("id");
    let n = 16;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let body = json!({"phoneNumbers": [format!("555-{i:04}")]});
                app.client
                    .patch(app.url(&format!("/users/{id}")))
                    .header(CONTENT_TYPE, "application/merge-patch+json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("PATCH")
                    .status()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::OK);
    }
    let r = app.get(&format!("/users/{id}")).await;
    assert_eq!(
        r.headers()[ETAG],
        format!("\"v{}\"", 1 + n),
        "every patch made its own version"
    );
}

#[tokio::test]
async fn delete_removes_the_user_and_honours_if_match() {
    let app = spawn_app().await;
    let id = app.create(&jane()).await["id"].as_u64().expect("id");
    let path = format!("/users/{id}");
    let r = app
        .client
        .delete(app.url(&path))
        .header(IF_MATCH, "\"v7\"")
        .send()
        .await
        .expect("DELETE");
    problem(r, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(
        app.get(&path).await.status(),
        StatusCode::OK,
        "a refused delete deleted nothing"
    );
    let r = app
        .client
        .delete(app.url(&path))
        .header(IF_MATCH, "\"v1\"")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    problem(app.get(&path).await, StatusCode::NOT_FOUND).await;
    problem(
        app.client
            .delete(app.url(&path))
            .send()
            .await
            .expect("DELETE"),
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn listing_pages_through_every_user_once_in_id_order() {
    let app = spawn_app().await;
    for _ in 0..7 {
        app.create(&jane()).await;
    }
    let mut seen = Vec::new();
    let mut next = "/users?limit=3".to_string();
    for _ in 0..10 {
        let page: Value = app.get(&next).await.json().await.expect("json");
        seen.extend(
            page["users"]
                .as_array()
                .expect("users")
                .iter()
                .map(|u| u["id"].as_u64().expect("id")),
        );
        match page["nextCursor"].as_str() {
            Some(c) => next = format!("/users?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 9, "7 created + user 12 + the admin: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ascending and unique");
    assert_eq!(seen[0], 12);
    let first_page = app.get("/users?limit=1").await.text().await.expect("text");
    assert!(
        first_page.starts_with(&format!("{{\"users\":[{CANONICAL}]")),
        "users keep the canonical field order: {first_page}"
    );
    let p = problem(app.get("/users?limit=0").await, StatusCode::BAD_REQUEST).await;
    assert_eq!(p["errors"][0]["parameter"], "limit");
    problem(app.get("/users?limit=101").await, StatusCode::BAD_REQUEST).await;
    let p = problem(
        app.get("/users?cursor=garbage!").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(p["errors"][0]["parameter"], "cursor");
}

#[tokio::test]
async fn every_error_class_answers_a_precise_problem() {
    let app = spawn_app().await;
    let raw = |body: &'static str, ct: &'static str| {
        app.client
            .post(app.url("/users"))
            .header(CONTENT_TYPE, ct)
            .body(body)
            .send()
    };
    let p = problem(
        raw("{\"firstName\": ", "application/json")
            .await
            .expect("POST"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        p["detail"].as_str().expect("detail").contains("line 1"),
        "{p}"
    );
    problem(
        raw("{}", "text/plain").await.expect("POST"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    problem(
        app.client
            .post(app.url("/users"))
            .body("{}")
            .send()
            .await
            .expect("POST"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    let big = format!("{{\"firstName\":\"{}\"}}", "a".repeat(20_000));
    problem(
        app.client
            .post(app.url("/users"))
            .header(CONTENT_TYPE, "application/json")
            .body(big)
            .send()
            .await
            .expect("POST"),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    let p = problem(
        app.post_json("/users", &json!({"firstName": "", "address": {"streetAddress": "x", "city": "y", "state": "z", "postalCode": true}, "phoneNumbers": "212"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let mut ptrs = pointers(&p);
    ptrs.sort();
    assert_eq!(
        ptrs,
        vec![
            "/address/postalCode",
            "/firstName",
            "/lastName",
            "/phoneNumbers"
        ]
    );
    problem(app.get("/users/404404").await, StatusCode::NOT_FOUND).await;
    for bad in ["abc", "-1", "18446744073709551616", "1.5"] {
        let p = problem(
            app.get(&format!("/users/{bad}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(p["errors"][0]["parameter"], "id", "{bad}");
    }
    problem(app.get("/nothing-here").await, StatusCode::NOT_FOUND).await;
    problem(
        app.client
            .post(app.url("/users/12"))
            .json(&jane())
            .send()
            .await
            .expect("POST"),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    problem(
        app.client
            .get(app.url("/users/12"))
            .header(IF_NONE_MATCH, "v1")
            .send()
            .await
            .expect("GET"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    // The largest id is valid syntax, and simply not found.
    problem(
        app.get("/users/18446744073709551615").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn no_invalid_request_leaves_a_half_written_user() {
    let app = spawn_app().await;
    let before: Value = app
        .get("/users?limit=100")
        .await
        .json()
        .await
        .expect("json");
    let mut bad = jane();
    bad["address"]["postalCode"] = json!(-5);
    problem(
        app.post_json("/users", &bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let r = app
        .client
        .put(app.url("/users/12"))
        .json(&bad)
        .send()
        .await
        .expect("PUT");
    problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let after: Value = app
        .get("/users?limit=100")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(before, after);
}

#[tokio::test]
async fn operations_endpoints_report_health_readiness_metrics_and_openapi() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    let ready: Value = app.get("/readyz").await.json().await.expect("json");
    assert_eq!(ready["data"], "sqlite");
    app.get("/users/12").await;
    app.get("/users/777").await;
    let text = app.get("/metrics").await.text().await.expect("text");
    assert!(
        text.contains(
            r#"strata_http_requests_total{method="GET",route="/users/{id}",status="200"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"strata_http_errors_total{method="GET",route="/users/{id}",status="404"}"#),
        "{text}"
    );
    assert!(
        text.contains("strata_http_request_duration_seconds_bucket{"),
        "{text}"
    );
    let doc: Value = app.get("/openapi.json").await.json().await.expect("json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    for path in [
        "/accounts",
        "/sessions",
        "/sessions/refresh",
        "/sessions/{id}",
        "/.well-known/jwks.json",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "the document describes {path}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(
        doc["paths"]["/users/{id}"]["patch"]["security"].is_array(),
        "profile writes say they need a token"
    );
    for path in ["/users", "/users/{id}", "/healthz", "/readyz", "/metrics"] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    let example = &doc["components"]["schemas"]["UserInput"]["example"];
    assert!(
        UserProfile::parse(example, IdField::Forbidden).is_ok(),
        "the documented example is valid input: {example}"
    );
}

#[tokio::test]
async fn request_ids_are_kept_when_sent_and_generated_when_not() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/users/12"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app.get("/users/12").await;
    assert!(r.headers()["x-request-id"].len() >= 16);
}

#[tokio::test]
async fn a_read_after_a_write_token_sees_that_write() {
    let app = spawn_app().await;
    let r = app
        .client
        .put(app.url("/users/12"))
        .json(&jane())
        .send()
        .await
        .expect("PUT");
    let token = r.headers()["strata-commit"]
        .to_str()
        .expect("ascii")
        .to_string();
    let r = app
        .client
        .get(app.url("/users/12"))
        .header("strata-read-after", &token)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.json::<Value>().await.expect("json")["firstName"], "Jane");
    problem(
        app.client
            .get(app.url("/users/12"))
            .header("strata-read-after", "soon")
            .send()
            .await
            .expect("GET"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    // A token from the future cannot be satisfied: 503 with Retry-After, never a stale answer.
    let r = app
        .client
        .get(app.url("/users/12"))
        .header("strata-read-after", "999999999")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.headers()["retry-after"], "1");
    problem(r, StatusCode::SERVICE_UNAVAILABLE).await;

    // Browsers get the token as a cookie, and a read that carries it is held to it.
    let r = app
        .client
        .put(app.url("/users/12"))
        .json(&jane())
        .send()
        .await
        .expect("PUT");
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    let token = r.headers()["strata-commit"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        cookie.starts_with(&format!("strata-read-after={token};"))
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let r = app
        .client
        .get(app.url("/users/12"))
        .header("cookie", format!("theme=dark; strata-read-after={token}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .client
        .get(app.url("/users/12"))
        .header("cookie", "strata-read-after=999999999")
        .send()
        .await
        .expect("GET");
    problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
    // A malformed cookie is ignored (a browser cannot fix it).
    let r = app
        .client
        .get(app.url("/users/12"))
        .header("cookie", "strata-read-after=soon")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_route_says_how_it_may_be_cached_and_nothing_private_is_shared() {
    let app = spawn_app().await;
    let cc = |r: &reqwest::Response| {
        r.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    // Public, changing data: shared caches may keep it but must revalidate with the ETag.
    let r = app
        .client
        .get(app.url("/users/12"))
        .send()
        .await
        .expect("GET");
    assert_eq!(cc(&r), "no-cache");
    assert_eq!(r.headers()["vary"], "Strata-Read-After");
    assert!(r.headers().contains_key(ETAG));
    let r = app
        .client
        .get(app.url("/users"))
        .send()
        .await
        .expect("list");
    assert_eq!(cc(&r), "no-cache");
    // A write's answer carries the client's commit cookie: never stored.
    let r = app
        .client
        .post(app.url("/users"))
        .json(&jane())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(cc(&r), "no-store");
    // Errors and operational endpoints are not cached either.
    for path in [
        "/users/999999",
        "/users/abc",
        "/metrics",
        "/healthz",
        "/readyz",
        "/nope",
    ] {
        let r = app.client.get(app.url(path)).send().await.expect("GET");
        assert_eq!(cc(&r), "no-store", "{path}");
    }
}
