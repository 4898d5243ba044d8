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
//! A post-activation block's last batch norm also takes the block's residual sum and ReLU
//! into its pass ([`batch_norm_sum_forward`]): `max(0, x·s + t + r)`, whose backward masks the
//! output gradient once and hands it to both the residual and the batch norm.
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
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::BatchNorm;
use burn::tensor::{Device, Tensor};
use rayon::prelude::*;

use std::mem::MaybeUninit;

use burn::nn::conv::Conv2d;

use super::buffer::{assume_init, assume_init_mut, uninit_buffer};
use super::conv::{FastConvBackend, conv_forward, fast_conv_options};
use super::eltwise::add_relu;
use super::epilogue::Epilogue;
use super::lanes::{f32x8, lane_sum, lane_sums2, relu_mask};
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

    /// `max(0, γ (x − μ) / sqrt(σ² + ε) + β + residual)` (ReLU when `relu`), `stats` as in
    /// [`batch_norm_apply`](Self::batch_norm_apply): a post-activation block's last batch
    /// norm with the block's residual sum and ReLU, one pass over the activation instead of
    /// three.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_apply_sum(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        residual: FloatTensor<Self>,
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

/// The batch norm as a per-channel affine map `x·scale + shift`: `scale = γ/σ`, `shift = β −
/// μ·scale`. The forward and the backward's recomputed ReLU mask both take it from here, so
/// they agree to the bit.
fn affine(gamma: &[f32], beta: &[f32], stats: &[f32], epsilon: f64) -> (Vec<f32>, Vec<f32>) {
    let c = gamma.len();
    let inv = inv_std(stats, c, epsilon);
    let scale: Vec<f32> = (0..c).map(|i| gamma[i] * inv[i]).collect();
    let shift: Vec<f32> = (0..c).map(|i| beta[i] - stats[i] * scale[i]).collect();
    (scale, shift)
}

/// `f(x·scale + shift + residual)` per channel with the batch norm's scale and shift; the
/// residual (shaped like `x`) only for [`FastNormBackend::batch_norm_apply_sum`].
#[allow(clippy::too_many_arguments)]
fn apply_kernel(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    stats: &[f32],
    residual: Option<&[f32]>,
    epsilon: f64,
    relu: bool,
    (n, c, s): (usize, usize, usize),
) -> Vec<f32> {
    probe::hit(match residual {
        Some(_) => Kernel::BatchNormSum,
        None => Kernel::BatchNormApply,
    });
    let (scale, shift) = affine(gamma, beta, stats, epsilon);
    let epilogue = Epilogue {
        scale: &scale,
        shift: &shift,
        residual,
        relu,
    };
    let mut out = uninit_buffer(n * c * s);
    out.par_chunks_mut(s.max(1))
        .zip(x.par_chunks(s.max(1)))
        .enumerate()
        .for_each(|(plane, (o, xs))| epilogue.apply_one(plane % c, xs, o, plane * s));
    // SAFETY: every plane of `out` was written above.
    unsafe { assume_init(out) }
}

/// The output gradient [`backward_kernel`] starts from.
#[derive(Clone, Copy)]
enum OutputGrad<'a> {
    /// As given: no ReLU after the batch norm.
    Plain(&'a [f32]),
    /// Through the ReLU that followed the batch norm alone (β given): its mask recomputed from
    /// the input, `x·scale + shift > 0` with [`affine`]'s values, exactly the forward's output
    /// being positive.
    Relu(&'a [f32], &'a [f32]),
    /// Through the ReLU that followed the batch norm and a residual sum (its output given):
    /// the masked gradient is the residual's gradient too, so the kernel also returns it.
    SumRelu(&'a [f32], &'a [f32]),
}

impl<'a> OutputGrad<'a> {
    /// The output gradient as given.
    fn grad(self) -> &'a [f32] {
        match self {
            OutputGrad::Plain(g) | OutputGrad::Relu(g, _) | OutputGrad::SumRelu(g, _) => g,
        }
    }
}

