//! A 2-D convolution whose gradients are computed by im2col + GEMM on the Flex (CPU) backend.
//!
//! Why: profiling a ResNet-50 training step (docs/results/profile.md) showed that Burn 0.22's
//! generic convolution backward dominates the step on Flex. The weight gradient is computed
//! as a convolution of the transposed input with the transposed output gradient (a "kernel"
//! as large as the feature map, with tiny GEMMs and two layout copies), and the input gradient
//! as a transposed convolution. Here both are one GEMM per image over an im2col buffer:
//!
//! - weight: `dW[O, C·kh·kw] += dY_n[O, P] · col(X_n)[C·kh·kw, P]ᵀ`, images split over the
//!   rayon threads, each thread summing its own partial `dW`;
//! - input: `col(dX_n) = Wᵀ · dY_n`, then scattered back (col2im), images in parallel.
//!
//! 1x1 stride-1 unpadded convolutions skip im2col/col2im entirely (X_n already is the column
//! matrix). The forward pass stays Burn's own convolution.
//!
//! The mechanism is Burn's backend extension: [`FastConvBackend`] is implemented for `Flex`
//! (fast gradient kernels) and for `Autodiff<B, C>` (a custom differentiable operation whose
//! backward calls the inner backend's gradient kernels). Other backends, other dtypes, grouped,
//! dilated or asymmetrically padded convolutions, and convolutions with a bias use Burn's
//! generic [`conv2d`](burn::tensor::module::conv2d) unchanged; tests compare both paths.

use std::borrow::Cow;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

/// Convolution operations with backend-specific gradient kernels.
///
/// The default bodies are Burn's generic implementations, so a backend that does not override
/// them behaves exactly like [`burn::tensor::module::conv2d`].
#[backend_extension(Flex, Autodiff)]
pub trait FastConvBackend: Backend {
    /// Bias-free 2-D convolution (forward); on `Autodiff` its backward uses
    /// [`conv2d_x_grad`](Self::conv2d_x_grad) and [`conv2d_w_grad`](Self::conv2d_w_grad).
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }

    /// Gradient of the convolution with respect to its input.
    fn conv2d_x_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, options)
    }

    /// Gradient of the convolution with respect to its weight.
    fn conv2d_w_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, options)
    }
}

/// Geometry of one convolution, in the terms the kernels use.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: [usize; 2],
    pad: [usize; 2],
}

impl Geom {
    /// The geometry when the fast kernels support the case: f32, no groups, no dilation,
    /// symmetric padding. `None` sends the call to Burn's generic path.
    fn supported(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> Option<Self> {
        if x.dtype() != DType::F32
            || weight.dtype() != DType::F32
            || options.groups != 1
            || options.dilation != [1, 1]
            || options.is_asymmetric()
        {
            return None;
        }
        let [n, c, h, w] = x.shape().dims();
        let [o, ci, kh, kw] = weight.shape().dims();
        let pad = options.padding_begin();
        let stride = options.stride;
        if ci != c || h + 2 * pad[0] < kh || w + 2 * pad[1] < kw {
            return None;
        }
        Some(Geom {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh: (h + 2 * pad[0] - kh) / stride[0] + 1,
            ow: (w + 2 * pad[1] - kw) / stride[1] + 1,
            stride,
            pad,
        })
    }

    /// Rows of the column matrix: C·kh·kw.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per image.
    fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Whether X_n is already the column matrix (1x1, stride 1, no padding).
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }

    /// For kernel offset `k` along one axis: the output range whose input index
    /// `o·stride + k − pad` lies inside `[0, len)`, so the inner loops need no bounds tests.
    fn valid(out: usize, stride: usize, k: usize, pad: usize, len: usize) -> (usize, usize) {
        let first = pad.saturating_sub(k).div_ceil(stride);
        let last = if len + pad > k {
            ((len + pad - k - 1) / stride + 1).min(out)
        } else {
            0
        };
        (first.min(last), last)
    }

