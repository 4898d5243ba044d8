//! `densum train`, `eval`, `plot` and `reproduce`: flags become the top layer of a training
//! configuration; the library trains, evaluates, plots and reproduces.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use densum::train::reproduce::{ReproduceOptions, Scale, reproduce};
use densum::train::{self, RunOptions, TrainConfig, checkpoint, config};
use densum::zoo::{self, Dataset};
use densum::{Net, weights};
use densum_data::{LoaderConfig, Split};

use crate::device_args::DeviceArgs;
use crate::model_args::ModelArgs;

/// Flags of `densum train`; each overrides the recipe and the config file.
#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// Registered model name.
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Dataset path: CIFAR/SVHN files or archives, or an image folder ROOT/<class>/<image>.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A named recipe: dsnet-cifar, rgsnet-cifar, densenet-cifar, dense2net-cifar, imagenet.
    #[arg(long)]
    pub recipe: Option<String>,
    /// A TOML configuration file (keys as in config.toml of a run directory).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint (its config.toml applies).
    #[arg(long, conflicts_with_all = ["recipe", "config"])]
    pub resume: Option<PathBuf>,
    /// Run length in epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Run length in iterations (takes precedence over epochs).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Images per batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// No weight decay on normalisation parameters and biases.
    #[arg(long)]
    pub no_decay_norm_bias: bool,
    /// Clip the global gradient norm.
    #[arg(long)]
    pub grad_clip: Option<f64>,
    /// Schedule: constant, multistep, step, cosine, plateau.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Unit of milestones and step size: iteration, epoch, fraction.
    #[arg(long)]
    pub schedule_unit: Option<String>,
    /// Multistep milestones, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub milestones: Option<Vec<f64>>,
    /// Step size of the step schedule.
    #[arg(long)]
    pub step_size: Option<f64>,
    /// Decay factor.
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Linear warm-up iterations.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Plateau patience (validations).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Label smoothing.
    #[arg(long)]
    pub label_smoothing: Option<f64>,
    /// Stop after N validations without improvement.
    #[arg(long)]
    pub early_stopping: Option<usize>,
    /// Validation: a count (5000) or fraction (0.1) carved from the training split, or a split
    /// name (test).
    #[arg(long)]
    pub val_split: Option<String>,
    /// Validate every N iterations (default: each epoch).
    #[arg(long)]
    pub val_every: Option<usize>,
    /// Log every N iterations.
    #[arg(long)]
    pub log_every: Option<usize>,
    /// Checkpoint every N iterations (always at the end of each epoch).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Keep the last K checkpoints (and the best).
    #[arg(long)]
    pub keep_last: Option<usize>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run directory.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Data worker threads (0: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Augmentation preset: cifar, imagenet-train, none.
    #[arg(long)]
    pub augment: Option<String>,
    /// Cutout: HOLES,LENGTH.
    #[arg(long, value_delimiter = ',', num_args = 2)]
    pub cutout: Option<Vec<u32>>,
    /// Do not keep decoded images in memory.
    #[arg(long)]
    pub no_cache: bool,
    /// Skip undecodable images instead of stopping.
    #[arg(long)]
    pub skip_corrupt: bool,
    /// Keep the last incomplete batch of each epoch.
    #[arg(long)]
    pub keep_last_batch: bool,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Data-parallel training on several devices, comma-separated (cuda:0,cuda:1): one
    /// replica each, the batch (the global batch) split across them, gradients averaged with
    /// Burn's all-reduce (NCCL; CUDA only). Replaces --device.
    #[arg(long, conflicts_with = "device")]
    pub devices: Option<String>,
}

fn set(t: &mut toml::Table, path: &[&str], v: impl Into<toml::Value>) {
    let mut t = t;
    for k in &path[..path.len() - 1] {
        t = t
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("table");
    }
    t.insert(path[path.len() - 1].to_string(), v.into());
}

