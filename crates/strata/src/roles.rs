//! `strata serve` and `strata api` (being written).

#[derive(Debug, clap::Args)]
pub struct ServeArgs {}
#[derive(Debug, clap::Args)]
pub struct ApiArgs {}

pub async fn serve(_a: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("strata serve is not available in this build yet")
}
pub async fn api(_a: ApiArgs) -> anyhow::Result<()> {
    anyhow::bail!("strata api is not available in this build yet")
}
