//! What the handlers share: [`AppState`], the one value the router hands every request.
//!
//! It lives apart from the router (in the crate root) and from the handlers so that every
//! handler module can depend on it without depending on the modules that assemble the server.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use strata_cache::tiered::Tiered;
use strata_core::id::SnowflakeGenerator;
use strata_store::Store;
use strata_store::accounts::AccountStore;

use crate::auth::AuthConfig;
use crate::observe;

/// Number of per-server PATCH locks (users are spread over them by id).
pub const PATCH_LOCK_STRIPES: usize = 64;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Accounts (email, password hash, roles): on the primary data store (the same store as
    /// `auth.accounts`).
    pub accounts: Arc<dyn AccountStore>,
    /// Keys, the shared session store and password policy.
    pub auth: AuthConfig,
    pub cache: Tiered<strata_store::StoreError>,
    pub ids: Arc<SnowflakeGenerator>,
    pub metrics: PrometheusHandle,
    /// Striped locks that make PATCHes of one user on this server take turns.
    pub patch_locks: Arc<[tokio::sync::Mutex<()>]>,
    /// The hottest users this server reads.
    pub hot_keys: Arc<crate::hot_keys::HotKeys>,
    /// The photo pipeline (catalog, blobs, queue); `None` on a server built without it, whose
    /// photo routes answer 503.
    pub photos: Option<strata_photos::Photos>,
    /// The CDN edges to purge when a profile changes (inactive without edges).
    pub edges: crate::edge_purge::EdgePurger,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("engine", &self.store.engine())
            .field("ids", &self.ids)
            .finish()
    }
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        auth: AuthConfig,
        ids: SnowflakeGenerator,
        cache: Tiered<strata_store::StoreError>,
    ) -> Self {
        Self {
            // Every data call a span of the request's trace.
            store: Arc::new(strata_store::traced::Traced::new(store)),
            accounts: auth.accounts.clone(),
            auth,
            cache,
            ids: Arc::new(ids),
            metrics: observe::metrics_handle(),
            patch_locks: (0..PATCH_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hot_keys: Arc::default(),
            photos: None,
            edges: crate::edge_purge::EdgePurger::default(),
        }
    }

    /// The same state with the photo pipeline.
    pub fn with_photos(mut self, photos: strata_photos::Photos) -> Self {
        self.photos = Some(photos);
        self
    }
}

/// What authenticating a request needs (see [`crate::auth::Principal`]).
impl AsRef<AuthConfig> for AppState {
    fn as_ref(&self) -> &AuthConfig {
        &self.auth
    }
}
