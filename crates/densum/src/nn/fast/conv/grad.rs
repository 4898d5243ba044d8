//! The convolution's gradients: weight (`dW[O, C·kh·kw] += dY_n · col(X_n)ᵀ` per image, images
//! split over the rayon threads, each thread summing its own partial `dW`) and input
//! (`col(dX_n) = Wᵀ · dY_n` then col2im, images in parallel, or a tiled forward of the rotated
//! weights where the convolution keeps the plane size).
//!
//! Why: profiling a ResNet-50 training step (docs/results/profile.md) showed that Burn 0.22's
//! generic convolution backward dominates the step on Flex: it computes the weight gradient as
//! a convolution of the transposed input with the transposed output gradient (a "kernel" as
//! large as the feature map, with tiny GEMMs and two layout copies), and the input gradient as
//! a transposed convolution. Here each is one GEMM per image.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::geom::Geom;
use super::tiled::{forward_tiled, tiled_forward};
use crate::nn::fast::buffer::{
    as_uninit, assume_init, assume_init_mut, uninit_buffer, with_scratch,
};
use crate::nn::fast::matmul::{gemm, gemm_raw};
use crate::nn::fast::probe::{self, Kernel};
use crate::nn::fast::tile_gemm::PackedA;

/// Weight gradient `[O, C, kh, kw]`: images split into one chunk per thread, each chunk
/// accumulating its own partial sum, partial sums added at the end.
///
/// The GEMM's orientation follows the shape: gemm's kernels are up to 8x slower on the
/// small-`O`, long-`P` products of early layers when the destination is `[O, K]` row-major,
/// and on small-`K` ones when it is column-major (measured over ResNet-50's shapes), so the
/// destination is `dWᵀ` (column-major `[O, K]`) whenever `K ≥ O`, transposed once at the end.
pub(super) fn weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    probe::hit(Kernel::ConvWeightGrad);
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

/// Input gradient `[N, C, H, W]`: on the tile kernel where [`input_grad_tiled`] applies,
/// otherwise one GEMM (and col2im) per image, images in parallel.
pub(super) fn input_grad(g: &Geom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    if let Some(dx) = input_grad_tiled(g, w, dy) {
        probe::hit(Kernel::ConvInputGradTile);
        return dx;
    }
    probe::hit(Kernel::ConvInputGradGemm);
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
                let dx_n = unsafe { assume_init_mut(dx_n) };
                with_scratch(k * p, |dcol| {
                    gemm(k, p, g.o, dcol, false, w, (1, k), dy_n, (p, 1));
                    g.col2im(dcol, dx_n);
                });
            }
        });
    // SAFETY: every image's chunk was written by the GEMM or zeroed and accumulated into.
    unsafe { assume_init(dx) }
}
