//! Grad-CAM (Selvaraju et al. 2017): where in the image a network's evidence for a class lies,
//! from the gradient of the class score with respect to one feature map.
//!
//! Computed exactly as pytorch-grad-cam's `GradCAM` does for one target layer and
//! `ClassifierOutputTarget`s (tools/make_gradcam_fixture.py is the PyTorch reference the tests
//! compare with):
//!
//! 1. the network in evaluation mode (BatchNorm running statistics, no dropout);
//!    A = feature level `level`'s map `[N, C, h, w]` (see [`crate::features`]: `layer{i}` is
//!    stage i's output, the last with the final BN-ReLU);
//! 2. score = Σ_n logits[n, c_n]: the raw logit (no softmax) of class c_n, the requested class
//!    or each image's arg-max ([`Target::Top`]); one backward pass gives dA = ∂score/∂A;
//! 3. α[n, c] = mean over the h·w positions of dA[n, c];
//! 4. cam[n] = ReLU(Σ_c α[n, c] · A[n, c]) — [`GradCam::cam`], at the feature resolution;
//! 5. per image: subtract its minimum, divide by 1e-7 + its (new) maximum;
//! 6. bilinear resize to the input size (half-pixel centres, edges clamped: OpenCV's
//!    `INTER_LINEAR`, PyTorch's `interpolate(mode="bilinear", align_corners=False)`);
//! 7. per image again: ReLU, subtract the minimum, divide by 1e-7 + the maximum (the
//!    library's aggregation over target layers, of one layer here) — [`GradCam::maps`],
//!    in [0, 1].
//!
//! Only the part of the network after A runs with autodiff: A is computed without it and
//! enters the rest as a leaf that requires its gradient; the parameters stay constants.

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};

use crate::block::Block;
use crate::error::{DensumError, Result};
use crate::net::Net;

/// Which class's evidence to map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Each image's most probable class.
    Top,
    /// This class for every image.
    Class(usize),
}

impl Target {
    /// `top` or a class number.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "top" => Ok(Target::Top),
            _ => s.parse().map(Target::Class).map_err(|_| {
                DensumError::Config(format!("--class {s}: expected a class number or `top`"))
            }),
        }
    }
}

/// Grad-CAM of a batch.
#[derive(Clone, Debug)]
pub struct GradCam {
    /// The class mapped for each image.
    pub classes: Vec<usize>,
    /// Each image's logits.
    pub logits: Vec<Vec<f32>>,
    /// `[h, w]` of the feature map.
    pub cam_size: [usize; 2],
    /// Step 4 per image, row-major `h · w`: ReLU(Σ_c α_c A_c), not normalised.
    pub cam: Vec<Vec<f32>>,
    /// `[H, W]` of the input.
    pub map_size: [usize; 2],
    /// Step 7 per image, row-major `H · W`, in [0, 1].
    pub maps: Vec<Vec<f32>>,
}

fn values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| DensumError::Config(format!("reading a tensor: {e:?}")))
}

