//! Profile photos over HTTP: an upload accepted with 202 and a job, processed by a worker,
//! served by content-addressed URLs with immutable caching; deleted; and every kind of bad
//! upload refused with its precise problem, nothing stored and nothing queued.

mod common;

use std::time::Duration;

use common::{ADMIN_EMAIL, TestApp, jane, problem, spawn_app};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION};
use serde_json::{Value, json};
use strata_photos::relay::{queue_name, relay_once};
use strata_photos::testdata;
use strata_photos::upload::{Format, MAX_UPLOAD_BYTES};
use strata_photos::worker::{Outcome, Worker};

const PASSWORD: &str = "a long enough password";

/// Signs up and logs in `email`; returns the user id and an `Authorization` value.
async fn member(app: &TestApp, email: &str) -> (u64, String) {
    let r = app
        .anon
        .post(app.url("/accounts"))
        .json(&json!({"email": email, "password": PASSWORD, "profile": jane()}))
        .send()
        .await
        .expect("POST /accounts");
    assert_eq!(r.status(), StatusCode::CREATED, "sign up {email}");
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_u64()
        .expect("id");
    let login: Value = app
        .anon
        .post(app.url("/sessions"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("POST /sessions")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token");
    (id, format!("Bearer {token}"))
}

async fn put_photo(
    app: &TestApp,
    user: u64,
    auth: &str,
    bytes: Vec<u8>,
    content_type: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .anon
        .put(app.url(&format!("/users/{user}/photo")))
        .header(AUTHORIZATION, auth)
        .body(bytes);
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    req.send().await.expect("PUT photo")
}

/// Publishes the outbox and processes every queued job.
async fn process_all(app: &TestApp) -> Vec<Outcome> {
    let p = &app.photos;
    relay_once(&p.catalog, &*p.queue).await.expect("relay");
    let worker = Worker {
        catalog: p.catalog.clone(),
        queue: p.queue.clone(),
        blobs: p.blobs.clone(),
        heartbeat: Duration::from_millis(100),
        edges: Default::default(),
    };
    let mut outcomes = Vec::new();
    while let Some(d) = p
        .queue
        .receive(&queue_name(), Duration::from_millis(100))
        .await
        .expect("receive")
    {
        outcomes.push(worker.handle(&d).await.expect("handled"));
    }
    outcomes
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn blob_count(app: &TestApp) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&app.dir.path().join("photos/blobs/objects"))
}

#[tokio::test]
async fn an_owner_uploads_a_photo_and_each_size_is_served_by_an_immutable_url() {
    let app = spawn_app().await;
    let (id, auth) = member(&app, "owner@example.com").await;
    let r = put_photo(
        &app,
        id,
        &auth,
        testdata::image(Format::Jpeg, 1024, 768),
        Some("image/jpeg"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    let job: Value = r.json().await.expect("json");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["userId"], id);
    assert_eq!(location, format!("/jobs/{}", job["id"]));

    relay_once(&app.photos.catalog, &*app.photos.queue)
        .await
        .expect("relay");
    let metrics = app
        .anon
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"strata_queue_messages{queue="photos",state="ready"} 1"#),
        "the queue's depth is on /metrics:\n{metrics}"
    );
    let queued: Value = app
        .anon
        .get(app.url(&location))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .expect("GET job")
        .json()
        .await
        .expect("json");
    assert_eq!(queued["state"], "queued");
    let r = app
        .anon
        .get(app.url(&format!("/users/{id}/photo")))
        .send()
        .await
        .expect("GET photo");
    problem(r, StatusCode::NOT_FOUND).await;

    assert_eq!(process_all(&app).await, [Outcome::Done]);
    let done: Value = app
        .anon
        .get(app.url(&location))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .expect("GET job")
        .json()
        .await
        .expect("json");
    assert_eq!(done["state"], "done");
    assert_eq!(done["photo"], format!("/users/{id}/photo"));

    let client = no_redirects();
    let mut urls = Vec::new();
    for (size, w, h) in [
        ("64", 64, 48),
        ("128", 128, 96),
        ("512", 512, 384),
        ("original", 1024, 768),
    ] {
        let r = client
            .get(app.url(&format!("/users/{id}/photo?size={size}")))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT, "size {size}");
        assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
        let url = r.headers()[LOCATION]
            .to_str()
            .expect("location")
            .to_string();
        assert!(
            url.starts_with("/photos/") && url.len() == "/photos/".len() + 64,
            "{url}"
        );
        let img = client.get(app.url(&url)).send().await.expect("GET image");
        assert_eq!(img.status(), StatusCode::OK);
        assert_eq!(img.headers()[CONTENT_TYPE], "image/jpeg");
        assert_eq!(
            img.headers()[CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        let etag = img.headers()[ETAG].to_str().expect("etag").to_string();
        let bytes = img.bytes().await.expect("bytes");
        let decoded = testdata::decode(&bytes);
        assert_eq!((decoded.width(), decoded.height()), (w, h), "size {size}");
        let again = client
            .get(app.url(&url))
            .header(IF_NONE_MATCH, &etag)
            .send()
            .await
            .expect("GET");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        urls.push(url);
    }
    let r = client
        .get(app.url(&format!("/users/{id}")))
        .send()
        .await
        .expect("GET user");
    let user: Value = r.json().await.expect("json");
    assert!(
        user.get("photo").is_none(),
        "the user's representation is unchanged: {user}"
    );

    let r = app
        .anon
        .delete(app.url(&format!("/users/{id}/photo")))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for url in &urls {
        let r = client.get(app.url(url)).send().await.expect("GET");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{url} after the delete");
    }
    let r = app
        .anon
        .delete(app.url(&format!("/users/{id}/photo")))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .expect("DELETE");
    problem(r, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn every_bad_upload_gets_its_precise_problem_and_nothing_is_stored_or_queued() {
    let app = spawn_app().await;
    let (id, auth) = member(&app, "careful@example.com").await;
    let (_, other_auth) = member(&app, "someone.else@example.com").await;
    let jpeg = testdata::image(Format::Jpeg, 64, 64);

    let r = put_photo(
        &app,
        id,
        &auth,
        b"%PDF-1.7 not a picture".to_vec(),
        Some("image/jpeg"),
    )
    .await;
    let p = problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(p["type"], "urn:strata:problem:unsupported-image");
    assert_eq!(p["errors"][0]["pointer"], "", "the body is at fault: {p}");

    let r = put_photo(&app, id, &auth, jpeg.clone(), Some("image/png")).await;
    let p = problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(p["errors"][0]["parameter"], "Content-Type", "{p}");
    assert!(
        p["detail"].as_str().unwrap_or("").contains("image/jpeg"),
        "{p}"
    );

    let r = put_photo(
        &app,
        id,
        &auth,
        jpeg[..jpeg.len() / 2].to_vec(),
        Some("image/jpeg"),
    )
    .await;
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(p["type"], "urn:strata:problem:invalid-image");
    assert!(
        p["detail"].as_str().unwrap_or("").contains("truncated"),
        "{p}"
    );

    let r = put_photo(
        &app,
        id,
        &auth,
        testdata::png_bomb(30_000, 30_000),
        Some("image/png"),
    )
    .await;
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(p["type"], "urn:strata:problem:image-too-large");
    assert!(
        p["detail"].as_str().unwrap_or("").contains("30000 × 30000"),
        "{p}"
    );

    let r = put_photo(
        &app,
        id,
        &auth,
        vec![0xFF; 11 * 1000 * 1000],
        Some("image/jpeg"),
    )
    .await;
    let p = problem(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(p["type"], "urn:strata:problem:photo-too-large");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or("")
            .contains(&MAX_UPLOAD_BYTES.to_string()),
        "{p}"
    );

    let r = put_photo(&app, id, &other_auth, jpeg.clone(), Some("image/jpeg")).await;
    problem(r, StatusCode::FORBIDDEN).await;
    let r = app
        .anon
        .put(app.url(&format!("/users/{id}/photo")))
        .body(jpeg.clone())
        .send()
        .await
        .expect("PUT");
    problem(r, StatusCode::UNAUTHORIZED).await;

    let r = no_redirects()
        .get(app.url(&format!("/users/{id}/photo?size=256")))
        .send()
        .await
        .expect("GET");
    let p = problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(p["errors"][0]["parameter"], "size");
    let r = no_redirects()
        .get(app.url(&format!("/users/{id}/photo?size=64&size=128")))
        .send()
        .await
        .expect("GET");
    let p = problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        p["errors"][0]["parameter"], "size",
        "a repeated size is a problem too"
    );

    assert_eq!(blob_count(&app), 0, "nothing stored");
    assert!(
        app.photos
            .catalog
            .unsent(10)
            .await
            .expect("outbox")
            .is_empty(),
        "nothing recorded"
    );
    assert_eq!(
        app.photos
            .queue
            .stats(&queue_name())
            .await
            .expect("stats")
            .depth(),
        0,
        "nothing queued"
    );
}

#[tokio::test]
async fn an_admin_may_upload_for_anyone_and_a_job_is_its_owners_to_read() {
    let app = spawn_app().await;
    let (id, auth) = member(&app, "subject@example.com").await;
    let (_, other_auth) = member(&app, "nosy@example.com").await;
    // `app.client` carries the admin's token.
    let r = app
        .client
        .put(app.url(&format!("/users/{id}/photo")))
        .body(testdata::image(Format::Png, 40, 40))
        .send()
        .await
        .expect("PUT as admin");
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{ADMIN_EMAIL} may");
    let location = r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    let r = app
        .anon
        .get(app.url(&location))
        .header(AUTHORIZATION, &other_auth)
        .send()
        .await
        .expect("GET");
    problem(r, StatusCode::FORBIDDEN).await;
    let r = app
        .anon
        .get(app.url(&location))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .anon
        .get(app.url("/jobs/123"))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .expect("GET");
    problem(r, StatusCode::NOT_FOUND).await;
    let r = app
        .client
        .put(app.url("/users/424242/photo"))
        .body(testdata::image(Format::Png, 4, 4))
        .send()
        .await
        .expect("PUT");
    problem(r, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn deleting_a_user_deletes_their_photo() {
    let app = spawn_app().await;
    let (id, auth) = member(&app, "leaving@example.com").await;
    let r = put_photo(&app, id, &auth, testdata::image(Format::Png, 80, 80), None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(process_all(&app).await, [Outcome::Done]);
    let client = no_redirects();
    let r = client
        .get(app.url(&format!("/users/{id}/photo?size=64")))
        .send()
        .await
        .expect("GET");
    let url = r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    let r = app
        .anon
        .delete(app.url(&format!("/users/{id}")))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .expect("DELETE user");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = client
        .get(app.url(&format!("/users/{id}/photo")))
        .send()
        .await
        .expect("GET");
    problem(r, StatusCode::NOT_FOUND).await;
    let r = client.get(app.url(&url)).send().await.expect("GET image");
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "the image is no longer served"
    );
    assert_eq!(blob_count(&app), 0, "nor kept");
}
