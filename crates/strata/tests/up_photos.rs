//! Photos through the default topology of `strata up`: an upload through the balancer is
//! answered 202 by whichever API server gets it, published by that server's outbox relay,
//! resized by `worker-1`, and served by a content-addressed URL — all in separate processes.

mod common;

use common::{Cleanup, admin_client, explain, role, status_json, strata};
use strata_photos::testdata;
use strata_photos::upload::Format;

#[tokio::test]
async fn an_upload_through_the_balancer_is_resized_by_the_worker_and_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("deploy");
    let _cleanup = Cleanup(&dir);
    let out = strata(&["up", "-d", "--port", "0"], &dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata up -d", &out, &dir)
    );
    let status = status_json(&dir);
    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb")
        .to_string();
    let admin = admin_client(&dir, &lb).await;

    let r = admin
        .put(format!("http://{lb}/users/12/photo"))
        .header("content-type", "image/jpeg")
        .body(testdata::image(Format::Jpeg, 900, 600))
        .send()
        .await
        .expect("PUT photo");
    assert_eq!(
        r.status().as_u16(),
        202,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let job = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let image_url = common::processed_photo(&no_redirects, &lb, "12", 128, &dir).await;
    let state: serde_json::Value = admin
        .get(format!("http://{lb}{job}"))
        .send()
        .await
        .expect("GET job")
        .json()
        .await
        .expect("json");
    assert_eq!(state["state"], "done", "{state}");
    let img = no_redirects
        .get(format!("http://{lb}{image_url}"))
        .send()
        .await
        .expect("GET image");
    assert_eq!(img.status().as_u16(), 200);
    assert_eq!(
        img.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let decoded = testdata::decode(&img.bytes().await.expect("bytes"));
    assert_eq!((decoded.width(), decoded.height()), (128, 85));

    let out = strata(&["down"], &dir);
    assert!(
        out.status.success(),
        "{}",
        explain("strata down", &out, &dir)
    );
}
