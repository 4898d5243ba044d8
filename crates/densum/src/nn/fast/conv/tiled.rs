//! Convolutions on the AVX2 + FMA tile kernel ([`tile_gemm`]): which shapes take it, and how
//! it reads their column matrix without an im2col.
//!
//! Why: on the first stages' shapes the `gemm` crate runs far below its peak and a 3x3
//! convolution's full im2col outgrows L2 (see [`tile_gemm`]); here a 1x1 convolution reads its
//! input a cache-sized band at a time, and a stride-1 "same" convolution reads nine shifted
//! views of one padded copy of the image ([`Shifted`]). Used by the forward and by the input
//! gradient (a forward of the rotated weights).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::geom::Geom;
use crate::nn::fast::buffer::{
    as_uninit, assume_init, assume_init_mut, uninit_buffer, with_scratch,
};
use crate::nn::fast::epilogue::{Epilogue, write_out};
use crate::nn::fast::probe::Kernel;
use crate::nn::fast::tile_gemm::{self, PackedA, product};

/// Whether the forward of `g` runs on [`tile_gemm`] instead of the `gemm` crate, where that
/// measured faster (AMD EPYC, AVX2, one thread, `examples/gemm_shapes` and `op_profile`):
/// - 1x1 convolutions with few output channels over long rows (16-32 outputs, depth 64-144:
///   1.28-1.64x per product); with 64 or more outputs over a depth of 16 `gemm` stayed ahead;
/// - stride-1 "same" convolutions on planes at least 16 wide, read as shifted views of one
///   padded copy of the image ([`Shifted`]) instead of an im2col matrix that outgrows L2.
pub(super) fn tiled_forward(g: &Geom) -> Option<Tiled> {
    if !crate::nn::fast::tile_kernel_enabled() {
        return None;
    }
    if g.pointwise() {
        return (g.o <= 32 && g.k() >= 32 && g.p() >= 256).then_some(Tiled::Pointwise);
    }
    Shifted::of(g).filter(|_| g.w >= 16).map(Tiled::Shifted)
}

/// How a tiled forward reads its column matrix.
#[derive(Clone, Copy)]
pub(super) enum Tiled {
    /// The image itself (1x1, stride 1, no padding).
    Pointwise,
    /// Shifted views of a padded copy of the image.
    Shifted(Shifted),
}

impl Tiled {
    /// The probe's name for a forward that reads its column matrix this way.
    pub(super) fn kernel(self) -> Kernel {
        match self {
            Tiled::Pointwise => Kernel::ConvTilePointwise,
            Tiled::Shifted(_) => Kernel::ConvTileShifted,
        }
    }
}

/// A stride-1 convolution whose output is as large as its input, computed in "padded-width"
/// coordinates: the image is copied once into planes of `(H + 2·pad) x (W + 2·pad)` values,
/// output position `q = oy·Wp + ox` of kernel tap `(ki, kj)` then reads padded value
/// `q + ki·Wp + kj` of each plane, so every row of the column matrix is a contiguous run of
/// the padded copy and no im2col is built. The `2·pad` extra columns of each output row are
/// computed and dropped (6 % more work at 32x32, 12 % at 16x16).
#[derive(Clone, Copy)]
pub(super) struct Shifted {
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

    /// Writes a padded-width output plane `[O, OH·Wp]` into all of `[O, OH·OW]` (at offset
    /// `at` of the whole output), dropping the extra columns and applying the epilogue on the
    /// way.
    fn compact(
        &self,
        g: &Geom,
        wide: &[f32],
        y: &mut [MaybeUninit<f32>],
        epilogue: Option<Epilogue>,
        at: usize,
    ) {
        let q = self.q(g);
        for (o, (dst, src)) in y
            .chunks_exact_mut(g.p())
            .zip(wide.chunks_exact(q))
            .enumerate()
        {
            for (row, (d, s)) in dst
                .chunks_exact_mut(g.ow)
                .zip(src.chunks_exact(self.wp))
                .enumerate()
            {
                write_out(epilogue, o, &s[..g.ow], d, at + o * g.p() + row * g.ow);
            }
        }
    }
}

/// Values per band of a 1x1 convolution's input copied for the tile kernel: 128 KB, a
/// quarter of the L2 cache of the cores measured here.
const BAND_VALUES: usize = 32 * 1024;

/// [`forward`](super::forward::forward) on the tile kernel (see [`tiled_forward`]), with the weights `[O, K]` packed
/// once by the caller.
pub(super) fn forward_tiled(
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
        .enumerate()
        .for_each(|(n, (y_n, x_n))| match how {
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
                    e.apply(unsafe { assume_init_mut(y_n) }, p, n * img_out);
                }
            }
            Tiled::Shifted(sh) => {
                let (len, q) = (sh.padded_len(g), sh.q(g));
                with_scratch(len + g.o * q, |buf| {
                    let (padded, wide) = buf.split_at_mut(len);
                    sh.pad(g, x_n, padded);
                    product(a, padded, &rows, q, as_uninit(wide), q, false);
                    sh.compact(g, wide, y_n, epilogue, n * img_out);
                });
            }
        });
    // SAFETY: every image's output was written by its product or by `compact`.
    unsafe { assume_init(y) }
}
