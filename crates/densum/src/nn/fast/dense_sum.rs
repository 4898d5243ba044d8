//! DSNet's dense shortcut, `f(X_l + Σ_{i<l} W_{l,i} ⊙ N(Y_i))`, as one differentiable
//! operation on Flex: the parameter-free group normalisation N, the per-channel (or scalar)
//! weights, the branch and the output ReLU f together.
//!
//! Why: composed of Burn's operations, the shortcut keeps every normalised `N(Y_i)` alive until
//! the backward pass (one extra activation per block, which is DSNet's whole memory overhead
//! over ResNet) and costs one multiply and one add per earlier output, each with its own
//! backward. Here:
//!
//! - each `Y_i`'s statistics (mean and inverse deviation per image and group) are computed
//!   once, when the output is produced ([`dense_sum_stats`]), and shared by every later block;
//! - forward: `out = f(X + Σ_i (w_i r_i) Y_i − Σ_i w_i r_i μ_i)` per plane, one pass; the
//!   operation keeps the `Y_i` (alive anyway: each is a later convolution's input), the
//!   statistics, the weights and, with ReLU, its output (the next block's input) — no
//!   per-term intermediate;
//! - backward, one pass for every reduction (`Σ g` and `Σ g·x̂_i` per image and channel, from
//!   which come the weight gradients and the normalisation's statistics terms) and one pass
//!   per earlier output for its gradient `r (w g − mean(w g) − x̂ mean(w g x̂))`, which includes
//!   the gradient through the statistics. `g` (the output gradient under the ReLU's mask) is
//!   the branch's gradient.
//!
//! Mechanism as in [`super::norm`]: a backend extension implemented for `Flex` (kernels over
//! rayon threads) and `Autodiff<Flex, C>` (custom backward). Burn's autodiff steps have a fixed
//! number of parents, so one operation takes at most [`MAX_TERMS`] earlier outputs and longer
//! histories are chained. Other backends, dtypes and BatchNorm as N use the composed path in
//! `connect/dense_sum.rs`; tests compare both.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::buffer::{assume_init, assume_init_mut, uninit_buffer};
use super::lanes::lane_sum;
use super::probe::{self, Kernel};
use super::tensor::{flex, present, values};

/// Earlier outputs one fused operation reads; longer histories are chained (see
/// [`dense_sum`]).
pub const MAX_TERMS: usize = 6;

/// The fused dense shortcut.
#[backend_extension(Flex, Autodiff)]
pub trait FastDenseSumBackend: Backend {
    /// Mean and inverse deviation `1/sqrt(σ² + ε)` of `x` `[N, C, H, W]` per image and group of
    /// `C / groups` channels, as `[N, groups, 2]`. Not differentiable: the gradient through the
    /// statistics is part of [`dense_sum`](Self::dense_sum)'s backward.
    fn dense_sum_stats(x: FloatTensor<Self>, groups: usize, epsilon: f64) -> FloatTensor<Self>;

    /// `f(branch + Σ_{i<terms} weight[i] ⊙ (y_i − μ_i) · r_i)` over the earlier outputs
    /// `y0`, `y1`, ... (slots from `terms` on are ignored), with `stats[i] = [μ_i, r_i]` per
    /// image and group (`[terms, N, groups, 2]`, from
    /// [`dense_sum_stats`](Self::dense_sum_stats) of each `y_i`) when `normalise`, without
    /// normalisation (and `stats` ignored) otherwise; `f` is ReLU when `relu`. `weight` is
    /// `[terms, C]` (per channel) or `[terms, 1]` (one scalar per term). With `accumulate`,
    /// the backward adds the earlier outputs' gradients into the ones already registered for
    /// them (see [`dense_sum`](fn@dense_sum)) instead of registering new ones. (Burn's extensions
    /// take neither lists nor options of tensors, hence one argument per slot.)
    #[allow(clippy::too_many_arguments)]
    fn dense_sum(
        branch: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        y0: FloatTensor<Self>,
        y1: FloatTensor<Self>,
        y2: FloatTensor<Self>,
        y3: FloatTensor<Self>,
        y4: FloatTensor<Self>,
        y5: FloatTensor<Self>,
        terms: usize,
        normalise: bool,
        relu: bool,
        accumulate: bool,
    ) -> FloatTensor<Self>;
}

