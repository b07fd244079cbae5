//! The blob store test suite, written once for every engine: each engine's integration tests
//! call [`run_all`] with a fresh, empty store that accepts blobs up to [`MAX_BYTES`].

use crate::{BlobError, BlobKey, BlobStore};

/// The size limit the store under test must be opened with.
pub const MAX_BYTES: usize = 1024;

/// Runs every check against an empty store.
pub async fn run_all(store: &dyn BlobStore) {
    a_put_blob_reads_back_under_the_hash_of_its_bytes(store).await;
    putting_the_same_bytes_twice_gives_one_blob(store).await;
    a_missing_blob_is_absent_not_an_error(store).await;
    a_deleted_blob_is_gone(store).await;
    a_blob_over_the_limit_is_refused_and_nothing_is_stored(store).await;
}

async fn a_put_blob_reads_back_under_the_hash_of_its_bytes(store: &dyn BlobStore) {
    let bytes = b"a photo, say".to_vec();
    let key = store
        .put(bytes.clone())
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    assert_eq!(key, BlobKey::of(&bytes), "the key is the content's hash");
    let got = store.get(&key).await.unwrap_or_else(|e| panic!("get: {e}"));
    assert_eq!(got.as_deref(), Some(bytes.as_slice()));
    assert!(store.exists(&key).await.unwrap_or_else(|e| panic!("{e}")));
    let empty = store
        .put(Vec::new())
        .await
        .unwrap_or_else(|e| panic!("put of no bytes: {e}"));
    assert_eq!(
        store.get(&empty).await.unwrap_or_else(|e| panic!("{e}")),
        Some(Vec::new())
    );
}

async fn putting_the_same_bytes_twice_gives_one_blob(store: &dyn BlobStore) {
    let a = store
        .put(b"same".to_vec())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let b = store
        .put(b"same".to_vec())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a, b);
    assert!(store.delete(&a).await.unwrap_or_else(|e| panic!("{e}")));
    assert!(
        !store.exists(&a).await.unwrap_or_else(|e| panic!("{e}")),
        "one delete removes it: there was one blob"
    );
}

async fn a_missing_blob_is_absent_not_an_error(store: &dyn BlobStore) {
    let key = BlobKey::of(b"never stored");
    assert_eq!(
        store.get(&key).await.unwrap_or_else(|e| panic!("{e}")),
        None
    );
    assert!(!store.exists(&key).await.unwrap_or_else(|e| panic!("{e}")));
    assert!(
        !store.delete(&key).await.unwrap_or_else(|e| panic!("{e}")),
        "deleting what is not there says so"
    );
}

async fn a_deleted_blob_is_gone(store: &dyn BlobStore) {
    let key = store
        .put(b"to delete".to_vec())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(store.delete(&key).await.unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(
        store.get(&key).await.unwrap_or_else(|e| panic!("{e}")),
        None
    );
}

async fn a_blob_over_the_limit_is_refused_and_nothing_is_stored(store: &dyn BlobStore) {
    let big = vec![7u8; MAX_BYTES + 1];
    match store.put(big.clone()).await {
        Err(BlobError::TooLarge { size, max }) => {
            assert_eq!((size, max), (MAX_BYTES + 1, MAX_BYTES));
        }
        other => panic!("a blob over the limit is refused, not {other:?}"),
    }
    assert!(
        !store
            .exists(&BlobKey::of(&big))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        "nothing was stored"
    );
    store
        .put(vec![7u8; MAX_BYTES])
        .await
        .unwrap_or_else(|e| panic!("a blob of exactly the limit is stored: {e}"));
}
