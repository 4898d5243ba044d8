//! A DenseNet layer's bottleneck head `conv1x1(ReLU(BN(cat(parts))))` as one differentiable
//! operation on Flex whose backward pass recomputes the normalised input (Pleiss et al. 2017).
//!
//! Why: composed of Burn's operations, autodiff keeps the concatenation and the BN-ReLU output
//! of every layer until the backward pass, which is quadratic in depth (see
//! docs/densenet-memory.md). Here the operation keeps only its input parts (the stage's
//! history, alive anyway), the per-channel batch statistics, gamma, beta and the weight.
//!
//! BN is per channel and a 1x1 convolution is a sum over input channels, so the head over the
//! concatenation is `Σ_g W_g · ReLU(BN_g(cat(parts_g)))` over groups of at most [`MAX_TERMS`]
//! parts (Burn's autodiff steps have a fixed number of parents): one operation per group,
//! chained through an accumulator. Inside one operation the normalised parts of an image are
//! written to one scratch `[Cg, HW]` and multiplied in one GEMM.
//!
//! Mechanism as in [`super::dense_sum`]: a backend extension for `Flex` (kernels over rayon
//! threads) and `Autodiff<Flex, C>` (custom backward). Other backends use the composed path.

use std::borrow::Cow;
use std::mem::MaybeUninit;

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

use super::buffer::{assume_init, assume_init_mut, uninit_buffer, with_scratch};
use super::epilogue::Epilogue;
use super::lanes::{f32x8, lane_sums2};
use super::matmul::{gemm, gemm_raw};
use super::probe::{self, Kernel};
use super::tensor::{flex, present, values};

/// Input parts one operation reads; more parts are chained (see [`dense_head`]).
pub const MAX_TERMS: usize = 6;

/// The recomputing dense-layer head.
#[backend_extension(Flex, Autodiff)]
pub trait FastDenseHeadBackend: Backend {
    /// `acc + W · ReLU(γ (x − μ) r + β)` per image, with `x` the channel concatenation of the
    /// parts `x0`, `x1`, ... (slots from `terms` on are ignored), `W` `[O, Cg]`, `γ`, `β`
    /// `[Cg]`, `stats = [μ; σ²]` `[2, Cg]` (the batch's own: the backward differentiates
    /// through them) and `r = 1/sqrt(σ² + ε)`. `acc` is `[N, O, H, W]`. (Extensions take no
    /// lists, hence one argument per slot.)
    #[allow(clippy::too_many_arguments)]
    fn dense_head(
        acc: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        x0: FloatTensor<Self>,
        x1: FloatTensor<Self>,
        x2: FloatTensor<Self>,
        x3: FloatTensor<Self>,
        x4: FloatTensor<Self>,
        x5: FloatTensor<Self>,
        terms: usize,
        epsilon: f64,
    ) -> FloatTensor<Self>;
}

/// Shapes of one head operation.
#[derive(Clone, Copy, Debug)]
struct Layout {
    n: usize,
    /// Output channels.
    o: usize,
    /// Input channels of the group.
    cg: usize,
    /// Positions per plane.
    s: usize,
}

