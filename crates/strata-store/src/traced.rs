//! [`Traced`]: a [`Store`] whose every call is a span (`db.get`, `db.create`, …, with the
//! engine), so a recorded trace shows each database call a request made and how long it took
//! (see `strata_core::trace`). Outside a recorded trace the spans cost a few hundred
//! nanoseconds and record nothing.

use std::sync::Arc;

use async_trait::async_trait;
use strata_core::user::{User, UserId, UserProfile};
use tracing::Instrument as _;

use crate::{
    CommitToken, Page, Precondition, ReadRequirement, Store, StoreError, StoredUser, WriteReceipt,
};

/// Wraps a store; see the module.
#[derive(Clone)]
pub struct Traced(Arc<dyn Store>);

impl Traced {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self(store)
    }

    fn span(&self, name: &'static str) -> tracing::Span {
        let engine = self.0.engine();
        match name {
            "db.create" => tracing::info_span!("db.create", engine),
            "db.get" => tracing::info_span!("db.get", engine),
            "db.replace" => tracing::info_span!("db.replace", engine),
            "db.delete" => tracing::info_span!("db.delete", engine),
            "db.list" => tracing::info_span!("db.list", engine),
            "db.insert_batch" => tracing::info_span!("db.insert_batch", engine),
            _ => tracing::info_span!("db.ping", engine),
        }
    }
}

impl std::fmt::Debug for Traced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Traced").field(&self.0.engine()).finish()
    }
}

#[async_trait]
impl Store for Traced {
    async fn create(&self, user: &User) -> Result<WriteReceipt, StoreError> {
        self.0.create(user).instrument(self.span("db.create")).await
    }

    async fn get(
        &self,
        id: UserId,
        need: ReadRequirement,
    ) -> Result<Option<StoredUser>, StoreError> {
        self.0.get(id, need).instrument(self.span("db.get")).await
    }

    async fn replace(
        &self,
        id: UserId,
        profile: &UserProfile,
        pre: Precondition,
    ) -> Result<WriteReceipt, StoreError> {
        self.0
            .replace(id, profile, pre)
            .instrument(self.span("db.replace"))
            .await
    }

    async fn delete(&self, id: UserId, pre: Precondition) -> Result<WriteReceipt, StoreError> {
        self.0
            .delete(id, pre)
            .instrument(self.span("db.delete"))
            .await
    }

    async fn list(
        &self,
        after: Option<UserId>,
        limit: u32,
        need: ReadRequirement,
    ) -> Result<Page, StoreError> {
        self.0
            .list(after, limit, need)
            .instrument(self.span("db.list"))
            .await
    }

    async fn insert_batch(&self, users: Vec<User>) -> Result<CommitToken, StoreError> {
        self.0
            .insert_batch(users)
            .instrument(self.span("db.insert_batch"))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().instrument(self.span("db.ping")).await
    }

    fn engine(&self) -> &'static str {
        self.0.engine()
    }
}
