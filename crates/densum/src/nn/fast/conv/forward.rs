//! The convolution forward, `Y_n[O, P] = W[O, C·kh·kw] · col(X_n)` per image, and the
//! per-channel affine map (a folded batch norm, optionally with its ReLU) applied to each
//! image's output while it is in cache.
//!
//! Why: the same im2col + GEMM formulation as the gradients, images over the rayon threads,
//! each through one GEMM over a per-thread scratch im2col (none for 1x1 stride-1
//! convolutions), or through the tile kernel where that measured faster ([`super::tiled`]);
//! docs/results/speed.md has the timings against Burn's own forward.

use rayon::prelude::*;

use super::geom::Geom;
use super::tiled::{forward_tiled, tiled_forward};
use super::winograd;
use super::{batch, direct};
use crate::nn::fast::buffer::{assume_init, assume_init_mut, uninit_buffer, with_scratch};
use crate::nn::fast::epilogue::{Epilogue, write_out};
use crate::nn::fast::matmul::gemm_raw;
use crate::nn::fast::probe::{self, Kernel};
use crate::nn::fast::tile_gemm::PackedA;

/// Forward `[N, O, OH, OW]`: `Y_n[O, P] = W[O, C·kh·kw] · col(X_n)`, images in parallel, with
/// an optional epilogue applied to each image's output while it is in cache.
pub(super) fn forward(g: &Geom, x: &[f32], w: &[f32], epilogue: Option<Epilogue>) -> Vec<f32> {
    if winograd::applies(g) {
        let tiles = winograd::Tiles::of(g);
        probe::hit(match tiles {
            winograd::Tiles::F2 => Kernel::ConvWinograd,
            winograd::Tiles::F4 => Kernel::ConvWinograd4,
        });
        let w = |o, c, i, j| w[((o * g.c + c) * 3 + i) * 3 + j];
        return winograd::convolve(g, tiles, x, w, epilogue);
    }
    if direct::applies(g) {
        probe::hit(Kernel::ConvDirect);
        let k = g.k();
        return direct::forward(g, x, |o, r| w[o * k + r], epilogue);
    }
    if let Some(how) = tiled_forward(g) {
        probe::hit(how.kernel());
        let k = g.k();
        let a = PackedA::new(g.o, k, |o, r| w[o * k + r]);
        return forward_tiled(g, how, x, &a, epilogue);
    }
    if batch::forward_applies(g) {
        probe::hit(Kernel::ConvGemmBatch);
        return forward_batch(g, x, w, epilogue);
    }
    probe::hit(Kernel::ConvGemm);
    let (k, p) = (g.k(), g.p());
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * p);
    let mut y = uninit_buffer(g.n * img_out);
    y.par_chunks_mut(img_out.max(1))
        .zip(x.par_chunks(img_in.max(1)))
        .enumerate()
        .for_each(|(n, (y_n, x_n))| {
            with_scratch(g.column_scratch(), |col| {
                g.columns(x_n, col, |q0, len, cols| {
                    let y_band = &mut y_n[q0..];
                    gemm_raw(
                        (g.o, len, k),
                        y_band,
                        (p, 1),
                        false,
                        w,
                        (k, 1),
                        cols,
                        (len, 1),
                    );
                });
            });
            if let Some(e) = epilogue {
                // SAFETY: the GEMM above wrote all of y_n.
                e.apply(unsafe { assume_init_mut(y_n) }, p, n * img_out);
            }
        });
    // SAFETY: every image's output was written by its GEMM.
    unsafe { assume_init(y) }
}

/// The forward of a small-plane convolution with large weights ([`batch`]) as one product over
/// the whole batch, `Y[O, N·P] = W · col(X)[K, N·P]`, one band of output rows per thread, then
/// each image's columns back through the epilogue.
fn forward_batch(g: &Geom, x: &[f32], w: &[f32], epilogue: Option<Epilogue>) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let (img_out, width) = (g.o * p, g.n * p);
    let cols = batch::columns(g, x);
    let ys = batch::product_by_bands((g.o, width, k), w, (k, 1), &cols);
    let mut y = uninit_buffer(g.n * img_out);
    y.par_chunks_mut(img_out.max(1))
        .enumerate()
        .for_each(|(n, y_n)| {
            for (o, (d, s)) in y_n
                .chunks_exact_mut(p)
                .zip(batch::columns_of(&ys, width, n, p))
                .enumerate()
            {
                write_out(epilogue, o, s, d, n * img_out + o * p);
            }
        });
    // SAFETY: every image's rows were written from Y.
    unsafe { assume_init(y) }
}
