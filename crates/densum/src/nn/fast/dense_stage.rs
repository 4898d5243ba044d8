//! DSNet variant b's dense shortcuts of a whole stage on one tape. Block l's sum
//! `Y_l = f(X_l + Σ_{i<l} W_{l,i} ⊙ N(Y_i))` reads outputs that earlier sums of the same stage
//! made, so the gradient that every later sum sends back to `Y_i` can be added up where `Y_i`
//! was made, in the pass that computes that sum's own gradient.
//!
//! Why: with one operation per sum ([`super::dense_sum`]), each sum's backward writes a
//! gradient for every earlier output it read, reading that output and the gradient so far
//! and writing the new total: three passes over a tensor per (sum, earlier output) pair,
//! which kept DSNet-50's training step 13-15 % over ResNet-50's on Intel
//! (docs/results/speed.md). Here the sums of a stage share a [`StageTape`]: the outputs,
//! their statistics, the weights and, once a sum has run backward, its pre-activation
//! gradient `g_m`. `Y_l`'s producer is block l's own sum, whose backward runs after every
//! later sum's (each later sum depends on it through the branches), so it adds the later
//! sums' terms `r (G − mean(G) − x̂ mean(G x̂))`, `G = Σ_{m>l} W_{m,l} ⊙ g_m`, to the gradient it
//! received from the next block, in the pass that applies its ReLU mask; the same pass
//! yields the weights' gradients `Σ g_m x̂_l`. Per pair one read of `g_m`, per output one read
//! of `Y_l`, and nothing written per pair. `Y_0` (the stage's projection block's output) gets
//! its gradient from block 1's sum, which then registers every weight's gradient (each row
//! is complete by then).
//!
//! Each sum's autodiff parents are its branch, its weights and the previous output: the last
//! orders the backward steps (Burn runs deeper steps first, and sum l+1 is deeper than sum
//! l); the gradients to older outputs travel through the tape. Other backends, variant a,
//! DS2Net's inner shortcut and BatchNorm as N use [`super::dense_sum`] or the composed path;
//! tests compare them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::buffer::{assume_init, uninit_buffer};
use super::dense_sum::{Layout, forward_kernel, stats_kernel, write_plane};
use super::lanes::lane_sum;
use super::probe::{self, Kernel};
use super::tensor::{flex, values};

/// Block `l`'s sum on a stage tape.
#[backend_extension(Flex, Autodiff)]
pub trait FastDenseStageBackend: Backend {
    /// `f(branch + Σ_{i<l} weight[i] ⊙ N(Y_i))` over the outputs `Y_0..Y_{l-1}` recorded on
    /// tape `tape` ([`StageTape::id`]), `prev` being `Y_{l-1}` (recorded as `Y_0` by the
    /// stage's first sum); records the output as `Y_l`. `weight` is `[l, C]` or `[l, 1]`; `f`
    /// is ReLU when `relu`.
    fn stage_sum(
        branch: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        prev: FloatTensor<Self>,
        tape: u64,
        relu: bool,
    ) -> FloatTensor<Self>;
}

/// One sum as the tape keeps it.
#[derive(Debug)]
struct SumRecord {
    /// Its weights' values, `[l, cw]`, and their tensor's shape.
    weight: Vec<f32>,
    weight_shape: Vec<usize>,
    /// Weight columns: C (per channel) or 1 (scalar).
    cw: usize,
    /// Whether its output went through a ReLU.
    relu: bool,
    /// Its weights' autodiff node and its pre-activation gradient, once it has run backward.
    weight_node: Option<NodeId>,
    g: Option<FlexTensor>,
    /// Its weights' gradient, row `i` complete once `Y_i`'s gradient is.
    dweight: Vec<f32>,
}

/// What a stage's sums share.
#[derive(Debug)]
struct Tape {
    /// Normalisation groups (0: no normalisation) and epsilon.
    groups: usize,
    epsilon: f64,
    /// `Y_0, Y_1, ...` and the statistics of those a later sum has read (`[N, groups, 2]`).
    ys: Vec<FlexTensor>,
    stats: Vec<Vec<f32>>,
    /// `sums[l - 1]` is block l's sum.
    sums: Vec<SumRecord>,
}

type Shared = Arc<Mutex<Tape>>;

