//! Pooling on Flex: average pooling over non-overlapping `s x s` windows (kernel = stride, no
//! padding, floor), DenseNet's transition pooling, and max pooling over square windows with
//! symmetric padding, the ImageNet stem's 3x3 stride-2 pool.
//!
//! Why: Burn 0.22's generic pooling on Flex is slow on the widest activations of the network,
//! which are the ones pooled. With 2 threads, where one pass over the activation (`x * 2`)
//! took about 4 ms: average pooling of `[8, 256, 56, 56]` took 14 ms, and the stem's max pool
//! of `[8, 64, 112, 112]` took 35 ms forward and 97 ms forward + backward. Here each output
//! plane is one pass over its input rows. The average pool's backward spreads `dy / s²` over
//! each window; the max pool keeps the position of each window's maximum (the first one in
//! row-major order on ties) and its backward adds `dy` there. Other windows (overlapping
//! average, dilated or ceil-mode max), dtypes and backends use Burn's `forward`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::pool::{AvgPool2d, MaxPool2d};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::buffer::{assume_init, uninit_buffer, with_scratch};
use super::probe::{self, Kernel};
use super::tensor::{flex, values};
use super::{Op, applies};

/// Block average pooling and window max pooling.
#[backend_extension(Flex, Autodiff)]
pub trait FastPoolBackend: Backend {
    /// Mean of each non-overlapping `s x s` window of `x` `[N, C, H, W]`: `[N, C, H/s, W/s]`
    /// (floor; trailing rows and columns that fill no window are dropped).
    fn block_avg_pool(x: FloatTensor<Self>, s: usize) -> FloatTensor<Self> {
        Self::avg_pool2d(x, [s, s], [s, s], [0, 0], true, false)
    }

    /// Max of each `k x k` window at stride `s` over `x` `[N, C, H, W]` padded by `p` on every
    /// side (the padding never wins): `[N, C, (H + 2p − k)/s + 1, (W + 2p − k)/s + 1]`.
    fn window_max_pool(x: FloatTensor<Self>, k: usize, s: usize, p: usize) -> FloatTensor<Self> {
        Self::max_pool2d(x, [k, k], [s, s], [p, p], [1, 1], false)
    }
}

/// A max pool's window: kernel `k`, stride `s`, padding `p`.
#[derive(Clone, Copy, Debug)]
struct Window {
    k: usize,
    s: usize,
    p: usize,
}

impl Window {
    /// Output length along an input side of `len`.
    fn out(&self, len: usize) -> usize {
        (len + 2 * self.p - self.k) / self.s + 1
    }

    /// Input range `[lo, hi)` of output index `o` along a side of `len`, clipped to the input.
    fn span(&self, o: usize, len: usize) -> (usize, usize) {
        let start = o * self.s;
        let lo = start.saturating_sub(self.p);
        let hi = (start + self.k).saturating_sub(self.p).min(len);
        (lo, hi)
    }
}

/// Per plane of `x` `[planes, h, w]`: every window's maximum and, with `indices`, the position
/// of the first maximum in its plane (for the backward pass).
fn max_kernel(
    x: &[f32],
    planes: usize,
    (h, w): (usize, usize),
    win: Window,
    indices: bool,
) -> (Vec<f32>, Vec<u32>) {
    probe::hit(Kernel::WindowMaxPool);
    let (oh, ow) = (win.out(h), win.out(w));
    let plane_out = oh * ow;
    let mut y = uninit_buffer(planes * plane_out);
    let mut at = vec![0u32; if indices { planes * plane_out } else { 0 }];
    let run = |out: &mut [std::mem::MaybeUninit<f32>], idx: &mut [u32], plane: &[f32]| {
        // Per output row: the maximum over the window's rows for every column (a vectorisable
        // pass over whole rows), then over each window's columns of that.
        with_scratch(w, |cols| {
            for oy in 0..oh {
                let (y0, y1) = win.span(oy, h);
                cols.copy_from_slice(&plane[y0 * w..(y0 + 1) * w]);
                for iy in y0 + 1..y1 {
                    for (c, &v) in cols.iter_mut().zip(&plane[iy * w..(iy + 1) * w]) {
                        *c = c.max(v);
                    }
                }
                for ox in 0..ow {
                    let (x0, x1) = win.span(ox, w);
                    let best = cols[x0..x1]
                        .iter()
                        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    out[oy * ow + ox].write(best);
                    if let Some(i) = idx.get_mut(oy * ow + ox) {
                        // The first position holding the maximum, in row-major order.
                        let first = (y0..y1)
                            .flat_map(|iy| (x0..x1).map(move |ix| iy * w + ix))
                            .find(|&q| plane[q] == best)
                            .unwrap_or(y0 * w + x0);
                        *i = first as u32;
                    }
                }
            }
        });
    };
    let chunk = plane_out.max(1);
    if indices {
        y.par_chunks_mut(chunk)
            .zip(at.par_chunks_mut(chunk))
            .zip(x.par_chunks((h * w).max(1)))
            .for_each(|((out, idx), plane)| run(out, idx, plane));
    } else {
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks((h * w).max(1)))
            .for_each(|(out, plane)| run(out, &mut [], plane));
    }
    // SAFETY: every output value of every plane was written above.
    (unsafe { assume_init(y) }, at)
}

