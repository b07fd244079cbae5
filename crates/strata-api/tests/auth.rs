//! Accounts, sessions and tokens over real HTTP: the security tests (tampered, `alg: none`,
//! foreign-key, expired tokens; replayed refresh tokens; cookies without CSRF), authorization,
//! abuse limits and bad input.

mod common;

use common::*;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use strata_api::auth::{Claims, sign_claims};
use strata_api::keys::KeyRing;

const PASSWORD: &str = "a long enough password";

/// Signs up `email`; returns the new user id.
async fn sign_up(app: &TestApp, email: &str) -> u64 {
    let r = app
        .anon
        .post(app.url("/accounts"))
        .json(&json!({"email": email, "password": PASSWORD, "profile": jane()}))
        .send()
        .await
        .expect("POST /accounts");
    assert_eq!(r.status(), StatusCode::CREATED, "sign up {email}");
    let body: Value = r.json().await.expect("json");
    body["id"].as_u64().expect("id")
}

/// Logs in; returns the token response.
async fn log_in(app: &TestApp, email: &str) -> Value {
    let r = app
        .anon
        .post(app.url("/sessions"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("POST /sessions");
    assert_eq!(r.status(), StatusCode::CREATED, "log in {email}");
    r.json().await.expect("json")
}

fn bearer(login: &Value) -> String {
    format!(
        "Bearer {}",
        login["access_token"].as_str().expect("access token")
    )
}

async fn get_as(app: &TestApp, path: &str, auth: &str) -> reqwest::Response {
    app.anon
        .get(app.url(path))
        .header(AUTHORIZATION, auth)
        .send()
        .await
        .expect("GET")
}

async fn patch_as(app: &TestApp, id: u64, auth: &str) -> reqwest::Response {
    app.anon
        .patch(app.url(&format!("/users/{id}")))
        .header(AUTHORIZATION, auth)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"firstName":"Patched"}"#)
        .send()
        .await
        .expect("PATCH")
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.anon
        .post(app.url("/sessions/refresh"))
        .json(&json!({ "refresh_token": token }))
        .send()
        .await
        .expect("refresh")
}

#[tokio::test]
async fn sign_up_log_in_and_see_only_your_own_account() {
    let app = spawn_app().await;
    let ann = sign_up(&app, "Ann@Example.com").await;
    let bob = sign_up(&app, "bob@example.com").await;
    let login = log_in(&app, "ann@example.com").await;
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["user_id"], ann);
    let auth = bearer(&login);

    // The public profile is the canonical representation: no account data in it.
    let public: Value = app
        .anon
        .get(app.url(&format!("/users/{ann}")))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let mut expected = jane();
    expected["id"] = json!(ann);
    assert_eq!(
        public, expected,
        "the public profile carries no email, roles or sessions"
    );

    // The account: its owner sees it (never cacheable by shared caches), others do not.
    let own = get_as(&app, &format!("/accounts/{ann}"), &auth).await;
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(own.headers()["cache-control"], "private, no-store");
    let own: Value = own.json().await.expect("json");
    assert_eq!(
        own["email"], "ann@example.com",
        "emails are stored lower case"
    );
    assert_eq!(own["roles"], json!([]));
    let other = get_as(&app, &format!("/accounts/{bob}"), &auth).await;
    let p = problem(other, StatusCode::FORBIDDEN).await;
    assert!(
        !p.to_string().contains("bob@"),
        "no account data leaks: {p}"
    );
    // An admin sees any account.
    let by_admin = app
        .client
        .get(app.url(&format!("/accounts/{bob}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(by_admin.status(), StatusCode::OK);

    // The session list shows this session as current.
    let sessions: Value = get_as(&app, "/sessions", &auth)
        .await
        .json()
        .await
        .expect("json");
    let list = sessions["sessions"].as_array().expect("sessions");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], login["session_id"]);
    assert_eq!(list[0]["current"], true);

    // JWKS publishes the verifying key.
    let jwks: Value = app
        .anon
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(
                login["access_token"]
                    .as_str()
                    .and_then(|t| t.split('.').next())
                    .expect("header"),
            )
            .expect("base64"),
    )
    .expect("json");
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], key["kid"], "tokens name the published key");
}

