//! `densum predict`: arguments and printing; the work is `densum::predict`'s.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use densum::predict::{self, class_names, classify, top_k};
use densum::{Net, weights, zoo};
use serde_json::json;

use crate::device_args::DeviceArgs;
use crate::model_args::ModelArgs;

/// Output format of `densum predict`.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// One block of lines per image.
    Text,
    /// A JSON list with each image's logits and top classes.
    Json,
}

/// Flags of `densum predict`.
#[derive(Args)]
pub struct PredictArgs {
    /// Registered model name; defaults to the one recorded in the weight file.
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub args: ModelArgs,
    /// Weight file (.safetensors). Model options recorded in it are used unless given here.
    #[arg(long)]
    pub weights: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Images per forward pass (only one batch of images is decoded in memory at a time;
    /// the results do not depend on it).
    #[arg(long, default_value_t = predict::DEFAULT_BATCH)]
    pub batch: usize,
    /// Images to classify.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// `densum predict`.
pub fn run(a: &PredictArgs) -> Result<()> {
    let device = a.device.device()?;
    let file = weights::read_info(&a.weights)?;
    let model = predict::model_for(&file, a.model.as_deref(), &a.weights)?;
    let options = a
        .args
        .options_over(file.options.clone().unwrap_or_default());
    let spec = zoo::resolve(&model, &options)?;
    let net = Net::new(&spec.config, &device);
    let net = weights::load(net, &spec.name, &a.weights, &device)?;
    let logits = classify(&net, &spec, &a.images, a.batch, &device)?;
    let labels = class_names(spec.dataset, spec.config.num_classes);
    let mut results = Vec::new();
    for (path, row) in a.images.iter().zip(&logits) {
        let best = top_k(row, a.top.min(row.len()));
        match a.format {
            Format::Text => {
                println!("{}", path.display());
                for (rank, (class, p)) in best.iter().enumerate() {
                    let label = labels
                        .get(*class)
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default();
                    println!("  {}. class {class}{label}: {:.4}", rank + 1, p);
                }
            }
            Format::Json => results.push(json!({
                "file": path.display().to_string(),
                "logits": row,
                "top5": best.iter().map(|(c, p)| {
                    json!({"class": c, "label": labels.get(*c), "probability": p})
                }).collect::<Vec<_>>(),
            })),
        }
    }
    if let Format::Json = a.format {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}
