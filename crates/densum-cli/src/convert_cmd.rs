//! `densum convert`: PyTorch checkpoints and torchvision / timm safetensors files into
//! densum weight files (the work is `densum::weights::import::convert`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use densum::weights::import;

use crate::model_args::ModelArgs;

/// Arguments of `densum convert`.
#[derive(Args)]
pub struct ConvertArgs {
    /// Source: a PyTorch checkpoint (.pth / .pt; zip or legacy; a state dict, possibly under
    /// "state_dict" or "model", names possibly prefixed `module.`) or a safetensors file,
    /// with torchvision / timm tensor names.
    pub input: PathBuf,
    /// Registered model name the weights are for (see `densum models`).
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub args: ModelArgs,
    /// Keep the backbone and re-initialise the classifier (for --num-classes classes, or the
    /// dataset's), for fine-tuning.
    #[arg(long)]
    pub reset_head: bool,
    /// Random seed of the re-initialised classifier.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output densum weight file (.safetensors); written atomically.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `densum convert`.
pub fn run(a: &ConvertArgs) -> Result<()> {
    let r = import::convert(
        &a.input,
        &a.model,
        &a.args.options(),
        a.reset_head,
        a.seed,
        &a.out,
    )?;
    let dtypes: Vec<String> = r.dtypes.iter().map(|(d, n)| format!("{n} {d}")).collect();
    println!(
        "read {} ({}{}{}{}): {} tensors ({})",
        a.input.display(),
        r.format,
        r.key
            .as_ref()
            .map(|k| format!(", state dict under \"{k}\""))
            .unwrap_or_default(),
        if r.stripped.is_empty() {
            String::new()
        } else {
            format!(", prefix {} removed", r.stripped.join(" "))
        },
        if r.renamed > 0 {
            format!(", {} old DenseNet names modernised", r.renamed)
        } else {
            String::new()
        },
        r.dtypes.values().sum::<usize>(),
        dtypes.join(", ")
    );
    println!(
        "wrote {} ({} parameters{}; options {}) to {}",
        r.model,
        r.params,
        if r.head_reset {
            ", classifier re-initialised"
        } else {
            ""
        },
        serde_json::to_string(&r.options)?,
        a.out.display()
    );
    Ok(())
}
