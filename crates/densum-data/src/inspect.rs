//! `info`, `verify` and `bench`: what a dataset holds, whether all of it decodes, and how
//! fast the loader feeds it.

use crate::augment::{Augment, AugmentConfig};
use crate::dataset::Dataset;
use crate::error::Result;
use crate::formats::{OpenOptions, available_splits, open_with};
use crate::loader::{Loader, LoaderConfig};
use crate::normalize::Normalize;
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Summary of one split of a dataset.
#[derive(Clone, Debug, Serialize)]
pub struct DatasetInfo {
    /// Format name (`cifar10-binary`, `image-folder`, ...).
    pub format: String,
    /// Source (path and split).
    pub source: String,
    /// Splits present at the path (empty when the path is itself one split).
    pub splits: Vec<String>,
    /// Number of samples.
    pub len: usize,
    /// Class names.
    pub class_names: Vec<String>,
    /// Samples per class, indexed like `class_names`.
    pub count_per_class: Vec<usize>,
    /// `[height, width]` when fixed by the format.
    pub image_size: Option<[u32; 2]>,
    /// Distinct `[height, width]` among up to 16 decoded samples (for image folders).
    pub sampled_sizes: Vec<[u32; 2]>,
}

/// Describes the split `opts.split` of the dataset at `path`.
pub fn info(path: &Path, opts: &OpenOptions) -> Result<DatasetInfo> {
    let splits = available_splits(path)?;
    let ds = open_with(path, opts)?;
    Ok(describe(
        &*ds,
        splits.iter().map(|s| s.to_string()).collect(),
    ))
}

/// [`DatasetInfo`] of an open dataset.
pub fn describe(ds: &dyn Dataset, splits: Vec<String>) -> DatasetInfo {
    let mut counts = vec![0usize; ds.num_classes()];
    for i in 0..ds.len() {
        if let Some(c) = counts.get_mut(ds.label(i)) {
            *c += 1;
        }
    }
    let mut sampled = Vec::new();
    if ds.image_size().is_none() && !ds.is_empty() {
        let probes = ds.len().min(16);
        for k in 0..probes {
            if let Ok(s) = ds.get(k * ds.len() / probes) {
                let hw = [s.image.height, s.image.width];
                if !sampled.contains(&hw) {
                    sampled.push(hw);
                }
            }
        }
    }
    DatasetInfo {
        format: ds.format().name().to_string(),
        source: ds.source(),
        splits,
        len: ds.len(),
        class_names: ds.class_names().to_vec(),
        count_per_class: counts,
        image_size: ds.image_size().map(|(h, w)| [h, w]),
        sampled_sizes: sampled,
    }
}

/// One sample that failed to decode.
#[derive(Clone, Debug, Serialize)]
pub struct BadItem {
    /// Index in the dataset.
    pub index: usize,
    /// File (or record) name.
    pub item: String,
    /// The error message.
    pub error: String,
}

/// Result of decoding every sample.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// Source (path and split).
    pub source: String,
    /// Samples checked.
    pub total: usize,
    /// Samples that decoded.
    pub ok: usize,
    /// Every sample that did not, in index order.
    pub bad: Vec<BadItem>,
}

/// Decodes every sample of `ds` on `workers` threads (0: one per core) and reports all
/// failures (never stops at the first).
pub fn verify(ds: &dyn Dataset, workers: usize) -> Result<VerifyReport> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .map_err(|e| crate::Error::Invalid(format!("cannot start worker threads: {e}")))?;
    let bad: Vec<BadItem> = pool.install(|| {
        (0..ds.len())
            .into_par_iter()
            .filter_map(|i| {
                ds.get(i).err().map(|e| BadItem {
                    index: i,
                    item: ds.item_name(i),
                    error: e.to_string(),
                })
            })
            .collect()
    });
    Ok(VerifyReport {
        source: ds.source(),
        total: ds.len(),
        ok: ds.len() - bad.len(),
        bad,
    })
}