#[tokio::test]
async fn users_change_only_their_own_profile_and_admins_any() {
    let app = spawn_app().await;
    let ann = sign_up(&app, "ann@example.com").await;
    let bob = sign_up(&app, "bob@example.com").await;
    let auth = bearer(&log_in(&app, "ann@example.com").await);

    assert_eq!(patch_as(&app, ann, &auth).await.status(), StatusCode::OK);
    problem(patch_as(&app, bob, &auth).await, StatusCode::FORBIDDEN).await;
    problem(patch_as(&app, 12, &auth).await, StatusCode::FORBIDDEN).await;
    let r = app
        .anon
        .delete(app.url(&format!("/users/{bob}")))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .expect("DELETE");
    problem(r, StatusCode::FORBIDDEN).await;
    // Profiles without accounts are an admin's to create.
    let r = app
        .anon
        .post(app.url("/users"))
        .header(AUTHORIZATION, &auth)
        .json(&jane())
        .send()
        .await
        .expect("POST");
    problem(r, StatusCode::FORBIDDEN).await;
    // Anonymous writes: 401 with a challenge.
    let r = app
        .anon
        .patch(app.url(&format!("/users/{ann}")))
        .header("content-type", "application/merge-patch+json")
        .body("{}")
        .send()
        .await
        .expect("PATCH");
    assert!(r.headers().contains_key(WWW_AUTHENTICATE));
    problem(r, StatusCode::UNAUTHORIZED).await;
    // The admin may change anyone.
    let r = app
        .client
        .patch(app.url(&format!("/users/{bob}")))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"lastName":"Admin-Edited"}"#)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), StatusCode::OK);

    // Deleting your own user ends your account and your sessions.
    let r = app
        .anon
        .delete(app.url(&format!("/users/{ann}")))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    problem(
        get_as(&app, "/sessions", &auth).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let r = app
        .anon
        .post(app.url("/sessions"))
        .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    problem(r, StatusCode::UNAUTHORIZED).await;
}

fn forge(token: &str, header: Option<Value>, payload: impl FnOnce(&mut Value)) -> String {
    let mut parts = token.split('.');
    let (h, p, s) = (
        parts.next().expect("header"),
        parts.next().expect("payload"),
        parts.next().expect("signature"),
    );
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("b64")).expect("json");
    payload(&mut claims);
    let h = header
        .map(|v| URL_SAFE_NO_PAD.encode(v.to_string()))
        .unwrap_or_else(|| h.to_owned());
    format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

