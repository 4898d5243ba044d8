//! Connects the data pipeline (densum-data) to a model: opening the splits a config names,
//! checking them against the model, and turning batches into tensors.

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};
use densum_data::{Augment, Batch, Dataset, Loader, LoaderConfig, Normalize, Split, ValSplit};

use super::config::DataConfig;
use crate::error::{DensumError, Result};
use crate::zoo::ModelSpec;

fn data_err(e: densum_data::Error) -> DensumError {
    DensumError::Data(e.to_string())
}

/// The datasets of a run.
pub struct Splits {
    /// Training samples.
    pub train: Arc<dyn Dataset>,
    /// Validation samples, if any.
    pub val: Option<Arc<dyn Dataset>>,
}

/// Opens the training split and the validation data `cfg` names, and checks that their
/// classes fit the model.
pub fn open_splits(cfg: &DataConfig, spec: &ModelSpec, seed: u64) -> Result<Splits> {
    let split = Split::parse(&cfg.train_split).map_err(data_err)?;
    let train: Arc<dyn Dataset> = Arc::from(densum_data::open(&cfg.path, split).map_err(data_err)?);
    check_classes(train.as_ref(), spec)?;
    let (train, val) = if cfg.val.is_empty() {
        (train, None)
    } else if let Ok(v) = cfg.val.parse::<ValSplit>() {
        let (t, v) = densum_data::carve_val(train, v, seed).map_err(data_err)?;
        (t, Some(v))
    } else {
        let split = Split::parse(&cfg.val).map_err(data_err)?;
        let val: Arc<dyn Dataset> =
            Arc::from(densum_data::open(&cfg.path, split).map_err(data_err)?);
        check_classes(val.as_ref(), spec)?;
        (train, Some(val))
    };
    let train = match cfg.train_subset {
        Some(n) if n < train.len() => {
            // carve_val's stratified, seeded split doubles as a class-balanced subset.
            densum_data::carve_val(train, ValSplit::Count(n), seed ^ 0x5eed)
                .map_err(data_err)?
                .1
        }
        _ => train,
    };
    Ok(Splits { train, val })
}

fn check_classes(ds: &dyn Dataset, spec: &ModelSpec) -> Result<()> {
    let model = spec.config.num_classes;
    let data = ds.num_classes();
    if model != data {
        return Err(DensumError::Config(format!(
            "{} has {data} classes but {} is built with {model} (set --num-classes or --dataset)",
            ds.source(),
            spec.name
        )));
    }
    Ok(())
}

/// A loader with the dataset's normalisation and the given augmentation.
pub fn loader(
    ds: Arc<dyn Dataset>,
    augment: &str,
    cutout: Option<[u32; 2]>,
    spec: &ModelSpec,
    config: LoaderConfig,
) -> Result<Loader> {
    let mut aug = densum_data::AugmentConfig::preset(augment).map_err(data_err)?;
    if let Some([holes, length]) = cutout {
        aug = aug.with_cutout(holes, length);
    }
    let aug = Augment::new(aug).map_err(data_err)?;
    let norm = Normalize::by_name(spec.dataset.name()).map_err(data_err)?;
    Loader::new(ds, aug, norm, config).map_err(data_err)
}

/// A batch as input and label tensors on `device`. The pixels move into the tensor (no
/// copy on the training step); the batch keeps its labels for the caller.
pub fn tensors(batch: &mut Batch, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let images = std::mem::take(&mut batch.images);
    let x = Tensor::from_data(TensorData::new(images, batch.shape), device);
    let labels = TensorData::new(batch.labels.clone(), [batch.labels.len()]);
    (x, Tensor::from_data(labels, device))
}

/// Converts a loader error.
pub fn batch_err(e: densum_data::Error) -> DensumError {
    data_err(e)
}
