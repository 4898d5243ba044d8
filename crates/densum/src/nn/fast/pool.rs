//! Average pooling over non-overlapping `s x s` windows (kernel = stride, no padding, floor),
//! DenseNet's transition pooling, as one operation on Flex.
//!
//! Why: Burn 0.22's generic pooling on Flex took 14 ms for a `[8, 256, 56, 56]` input with 2
//! threads, where one pass over the activation takes about 4 (`x * 2`, same run), and the
//! transitions pool the widest activations of the network. Here each output plane is one pass
//! over its input rows, and the backward spreads `dy / s²` over each window. Other windows
//! (overlapping, padded, ceil mode), dtypes and backends use Burn's `AvgPool2d::forward`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::pool::AvgPool2d;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::buffer::{assume_init, uninit_buffer};
use super::probe::{self, Kernel};
use super::tensor::{flex, values};
use super::{Op, applies};

/// Block average pooling.
#[backend_extension(Flex, Autodiff)]
pub trait FastPoolBackend: Backend {
    /// Mean of each non-overlapping `s x s` window of `x` `[N, C, H, W]`: `[N, C, H/s, W/s]`
    /// (floor; trailing rows and columns that fill no window are dropped).
    fn block_avg_pool(x: FloatTensor<Self>, s: usize) -> FloatTensor<Self> {
        Self::avg_pool2d(x, [s, s], [s, s], [0, 0], true, false)
    }
}

/// `[n·c, h, w]` planes into `[n·c, h/s, w/s]` window means.
fn forward_kernel(x: &[f32], planes: usize, (h, w): (usize, usize), s: usize) -> Vec<f32> {
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
fn backward_kernel(dy: &[f32], planes: usize, (h, w): (usize, usize), s: usize) -> Vec<f32> {
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
            forward_kernel(&values(&x), n, (h, w), s),
            vec![d[0], d[1], h / s, w / s],
        )
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
            let dx = backward_kernel(&values(&grad), planes, (shape[2], shape[3]), s);
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
