//! Batch normalisation (optionally fused with the ReLU that follows it) as single passes over
//! the activation on the Flex (CPU) backend.
//!
//! Why: Burn 0.22 composes `batch_norm_train` and its backward out of about ten elementwise
//! operations, reductions and dimension swaps (each a full pass over the activation, several
//! with a layout copy), and the ReLU after it adds a forward pass, a mask and a backward pass.
//! In a ResNet-50 training step on Flex these passes cost about as much as all convolution
//! forwards (docs/results/profile.md). Here:
//!
//! - statistics: one parallel pass per channel (mean, then biased variance, as Burn);
//! - forward: `y = max(0, x·s + t)` per channel with `s = γ/σ`, `t = β − μ·s`, one pass;
//! - backward: one reduction pass (`Σg`, `Σg·x̂`, where `g` is the output gradient masked by
//!   `y > 0` when fused with ReLU), one elementwise pass for `dx`.
//!
//! Mechanism: Burn's backend extension, implemented for `Flex` and `Autodiff<Flex, C>` (whose
//! backward is the fused kernel). Running statistics are updated exactly as Burn's
//! `BatchNorm::forward` does (momentum, biased variance). Other backends and dtypes use
//! `BatchNorm::forward` followed by `relu`; tests compare both paths.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::BatchNorm;
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

use super::fast_conv::values;

/// Fused batch-norm operations.
#[backend_extension(Flex, Autodiff)]
pub trait FastNormBackend: Backend {
    /// Per-channel mean (row 0) and biased variance (row 1) of `x` `[N, C, ...]`, as `[2, C]`.
    /// Not differentiable: the gradient through the statistics is part of
    /// [`batch_norm_apply`](Self::batch_norm_apply)'s backward.
    fn batch_norm_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `γ (x − μ) / sqrt(σ² + ε) + β` with `stats = [μ; σ²]`, then ReLU when `relu`.
    /// On `Autodiff` the statistics count as the batch's own (training-mode gradient).
    fn batch_norm_apply(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self>;
}

/// `[N, C, spatial]` of a tensor of rank ≥ 2.
fn ncs(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

fn stats_kernel(x: &[f32], (n, c, s): (usize, usize, usize)) -> Vec<f32> {
    let count = (n * s).max(1) as f64;
    let per: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ci| {
            let planes = || (0..n).map(move |ni| &x[(ni * c + ci) * s..][..s]);
            // f64 accumulation: long sums of f32 lose digits, Burn's result is the reference.
            let sum: f64 = planes()
                .map(|p| p.iter().map(|&v| v as f64).sum::<f64>())
                .sum();
            let mean = sum / count;
            let sq: f64 = planes()
                .map(|p| p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>())
                .sum();
            (mean as f32, (sq / count) as f32)
        })
        .collect();
    per.iter()
        .map(|p| p.0)
        .chain(per.iter().map(|p| p.1))
        .collect()
}

/// Per-channel scale `γ/σ` and inverse deviation `1/σ`.
fn inv_std(stats: &[f32], c: usize, epsilon: f64) -> Vec<f32> {
    stats[c..2 * c]
        .iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn apply_kernel(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    stats: &[f32],
    epsilon: f64,
    relu: bool,
    (n, c, s): (usize, usize, usize),
) -> Vec<f32> {
    let inv = inv_std(stats, c, epsilon);
    let scale: Vec<f32> = (0..c).map(|i| gamma[i] * inv[i]).collect();
    let shift: Vec<f32> = (0..c).map(|i| beta[i] - stats[i] * scale[i]).collect();
    let mut out = vec![0.0f32; n * c * s];
    out.par_chunks_mut(s.max(1))
        .zip(x.par_chunks(s.max(1)))
        .enumerate()
        .for_each(|(plane, (o, xs))| {
            let (a, b) = (scale[plane % c], shift[plane % c]);
            if relu {
                o.iter_mut()
                    .zip(xs)
                    .for_each(|(o, &v)| *o = (v * a + b).max(0.0));
            } else {
                o.iter_mut().zip(xs).for_each(|(o, &v)| *o = v * a + b);
            }
        });
    out
}

/// `(dx, dγ, dβ)` of [`apply_kernel`] with batch statistics.
#[allow(clippy::too_many_arguments)]
fn backward_kernel(
    x: &[f32],
    gamma: &[f32],
    stats: &[f32],
    out: &[f32],
    dy: &[f32],
    epsilon: f64,
    relu: bool,
    (n, c, s): (usize, usize, usize),
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let inv = inv_std(stats, c, epsilon);
    let masked = |o: f32, g: f32| if relu && o <= 0.0 { 0.0 } else { g };
    // Σg and Σg·x̂ per channel.
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ci| {
            let (mean, is) = (stats[ci], inv[ci]);
            let (mut sg, mut sgx) = (0f64, 0f64);
            for ni in 0..n {
                let off = (ni * c + ci) * s;
                let (mut a, mut b) = (0f32, 0f32);
                for i in off..off + s {
                    let g = masked(out[i], dy[i]);
                    a += g;
                    b += g * (x[i] - mean) * is;
                }
                sg += a as f64;
                sgx += b as f64;
            }
            (sg, sgx)
        })
        .collect();
    let count = (n * s).max(1) as f64;
    let mut dx = vec![0.0f32; n * c * s];
    dx.par_chunks_mut(s.max(1))
        .enumerate()
        .for_each(|(plane, d)| {
            let ci = plane % c;
            let (mean, is) = (stats[ci], inv[ci]);
            let k = gamma[ci] * is;
            let mg = (sums[ci].0 / count) as f32;
            let mgx = (sums[ci].1 / count) as f32;
            let off = plane * s;
            for (j, d) in d.iter_mut().enumerate() {
                let i = off + j;
                let g = masked(out[i], dy[i]);
                *d = k * (g - mg - (x[i] - mean) * is * mgx);
            }
        });
    let dgamma = sums.iter().map(|p| p.1 as f32).collect();
    let dbeta = sums.iter().map(|p| p.0 as f32).collect();
    (dx, dgamma, dbeta)
}

fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

impl FastNormBackend for Flex {
    fn batch_norm_stats(x: FlexTensor) -> FlexTensor {
        let dims = ncs(x.shape().as_slice());
        flex(stats_kernel(&values(&x), dims), vec![2, dims.1])
    }