impl TrainArgs {
    fn overlay(&self) -> Result<toml::Table> {
        let mut t = toml::Table::new();
        if let Some(m) = &self.model {
            set(&mut t, &["model"], m.as_str());
        }
        let options = self.model_args.options();
        if let toml::Value::Table(o) = toml::Value::try_from(&options)?
            && !o.is_empty()
        {
            t.insert("options".into(), toml::Value::Table(o));
        }
        macro_rules! opt {
            ($field:expr, $path:expr) => {
                if let Some(v) = &$field {
                    set(&mut t, $path, v.clone());
                }
            };
        }
        let int = |v: usize| v as i64;
        if let Some(p) = &self.data {
            set(&mut t, &["data", "path"], p.display().to_string());
        }
        opt!(self.epochs.map(int), &["epochs"]);
        opt!(self.iterations.map(int), &["iterations"]);
        opt!(self.batch.map(int), &["batch"]);
        opt!(self.lr, &["optimizer", "lr"]);
        opt!(self.momentum, &["optimizer", "momentum"]);
        opt!(self.weight_decay, &["optimizer", "weight_decay"]);
        opt!(self.grad_clip, &["optimizer", "grad_clip"]);
        if self.nesterov {
            set(&mut t, &["optimizer", "nesterov"], true);
        }
        if self.no_decay_norm_bias {
            set(&mut t, &["optimizer", "no_decay_norm_bias"], true);
        }
        opt!(self.schedule, &["schedule", "kind"]);
        opt!(self.schedule_unit, &["schedule", "unit"]);
        opt!(self.milestones, &["schedule", "milestones"]);
        opt!(self.step_size, &["schedule", "step_size"]);
        opt!(self.gamma, &["schedule", "gamma"]);
        opt!(self.warmup.map(int), &["schedule", "warmup"]);
        opt!(self.patience.map(int), &["schedule", "patience"]);
        opt!(self.label_smoothing, &["label_smoothing"]);
        opt!(self.early_stopping.map(int), &["early_stopping"]);
        opt!(self.val_split, &["data", "val"]);
        opt!(self.val_every.map(int), &["val_every"]);
        opt!(self.log_every.map(int), &["log_every"]);
        opt!(self.checkpoint_every.map(int), &["checkpoint_every"]);
        opt!(self.keep_last.map(int), &["keep_last"]);
        opt!(self.seed.map(|s| s as i64), &["seed"]);
        opt!(
            self.run_dir.as_ref().map(|p| p.display().to_string()),
            &["run_dir"]
        );
        opt!(self.workers.map(int), &["data", "workers"]);
        opt!(self.augment, &["data", "augment"]);
        if let Some(c) = &self.cutout {
            set(&mut t, &["data", "cutout"], vec![c[0] as i64, c[1] as i64]);
        }
        if self.no_cache {
            set(&mut t, &["data", "cache"], false);
        }
        if self.skip_corrupt {
            set(&mut t, &["data", "skip_corrupt"], true);
        }
        if self.keep_last_batch {
            set(&mut t, &["drop_last"], false);
        }
        Ok(t)
    }
}

/// `densum train`.
pub fn run_train(args: &TrainArgs) -> Result<()> {
    let cfg = if let Some(dir) = &args.resume {
        let saved = dir.join("config.toml");
        let base =
            config::read_table(&saved).with_context(|| format!("resuming {}", dir.display()))?;
        let cfg = config::resolve(vec![base])?;
        if let Some(m) = &args.model
            && zoo::find(m)?.name != cfg.model
        {
            bail!("{} is a run of `{}`, not `{m}`", dir.display(), cfg.model);
        }
        TrainConfig {
            run_dir: Some(dir.clone()),
            ..cfg
        }
    } else {
        let mut layers = Vec::new();
        if let Some(r) = &args.recipe {
            layers.push(config::recipe(r)?);
        }
        if let Some(f) = &args.config {
            layers.push(config::read_table(f)?);
        }
        layers.push(args.overlay()?);
        config::resolve(layers)?
    };
    // Check the model and its options before touching data or disk.
    zoo::resolve(&cfg.model, &cfg.options)?;
    let devices = match &args.devices {
        Some(list) => densum::device::parse_list(list)?,
        None => vec![args.device.device],
    };
    for d in &devices {
        args.device.precision.check(d)?;
    }
    let summary = train::train(
        &cfg,
        RunOptions {
            resume: args.resume.is_some(),
            quiet: args.quiet,
            devices,
        },
    )?;
    println!(
        "{}: {} iterations, {} epochs ({}); best validation top-1 error {}; run directory {}",
        summary.model,
        summary.iterations,
        summary.epochs,
        summary.stopped,
        summary
            .best_top1_error
            .map(|(e, it)| format!("{e:.2}% at iteration {it}"))
            .unwrap_or_else(|| "-".into()),
        summary.run_dir.display()
    );
    Ok(())
}

