//! `sluice-loadgen`: a TSBS devops-cpu-shaped load generator for Sluice's
//! gRPC write API and any InfluxDB v2 `/api/v2/write`. See
//! `sluice_e2e::loadgen` and `docs/benchmarks.md`.

use anyhow::Context;
use clap::Parser;
use sluice_e2e::loadgen::{Args, run};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let json = args.json.clone();
    let report = rt.block_on(run(args))?;
    print!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