/// `dx` `[planes, h, w]`: each output's gradient added at its window's maximum.
fn max_backward_kernel(dy: &[f32], at: &[u32], planes: usize, (h, w): (usize, usize)) -> Vec<f32> {
    probe::hit(Kernel::WindowMaxPoolBackward);
    let plane_out = dy.len() / planes.max(1);
    let mut dx = vec![0.0f32; planes * h * w];
    dx.par_chunks_mut((h * w).max(1))
        .zip(
            dy.par_chunks(plane_out.max(1))
                .zip(at.par_chunks(plane_out.max(1))),
        )
        .for_each(|(plane, (g, idx))| {
            for (&gv, &i) in g.iter().zip(idx) {
                plane[i as usize] += gv;
            }
        });
    dx
}

/// `[n·c, h, w]` planes into `[n·c, h/s, w/s]` window means.
fn avg_kernel(x: &[f32], planes: usize, (h, w): (usize, usize), s: usize) -> Vec<f32> {
    probe::hit(Kernel::BlockAvgPool);
    let (oh, ow) = (h / s, w / s);
    let mut y = uninit_buffer(planes * oh * ow);
    let scale = 1.0 / (s * s) as f32;
    y.par_chunks_mut((oh * ow).max(1))
        .zip(x.par_chunks((h * w).max(1)))
        .for_each(|(out, plane)| {
            for (oy, row_out) in out.chunks_exact_mut(ow.max(1)).enumerate() {
                let rows = &plane[oy * s * w..(oy * s + s) * w];
                for (ox, o) in row_out.iter_mut().enumerate() {
                    let sum: f32 = rows
                        .chunks_exact(w)
                        .map(|r| r[ox * s..ox * s + s].iter().sum::<f32>())
                        .sum();
                    o.write(sum * scale);
                }
            }
        });
    // SAFETY: every output value of every plane was written above.
    unsafe { assume_init(y) }
}

/// `dx` `[n·c, h, w]`: `dy / s²` over each window, zero in the dropped rows and columns.
fn avg_backward_kernel(dy: &[f32], planes: usize, (h, w): (usize, usize), s: usize) -> Vec<f32> {
    probe::hit(Kernel::BlockAvgPoolBackward);
    let (oh, ow) = (h / s, w / s);
    let mut dx = vec![0.0f32; planes * h * w];
    let scale = 1.0 / (s * s) as f32;
    dx.par_chunks_mut((h * w).max(1))
        .zip(dy.par_chunks((oh * ow).max(1)))
        .for_each(|(plane, g)| {
            for (oy, g_row) in g.chunks_exact(ow.max(1)).enumerate().take(oh) {
                for r in plane[oy * s * w..(oy * s + s) * w].chunks_exact_mut(w) {
                    for (ox, &gv) in g_row.iter().enumerate() {
                        r[ox * s..ox * s + s].fill(gv * scale);
                    }
                }
            }
        });
    dx
}

/// `(planes, (h, w))` of an `[N, C, H, W]` tensor.
fn planes(x: &FlexTensor) -> (usize, (usize, usize)) {
    let d = x.shape().to_vec();
    (d[0] * d[1], (d[2], d[3]))
}

impl FastPoolBackend for Flex {
    fn block_avg_pool(x: FlexTensor, s: usize) -> FlexTensor {
        let d = x.shape().to_vec();
        let (n, (h, w)) = planes(&x);
        flex(
            avg_kernel(&values(&x), n, (h, w), s),
            vec![d[0], d[1], h / s, w / s],
        )
    }

    fn window_max_pool(x: FlexTensor, k: usize, s: usize, p: usize) -> FlexTensor {
        max_flex(&x, Window { k, s, p }, false).0
    }
}

