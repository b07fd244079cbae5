//! The S3 blob store against a real SeaweedFS (`weed server -s3` on free loopback ports in a
//! temporary directory): the shared suite, a SeaweedFS killed with SIGKILL under writers, and
//! credentials it does not know. `scripts/test` installs `weed` and names it in `STRATA_WEED`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng as _, RngCore as _, SeedableRng as _};
use strata_blobs::conformance::{MAX_BYTES, run_all};
use strata_blobs::s3::{S3BlobStore, S3Credentials, S3Options};
use strata_blobs::{BlobError, BlobKey, BlobStore};
use strata_testkit::engines::seaweedfs::{self, Identity, Node, Ports, S3Tls, Weed};
use strata_testkit::engines::{Engine, Log};

const START: Duration = Duration::from_secs(90);

/// A SeaweedFS of the test's own, in `dir`; fails with how to install `weed` when it is missing.
fn start_weed(dir: &std::path::Path) -> Weed {
    start_weed_with(dir, |node| node)
}

/// [`start_weed`], with the node changed by `configure` before it starts.
fn start_weed_with(dir: &std::path::Path, configure: impl Fn(Node) -> Node) -> Weed {
    if let Err(missing) = Engine::SeaweedFs.locate() {
        panic!("{missing}");
    }
    let log = Log::File(dir.join("weed.log"));
    let mut last = None;
    // A free port can be taken before SeaweedFS binds it: try a few.
    for attempt in 0..3 {
        let ports = Ports::free().expect("free ports");
        let identity = Identity::random().expect("identity");
        let node = configure(Node::new(
            dir.join(format!("node-{attempt}")),
            ports,
            identity,
        ));
        match seaweedfs::start(node, &log, START) {
            Ok(weed) => return weed,
            Err(e) => last = Some(e),
        }
    }
    panic!("SeaweedFS did not start: {last:?}");
}

fn credentials(weed: &Weed) -> S3Credentials {
    let identity = &weed.node().identity;
    S3Credentials {
        access_key: identity.access_key.clone(),
        secret_key: identity.secret_key.clone(),
    }
}

