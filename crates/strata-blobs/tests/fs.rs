//! The filesystem blob store against the shared suite, plus what is particular to files: a
//! writer that died halfway leaves nothing visible, its leftovers are swept, and bytes that
//! rot on disk are reported rather than served.

use std::time::Duration;

use strata_blobs::conformance::{MAX_BYTES, run_all};
use strata_blobs::fs::FsBlobStore;
use strata_blobs::{BlobError, BlobKey, BlobStore};

#[tokio::test]
async fn the_filesystem_store_passes_the_blob_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsBlobStore::open(dir.path(), MAX_BYTES).expect("open");
    run_all(&store).await;
}

#[tokio::test]
async fn a_write_cut_off_halfway_is_never_visible_and_is_swept_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsBlobStore::open(dir.path(), MAX_BYTES).expect("open");
    let whole = b"the whole photo".to_vec();
    let key = BlobKey::of(&whole);
    // What a writer killed mid-write leaves: the first half, in tmp/ under the key's name.
    let partial = dir.path().join("tmp").join(format!("{key}.0000.partial"));
    std::fs::write(&partial, &whole[..7]).expect("write the partial file");
    assert_eq!(store.get(&key).await.expect("get"), None, "not visible");
    assert!(!store.exists(&key).await.expect("exists"));
    // A later put of the same bytes completes normally beside the leftover.
    assert_eq!(store.put(whole.clone()).await.expect("put"), key);
    assert_eq!(store.get(&key).await.expect("get"), Some(whole));
    assert_eq!(store.sweep_tmp(Duration::ZERO), 1, "the leftover is swept");
    assert!(!partial.exists());
    let tmp_left = std::fs::read_dir(dir.path().join("tmp"))
        .expect("tmp")
        .count();
    assert_eq!(tmp_left, 0, "a completed put leaves nothing in tmp/");
}

#[tokio::test]
async fn bytes_that_no_longer_match_their_key_are_reported_not_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsBlobStore::open(dir.path(), MAX_BYTES).expect("open");
    let key = store.put(b"original".to_vec()).await.expect("put");
    std::fs::write(store.path_of(&key), b"rotted").expect("corrupt the file");
    assert!(matches!(
        store.get(&key).await,
        Err(BlobError::Corrupt { .. })
    ));
}