/// Loader throughput.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Source (path and split).
    pub source: String,
    /// Images delivered in the timed part.
    pub images: usize,
    /// Batches delivered in the timed part.
    pub batches: usize,
    /// Wall time of the timed part.
    pub seconds: f64,
    /// `images / seconds`.
    pub images_per_sec: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Worker threads.
    pub workers: usize,
    /// Output image `[height, width]`.
    pub image_size: [usize; 2],
    /// Whether decoded images came from the in-memory cache (filled by an untimed epoch).
    pub from_memory: bool,
    /// Seconds of the untimed warm-up epoch that filled the cache (0 without cache).
    pub warmup_seconds: f64,
}

impl BenchReport {
    /// The report as one line for people: throughput, settings (`preset`), and whether the
    /// loader was asked to `cache` decoded images.
    pub fn line(&self, preset: &str, cache: bool) -> String {
        format!(
            "{}: {} images ({}x{}, preset {preset}) in {:.2} s = {:.0} images/s; batch {}, {} workers, {}",
            self.source,
            self.images,
            self.image_size[1],
            self.image_size[0],
            self.seconds,
            self.images_per_sec,
            self.batch_size,
            self.workers,
            if cache {
                format!("from memory (cache filled in {:.2} s)", self.warmup_seconds)
            } else {
                "decoding every image".to_string()
            }
        )
    }
}

/// How [`bench_loader`] builds the loader it times.
#[derive(Clone, Debug, Default)]
pub struct BenchSetup {
    /// Augmentation preset (default: `cifar` for images up to 64 px, else `imagenet-train`).
    pub preset: Option<String>,
    /// One cutout hole of this length, added to the preset.
    pub cutout: Option<u32>,
    /// Normalisation constants by name (default: those of the dataset's format).
    pub normalize: Option<String>,
    /// Batch size, workers, prefetch, cache, corrupt-image handling.
    pub loader: LoaderConfig,
}

/// The loader `densum data bench` times for `ds`, and the preset it uses.
pub fn bench_loader(ds: Arc<dyn Dataset>, setup: &BenchSetup) -> Result<(Loader, String)> {
    let small = |h: u32, w: u32| h <= 64 && w <= 64;
    let preset = setup.preset.clone().unwrap_or_else(|| {
        let is_small = match ds.image_size() {
            Some((h, w)) => small(h, w),
            None => ds
                .get(0)
                .is_ok_and(|s| small(s.image.height, s.image.width)),
        };
        if is_small { "cifar" } else { "imagenet-train" }.to_string()
    });
    let mut cfg = AugmentConfig::preset(&preset)?;
    if let Some(l) = setup.cutout {
        cfg = cfg.with_cutout(1, l);
    }
    let norm = match &setup.normalize {
        Some(n) => Normalize::by_name(n)?,
        None => Normalize::by_name(ds.format().normalization_name())?,
    };
    let loader = Loader::new(ds, Augment::new(cfg)?, norm, setup.loader.clone())?;
    Ok((loader, preset))
}

/// Times the loader: if it caches, one untimed epoch fills the cache first. Then batches
/// of epoch 1 are consumed until `max_images` (or the epoch ends).
pub fn bench(loader: &Loader, max_images: Option<usize>) -> Result<BenchReport> {
    let cached = loader.dataset().in_memory();
    let mut warmup = 0.0;
    if loader.config().cache {
        let t = Instant::now();
        for b in loader.epoch(0) {
            b?;
        }
        warmup = t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    let (mut images, mut batches, mut hw) = (0, 0, [0, 0]);
    let mut checksum = 0f64;
    for b in loader.epoch(1) {
        let b = b?;
        images += b.shape[0];
        batches += 1;
        hw = [b.shape[2], b.shape[3]];
        // Touch the data as a consumer would, so nothing is optimised away.
        checksum += b.images.first().copied().unwrap_or(0.0) as f64;
        if max_images.is_some_and(|m| images >= m) {
            break;
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    std::hint::black_box(checksum);
    Ok(BenchReport {
        source: loader.dataset().source(),
        images,
        batches,
        seconds,
        images_per_sec: images as f64 / seconds.max(1e-9),
        batch_size: loader.config().batch_size,
        workers: loader.workers(),
        image_size: hw,
        from_memory: cached,
        warmup_seconds: warmup,
    })
}
