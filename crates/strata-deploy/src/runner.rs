//! How each kind of role runs in its own process: `strata <kind> …` ends here.

use crate::roles::RoleCommand;

impl RoleCommand {
    /// Runs the role in this process until it is told to stop.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            RoleCommand::Api(mut args) => {
                crate::maps::attach(&mut args.server.data)?;
                strata_api::role::api(*args).await
            }
            RoleCommand::Lb(args) => strata_lb::role::run(*args).await,
            RoleCommand::Control(args) => strata_control::controller::run(args).await,
            RoleCommand::Cache(args) => strata_cache::node::run(args).await,
            RoleCommand::Postgres(args) => strata_control::pgnode::run(args).await,
            RoleCommand::Etcd(args) => strata_control::etcd::node::run(args).await,
            RoleCommand::Worker(args) => strata_photos::role::run(*args).await,
            RoleCommand::Edge(command) => strata_edge::role::main(*command).await,
            RoleCommand::Rabbitmq(args) => strata_queue::broker::run(args).await,
            RoleCommand::S3(args) => strata_blobs::node::run(args).await,
            RoleCommand::Dns(args) => strata_dns::run(args).await,
            RoleCommand::Prometheus(args) => strata_observe::run(args).await,
            RoleCommand::Alertmanager(args) => strata_observe::alertmanager::run(args).await,
            RoleCommand::Dashboard(args) => crate::dashboard::run(args).await,
            RoleCommand::Relay(args) => strata_link::run(args).await,
        }
    }
}
