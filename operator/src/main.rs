//! `sluice-operator`: `crd` prints the CustomResourceDefinition, `run`
//! (the default) runs the controller.

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sluice-operator",
    version,
    about = "Runs Sluice ingesters on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the Ingester CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) | None => {
            let yaml = sluice_operator::crd::crd_yaml().context("serialise the CRD")?;
            print!("{yaml}");
        }
    }
    Ok(())
}
