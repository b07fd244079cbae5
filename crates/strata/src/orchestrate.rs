//! `strata up/down/status/logs` (being written).

#[derive(Debug, clap::Args)]
pub struct UpArgs {}
#[derive(Debug, clap::Args)]
pub struct DownArgs {}
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}
#[derive(Debug, clap::Args)]
pub struct LogsArgs {}

pub async fn up(_a: UpArgs) -> anyhow::Result<()> {
    anyhow::bail!("strata up is not available in this build yet")
}
pub async fn down(_a: DownArgs) -> anyhow::Result<()> {
    anyhow::bail!("strata down is not available in this build yet")
}
pub async fn status(_a: StatusArgs) -> anyhow::Result<()> {
    anyhow::bail!("strata status is not available in this build yet")
}
pub async fn logs(_a: LogsArgs) -> anyhow::Result<()> {
    anyhow::bail!("strata logs is not available in this build yet")
}