#[tokio::test]
async fn forged_foreign_expired_and_algless_tokens_are_refused() {
    let app = spawn_app().await;
    let ann = sign_up(&app, "ann@example.com").await;
    let login = log_in(&app, "ann@example.com").await;
    let token = login["access_token"].as_str().expect("token").to_owned();
    let ok = get_as(&app, "/sessions", &format!("Bearer {token}")).await;
    assert_eq!(ok.status(), StatusCode::OK);

    let mut refused = Vec::new();
    // Tampered: the payload claims to be the admin; the signature no longer matches.
    refused.push((
        "tampered",
        forge(&token, None, |c| c["sub"] = json!("9000000001")),
    ));
    refused.push((
        "tampered roles",
        forge(&token, None, |c| c["roles"] = json!(["admin"])),
    ));
    // alg none, with and without a signature.
    let none = json!({"alg": "none", "typ": "JWT"});
    let unsigned = forge(&token, Some(none.clone()), |_| {});
    refused.push(("alg none", unsigned.clone()));
    refused.push((
        "alg none, empty signature",
        format!("{}.", unsigned.rsplit_once('.').expect("dot").0),
    ));
    // HS256 with the public key as the secret (the classic confusion).
    refused.push((
        "alg HS256",
        forge(&token, Some(json!({"alg": "HS256", "typ": "JWT"})), |_| {}),
    ));
    // Signed by another key: one with an unknown kid, and one claiming the real kid.
    let claims: Claims = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).expect("payload"))
            .expect("b64"),
    )
    .expect("claims");
    let stranger = KeyRing::ephemeral().expect("key");
    let foreign = sign_claims(&stranger, &claims).expect("sign");
    refused.push(("another key", foreign.clone()));
    let real_kid: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().expect("h"))
            .expect("b64"),
    )
    .expect("json");
    let mut parts = foreign.splitn(2, '.');
    let (_, rest) = (parts.next(), parts.next().expect("rest"));
    let impostor_header = URL_SAFE_NO_PAD
        .encode(json!({"alg": "EdDSA", "typ": "JWT", "kid": real_kid["kid"]}).to_string());
    refused.push(("another key, real kid", format!("{impostor_header}.{rest}")));
    // Expired, though signed by the real key.
    let real = KeyRing::open(&app.dir.path().join("keys")).expect("keys");
    let expired = Claims {
        iat: claims.iat - 3600,
        exp: claims.iat - 60,
        ..claims.clone()
    };
    refused.push(("expired", sign_claims(&real, &expired).expect("sign")));
    // Wrong audience and issuer, though signed by the real key.
    let wrong_aud = Claims {
        aud: "someone-else".into(),
        ..claims.clone()
    };
    refused.push((
        "wrong audience",
        sign_claims(&real, &wrong_aud).expect("sign"),
    ));
    // Garbage.
    refused.push(("garbage", "not.a.token".into()));
    refused.push(("empty", String::new()));

    for (what, t) in refused {
        let r = get_as(&app, "/sessions", &format!("Bearer {t}")).await;
        assert!(r.headers().contains_key(WWW_AUTHENTICATE), "{what}");
        let p = problem(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(
            p["type"], "urn:strata:problem:unauthenticated",
            "{what}: {p}"
        );
        assert_eq!(
            patch_as(&app, ann, &format!("Bearer {t}")).await.status(),
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }
    // A well-signed token with the right claims still works: the refusals were about the token.
    let fresh = sign_claims(&real, &claims).expect("sign");
    assert_eq!(
        get_as(&app, "/sessions", &format!("Bearer {fresh}"))
            .await
            .status(),
        StatusCode::OK
    );
    // Other schemes are refused with a sentence.
    let basic = get_as(&app, "/sessions", "Basic YWRtaW46YWRtaW4=").await;
    problem(basic, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_replayed_one_revokes_its_session() {
    let app = spawn_app().await;
    sign_up(&app, "ann@example.com").await;
    let first = log_in(&app, "ann@example.com").await;
    let rt0 = first["refresh_token"].as_str().expect("rt").to_owned();

    let r = refresh(&app, &rt0).await;
    assert_eq!(r.status(), StatusCode::OK);
    let second: Value = r.json().await.expect("json");
    let rt1 = second["refresh_token"].as_str().expect("rt").to_owned();
    assert_ne!(rt0, rt1, "every use rotates the refresh token");
    assert_eq!(
        second["session_id"], first["session_id"],
        "the same session goes on"
    );
    assert_eq!(
        get_as(&app, "/sessions", &bearer(&second)).await.status(),
        StatusCode::OK
    );

    // Replaying the spent token: refused, and the whole session (family) is revoked.
    let p = problem(refresh(&app, &rt0).await, StatusCode::UNAUTHORIZED).await;
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("already used")),
        "{p}"
    );
    problem(refresh(&app, &rt1).await, StatusCode::UNAUTHORIZED).await;
    problem(
        get_as(&app, "/sessions", &bearer(&second)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // Garbage and forged refresh tokens: 401, and they revoke nothing.
    let third = log_in(&app, "ann@example.com").await;
    let sid = third["session_id"].as_str().expect("sid");
    for bad in [
        "garbage".to_owned(),
        format!("rt1.{sid}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        "rt1.00000000000000000000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    ] {
        problem(refresh(&app, &bad).await, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(
        get_as(&app, "/sessions", &bearer(&third)).await.status(),
        StatusCode::OK
    );
    let r = app
        .anon
        .post(app.url("/sessions/refresh"))
        .json(&json!({}))
        .send()
        .await
        .expect("refresh");
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&p), vec!["/refresh_token"]);
}

#[tokio::test]
async fn logging_out_and_revoking_end_sessions_at_once() {
    let app = spawn_app().await;
    sign_up(&app, "ann@example.com").await;
    sign_up(&app, "bob@example.com").await;
    let phone = log_in(&app, "ann@example.com").await;
    let laptop = log_in(&app, "ann@example.com").await;
    let bob = log_in(&app, "bob@example.com").await;

    let listed: Value = get_as(&app, "/sessions", &bearer(&laptop))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(2));

    // Another user's session id is answered like an unknown one.
    let r = app
        .anon
        .delete(app.url(&format!(
            "/sessions/{}",
            bob["session_id"].as_str().expect("sid")
        )))
        .header(AUTHORIZATION, bearer(&laptop))
        .send()
        .await
        .expect("DELETE");
    let p = problem(r, StatusCode::NOT_FOUND).await;
    assert_eq!(p["type"], "urn:strata:problem:session-not-found");
    assert_eq!(
        get_as(&app, "/sessions", &bearer(&bob)).await.status(),
        StatusCode::OK
    );
    let r = app
        .anon
        .delete(app.url("/sessions/ffffffffffffffffffffffffffffffff"))
        .header(AUTHORIZATION, bearer(&laptop))
        .send()
        .await
        .expect("DELETE");
    problem(r, StatusCode::NOT_FOUND).await;
    let r = app
        .anon
        .delete(app.url("/sessions/not-an-id"))
        .header(AUTHORIZATION, bearer(&laptop))
        .send()
        .await
        .expect("DELETE");
    problem(r, StatusCode::BAD_REQUEST).await;

    // Revoke the phone from the laptop: the phone's tokens stop working at once.
    let r = app
        .anon
        .delete(app.url(&format!(
            "/sessions/{}",
            phone["session_id"].as_str().expect("sid")
        )))
        .header(AUTHORIZATION, bearer(&laptop))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    problem(
        get_as(&app, "/sessions", &bearer(&phone)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        refresh(&app, phone["refresh_token"].as_str().expect("rt")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // Log out on the laptop.
    let r = app
        .anon
        .delete(app.url("/sessions/current"))
        .header(AUTHORIZATION, bearer(&laptop))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    problem(
        get_as(&app, "/sessions", &bearer(&laptop)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        refresh(&app, laptop["refresh_token"].as_str().expect("rt")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

/// The cookies of a response, by name: (value, attributes).
fn cookies(r: &reqwest::Response) -> Vec<(String, String, String)> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.split_once('=')?;
            Some((name.to_owned(), value.to_owned(), attrs.to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn browser_sessions_use_secure_cookies_and_need_the_csrf_token() {
    let app = spawn_app().await;
    let ann = sign_up(&app, "ann@example.com").await;
    let r = app
        .anon
        .post(app.url("/sessions"))
        .json(&json!({"email": "ann@example.com", "password": PASSWORD, "cookies": true}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::CREATED);
    let jar = cookies(&r);
    let body: Value = r.json().await.expect("json");
    assert!(
        body.get("access_token").is_none() && body.get("refresh_token").is_none(),
        "browser mode keeps tokens out of reach of scripts: {body}"
    );
    let csrf = body["csrf_token"].as_str().expect("csrf token").to_owned();
    let find = |name: &str| {
        jar.iter()
            .find(|c| c.0 == name)
            .cloned()
            .unwrap_or_else(|| panic!("cookie {name} is set: {jar:?}"))
    };
    let access = find("__Host-strata-access");
    let refresh_c = find("__Host-strata-refresh");
    let csrf_c = find("__Host-strata-csrf");
    for c in [&access, &refresh_c] {
        assert!(
            c.2.contains("HttpOnly")
                && c.2.contains("Secure")
                && c.2.contains("SameSite=Strict")
                && c.2.contains("Path=/"),
            "{c:?}"
        );
    }
    assert!(
        !csrf_c.2.contains("HttpOnly"),
        "scripts must be able to read the CSRF cookie"
    );
    assert_eq!(csrf_c.1, csrf);
    let cookie = format!("__Host-strata-access={}", access.1);

    // Safe requests need no CSRF token.
    let r = app
        .anon
        .get(app.url("/sessions"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    // Unsafe ones do: without it, or with a wrong one, 403.
    let patch = |token: Option<&str>| {
        let mut req = app
            .anon
            .patch(app.url(&format!("/users/{ann}")))
            .header("cookie", &cookie)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"firstName":"Cookie"}"#);
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        req.send()
    };
    let p = problem(patch(None).await.expect("PATCH"), StatusCode::FORBIDDEN).await;
    assert_eq!(p["type"], "urn:strata:problem:csrf");
    problem(
        patch(Some("wrong")).await.expect("PATCH"),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        patch(Some(&csrf)).await.expect("PATCH").status(),
        StatusCode::OK
    );

    // Refreshing by cookie needs the CSRF token too, and renews all three cookies.
    let refresh_cookie = format!("__Host-strata-refresh={}", refresh_c.1);
    let r = app
        .anon
        .post(app.url("/sessions/refresh"))
        .header("cookie", &refresh_cookie)
        .send()
        .await
        .expect("refresh");
    problem(r, StatusCode::FORBIDDEN).await;
    let r = app
        .anon
        .post(app.url("/sessions/refresh"))
        .header("cookie", &refresh_cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .expect("refresh");
    assert_eq!(r.status(), StatusCode::OK);
    let renewed = cookies(&r);
    assert_eq!(renewed.len(), 3, "{renewed:?}");
    let new_csrf: Value = r.json().await.expect("json");
    assert_ne!(
        new_csrf["csrf_token"].as_str(),
        Some(csrf.as_str()),
        "the CSRF token rotates with the refresh token"
    );
}

#[tokio::test]
async fn failed_logins_are_limited_and_never_tell_whether_an_email_exists() {
    let app = spawn_app_with(|auth| {
        auth.max_failures_per_account = 3;
        auth.max_failures_per_ip = 8;
    })
    .await;
    sign_up(&app, "ann@example.com").await;
    let attempt = |email: &'static str, password: &'static str| {
        app.anon
            .post(app.url("/sessions"))
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    // Wrong password and unknown email: the same answer.
    let wrong = problem(
        attempt("ann@example.com", "wrong password")
            .await
            .expect("login"),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let unknown = problem(
        attempt("nobody@example.com", "wrong password")
            .await
            .expect("login"),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        wrong, unknown,
        "an error must not reveal whether the email is registered"
    );

    // Per account: after 3 failures even the right password waits, with Retry-After.
    for _ in 0..2 {
        attempt("ann@example.com", "wrong password")
            .await
            .expect("login");
    }
    let r = attempt("ann@example.com", "a long enough password")
        .await
        .expect("login");
    let retry: u64 = r.headers()[RETRY_AFTER]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=15 * 60).contains(&retry), "{retry}");
    problem(r, StatusCode::TOO_MANY_REQUESTS).await;
    // An unregistered email is limited the same way, so a 429 reveals nothing either.
    for _ in 0..2 {
        attempt("nobody@example.com", "x").await.expect("login");
    }
    problem(
        attempt("nobody@example.com", "x").await.expect("login"),
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;

    // Per address: 8 failures in all from this client, whatever the email.
    for email in ["c@example.com", "d@example.com"] {
        problem(
            attempt(email, "x").await.expect("login"),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    let r = attempt("e@example.com", "x").await.expect("login");
    assert!(r.headers().contains_key(RETRY_AFTER));
    problem(r, StatusCode::TOO_MANY_REQUESTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_guesses_at_once_get_no_more_passwords_checked_than_the_limit() {
    let app = spawn_app_with(|auth| {
        auth.max_failures_per_account = 5;
        auth.max_failures_per_ip = 10_000;
    })
    .await;
    sign_up(&app, "ann@example.com").await;
    let guesses = (0..200).map(|n| {
        app.anon
            .post(app.url("/sessions"))
            .json(&json!({"email": "ann@example.com", "password": format!("guess number {n}")}))
            .send()
    });
    let statuses: Vec<u16> = futures_util::future::join_all(guesses)
        .await
        .into_iter()
        .map(|r| r.expect("login").status().as_u16())
        .collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    println!(
        "200 concurrent wrong guesses, limit 5: {checked} checked against the password (401), {refused} refused (429)"
    );
    assert_eq!(
        (checked, refused),
        (5, 195),
        "each attempt is counted before its password is checked: {statuses:?}"
    );
}

#[tokio::test]
async fn only_a_trusted_proxy_names_the_client_address() {
    let app = spawn_app_with(|auth| {
        auth.max_failures_per_account = 1_000;
        auth.max_failures_per_ip = 2;
        auth.trusted_proxies = strata_api::client::TrustedProxies::new(vec![
            strata_api::client::parse_proxy("127.0.0.2").expect("proxy"),
        ]);
    })
    .await;
    sign_up(&app, "ann@example.com").await;
    // The balancer: connections from 127.0.0.2 (all of 127/8 is loopback).
    let proxy = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().ok())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client");
    let attempt = |client: &reqwest::Client, n: usize, forwarded_for: &str, password: &str| {
        client
            .post(app.url("/sessions"))
            .header("x-forwarded-for", forwarded_for)
            .json(&json!({"email": format!("guess{n}@example.com"), "password": password}))
            .send()
    };
    let status = |r: reqwest::Result<reqwest::Response>| r.expect("login").status();

    // The sessions list shows the address the limits count.
    let mut seen = Vec::new();
    for (client, forwarded_for) in [(&proxy, "203.0.113.50"), (&app.anon, "203.0.113.51")] {
        let login: Value = client
            .post(app.url("/sessions"))
            .header("x-forwarded-for", forwarded_for)
            .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("json");
        let list: Value = get_as(&app, "/sessions", &bearer(&login))
            .await
            .json()
            .await
            .expect("json");
        let current = list["sessions"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["current"] == true))
            .map(|s| s["ip"].clone());
        seen.push(current);
    }
    assert_eq!(
        seen,
        [Some(json!("203.0.113.50")), Some(json!("127.0.0.1"))],
        "through the proxy: the client; directly: the peer"
    );

    // A local process talking to the API port directly names a new address each time: it is
    // counted against its own, and stopped after 2.
    for n in 0..2 {
        let r = attempt(&app.anon, n, &format!("198.51.100.{n}"), "x").await;
        assert_eq!(status(r), StatusCode::UNAUTHORIZED);
    }
    let r = attempt(&app.anon, 2, "198.51.100.77", "x").await;
    assert_eq!(
        status(r),
        StatusCode::TOO_MANY_REQUESTS,
        "spoofed X-Forwarded-For is not believed"
    );

    // Through the trusted proxy each client address has its own count …
    for n in 10..12 {
        let r = attempt(&proxy, n, "203.0.113.1", "x").await;
        assert_eq!(status(r), StatusCode::UNAUTHORIZED);
    }
    let r = attempt(&proxy, 12, "203.0.113.1", "x").await;
    assert_eq!(status(r), StatusCode::TOO_MANY_REQUESTS);
    let r = attempt(&proxy, 13, "203.0.113.2", "x").await;
    assert_eq!(
        status(r),
        StatusCode::UNAUTHORIZED,
        "another client, another count"
    );
    // … and what the client itself wrote, left of what the proxy appended, is not believed.
    let r = attempt(&proxy, 14, "203.0.113.9, 203.0.113.1", "x").await;
    assert_eq!(status(r), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_successful_login_gives_the_address_its_count_back() {
    let app = spawn_app_with(|auth| {
        auth.max_failures_per_account = 100;
        auth.max_failures_per_ip = 3;
    })
    .await;
    sign_up(&app, "ann@example.com").await;
    // Many good logins from one address: none is a failure, none is limited.
    for _ in 0..6 {
        let r = app
            .anon
            .post(app.url("/sessions"))
            .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
}

#[tokio::test]
async fn bad_account_and_session_input_gets_precise_problems() {
    let app = spawn_app().await;
    let post = |path: &'static str, body: Value| app.anon.post(app.url(path)).json(&body).send();
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "/accounts",
            json!({"email": "not-an-email", "password": PASSWORD, "profile": jane()}),
            vec!["/email"],
        ),
        (
            "/accounts",
            json!({"email": "a@example.com", "password": "short", "profile": jane()}),
            vec!["/password"],
        ),
        (
            "/accounts",
            json!({"email": "a@example.com", "password": "p".repeat(129), "profile": jane()}),
            vec!["/password"],
        ),
        (
            "/accounts",
            json!({"email": "a@example.com", "password": PASSWORD}),
            vec!["/profile"],
        ),
        (
            "/accounts",
            json!({"email": "a@example.com", "password": PASSWORD, "profile": {"firstName": 5}}),
            vec!["/profile/firstName"],
        ),
        (
            "/accounts",
            json!({"email": "a@example.com", "password": PASSWORD, "profile": jane(), "roles": ["admin"]}),
            vec!["/roles"],
        ),
        (
            "/sessions",
            json!({"email": "x", "password": 5}),
            vec!["/email", "/password"],
        ),
        (
            "/sessions",
            json!({"email": "a@example.com", "password": "p".repeat(10_000)}),
            vec!["/password"],
        ),
        (
            "/sessions",
            json!({"email": "a@example.com", "password": PASSWORD, "cookies": "yes"}),
            vec!["/cookies"],
        ),
    ];
    for (path, body, expected) in cases {
        let p = problem(
            post(path, body.clone()).await.expect("POST"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        let mut got = pointers(&p);
        got.retain(|ptr| expected.contains(&ptr.as_str()));
        assert_eq!(got.len(), expected.len(), "{path} {body}: {p}");
    }
    // A taken email: 409 naming the field; the account is not created twice.
    sign_up(&app, "taken@example.com").await;
    let r = post(
        "/accounts",
        json!({"email": "TAKEN@example.com", "password": PASSWORD, "profile": jane()}),
    )
    .await
    .expect("POST");
    let p = problem(r, StatusCode::CONFLICT).await;
    assert_eq!(pointers(&p), vec!["/email"]);
    // Nobody can make themselves an admin through the API.
    let login = log_in(&app, "taken@example.com").await;
    assert!(login["user_id"].as_u64().is_some());
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(
                login["access_token"]
                    .as_str()
                    .and_then(|t| t.split('.').nth(1))
                    .expect("payload"),
            )
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(claims["roles"], json!([]));
}

/// Sends `method path` with `auth` and an optional JSON body to the server at `base`.
async fn send_to(
    app: &TestApp,
    base: &str,
    method: reqwest::Method,
    path: &str,
    auth: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app
        .anon
        .request(method, format!("{base}{path}"))
        .header(AUTHORIZATION, auth);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

async fn patch_at(app: &TestApp, base: &str, id: u64, auth: &str) -> StatusCode {
    app.anon
        .patch(format!("{base}/users/{id}"))
        .header(AUTHORIZATION, auth)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"lastName":"Edited"}"#)
        .send()
        .await
        .expect("PATCH")
        .status()
}

async fn log_in_with(app: &TestApp, base: &str, email: &str, password: &str) -> reqwest::Response {
    app.anon
        .post(format!("{base}/sessions"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("POST /sessions")
}

#[tokio::test]
async fn a_withdrawn_role_a_deleted_account_and_a_changed_password_end_rights_at_once_on_every_server()
 {
    use strata_core::email::Email;
    use strata_core::user::UserId;
    use strata_store::Store as _;
    use strata_store::accounts::{ADMIN_ROLE, AccountStore as _};

    let app = spawn_app().await;
    let (a, b) = (app.base.clone(), spawn_peer(&app).await);
    // The operator's view of the same database (what `strata admin` opens).
    let operator = strata_store::sqlite::SqliteStore::open(app.dir.path())
        .expect("open")
        .store;
    let ann = sign_up(&app, "ann@example.com").await;
    let bob = sign_up(&app, "bob@example.com").await;
    let admin: Value = log_in_with(&app, &a, ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .json()
        .await
        .expect("json");
    let admin = bearer(&admin);

    // Withdrawing the admin role: the admin's token, issued with `roles: ["admin"]`, stops
    // carrying admin rights on both servers with the very next request; granting it back
    // restores them just as fast.
    assert_eq!(patch_at(&app, &b, bob, &admin).await, StatusCode::OK);
    let admin_email = Email::parse(ADMIN_EMAIL).expect("email");
    operator
        .set_role(&admin_email, ADMIN_ROLE, false)
        .await
        .expect("withdraw");
    for base in [&a, &b] {
        assert_eq!(
            patch_at(&app, base, bob, &admin).await,
            StatusCode::FORBIDDEN,
            "{base}: a withdrawn role is gone at once"
        );
    }
    operator
        .set_role(&admin_email, ADMIN_ROLE, true)
        .await
        .expect("grant");
    assert_eq!(patch_at(&app, &b, bob, &admin).await, StatusCode::OK);

    // Changing a password: two sessions on two servers; the owner changes it on one.
    let on_a: Value = log_in_with(&app, &a, "ann@example.com", PASSWORD)
        .await
        .json()
        .await
        .expect("json");
    let on_b: Value = log_in_with(&app, &b, "ann@example.com", PASSWORD)
        .await
        .json()
        .await
        .expect("json");
    let (ann_a, ann_b) = (bearer(&on_a), bearer(&on_b));
    let path = format!("/accounts/{ann}/password");
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let put = reqwest::Method::PUT;
    let r = send_to(
        &app,
        &a,
        put.clone(),
        &path,
        &ann_a,
        Some(change("wrong password", "a new password 2")),
    )
    .await;
    problem(r, StatusCode::UNAUTHORIZED).await;
    let r = send_to(
        &app,
        &a,
        put.clone(),
        &path,
        &ann_a,
        Some(json!({"new_password": "short"})),
    )
    .await;
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        pointers(&p),
        vec!["/new_password", "/current_password"],
        "{p}"
    );
    let r = send_to(
        &app,
        &a,
        put.clone(),
        &format!("/accounts/{bob}/password"),
        &ann_a,
        Some(change(PASSWORD, "a new password 2")),
    )
    .await;
    problem(r, StatusCode::FORBIDDEN).await;
    assert_eq!(
        patch_at(&app, &b, ann, &ann_b).await,
        StatusCode::OK,
        "refusals changed nothing"
    );
    let r = send_to(
        &app,
        &a,
        put.clone(),
        &path,
        &ann_a,
        Some(change(PASSWORD, "a new password 2")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for (base, token) in [(&a, &ann_a), (&b, &ann_b), (&b, &ann_a), (&a, &ann_b)] {
        problem(
            send_to(&app, base, reqwest::Method::GET, "/sessions", token, None).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_eq!(
            patch_at(&app, base, ann, token).await,
            StatusCode::UNAUTHORIZED,
            "{base}"
        );
    }
    let spent = on_b["refresh_token"].as_str().expect("refresh token");
    problem(refresh(&app, spent).await, StatusCode::UNAUTHORIZED).await;
    problem(
        log_in_with(&app, &b, "ann@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let fresh = log_in_with(&app, &b, "ann@example.com", "a new password 2").await;
    assert_eq!(
        fresh.status(),
        StatusCode::CREATED,
        "the new password works"
    );

    // An admin sets another account's password without knowing it; its sessions end too.
    let bob_login: Value = log_in_with(&app, &b, "bob@example.com", PASSWORD)
        .await
        .json()
        .await
        .expect("json");
    let bob_token = bearer(&bob_login);
    let r = send_to(
        &app,
        &b,
        put.clone(),
        &format!("/accounts/{bob}/password"),
        &admin,
        Some(json!({"new_password": "set by the admin"})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        patch_at(&app, &a, bob, &bob_token).await,
        StatusCode::UNAUTHORIZED
    );

    // Deleting an account: its tokens stop at once even where the sessions could not be ended
    // (the account itself is checked on every request). Deleted here behind the servers' back.
    let bob_login: Value = log_in_with(&app, &a, "bob@example.com", "set by the admin")
        .await
        .json()
        .await
        .expect("json");
    let bob_token = bearer(&bob_login);
    assert_eq!(patch_at(&app, &b, bob, &bob_token).await, StatusCode::OK);
    operator
        .delete(UserId(bob), strata_store::Precondition::None)
        .await
        .expect("delete");
    for base in [&a, &b] {
        let r = send_to(
            &app,
            base,
            reqwest::Method::GET,
            "/sessions",
            &bob_token,
            None,
        )
        .await;
        let p = problem(r, StatusCode::UNAUTHORIZED).await;
        assert!(
            p["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no longer exists")),
            "{p}"
        );
    }
}

#[tokio::test]
async fn a_new_account_embeds_its_user_exactly_as_get_users_answers_it() {
    let app = spawn_app().await;
    let r = app
        .anon
        .post(app.url("/accounts"))
        .json(&json!({"email": "cat@example.com", "password": PASSWORD, "profile": jane()}))
        .send()
        .await
        .expect("POST /accounts");
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = r.text().await.expect("body");
    let id = serde_json::from_str::<Value>(&created).expect("json")["id"]
        .as_u64()
        .expect("id");
    let fetched = app
        .anon
        .get(app.url(&format!("/users/{id}")))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(
        fetched.starts_with(&format!("{{\"id\":{id},\"firstName\":")),
        "canonical order: {fetched}"
    );
    assert_eq!(
        created,
        format!("{{\"id\":{id},\"email\":\"cat@example.com\",\"roles\":[],\"user\":{fetched}}}"),
        "one serializer: the same bytes, in the canonical field order"
    );
}
