//! The `densum data ...` subcommands: argument types and printing over the `densum_data`
//! library.

use anyhow::{Context, bail};
use clap::ValueEnum;
use densum_data::{
    BenchSetup, Dataset, DatasetInfo, DownloadOptions, LoaderConfig, OpenOptions, Remote, Split,
    ValSplit, available_splits, bench, bench_loader, carve_val, describe, download, open_splits,
    verify,
};
use std::path::PathBuf;
use std::sync::Arc;

/// `densum data` and its subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub cmd: DataCommand,
}

/// Datasets `densum data download` fetches (the library's [`Remote`]).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RemoteArg {
    /// CIFAR-10.
    Cifar10,
    /// CIFAR-100.
    Cifar100,
    /// SVHN format 2 (cropped digits).
    Svhn,
}

impl From<RemoteArg> for Remote {
    fn from(r: RemoteArg) -> Self {
        match r {
            RemoteArg::Cifar10 => Remote::Cifar10,
            RemoteArg::Cifar100 => Remote::Cifar100,
            RemoteArg::Svhn => Remote::Svhn,
        }
    }
}

/// Which dataset to open.
#[derive(Debug, Clone, clap::Args)]
pub struct OpenArgs {
    /// Dataset: a CIFAR folder or .tar.gz, an SVHN folder or .mat, an image-folder root.
    pub path: PathBuf,
    /// Split: train, val, test, extra, or a union such as train+extra.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// CIFAR-100: use the 20 coarse labels instead of the 100 fine ones.
    #[arg(long)]
    pub coarse: bool,
    /// Labels file for a flat image folder (ImageNet validation).
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

impl OpenArgs {
    fn open(&self) -> anyhow::Result<Arc<dyn Dataset>> {
        let opts = OpenOptions {
            split: Split::Train,
            coarse_labels: self.coarse,
            labels_file: self.labels.clone(),
        };
        Ok(open_splits(
            &self.path,
            &Split::parse_list(&self.split)?,
            &opts,
        )?)
    }
}

/// `densum data ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DataCommand {
    /// Show format, splits, image size and the number of images per class.
    Info {
        #[command(flatten)]
        open: OpenArgs,
        /// Also show a stratified validation split: a count (5000) or a fraction (0.1).
        #[arg(long)]
        val_split: Option<String>,
        /// Seed of the validation split.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decode every image and report every corrupt or unreadable file (exit status 1 if any).
    Verify {
        #[command(flatten)]
        open: OpenArgs,
        /// Decoding threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure loader throughput in images per second.
    Bench {
        #[command(flatten)]
        open: OpenArgs,
        /// Augmentation preset: cifar, imagenet-train, imagenet-eval, none
        /// (default: cifar for 32x32 data, imagenet-train otherwise).
        #[arg(long)]
        preset: Option<String>,
        /// Cutout hole length (one hole), added to the preset.
        #[arg(long)]
        cutout: Option<u32>,
        /// Normalisation constants: imagenet, cifar10, cifar100, svhn, none (default: by format).
        #[arg(long)]
        normalize: Option<String>,
        /// Batch size.
        #[arg(long, default_value_t = 128)]
        batch_size: usize,
        /// Worker threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Batches prefetched.
        #[arg(long, default_value_t = 4)]
        prefetch: usize,
        /// Decode once into memory (untimed epoch), then time reading from memory.
        #[arg(long)]
        cache: bool,
        /// Stop after this many images.
        #[arg(long)]
        images: Option<usize>,
        /// Skip images that fail to decode instead of stopping.
        #[arg(long)]
        skip_corrupt: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a dataset from its official URL, checksum verified, resumable.
    Download {
        /// Which dataset.
        #[arg(value_enum)]
        dataset: RemoteArg,
        /// Destination folder.
        #[arg(long)]
        to: PathBuf,
        /// CIFAR: the Python version instead of the binary version.
        #[arg(long)]
        python: bool,
        /// SVHN: skip extra_32x32.mat (1.3 GB).
        #[arg(long)]
        skip_extra: bool,
        /// Base URL of a mirror holding the same file names.
        #[arg(long)]
        mirror: Option<String>,
    },
}

fn print_info(i: &DatasetInfo) {
    println!("format:  {}", i.format);
    println!("source:  {}", i.source);
    if !i.splits.is_empty() {
        println!("splits:  {}", i.splits.join(", "));
    }
    println!("images:  {}", i.len);
    match (i.image_size, i.sampled_sizes.as_slice()) {
        (Some([h, w]), _) => println!("size:    {w}x{h}"),
        (None, []) => {}
        (None, s) => println!(
            "size:    {} (sampled)",
            s.iter()
                .map(|[h, w]| format!("{w}x{h}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    println!("classes: {}", i.class_names.len());
    for (k, (n, c)) in i.class_names.iter().zip(&i.count_per_class).enumerate() {
        println!("  {k:>4}  {n:<24} {c}");
    }
}

/// Runs one `densum data` subcommand.
pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Info {
            open,
            val_split,
            seed,
            json,
        } => {
            let splits: Vec<String> = available_splits(&open.path)?
                .iter()
                .map(|s| s.to_string())
                .collect();
            let ds = open.open()?;
            let mut out = vec![("dataset", describe(&*ds, splits))];
            if let Some(v) = val_split {
                let (t, v) = carve_val(ds, v.parse::<ValSplit>()?, seed)?;
                out.push(("train part", describe(&*t, vec![])));
                out.push(("validation part", describe(&*v, vec![])));
            }
            if json {
                let m: serde_json::Map<String, serde_json::Value> = out
                    .iter()
                    .map(|(k, i)| (k.to_string(), serde_json::to_value(i).unwrap()))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                for (k, i) in &out {
                    if out.len() > 1 {
                        println!("== {k}");
                    }
                    print_info(i);
                }
            }
        }
        DataCommand::Verify {
            open,
            workers,
            json,
        } => {
            let ds = open.open()?;
            let r = verify(&*ds, workers)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for b in &r.bad {
                    println!("BAD {}: {}", b.item, b.error);
                }
                println!("{}: {} of {} images decode", r.source, r.ok, r.total);
            }
            if !r.bad.is_empty() {
                bail!(
                    "{} of {} images are corrupt or unreadable",
                    r.bad.len(),
                    r.total
                );
            }
        }
        DataCommand::Bench {
            open,
            preset,
            cutout,
            normalize,
            batch_size,
            workers,
            prefetch,
            cache,
            images,
            skip_corrupt,
            json,
        } => {
            let ds = open.open()?;
            let setup = BenchSetup {
                preset,
                cutout,
                normalize,
                loader: LoaderConfig {
                    batch_size,
                    workers,
                    prefetch,
                    cache,
                    skip_corrupt,
                    ..Default::default()
                },
            };
            let (loader, preset) = bench_loader(ds, &setup)?;
            let r = bench(&loader, images).context("benchmark failed")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{}", r.line(&preset, cache));
                if loader.skipped() > 0 {
                    println!("skipped {} corrupt images", loader.skipped());
                }
            }
        }
        DataCommand::Download {
            dataset,
            to,
            python,
            skip_extra,
            mirror,
        } => {
            let files = download(
                dataset.into(),
                &to,
                &DownloadOptions {
                    python,
                    skip_extra,
                    mirror,
                },
            )?;
            for f in files {
                println!("{} (checksum ok)", f.display());
            }
        }
    }
    Ok(())
}