/// Mean and inverse deviation of every contiguous block of `x` (one per image and group),
/// interleaved: `[μ_0, r_0, μ_1, r_1, ...]`. Two passes per block, as the fused GroupNorm.
pub(super) fn stats_kernel(x: &[f32], blocks: usize, epsilon: f64) -> Vec<f32> {
    probe::hit(Kernel::DenseSumStats);
    let len = (x.len() / blocks.max(1)).max(1);
    let per: Vec<(f32, f32)> = x
        .par_chunks(len)
        .map(|xs| {
            let n = xs.len().max(1) as f64;
            let mean = lane_sum(xs, xs, |v, _| v) / n;
            let m = mean as f32;
            let var = lane_sum(xs, xs, |v, _| (v - m) * (v - m)) / n;
            (m, (1.0 / (var + epsilon).sqrt()) as f32)
        })
        .collect();
    per.iter().flat_map(|&(m, r)| [m, r]).collect()
}

/// Shapes and layout of one fused sum.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    /// Images, channels, positions per plane.
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) s: usize,
    /// Earlier outputs summed.
    pub(super) terms: usize,
    /// Weight columns: `c` (per channel) or 1 (scalar).
    pub(super) cw: usize,
    /// Normalisation groups (0: no normalisation).
    pub(super) groups: usize,
}

impl Layout {
    /// `stats_shape` is `[terms, N, groups, 2]`, or `None` without normalisation.
    pub(super) fn new(
        shape: &[usize],
        terms: usize,
        weight_shape: &[usize],
        stats_shape: Option<&[usize]>,
    ) -> Self {
        let (n, c) = (shape[0], shape[1]);
        let s = shape[2..].iter().product();
        let cw = weight_shape.get(1).copied().unwrap_or(1);
        assert_eq!(weight_shape[0], terms, "one weight row per earlier output");
        assert!(cw == c || cw == 1, "weights per channel or one per output");
        let groups = stats_shape.map_or(0, |s| {
            assert_eq!(s[..2], [terms, n], "statistics of every term and image");
            s[2]
        });
        assert!(
            groups == 0 || c.is_multiple_of(groups),
            "groups divide channels"
        );
        Layout {
            n,
            c,
            s,
            terms,
            cw,
            groups,
        }
    }

    pub(super) fn weight(&self, w: &[f32], i: usize, ci: usize) -> f32 {
        w[i * self.cw + if self.cw == 1 { 0 } else { ci }]
    }

    /// `(μ, r)` of term `i` for image `ni`, channel `ci`: `(0, 1)` without normalisation.
    pub(super) fn stat(&self, stats: &[f32], i: usize, ni: usize, ci: usize) -> (f32, f32) {
        if self.groups == 0 {
            return (0.0, 1.0);
        }
        let k = 2 * ((i * self.n + ni) * self.groups + ci / (self.c / self.groups));
        (stats[k], stats[k + 1])
    }
}

