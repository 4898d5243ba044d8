//! The weight file, model and options of the commands that explain a trained network.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use densum::explain::{load_net, weights_model};
use densum::zoo::ModelSpec;
use densum::{Device, Net};

use crate::model_args::ModelArgs;

/// A weight file and the model it holds.
#[derive(Args)]
pub struct WeightsArgs {
    /// Weight file (.safetensors).
    #[arg(long)]
    pub weights: PathBuf,
    /// Registered model name; defaults to the one recorded in the weight file.
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub args: ModelArgs,
}

/// The network in the weight file at `path` (model `model`, or the recorded one), with the
/// file's options under those given in `args`.
pub fn load(
    path: &Path,
    model: Option<&str>,
    args: &ModelArgs,
    device: &Device,
) -> Result<(ModelSpec, Net)> {
    let (name, base) = weights_model(path, model)?;
    let options = args.options_over(base);
    Ok(load_net(path, &name, &options, device)?)
}
