//! The `densum data ...` subcommands: argument types (clap derive) and [`run`].
//!
//! The main binary embeds them as `Data { #[command(subcommand)] cmd: DataCommand }` and
//! calls `densum_data::cli::run(cmd)`.

use crate::Augment;
use crate::augment::AugmentConfig;
use crate::dataset::{Dataset, Split};
use crate::download::{DownloadOptions, Remote, download};
use crate::formats::{OpenOptions, available_splits, open_splits};
use crate::inspect::{DatasetInfo, bench, describe, verify};
use crate::loader::{Loader, LoaderConfig};
use crate::normalize::Normalize;
use crate::split::{ValSplit, carve_val};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::sync::Arc;

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
        dataset: Remote,
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
            let preset = preset.unwrap_or_else(|| {
                match ds.image_size() {
                    Some((h, w)) if h <= 64 && w <= 64 => "cifar",
                    None if ds
                        .get(0)
                        .is_ok_and(|s| s.image.height <= 64 && s.image.width <= 64) =>
                    {
                        "cifar"
                    }
                    _ => "imagenet-train",
                }
                .to_string()
            });
            let mut cfg = AugmentConfig::preset(&preset)?;
            if let Some(l) = cutout {
                cfg = cfg.with_cutout(1, l);
            }
            let norm = match normalize {
                Some(n) => Normalize::by_name(&n)?,
                None => Normalize::by_name(ds.format().normalization_name())?,
            };
            let loader = Loader::new(
                ds,
                Augment::new(cfg)?,
                norm,
                LoaderConfig {
                    batch_size,
                    workers,
                    prefetch,
                    cache,
                    skip_corrupt,
                    ..Default::default()
                },
            )?;
            let r = bench(&loader, images).context("benchmark failed")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{}: {} images ({}x{}, preset {preset}) in {:.2} s = {:.0} images/s; batch {}, {} workers, {}",
                    r.source,
                    r.images,
                    r.image_size[1],
                    r.image_size[0],
                    r.seconds,
                    r.images_per_sec,
                    r.batch_size,
                    r.workers,
                    if cache {
                        format!("from memory (cache filled in {:.2} s)", r.warmup_seconds)
                    } else {
                        "decoding every image".to_string()
                    }
                );
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
                dataset,
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
