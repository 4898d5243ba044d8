//! Classifying image files (`densum predict`): images into the network's input, a network
//! run batch by batch, logits into top-k classes with the dataset's class names.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use image::imageops::FilterType;

use crate::error::{DensumError, Result};
use crate::net::Net;
use crate::weights::FileInfo;
use crate::zoo::{self, Dataset, ModelSpec};

/// Images per forward pass unless asked otherwise: large enough to use the cores, small
/// enough that a folder of thousands of images stays within memory.
pub const DEFAULT_BATCH: usize = 64;

/// The model a weight file at `path` (described by `file`) is loaded as: `requested` when
/// given, which must then be the model the file records (if it records one); else the
/// file's own.
pub fn model_for(file: &FileInfo, requested: Option<&str>, path: &Path) -> Result<String> {
    match (requested, &file.model) {
        (Some(m), Some(recorded)) if zoo::find(m)?.name != *recorded => Err(DensumError::weights(
            path,
            format!("the file holds model `{recorded}`, not `{m}`"),
        )),
        (Some(m), _) => Ok(m.to_string()),
        (None, Some(m)) => Ok(m.clone()),
        (None, None) => Err(DensumError::weights(
            path,
            "the file records no model name; pass --model",
        )),
    }
}

/// Human-readable class names where the dataset has a short, fixed list of `classes`
/// classes (CIFAR-10, SVHN digits); empty otherwise.
pub fn class_names(dataset: Dataset, classes: usize) -> Vec<&'static str> {
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

/// The logits of every image, in order, from `net` built as `spec`, running `batch` images
/// at a time (at least 1): only one batch of decoded images is in memory at once, and
/// results do not depend on the batch size (evaluation mode treats images independently).
pub fn classify(
    net: &Net,
    spec: &ModelSpec,
    images: &[PathBuf],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    if batch_size == 0 {
        return Err(DensumError::Config(
            "the batch size must be at least 1".into(),
        ));
    }
    let size = spec.input_size;
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch_size) {
        let pixels = chunk
            .iter()
            .map(|p| load_image(p, size, spec.dataset))
            .collect::<Result<Vec<_>>>()?;
        let logits = net.forward(batch(&pixels, size, device));
        let [n, k] = logits.dims();
        let values = logits
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| DensumError::Config(format!("reading logits: {e:?}")))?;
        out.extend((0..n).map(|i| values[i * k..(i + 1) * k].to_vec()));
    }
    Ok(out)
}

/// Decodes an image file (PNG or JPEG) to RGB and prepares it for a network with input side
/// `size`: an image of exactly `size` x `size` is used as it is; any other is resized so its
/// shorter side is `size` (bilinear, as torchvision's `Resize`) and centre-cropped to
/// `size` x `size`. Pixels are scaled to [0, 1] and normalised with `dataset`'s constants.
/// Returns `[3, size, size]` values, channel-major.
pub fn load_image(path: &Path, size: usize, dataset: Dataset) -> Result<Vec<f32>> {
    let bad = |m: String| DensumError::Image {
        path: path.to_path_buf(),
        message: m,
    };
    let bytes = std::fs::read(path).map_err(|e| DensumError::io(path, e))?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| bad(format!("cannot decode: {e}")))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(bad("image has no pixels".into()));
    }
    let s = size as u32;
    let img = if (w, h) == (s, s) {
        img
    } else {
        let (nw, nh) = if w <= h {
            (s, ((h as u64 * s as u64) / w as u64).max(s as u64) as u32)
        } else {
            (((w as u64 * s as u64) / h as u64).max(s as u64) as u32, s)
        };
        let resized = image::imageops::resize(&img, nw, nh, FilterType::Triangle);
        let (x0, y0) = ((nw - s) / 2, (nh - s) / 2);
        image::imageops::crop_imm(&resized, x0, y0, s, s).to_image()
    };
    let (mean, std) = dataset.normalization();
    let plane = size * size;
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    Ok(out)
}

/// Stacks prepared images into a `[N, 3, size, size]` tensor.
pub fn batch(images: &[Vec<f32>], size: usize, device: &Device) -> Tensor<4> {
    let data: Vec<f32> = images.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(data, [images.len(), 3, size, size]), device)
}

/// Softmax probabilities of one row of logits.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes of one row of logits: (class, probability), best first.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let p = softmax(logits);
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, p[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_probability() {
        let t = top_k(&[0.0, 3.0, 1.0], 2);
        assert_eq!(t[0].0, 1);
        assert_eq!(t[1].0, 2);
        assert!((softmax(&[1.0, 1.0])[0] - 0.5).abs() < 1e-6);
    }
}