/// The max pool's output on Flex and, with `indices`, the positions of the maxima.
fn max_flex(x: &FlexTensor, win: Window, indices: bool) -> (FlexTensor, Vec<u32>) {
    let d = x.shape().to_vec();
    let (n, (h, w)) = planes(x);
    let (y, at) = max_kernel(&values(x), n, (h, w), win, indices);
    (flex(y, vec![d[0], d[1], win.out(h), win.out(w)]), at)
}

/// Saved for the max pool's backward pass: the input's shape and the maxima's positions.
#[derive(Debug)]
struct WindowMaxPoolBackward;

impl Backward<Flex, 1> for WindowMaxPoolBackward {
    type State = (Vec<usize>, std::sync::Arc<Vec<u32>>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (shape, at) = ops.state;
        if let Some(node) = node {
            let planes = shape[0] * shape[1];
            let dx = max_backward_kernel(&values(&grad), &at, planes, (shape[2], shape[3]));
            grads.register::<Flex>(node.id, flex(dx, shape));
        }
    }
}

/// Saved for the backward pass: the input's shape and the window.
#[derive(Debug)]
struct BlockAvgPoolBackward;

impl Backward<Flex, 1> for BlockAvgPoolBackward {
    type State = (Vec<usize>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (shape, s) = ops.state;
        if let Some(node) = node {
            let planes = shape[0] * shape[1];
            let dx = avg_backward_kernel(&values(&grad), planes, (shape[2], shape[3]), s);
            grads.register::<Flex>(node.id, flex(dx, shape));
        }
    }
}

impl<C: CheckpointStrategy> FastPoolBackend for Autodiff<Flex, C> {
    fn block_avg_pool(x: FloatTensor<Self>, s: usize) -> FloatTensor<Self> {
        match BlockAvgPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let shape = x.shape().to_vec();
                prep.finish((shape, s), Flex::block_avg_pool(x.into_primitive(), s))
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::block_avg_pool(x.into_primitive(), s)),
        }
    }

    fn window_max_pool(x: FloatTensor<Self>, k: usize, s: usize, p: usize) -> FloatTensor<Self> {
        let win = Window { k, s, p };
        match WindowMaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let shape = x.shape().to_vec();
                let (y, at) = max_flex(&x.into_primitive(), win, true);
                prep.finish((shape, std::sync::Arc::new(at)), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(max_flex(&x.into_primitive(), win, false).0),
        }
    }
}

/// `pool.forward(x)`, as the block pooling operation on Flex when the windows do not overlap
/// (kernel = stride, square), there is no padding and no ceil mode, and each side has a
/// window.
pub fn avg_pool_forward(pool: &AvgPool2d, x: Tensor<4>) -> Tensor<4> {
    let [k0, k1] = pool.kernel_size;
    let [_, _, h, w] = x.dims();
    let blocks = k0 == k1 && pool.stride == [k0, k1] && k0 >= 1 && h >= k0 && w >= k0;
    let unpadded = matches!(
        pool.padding,
        PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
    );
    if blocks && unpadded && !pool.ceil_mode && applies(Op::Pool, &x) {
        Tensor::from_dispatch(<Dispatch as FastPoolBackend>::block_avg_pool(
            x.into_dispatch(),
            k0,
        ))
    } else {
        pool.forward(x)
    }
}

/// `pool.forward(x)`, as the window max pool on Flex for a square window with symmetric
/// padding smaller than the window (so every window holds an input value), no dilation, no
/// ceil mode, and an input at least as large as the window.
pub fn max_pool_forward(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [k0, k1] = pool.kernel_size;
    let [_, _, h, w] = x.dims();
    let pad = match pool.padding {
        PaddingConfig2d::Valid => Some(0),
        PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => Some(t),
        _ => None,
    };
    let fits = pool.stride[0] == pool.stride[1] && pool.stride[0] >= 1 && pool.dilation == [1, 1];
    match pad {
        Some(p)
            if k0 == k1
                && fits
                && p < k0
                && h + 2 * p >= k0
                && w + 2 * p >= k0
                && !pool.ceil_mode
                && u32::try_from(h * w).is_ok()
                && applies(Op::Pool, &x) =>
        {
            Tensor::from_dispatch(<Dispatch as FastPoolBackend>::window_max_pool(
                x.into_dispatch(),
                k0,
                pool.stride[0],
                p,
            ))
        }
        _ => pool.forward(x),
    }
}
