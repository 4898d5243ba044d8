//! The parallel batch loader.
//!
//! One producer thread per epoch builds batches in order; each batch's samples are decoded
//! and augmented in parallel on a rayon pool of `workers` threads, writing normalised floats
//! straight into the batch buffer; finished batches wait in a bounded channel of `prefetch`
//! slots. Every random choice depends only on `(seed, epoch, sample index)`, so batches are
//! identical for any number of workers, and an epoch resumed at batch `k` yields exactly the
//! batches `k..` of the full epoch.

use crate::augment::Augment;
use crate::dataset::{Cached, Dataset};
use crate::error::{Error, Result};
use crate::normalize::{NormLut, Normalize};
use crate::rng::{Rng, stream};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

/// Loader settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Shuffle the order every epoch (from `seed` and the epoch number).
    pub shuffle: bool,
    /// Drop the last, incomplete batch.
    pub drop_last: bool,
    /// The run's seed.
    pub seed: u64,
    /// Decode/augment threads; 0 means one per core.
    pub workers: usize,
    /// Finished batches kept ready ahead of the consumer.
    pub prefetch: usize,
    /// Keep decoded images in memory after the first epoch (for datasets that fit).
    pub cache: bool,
    /// Leave out samples that fail to decode (counted in [`Batch::skipped`]) instead of
    /// ending the epoch with the error.
    pub skip_corrupt: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 128,
            shuffle: true,
            drop_last: false,
            seed: 0,
            workers: 0,
            prefetch: 4,
            cache: false,
            skip_corrupt: false,
        }
    }
}

/// One batch, ready for a tensor: `images` is `[N, 3, H, W]` row-major (NCHW), normalised.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Normalised pixels, NCHW.
    pub images: Vec<f32>,
    /// Class indices.
    pub labels: Vec<i64>,
    /// `[N, 3, H, W]`.
    pub shape: [usize; 4],
    /// Dataset index of each sample.
    pub indices: Vec<usize>,
    /// Position of this batch in the epoch.
    pub batch: usize,
    /// Samples left out with `skip_corrupt`: `(dataset index, error message)`.
    pub skipped: Vec<(usize, String)>,
}

struct Inner {
    dataset: Arc<dyn Dataset>,
    augment: Augment,
    normalize: Normalize,
    lut: NormLut,
    config: LoaderConfig,
    pool: rayon::ThreadPool,
    skipped: AtomicUsize,
}

/// Produces epochs of batches from a dataset. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Loader {
    inner: Arc<Inner>,
}