    /// col[K, P] from one image x[C, H, W] (zeros where the window is in the padding).
    fn im2col(&self, x: &[f32], col: &mut [f32]) {
        let p = self.p();
        for ci in 0..self.c {
            let plane = &x[ci * self.h * self.w..][..self.h * self.w];
            for ki in 0..self.kh {
                let (oy0, oy1) = Self::valid(self.oh, self.stride[0], ki, self.pad[0], self.h);
                for kj in 0..self.kw {
                    let (ox0, ox1) = Self::valid(self.ow, self.stride[1], kj, self.pad[1], self.w);
                    let row = &mut col[((ci * self.kh + ki) * self.kw + kj) * p..][..p];
                    row.fill(0.0);
                    for oy in oy0..oy1 {
                        let iy = oy * self.stride[0] + ki - self.pad[0];
                        let src = &plane[iy * self.w..][..self.w];
                        let dst = &mut row[oy * self.ow..][..self.ow];
                        if self.stride[1] == 1 {
                            let ix0 = ox0 + kj - self.pad[1];
                            dst[ox0..ox1].copy_from_slice(&src[ix0..ix0 + (ox1 - ox0)]);
                        } else {
                            for ox in ox0..ox1 {
                                dst[ox] = src[ox * self.stride[1] + kj - self.pad[1]];
                            }
                        }
                    }
                }
            }
        }
    }

    /// dx[C, H, W] += col2im(dcol[K, P]) for one image (the adjoint of [`Self::im2col`]).
    fn col2im(&self, dcol: &[f32], dx: &mut [f32]) {
        let p = self.p();
        for ci in 0..self.c {
            let plane = &mut dx[ci * self.h * self.w..][..self.h * self.w];
            for ki in 0..self.kh {
                let (oy0, oy1) = Self::valid(self.oh, self.stride[0], ki, self.pad[0], self.h);
                for kj in 0..self.kw {
                    let (ox0, ox1) = Self::valid(self.ow, self.stride[1], kj, self.pad[1], self.w);
                    let row = &dcol[((ci * self.kh + ki) * self.kw + kj) * p..][..p];
                    for oy in oy0..oy1 {
                        let iy = oy * self.stride[0] + ki - self.pad[0];
                        let dst = &mut plane[iy * self.w..][..self.w];
                        let src = &row[oy * self.ow..][..self.ow];
                        if self.stride[1] == 1 {
                            let ix0 = ox0 + kj - self.pad[1];
                            for (d, s) in dst[ix0..ix0 + (ox1 - ox0)].iter_mut().zip(&src[ox0..ox1])
                            {
                                *d += *s;
                            }
                        } else {
                            for ox in ox0..ox1 {
                                dst[ox * self.stride[1] + kj - self.pad[1]] += src[ox];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Row-major `dst[m, n] (+)= a · b` with explicit strides (`*_rs` row, `*_cs` column), single
/// threaded: callers parallelise over images, which keeps both cores busy with less overhead
/// than splitting each small GEMM.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
) {
    assert!(dst.len() >= m * n);
    assert!(m == 0 || k == 0 || a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(n == 0 || k == 0 || b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts above keep every index the GEMM touches inside the three slices,
    // and `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The tensor's f32 values in row-major order, borrowed when it is already contiguous.
pub(crate) fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.clone()
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32 tensor"),
        ),
    }
}

fn flex_tensor(values: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Weight gradient `[O, C, kh, kw]`: images split into one chunk per thread, each chunk
/// accumulating its own partial sum, partial sums added at the end.
fn weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * p);
    let threads = rayon::current_num_threads().clamp(1, g.n.max(1));
    let per = g.n.div_ceil(threads);
    let partials: Vec<Vec<f32>> = (0..g.n.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let mut dw = vec![0.0f32; g.o * k];
            let mut col = if g.pointwise() {
                Vec::new()
            } else {
                vec![0.0f32; k * p]
            };
            for (i, img) in (t * per..((t + 1) * per).min(g.n)).enumerate() {
                let xs = &x[img * img_in..][..img_in];
                let cols: &[f32] = if g.pointwise() {
                    xs
                } else {
                    g.im2col(xs, &mut col);
                    &col
                };
                // dW[O, K] += dY_n[O, P] · col[K, P]ᵀ
                gemm(
                    g.o,
                    k,
                    p,
                    &mut dw,
                    i > 0,
                    &dy[img * img_out..][..img_out],
                    (p, 1),
                    cols,
                    (1, p),
                );
            }
            dw
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![0.0; g.o * k]);
    for part in parts {
        dw.iter_mut().zip(&part).for_each(|(a, b)| *a += *b);
    }
    dw
}

/// Input gradient `[N, C, H, W]`: one GEMM (and col2im) per image, images in parallel.
fn input_grad(g: &Geom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * p);
    let mut dx = vec![0.0f32; g.n * img_in];
    dx.par_chunks_mut(img_in.max(1))
        .zip(dy.par_chunks(img_out.max(1)))
        .for_each_init(
            || vec![0.0f32; if g.pointwise() { 0 } else { k * p }],
            |dcol, (dx_n, dy_n)| {
                // col(dX_n)[K, P] = Wᵀ[K, O] · dY_n[O, P]
                if g.pointwise() {
                    gemm(k, p, g.o, dx_n, false, w, (1, k), dy_n, (p, 1));
                } else {
                    gemm(k, p, g.o, dcol, false, w, (1, k), dy_n, (p, 1));
                    g.col2im(dcol, dx_n);
                }
            },
        );
    dx
}

/// Forward `[N, O, OH, OW]`: `Y_n[O, P] = W[O, C·kh·kw] · col(X_n)`, images in parallel.
fn forward(g: &Geom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * p);
    let mut y = vec![0.0f32; g.n * img_out];
    y.par_chunks_mut(img_out.max(1))
        .zip(x.par_chunks(img_in.max(1)))
        .for_each_init(
            || vec![0.0f32; if g.pointwise() { 0 } else { k * p }],
            |col, (y_n, x_n)| {
                let cols: &[f32] = if g.pointwise() {
                    x_n
                } else {
                    g.im2col(x_n, col);
                    col
                };
                gemm(g.o, p, k, y_n, false, w, (k, 1), cols, (p, 1));
            },
        );
    y
}

impl FastConvBackend for Flex {
    fn fast_conv2d(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        match Geom::supported(&x, &weight, &options) {
            Some(g) => {
                let y = forward(&g, &values(&x), &values(&weight));
                flex_tensor(y, [g.n, g.o, g.oh, g.ow])
            }
            None => Flex::conv2d(x, weight, None, options),
        }
    }

    fn conv2d_x_grad(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        match Geom::supported(&x, &weight, &options) {
            Some(g) => {
                let dx = input_grad(&g, &values(&weight), &values(&grad));
                flex_tensor(dx, [g.n, g.c, g.h, g.w])
            }
            None => Flex::conv2d_x_backward(x, weight, grad, options),
        }
    }

    fn conv2d_w_grad(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        match Geom::supported(&x, &weight, &options) {
            Some(g) => {
                let dw = weight_grad(&g, &values(&x), &values(&grad));
                flex_tensor(dw, [g.o, g.c, g.kh, g.kw])
            }
            None => Flex::conv2d_weight_backward(x, weight, grad, options),
        }
    }
}

/// The differentiable operation: Burn's forward, the inner backend's gradient kernels.
#[derive(Debug)]
struct FastConvBackward;

impl<B: FastConvBackend> Backward<B, 2> for FastConvBackward {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        let weight = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(weight_state);
        if let Some(node) = node_x {
            let dx = B::conv2d_x_grad(x.clone(), weight.clone(), grad.clone(), options.clone());
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, B::conv2d_w_grad(x, weight, grad, options));
        }
    }
}

impl<B: FastConvBackend, C: CheckpointStrategy> FastConvBackend for Autodiff<B, C> {
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match FastConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let out =
                    B::fast_conv2d(x.into_primitive(), weight.into_primitive(), options.clone());
                prep.finish((x_state, weight_state, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fast_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                options,
            )),
        }
    }
}

