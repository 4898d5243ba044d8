//! Turning image files into the network's input, and logits into top-k classes.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::imageops::FilterType;

use crate::error::{DensumError, Result};
use crate::zoo::Dataset;

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
