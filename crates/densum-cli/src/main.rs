//! `densum`: a thin command line over the densum library.

mod model_args;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use densum::measure::cost;
use densum::predict::{batch, load_image, top_k};
use densum::weights;
use densum::zoo::{self, Dataset};
use densum::{Device, Net};
use serde_json::json;

use model_args::ModelArgs;

/// Convolutional backbones as block x connectivity: ResNet, DSNet, RGSNet and friends.
#[derive(Parser)]
#[command(name = "densum", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every registered model with a one-line description.
    Models {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only models whose name contains this text.
        filter: Option<String>,
    },
    /// Show a model's stages, parameters, forward MACs and output shape.
    Info {
        /// Registered model name (see `densum models`).
        model: String,
        #[command(flatten)]
        args: ModelArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write freshly initialised weights to a safetensors file.
    Init {
        /// Registered model name.
        model: String,
        #[command(flatten)]
        args: ModelArgs,
        /// Random seed of the initialisation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output file (.safetensors); written atomically.
        #[arg(long)]
        out: PathBuf,
    },
    /// Classify images with a model and its weights.
    ///
    /// Images (PNG, JPEG) are decoded to RGB and scaled to [0, 1]. An image of the model's
    /// input size (224 px for ImageNet, 32 px for CIFAR/SVHN, or --input-size) is used as it
    /// is; any other is resized so that its shorter side equals the input size (bilinear) and
    /// centre-cropped to a square. Pixels are then normalised with the dataset's mean and std.
    Predict {
        /// Registered model name; defaults to the one recorded in the weight file.
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        args: ModelArgs,
        /// Weight file (.safetensors). Model options recorded in it are used unless given here.
        #[arg(long)]
        weights: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// How many classes to show per image.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Images to classify.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `densum models | head` closes the pipe early: not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Models { json, filter } => models(json, filter.as_deref()),
        Command::Info { model, args, json } => info(&model, &args, json),
        Command::Init {
            model,
            args,
            seed,
            out,
        } => init(&model, &args, seed, &out),
        Command::Predict {
            model,
            args,
            weights,
            format,
            top,
            images,
        } => predict(model, &args, &weights, format, top, &images),
    }
}

fn models(json: bool, filter: Option<&str>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let entries: Vec<_> = zoo::registry()
        .iter()
        .filter(|e| filter.is_none_or(|f| e.name.contains(f)))
        .collect();
    if json {
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

fn info(model: &str, args: &ModelArgs, json: bool) -> Result<()> {
    let spec = zoo::resolve(model, &args.options()?)?;
    let net = Net::new(&spec.config, &Device::default());
    let c = cost(&spec, &net);
    if json {
        let mut v = serde_json::to_value(&c)?;
        v["dataset"] = json!(spec.dataset.name());
        v["options"] = serde_json::to_value(&spec.options)?;
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
            group(s.params as u64),
            group(s.macs)
        );
    }
    println!("parameters: {}", group(c.params as u64));
    println!(
        "forward MACs per image: {} ({:.3} G)",
        group(c.macs),
        c.macs as f64 / 1e9
    );
    println!("output: [N, {}]", c.output[0]);
    Ok(())
}

/// 25557032 -> "25,557,032".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn init(model: &str, args: &ModelArgs, seed: u64, out: &Path) -> Result<()> {
    let spec = zoo::resolve(model, &args.options()?)?;
    let device = Device::default();
    device.seed(seed);
    let net = Net::new(&spec.config, &device);
    weights::save(&net, &spec.name, &spec.options, out)?;
    println!(
        "wrote {} ({} parameters) to {}",
        spec.name,
        weights::count_params(&net),
        out.display()
    );
    Ok(())
}

fn predict(
    model: Option<String>,
    args: &ModelArgs,
    weights_path: &Path,
    format: Format,
    top: usize,
    images: &[PathBuf],
) -> Result<()> {
    let file = weights::read_info(weights_path)?;
    let model = match (model, &file.model) {
        (Some(m), _) => m,
        (None, Some(m)) => m.clone(),
        (None, None) => bail!(
            "{} records no model name; pass --model",
            weights_path.display()
        ),
    };
    if let Some(recorded) = &file.model
        && zoo::find(&model)?.name != *recorded
    {
        bail!(
            "weights {}: the file holds model `{recorded}`, not `{model}`",
            weights_path.display()
        );
    }
    let options = args.options_over(file.options.clone().unwrap_or_default())?;
    let spec = zoo::resolve(&model, &options)?;
    let device = Device::default();
    let net = Net::new(&spec.config, &device);
    let net = weights::load(net, &spec.name, weights_path, &device)?;
    let size = spec.input_size;
    let pixels = images
        .iter()
        .map(|p| load_image(p, size, spec.dataset))
        .collect::<densum::Result<Vec<_>>>()?;
    let logits = net.forward(batch(&pixels, size, &device));
    let [n, k] = logits.dims();
    let values = logits
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("reading logits")?;
    let labels = class_names(spec.dataset, k);
    let mut results = Vec::new();
    for (i, path) in images.iter().enumerate().take(n) {
        let row = &values[i * k..(i + 1) * k];
        let best = top_k(row, top.min(k));
        match format {
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
    if let Format::Json = format {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}

/// Human-readable class names where the dataset has a short, fixed list.
fn class_names(dataset: Dataset, classes: usize) -> Vec<&'static str> {
    let names: &[&str] = match dataset {
        Dataset::Cifar10 => &[
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ],
        Dataset::Svhn => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        _ => &[],
    };
    if names.len() == classes {
        names.to_vec()
    } else {
        Vec::new()
    }
}
