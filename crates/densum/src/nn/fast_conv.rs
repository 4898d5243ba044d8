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
use std::mem::MaybeUninit;

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

use super::tile_gemm::{self, PackedA, product};

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

    /// Inference convolution followed by a per-output-channel affine map and an optional ReLU:
    /// `max(0, conv(x, w)·scale[o] + shift[o])`, i.e. a convolution with its (frozen) batch
    /// norm folded in. On Flex the affine map runs on each image's output while it is still in
    /// cache, so the network's inference makes one pass over each activation instead of two.
    /// Not meant for training: `Autodiff` composes it from differentiable generic operations.
    fn fast_conv2d_affine(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
    ) -> FloatTensor<Self> {
        affine_generic::<Self>(Self::conv2d(x, weight, None, options), scale, shift, relu)
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

/// `max(0, y·scale[o] + shift[o])` (ReLU when `relu`) out of generic backend operations.
fn affine_generic<B: Backend>(
    y: FloatTensor<B>,
    scale: FloatTensor<B>,
    shift: FloatTensor<B>,
    relu: bool,
) -> FloatTensor<B> {
    let o = scale.shape().num_elements();
    let per_channel = |t: FloatTensor<B>| B::float_reshape(t, [1, o, 1, 1].into());
    let y = B::float_add(B::float_mul(y, per_channel(scale)), per_channel(shift));
    if relu { B::relu(y) } else { y }
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
                    // Every value is written: the padding parts are zeroed explicitly, so the
                    // buffer may hold anything before (no full memset per image).
                    row[..oy0 * self.ow].fill(0.0);
                    row[oy1 * self.ow..].fill(0.0);
                    if let Some(shift) = self.shift(ki, kj) {
                        // The valid rows are the plane shifted by one offset: one copy, then
                        // zeros over the columns that wrapped around a row's edge.
                        let (lo, hi) = self.clip(oy0, oy1, shift);
                        let (start, end) = (oy0 * self.ow, oy1 * self.ow);
                        row[start..lo].fill(0.0);
                        row[hi.max(lo)..end].fill(0.0);
                        if lo < hi {
                            let from = (lo as isize + shift) as usize;
                            row[lo..hi].copy_from_slice(&plane[from..from + (hi - lo)]);
                        }
                        for oy in oy0..oy1 {
                            let r = &mut row[oy * self.ow..][..self.ow];
                            r[..ox0].fill(0.0);
                            r[ox1..].fill(0.0);
                        }
                        continue;
                    }
                    for oy in oy0..oy1 {
                        let iy = oy * self.stride[0] + ki - self.pad[0];
                        let src = &plane[iy * self.w..][..self.w];
                        let dst = &mut row[oy * self.ow..][..self.ow];
                        dst[..ox0].fill(0.0);
                        dst[ox1..].fill(0.0);
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

    /// For stride 1 with an output as wide as the input (a "same" convolution), the offset
    /// `Δ` such that output position `i = oy·OW + ox` of kernel tap `(ki, kj)` reads input
    /// `i + Δ` (except in columns that wrap around a row's edge).
    fn shift(&self, ki: usize, kj: usize) -> Option<isize> {
        (self.stride == [1, 1] && self.ow == self.w).then(|| {
            (ki as isize - self.pad[0] as isize) * self.w as isize + kj as isize
                - self.pad[1] as isize
        })
    }

    /// The part `[lo, hi)` of output rows `oy0..oy1` whose shifted input index lies in the plane.
    fn clip(&self, oy0: usize, oy1: usize, shift: isize) -> (usize, usize) {
        let plane = (self.h * self.w) as isize;
        let lo = ((oy0 * self.ow) as isize).max(-shift).max(0) as usize;
        let hi = ((oy1 * self.ow) as isize).min(plane - shift).max(0) as usize;
        (lo, hi)
    }

    /// dx[C, H, W] += col2im(dcol[K, P]) for one image (the adjoint of [`Self::im2col`]).
    /// `dcol` is scratch: the values that fall into the padding are overwritten with zeros.
    fn col2im(&self, dcol: &mut [f32], dx: &mut [f32]) {
        let p = self.p();
        for ci in 0..self.c {
            let plane = &mut dx[ci * self.h * self.w..][..self.h * self.w];
            for ki in 0..self.kh {
                let (oy0, oy1) = Self::valid(self.oh, self.stride[0], ki, self.pad[0], self.h);
                for kj in 0..self.kw {
                    let (ox0, ox1) = Self::valid(self.ow, self.stride[1], kj, self.pad[1], self.w);
                    let row = &mut dcol[((ci * self.kh + ki) * self.kw + kj) * p..][..p];
                    if let Some(shift) = self.shift(ki, kj) {
                        // Drop the wrapped columns' values, then one shifted add.
                        for oy in oy0..oy1 {
                            let r = &mut row[oy * self.ow..][..self.ow];
                            r[..ox0].fill(0.0);
                            r[ox1..].fill(0.0);
                        }
                        let (lo, hi) = self.clip(oy0, oy1, shift);
                        if lo < hi {
                            let from = (lo as isize + shift) as usize;
                            for (d, s) in plane[from..from + (hi - lo)].iter_mut().zip(&row[lo..hi])
                            {
                                *d += *s;
                            }
                        }
                        continue;
                    }
                    let row = &*row;
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

/// `dst[m, n] (+)= a · b` with explicit strides (`*_rs` row, `*_cs` column; `dst` row-major
/// when `dst_rs == n`, column-major when `dst_cs == m`), single threaded: callers parallelise
/// over images, which keeps both cores busy with less overhead than splitting each small GEMM.
///
/// `dst` may be uninitialised when `accumulate` is false: GEMM then writes every element of
/// the `m × n` matrix without reading it.
#[allow(clippy::too_many_arguments)]
fn gemm_raw(
    (m, n, k): (usize, usize, usize),
    dst: &mut [MaybeUninit<f32>],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
) {
    assert!(m == 0 || n == 0 || dst.len() > (m - 1) * dst_rs + (n - 1) * dst_cs);
    assert!(m == 0 || k == 0 || a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(n == 0 || k == 0 || b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts above keep every index the GEMM touches inside the three slices,
    // `dst` is borrowed mutably, so it aliases neither input, and with `accumulate` false
    // (`read_dst` in gemm's terms) the destination is only written, never read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<f32>(),
            dst_cs as isize,
            dst_rs as isize,
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

/// Row-major `dst[m, n] (+)= a · b` over an initialised destination, through the `gemm` crate
/// on one thread (`a` and `b` given with their row and column strides).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) {
    gemm_raw(
        (m, n, k),
        as_uninit(dst),
        (n, 1),
        accumulate,
        a,
        a_strides,
        b,
        b_strides,
    );
}

/// An initialised slice seen as possibly-uninitialised (always sound: only writes follow).
fn as_uninit(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and every `f32` is a valid
    // `MaybeUninit<f32>`; callers only write through the result.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) }
}

/// A buffer of `len` values for a kernel that writes every one of them before anything reads
/// it. Skipping the zero fill matters: with freed memory kept for reuse (see
/// `measure::alloc`), a zeroed allocation is a full extra pass over every activation.
pub(crate) fn uninit_buffer(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { v.set_len(len) };
    v
}

/// A slice after a kernel has written every value.
///
/// # Safety
/// Every element of `s` must have been initialised.
unsafe fn assume_init_mut(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: layout-compatible element type; the caller guarantees initialisation.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// The buffer after a kernel has written every value.
///
/// # Safety
/// Every element of `v` must have been initialised.
pub(crate) unsafe fn assume_init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, layout-compatible element type; the caller guarantees
    // initialisation.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

thread_local! {
    /// Per-thread im2col/col2im scratch, reused across calls (images of a batch and layers).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer of at least `len` values (contents arbitrary).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
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
    flex(values, shape.to_vec())
}

/// A Flex tensor of the given row-major values and shape (the fast kernels' outputs).
pub(crate) fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Weight gradient `[O, C, kh, kw]`: images split into one chunk per thread, each chunk
/// accumulating its own partial sum, partial sums added at the end.
///
/// The GEMM's orientation follows the shape: gemm's kernels are up to 8x slower on the
/// small-`O`, long-`P` products of early layers when the destination is `[O, K]` row-major,
/// and on small-`K` ones when it is column-major (measured over ResNet-50's shapes), so the
/// destination is `dWᵀ` (column-major `[O, K]`) whenever `K ≥ O`, transposed once at the end.
fn weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * p);
    let transposed = k >= g.o;
    let dst_strides = if transposed { (1, g.o) } else { (k, 1) };
    let threads = rayon::current_num_threads().clamp(1, g.n.max(1));
    let per = g.n.div_ceil(threads).max(1);
    let partials: Vec<Vec<f32>> = (0..g.n.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let mut dw = vec![0.0f32; g.o * k];
            let images = t * per..((t + 1) * per).min(g.n);
            with_scratch(if g.pointwise() { 0 } else { k * p }, |col| {
                for (i, img) in images.enumerate() {
                    let xs = &x[img * img_in..][..img_in];
                    let cols: &[f32] = if g.pointwise() {
                        xs
                    } else {
                        g.im2col(xs, col);
                        col
                    };
                    // dW[O, K] += dY_n[O, P] · col[K, P]ᵀ
                    gemm_raw(
                        (g.o, k, p),
                        as_uninit(&mut dw),
                        dst_strides,
                        i > 0,
                        &dy[img * img_out..][..img_out],
                        (p, 1),
                        cols,
                        (1, p),
                    );
                }
            });
            dw
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![0.0; g.o * k]);
    for part in parts {
        dw.iter_mut().zip(&part).for_each(|(a, b)| *a += *b);
    }
    if transposed {
        // dw holds dWᵀ [K, O]; the weight layout is [O, K].
        let mut out = vec![0.0f32; g.o * k];
        for (kk, row) in dw.chunks_exact(g.o).enumerate() {
            for (o, v) in row.iter().enumerate() {
                out[o * k + kk] = *v;
            }
        }
        dw = out;
    }
    dw
}

/// The input gradient of `g` on the tile kernel when the convolution keeps the plane size (1x1
/// stride 1, or stride-1 "same"): `dX = conv(dY, W')` with `W'[c, o, ki, kj] = W[o, c, kh−1−ki,
/// kw−1−kj]` (channels swapped, kernel rotated by 180°), a forward that [`forward_tiled`]
/// computes without an im2col or col2im. `W'` is packed straight from `W`.
fn input_grad_tiled(g: &Geom, w: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    let t = Geom {
        c: g.o,
        o: g.c,
        ..*g
    };
    let how = tiled_forward(&t)?;
    let taps = g.kh * g.kw;
    let a = PackedA::new(g.c, g.o * taps, |c, r| {
        let (o, tap) = (r / taps, r % taps);
        w[(o * g.c + c) * taps + (taps - 1 - tap)]
    });
    Some(forward_tiled(&t, how, dy, &a, None))
}

/// Input gradient `[N, C, H, W]`: one GEMM (and col2im) per image, images in parallel.
fn input_grad(g: &Geom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    if let Some(dx) = input_grad_tiled(g, w, dy) {
        return dx;
    }
    let (k, p) = (g.k(), g.p());
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * p);
    let mut dx = uninit_buffer(g.n * img_in);
    dx.par_chunks_mut(img_in.max(1))
        .zip(dy.par_chunks(img_out.max(1)))
        .for_each(|(dx_n, dy_n)| {
            // col(dX_n)[K, P] = Wᵀ[K, O] · dY_n[O, P]
            if g.pointwise() {
                gemm_raw((k, p, g.o), dx_n, (p, 1), false, w, (1, k), dy_n, (p, 1));
            } else {
                // col2im accumulates, so this image's gradient starts from zero.
                dx_n.fill(MaybeUninit::new(0.0));
                // SAFETY: just initialised.
                let dx_n: &mut [f32] =
                    unsafe { &mut *(dx_n as *mut [MaybeUninit<f32>] as *mut [f32]) };
                with_scratch(k * p, |dcol| {
                    gemm(k, p, g.o, dcol, false, w, (1, k), dy_n, (p, 1));
                    g.col2im(dcol, dx_n);
                });
            }
        });
    // SAFETY: every image's chunk was written by the GEMM or zeroed and accumulated into.
    unsafe { assume_init(dx) }
}

/// Per-output-channel `y·scale + shift`, then ReLU, applied to one image's output `[O, P]`.
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    scale: &'a [f32],
    shift: &'a [f32],
    relu: bool,
}

impl Epilogue<'_> {
    /// `dst = f(src·scale[o] + shift[o])` for values of output channel `o`.
    fn apply_one(&self, o: usize, src: &[f32], dst: &mut [MaybeUninit<f32>]) {
        let (s, t) = (self.scale[o], self.shift[o]);
        for (d, &v) in dst.iter_mut().zip(src) {
            let v = v * s + t;
            d.write(if self.relu { v.max(0.0) } else { v });
        }
    }

    fn apply(&self, y: &mut [f32], p: usize) {
        for ((plane, &s), &t) in y.chunks_exact_mut(p).zip(self.scale).zip(self.shift) {
            if self.relu {
                plane.iter_mut().for_each(|v| *v = (*v * s + t).max(0.0));
            } else {
                plane.iter_mut().for_each(|v| *v = *v * s + t);
            }
        }
    }
}

/// Forward `[N, O, OH, OW]`: `Y_n[O, P] = W[O, C·kh·kw] · col(X_n)`, images in parallel, with
/// an optional epilogue applied to each image's output while it is in cache.
fn forward(g: &Geom, x: &[f32], w: &[f32], epilogue: Option<Epilogue>) -> Vec<f32> {
    if let Some(how) = tiled_forward(g) {
        let k = g.k();
        let a = PackedA::new(g.o, k, |o, r| w[o * k + r]);
        return forward_tiled(g, how, x, &a, epilogue);
    }
    let (k, p) = (g.k(), g.p());
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * p);
    let mut y = uninit_buffer(g.n * img_out);
    y.par_chunks_mut(img_out.max(1))
        .zip(x.par_chunks(img_in.max(1)))
        .for_each(|(y_n, x_n)| {
            let run = |cols: &[f32], y_n: &mut [MaybeUninit<f32>]| {
                gemm_raw((g.o, p, k), y_n, (p, 1), false, w, (k, 1), cols, (p, 1));
            };
            if g.pointwise() {
                run(x_n, y_n);
            } else {
                with_scratch(k * p, |col| {
                    g.im2col(x_n, col);
                    run(col, y_n);
                });
            }
            if let Some(e) = epilogue {
                // SAFETY: the GEMM above wrote all of y_n.
                let y_n: &mut [f32] =
                    unsafe { &mut *(y_n as *mut [MaybeUninit<f32>] as *mut [f32]) };
                e.apply(y_n, p);
            }
        });
    // SAFETY: every image's output was written by its GEMM.
    unsafe { assume_init(y) }
}

/// Whether the forward of `g` runs on [`tile_gemm`] instead of the `gemm` crate, where that
/// measured faster (AMD EPYC, AVX2, one thread, `examples/gemm_shapes` and `op_profile`):
/// - 1x1 convolutions with few output channels over long rows (16-32 outputs, depth 64-144:
///   1.28-1.64x per product); with 64 or more outputs over a depth of 16 `gemm` stayed ahead;
/// - stride-1 "same" convolutions on planes at least 16 wide, read as shifted views of one
///   padded copy of the image ([`Shifted`]) instead of an im2col matrix that outgrows L2.
fn tiled_forward(g: &Geom) -> Option<Tiled> {
    if !tile_gemm_enabled() {
        return None;
    }
    if g.pointwise() {
        return (g.o <= 32 && g.k() >= 32 && g.p() >= 256).then_some(Tiled::Pointwise);
    }
    Shifted::of(g).filter(|_| g.w >= 16).map(Tiled::Shifted)
}

/// How a tiled forward reads its column matrix.
#[derive(Clone, Copy)]
enum Tiled {
    /// The image itself (1x1, stride 1, no padding).
    Pointwise,
    /// Shifted views of a padded copy of the image.
    Shifted(Shifted),
}

/// A stride-1 convolution whose output is as large as its input, computed in "padded-width"
/// coordinates: the image is copied once into planes of `(H + 2·pad) x (W + 2·pad)` values,
/// output position `q = oy·Wp + ox` of kernel tap `(ki, kj)` then reads padded value
/// `q + ki·Wp + kj` of each plane, so every row of the column matrix is a contiguous run of
/// the padded copy and no im2col is built. The `2·pad` extra columns of each output row are
/// computed and dropped (6 % more work at 32x32, 12 % at 16x16).
#[derive(Clone, Copy)]
struct Shifted {
    /// Padded plane height and width.
    hp: usize,
    wp: usize,
}

impl Shifted {
    fn of(g: &Geom) -> Option<Self> {
        let same = g.stride == [1, 1] && g.oh == g.h && g.ow == g.w && g.pad[0] == g.pad[1];
        (same && g.kh == 2 * g.pad[0] + 1 && g.kw == g.kh).then_some(Shifted {
            hp: g.h + 2 * g.pad[0],
            wp: g.w + 2 * g.pad[1],
        })
    }

    /// Values of the padded copy: every plane plus a tail, since the last plane's dropped
    /// columns read up to `2·pad` values past it.
    fn padded_len(&self, g: &Geom) -> usize {
        g.c * self.hp * self.wp + self.wp
    }

    /// Width of a padded-width output plane.
    fn q(&self, g: &Geom) -> usize {
        g.oh * self.wp
    }

    /// Copies image `x[C, H, W]` into the padded planes (borders and tail zeroed).
    fn pad(&self, g: &Geom, x: &[f32], out: &mut [f32]) {
        let (hp, wp, pad) = (self.hp, self.wp, g.pad[0]);
        let (planes, tail) = out[..self.padded_len(g)].split_at_mut(g.c * hp * wp);
        tail.fill(0.0);
        for (dst, src) in planes
            .chunks_exact_mut(hp * wp)
            .zip(x.chunks_exact(g.h * g.w))
        {
            dst[..pad * wp].fill(0.0);
            dst[(pad + g.h) * wp..].fill(0.0);
            for (row, s) in dst[pad * wp..(pad + g.h) * wp]
                .chunks_exact_mut(wp)
                .zip(src.chunks_exact(g.w))
            {
                row[..pad].fill(0.0);
                row[pad..pad + g.w].copy_from_slice(s);
                row[pad + g.w..].fill(0.0);
            }
        }
    }

    /// Start of column-matrix row `(c, ki, kj)` in the padded copy.
    fn rows(&self, g: &Geom) -> Vec<usize> {
        let mut rows = Vec::with_capacity(g.k());
        for c in 0..g.c {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    rows.push(c * self.hp * self.wp + ki * self.wp + kj);
                }
            }
        }
        rows
    }

    /// Writes a padded-width output plane `[O, OH·Wp]` into all of `[O, OH·OW]`, dropping the
    /// extra columns and applying the epilogue on the way.
    fn compact(
        &self,
        g: &Geom,
        wide: &[f32],
        y: &mut [MaybeUninit<f32>],
        epilogue: Option<Epilogue>,
    ) {
        let q = self.q(g);
        for (o, (dst, src)) in y
            .chunks_exact_mut(g.p())
            .zip(wide.chunks_exact(q))
            .enumerate()
        {
            for (d, s) in dst.chunks_exact_mut(g.ow).zip(src.chunks_exact(self.wp)) {
                let s = &s[..g.ow];
                match epilogue {
                    Some(e) => e.apply_one(o, s, d),
                    None => d.iter_mut().zip(s).for_each(|(d, &v)| {
                        d.write(v);
                    }),
                }
            }
        }
    }
}

/// Values per band of a 1x1 convolution's input copied for the tile kernel: 128 KB, a
/// quarter of the L2 cache of the cores measured here.
const BAND_VALUES: usize = 32 * 1024;

/// [`forward`] on the tile kernel (see [`tiled_forward`]), with the weights `[O, K]` packed
/// once by the caller.
fn forward_tiled(
    g: &Geom,
    how: Tiled,
    x: &[f32],
    a: &PackedA,
    epilogue: Option<Epilogue>,
) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * p);
    let mut y = uninit_buffer(g.n * img_out);
    // 1x1: the image's rows are copied a band of columns at a time into a contiguous buffer,
    // since rows P apart (4 KB at 32x32) fall into the same L1 sets (`examples/gemm_shapes`
    // times the product this way).
    let band = (BAND_VALUES / k.max(1)).clamp(16, p.max(16)) / 16 * 16;
    let rows = match how {
        Tiled::Pointwise => tile_gemm::strided_rows(k, band),
        Tiled::Shifted(sh) => sh.rows(g),
    };
    y.par_chunks_mut(img_out.max(1))
        .zip(x.par_chunks(img_in.max(1)))
        .for_each(|(y_n, x_n)| match how {
            Tiled::Pointwise => {
                with_scratch(k * band, |buf| {
                    for p0 in (0..p).step_by(band) {
                        let width = band.min(p - p0);
                        for (dst, src) in buf.chunks_exact_mut(band).zip(x_n.chunks_exact(p)) {
                            dst[..width].copy_from_slice(&src[p0..p0 + width]);
                        }
                        product(a, buf, &rows, width, &mut y_n[p0..], p, false);
                    }
                });
                if let Some(e) = epilogue {
                    // SAFETY: the product above wrote all of y_n.
                    e.apply(unsafe { assume_init_mut(y_n) }, p);
                }
            }
            Tiled::Shifted(sh) => {
                let (len, q) = (sh.padded_len(g), sh.q(g));
                with_scratch(len + g.o * q, |buf| {
                    let (padded, wide) = buf.split_at_mut(len);
                    sh.pad(g, x_n, padded);
                    product(a, padded, &rows, q, as_uninit(wide), q, false);
                    sh.compact(g, wide, y_n, epilogue);
                });
            }
        });
    // SAFETY: every image's output was written by its product or by `compact`.
    unsafe { assume_init(y) }
}