/// Grad-CAM of `net` for the images `x` (`[N, 3, H, W]`, normalised, on a device without
/// autodiff) at feature level `level` ([`Net::feature_level`] turns a layer name into one).
pub fn grad_cam(net: &Net, x: Tensor<4>, level: usize, target: Target) -> Result<GradCam> {
    let levels = net.feature_levels();
    if level >= levels {
        return Err(DensumError::Config(format!(
            "Grad-CAM: level {level} is not a feature level (0..={})",
            levels - 1
        )));
    }
    // Evaluation mode: running statistics in BatchNorm (the autodiff leaf below would
    // otherwise switch them to batch statistics), no dropout or drop path.
    let mut net = net.valid();
    for stage in &mut net.layers {
        for block in &mut stage.blocks {
            // Recomputation only changes what training keeps; here it would mix the
            // parameters (constants) into checkpointed autodiff operations.
            if let Block::DenseLayer(d) = block {
                d.memory_efficient = false;
            }
        }
    }
    let [n, _, height, width] = x.dims();
    let a = net
        .forward_levels(x.without_autodiff(), level)
        .pop()
        .expect("level 0 always exists");
    let [_, _, h, w] = a.dims();
    let leaf = a.clone().autodiff().require_grad();
    let logits = net.forward_from_level(level, leaf.clone());
    let [_, k] = logits.dims();
    let rows = values(logits.clone().without_autodiff())?;
    let logits_per_image: Vec<Vec<f32>> = rows.chunks(k).map(<[f32]>::to_vec).collect();
    let classes: Vec<usize> = match target {
        Target::Class(c) if c >= k => {
            return Err(DensumError::Config(format!(
                "--class {c}: the network has {k} classes (0..={})",
                k - 1
            )));
        }
        Target::Class(c) => vec![c; n],
        Target::Top => logits_per_image
            .iter()
            .map(|row| {
                // First maximum, as numpy's and PyTorch's argmax.
                (0..k).fold(0, |best, i| if row[i] > row[best] { i } else { best })
            })
            .collect(),
    };
    let mut onehot = vec![0f32; n * k];
    for (i, &c) in classes.iter().enumerate() {
        onehot[i * k + c] = 1.0;
    }
    let device = leaf.device();
    let mask = Tensor::<2>::from_data(TensorData::new(onehot, [n, k]), &device);
    let grads = (logits * mask).sum().backward();
    let grad = leaf.grad(&grads).ok_or_else(|| {
        DensumError::Config("Grad-CAM: the feature map received no gradient".into())
    })?;
    let alpha = grad.mean_dim(3).mean_dim(2);
    let cam = burn::tensor::activation::relu((a * alpha.without_autodiff()).sum_dim(1));
    let cam = values(cam.reshape([n, h * w]))?;
    let cam: Vec<Vec<f32>> = cam.chunks(h * w).map(<[f32]>::to_vec).collect();
    let maps = cam
        .iter()
        .map(|c| {
            let up = resize_bilinear(&normalise(c.clone()), [h, w], [height, width]);
            normalise(up.into_iter().map(|v| v.max(0.0)).collect())
        })
        .collect();
    Ok(GradCam {
        classes,
        logits: logits_per_image,
        cam_size: [h, w],
        cam,
        map_size: [height, width],
        maps,
    })
}

/// Steps 5 and 7: `(v - min) / (1e-7 + max(v - min))`.
fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let min = v.iter().copied().fold(f32::INFINITY, f32::min);
    v.iter_mut().for_each(|x| *x -= min);
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    v.iter_mut().for_each(|x| *x /= 1e-7 + max);
    v
}

/// Bilinear resize of a row-major `from` map to `to`, half-pixel centres and clamped edges
/// (PyTorch's `align_corners=False`).
pub fn resize_bilinear(src: &[f32], from: [usize; 2], to: [usize; 2]) -> Vec<f32> {
    // Source coordinate and weights along one axis, for each output index.
    let axis = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let s = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let ys = axis(from[0], to[0]);
    let xs = axis(from[1], to[1]);
    let at = |y: usize, x: usize| src[y * from[1] + x];
    let mut out = Vec::with_capacity(to[0] * to[1]);
    for &(y0, y1, ly) in &ys {
        for &(x0, x1, lx) in &xs {
            let top = at(y0, x0) * (1.0 - lx) + at(y0, x1) * lx;
            let bottom = at(y1, x0) * (1.0 - lx) + at(y1, x1) * lx;
            out.push(top * (1.0 - ly) + bottom * ly);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_half_pixel_interpolation() {
        // PyTorch: F.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), size=(4, 4),
        // mode="bilinear", align_corners=False)[0, 0, 0] = [0, 0.25, 0.75, 1].
        let out = resize_bilinear(&[0.0, 1.0, 2.0, 3.0], [2, 2], [4, 4]);
        assert_eq!(&out[..4], &[0.0, 0.25, 0.75, 1.0]);
        assert_eq!(&out[4..8], &[0.5, 0.75, 1.25, 1.5]);
        assert_eq!(out[15], 3.0);
    }

    #[test]
    fn normalise_spans_zero_to_one() {
        let v = normalise(vec![2.0, 4.0, 3.0]);
        assert_eq!(v[0], 0.0);
        assert!((v[1] - 1.0).abs() < 1e-6 && (v[2] - 0.5).abs() < 1e-6);
        assert!(Target::parse("x").is_err());
        assert_eq!(Target::parse("7").unwrap(), Target::Class(7));
    }
}
