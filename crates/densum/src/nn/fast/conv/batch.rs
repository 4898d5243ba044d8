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
//! Used by the weight and input gradients (`grad.rs`); the forward stays per image, where the
//! batched product measured no faster (512 → 512 3x3 at 7x7: 18-21 against 16-18 ms per
//! step).

use super::geom::Geom;
use crate::nn::fast::buffer::SharedOut;

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