/// `(dx, dγ, dβ)` of [`apply_kernel`] with batch statistics, from the output gradient `dy`,
/// and with [`OutputGrad::SumRelu`] the masked output gradient.
///
/// Why this way: the two passes are bound by memory (an AVX2 build of them measured no
/// faster, docs/results/speed.md), so they read as few activations as they can: the ReLU's
/// mask comes from the input rather than the kept output, and after a residual sum the masked
/// gradient is written by the first pass (from the plane it has just read) instead of by a
/// pass of its own.
#[allow(clippy::type_complexity)]
fn backward_kernel(
    x: &[f32],
    gamma: &[f32],
    stats: &[f32],
    dy: OutputGrad,
    epsilon: f64,
    (n, c, s): (usize, usize, usize),
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    probe::hit(Kernel::BatchNormBackward);
    let inv = inv_std(stats, c, epsilon);
    let relu = match dy {
        OutputGrad::Relu(_, beta) => Some(affine(gamma, beta, stats, epsilon)),
        _ => None,
    };
    // Σg and Σg·(x − μ) per plane, in memory order, then Σg and Σg·x̂ per channel.
    let plane_sums = |plane: usize, g: &[f32]| {
        let off = plane * s;
        let (xs, mean) = (&x[off..off + s], stats[plane % c]);
        match &relu {
            Some((scale, shift)) => {
                let (k, t) = (
                    f32x8::splat(scale[plane % c]),
                    f32x8::splat(shift[plane % c]),
                );
                lane_sums2(g, xs, xs, |g, v, _| {
                    let g = relu_mask(g, v * k + t);
                    (g, g * (v - mean))
                })
            }
            None => lane_sums2(g, xs, xs, |g, v, _| (g, g * (v - mean))),
        }
    };
    let (planes, masked) = match dy {
        OutputGrad::SumRelu(grad, out) => {
            let mut masked = uninit_buffer(n * c * s);
            let planes: Vec<(f64, f64)> = masked
                .par_chunks_mut(s.max(1))
                .with_min_len(planes_per_task(s))
                .enumerate()
                .map(|(plane, d)| {
                    let off = plane * s;
                    for ((d, &g), &o) in d.iter_mut().zip(&grad[off..off + s]).zip(&out[off..]) {
                        d.write(if o > 0.0 { g } else { 0.0 });
                    }
                    // SAFETY: every value of the plane was written just above.
                    plane_sums(plane, unsafe { assume_init_mut(d) })
                })
                .collect();
            // SAFETY: every plane of `masked` was written above.
            (planes, Some(unsafe { assume_init(masked) }))
        }
        OutputGrad::Plain(g) | OutputGrad::Relu(g, _) => (per_plane(g, s, plane_sums), None),
    };
    let dy = masked.as_deref().unwrap_or(dy.grad());
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
            match &relu {
                Some((scale, shift)) => {
                    let (a, t) = (scale[ci], shift[ci]);
                    for (d, (&g, &v)) in d.iter_mut().zip(g.iter().zip(xs)) {
                        *d = MaybeUninit::new(value(if v * a + t > 0.0 { g } else { 0.0 }, v));
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
    (dx, dgamma, dbeta, masked)
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

/// [`apply_kernel`] on Flex tensors.
fn flex_apply(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    stats: &FlexTensor,
    residual: Option<&FlexTensor>,
    epsilon: f64,
    relu: bool,
) -> FlexTensor {
    let shape = x.shape().to_vec();
    let residual = residual.map(values);
    let out = apply_kernel(
        &values(x),
        &values(gamma),
        &values(beta),
        &values(stats),
        residual.as_deref(),
        epsilon,
        relu,
        ncs(&shape),
    );
    flex(out, shape)
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
        flex_apply(&x, &gamma, &beta, &stats, None, epsilon, relu)
    }

    fn batch_norm_apply_sum(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        residual: FlexTensor,
        epsilon: f64,
        relu: bool,
    ) -> FlexTensor {
        flex_apply(&x, &gamma, &beta, &stats, Some(&residual), epsilon, relu)
    }

    fn group_norm_free(x: FlexTensor, groups: usize, epsilon: f64) -> FlexTensor {
        let shape = x.shape().to_vec();
        let (out, _) = group_norm_kernel(&values(&x), shape[0] * groups, epsilon);
        flex(out, shape)
    }
}

/// Saved for the backward pass (all shared, not copied).
#[derive(Clone, Debug)]
struct NormState {
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    stats: FlexTensor,
    relu: KeptForRelu,
    epsilon: f64,
}

/// What the backward keeps for the ReLU after the batch norm.
#[derive(Clone, Debug)]
enum KeptForRelu {
    /// No ReLU.
    Nothing,
    /// Nothing either: its mask is recomputed from `x` ([`OutputGrad::Relu`]).
    Recomputed,
    /// The output, for a ReLU after a residual sum, whose mask depends on the residual too
    /// ([`OutputGrad::SumRelu`]).
    Output(FlexTensor),
}

/// The backward of the fused batch norm: `N = 3` parents (x, γ, β) for
/// [`FastNormBackend::batch_norm_apply`], 4 (and the residual) for
/// [`FastNormBackend::batch_norm_apply_sum`].
#[derive(Debug)]
struct FusedNormBackward;

impl<const N: usize> Backward<Flex, N> for FusedNormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let NormState {
            x,
            gamma,
            beta,
            stats,
            relu,
            epsilon,
        } = ops.state;
        let shape = x.shape().to_vec();
        let c = shape[1];
        let mut parents = ops.parents.into_iter();
        let mut parent = || parents.next().flatten();
        let (node_x, node_gamma, node_beta) = (parent(), parent(), parent());
        let node_residual = parent();
        let (dx, dgamma, dbeta, masked) = {
            let (xs, gamma, stats) = (values(&x), values(&gamma), values(&stats));
            let (g, beta) = (values(&grad), values(&beta));
            let out = match &relu {
                KeptForRelu::Output(out) => Some(values(out)),
                _ => None,
            };
            let dy = match (&relu, out.as_deref()) {
                // After a residual sum the masked gradient is the residual's too.
                (_, Some(out)) => OutputGrad::SumRelu(&g, out),
                (KeptForRelu::Recomputed, None) => OutputGrad::Relu(&g, &beta),
                _ => OutputGrad::Plain(&g),
            };
            backward_kernel(&xs, &gamma, &stats, dy, epsilon, ncs(&shape))
        };
        let dy = match masked {
            Some(m) => flex(m, shape.clone()),
            None => grad,
        };
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex(dx, shape));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex(dgamma, vec![c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex(dbeta, vec![c]));
        }
        if let Some(node) = node_residual {
            grads.register::<Flex>(node.id, dy);
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
        let nodes = [x.node(), gamma.node(), beta.node()];
        let parts = [x, gamma, beta].map(|t| t.into_primitive());
        fused_norm_autodiff::<C, 3>(nodes, parts, stats, None, epsilon, relu)
    }

    fn batch_norm_apply_sum(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), gamma.node(), beta.node(), residual.node()];
        let parts = [x, gamma, beta].map(|t| t.into_primitive());
        let residual = Some(residual.into_primitive());
        fused_norm_autodiff::<C, 4>(nodes, parts, stats, residual, epsilon, relu)
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
    let stats = match known {
        Some(stats) if training(bn, &x) => {
            update_running_stats(bn, &stats);
            stats
        }
        _ => norm_stats(bn, &x),
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

/// Whether `bn` normalises `x` with the batch's own statistics (training on an autodiff
/// device).
fn training(bn: &BatchNorm, x: &Tensor<4>) -> bool {
    x.device().is_autodiff() && bn.training.is_enabled()
}

/// The statistics `bn` normalises `x` with: the batch's in training (the running ones updated
/// from them), the running ones otherwise.
fn norm_stats(bn: &BatchNorm, x: &Tensor<4>) -> Tensor<2> {
    if training(bn, x) {
        let stats = batch_stats(x);
        update_running_stats(bn, &stats);
        return stats;
    }
    let device = x.device();
    let mean = bn.running_mean.value().to_device(&device);
    let var = bn.running_var.value().to_device(&device);
    Tensor::stack::<2>(vec![mean, var], 0)
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
    conv_bn_then(conv, bn, x, None, relu)
}

/// `f(bn(conv(x)) + residual)` (f = ReLU when `relu`): a post-activation block's last
/// convolution and batch norm with the block's residual sum.
///
/// On Flex the sum (and ReLU) join the batch norm's pass instead of taking passes of their
/// own: for inference in the folded convolution's epilogue ([`conv_bn_forward`]'s), in
/// training in the batch norm's application ([`batch_norm_sum_forward`]).
pub fn conv_bn_sum_forward(
    conv: &Conv2d,
    bn: &BatchNorm,
    x: Tensor<4>,
    residual: Tensor<4>,
    relu: bool,
) -> Tensor<4> {
    conv_bn_then(conv, bn, x, Some(residual), relu)
}

/// [`conv_bn_forward`], or with a residual [`conv_bn_sum_forward`].
fn conv_bn_then(
    conv: &Conv2d,
    bn: &BatchNorm,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    relu: bool,
) -> Tensor<4> {
    let fold = fast_conv_options(conv).filter(|_| {
        applies(Op::Norm, &x)
            && residual.as_ref().is_none_or(|r| applies(Op::Norm, r))
            && chosen(Op::Conv, &x.device())
            && !x.device().is_autodiff()
    });
    let Some(options) = fold else {
        let y = conv_forward(conv, x);
        return match residual {
            Some(r) => batch_norm_sum_forward(bn, y, r, relu),
            None => batch_norm_forward(bn, y, relu),
        };
    };
    let (scale, shift) = folded(bn, &x.device());
    let (x, w) = (x.into_dispatch(), conv.weight.val().into_dispatch());
    let (scale, shift) = (scale.into_dispatch(), shift.into_dispatch());
    Tensor::from_dispatch(match residual {
        Some(r) => <Dispatch as FastConvBackend>::fast_conv2d_affine_sum(
            x,
            w,
            scale,
            shift,
            r.into_dispatch(),
            options,
            relu,
        ),
        None => {
            <Dispatch as FastConvBackend>::fast_conv2d_affine(x, w, scale, shift, options, relu)
        }
    })
}

/// `f(bn(x) + residual)` (f = ReLU when `relu`), one operation on Flex where
/// [`batch_norm_forward`] takes its fused path and `residual` is an f32 tensor of `x`'s
/// shape; otherwise the batch norm, then [`add_relu`] (or `+`).
pub fn batch_norm_sum_forward(
    bn: &BatchNorm,
    x: Tensor<4>,
    residual: Tensor<4>,
    relu: bool,
) -> Tensor<4> {
    let running_with_grad = x.device().is_autodiff() && !bn.training.is_enabled();
    if !applies(Op::Norm, &x)
        || !applies(Op::Norm, &residual)
        || running_with_grad
        || x.dims() != residual.dims()
    {
        let y = batch_norm_forward(bn, x, false);
        return if relu {
            add_relu(y, residual)
        } else {
            y + residual
        };
    }
    let stats = norm_stats(bn, &x);
    Tensor::from_dispatch(<Dispatch as FastNormBackend>::batch_norm_apply_sum(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        stats.into_dispatch(),
        residual.into_dispatch(),
        bn.epsilon,
        relu,
    ))
}

/// A frozen batch norm as the per-channel `(scale, shift)` of `x·scale + shift`.
fn folded(bn: &BatchNorm, device: &Device) -> (Tensor<1>, Tensor<1>) {
    let var = bn.running_var.value().to_device(device);
    let mean = bn.running_mean.value().to_device(device);
    let scale = bn.gamma.val() / var.add_scalar(bn.epsilon).sqrt();
    let shift = bn.beta.val() - mean * scale.clone();
    (scale, shift)
}

/// The fused batch norm on `Autodiff<Flex, C>`: `nodes` are its parents (x, γ, β, and the
/// residual when there is one), `[x, γ, β]` its inputs.
fn fused_norm_autodiff<C: CheckpointStrategy, const N: usize>(
    nodes: [NodeGuard; N],
    [x, gamma, beta]: [FlexTensor; 3],
    stats: FloatTensor<Autodiff<Flex, C>>,
    residual: Option<FlexTensor>,
    epsilon: f64,
    relu: bool,
) -> FloatTensor<Autodiff<Flex, C>> {
    let stats = stats.into_primitive();
    let apply = |x, gamma, stats| {
        let (x, gamma, beta) = (&x, &gamma, &beta);
        flex_apply(x, gamma, beta, stats, residual.as_ref(), epsilon, relu)
    };
    // The state holds plain tensors rather than checkpoints: recomputing the fused forward
    // would cost as much as keeping its output, which the next layer keeps anyway.
    match FusedNormBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let out = apply(x.clone(), gamma.clone(), &stats);
            // The output is only needed for the mask of a ReLU after a residual sum.
            let relu = match (relu, residual.is_some()) {
                (false, _) => KeptForRelu::Nothing,
                (true, false) => KeptForRelu::Recomputed,
                (true, true) => KeptForRelu::Output(out.clone()),
            };
            let state = NormState {
                x,
                gamma,
                beta,
                stats,
                relu,
                epsilon,
            };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(apply(x, gamma, &stats)),
    }
}
