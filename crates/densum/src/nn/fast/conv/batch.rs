//! Small-plane convolutions with large weights as one `gemm` product over the whole batch:
//! the images' matrices side by side (image `n` as columns `n·P..` of every row).
//!
//! Why: per image such a product is only `P` columns wide (49 at 7x7) while the `gemm` crate
//! packs the whole weight matrix again for every image; over the batch it is packed once and
//! the product is `N·P` wide. Inside a ResNet-50 ImageNet training step (`densum bench resnet50
//! --dataset imagenet --batch 8 --conv-profile`, Intel AVX-512) the 512 → 512 3x3 input
//! gradient at 7x7 went from 35-36 to 19-20 ms per step this way (docs/results/speed.md).
//! Below 1 MB of weights the per-image products measured as fast or faster (DenseNet-121's
//! 1x1 input gradients at 7x7 and 14x14, ResNet-50 0.25x at CIFAR sizes), so they keep them.
//! Used by the weight and input gradients (`grad.rs`), and by the forward on planes of at
//! most 64 positions ([`forward_applies`]).

use rayon::prelude::*;

use super::geom::Geom;
use crate::nn::fast::buffer::{SharedOut, assume_init, uninit_buffer, with_scratch};
use crate::nn::fast::matmul::gemm_raw;

/// Positions per plane below which a product goes over the whole batch.
const BATCH_POSITIONS: usize = 256;

/// Weights (values, 1 MB) up to which the per-image products stay: the matrix stays in L2
/// between images.
const CACHED_VALUES: usize = 256 * 1024;

/// Largest whole-batch column matrix (values, 64 MB) built.
const BATCH_VALUES: usize = 16 << 20;

/// Whether `g`'s products go over the whole batch: small planes, over 1 MB of weights, and a
/// column matrix `[C·kh·kw, N·P]` of at most 64 MB.
pub(super) fn applies(g: &Geom) -> bool {
    let (k, p) = (g.k(), g.p());
    p < BATCH_POSITIONS && g.o * k > CACHED_VALUES && k * g.n * p <= BATCH_VALUES
}

/// Output positions per plane up to which the forward ([`super::forward`]) goes over the
/// whole batch too (7x7 at ImageNet size), one band of output rows per thread. Inside a
/// ResNet-50 ImageNet step (`densum bench resnet50 --dataset imagenet --batch 8 --mode both
/// --conv-profile`, AMD Zen 4, 2 threads, alternating), ms per step: 512 → 512 3x3 at 7x7
/// 23.0 / 22.7 → 21.6 / 20.9, 512 → 2048 1x1 15.5 / 15.4 → 13.7 / 14.5, 2048 → 512 9.8 / 9.8
/// → 9.0 / 8.5, 1024 → 2048 stride 2 10.3 / 10.3 → 9.7 / 9.6; at 14x14 (1024 → 512 1x1) it
/// was slower, 8.5 / 8.6 → 11.3 / 9.7. (With the `gemm` crate splitting the one product over
/// the threads itself it had measured no faster on the Intel machine of an earlier session:
/// 512 → 512 3x3 at 7x7 18-21 against 16-18 ms per step.)
const FORWARD_POSITIONS: usize = 64;

/// Whether `g`'s forward goes over the whole batch: [`applies`], on planes of at most
/// [`FORWARD_POSITIONS`] positions.
pub(super) fn forward_applies(g: &Geom) -> bool {
    applies(g) && g.p() <= FORWARD_POSITIONS
}

/// Writes the first `rows` rows of image `n`'s matrix `src` (`[rows, P]`) as columns `n·P..`
/// of the rows of `dst` (`[rows, N·P]` values from `dst.0`, row stride `width` = N·P).
///
/// # Safety
/// `dst` must hold `rows · width` values, and no other thread may write image `n`'s columns.
pub(super) unsafe fn place(
    src: &[f32],
    dst: SharedOut,
    rows: usize,
    width: usize,
    n: usize,
    p: usize,
) {
    for (r, s) in src.chunks_exact(p).take(rows).enumerate() {
        // SAFETY: row r's columns n·P..(n+1)·P lie inside the buffer (the caller's contract).
        let d = unsafe { std::slice::from_raw_parts_mut(dst.0.add(r * width + n * p), p) };
        for (d, &v) in d.iter_mut().zip(s) {
            d.write(v);
        }
    }
}

