//! `densum bench`: arguments and printing; measuring, ratios and sweeps are
//! `densum::measure`'s.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use densum::Device;
use densum::measure::bench::{BenchConfig, BenchMode, Comparison, bench, bench_interleaved};
use densum::measure::chart::draw;
use densum::measure::sweep::{self, Sweep, SweepRow};
use densum::train::config::{self, OptimConfig};
use densum::zoo;

use crate::device_args::DeviceArgs;
use crate::model_args::ModelArgs;

/// What `densum bench` measures.
#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Training steps only.
    Train,
    /// Inference passes only.
    Infer,
    /// Both.
    Both,
}

/// Flags of `densum bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Registered model names; ratios are relative to the first.
    #[arg(required = true)]
    pub models: Vec<String>,
    #[command(flatten)]
    pub args: ModelArgs,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// Unmeasured iterations first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Measured iterations.
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Time the optimiser step with this recipe's settings (default: `densum train`'s
    /// defaults, SGD momentum 0.9, weight decay 5e-4).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Also time every convolution of the measured iterations by shape and pass (forward,
    /// inference, input and weight gradient) and print the table after the results (in JSON:
    /// `convolutions` under `train` and `infer`). Compare with PyTorch's per-shape times
    /// through `tools/conv_profile.py`.
    #[arg(long, conflicts_with = "sweep")]
    pub conv_profile: bool,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
    /// Measure how cost grows: `depth=26,50,101` (the depth in each model's name),
    /// `width=0.25,0.5,1` or `batch=16,32,64`. Prints CSV.
    #[arg(long)]
    pub sweep: Option<String>,
    /// With --sweep: also draw time and peak memory against the swept value (PNG).
    #[arg(long, requires = "sweep")]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// `densum bench`.
pub fn run(a: &BenchArgs) -> Result<()> {
    let device = a.device.device()?;
    let cfg = BenchConfig {
        batch: a.batch,
        warmup: a.warmup,
        iters: a.iters,
        mode: match a.mode {
            Mode::Train => BenchMode::Train,
            Mode::Infer => BenchMode::Infer,
            Mode::Both => BenchMode::Both,
        },
        optimizer: match &a.recipe {
            Some(r) => config::recipe_optimizer(r)?,
            None => OptimConfig::default(),
        },
        conv_profile: a.conv_profile,
    };
    match &a.sweep {
        Some(s) => run_sweep(a, &cfg, &Sweep::parse(s)?, &device),
        None => compare(a, &cfg, &device),
    }
}

/// Measures every model once and prints them side by side.
fn compare(a: &BenchArgs, cfg: &BenchConfig, device: &Device) -> Result<()> {
    cfg.check()?;
    let options = a.args.options();
    // Resolve every name first: a typo fails before minutes of measuring.
    let specs = a
        .models
        .iter()
        .map(|m| zoo::resolve(m, &options))
        .collect::<densum::Result<Vec<_>>>()?;
    let quiet = a.json || a.csv;
    // Several models' iterations in turn, so that a drifting machine slows them alike; with a
    // convolution profile (which times one model at a time) one after the other.
    let results = if cfg.conv_profile || specs.len() == 1 {
        specs
            .iter()
            .map(|spec| {
                if !quiet {
                    eprintln!("measuring {} ...", spec.name);
                }
                bench(spec, cfg, device)
            })
            .collect::<densum::Result<Vec<_>>>()?
    } else {
        if !quiet {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            eprintln!("measuring {} in turn ...", names.join(", "));
        }
        bench_interleaved(&specs, cfg, device)?
    };
    let table = Comparison::new(results)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&table.to_json())?);
    } else if a.csv {
        print!("{}", table.to_csv());
    } else {
        print!("{}", table.to_text(cfg));
        if cfg.conv_profile {
            print!("{}", table.conv_profiles());
        }
    }
    Ok(())
}

/// `densum bench --sweep`: one measurement per model and swept value, as CSV (and a chart).
fn run_sweep(a: &BenchArgs, cfg: &BenchConfig, s: &Sweep, device: &Device) -> Result<()> {
    let points = sweep::plan(&a.models, &a.args.options(), cfg, s)?;
    println!("{}", SweepRow::csv_header(s.kind));
    let mut rows = Vec::new();
    for point in &points {
        let row = SweepRow::new(point, &bench(&point.spec, &point.cfg, device)?);
        println!("{}", row.csv_line());
        rows.push(row);
    }
    if let Some(out) = &a.plot {
        draw(
            &sweep::panels(&rows, &a.models, s.kind, cfg.mode),
            out,
            700,
            520,
        )?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
