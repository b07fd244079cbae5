//! `strata seed`: bulk-load synthetic users (being written).

#[derive(Debug, clap::Args)]
pub struct SeedArgs {}

pub async fn run(_args: SeedArgs) -> anyhow::Result<()> {
    anyhow::bail!("strata seed is not available in this build yet")
}
