//! `densum models`, `densum info` and `densum init`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use densum::measure::{cost, group_digits};
use densum::weights;
use densum::zoo;
use densum::{Device, Net};
use serde_json::json;

use crate::features_cmd;
use crate::model_args::ModelArgs;

/// Flags of `densum models`.
#[derive(Args)]
pub struct ModelsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only models whose name contains this text.
    pub filter: Option<String>,
}

/// Flags of `densum info`.
#[derive(Args)]
pub struct InfoArgs {
    /// Registered model name (see `densum models`).
    pub model: String,
    #[command(flatten)]
    pub args: ModelArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also list the feature levels (channels, reduction, shape) of
    /// `Net::forward_multi_scale`, as timm's `feature_info`.
    #[arg(long)]
    pub features: bool,
}

/// Flags of `densum init`.
#[derive(Args)]
pub struct InitArgs {
    /// Registered model name.
    pub model: String,
    #[command(flatten)]
    pub args: ModelArgs,
    /// Random seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file (.safetensors); written atomically.
    #[arg(long)]
    pub out: PathBuf,
}

/// `densum models`.
pub fn models(a: &ModelsArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let entries: Vec<_> = zoo::registry()
        .iter()
        .filter(|e| a.filter.as_deref().is_none_or(|f| e.name.contains(f)))
        .collect();
    if a.json {
        let list: Vec<_> = entries
            .iter()
            .map(|e| json!({"name": e.name, "family": e.family, "description": e.description}))
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
    } else {
        let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
        for e in entries {
            writeln!(out, "{:width$}  {}", e.name, e.description)?;
        }
    }
    Ok(())
}

/// `densum info`.
pub fn info(a: &InfoArgs) -> Result<()> {
    let spec = zoo::resolve(&a.model, &a.args.options())?;
    // Counting parameters and shapes needs no GPU; Burn's default could be one.
    let net = Net::new(&spec.config, &Device::flex());
    let c = cost(&spec, &net);
    if a.json {
        let mut v = serde_json::to_value(&c)?;
        v["dataset"] = json!(spec.dataset.name());
        v["options"] = serde_json::to_value(&spec.options)?;
        if a.features {
            v["features"] = features_cmd::levels(&spec, &net);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} ({}, input 3x{}x{})",
        spec.name,
        spec.dataset.name(),
        spec.input_size,
        spec.input_size
    );
    println!(
        "{:8} {:>6} {:>16} {:>14} {:>16}",
        "stage", "blocks", "output", "params", "MACs"
    );
    for s in &c.stages {
        let [ch, h, w] = s.output;
        println!(
            "{:8} {:>6} {:>16} {:>14} {:>16}",
            s.name,
            s.blocks,
            format!("{ch}x{h}x{w}"),
            group_digits(s.params as u64),
            group_digits(s.macs)
        );
    }
    println!("parameters: {}", group_digits(c.params as u64));
    // The count saturates at u64::MAX (a thousand of the widest blocks at 4096 px).
    let at_least = if c.macs == u64::MAX { "at least " } else { "" };
    println!(
        "forward MACs per image: {at_least}{} ({:.3} G)",
        group_digits(c.macs),
        c.macs as f64 / 1e9
    );
    println!("output: [N, {}]", c.output[0]);
    if a.features {
        features_cmd::print(&spec, &net);
    }
    Ok(())
}

/// `densum init`.
pub fn init(a: &InitArgs) -> Result<()> {
    let spec = zoo::resolve(&a.model, &a.args.options())?;
    // On the CPU, so a seed gives the same weights whatever the binary was built with.
    let device = Device::flex();
    device.seed(a.seed);
    let net = Net::new(&spec.config, &device);
    weights::save(&net, &spec.name, &spec.options, &a.out)?;
    println!(
        "wrote {} ({} parameters) to {}",
        spec.name,
        weights::count_params(&net),
        a.out.display()
    );
    Ok(())
}