impl FastConvBackend for Flex {
    fn fast_conv2d(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        match Geom::supported(&x, &weight, &options) {
            Some(g) => {
                let y = forward(&g, &values(&x), &values(&weight), None);
                flex_tensor(y, [g.n, g.o, g.oh, g.ow])
            }
            None => Flex::conv2d(x, weight, None, options),
        }
    }

    fn fast_conv2d_affine(
        x: FlexTensor,
        weight: FlexTensor,
        scale: FlexTensor,
        shift: FlexTensor,
        options: ConvOptions<2>,
        relu: bool,
    ) -> FlexTensor {
        match Geom::supported(&x, &weight, &options) {
            Some(g) if scale.dtype() == DType::F32 && shift.dtype() == DType::F32 => {
                let (scale, shift) = (values(&scale), values(&shift));
                let epilogue = Epilogue {
                    scale: &scale,
                    shift: &shift,
                    relu,
                };
                let y = forward(&g, &values(&x), &values(&weight), Some(epilogue));
                flex_tensor(y, [g.n, g.o, g.oh, g.ow])
            }
            _ => affine_generic::<Flex>(Flex::conv2d(x, weight, None, options), scale, shift, relu),
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

/// Whether the convolutions may use [`tile_gemm`]'s kernel: when the CPU has it, unless the
/// environment sets `DENSUM_TILE_GEMM=0` (the `gemm` crate everywhere, for A/B timing in the
/// same binary).
pub fn tile_gemm_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        tile_gemm::available() && std::env::var("DENSUM_TILE_GEMM").map_or(true, |v| v != "0")
    })
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

/// The options of `conv` when the fast operations can run it: no bias and explicit or no
/// padding (`Same` padding is computed privately by Burn, so it keeps Burn's path).
pub(crate) fn fast_conv_options(conv: &Conv2d) -> Option<ConvOptions<2>> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => return None,
    };
    if conv.bias.is_some() {
        return None;
    }
    Some(ConvOptions::new_with_padding(
        conv.stride,
        padding,
        conv.dilation,
        conv.groups,
    ))
}

/// `conv.forward(x)`, with the fast gradients when [`fast_conv_options`] allows.
pub fn conv_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match fast_conv_options(conv) {
        Some(options) => conv2d_fast(x, conv.weight.val(), options),
        None => conv.forward(x),
    }
}