/// Whether the Flex fast paths are on: always, unless the environment sets
/// `DENSUM_FAST_PATHS=0`, which lets a benchmark time the generic path with the same binary
/// (fast vs generic in one run, on a machine whose load changes between runs).
pub fn fast_paths_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DENSUM_FAST_PATHS").map_or(true, |v| v != "0"))
}

/// Whether [`conv2d_fast`] takes the extension on `device`: Flex, with or without autodiff
/// (the only backend the extension is implemented for), and fast paths enabled.
pub fn fast_conv_applies(device: &Device) -> bool {
    fast_paths_enabled() && device.clone().inner() == Device::flex()
}

/// Bias-free convolution through the fast-gradient operation (Flex) or Burn's generic one.
pub fn conv2d_fast(x: Tensor<4>, weight: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
    if fast_conv_applies(&x.device()) {
        Tensor::from_dispatch(<Dispatch as FastConvBackend>::fast_conv2d(
            x.into_dispatch(),
            weight.into_dispatch(),
            options,
        ))
    } else {
        burn::tensor::module::conv2d(x, weight, None, options)
    }
}

/// `conv.forward(x)`, with the fast gradients when the convolution has no bias and explicit
/// or no padding (`Same` padding is computed privately by Burn, so it keeps Burn's path).
pub fn conv_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => return conv.forward(x),
    };
    if conv.bias.is_some() {
        return conv.forward(x);
    }
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups);
    conv2d_fast(x, conv.weight.val(), options)
}
