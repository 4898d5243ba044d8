//! Batch normalisation (optionally fused with the ReLU that follows it) as single passes over
//! the activation on the Flex (CPU) backend.
//!
//! Why: Burn 0.22 composes `batch_norm_train` and its backward out of about ten elementwise
//! operations, reductions and dimension swaps (each a full pass over the activation, several
//! with a layout copy), and the ReLU after it adds a forward pass, a mask and a backward pass.
//! In a ResNet-50 training step on Flex these passes cost about as much as all convolution
//! forwards (docs/results/profile.md). Here:
//!
//! - statistics: one parallel pass over the activation in memory order (each plane's shifted
//!   sums, combined per channel with Chan et al.'s formula; biased variance, as Burn);
//! - forward: `y = max(0, x·s + t)` per channel with `s = γ/σ`, `t = β − μ·s`, one pass;
//! - backward: one reduction pass (`Σg`, `Σg·x̂`, where `g` is the output gradient masked by
//!   `y > 0` when fused with ReLU), one elementwise pass for `dx`.
//!
//! Parameter-free GroupNorm (DSNet's shortcut normalisation) is fused the same way: one
//! parallel task per (image, group) block for its statistics and output, one for the backward
//! (`x̂` is the output itself). For inference, [`conv_bn_forward`] folds a batch norm into the
//! convolution before it (the affine map of [`FastConvBackend::fast_conv2d_affine`]).
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
use burn::tensor::Tensor;
use rayon::prelude::*;

use std::mem::MaybeUninit;

use burn::nn::conv::Conv2d;

use super::buffer::{assume_init, uninit_buffer};
use super::conv::{FastConvBackend, conv_forward, fast_conv_options};
use super::lanes::{lane_sum, lane_sums2, relu_mask};
use super::probe::{self, Kernel};
use super::tensor::{flex, values};
use super::{Op, applies, chosen};

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

    /// GroupNorm without affine parameters: `(x − μ_g) / sqrt(σ²_g + ε)` per image and group
    /// of `C / groups` channels (DSNet's shortcut normalisation).
    fn group_norm_free(x: FloatTensor<Self>, groups: usize, epsilon: f64) -> FloatTensor<Self>;
}

