//! `skiff bench`: API server benchmarks.

#[derive(clap::Args)]
pub struct BenchArgs {}

pub async fn run(_: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
