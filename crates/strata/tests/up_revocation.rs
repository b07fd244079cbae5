//! Revocation across API servers, end to end: a deployment with two API servers; the operator
//! withdraws an admin's role and then revokes the key that signed its token with `strata admin`.
//! Both servers stop honouring the role at once and the key within a second — measured from the
//! command's exit, polled on each server. Rotation refuses to retire a key whose tokens may
//! still be live, and bad key ids get a message that lists the real ones.

mod common;
use common::{ADMIN_EMAIL, Cleanup, admin_client, explain, status_json, strata, up_topology};

use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn api_addrs(status: &Value) -> Vec<String> {
    status["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with("api-")))
        .filter_map(|r| r["addrs"]["http"].as_str().map(String::from))
        .collect()
}

async fn create_profile(http: &reqwest::Client, api: &str) -> u16 {
    let profile = json!({"firstName": "Pat", "lastName": "Profile",
        "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA", "postalCode": "02134"},
        "phoneNumbers": []});
    http.post(format!("http://{api}/users"))
        .json(&profile)
        .send()
        .await
        .expect("POST /users")
        .status()
        .as_u16()
}

async fn sessions_status(http: &reqwest::Client, api: &str) -> u16 {
    http.get(format!("http://{api}/sessions"))
        .send()
        .await
        .expect("GET /sessions")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_role_and_a_revoked_key_stop_working_on_every_server() {
    let (_tmp, dir) = up_topology("[api]\ncount = 2\n");
    let _cleanup = Cleanup(&dir);
    let apis = api_addrs(&status_json(&dir));
    assert_eq!(apis.len(), 2, "two API servers: {apis:?}");
    // Logged in through the first server.
    let admin = admin_client(&dir, &apis[0]).await;
    assert_eq!(create_profile(&admin, &apis[1]).await, 201, "an admin may");

    // Withdraw: the very next request on either server is refused.
    let out = strata(&["admin", "withdraw", ADMIN_EMAIL], &dir);
    assert!(out.status.success(), "{}", explain("withdraw", &out, &dir));
    for api in &apis {
        assert_eq!(create_profile(&admin, api).await, 403, "{api}: role gone");
        assert_eq!(
            sessions_status(&admin, api).await,
            200,
            "{api}: still signed in"
        );
    }

    // Revoke the key that signed the token (the deployment's only key so far).
    let jwks: Value = admin
        .get(format!("http://{}/.well-known/jwks.json", apis[1]))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let kid = jwks["keys"][0]["kid"].as_str().expect("a kid").to_owned();
    let out = strata(&["admin", "revoke-key", &kid], &dir);
    assert!(
        out.status.success(),
        "{}",
        explain("revoke-key", &out, &dir)
    );
    let revoked_at = Instant::now();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(&format!("key {kid} revoked")), "{printed}");
    let mut stopped = vec![None; apis.len()];
    while stopped.iter().any(Option::is_none) {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "a revoked key still verifies after 5 s: {stopped:?}"
        );
        for (i, api) in apis.iter().enumerate() {
            if stopped[i].is_none() && sessions_status(&admin, api).await == 401 {
                stopped[i] = Some(revoked_at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (api, after) in apis.iter().zip(&stopped) {
        let after = after.unwrap_or_default();
        assert!(
            after < Duration::from_secs(1),
            "{api} verified the revoked key for {after:?}"
        );
    }
    // The deployment goes on with the new key: a new login works on both servers.
    let again = admin_client(&dir, &apis[1]).await;
    for api in &apis {
        assert_eq!(sessions_status(&again, api).await, 200, "{api}: new key");
    }

    // Bad input: an unknown key id names the real ones and changes nothing.
    let out = strata(&["admin", "revoke-key", "0000000000000-beef"], &dir);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("holds no key 0000000000000-beef; its keys are: "),
        "{}",
        explain("revoke-key unknown", &out, &dir)
    );
    // Two rotations per access-token lifetime; the third would retire live tokens' key.
    for _ in 0..2 {
        let out = strata(&["admin", "rotate-keys"], &dir);
        assert!(
            out.status.success(),
            "{}",
            explain("rotate-keys", &out, &dir)
        );
    }
    let out = strata(&["admin", "rotate-keys"], &dir);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("rotate at most twice per access-token lifetime"),
        "{}",
        explain("a third rotate-keys", &out, &dir)
    );
    for api in &apis {
        assert_eq!(
            sessions_status(&again, api).await,
            200,
            "{api}: nothing retired"
        );
    }
    let out = strata(&["admin", "rotate-keys", "--force"], &dir);
    assert!(
        out.status.success(),
        "{}",
        explain("rotate-keys --force", &out, &dir)
    );
}