/// Image `n`'s columns `n·P..` of every row of `src` (`[rows, N·P]`, row stride `width`),
/// one slice of `P` values per row.
pub(super) fn columns_of<'a>(
    src: &'a [f32],
    width: usize,
    n: usize,
    p: usize,
) -> impl Iterator<Item = &'a [f32]> + 'a {
    src.chunks_exact(width).map(move |row| &row[n * p..][..p])
}

/// The whole batch's column matrix `col(X)[K, N·P]` of `x` `[N, C, H, W]`: image `n`'s im2col
/// (for a 1x1 stride-1 convolution the image itself) as columns `n·P..` of every row, images
/// in parallel.
pub(super) fn columns(g: &Geom, x: &[f32]) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let (img_in, width) = (g.c * g.h * g.w, g.n * p);
    let mut cols = uninit_buffer(k * width);
    let at = SharedOut(cols.as_mut_ptr());
    (0..g.n).into_par_iter().for_each(|n| {
        let xs = &x[n * img_in..][..img_in];
        // SAFETY (each call): cols is [K, N·P] and image n alone writes its columns.
        if g.pointwise() {
            unsafe { place(xs, at, k, width, n, p) };
        } else {
            with_scratch(k * p, |col| {
                g.im2col(xs, col);
                unsafe { place(col, at, k, width, n, p) };
            });
        }
    });
    // SAFETY: every image wrote its columns of every row.
    unsafe { assume_init(cols) }
}

/// The images' `[rows, P]` matrices of `src` (`n` of them, one after another) side by side:
/// `[rows, n·P]`, images in parallel.
pub(super) fn side_by_side(src: &[f32], rows: usize, n: usize, p: usize) -> Vec<f32> {
    let width = n * p;
    let mut dst = uninit_buffer(rows * width);
    let at = SharedOut(dst.as_mut_ptr());
    (0..n).into_par_iter().for_each(|i| {
        // SAFETY: dst is [rows, n·P] and image i alone writes its columns.
        unsafe { place(&src[i * rows * p..][..rows * p], at, rows, width, i, p) };
    });
    // SAFETY: every image wrote its columns of every row.
    unsafe { assume_init(dst) }
}

/// `C[M, width] = A · B[depth, width]` (`A` with strides `a_strides`, `B` row-major), one
/// band of rows of `C` per thread, each its own single-threaded product.
///
/// Why: inside a ResNet-50 ImageNet training step (`densum bench resnet50 --dataset imagenet
/// --batch 8 --conv-profile`, AMD Zen 4, 2 threads, alternating) the 512 → 2048 input gradient
/// at 7x7 went from 18.9 / 17.6 to 15.8 / 14.9 ms per step and 1024 → 2048 stride 2 from 12.7 /
/// 11.0 to 9.7 / 9.6 this way, against the `gemm` crate splitting one product over both
/// threads itself (the weight gradients, `[O, K]` over a depth of `N·P`, gained nothing, so
/// they keep the crate's split).
pub(super) fn product_by_bands(
    (m, width, depth): (usize, usize, usize),
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
) -> Vec<f32> {
    let mut c = uninit_buffer(m * width);
    let band = m.div_ceil(rayon::current_num_threads().max(1)).div_ceil(16) * 16;
    c.par_chunks_mut((band * width).max(1))
        .enumerate()
        .for_each(|(i, dst)| {
            gemm_raw(
                (dst.len() / width, width, depth),
                dst,
                (width, 1),
                false,
                &a[i * band * a_rs..],
                (a_rs, a_cs),
                b,
                (width, 1),
            );
        });
    // SAFETY: the bands cover C, and each product wrote all of its band.
    unsafe { assume_init(c) }
}