/// Flags of `densum eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run directory: its model, options and best checkpoint (or the last).
    #[arg(long, conflicts_with = "weights")]
    pub run: Option<PathBuf>,
    /// A weight file (model and options from its metadata unless given).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Registered model name.
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Dataset path (default: the run's).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Split to evaluate: a dataset split (test, train, ...) or, with --run, `val`: the
    /// validation images the run held out (carved again from its config and seed).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Preprocessing preset (default: the run's eval preset, else none).
    #[arg(long)]
    pub augment: Option<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// `densum eval`.
pub fn run_eval(args: &EvalArgs) -> Result<()> {
    let mut run_cfg = None;
    let (weights_path, mut model, mut options, mut data, mut augment) =
        match (&args.run, &args.weights) {
            (Some(run), _) => {
                let cfg = config::resolve(vec![config::read_table(&run.join("config.toml"))?])?;
                run_cfg = Some(cfg.clone());
                (
                    checkpoint::best_or_last(run)?,
                    Some(cfg.model),
                    cfg.options,
                    Some(cfg.data.path),
                    Some(cfg.data.eval_augment),
                )
            }
            (None, Some(w)) => {
                let info = weights::read_info(w)?;
                (
                    w.clone(),
                    info.model,
                    info.options.unwrap_or_default(),
                    None,
                    None,
                )
            }
            (None, None) => bail!("give --run RUN_DIR or --weights FILE"),
        };
    if args.model.is_some() {
        model = args.model.clone();
    }
    options = args.model_args.options_over(options);
    if args.data.is_some() {
        data = args.data.clone();
    }
    if args.augment.is_some() {
        augment = args.augment.clone();
    }
    let Some(model) = model else {
        bail!("{} records no model; pass --model", weights_path.display());
    };
    let Some(data) = data else {
        bail!("no data: pass --data PATH");
    };
    let spec = zoo::resolve(&model, &options)?;
    let device = args.device.device()?;
    let net: Net = weights::load(
        Net::new(&spec.config, &device),
        &spec.name,
        &weights_path,
        &device,
    )?;
    let ds: std::sync::Arc<dyn densum_data::Dataset> = if args.split == "val" {
        let Some(mut cfg) = run_cfg else {
            bail!("--split val needs --run: the held-out images are defined by a run's config");
        };
        cfg.data.path = data.clone();
        let splits = train::data::open_splits(&cfg.data, &spec, cfg.seed)?;
        let Some(val) = splits.val else {
            bail!("the run held out no validation images (its data.val is empty)");
        };
        val
    } else {
        let split = Split::parse(&args.split).map_err(|e| anyhow::anyhow!("{e}"))?;
        std::sync::Arc::from(densum_data::open(&data, split).map_err(|e| anyhow::anyhow!("{e}"))?)
    };
    if ds.num_classes() != spec.config.num_classes {
        bail!(
            "{} has {} classes but {} is built with {}",
            ds.source(),
            ds.num_classes(),
            spec.name,
            spec.config.num_classes
        );
    }
    let loader = train::data::loader(
        ds,
        augment.as_deref().unwrap_or("none"),
        None,
        &spec,
        LoaderConfig {
            batch_size: args.batch.max(1),
            shuffle: false,
            drop_last: false,
            ..Default::default()
        },
    )?;
    let r = train::evaluate(&net, &loader, &device)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} on {} ({} images, weights {})",
            spec.name,
            data.display(),
            r.samples,
            weights_path.display()
        );
        println!(
            "loss {:.4}  top-1 error {:.2}%  top-5 error {:.2}%",
            r.loss, r.top1_error, r.top5_error
        );
        for c in &r.per_class {
            println!(
                "  {:16} {:6.2}% ({}/{})",
                c.class,
                100.0 * c.accuracy,
                c.correct,
                c.total
            );
        }
    }
    Ok(())
}

/// Flags of `densum plot`.
#[derive(Args)]
pub struct PlotArgs {
    /// Run directories.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
}

/// `densum plot`.
pub fn run_plot(a: &PlotArgs) -> Result<()> {
    train::plot::plot(&a.runs, &a.out)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

/// The datasets of the reproducible tables.
#[derive(Clone, Copy, ValueEnum)]
pub enum TableDataset {
    /// CIFAR-10.
    Cifar10,
    /// CIFAR-100.
    Cifar100,
}

/// Flags of `densum reproduce`.
#[derive(Args)]
pub struct ReproduceArgs {
    /// Table name.
    pub table: String,
    /// tiny, small or full.
    #[arg(long, default_value = "tiny")]
    pub scale: String,
    /// Dataset path.
    #[arg(long)]
    pub data: PathBuf,
    /// Dataset conventions of the models (default: the dataset of the paper's rows,
    /// CIFAR-100 for the DSNet and RGSNet tables, CIFAR-10 for DenseNet's C10+ rows).
    #[arg(long, value_enum, ignore_case = true)]
    pub dataset: Option<TableDataset>,
    /// Seeds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub seeds: Vec<u64>,
    /// Only rows whose model name contains one of these, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Folder of the runs.
    #[arg(long, default_value = "runs/reproduce")]
    pub runs: PathBuf,
    /// Markdown output (default docs/results/TABLE-SCALE.md).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `densum reproduce`.
pub fn run_reproduce(a: &ReproduceArgs) -> Result<()> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("docs/results/{}-{}.md", a.table, a.scale)));
    let opts = ReproduceOptions {
        table: a.table.clone(),
        scale: Scale::parse(&a.scale)?,
        data: a.data.clone(),
        dataset: a.dataset.map(|d| match d {
            TableDataset::Cifar10 => Dataset::Cifar10,
            TableDataset::Cifar100 => Dataset::Cifar100,
        }),
        seeds: a.seeds.clone(),
        only: a.only.clone(),
        runs: a.runs.clone(),
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
