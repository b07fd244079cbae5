//! The photo pipeline's engines at scale: `rabbitmq-1` (RabbitMQ, for `[queue] engine =
//! "rabbitmq"`) and `s3-1` (SeaweedFS, for `[blobs] engine = "seaweedfs"`), started before
//! the API servers and workers, which are told where they are ([`PhotoWiring`]). With the
//! embedded defaults nothing runs here: the queue and the blobs are files in the data
//! directory.

use std::path::PathBuf;

use strata_blobs::node::{CREDENTIALS_FILE, S3NodeArgs};
use strata_photos::role::PhotoOptions;
use strata_queue::broker::BrokerArgs;

use super::{Plan, PlanContext, PlanError, RoleSpec, Wiring};
use crate::roles::{RoleCommand, RoleKind};
use crate::topology::{BlobsSpec, QueueSpec, Topology};

/// The RabbitMQ node's role.
pub const BROKER: &str = "rabbitmq-1";
/// The SeaweedFS node's role.
pub const OBJECT_STORE: &str = "s3-1";
/// Where the broker keeps its node: `DIR/rabbitmq/<role>`.
pub const BROKER_DIR: &str = "rabbitmq";
/// Where the object store keeps its node and credentials: `DIR/s3/<role>`.
pub const OBJECT_STORE_DIR: &str = "s3";

/// The broker and the object store the topology asks `strata up` to run.
pub fn plan(topology: &Topology, ctx: &PlanContext, plan: &mut Plan) {
    if topology.queue == QueueSpec::RabbitMq {
        let dir = ctx.path(&[BROKER_DIR, BROKER]);
        plan.roles.push(RoleSpec::new(
            RoleKind::Broker,
            BROKER,
            strata_queue::broker::LISTENER,
            Vec::new(),
            move |w: &Wiring| {
                let mut args = BrokerArgs::new(dir.clone());
                args.listen = w.listen();
                args.name = BROKER.into();
                args.exit_on_stdin_eof = true;
                Ok(RoleCommand::Rabbitmq(args))
            },
        ));
    }
    if let BlobsSpec::SeaweedFs { volume_size_mib } = topology.blobs {
        let dir = ctx.path(&[OBJECT_STORE_DIR, OBJECT_STORE]);
        plan.roles.push(RoleSpec::new(
            RoleKind::ObjectStore,
            OBJECT_STORE,
            strata_blobs::node::LISTENER,
            Vec::new(),
            move |w: &Wiring| {
                let mut args = S3NodeArgs::new(dir.clone());
                args.listen = w.listen();
                args.name = OBJECT_STORE.into();
                args.volume_size_mib = volume_size_mib;
                args.exit_on_stdin_eof = true;
                Ok(RoleCommand::S3(args))
            },
        ));
    }
}

/// How the roles that open the photo pipeline (API servers and workers) reach its queue and
/// blob store.
#[derive(Debug, Clone)]
pub struct PhotoWiring {
    queue: QueueSpec,
    blobs: BlobsSpec,
    /// The object store's credentials file, made by `s3-1` on its first start.
    credentials: PathBuf,
}

impl PhotoWiring {
    pub fn of(topology: &Topology, ctx: &PlanContext) -> Self {
        Self {
            queue: topology.queue.clone(),
            blobs: topology.blobs.clone(),
            credentials: ctx.path(&[OBJECT_STORE_DIR, OBJECT_STORE, CREDENTIALS_FILE]),
        }
    }

    /// The roles that must be ready first.
    pub fn depends_on(&self) -> Vec<String> {
        let mut roles = Vec::new();
        if self.queue == QueueSpec::RabbitMq {
            roles.push(BROKER.to_string());
        }
        if matches!(self.blobs, BlobsSpec::SeaweedFs { .. }) {
            roles.push(OBJECT_STORE.to_string());
        }
        roles
    }

    /// Points `options` at the queue and blob store.
    pub fn apply(&self, w: &Wiring, options: &mut PhotoOptions) -> Result<(), PlanError> {
        match &self.queue {
            QueueSpec::Embedded => {}
            QueueSpec::RabbitMq => {
                let addr = w.addr(BROKER, strata_queue::broker::LISTENER)?;
                options.queue_url = Some(strata_queue::broker::url_of(addr));
            }
            QueueSpec::RabbitMqUrl { url } => options.queue_url = Some(url.clone()),
        }
        match &self.blobs {
            BlobsSpec::Fs => {}
            BlobsSpec::SeaweedFs { .. } => {
                let addr = w.addr(OBJECT_STORE, strata_blobs::node::LISTENER)?;
                options.s3_endpoint = Some(format!("http://{addr}"));
                options.s3_credentials_file = Some(self.credentials.clone());
            }
            BlobsSpec::S3 {
                endpoint,
                bucket,
                ca_file,
            } => {
                options.s3_endpoint = Some(endpoint.clone());
                options.s3_bucket = bucket.clone();
                options.s3_ca_file = ca_file.as_ref().map(PathBuf::from);
            }
        }
        Ok(())
    }
}
