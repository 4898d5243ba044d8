//! `densum`: a thin command line over the densum library. Each command's arguments and
//! printing live in its own module; the work is done by the library.

mod bench_cmd;
mod convert_cmd;
mod data_cmd;
mod device_args;
mod export_cmd;
mod features_cmd;
mod gradcam_cmd;
mod model_args;
mod models_cmd;
mod predict_cmd;
mod reuse_cmd;
mod train_cmd;
mod weights_args;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use densum::measure::alloc::CountingAlloc;

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
    Models(models_cmd::ModelsArgs),
    /// Show a model's stages, parameters, forward MACs and output shape.
    Info(models_cmd::InfoArgs),
    /// Write freshly initialised weights to a safetensors file.
    Init(models_cmd::InitArgs),
    /// Convert a PyTorch checkpoint or a torchvision / timm safetensors file to densum weights.
    Convert(Box<convert_cmd::ConvertArgs>),
    /// Measure parameters, MACs, time and peak memory of training steps and inference.
    ///
    /// Every figure is also given as a ratio to the first model listed, so
    /// `densum bench resnet50 dsnet50 ds2net50 --dataset imagenet --batch 32` compares
    /// DSNet's cost with ResNet's as the DSNet paper's Table 9 does. Several models are
    /// measured in turn, one iteration of each (A, B, A, B, ...), so that on a machine whose
    /// speed drifts every model sees the same drift (with --conv-profile, one after the other).
    Bench(Box<bench_cmd::BenchArgs>),
    /// Train a model (flags, a TOML config, a named recipe; or resume a run).
    Train(Box<train_cmd::TrainArgs>),
    /// Evaluate a run or a weight file: loss, top-1/top-5 error, per-class accuracy.
    Eval(Box<train_cmd::EvalArgs>),
    /// Plot training loss and validation error of runs against iterations (PNG).
    Plot(train_cmd::PlotArgs),
    /// Run the experiments behind a paper table and write measured error beside the paper's.
    ///
    /// Tables: dsnet-depth, dsnet-ablation, rgsnet, densenet-cifar. Scales: tiny (1,000
    /// images, 3 epochs: a CPU check that every configuration trains), small (the recipe
    /// shortened to 30 epochs), full (the paper's recipe). Each run's folder is keyed by its
    /// whole configuration (model, options, dataset, data path, recipe, scale, seed), and a
    /// finished run is reused, so an interrupted reproduction continues where it stopped.
    Reproduce(train_cmd::ReproduceArgs),
    /// Inspect, verify, benchmark or download datasets.
    Data(data_cmd::DataArgs),
    /// Classify images with a model and its weights.
    ///
    /// Images (PNG, JPEG) are decoded to RGB and scaled to [0, 1]. An image of the model's
    /// input size (224 px for ImageNet, 32 px for CIFAR/SVHN, or --input-size) is used as it
    /// is; any other is resized so that its shorter side equals the input size (bilinear) and
    /// centre-cropped to a square. Pixels are then normalised with the dataset's mean and std.
    Predict(Box<predict_cmd::PredictArgs>),
    /// Grad-CAM class-activation maps: overlays (PNG) and raw maps (.npy) per image; with
    /// --compare, several networks side by side in one grid.
    Gradcam(Box<gradcam_cmd::GradcamArgs>),
    /// Export a network to ONNX (binaries built with `--features onnx`).
    Export(Box<export_cmd::ExportArgs>),
    /// Shortcut-reuse heat maps of DSNet, DelugeNet or DenseNet weights (PNG + CSV).
    Reuse(Box<reuse_cmd::ReuseArgs>),
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
    // On a worker of the pool the kernels run on: fewer sleeps and wake-ups per operation.
    match densum::nn::fast::on_pool(|| run(cli.command)) {
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

fn run(command: Command) -> Result<()> {
    match command {
        Command::Models(args) => models_cmd::models(&args),
        Command::Info(args) => models_cmd::info(&args),
        Command::Init(args) => models_cmd::init(&args),
        Command::Convert(args) => convert_cmd::run(&args),
        Command::Bench(args) => bench_cmd::run(&args),
        Command::Train(args) => train_cmd::run_train(&args),
        Command::Eval(args) => train_cmd::run_eval(&args),
        Command::Plot(args) => train_cmd::run_plot(&args),
        Command::Reproduce(args) => train_cmd::run_reproduce(&args),
        Command::Data(args) => data_cmd::run(args.cmd),
        Command::Predict(args) => predict_cmd::run(&args),
        Command::Gradcam(args) => gradcam_cmd::run(&args),
        Command::Reuse(args) => reuse_cmd::run(&args),
        Command::Export(args) => export_cmd::run(&args),
    }
}