/// Per-channel coefficients: `x̂ = (x − μ) r`, `z = ReLU(γ x̂ + β)`.
struct Coef {
    mean: Vec<f32>,
    inv: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Coef {
    /// The coefficients of `bn` with its running statistics (inference).
    fn running(bn: &BatchNorm) -> Self {
        let mut stats = host(bn.running_mean.value());
        stats.extend(host(bn.running_var.value()));
        Coef::new(
            &stats,
            &host(bn.gamma.val()),
            &host(bn.beta.val()),
            bn.epsilon,
        )
    }

    fn new(stats: &[f32], gamma: &[f32], beta: &[f32], epsilon: f64) -> Self {
        let cg = gamma.len();
        Coef {
            mean: stats[..cg].to_vec(),
            inv: stats[cg..2 * cg]
                .iter()
                .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
                .collect(),
            gamma: gamma.to_vec(),
            beta: beta.to_vec(),
        }
    }
}

/// Writes image `ni`'s `z = ReLU(BN(cat(parts)))` into `z` `[Cg, S]`.
fn normalise_image(
    z: &mut [f32],
    parts: &[Cow<'_, [f32]>],
    chans: &[usize],
    coef: &Coef,
    ni: usize,
    s: usize,
) {
    let mut c0 = 0;
    for (part, &ci) in parts.iter().zip(chans) {
        let image = &part[ni * ci * s..(ni + 1) * ci * s];
        for c in 0..ci {
            let k = c0 + c;
            let a = coef.gamma[k] * coef.inv[k];
            let b = coef.beta[k] - a * coef.mean[k];
            z[k * s..(k + 1) * s]
                .iter_mut()
                .zip(&image[c * s..(c + 1) * s])
                .for_each(|(z, &x)| *z = (a * x + b).max(0.0));
        }
        c0 += ci;
    }
}

fn forward_kernel(
    acc: &[f32],
    weight: &[f32],
    parts: &[Cow<'_, [f32]>],
    chans: &[usize],
    coef: &Coef,
    lay: Layout,
) -> Vec<f32> {
    probe::hit(Kernel::DenseHead);
    let (o, cg, s) = (lay.o, lay.cg, lay.s);
    let mut out = acc.to_vec();
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(o * s).enumerate().for_each_init(
        || vec![0f32; cg * s],
        |z, (ni, dst)| {
            normalise_image(z, parts, chans, coef, ni, s);
            gemm(o, s, cg, dst, true, weight, (cg, 1), z, (s, 1));
        },
    );
    out
}

/// Inference: `f(W · ReLU(BN1(cat(parts))))` per image with the running statistics in
/// `coef`, and `f` the folded second norm `ReLU(x·scale[o] + shift[o])` (`after`) or the
/// identity. One GEMM over all input channels, written straight into the output (no
/// accumulator, no chaining: nothing here is differentiated).
fn inference_kernel(
    weight: &[f32],
    parts: &[Cow<'_, [f32]>],
    chans: &[usize],
    coef: &Coef,
    after: Option<&Folded>,
    lay: Layout,
) -> Vec<f32> {
    probe::hit(Kernel::DenseHeadInference);
    let (o, cg, s) = (lay.o, lay.cg, lay.s);
    let mut out = uninit_buffer(lay.n * o * s);
    out.par_chunks_mut((o * s).max(1))
        .enumerate()
        .for_each(|(ni, dst)| {
            with_scratch(cg * s, |z| {
                normalise_image(z, parts, chans, coef, ni, s);
                gemm_raw((o, s, cg), dst, (s, 1), false, weight, (cg, 1), z, (s, 1));
            });
            if let Some(f) = after {
                // SAFETY: the GEMM above wrote all of dst.
                f.epilogue()
                    .apply(unsafe { assume_init_mut(dst) }, s.max(1), ni * o * s);
            }
        });
    // SAFETY: every image's output was written by its GEMM.
    unsafe { assume_init(out) }
}

/// A batch norm with running statistics as a per-channel `x·scale + shift`.
struct Folded {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl Folded {
    fn new(bn: &BatchNorm) -> Self {
        let coef = Coef::running(bn);
        let scale: Vec<f32> = coef
            .gamma
            .iter()
            .zip(&coef.inv)
            .map(|(g, r)| g * r)
            .collect();
        let shift = (0..scale.len())
            .map(|c| coef.beta[c] - scale[c] * coef.mean[c])
            .collect();
        Folded { scale, shift }
    }

    /// `ReLU(x·scale + shift)` as the epilogue of the head's product.
    fn epilogue(&self) -> Epilogue<'_> {
        Epilogue {
            scale: &self.scale,
            shift: &self.shift,
            residual: None,
            relu: true,
        }
    }
}

/// A small parameter tensor's values.
fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 values")
}

/// For inference on Flex (no autodiff): `conv1x1(ReLU(norm1(cat(parts))))` with `norm1`'s
/// running statistics, followed by `ReLU(norm2(·))` when `norm2` is given, as one kernel: each
/// image's normalised input is built in a scratch buffer in cache, multiplied once by the whole
/// weight `[O, C, 1, 1]`, and the second norm applied to the product while it is in cache. No
/// concatenation, no normalised copy of the input, no separate pass for `norm2`.
///
/// `None` where it does not apply (an autodiff or non-Flex tensor, a weight that is not 1x1,
/// channels that do not add up): the caller composes the layer from its operations instead.
pub fn dense_head_inference(
    parts: &[Tensor<4>],
    weight: &Tensor<4>,
    norm1: &BatchNorm,
    norm2: Option<&BatchNorm>,
) -> Option<Tensor<4>> {
    let [o, c, kh, kw] = weight.dims();
    let chans: Vec<usize> = parts.iter().map(|p| p.dims()[1]).collect();
    if parts.is_empty() || (kh, kw) != (1, 1) || chans.iter().sum::<usize>() != c {
        return None;
    }
    if parts.iter().any(|p| p.is_autodiff()) || norm1.gamma.dims() != [c] {
        return None;
    }
    let flex_of = |t: &Tensor<4>| t.clone().try_into_primitive::<Flex>().ok();
    let xs: Vec<FlexTensor> = parts.iter().map(flex_of).collect::<Option<_>>()?;
    let w = flex_of(weight)?;
    let [n, _, h, wd] = parts[0].dims();
    if parts
        .iter()
        .any(|p| p.dims()[0] != n || p.dims()[2..] != [h, wd])
    {
        return None;
    }
    let after = match norm2 {
        Some(bn) if bn.gamma.dims() == [o] => Some(Folded::new(bn)),
        Some(_) => return None,
        None => None,
    };
    let coef = Coef::running(norm1);
    let src: Vec<_> = xs.iter().map(values).collect();
    let lay = Layout {
        n,
        o,
        cg: c,
        s: h * wd,
    };
    let out = inference_kernel(&values(&w), &src, &chans, &coef, after.as_ref(), lay);
    Some(Tensor::from_primitive::<Flex>(flex(out, vec![n, o, h, wd])))
}

/// Gradients: weight `[O, Cg]`, gamma, beta `[Cg]`, one per part.
struct Grads {
    weight: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    parts: Vec<Vec<f32>>,
}

/// Per image: recompute `z`, `dW += dY zᵀ`, `dz = (Wᵀ dY) ⊙ [z > 0]` (kept for the batch,
/// transient) with per-channel `Σ dz` and `Σ dz x̂`; then per part
/// `dx = γ r / M (M dz − Σ dz − x̂ Σ dz x̂)`.
fn backward_kernel(
    grad: &[f32],
    weight: &[f32],
    parts: &[Cow<'_, [f32]>],
    chans: &[usize],
    coef: &Coef,
    lay: Layout,
) -> Grads {
    probe::hit(Kernel::DenseHeadBackward);
    let (n, o, cg, s) = (lay.n, lay.o, lay.cg, lay.s);
    let mut dz = vec![0f32; n * cg * s];
    // Per image: (dW partial, Σ dz, Σ dz x̂).
    let partial: Vec<(Vec<f32>, Vec<f64>, Vec<f64>)> = dz
        .par_chunks_mut((cg * s).max(1))
        .enumerate()
        .map(|(ni, dzi)| {
            let mut z = vec![0f32; cg * s];
            normalise_image(&mut z, parts, chans, coef, ni, s);
            let dy = &grad[ni * o * s..(ni + 1) * o * s];
            let mut dw = vec![0f32; o * cg];
            // dW[o, c] = Σ_s dY[o, s] z[c, s]
            gemm(o, cg, s, &mut dw, false, dy, (s, 1), &z, (1, s));
            // dz[c, s] = Σ_o W[o, c] dY[o, s]
            gemm(cg, s, o, dzi, false, weight, (1, cg), dy, (s, 1));
            let (mut sd, mut sdx) = (vec![0f64; cg], vec![0f64; cg]);
            let mut c0 = 0;
            for (part, &ci) in parts.iter().zip(chans) {
                let image = &part[ni * ci * s..(ni + 1) * ci * s];
                for c in 0..ci {
                    let k = c0 + c;
                    let (m, r) = (f32x8::splat(coef.mean[k]), coef.inv[k]);
                    let plane = &mut dzi[k * s..(k + 1) * s];
                    // The ReLU's mask as a select (vectorised; a conditional store here was
                    // 11 % of a memory-efficient DenseNet-121 training step), then both sums in
                    // SIMD lanes.
                    for (d, &zv) in plane.iter_mut().zip(&z[k * s..(k + 1) * s]) {
                        *d = if zv > 0.0 { *d } else { 0.0 };
                    }
                    let xs = &image[c * s..(c + 1) * s];
                    let (a, b) = lane_sums2(plane, xs, plane, |d, x, _| (d, d * (x - m)));
                    sd[k] = a;
                    sdx[k] = b * r as f64;
                }
                c0 += ci;
            }
            (dw, sd, sdx)
        })
        .collect();
    let mut dweight = vec![0f32; o * cg];
    let (mut dbeta, mut dgamma) = (vec![0f64; cg], vec![0f64; cg]);
    for (dw, sd, sdx) in &partial {
        dweight.iter_mut().zip(dw).for_each(|(a, b)| *a += b);
        dbeta.iter_mut().zip(sd).for_each(|(a, b)| *a += b);
        dgamma.iter_mut().zip(sdx).for_each(|(a, b)| *a += b);
    }
    let count = (n * s).max(1) as f32;
    let mut c0 = 0;
    let mut dparts = Vec::with_capacity(parts.len());
    for (part, &ci) in parts.iter().zip(chans) {
        let mut dx = uninit_buffer(n * ci * s);
        dx.par_chunks_mut((ci * s).max(1))
            .enumerate()
            .for_each(|(ni, dxi)| {
                let image = &part[ni * ci * s..(ni + 1) * ci * s];
                let dzi = &dz[ni * cg * s..(ni + 1) * cg * s];
                for c in 0..ci {
                    let k = c0 + c;
                    let (m, r) = (coef.mean[k], coef.inv[k]);
                    let scale = coef.gamma[k] * r;
                    let (db, dg) = (dbeta[k] as f32 / count, dgamma[k] as f32 / count);
                    for ((d, &g), &x) in dxi[c * s..(c + 1) * s]
                        .iter_mut()
                        .zip(&dzi[k * s..(k + 1) * s])
                        .zip(&image[c * s..(c + 1) * s])
                    {
                        *d = MaybeUninit::new(scale * (g - db - (x - m) * r * dg));
                    }
                }
            });
        // SAFETY: every plane of every image was written above.
        dparts.push(unsafe { assume_init(dx) });
        c0 += ci;
    }
    Grads {
        weight: dweight,
        gamma: dgamma.iter().map(|&v| v as f32).collect(),
        beta: dbeta.iter().map(|&v| v as f32).collect(),
        parts: dparts,
    }
}

fn layout(acc: &FlexTensor, weight: &FlexTensor, parts: &[FlexTensor]) -> (Layout, Vec<usize>) {
    let shape = acc.shape().to_vec();
    let chans: Vec<usize> = parts.iter().map(|p| p.shape()[1]).collect();
    let cg: usize = chans.iter().sum();
    let s = shape[2..].iter().product();
    assert_eq!(
        weight.shape().to_vec(),
        vec![shape[1], cg],
        "weight [O, Cg]"
    );
    for p in parts {
        assert_eq!(p.shape()[0], shape[0], "parts of the same batch");
        assert_eq!(p.shape()[2..], shape[2..], "parts of the same size");
    }
    let lay = Layout {
        n: shape[0],
        o: shape[1],
        cg,
        s,
    };
    (lay, chans)
}

fn forward_flex(
    acc: &FlexTensor,
    weight: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    stats: &FlexTensor,
    parts: &[FlexTensor],
    epsilon: f64,
) -> FlexTensor {
    let (lay, chans) = layout(acc, weight, parts);
    let coef = Coef::new(&values(stats), &values(gamma), &values(beta), epsilon);
    let src: Vec<_> = parts.iter().map(values).collect();
    let out = forward_kernel(&values(acc), &values(weight), &src, &chans, &coef, lay);
    flex(out, acc.shape().to_vec())
}

impl FastDenseHeadBackend for Flex {
    fn dense_head(
        acc: FlexTensor,
        weight: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        x0: FlexTensor,
        x1: FlexTensor,
        x2: FlexTensor,
        x3: FlexTensor,
        x4: FlexTensor,
        x5: FlexTensor,
        terms: usize,
        epsilon: f64,
    ) -> FlexTensor {
        let parts = present([x0, x1, x2, x3, x4, x5], terms);
        forward_flex(&acc, &weight, &gamma, &beta, &stats, &parts, epsilon)
    }
}

/// Saved for the backward pass (all shared, not copied): parts, weight, gamma, beta,
/// statistics, epsilon, output shape.
type HeadState = (
    Vec<FlexTensor>,
    FlexTensor,
    FlexTensor,
    FlexTensor,
    FlexTensor,
    f64,
    Vec<usize>,
);

/// The backward step with `N` parents: acc, weight, gamma, beta, `N − 4` parts.
#[derive(Debug)]
struct DenseHeadBackward<const N: usize>;

impl<const N: usize> Backward<Flex, N> for DenseHeadBackward<N> {
    type State = HeadState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let (parts, weight, gamma, beta, stats, epsilon, shape) = ops.state;
        let (lay, chans) = layout(&grad, &weight, &parts);
        let coef = Coef::new(&values(&stats), &values(&gamma), &values(&beta), epsilon);
        let src: Vec<_> = parts.iter().map(values).collect();
        let d = backward_kernel(&values(&grad), &values(&weight), &src, &chans, &coef, lay);
        let wshape = weight.shape().to_vec();
        let cshape = gamma.shape().to_vec();
        let part_shapes: Vec<Vec<usize>> = parts.iter().map(|p| p.shape().to_vec()).collect();
        drop(src);
        if let Some(node) = &ops.parents[1] {
            grads.register::<Flex>(node.id, flex(d.weight, wshape));
        }
        if let Some(node) = &ops.parents[2] {
            grads.register::<Flex>(node.id, flex(d.gamma, cshape.clone()));
        }
        if let Some(node) = &ops.parents[3] {
            grads.register::<Flex>(node.id, flex(d.beta, cshape));
        }
        for ((node, dx), sh) in ops.parents[4..].iter().zip(d.parts).zip(part_shapes) {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, flex(dx, sh));
            }
        }
        debug_assert_eq!(grad.shape().to_vec(), shape);
        // The accumulator's gradient is the output's.
        if let Some(node) = &ops.parents[0] {
            grads.register::<Flex>(node.id, grad);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn tracked_head<C: CheckpointStrategy, const N: usize>(
    acc: FloatTensor<Autodiff<Flex, C>>,
    weight: FloatTensor<Autodiff<Flex, C>>,
    gamma: FloatTensor<Autodiff<Flex, C>>,
    beta: FloatTensor<Autodiff<Flex, C>>,
    stats: FloatTensor<Autodiff<Flex, C>>,
    parts: Vec<FloatTensor<Autodiff<Flex, C>>>,
    epsilon: f64,
) -> FloatTensor<Autodiff<Flex, C>> {
    let mut nodes = vec![acc.node(), weight.node(), gamma.node(), beta.node()];
    nodes.extend(parts.iter().map(|p| p.node()));
    let nodes: [_; N] = nodes.try_into().expect("N parents");
    let stats = stats.into_primitive();
    let parts: Vec<FlexTensor> = parts.into_iter().map(|p| p.into_primitive()).collect();
    let (acc, weight) = (acc.into_primitive(), weight.into_primitive());
    let (gamma, beta) = (gamma.into_primitive(), beta.into_primitive());
    let out = forward_flex(&acc, &weight, &gamma, &beta, &stats, &parts, epsilon);
    drop(acc);
    match DenseHeadBackward::<N>
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let shape = out.shape().to_vec();
            prep.finish((parts, weight, gamma, beta, stats, epsilon, shape), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

impl<C: CheckpointStrategy> FastDenseHeadBackend for Autodiff<Flex, C> {
    fn dense_head(
        acc: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        x0: FloatTensor<Self>,
        x1: FloatTensor<Self>,
        x2: FloatTensor<Self>,
        x3: FloatTensor<Self>,
        x4: FloatTensor<Self>,
        x5: FloatTensor<Self>,
        terms: usize,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let p = present([x0, x1, x2, x3, x4, x5], terms);
        let (a, w, g, b, st, e) = (acc, weight, gamma, beta, stats, epsilon);
        match p.len() {
            1 => tracked_head::<C, 5>(a, w, g, b, st, p, e),
            2 => tracked_head::<C, 6>(a, w, g, b, st, p, e),
            3 => tracked_head::<C, 7>(a, w, g, b, st, p, e),
            4 => tracked_head::<C, 8>(a, w, g, b, st, p, e),
            5 => tracked_head::<C, 9>(a, w, g, b, st, p, e),
            6 => tracked_head::<C, 10>(a, w, g, b, st, p, e),
            other => unreachable!("1 to {MAX_TERMS} parts, not {other}"),
        }
    }
}

/// `conv1x1(ReLU(BN(cat(parts))))` with `weight` `[O, C, 1, 1]`, `gamma`, `beta` `[C]` and the
/// batch statistics `stats = [μ; σ²]` `[2, C]` of the concatenation (detached), as chained
/// operations of at most [`MAX_TERMS`] parts. Only where [`applies`](super::applies)`(Op::DenseHead, ..)`.
pub fn dense_head(
    parts: &[Tensor<4>],
    weight: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    stats: Tensor<2>,
    epsilon: f64,
) -> Tensor<4> {
    assert!(!parts.is_empty(), "at least one part");
    let [o, c, kh, kw] = weight.dims();
    assert_eq!((kh, kw), (1, 1), "a 1x1 convolution");
    let [n, _, h, w] = parts[0].dims();
    let weight = weight.reshape([o, c]);
    let chans: Vec<usize> = parts.iter().map(|p| p.dims()[1]).collect();
    assert_eq!(
        chans.iter().sum::<usize>(),
        c,
        "parts make the input channels"
    );
    let mut acc = Tensor::<4>::zeros([n, o, h, w], &parts[0].device());
    let groups = parts.len().div_ceil(MAX_TERMS);
    let mut c0 = 0;
    for g in 0..groups {
        let (start, end) = (g * MAX_TERMS, ((g + 1) * MAX_TERMS).min(parts.len()));
        let cg: usize = chans[start..end].iter().sum();
        let whole = groups == 1;
        let pick1 = |t: &Tensor<1>| {
            if whole {
                t.clone()
            } else {
                t.clone().narrow(0, c0, cg)
            }
        };
        let (wg, sg) = if whole {
            (weight.clone(), stats.clone())
        } else {
            (
                weight.clone().narrow(1, c0, cg),
                stats.clone().narrow(1, c0, cg),
            )
        };
        // Unused slots repeat the last part (the operation ignores them).
        let xs: [_; MAX_TERMS] =
            std::array::from_fn(|k| parts[(start + k).min(end - 1)].clone().into_dispatch());
        let [x0, x1, x2, x3, x4, x5] = xs;
        acc = Tensor::from_dispatch(<Dispatch as FastDenseHeadBackend>::dense_head(
            acc.into_dispatch(),
            wg.into_dispatch(),
            pick1(&gamma).into_dispatch(),
            pick1(&beta).into_dispatch(),
            sg.into_dispatch(),
            x0,
            x1,
            x2,
            x3,
            x4,
            x5,
            end - start,
            epsilon,
        ));
        c0 += cg;
    }
    acc
}