/// `[N, C, spatial]` of a tensor of rank ≥ 2.
fn ncs(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

/// Planes per parallel task: enough work (about 16k values) that scheduling does not show.
fn planes_per_task(s: usize) -> usize {
    (16384 / s.max(1)).max(1)
}

/// `f` of every `s`-long plane of `x` (in memory order, so the traversal is one stream the
/// prefetcher follows; walking one channel's planes across the batch jumps a page per plane).
fn per_plane<T: Send>(x: &[f32], s: usize, f: impl Fn(usize, &[f32]) -> T + Sync) -> Vec<T> {
    x.par_chunks(s.max(1))
        .with_min_len(planes_per_task(s))
        .enumerate()
        .map(|(plane, p)| f(plane, p))
        .collect()
}

/// Per-channel mean and biased variance in one pass over the activation: each plane's sum
/// and sum of squares of `x − x₀` (shifted by its first value, so that f32 lanes do not
/// cancel when the mean is large against the spread), then combined per channel across the
/// batch, in order, with Chan et al.'s pairwise formula in f64.
fn stats_kernel(x: &[f32], (n, c, s): (usize, usize, usize)) -> Vec<f32> {
    probe::hit(Kernel::BatchNormStats);
    // (plane mean, plane M2) of every plane.
    let planes = per_plane(x, s, |_, p| {
        let Some(&x0) = p.first() else {
            return (0.0, 0.0);
        };
        let (sum, sq) = lane_sums2(p, p, p, |v, _, _| (v - x0, (v - x0) * (v - x0)));
        let k = s as f64;
        (x0 as f64 + sum / k, sq - sum * sum / k)
    });
    let per: Vec<(f32, f32)> = (0..c)
        .map(|ci| {
            // (count, mean, M2) of the planes seen so far.
            let (mut count, mut mean, mut m2) = (0f64, 0f64, 0f64);
            let k = s as f64;
            // No planes at all when they are empty (s = 0).
            for &(p_mean, p_m2) in (0..n).filter_map(|ni| planes.get(ni * c + ci)) {
                let total = count + k;
                let delta = p_mean - mean;
                mean += delta * k / total;
                m2 += p_m2 + delta * delta * count * k / total;
                count = total;
            }
            let var = if count > 0.0 { m2 / count } else { 0.0 };
            (mean as f32, var.max(0.0) as f32)
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
    probe::hit(Kernel::BatchNormApply);
    let inv = inv_std(stats, c, epsilon);
    let scale: Vec<f32> = (0..c).map(|i| gamma[i] * inv[i]).collect();
    let shift: Vec<f32> = (0..c).map(|i| beta[i] - stats[i] * scale[i]).collect();
    let mut out = uninit_buffer(n * c * s);
    out.par_chunks_mut(s.max(1))
        .zip(x.par_chunks(s.max(1)))
        .enumerate()
        .for_each(|(plane, (o, xs))| {
            let (a, b) = (scale[plane % c], shift[plane % c]);
            if relu {
                o.iter_mut()
                    .zip(xs)
                    .for_each(|(o, &v)| *o = MaybeUninit::new((v * a + b).max(0.0)));
            } else {
                o.iter_mut()
                    .zip(xs)
                    .for_each(|(o, &v)| *o = MaybeUninit::new(v * a + b));
            }
        });
    // SAFETY: every plane of `out` was written above.
    unsafe { assume_init(out) }
}

/// `(dx, dγ, dβ)` of [`apply_kernel`] with batch statistics.
#[allow(clippy::too_many_arguments)]
fn backward_kernel(
    x: &[f32],
    gamma: &[f32],
    stats: &[f32],
    out: Option<&[f32]>,
    dy: &[f32],
    epsilon: f64,
    relu: bool,
    (n, c, s): (usize, usize, usize),
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    probe::hit(Kernel::BatchNormBackward);
    let inv = inv_std(stats, c, epsilon);
    // The output gradient masked by the ReLU (`out` is only kept when fused with one) is
    // recomputed in both passes rather than stored: two passes over the activation, no copy.
    let mask = out.filter(|_| relu);
    // Σg and Σg·(x − μ) per plane, in memory order, then Σg and Σg·x̂ per channel.
    let planes = per_plane(dy, s, |plane, g| {
        let off = plane * s;
        let (xs, mean) = (&x[off..off + s], stats[plane % c]);
        match mask {
            Some(o) => lane_sums2(g, xs, &o[off..off + s], |g, v, o| {
                let g = relu_mask(g, o);
                (g, g * (v - mean))
            }),
            None => lane_sums2(g, xs, xs, |g, v, _| (g, g * (v - mean))),
        }
    });
    let sums: Vec<(f64, f64)> = (0..c)
        .map(|ci| {
            let (sg, sgx) = (0..n)
                .filter_map(|ni| planes.get(ni * c + ci))
                .fold((0.0, 0.0), |acc, p| (acc.0 + p.0, acc.1 + p.1));
            (sg, sgx * inv[ci] as f64)
        })
        .collect();
    let count = (n * s).max(1) as f64;
    let mut dx = uninit_buffer(n * c * s);
    dx.par_chunks_mut(s.max(1))
        .enumerate()
        .for_each(|(plane, d)| {
            let ci = plane % c;
            let off = plane * s;
            let (g, xs) = (&dy[off..off + s], &x[off..off + s]);
            let (mean, is) = (stats[ci], inv[ci]);
            let k = gamma[ci] * is;
            let mg = (sums[ci].0 / count) as f32;
            let mgx = (sums[ci].1 / count) as f32;
            let value = |g: f32, v: f32| k * (g - mg - (v - mean) * is * mgx);
            match mask {
                Some(o) => {
                    for ((d, (&g, &v)), &o) in
                        d.iter_mut().zip(g.iter().zip(xs)).zip(&o[off..off + s])
                    {
                        *d = MaybeUninit::new(value(if o > 0.0 { g } else { 0.0 }, v));
                    }
                }
                None => {
                    for (d, (&g, &v)) in d.iter_mut().zip(g.iter().zip(xs)) {
                        *d = MaybeUninit::new(value(g, v));
                    }
                }
            }
        });
    // SAFETY: every plane of `dx` was written above.
    let dx = unsafe { assume_init(dx) };
    let dgamma = sums.iter().map(|p| p.1 as f32).collect();
    let dbeta = sums.iter().map(|p| p.0 as f32).collect();
    (dx, dgamma, dbeta)
}

/// Parameter-free group norm: output and the inverse deviation of each (image, group) block
/// (the backward pass needs nothing else, since the output is x̂ itself).
fn group_norm_kernel(x: &[f32], blocks: usize, epsilon: f64) -> (Vec<f32>, Vec<f32>) {
    probe::hit(Kernel::GroupNorm);
    let len = x.len() / blocks.max(1);
    let mut out = uninit_buffer(x.len());
    let inv: Vec<f32> = out
        .par_chunks_mut(len.max(1))
        .zip(x.par_chunks(len.max(1)))
        .map(|(o, xs)| {
            let n = len.max(1) as f64;
            let mean = lane_sum(xs, xs, |v, _| v) / n;
            let m = mean as f32;
            let var = lane_sum(xs, xs, |v, _| (v - m) * (v - m)) / n;
            let inv = 1.0 / (var + epsilon).sqrt();
            let (m, k) = (mean as f32, inv as f32);
            o.iter_mut()
                .zip(xs)
                .for_each(|(o, &v)| *o = MaybeUninit::new((v - m) * k));
            k
        })
        .collect();
    // SAFETY: every block of `out` was written above.
    (unsafe { assume_init(out) }, inv)
}

/// `dx = σ⁻¹ (g − mean(g) − x̂ · mean(g · x̂))` per block.
fn group_norm_backward_kernel(out: &[f32], inv: &[f32], dy: &[f32]) -> Vec<f32> {
    probe::hit(Kernel::GroupNormBackward);
    let len = out.len() / inv.len().max(1);
    let mut dx = uninit_buffer(out.len());
    dx.par_chunks_mut(len.max(1))
        .zip(out.par_chunks(len.max(1)).zip(dy.par_chunks(len.max(1))))
        .zip(inv.par_iter())
        .for_each(|((d, (o, g)), &k)| {
            let sg = lane_sum(g, g, |v, _| v);
            let sgx = lane_sum(g, o, |g, o| g * o);
            let (mg, mgx) = ((sg / len as f64) as f32, (sgx / len as f64) as f32);
            for ((d, &o), &g) in d.iter_mut().zip(o).zip(g) {
                *d = MaybeUninit::new(k * (g - mg - o * mgx));
            }
        });
    // SAFETY: every block of `dx` was written above.
    unsafe { assume_init(dx) }
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

    fn group_norm_free(x: FlexTensor, groups: usize, epsilon: f64) -> FlexTensor {
        let shape = x.shape().to_vec();
        let (out, _) = group_norm_kernel(&values(&x), shape[0] * groups, epsilon);
        flex(out, shape)
    }
}

/// Saved for the backward pass: input, γ, statistics, output when fused with ReLU (all
/// shared, not copied).
type NormState = (
    FlexTensor,
    FlexTensor,
    FlexTensor,
    Option<FlexTensor>,
    f64,
    bool,
);

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
        let out = out.as_ref().map(values);
        let (dx, dgamma, dbeta) = backward_kernel(
            &values(&x),
            &values(&gamma),
            &values(&stats),
            out.as_deref(),
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

#[derive(Debug)]
struct GroupNormBackward;

impl Backward<Flex, 1> for GroupNormBackward {
    /// Output (= x̂) and the per-block inverse deviations.
    type State = (FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (out, inv) = ops.state;
        if let Some(node) = node_x {
            let dx = group_norm_backward_kernel(&values(&out), &inv, &values(&grad));
            grads.register::<Flex>(node.id, flex(dx, out.shape().to_vec()));
        }
    }
}

impl<C: CheckpointStrategy> FastNormBackend for Autodiff<Flex, C> {
    fn group_norm_free(x: FloatTensor<Self>, groups: usize, epsilon: f64) -> FloatTensor<Self> {
        match GroupNormBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let shape = x.shape().to_vec();
                let (out, inv) = group_norm_kernel(&values(&x), shape[0] * groups, epsilon);
                let out = flex(out, shape);
                prep.finish((out.clone(), inv), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::group_norm_free(x.into_primitive(), groups, epsilon))
            }
        }
    }

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
                // The output is only needed for the ReLU mask; without ReLU keeping it would
                // hold a whole activation the generic path frees.
                let kept = if relu { Some(out.clone()) } else { None };
                prep.finish((x, g, stats, kept, epsilon, relu), out)
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

/// `bn.forward(x)`, followed by ReLU when `relu`, fused into one operation on Flex.
pub fn batch_norm_forward(bn: &BatchNorm, x: Tensor<4>, relu: bool) -> Tensor<4> {
    batch_norm_forward_with(bn, x, relu, None)
}

/// [`batch_norm_forward`] with the training batch's statistics already `known` (`[mean;
/// biased variance]` per channel, as [`batch_stats`] gives), used where the fused batch norm
/// runs in training (the running statistics are updated from them); ignored otherwise.
pub fn batch_norm_forward_with(
    bn: &BatchNorm,
    x: Tensor<4>,
    relu: bool,
    known: Option<Tensor<2>>,
) -> Tensor<4> {
    // The fused backward differentiates through batch statistics; with running statistics
    // on an autodiff device (evaluation mode with gradients, as Grad-CAM) the gradient is
    // Burn's inference-mode one, a per-channel scale.
    let running_with_grad = x.device().is_autodiff() && !bn.training.is_enabled();
    if !applies(Op::Norm, &x) || running_with_grad {
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
        let stats = known.unwrap_or_else(|| batch_stats(&x));
        update_running_stats(bn, &stats);
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

/// Per-channel `[mean; biased variance]` `[2, C]` of `x` (detached), on Flex.
pub(crate) fn batch_stats(x: &Tensor<4>) -> Tensor<2> {
    Tensor::<2>::from_dispatch(<Dispatch as FastNormBackend>::batch_norm_stats(
        x.clone().detach().into_dispatch(),
    ))
}

/// Updates `bn`'s running statistics from a training batch's `stats` (`[2, C]` from
/// [`batch_stats`]) exactly as Burn's `BatchNorm::forward_train` does.
pub(crate) fn update_running_stats(bn: &BatchNorm, stats: &Tensor<2>) {
    let device = stats.device();
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
}

/// `gn.forward(x)`, as one fused operation on Flex when the norm has no affine parameters
/// (and, with feature `onnx`, composed of exportable operations while tracing for ONNX:
/// `crate::export::group_norm_traceable`).
pub fn group_norm_forward(gn: &burn::nn::GroupNorm, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "onnx")]
    if crate::export::tracing() {
        return crate::export::group_norm_traceable(gn, x);
    }
    if gn.gamma.is_some() || gn.beta.is_some() || !applies(Op::Norm, &x) {
        return gn.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as FastNormBackend>::group_norm_free(
        x.into_dispatch(),
        gn.num_groups,
        gn.epsilon,
    ))
}

/// `bn(conv(x))`, then ReLU when `relu`: a convolution and the batch norm that follows it.
///
/// For inference on Flex (no autodiff) the norm's running statistics fold into a per-channel
/// scale and shift applied to each image's convolution output while it is in cache, one pass
/// over the activation fewer. Otherwise, and whenever gradients may be needed (an autodiff
/// device, even in eval mode, e.g. for Grad-CAM), it is [`conv_forward`] then
/// [`batch_norm_forward`].
pub fn conv_bn_forward(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>, relu: bool) -> Tensor<4> {
    let options = fast_conv_options(conv);
    match options {
        Some(options)
            if applies(Op::Norm, &x)
                && chosen(Op::Conv, &x.device())
                && !x.device().is_autodiff() =>
        {
            let device = x.device();
            let var = bn.running_var.value().to_device(&device);
            let mean = bn.running_mean.value().to_device(&device);
            let scale = bn.gamma.val() / var.add_scalar(bn.epsilon).sqrt();
            let shift = bn.beta.val() - mean * scale.clone();
            Tensor::from_dispatch(<Dispatch as FastConvBackend>::fast_conv2d_affine(
                x.into_dispatch(),
                conv.weight.val().into_dispatch(),
                scale.into_dispatch(),
                shift.into_dispatch(),
                options,
                relu,
            ))
        }
        _ => batch_norm_forward(bn, conv_forward(conv, x), relu),
    }
}
