//! `densum export`: arguments and printing; the work is `densum::export`'s (feature `onnx`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::model_args::ModelArgs;

/// The command that builds a `densum` binary with ONNX export, quoted in the error a binary
/// without it gives.
#[cfg_attr(feature = "onnx", allow(dead_code))]
const BUILD_WITH_ONNX: &str = "cargo build --release -p densum-cli --features onnx";

/// Flags of `densum export`.
#[derive(Args)]
pub struct ExportArgs {
    /// Weight file (.safetensors) to export as ONNX.
    #[arg(long, value_name = "WEIGHTS")]
    pub onnx: PathBuf,
    /// The ONNX file to write.
    #[arg(long, value_name = "MODEL.onnx")]
    pub out: PathBuf,
    /// Batch axis of the graph's input: a fixed size, or `dynamic` for any batch size.
    #[arg(long, default_value = "1", value_parser = parse_batch)]
    pub batch: BatchArg,
    /// Registered model name; defaults to the one recorded in the weight file.
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub args: ModelArgs,
}

/// `--batch`: a positive size or `dynamic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchArg {
    /// This many images per call.
    Fixed(usize),
    /// Any number of images per call.
    Dynamic,
}

fn parse_batch(s: &str) -> std::result::Result<BatchArg, String> {
    if s.eq_ignore_ascii_case("dynamic") {
        return Ok(BatchArg::Dynamic);
    }
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(BatchArg::Fixed(n)),
        _ => Err(format!(
            "`{s}` is neither a batch size (1 or more) nor `dynamic`"
        )),
    }
}

/// `densum export`.
#[cfg(feature = "onnx")]
pub fn run(a: &ExportArgs) -> Result<()> {
    use densum::export::{self, Batch};
    use densum::{Device, weights};

    let device = Device::default();
    let (spec, net) = crate::weights_args::load(&a.onnx, a.model.as_deref(), &a.args, &device)?;
    let batch = match a.batch {
        BatchArg::Fixed(n) => Batch::Fixed(n),
        BatchArg::Dynamic => Batch::Dynamic,
    };
    let bytes = export::onnx(&net, &spec, batch, &device)?;
    weights::write_atomic(&a.out, &bytes)?;
    let n = match a.batch {
        BatchArg::Fixed(n) => n.to_string(),
        BatchArg::Dynamic => "batch".to_string(),
    };
    let s = spec.input_size;
    println!(
        "{}: {} ({} bytes), input [{n}, 3, {s}, {s}] (normalised pixels), output logits [{n}, {}]",
        spec.name,
        a.out.display(),
        bytes.len(),
        spec.config.num_classes
    );
    Ok(())
}

/// `densum export` in a binary built without the `onnx` feature: says so, with the command
/// that builds one with it.
#[cfg(not(feature = "onnx"))]
pub fn run(_: &ExportArgs) -> Result<()> {
    anyhow::bail!(
        "this densum binary was built without ONNX export (cargo feature `onnx` of densum-cli); \
         build one with `{BUILD_WITH_ONNX}`"
    )
}
