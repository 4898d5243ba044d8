//! `densum`: a thin command line over the densum library.

mod device_args;
mod model_args;
mod train_cmd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use densum::measure::alloc::CountingAlloc;
use densum::measure::bench::{BenchConfig, BenchMode, BenchResult, bench};
use densum::measure::cost;
use densum::predict::{batch, load_image, top_k};
use densum::weights;
use densum::zoo::{self, Dataset};
use densum::{Device, Net};
use serde_json::json;

use device_args::DeviceArgs;
use model_args::ModelArgs;

// Peak memory in `densum bench` is measured by counting allocations.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

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
    /// Measure parameters, MACs, time and peak memory of training steps and inference.
    ///
    /// Every figure is also given as a ratio to the first model listed, so
    /// `densum bench resnet50 dsnet50 ds2net50 --dataset imagenet --batch 32` compares
    /// DSNet's cost with ResNet's as the DSNet paper's Table 9 does.
    Bench {
        /// Registered model names; ratios are relative to the first.
        #[arg(required = true)]
        models: Vec<String>,
        #[command(flatten)]
        args: ModelArgs,
        /// Images per batch.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// What to measure.
        #[arg(long, value_enum, default_value_t = Mode::Both)]
        mode: Mode,
        /// Unmeasured iterations first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Measured iterations.
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// Print JSON.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV.
        #[arg(long)]
        csv: bool,
        /// Measure how cost grows: `depth=26,50,101` (the number in each model name),
        /// `width=0.25,0.5,1` or `batch=16,32,64`. Prints CSV.
        #[arg(long)]
        sweep: Option<String>,
        /// With --sweep: also draw time and peak memory against the swept value (PNG).
        #[arg(long, requires = "sweep")]
        plot: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Train a model (flags, a TOML config, a named recipe; or resume a run).
    Train(Box<train_cmd::TrainArgs>),
    /// Evaluate a run or a weight file: loss, top-1/top-5 error, per-class accuracy.
    Eval(Box<train_cmd::EvalArgs>),
    /// Plot training loss and validation error of runs against iterations (PNG).
    Plot {
        /// Run directories.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the experiments behind a paper table and write measured error beside the paper's.
    ///
    /// Tables: dsnet-depth, dsnet-ablation, rgsnet, densenet-cifar. Scales: tiny (1,000
    /// images, 3 epochs: a CPU check that every configuration trains), small (the recipe
    /// shortened to 30 epochs), full (the paper's recipe). Finished runs are reused, so an
    /// interrupted reproduction continues where it stopped.
    Reproduce {
        /// Table name.
        table: String,
        /// tiny, small or full.
        #[arg(long, default_value = "tiny")]
        scale: String,
        /// Dataset path.
        #[arg(long)]
        data: PathBuf,
        /// Dataset conventions of the models: cifar10 or cifar100 (the papers' tables are
        /// CIFAR-100 except DenseNet's C10+ rows).
        #[arg(long, default_value = "cifar100")]
        dataset: String,
        /// Seeds, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0")]
        seeds: Vec<u64>,
        /// Only rows whose model name contains one of these, comma-separated.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Folder of the runs.
        #[arg(long, default_value = "runs/reproduce")]
        runs: PathBuf,
        /// Markdown output (default docs/results/TABLE-SCALE.md).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Inspect, verify, benchmark or download datasets.
    Data {
        #[command(subcommand)]
        cmd: densum_data::cli::DataCommand,
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
        #[command(flatten)]
        device: DeviceArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Train,
    Infer,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    // `densum bench ... --json | head` closes the pipe before we finish writing. Rust ignores
    // SIGPIPE, which turns that write into a panic inside `println!`; restoring the default
    // ends the process quietly, as every Unix tool does.
    #[cfg(unix)]
    // SAFETY: called first thing, before any thread exists; only changes a signal disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Reuse freed activation buffers instead of fresh zero-filled pages (faster training).
    densum::measure::alloc::keep_freed_memory();
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
            device,
        } => predict(
            model,
            &args,
            &weights,
            format,
            top,
            &images,
            &device.device()?,
        ),
        Command::Train(args) => train_cmd::run_train(&args),
        Command::Eval(args) => train_cmd::run_eval(&args),
        Command::Reproduce {
            table,
            scale,
            data,
            dataset,
            seeds,
            only,
            runs,
            out,
        } => {
            use densum::train::reproduce::{ReproduceOptions, Scale, reproduce};
            if Dataset::parse(&dataset).is_none() {
                bail!("--dataset {dataset}: expected cifar10 or cifar100");
            }
            let out =
                out.unwrap_or_else(|| PathBuf::from(format!("docs/results/{table}-{scale}.md")));
            let opts = ReproduceOptions {
                table,
                scale: Scale::parse(&scale)?,
                data,
                dataset,
                seeds,
                only,
                runs,
                out: out.clone(),
            };
            let measured = reproduce(&opts, false)?;
            println!(
                "{} rows; table written to {}",
                measured.len(),
                out.display()
            );
            Ok(())
        }
        Command::Plot { runs, out } => {
            densum::train::plot::plot(&runs, &out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Data { cmd } => densum_data::cli::run(cmd),
        Command::Bench {
            models,
            args,
            batch,
            mode,
            warmup,
            iters,
            json,
            csv,
            sweep,
            plot,
            device,
        } => {
            let device = device.device()?;
            let mode = match mode {
                Mode::Train => BenchMode::Train,
                Mode::Infer => BenchMode::Infer,
                Mode::Both => BenchMode::Both,
            };
            let cfg = BenchConfig {
                batch,
                warmup,
                iters,
                mode,
            };
            match sweep {
                Some(sweep) => sweep_cmd(&models, &args, &cfg, &sweep, plot.as_deref(), &device),
                None => bench_cmd(&models, &args, &cfg, json, csv, &device),
            }
        }
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
    // Counting parameters and shapes needs no GPU; Burn's default could be one.
    let net = Net::new(&spec.config, &Device::flex());
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
    // On the CPU, so a seed gives the same weights whatever the binary was built with.
    let device = Device::flex();
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
    device: &Device,
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
    let net = Net::new(&spec.config, device);
    let net = weights::load(net, &spec.name, weights_path, device)?;
    let size = spec.input_size;
    let pixels = images
        .iter()
        .map(|p| load_image(p, size, spec.dataset))
        .collect::<densum::Result<Vec<_>>>()?;
    let logits = net.forward(batch(&pixels, size, device));
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
        Dataset::Cifar10 => &densum_data::formats::cifar::CIFAR10_CLASSES,
        Dataset::Svhn => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        _ => &[],
    };
    if names.len() == classes {
        names.to_vec()
    } else {
        Vec::new()
    }
}

fn bench_cmd(
    models: &[String],
    args: &ModelArgs,
    cfg: &BenchConfig,
    json: bool,
    csv: bool,
    device: &Device,
) -> Result<()> {
    if cfg.batch == 0 || cfg.iters == 0 {
        bail!("--batch and --iters must be at least 1");
    }
    let options = args.options()?;
    // Resolve every name first: a typo fails before minutes of measuring.
    let specs = models
        .iter()
        .map(|m| zoo::resolve(m, &options))
        .collect::<densum::Result<Vec<_>>>()?;
    let mut results: Vec<BenchResult> = Vec::new();
    for spec in &specs {
        if !json && !csv {
            eprintln!("measuring {} ...", spec.name);
        }
        results.push(bench(spec, cfg, device));
    }
    let rows: Vec<Vec<(String, Option<f64>)>> = results.iter().map(bench_row).collect();
    let base = &rows[0];
    let ratio = |i: usize, row: &[(String, Option<f64>)]| match (row[i].1, base[i].1) {
        (Some(v), Some(b)) if b != 0.0 => Some(v / b),
        _ => None,
    };
    if json {
        let list: Vec<_> = results
            .iter()
            .zip(&rows)
            .map(|(r, row)| {
                let mut v = serde_json::to_value(r).expect("serialisable");
                let ratios: serde_json::Map<String, serde_json::Value> = row
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (k.clone(), json!(ratio(i, row))))
                    .collect();
                v["ratio_to_first"] = serde_json::Value::Object(ratios);
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if csv {
        let header: Vec<String> = base.iter().map(|(k, _)| k.clone()).collect();
        let ratio_header: Vec<String> = header.iter().map(|k| format!("{k}_ratio")).collect();
        println!("model,{},{}", header.join(","), ratio_header.join(","));
        for (r, row) in results.iter().zip(&rows) {
            let vals: Vec<String> = row
                .iter()
                .map(|(_, v)| v.map(|x| format!("{x}")).unwrap_or_default())
                .collect();
            let ratios: Vec<String> = (0..row.len())
                .map(|i| ratio(i, row).map(|x| format!("{x:.4}")).unwrap_or_default())
                .collect();
            println!("{},{},{}", r.model, vals.join(","), ratios.join(","));
        }
        return Ok(());
    }
    let first = &results[0];
    println!(
        "input {:?}, {} warm-up + {} measured iterations; median [min, max]; (x) = ratio to {}",
        first.input, cfg.warmup, cfg.iters, first.model
    );
    for (r, row) in results.iter().zip(&rows) {
        let get = |k: &str| row.iter().position(|(n, _)| n == k);
        let show = |k: &str, unit: &str| match get(k) {
            Some(i) => match row[i].1 {
                Some(v) => format!("{v:.1}{unit} ({:.2}x)", ratio(i, row).unwrap_or(f64::NAN)),
                None => "-".into(),
            },
            None => "-".into(),
        };
        println!("{}", r.model);
        println!(
            "  params {} ({:.2}x), MACs {} ({:.2}x)",
            group(r.params as u64),
            r.params as f64 / first.params as f64,
            group(r.macs),
            r.macs as f64 / first.macs.max(1) as f64
        );
        if let Some(t) = &r.train {
            println!(
                "  train step {:.1} ms [{:.1}, {:.1}] = forward {:.1} + backward {:.1} + optimiser {:.1}; {}",
                t.step_ms.median,
                t.step_ms.min,
                t.step_ms.max,
                t.forward_ms.median,
                t.backward_ms.median,
                t.optimizer_ms.median,
                show("train_images_per_s", " img/s")
            );
            println!(
                "  train time {}, peak memory {}, activations {}",
                show("train_step_ms", " ms"),
                show("train_peak_mb", " MB"),
                show("activation_mb", " MB")
            );
        }
        if let Some(t) = &r.infer {
            println!(
                "  inference {:.1} ms [{:.1}, {:.1}]; {}, peak memory {}",
                t.forward_ms.median,
                t.forward_ms.min,
                t.forward_ms.max,
                show("infer_images_per_s", " img/s"),
                show("infer_peak_mb", " MB")
            );
        }
    }
    Ok(())
}

/// The figures of one result, by name, for tables and ratios.
fn bench_row(r: &BenchResult) -> Vec<(String, Option<f64>)> {
    let mb = |b: Option<usize>| b.map(|b| b as f64 / 1e6);
    let t = r.train.as_ref();
    let i = r.infer.as_ref();
    vec![
        ("params".into(), Some(r.params as f64)),
        ("macs".into(), Some(r.macs as f64)),
        ("train_step_ms".into(), t.map(|t| t.step_ms.median)),
        ("forward_ms".into(), t.map(|t| t.forward_ms.median)),
        ("backward_ms".into(), t.map(|t| t.backward_ms.median)),
        ("optimizer_ms".into(), t.map(|t| t.optimizer_ms.median)),
        ("train_images_per_s".into(), t.map(|t| t.images_per_s)),
        ("train_peak_mb".into(), mb(t.and_then(|t| t.peak_bytes))),
        (
            "activation_mb".into(),
            mb(t.and_then(|t| t.activation_bytes)),
        ),
        ("infer_ms".into(), i.map(|i| i.forward_ms.median)),
        ("infer_images_per_s".into(), i.map(|i| i.images_per_s)),
        ("infer_peak_mb".into(), mb(i.and_then(|i| i.peak_bytes))),
    ]
}

/// One measured point of a sweep: series (model as given), swept value, training step ms,
/// training peak MB, inference ms, inference peak MB.
struct SweepRow {
    series: String,
    x: f64,
    train_ms: Option<f64>,
    train_mb: Option<f64>,
    infer_ms: Option<f64>,
    infer_mb: Option<f64>,
}

/// `densum bench --sweep`: one measurement per model and swept value, as CSV (and a chart).
fn sweep_cmd(
    models: &[String],
    args: &ModelArgs,
    cfg: &BenchConfig,
    sweep: &str,
    plot: Option<&Path>,
    device: &Device,
) -> Result<()> {
    let Some((kind, values)) = sweep.split_once('=') else {
        bail!("--sweep {sweep}: expected KIND=V1,V2,... with KIND depth, width or batch");
    };
    let values: Vec<&str> = values.split(',').filter(|v| !v.is_empty()).collect();
    if values.is_empty() || !["depth", "width", "batch"].contains(&kind) {
        bail!("--sweep {sweep}: expected KIND=V1,V2,... with KIND depth, width or batch");
    }
    // Resolve every point first: a bad value fails before any measuring.
    let mut points = Vec::new();
    for model in models {
        for v in &values {
            let bad = || anyhow::anyhow!("--sweep {kind}: `{v}` is not a valid value");
            let mut options = args.options()?;
            let mut name = model.clone();
            let mut c = *cfg;
            match kind {
                "depth" => {
                    let digits: String = model
                        .chars()
                        .skip_while(|ch| !ch.is_ascii_digit())
                        .take_while(|ch| ch.is_ascii_digit())
                        .collect();
                    if digits.is_empty() || v.parse::<usize>().is_err() {
                        return Err(bad());
                    }
                    name = model.replacen(&digits, v, 1);
                }
                "width" => options.width = Some(v.parse().map_err(|_| bad())?),
                _ => c.batch = v.parse().map_err(|_| bad())?,
            }
            let spec = zoo::resolve(&name, &options)?;
            let x: f64 = v.parse().map_err(|_| bad())?;
            points.push((model.clone(), x, spec, c));
        }
    }
    println!(
        "model,series,{kind},params,macs,train_step_ms,train_peak_mb,infer_ms,infer_peak_mb,train_images_per_s"
    );
    let mut rows = Vec::new();
    for (series, x, spec, c) in points {
        let r = bench(&spec, &c, device);
        let t = r.train.as_ref();
        let i = r.infer.as_ref();
        let mb = |b: Option<usize>| b.map(|b| b as f64 / 1e6);
        let row = SweepRow {
            series: series.clone(),
            x,
            train_ms: t.map(|t| t.step_ms.median),
            train_mb: mb(t.and_then(|t| t.peak_bytes)),
            infer_ms: i.map(|i| i.forward_ms.median),
            infer_mb: mb(i.and_then(|i| i.peak_bytes)),
        };
        let show = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        println!(
            "{},{series},{x},{},{},{},{},{},{},{}",
            r.model,
            r.params,
            r.macs,
            show(row.train_ms),
            show(row.train_mb),
            show(row.infer_ms),
            show(row.infer_mb),
            show(t.map(|t| t.images_per_s))
        );
        rows.push(row);
    }
    if let Some(out) = plot {
        use densum::measure::chart::{Line, Panel, draw};
        let line = |series: &str, pick: &dyn Fn(&SweepRow) -> Option<f64>| Line {
            label: series.to_string(),
            points: rows
                .iter()
                .filter(|r| r.series == series)
                .filter_map(|r| pick(r).map(|y| (r.x, y)))
                .collect(),
        };
        let train = cfg.mode != BenchMode::Infer;
        let panel = |title: &str, y: &str, pick: &dyn Fn(&SweepRow) -> Option<f64>| Panel {
            title: title.into(),
            x_label: kind.into(),
            y_label: y.into(),
            lines: models.iter().map(|m| line(m, pick)).collect(),
        };
        let panels = if train {
            vec![
                panel("training step time", "ms", &|r| r.train_ms),
                panel("training peak memory", "MB", &|r| r.train_mb),
            ]
        } else {
            vec![
                panel("inference time", "ms", &|r| r.infer_ms),
                panel("inference peak memory", "MB", &|r| r.infer_mb),
            ]
        };
        draw(&panels, out, 700, 520)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