    fn batch_norm_apply(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f64,
        relu: bool,
    ) -> FlexTensor {
        let shape = x.shape().to_vec();
        let out = apply_kernel(
            &values(&x),
            &values(&gamma),
            &values(&beta),
            &values(&stats),
            epsilon,
            relu,
            ncs(&shape),
        );
        flex(out, shape)
    }
}

/// Saved for the backward pass: input, γ, statistics, output (all shared, not copied).
type NormState = (FlexTensor, FlexTensor, FlexTensor, FlexTensor, f64, bool);

#[derive(Debug)]
struct FusedNormBackward;

impl Backward<Flex, 3> for FusedNormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, gamma, stats, out, epsilon, relu) = ops.state;
        let shape = x.shape().to_vec();
        let c = shape[1];
        let (dx, dgamma, dbeta) = backward_kernel(
            &values(&x),
            &values(&gamma),
            &values(&stats),
            &values(&out),
            &values(&grad),
            epsilon,
            relu,
            ncs(&shape),
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex(dx, shape));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex(dgamma, vec![c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex(dbeta, vec![c]));
        }
    }
}

impl<C: CheckpointStrategy> FastNormBackend for Autodiff<Flex, C> {
    fn batch_norm_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(Flex::batch_norm_stats(x.into_primitive()))
    }

    fn batch_norm_apply(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self> {
        let stats = stats.into_primitive();
        // The state holds plain tensors rather than checkpoints: recomputing the fused forward
        // would cost as much as keeping its output, which the next layer keeps anyway.
        match FusedNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, g, b) = (
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                );
                let out =
                    Flex::batch_norm_apply(x.clone(), g.clone(), b, stats.clone(), epsilon, relu);
                prep.finish((x, g, stats, out.clone(), epsilon, relu), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::batch_norm_apply(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                stats,
                epsilon,
                relu,
            )),
        }
    }
}

/// Whether the fused batch norm runs for `x`: Flex, with or without autodiff, f32.
pub fn fast_norm_applies(x: &Tensor<4>) -> bool {
    x.device().inner() == Device::flex() && x.dtype() == DType::F32
}

/// `bn.forward(x)`, followed by ReLU when `relu`, fused into one operation on Flex.
pub fn batch_norm_forward(bn: &BatchNorm, x: Tensor<4>, relu: bool) -> Tensor<4> {
    if !fast_norm_applies(&x) {
        let y = bn.forward(x);
        return if relu {
            burn::tensor::activation::relu(y)
        } else {
            y
        };
    }
    let device = x.device();
    let training = device.is_autodiff() && bn.training.is_enabled();
    let stats = if training {
        let stats = Tensor::<2>::from_dispatch(<Dispatch as FastNormBackend>::batch_norm_stats(
            x.clone().detach().into_dispatch(),
        ));
        // Running statistics exactly as Burn's `BatchNorm::forward_train` updates them.
        let m = bn.momentum;
        let [_, c] = stats.dims();
        let mean = stats.clone().narrow(0, 0, 1).reshape([c]);
        let var = stats.clone().narrow(0, 1, 1).reshape([c]);
        let rm = bn.running_mean.value_sync().to_device(&device);
        let rv = bn.running_var.value_sync().to_device(&device);
        bn.running_mean
            .update((rm.mul_scalar(1.0 - m) + mean.mul_scalar(m)).detach());
        bn.running_var
            .update((rv.mul_scalar(1.0 - m) + var.mul_scalar(m)).detach());
        stats
    } else {
        let mean = bn.running_mean.value().to_device(&device);
        let var = bn.running_var.value().to_device(&device);
        Tensor::stack::<2>(vec![mean, var], 0)
    };
    Tensor::from_dispatch(<Dispatch as FastNormBackend>::batch_norm_apply(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        stats.into_dispatch(),
        bn.epsilon,
        relu,
    ))
}