fn options(weed: &Weed, bucket: &str, max_bytes: usize) -> S3Options {
    let mut options = S3Options::new(weed.endpoint(), bucket, credentials(weed), max_bytes);
    options.prefix = "blobs/".into();
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_store_on_seaweedfs_passes_the_blob_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weed = start_weed(dir.path());
    let store = S3BlobStore::open(options(&weed, "strata-suite", MAX_BYTES))
        .await
        .expect("open creates the bucket");
    run_all(&store).await;
    // Opening again finds the bucket there and keeps it, blobs and all.
    let key = store.put(b"kept".to_vec()).await.expect("put");
    let again = S3BlobStore::open(options(&weed, "strata-suite", MAX_BYTES))
        .await
        .expect("open an existing bucket");
    assert_eq!(again.get(&key).await.expect("get"), Some(b"kept".to_vec()));
    // Another prefix in the same bucket is another store.
    let mut other = options(&weed, "strata-suite", MAX_BYTES);
    other.prefix = "elsewhere/".into();
    let other = S3BlobStore::open(other).await.expect("open");
    assert!(!other.exists(&key).await.expect("exists"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weed = start_weed(dir.path());
    S3BlobStore::open(options(&weed, "strata-creds", MAX_BYTES))
        .await
        .expect("the right credentials open the store");
    let right = credentials(&weed);
    let wrong_secret = S3Credentials {
        access_key: right.access_key.clone(),
        secret_key: "not-the-secret-0123456789".into(),
    };
    let unknown_key = S3Credentials {
        access_key: "STRATANOSUCHKEY00000".into(),
        secret_key: right.secret_key.clone(),
    };
    for (bucket, creds) in [
        ("strata-creds", wrong_secret.clone()),
        ("strata-creds", unknown_key.clone()),
        ("strata-new-bucket", wrong_secret),
        ("strata-new-bucket", unknown_key),
    ] {
        let mut o = options(&weed, bucket, MAX_BYTES);
        o.credentials = creds.clone();
        let e = S3BlobStore::open(o)
            .await
            .expect_err("wrong credentials are refused");
        let text = e.to_string();
        assert!(
            text.contains("403") && text.contains("refused the credentials"),
            "{bucket} {creds:?}: {text}"
        );
        assert!(!text.contains(&creds.secret_key), "no secret in {text}");
    }
}

/// What one writer's put came to.
#[derive(Debug)]
struct Outcome {
    key: BlobKey,
    size: usize,
    ok: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_that_returned_survive_a_kill_9_and_a_put_in_flight_is_whole_or_absent() {
    const MAX: usize = 6 << 20;
    const WRITERS: usize = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut weed = start_weed(dir.path());
    let mut o = options(&weed, "strata-kill", MAX);
    // Puts fail soon once the server is gone.
    o.timeout = Duration::from_secs(5);
    let store = Arc::new(S3BlobStore::open(o).await.expect("open"));

    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let oks = Arc::new(AtomicUsize::new(0));
    // Each writer's count of failed puts.
    let failures: Arc<Vec<AtomicUsize>> = Arc::new((0..WRITERS).map(|_| 0.into()).collect());
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, outcomes, stop) = (store.clone(), outcomes.clone(), stop.clone());
        let (oks, failures) = (oks.clone(), failures.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(w as u64);
            // Bounded: a writer stops after 400 puts even if never told to.
            for _ in 0..400 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                // From a few bytes to past SeaweedFS's 4 MiB chunk size (several chunks).
                let size = if rng.random_bool(0.2) {
                    rng.random_range(4 << 20..MAX)
                } else {
                    rng.random_range(1..256 << 10)
                };
                let mut bytes = vec![0u8; size];
                rng.fill_bytes(&mut bytes);
                let key = BlobKey::of(&bytes);
                let ok = match store.put(bytes).await {
                    Ok(k) => {
                        assert_eq!(k, key);
                        oks.fetch_add(1, Ordering::SeqCst);
                        true
                    }
                    Err(BlobError::Engine(_)) => {
                        failures[w].fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        false
                    }
                    Err(e) => panic!("a put fails as an engine error, not {e:?}"),
                };
                outcomes
                    .lock()
                    .expect("outcomes")
                    .push(Outcome { key, size, ok });
            }
        }));
    }

    let wait_for = |what: &str, deadline: Duration, done: &dyn Fn() -> bool| {
        let until = Instant::now() + deadline;
        while !done() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    tokio::task::block_in_place(|| {
        wait_for("puts before the kill", Duration::from_secs(60), &|| {
            oks.load(Ordering::SeqCst) >= 30
        });
        weed.kill9();
        let before: Vec<usize> = failures.iter().map(|f| f.load(Ordering::SeqCst)).collect();
        // Every writer's put in flight at the kill has ended, and its next ones fail.
        wait_for(
            "every writer's puts to fail",
            Duration::from_secs(30),
            &|| {
                failures
                    .iter()
                    .zip(&before)
                    .all(|(f, b)| f.load(Ordering::SeqCst) > *b)
            },
        );
        weed.restart(START).expect("SeaweedFS restarts on its data");
        let after = oks.load(Ordering::SeqCst);
        wait_for("puts after the restart", Duration::from_secs(60), &|| {
            oks.load(Ordering::SeqCst) >= after + 10
        });
    });
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    let (mut returned, mut failed_absent, mut failed_whole) = (0, 0, 0);
    for o in &outcomes {
        match store.get(&o.key).await {
            Ok(Some(bytes)) => {
                // `get` checked the hash: these are the bytes put.
                assert_eq!(bytes.len(), o.size);
                if o.ok {
                    returned += 1;
                } else {
                    failed_whole += 1;
                }
            }
            Ok(None) => {
                assert!(!o.ok, "a put that returned Ok is lost: {o:?}");
                failed_absent += 1;
            }
            Err(e) => panic!("{o:?}: never a partial or damaged object: {e}"),
        }
    }
    assert!(returned >= 40, "{returned} puts returned");
    assert!(failed_absent + failed_whole >= WRITERS, "the kill hit puts");
    eprintln!(
        "{} puts: {returned} returned and are intact; of the failed ones {failed_absent} are \
         absent and {failed_whole} whole",
        outcomes.len()
    );
}

