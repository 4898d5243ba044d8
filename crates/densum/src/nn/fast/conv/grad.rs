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
use super::winograd;
use super::{batch, direct};
use crate::nn::fast::buffer::{
    as_uninit, assume_init, assume_init_mut, uninit_buffer, with_scratch,
};
use crate::nn::fast::matmul::{gemm, gemm_on, gemm_raw};
use crate::nn::fast::probe::{self, Kernel};
use crate::nn::fast::tile_gemm::PackedA;

/// Weight gradient `[O, C, kh, kw]`: through Winograd's F(2x2, 3x3) for stride-1 3x3
/// convolutions with enough channels ([`winograd::weight_grad_applies`]), in place on the tile
/// kernel for other 3x3 ones ([`direct::weight_grad_applies`]), otherwise im2col + GEMM with
/// images split into one chunk per thread, each chunk accumulating its own partial sum,
/// partial sums added at the end.
///
/// The GEMM's orientation follows the shape: gemm's kernels are up to 8x slower on the
/// small-`O`, long-`P` products of early layers when the destination is `[O, K]` row-major,
/// and on small-`K` ones when it is column-major (measured over ResNet-50's shapes), so the
/// destination is `dWᵀ` (column-major `[O, K]`) whenever `K ≥ O`, transposed once at the end.
pub(super) fn weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if winograd::weight_grad_applies(g) {
        probe::hit(Kernel::ConvWeightGradWinograd);
        return winograd::weight_grad(g, x, dy);
    }
    if direct::weight_grad_applies(g) {
        probe::hit(Kernel::ConvWeightGradDirect);
        return direct::weight_grad(g, x, dy);
    }
    probe::hit(Kernel::ConvWeightGrad);
    let (k, p) = (g.k(), g.p());
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * p);
    if batch::applies(g) {
        return weight_grad_batch(g, x, dy);
    }
    let threads = rayon::current_num_threads().clamp(1, g.n.max(1));
    let per = g.n.div_ceil(threads).max(1);
    let transposed = k >= g.o;
    let dst_strides = if transposed { (1, g.o) } else { (k, 1) };
    let partials: Vec<Vec<f32>> = (0..g.n.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let mut dw = vec![0.0f32; g.o * k];
            let images = t * per..((t + 1) * per).min(g.n);
            with_scratch(g.column_scratch(), |col| {
                for (i, img) in images.enumerate() {
                    let dy_n = &dy[img * img_out..][..img_out];
                    g.columns(&x[img * img_in..][..img_in], col, |q0, len, cols| {
                        // dW[O, K] += dY_n[O, band] · col[K, band]ᵀ
                        gemm_raw(
                            (g.o, k, len),
                            as_uninit(&mut dw),
                            dst_strides,
                            i > 0 || q0 > 0,
                            &dy_n[q0..],
                            (p, 1),
                            cols,
                            (1, len),
                        );
                    });
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
    let t = transposed(g);
    let how = tiled_forward(&t)?;
    let taps = g.kh * g.kw;
    let a = PackedA::new(g.c, g.o * taps, |c, r| rotated(g, w, c, r / taps, r % taps));
    Some(forward_tiled(&t, how, dy, &a, None))
}

/// The input gradient of a small-plane stride-1 "same" 3x3 convolution as the direct forward
/// ([`direct`]) of its [`transposed`] convolution, the rotated weights read straight from `w`:
/// no col2im, and the output channels (here `g`'s input channels) across the vector lanes.
///
/// Why: inside a ResNet-50 0.25x CIFAR training step (`densum bench resnet50 --dataset
/// cifar100 --width 0.25 --batch 64 --mode train --conv-profile`, AMD Zen 4, 2 threads, six
/// alternations against GEMM + col2im) the 64 → 64 input gradient at 8x8 took 0.81-1.27x
/// (median 0.84x) the time and 128 → 128 at 4x4 0.78-0.92x (median 0.85x). (On the Intel CPU
/// of session 11, with the direct kernel of then, the 4x4 one had been 1.1-1.35x slower.)
fn input_grad_direct(g: &Geom, w: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    // `direct::applies` checks the 3x3 kernel and the plane; stride 1 with padding 1 keeps the
    // plane's size, which is what makes the transposed convolution the input gradient.
    let t = transposed(g);
    if !(g.stride == [1, 1] && g.pad == [1, 1] && direct::applies(&t)) {
        return None;
    }
    let taps = g.kh * g.kw;
    Some(direct::forward(
        &t,
        dy,
        |c, r| rotated(g, w, c, r / taps, r % taps),
        None,
    ))
}

/// The convolution whose forward is `g`'s input gradient: channels swapped, same plane, kernel
/// size, stride and padding (with the kernel [`rotated`]).
fn transposed(g: &Geom) -> Geom {
    Geom {
        c: g.o,
        o: g.c,
        ..*g
    }
}

/// `W'[c, o, tap] = W[o, c, taps − 1 − tap]`: the weight of the [`transposed`] convolution,
/// rotated by 180°, read straight from `w` `[O, C, kh, kw]`.
fn rotated(g: &Geom, w: &[f32], c: usize, o: usize, tap: usize) -> f32 {
    let taps = g.kh * g.kw;
    w[(o * g.c + c) * taps + (taps - 1 - tap)]
}

/// The weight gradient of a small-plane convolution as one product over the whole batch:
/// `dW[O, K] = dY[O, N·P] · col[K, N·P]ᵀ`, the images' columns side by side.
///
/// Why: per image the product's depth is only `P` (49 at 7x7) while each product reads and
/// writes all of `dW` (9.4 MB for a 512 → 512 3x3, far beyond L2), and per-thread partial sums
/// then need adding and transposing. (Where `dW` fits in L2 the per-image products stay
/// faster: ResNet-50 0.25x at 32x32, batch 64.) Here the columns are gathered once (images in parallel) and the
/// `gemm` crate splits one deep product over the threads, writing `dW` in its own layout.
fn weight_grad_batch(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let width = g.n * p;
    let cols = batch::columns(g, x);
    let dys = batch::side_by_side(dy, g.o, g.n, p);
    let mut dw = uninit_buffer(g.o * k);
    gemm_on(
        rayon::current_num_threads(),
        (g.o, k, width),
        &mut dw,
        (k, 1),
        false,
        &dys,
        (width, 1),
        &cols,
        (1, width),
    );
    // SAFETY: the product wrote all of dW.
    unsafe { assume_init(dw) }
}

/// The input gradient of a small-plane convolution with large weights ([`batch`]) as one
/// product over the whole batch: `col(dX)[K, N·P] = Wᵀ · dY[O, N·P]`, the images' output
/// gradients side by side, then each image's columns back (col2im unless 1x1 stride 1).
fn input_grad_batch(g: &Geom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let (img_in, width) = (g.c * g.h * g.w, g.n * p);
    let dys = batch::side_by_side(dy, g.o, g.n, p);
    // col(dX) = Wᵀ · dY: Wᵀ is W read with swapped strides.
    let cols = batch::product_by_bands((k, width, g.o), w, (1, k), &dys);
    let mut dx = uninit_buffer(g.n * img_in);
    dx.par_chunks_mut(img_in.max(1))
        .enumerate()
        .for_each(|(n, dx_n)| {
            let image_cols = |dst: &mut [MaybeUninit<f32>]| {
                for (d, s) in dst
                    .chunks_exact_mut(p)
                    .zip(batch::columns_of(&cols, width, n, p))
                {
                    for (d, &v) in d.iter_mut().zip(s) {
                        d.write(v);
                    }
                }
            };
            if g.pointwise() {
                image_cols(dx_n);
            } else {
                dx_n.fill(MaybeUninit::new(0.0));
                // SAFETY: just initialised.
                let dx_n = unsafe { assume_init_mut(dx_n) };
                with_scratch(k * p, |dcol| {
                    image_cols(as_uninit(dcol));
                    g.col2im(dcol, dx_n);
                });
            }
        });
    // SAFETY: every image's chunk was copied or zeroed and accumulated into.
    unsafe { assume_init(dx) }
}

/// Input gradient `[N, C, H, W]`: on the tile kernel where [`input_grad_tiled`] applies, as
/// one product over the batch for small planes with large weights ([`input_grad_batch`]),
/// otherwise one GEMM (and col2im) per image, images in parallel.
pub(super) fn input_grad(g: &Geom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    // dX = conv(dY, W') as in `input_grad_tiled`, with W' transformed straight from W.
    let t = transposed(g);
    if winograd::applies(&t) {
        let tiles = winograd::Tiles::of(&t);
        probe::hit(match tiles {
            winograd::Tiles::F2 => Kernel::ConvInputGradWinograd,
            winograd::Tiles::F4 => Kernel::ConvInputGradWinograd4,
        });
        let w = |c, o, i, j| rotated(g, w, c, o, i * 3 + j);
        return winograd::convolve(&t, tiles, dy, w, None);
    }
    if let Some(dx) = input_grad_direct(g, w, dy) {
        probe::hit(Kernel::ConvInputGradDirect);
        return dx;
    }
    if let Some(dx) = input_grad_tiled(g, w, dy) {
        probe::hit(Kernel::ConvInputGradTile);
        return dx;
    }
    if batch::applies(g) {
        probe::hit(Kernel::ConvInputGradBatch);
        return input_grad_batch(g, w, dy);
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
