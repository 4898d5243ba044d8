//! # densum-data
//!
//! Datasets as researchers download them (CIFAR-10/100 binary and Python versions, folders
//! or `.tar.gz`; SVHN `.mat`; image folders; ImageNet validation as a flat folder plus
//! labels file), the papers' augmentations, and a parallel, deterministic batch loader that
//! yields normalised `f32` NCHW batches. No tensor library: the trainer wraps the buffers.
//!
//! ```no_run
//! use densum_data::{Augment, Loader, LoaderConfig, Normalize, Split, open, carve_val, ValSplit};
//! use std::sync::Arc;
//! let train: Arc<dyn densum_data::Dataset> = Arc::from(open("data/cifar-10-binary.tar.gz", Split::Train)?);
//! let (train, val) = carve_val(train, ValSplit::Count(5000), 0)?;
//! let loader = Loader::new(train, Augment::preset("cifar")?, Normalize::CIFAR10,
//!     LoaderConfig { batch_size: 128, seed: 42, ..Default::default() })?;
//! for batch in loader.epoch(0) {
//!     let batch = batch?; // batch.images: [N, 3, 32, 32] f32, batch.labels: i64
//! }
//! # let _ = val; Ok::<(), densum_data::Error>(())
//! ```

pub mod augment;
pub mod dataset;
pub mod download;
pub mod error;
pub mod formats;
pub mod inspect;
pub mod loader;
pub mod normalize;
pub mod rng;
pub mod split;

pub use augment::{Augment, AugmentConfig, Cutout, PadCrop, RandomResizedCrop};
pub use dataset::{Cached, Concat, Dataset, Format, Image, MemoryDataset, Sample, Split, Subset};
pub use download::{DownloadOptions, Remote, RemoteFile, download, download_file};
pub use error::{Error, Result};
pub use formats::{OpenOptions, available_splits, open, open_splits, open_with};
pub use inspect::{
    BenchReport, BenchSetup, DatasetInfo, VerifyReport, bench, bench_loader, describe, info, verify,
};
pub use loader::{Batch, EpochIter, Loader, LoaderConfig};
pub use normalize::Normalize;
pub use split::{ValSplit, carve_val, split_train_val};