/// The forward pass, images over threads.
pub(super) fn forward_kernel(
    branch: &[f32],
    weight: &[f32],
    sources: &[Cow<'_, [f32]>],
    stats: &[f32],
    relu: bool,
    lay: Layout,
) -> Vec<f32> {
    probe::hit(Kernel::DenseSum);
    let (c, s) = (lay.c, lay.s);
    let mut out = uninit_buffer(lay.n * c * s);
    if out.is_empty() {
        // SAFETY: empty.
        return unsafe { assume_init(out) };
    }
    out.par_chunks_mut(c * s)
        .enumerate()
        .for_each(|(ni, image)| {
            let mut coef = vec![0f32; lay.terms];
            for (ci, o) in image.chunks_mut(s).enumerate() {
                let off = (ni * c + ci) * s;
                let mut shift = 0f32;
                for (i, a) in coef.iter_mut().enumerate() {
                    let (mean, inv) = lay.stat(stats, i, ni, ci);
                    *a = lay.weight(weight, i, ci) * inv;
                    shift -= *a * mean;
                }
                let b = &branch[off..off + s];
                // First term with the branch and the shift: initialises the plane.
                let last = lay.terms <= 1;
                let finish = |v: f32| if relu && last { v.max(0.0) } else { v };
                match lay.terms {
                    0 => o
                        .iter_mut()
                        .zip(b)
                        .for_each(|(o, &b)| *o = MaybeUninit::new(finish(b + shift))),
                    _ => {
                        let (a, y) = (coef[0], &sources[0][off..off + s]);
                        o.iter_mut().zip(b.iter().zip(y)).for_each(|(o, (&b, &y))| {
                            *o = MaybeUninit::new(finish(b + shift + a * y))
                        });
                    }
                }
                // SAFETY: every value of the plane was written just above.
                let o = unsafe { assume_init_mut(o) };
                for i in 1..lay.terms {
                    let (a, y) = (coef[i], &sources[i][off..off + s]);
                    if relu && i + 1 == lay.terms {
                        o.iter_mut()
                            .zip(y)
                            .for_each(|(o, &y)| *o = (*o + a * y).max(0.0));
                    } else {
                        o.iter_mut().zip(y).for_each(|(o, &y)| *o += a * y);
                    }
                }
            }
        });
    // SAFETY: every plane of `out` was written above.
    unsafe { assume_init(out) }
}

/// Gradients of the fused sum: `(branch, weight, sources)`, a source's gradient only where
/// `want[i]`.
struct Grads {
    branch: Vec<f32>,
    weight: Vec<f32>,
    sources: Vec<Option<Vec<f32>>>,
}

/// Writes `values` over a plane that may be uninitialised; returns it initialised.
#[inline(always)]
pub(super) fn write_plane(
    dst: &mut [MaybeUninit<f32>],
    values: impl Iterator<Item = f32>,
) -> &mut [f32] {
    let len = dst.len();
    let mut written = 0;
    for (d, v) in dst.iter_mut().zip(values) {
        *d = MaybeUninit::new(v);
        written += 1;
    }
    assert_eq!(written, len, "every value of the plane written");
    // SAFETY: every element was written just above.
    unsafe { assume_init_mut(dst) }
}

/// The backward pass, one task per image and, inside it, one normalisation group at a time
/// (its output gradient and earlier outputs stay in cache between the reductions and the
/// gradients that need them): `g` = output gradient under the ReLU mask (the branch's
/// gradient); per channel `A = Σ g`, `B_i = Σ g · x̂_i`; then per earlier output
/// `dY_i = r (w g − mean_grp(w g) − x̂ mean_grp(w g x̂))` (`w g` without normalisation), as
/// `α g + β y + γ` per plane. The weight gradient is `Σ B_i` over images (and channels for
/// scalar weights).
#[allow(clippy::too_many_arguments)]
fn backward_kernel(
    grad: &[f32],
    out: Option<&[f32]>,
    weight: &[f32],
    sources: &[Cow<'_, [f32]>],
    stats: &[f32],
    want: &[bool],
    olds: &[Option<Cow<'_, [f32]>>],
    lay: Layout,
) -> Grads {
    probe::hit(Kernel::DenseSumBackward);
    let (n, c, s, terms) = (lay.n, lay.c, lay.s, lay.terms);
    let image = c * s;
    let mut g = uninit_buffer(n * image);
    let mut dys: Vec<Option<Vec<MaybeUninit<f32>>>> = want
        .iter()
        .map(|&w| w.then(|| uninit_buffer(n * image)))
        .collect();
    // Per image: its slice of `g` and of every wanted source gradient.
    let mut rows: Vec<Vec<&mut [MaybeUninit<f32>]>> = (0..n).map(|_| Vec::new()).collect();
    for dy in dys.iter_mut().flatten() {
        for (row, chunk) in rows.iter_mut().zip(dy.chunks_mut(image.max(1))) {
            row.push(chunk);
        }
    }
    // Normalisation groups: with none, every channel is on its own (no statistics terms).
    let cpg = c.checked_div(lay.groups).unwrap_or(1);
    let count = (cpg * s).max(1) as f32;
    let sums: Vec<Vec<f32>> = g
        .par_chunks_mut(image.max(1))
        .zip(rows.into_par_iter())
        .enumerate()
        .map(|(ni, (gi, mut dyi))| {
            // [A; B_0; B_1; ...] per channel.
            let mut sums = vec![0f32; c * (1 + terms)];
            let mut gi: Vec<&mut [f32]> = gi
                .chunks_mut(s.max(1))
                .enumerate()
                .map(|(ci, gp)| {
                    let off = (ni * c + ci) * s;
                    let d = &grad[off..off + s];
                    match out {
                        Some(o) => write_plane(
                            gp,
                            d.iter()
                                .zip(&o[off..off + s])
                                .map(|(&d, &o)| if o > 0.0 { d } else { 0.0 }),
                        ),
                        None => write_plane(gp, d.iter().copied()),
                    }
                })
                .collect();
            let mut dyi: Vec<Vec<&mut [MaybeUninit<f32>]>> = dyi
                .iter_mut()
                .map(|d| d.chunks_mut(s.max(1)).collect())
                .collect();
            for first in (0..c).step_by(cpg) {
                let group = first..first + cpg;
                for ci in group.clone() {
                    let gp = &*gi[ci];
                    sums[ci] = lane_sum(gp, gp, |g, _| g) as f32;
                    let off = (ni * c + ci) * s;
                    for i in 0..terms {
                        let (mean, inv) = lay.stat(stats, i, ni, ci);
                        let y = &sources[i][off..off + s];
                        sums[c * (1 + i) + ci] =
                            (lane_sum(gp, y, |g, y| g * (y - mean)) * inv as f64) as f32;
                    }
                }
                for (slot, i) in (0..terms).filter(|&i| want[i]).enumerate() {
                    let (mut sdn, mut sdnx) = (0f32, 0f32);
                    if lay.groups > 0 {
                        for cj in group.clone() {
                            let wj = lay.weight(weight, i, cj);
                            sdn += wj * sums[cj];
                            sdnx += wj * sums[c * (1 + i) + cj];
                        }
                    }
                    for ci in group.clone() {
                        let off = (ni * c + ci) * s;
                        let w = lay.weight(weight, i, ci);
                        let (mean, inv) = lay.stat(stats, i, ni, ci);
                        let beta = -inv * inv * sdnx / count;
                        let (alpha, gamma) = (w * inv, -inv * sdn / count - beta * mean);
                        let y = &sources[i][off..off + s];
                        let gp = &*gi[ci];
                        let terms = gp.iter().zip(y);
                        match &olds[i] {
                            // Added to the gradient registered before: one pass, no extra sum.
                            Some(old) => write_plane(
                                dyi[slot][ci],
                                terms
                                    .zip(&old[off..off + s])
                                    .map(|((&g, &y), &o)| alpha * g + beta * y + gamma + o),
                            ),
                            None => write_plane(
                                dyi[slot][ci],
                                terms.map(|(&g, &y)| alpha * g + beta * y + gamma),
                            ),
                        };
                    }
                }
            }
            gi.clear();
            sums
        })
        .collect();
    // SAFETY: every plane of `g` and of each wanted `dY_i` was written above.
    let g = unsafe { assume_init(g) };
    let sources_grads = dys
        .into_iter()
        // SAFETY: as above.
        .map(|d| d.map(|d| unsafe { assume_init(d) }))
        .collect();

    let mut dweight = vec![0f32; terms * lay.cw];
    for per in &sums {
        for i in 0..terms {
            for ci in 0..c {
                let k = i * lay.cw + if lay.cw == 1 { 0 } else { ci };
                dweight[k] += per[c * (1 + i) + ci];
            }
        }
    }
    Grads {
        branch: g,
        weight: dweight,
        sources: sources_grads,
    }
}

/// The forward pass on Flex tensors.
fn forward_flex(
    branch: &FlexTensor,
    weight: &FlexTensor,
    stats: Option<&FlexTensor>,
    sources: &[FlexTensor],
    relu: bool,
) -> FlexTensor {
    let shape = branch.shape().to_vec();
    let st_shape = stats.map(|t| t.shape().to_vec());
    let lay = Layout::new(&shape, sources.len(), &weight.shape(), st_shape.as_deref());
    let src: Vec<_> = sources.iter().map(values).collect();
    let st = stats.map(values);
    let out = forward_kernel(
        &values(branch),
        &values(weight),
        &src,
        st.as_deref().unwrap_or(&[]),
        relu,
        lay,
    );
    flex(out, shape)
}

impl FastDenseSumBackend for Flex {
    fn dense_sum_stats(x: FlexTensor, groups: usize, epsilon: f64) -> FlexTensor {
        let n = x.shape()[0];
        flex(
            stats_kernel(&values(&x), n * groups, epsilon),
            vec![n, groups, 2],
        )
    }

    fn dense_sum(
        branch: FlexTensor,
        weight: FlexTensor,
        stats: FlexTensor,
        y0: FlexTensor,
        y1: FlexTensor,
        y2: FlexTensor,
        y3: FlexTensor,
        y4: FlexTensor,
        y5: FlexTensor,
        terms: usize,
        normalise: bool,
        relu: bool,
        _accumulate: bool, // only the backward pass differs
    ) -> FlexTensor {
        let sources = present([y0, y1, y2, y3, y4, y5], terms);
        forward_flex(
            &branch,
            &weight,
            normalise.then_some(&stats),
            &sources,
            relu,
        )
    }
}

/// Saved for the backward pass: the earlier outputs, their statistics, the weights (all
/// shared, not copied) and the output when fused with ReLU (the next block's input).
type SumState = (
    Vec<FlexTensor>,
    Option<FlexTensor>,
    FlexTensor,
    Option<FlexTensor>,
    bool,
);

/// The backward step of a fused sum with `N` parents: branch, weights, `N − 2` earlier outputs.
#[derive(Debug)]
struct DenseSumBackward<const N: usize>;

impl<const N: usize> Backward<Flex, N> for DenseSumBackward<N> {
    type State = SumState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let (sources, stats, weight, out, accumulate) = ops.state;
        let shape = grad.shape().to_vec();
        let wshape = weight.shape().to_vec();
        let st_shape = stats.as_ref().map(|t| t.shape().to_vec());
        let lay = Layout::new(&shape, sources.len(), &wshape, st_shape.as_deref());
        let src: Vec<_> = sources.iter().map(values).collect();
        let st = stats.as_ref().map(values);
        let want: Vec<bool> = ops.parents[2..].iter().map(Option::is_some).collect();
        // The gradients registered so far for the earlier outputs, taken out to be added to.
        // Only intermediate nodes (`GradInBackward`) are removed by `consume`; a leaf's gradient
        // stays registered, so it is added to by `register` instead.
        let olds: Vec<Option<FlexTensor>> = ops.parents[2..]
            .iter()
            .map(|node| {
                node.as_ref()
                    .filter(|n| accumulate && format!("{:?}", n.requirement) == "GradInBackward")
                    .map(|n| grads.consume::<Flex>(n))
            })
            .collect();
        let old_values: Vec<_> = olds.iter().map(|o| o.as_ref().map(values)).collect();
        let out = out.as_ref().map(values);
        let d = backward_kernel(
            &values(&grad),
            out.as_deref(),
            &values(&weight),
            &src,
            st.as_deref().unwrap_or(&[]),
            &want,
            &old_values,
            lay,
        );
        if let Some(node) = &ops.parents[0] {
            grads.register::<Flex>(node.id, flex(d.branch, shape.clone()));
        }
        if let Some(node) = &ops.parents[1] {
            grads.register::<Flex>(node.id, flex(d.weight, wshape));
        }
        for (node, dy) in ops.parents[2..].iter().zip(d.sources) {
            if let (Some(node), Some(dy)) = (node, dy) {
                grads.register::<Flex>(node.id, flex(dy, shape.clone()));
            }
        }
    }
}

/// [`FastDenseSumBackend::dense_sum`] on autodiff with `N − 2` earlier outputs.
fn tracked_sum<C: CheckpointStrategy, const N: usize>(
    branch: FloatTensor<Autodiff<Flex, C>>,
    weight: FloatTensor<Autodiff<Flex, C>>,
    stats: Option<FloatTensor<Autodiff<Flex, C>>>,
    sources: Vec<FloatTensor<Autodiff<Flex, C>>>,
    relu: bool,
    accumulate: bool,
) -> FloatTensor<Autodiff<Flex, C>> {
    let mut nodes = vec![branch.node(), weight.node()];
    nodes.extend(sources.iter().map(|s| s.node()));
    let nodes: [_; N] = nodes.try_into().expect("N parents");
    let stats = stats.map(|s| s.into_primitive());
    let sources: Vec<FlexTensor> = sources.into_iter().map(|s| s.into_primitive()).collect();
    let (branch, weight) = (branch.into_primitive(), weight.into_primitive());
    let out = forward_flex(&branch, &weight, stats.as_ref(), &sources, relu);
    match DenseSumBackward::<N>
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let kept = relu.then(|| out.clone());
            prep.finish((sources, stats, weight, kept, accumulate), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

impl<C: CheckpointStrategy> FastDenseSumBackend for Autodiff<Flex, C> {
    fn dense_sum_stats(x: FloatTensor<Self>, groups: usize, epsilon: f64) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(Flex::dense_sum_stats(x.into_primitive(), groups, epsilon))
    }

    fn dense_sum(
        branch: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        y0: FloatTensor<Self>,
        y1: FloatTensor<Self>,
        y2: FloatTensor<Self>,
        y3: FloatTensor<Self>,
        y4: FloatTensor<Self>,
        y5: FloatTensor<Self>,
        terms: usize,
        normalise: bool,
        relu: bool,
        accumulate: bool,
    ) -> FloatTensor<Self> {
        let sources = present([y0, y1, y2, y3, y4, y5], terms);
        let args = (branch, weight, normalise.then_some(stats));
        match sources.len() {
            1 => tracked_sum::<C, 3>(args.0, args.1, args.2, sources, relu, accumulate),
            2 => tracked_sum::<C, 4>(args.0, args.1, args.2, sources, relu, accumulate),
            3 => tracked_sum::<C, 5>(args.0, args.1, args.2, sources, relu, accumulate),
            4 => tracked_sum::<C, 6>(args.0, args.1, args.2, sources, relu, accumulate),
            5 => tracked_sum::<C, 7>(args.0, args.1, args.2, sources, relu, accumulate),
            6 => tracked_sum::<C, 8>(args.0, args.1, args.2, sources, relu, accumulate),
            other => unreachable!("1 to {MAX_TERMS} terms, not {other}"),
        }
    }
}

/// Per-(image, group) mean and inverse deviation of `x` for [`dense_sum`] (detached; the
/// gradient through them is [`dense_sum`]'s).
pub fn dense_sum_stats(x: &Tensor<4>, groups: usize, epsilon: f64) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FastDenseSumBackend>::dense_sum_stats(
        x.clone().detach().into_dispatch(),
        groups,
        epsilon,
    ))
}

/// `f(branch + Σ_i weight[i] ⊙ N(sources[i]))` as fused operations (one per [`MAX_TERMS`]
/// earlier outputs): `N` normalises with `stats[i]` from [`dense_sum_stats`] of `sources[i]`,
/// or is the identity when `stats` is `None`; `weight` is `[terms, C]` or `[terms, 1]`; `f` is
/// ReLU when `relu`. Only for tensors where [`applies`](super::applies)`(Op::DenseSum, ..)`.
///
/// `accumulate` is for the sums of one DSNet stage, which share their earlier outputs: set it
/// for every block but the stage's last. The last block's sum reads every earlier output and
/// runs first in the backward pass (it comes last in the forward), so when an earlier block's
/// sum runs backward, each of its earlier outputs already has a gradient registered; the sum
/// adds its own contribution into that tensor in the same pass that computes it, rather than
/// registering a new tensor that autodiff would add with two more passes. Backward panics
/// ("Can't consume the gradients...") if that order does not hold.
pub fn dense_sum(
    branch: Tensor<4>,
    weight: Tensor<2>,
    sources: &[Tensor<4>],
    stats: Option<&[Tensor<3>]>,
    relu: bool,
    accumulate: bool,
) -> Tensor<4> {
    let terms = sources.len();
    assert_eq!(weight.dims()[0], terms, "one weight row per earlier output");
    if let Some(stats) = stats {
        assert_eq!(stats.len(), terms, "statistics for every earlier output");
    }
    if terms == 0 {
        return if relu {
            burn::tensor::activation::relu(branch)
        } else {
            branch
        };
    }
    let chunks = terms.div_ceil(MAX_TERMS);
    let mut acc = branch;
    for k in 0..chunks {
        let (start, end) = (k * MAX_TERMS, ((k + 1) * MAX_TERMS).min(terms));
        let w = if chunks == 1 {
            weight.clone()
        } else {
            weight.clone().narrow(0, start, end - start)
        };
        let st = stats.map(|s| {
            let parts: Vec<Tensor<4>> = s[start..end]
                .iter()
                .map(|t| t.clone().unsqueeze())
                .collect();
            Tensor::cat(parts, 0)
        });
        let normalise = st.is_some();
        // Unused slots repeat the last term (the operation ignores them).
        let ys: [_; MAX_TERMS] =
            std::array::from_fn(|k| sources[(start + k).min(end - 1)].clone().into_dispatch());
        let [y0, y1, y2, y3, y4, y5] = ys;
        acc = Tensor::from_dispatch(<Dispatch as FastDenseSumBackend>::dense_sum(
            acc.into_dispatch(),
            w.clone().into_dispatch(),
            st.map_or_else(|| w.into_dispatch(), Tensor::into_dispatch),
            y0,
            y1,
            y2,
            y3,
            y4,
            y5,
            end - start,
            normalise,
            relu && k + 1 == chunks,
            accumulate,
        ));
    }
    acc
}