impl Loader {
    /// A loader over `dataset`. With `config.cache`, datasets not already in memory are
    /// wrapped in a [`Cached`].
    pub fn new(
        dataset: Arc<dyn Dataset>,
        augment: Augment,
        normalize: Normalize,
        config: LoaderConfig,
    ) -> Result<Loader> {
        if config.batch_size == 0 {
            return Err(Error::Invalid("batch size must be positive".into()));
        }
        let workers = if config.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.workers
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("densum-data-{i}"))
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start {workers} worker threads: {e}")))?;
        let dataset: Arc<dyn Dataset> = if config.cache && !dataset.in_memory() {
            Arc::new(Cached::new(dataset))
        } else {
            dataset
        };
        Ok(Loader {
            inner: Arc::new(Inner {
                dataset,
                lut: normalize.lut(),
                augment,
                normalize,
                config,
                pool,
                skipped: AtomicUsize::new(0),
            }),
        })
    }

    /// The dataset (the caching wrapper when caching is on).
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.inner.dataset
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.inner.config
    }

    /// The augmentation.
    pub fn augment(&self) -> &Augment {
        &self.inner.augment
    }

    /// The normalisation.
    pub fn normalize(&self) -> Normalize {
        self.inner.normalize
    }

    /// Worker threads in use.
    pub fn workers(&self) -> usize {
        self.inner.pool.current_num_threads()
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.inner.dataset.len(), self.inner.config.batch_size);
        if self.inner.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Samples skipped as corrupt so far (all epochs).
    pub fn skipped(&self) -> usize {
        self.inner.skipped.load(Ordering::Relaxed)
    }

    /// The sample order of `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut o: Vec<usize> = (0..self.inner.dataset.len()).collect();
        if self.inner.config.shuffle {
            Rng::new(self.inner.config.seed, epoch, 0, stream::SHUFFLE).shuffle(&mut o);
        }
        o
    }

    /// Iterates the batches of `epoch`.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        self.epoch_from(epoch, 0)
    }

    /// Iterates the batches of `epoch` from batch number `skip_batches` on (to resume).
    pub fn epoch_from(&self, epoch: u64, skip_batches: usize) -> EpochIter {
        let nb = self.batches_per_epoch();
        let (tx, rx) = sync_channel(self.inner.config.prefetch.max(1));
        let me = self.clone();
        let handle = std::thread::Builder::new()
            .name("densum-data-producer".into())
            .spawn(move || {
                let order = me.order(epoch);
                for b in skip_batches..nb {
                    let batch = me.make_batch(epoch, b, &order);
                    let failed = batch.is_err();
                    // A closed channel means the consumer dropped the iterator: stop.
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the loader thread");
        EpochIter {
            rx: Some(rx),
            handle: Some(handle),
        }
    }

    /// Builds batch `b` of `epoch` directly (no prefetching), given that epoch's order.
    pub fn make_batch(&self, epoch: u64, b: usize, order: &[usize]) -> Result<Batch> {
        let inner = &*self.inner;
        let bs = inner.config.batch_size;
        let start = b * bs;
        if start >= order.len() {
            return Err(Error::Invalid(format!(
                "batch {b} is past the end of the epoch"
            )));
        }
        let indices: Vec<usize> = order[start..(start + bs).min(order.len())].to_vec();
        let out_size = inner
            .augment
            .config()
            .output_size(inner.dataset.image_size());
        let (h, w, mut images, results) = match out_size {
            Some((h, w)) => {
                let per = 3 * h as usize * w as usize;
                let mut images = vec![0f32; per * indices.len()];
                let results: Vec<Result<usize>> = inner.pool.install(|| {
                    images
                        .par_chunks_mut(per)
                        .zip(indices.par_iter())
                        .map(|(out, &i)| self.sample_into(epoch, i, out))
                        .collect()
                });
                (h as usize, w as usize, images, results)
            }
            None => self.variable_size_batch(epoch, &indices)?,
        };
        let per = 3 * h * w;
        let mut labels = Vec::with_capacity(indices.len());
        let mut kept = Vec::with_capacity(indices.len());
        let mut skipped = Vec::new();
        for (k, (r, &i)) in results.into_iter().zip(&indices).enumerate() {
            match r {
                Ok(l) => {
                    // Compact in place: move this sample down over skipped ones.
                    let dst = kept.len();
                    if dst != k {
                        images.copy_within(k * per..(k + 1) * per, dst * per);
                    }
                    labels.push(l as i64);
                    kept.push(i);
                }
                Err(e) if inner.config.skip_corrupt => skipped.push((i, e.to_string())),
                Err(e) => return Err(e),
            }
        }
        images.truncate(kept.len() * per);
        inner.skipped.fetch_add(skipped.len(), Ordering::Relaxed);
        Ok(Batch {
            images,
            labels,
            shape: [kept.len(), 3, h, w],
            indices: kept,
            batch: b,
            skipped,
        })
    }

    /// Decodes and augments sample `i` into `out`; returns its label.
    fn sample_into(&self, epoch: u64, i: usize, out: &mut [f32]) -> Result<usize> {
        let inner = &*self.inner;
        let s = inner.dataset.get(i)?;
        let mut rng = Rng::new(inner.config.seed, epoch, i as u64, stream::AUGMENT);
        inner
            .augment
            .apply_into(&s.image, &mut rng, &inner.lut, out)
            .map_err(|e| Error::Invalid(format!("{}: {e}", inner.dataset.item_name(i))))?;
        Ok(s.label)
    }

    /// Slow path when the output size is only known after decoding (e.g. `resize` without
    /// a crop on images of varying sizes): all samples of a batch must agree.
    #[allow(clippy::type_complexity)]
    fn variable_size_batch(
        &self,
        epoch: u64,
        indices: &[usize],
    ) -> Result<(usize, usize, Vec<f32>, Vec<Result<usize>>)> {
        let inner = &*self.inner;
        let each: Vec<Result<(usize, usize, Vec<f32>, usize)>> = inner.pool.install(|| {
            indices
                .par_iter()
                .map(|&i| {
                    let s = inner.dataset.get(i)?;
                    let (h, w) = inner.augment.output_size_for(s.image.height, s.image.width);
                    let mut out = vec![0f32; 3 * h as usize * w as usize];
                    let mut rng = Rng::new(inner.config.seed, epoch, i as u64, stream::AUGMENT);
                    inner
                        .augment
                        .apply_into(&s.image, &mut rng, &inner.lut, &mut out)?;
                    Ok((h as usize, w as usize, out, s.label))
                })
                .collect()
        });
        let Some((h, w)) = each
            .iter()
            .find_map(|r| r.as_ref().ok().map(|r| (r.0, r.1)))
        else {
            // Every sample failed: report them through the normal path.
            return Ok((
                0,
                0,
                Vec::new(),
                each.into_iter().map(|r| r.map(|r| r.3)).collect(),
            ));
        };
        let mut images = Vec::with_capacity(3 * h * w * indices.len());
        let mut results = Vec::with_capacity(indices.len());
        for (r, &i) in each.into_iter().zip(indices) {
            match r {
                Ok((rh, rw, px, l)) if (rh, rw) == (h, w) => {
                    images.extend_from_slice(&px);
                    results.push(Ok(l));
                }
                Ok((rh, rw, ..)) => {
                    return Err(Error::Invalid(format!(
                        "{}: augmented to {rw}x{rh} but the batch is {w}x{h}; add a crop to a fixed size (e.g. preset imagenet-eval)",
                        inner.dataset.item_name(i)
                    )));
                }
                Err(e) => {
                    images.resize(images.len() + 3 * h * w, 0.0);
                    results.push(Err(e));
                }
            }
        }
        Ok((h, w, images, results))
    }
}

/// The batches of one epoch, produced ahead by a background thread.
///
/// Yields `Err` at most once, then ends. Dropping it stops the producer.
pub struct EpochIter {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        // Close the channel first so a producer blocked on a full channel wakes and exits.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
