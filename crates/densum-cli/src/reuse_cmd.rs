//! `densum reuse`: heat maps of the learned cross-layer weights (DSNet, DelugeNet, DenseNet).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use densum::Device;
use densum::explain::figure::heat_maps;
use densum::explain::reuse::{panels, reuse_maps, write_csv};

use crate::weights_args::{WeightsArgs, load};

/// Arguments of `densum reuse`.
#[derive(Args)]
pub struct ReuseArgs {
    #[command(flatten)]
    net: WeightsArgs,
    /// Output PNG; the values go to a CSV of the same name next to it.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `densum reuse`.
pub fn run(a: &ReuseArgs) -> Result<()> {
    let w = &a.net;
    let (spec, net) = load(&w.weights, w.model.as_deref(), &w.args, &Device::flex())?;
    let maps =
        reuse_maps(&net).with_context(|| format!("{} ({})", spec.name, w.weights.display()))?;
    let csv = a.out.with_extension("csv");
    write_csv(&maps, &csv)?;
    heat_maps(&panels(&maps), &a.out, 420)?;
    for m in &maps {
        println!(
            "{} ({}): {} targets x {} sources",
            m.stage,
            m.kind,
            m.targets.len(),
            m.sources.len()
        );
    }
    println!("wrote {} and {}", a.out.display(), csv.display());
    Ok(())
}