static NEXT_TAPE: AtomicU64 = AtomicU64::new(1);
/// The tapes of the stages now running forward, by id (Burn's extension operations take
/// tensors and plain values, so the tape travels as a number).
static TAPES: Mutex<BTreeMap<u64, Shared>> = Mutex::new(BTreeMap::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves consistent data (only whole records
    // are pushed), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tape of one stage's forward pass: create it before the stage's first sum and drop it
/// after its last (the operations keep what their backward passes need).
#[derive(Debug)]
pub struct StageTape {
    id: u64,
}

impl StageTape {
    /// A tape for sums normalising with `groups` groups (0: without normalisation).
    pub fn new(groups: usize, epsilon: f64) -> Self {
        let id = NEXT_TAPE.fetch_add(1, Ordering::Relaxed);
        let tape = Tape {
            groups,
            epsilon,
            ys: Vec::new(),
            stats: Vec::new(),
            sums: Vec::new(),
        };
        lock(&TAPES).insert(id, Arc::new(Mutex::new(tape)));
        StageTape { id }
    }

    /// Its number, as [`FastDenseStageBackend::stage_sum`] takes it.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for StageTape {
    fn drop(&mut self) {
        lock(&TAPES).remove(&self.id);
    }
}

fn shared(id: u64) -> Shared {
    lock(&TAPES)
        .get(&id)
        .cloned()
        .expect("a stage sum's tape lives while its stage runs forward")
}

impl Tape {
    /// Block l's sum: records `prev` as `Y_0` on an empty tape, computes the statistics of
    /// `Y_{l-1}` (the newest output no sum has read yet), the sum, and records its output.
    fn forward(
        &mut self,
        branch: &FlexTensor,
        weight: &FlexTensor,
        prev: &FlexTensor,
        relu: bool,
    ) -> (FlexTensor, usize) {
        if self.ys.is_empty() {
            self.ys.push(prev.clone());
        }
        let l = self.ys.len();
        let shape = branch.shape().to_vec();
        let n = shape[0];
        if self.groups > 0 && self.stats.len() < l {
            let st = stats_kernel(&values(&self.ys[l - 1]), n * self.groups, self.epsilon);
            self.stats.push(st);
        }
        let stats_shape = [l, n, self.groups, 2];
        let wshape = weight.shape().to_vec();
        let lay = Layout::new(
            &shape,
            l,
            &wshape,
            (self.groups > 0).then_some(&stats_shape[..]),
        );
        let w = values(weight).into_owned();
        let out = {
            let stats = self.stats.concat();
            let sources: Vec<_> = self.ys.iter().map(values).collect();
            forward_kernel(&values(branch), &w, &sources, &stats, relu, lay)
        };
        let out = flex(out, shape);
        self.ys.push(out.clone());
        self.sums.push(SumRecord {
            dweight: vec![0.0; w.len()],
            weight: w,
            weight_shape: wshape,
            cw: lay.cw,
            relu,
            weight_node: None,
            g: None,
        });
        (out, l)
    }

    /// The gradient with respect to `Y_j`'s pre-activation (`j >= 1`, with `grad` the gradient
    /// received for `Y_j`) or to `Y_0` itself (`j = 0`, `grad` `None`): `grad` plus every
    /// later sum's term through the normalisation, under `Y_j`'s ReLU mask; adds row `j` of
    /// the later sums' weight gradients.
    fn producer_grad(&mut self, j: usize, grad: Option<&FlexTensor>) -> Vec<f32> {
        let y = &self.ys[j];
        let shape = y.shape().to_vec();
        let (n, c) = (shape[0], shape[1]);
        let s = shape[2..].iter().product();
        let later: Vec<(usize, FlexTensor)> = self
            .sums
            .iter()
            .enumerate()
            .skip(j)
            .filter_map(|(k, rec)| rec.g.clone().map(|g| (k, g)))
            .collect();
        let later_values: Vec<_> = later.iter().map(|(_, g)| values(g)).collect();
        let rows: Vec<(&[f32], &[f32])> = later
            .iter()
            .zip(&later_values)
            .map(|(&(k, _), g)| {
                let rec = &self.sums[k];
                (&g[..], &rec.weight[j * rec.cw..(j + 1) * rec.cw])
            })
            .collect();
        let relu = j >= 1 && self.sums[j - 1].relu;
        let groups = if later.is_empty() { 0 } else { self.groups };
        let grad_values = grad.map(values);
        let (dy, dw) = producer_kernel(
            grad_values.as_deref(),
            &values(y),
            relu,
            self.stats.get(j).map_or(&[][..], |v| &v[..]),
            &rows,
            [n, c, s, groups],
        );
        drop(rows);
        for ((k, _), d) in later.iter().zip(dw) {
            let rec = &mut self.sums[*k];
            let row = &mut rec.dweight[j * rec.cw..(j + 1) * rec.cw];
            row.iter_mut().zip(d).for_each(|(a, b)| *a += b);
        }
        dy
    }
}

/// `dY = [grad +] r (G − mean_grp(G) − x̂ mean_grp(G x̂))` with `G = Σ_m w_m ⊙ g_m` over the
/// `later` sums' pre-activation gradients `g_m` and weight rows `w_m` (length C or 1), then
/// `dY · [y > 0]` when `relu`; and per later sum its weight row's gradient `Σ g_m x̂`
/// (summed over channels for a scalar weight). `x̂ = (y − μ) r` with `stats` per image and
/// group; without groups (`dims[3] = 0`) `x̂ = y` and no statistics terms. One task per image,
/// one group at a time, so the second pass reads `G` and `y` from cache.
fn producer_kernel(
    grad: Option<&[f32]>,
    y: &[f32],
    relu: bool,
    stats: &[f32],
    later: &[(&[f32], &[f32])],
    [n, c, s, groups]: [usize; 4],
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let image = c * s;
    let mut out = uninit_buffer(n * image);
    let cpg = c.checked_div(groups).unwrap_or(1).max(1);
    let count = (cpg * s).max(1) as f32;
    let cw = |w: &[f32], ci: usize| if w.len() == 1 { 0 } else { ci };
    let per_image: Vec<Vec<Vec<f32>>> = out
        .par_chunks_mut(image.max(1))
        .enumerate()
        .map(|(ni, dst)| {
            let mut dw: Vec<Vec<f32>> = later.iter().map(|(_, w)| vec![0.0; w.len()]).collect();
            let mut big_g = vec![0f32; cpg * s];
            for (gi, first) in (0..c).step_by(cpg).enumerate() {
                let (mean, inv) = if groups > 0 {
                    let k = 2 * (ni * groups + gi);
                    (stats[k], stats[k + 1])
                } else {
                    (0.0, 1.0)
                };
                let (mut sg, mut sgx) = (0f64, 0f64);
                for k in 0..cpg.min(c - first) {
                    let (ci, off) = (first + k, ni * image + (first + k) * s);
                    let yp = &y[off..off + s];
                    let gp = &mut big_g[k * s..(k + 1) * s];
                    for (m, (gm, w)) in later.iter().enumerate() {
                        let (wv, gm) = (w[cw(w, ci)], &gm[off..off + s]);
                        if m == 0 {
                            gp.iter_mut().zip(gm).for_each(|(a, &b)| *a = wv * b);
                        } else {
                            gp.iter_mut().zip(gm).for_each(|(a, &b)| *a += wv * b);
                        }
                        let d = lane_sum(gm, yp, |g, y| g * (y - mean)) * inv as f64;
                        dw[m][cw(w, ci)] += d as f32;
                    }
                    if groups > 0 {
                        sg += lane_sum(gp, gp, |g, _| g);
                        sgx += lane_sum(gp, yp, |g, y| g * (y - mean)) * inv as f64;
                    }
                }
                // dY = α G + β y + γ per group.
                let (alpha, beta, gamma) = if groups > 0 {
                    let beta = -inv * inv * sgx as f32 / count;
                    (inv, beta, -inv * sg as f32 / count - beta * mean)
                } else {
                    (1.0, 0.0, 0.0)
                };
                for k in 0..cpg.min(c - first) {
                    let off = ni * image + (first + k) * s;
                    let yp = &y[off..off + s];
                    let gp = &big_g[k * s..(k + 1) * s];
                    let d = &mut dst[(first + k) * s..(first + k + 1) * s];
                    let mask = |v: f32, y: f32| if relu && y <= 0.0 { 0.0 } else { v };
                    match (grad, later.is_empty()) {
                        (Some(gr), true) => write_plane(
                            d,
                            gr[off..off + s].iter().zip(yp).map(|(&g, &y)| mask(g, y)),
                        ),
                        (Some(gr), false) => write_plane(
                            d,
                            gr[off..off + s].iter().zip(gp.iter().zip(yp)).map(
                                |(&g, (&big, &y))| mask(g + alpha * big + beta * y + gamma, y),
                            ),
                        ),
                        (None, false) => write_plane(
                            d,
                            gp.iter()
                                .zip(yp)
                                .map(|(&big, &y)| mask(alpha * big + beta * y + gamma, y)),
                        ),
                        (None, true) => write_plane(d, yp.iter().map(|_| 0.0)),
                    };
                }
            }
            dw
        })
        .collect();
    // SAFETY: every plane of every image was written above.
    let out = unsafe { assume_init(out) };
    let mut dw: Vec<Vec<f32>> = later.iter().map(|(_, w)| vec![0.0; w.len()]).collect();
    for per in per_image {
        for (acc, d) in dw.iter_mut().zip(per) {
            acc.iter_mut().zip(d).for_each(|(a, b)| *a += b);
        }
    }
    (out, dw)
}

impl FastDenseStageBackend for Flex {
    fn stage_sum(
        branch: FlexTensor,
        weight: FlexTensor,
        prev: FlexTensor,
        tape: u64,
        relu: bool,
    ) -> FlexTensor {
        lock(&shared(tape)).forward(&branch, &weight, &prev, relu).0
    }
}

/// The backward step of block l's sum: parents branch, weights, `Y_{l-1}`.
#[derive(Debug)]
struct StageSumBackward;

impl Backward<Flex, 3> for StageSumBackward {
    type State = (Shared, usize);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        probe::hit(Kernel::DenseSumBackward);
        let grad = grads.consume::<Flex>(&ops.node);
        let (tape, l) = ops.state;
        let mut t = lock(&tape);
        let shape = grad.shape().to_vec();
        let g = flex(t.producer_grad(l, Some(&grad)), shape.clone());
        drop(grad);
        let rec = &mut t.sums[l - 1];
        rec.g = Some(g.clone());
        rec.weight_node = ops.parents[1].as_ref().map(|node| node.id);
        if let Some(node) = &ops.parents[0] {
            grads.register::<Flex>(node.id, g);
        }
        if l == 1 {
            // The stage's first sum runs backward last: `Y_0`'s gradient, and every weight's.
            let dy0 = t.producer_grad(0, None);
            if let Some(node) = &ops.parents[2] {
                grads.register::<Flex>(node.id, flex(dy0, shape));
            }
            for rec in &t.sums {
                if let (Some(node), Some(_)) = (rec.weight_node, &rec.g) {
                    let dw = flex(rec.dweight.clone(), rec.weight_shape.clone());
                    grads.register::<Flex>(node, dw);
                }
            }
        }
    }
}

impl<C: CheckpointStrategy> FastDenseStageBackend for Autodiff<Flex, C> {
    fn stage_sum(
        branch: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        prev: FloatTensor<Self>,
        tape: u64,
        relu: bool,
    ) -> FloatTensor<Self> {
        let nodes = [branch.node(), weight.node(), prev.node()];
        let tape = shared(tape);
        let (out, l) = lock(&tape).forward(
            &branch.into_primitive(),
            &weight.into_primitive(),
            &prev.into_primitive(),
            relu,
        );
        match StageSumBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((tape, l), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

/// Block l's dense shortcut on `tape` (see the module doc): `f(branch + Σ_{i<l} weight[i] ⊙
/// N(Y_i))` with `prev` = `Y_{l-1}`, the previous block's output (on the stage's first sum,
/// the first block's output, recorded as `Y_0`). Call it for blocks 1, 2, ... of one stage in
/// order, with the tape's normalisation (parameter-free group norm or none) and weights
/// `[l, C]` or `[l, 1]`. Only for tensors where [`applies`](super::applies)`(Op::DenseSum,
/// ..)`.
pub fn stage_sum(
    branch: Tensor<4>,
    weight: Tensor<2>,
    prev: &Tensor<4>,
    tape: &StageTape,
    relu: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FastDenseStageBackend>::stage_sum(
        branch.into_dispatch(),
        weight.into_dispatch(),
        prev.clone().into_dispatch(),
        tape.id(),
        relu,
    ))
}