/// One call of the store, to run later.
type Call<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), BlobError>> + Send + 'a>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_service_makes_every_call_fail_at_its_deadline_not_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weed = start_weed(dir.path());
    let mut o = options(&weed, "strata-stall", MAX_BYTES);
    o.timeout = Duration::from_secs(1);
    let store = S3BlobStore::open(o).await.expect("open");
    let key = store.put(b"before the stall".to_vec()).await.expect("put");
    weed.pause();
    let calls: [(&str, Call<'_>); 4] = [
        (
            "put",
            Box::pin(async { store.put(b"during".to_vec()).await.map(drop) }),
        ),
        ("get", Box::pin(async { store.get(&key).await.map(drop) })),
        (
            "exists",
            Box::pin(async { store.exists(&key).await.map(drop) }),
        ),
        (
            "delete",
            Box::pin(async { store.delete(&key).await.map(drop) }),
        ),
    ];
    for (name, call) in calls {
        let started = Instant::now();
        let e = call.await.expect_err("a stalled service fails the call");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{name} took {took:?}"
        );
        assert!(e.to_string().contains("within 1000 ms"), "{name}: {e}");
    }
    weed.resume();
    assert_eq!(
        store.get(&key).await.expect("get after the stall"),
        Some(b"before the stall".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_refuses_a_body_that_does_not_match_its_content_md5_and_stores_nothing() {
    // What the store's Content-MD5 relies on: bytes damaged on the way are refused, not stored.
    use rusty_s3::{Bucket, Credentials, S3Action as _, UrlStyle};
    let dir = tempfile::tempdir().expect("tempdir");
    let weed = start_weed(dir.path());
    let store = S3BlobStore::open(options(&weed, "strata-md5", MAX_BYTES))
        .await
        .expect("open");
    let endpoint = weed.endpoint().parse().expect("endpoint");
    let bucket = Bucket::new(endpoint, UrlStyle::Path, "strata-md5", "us-east-1").expect("bucket");
    let c = credentials(&weed);
    let creds = Credentials::new(c.access_key, c.secret_key);
    let sent = b"the bytes that arrived".to_vec();
    let key = BlobKey::of(&sent);
    let object = store.object_of(&key);
    let mut put = bucket.put_object(Some(&creds), &object);
    // The MD5 of no bytes: what a sender of an empty body would have declared.
    let md5 = "1B2M2Y8AsgTpgAmY7PhCfg==";
    put.headers_mut().insert("content-md5", md5);
    let answer = reqwest::Client::new()
        .put(put.sign(Duration::from_secs(60)))
        .header("content-md5", md5)
        .body(sent)
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status(), reqwest::StatusCode::BAD_REQUEST);
    let body = answer.text().await.expect("body");
    assert!(body.contains("BadDigest"), "{body}");
    assert_eq!(store.get(&key).await.expect("get"), None, "nothing stored");
}

/// S3 over TLS: a SeaweedFS with a self-signed certificate for 127.0.0.1 on an https port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_store_speaks_https_and_trusts_a_certificate_only_through_its_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("a certificate");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, generated.cert.pem()).expect("write");
    std::fs::write(&key_file, generated.signing_key.serialize_pem()).expect("write");
    let weed = start_weed_with(dir.path(), |node| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        node.with_tls(S3Tls {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            port,
        })
    });
    let https = weed.node().https_endpoint().expect("an https endpoint");
    let tls_options = |ca_file: Option<std::path::PathBuf>| {
        let mut o = S3Options::new(https.clone(), "strata-tls", credentials(&weed), 1 << 20);
        o.ca_file = ca_file;
        o.timeout = Duration::from_secs(5);
        o
    };
    // The https listener may come up a moment after the plain one that readiness checks.
    let deadline = Instant::now() + Duration::from_secs(30);
    let store = loop {
        match S3BlobStore::open(tls_options(Some(cert_file.clone()))).await {
            Ok(store) => break store,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the https endpoint never answered: {e}"),
        }
    };
    let bytes = b"over TLS".to_vec();
    let key = store.put(bytes.clone()).await.expect("put over https");
    assert_eq!(key, BlobKey::of(&bytes));
    assert_eq!(store.get(&key).await.expect("get"), Some(bytes));

    // Without the CA file the self-signed certificate is refused, and the error says so.
    let e = S3BlobStore::open(tls_options(None))
        .await
        .expect_err("an unknown issuer is refused");
    assert!(e.to_string().contains("certificate"), "{e}");
    // Plain HTTP to the TLS port gets no S3 answer either.
    let plain = https.replace("https://", "http://");
    let mut o = S3Options::new(plain, "strata-tls", credentials(&weed), 1 << 20);
    o.timeout = Duration::from_secs(5);
    assert!(
        S3BlobStore::open(o).await.is_err(),
        "plain HTTP on the TLS port"
    );
}
