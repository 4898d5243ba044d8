//! The weight gradient of a stride-1 3x3 convolution through Winograd's F(2x2, 3x3): the
//! forward's algorithm transposed.
//!
//! With the forward's 2x2 output tile `Y = Aᵀ [U ⊙ V] A`, `U = G g Gᵀ` and `V = Bᵀ d B`,
//! the gradient of one tile with respect to `U` is `(A dY Aᵀ) ⊙ V`, and with respect to the
//! kernel `dg = Gᵀ dU G`. Summed over tiles, each transformed position `ξ` is one product
//! `dU_ξ[C, O] = V_ξ[C, T] · M_ξ[T, O]` with `M = A dY Aᵀ`: 16 products of depth `T` (the tiles)
//! instead of the direct gradient's 9 taps over every output position, 2.25x fewer
//! multiplications. `V` is the forward's input transform ([`super::transform_input`], read in
//! place as the tile kernel's `A`); `M` is laid out tile-major (`[T, O]`, the output channels
//! across the vector lanes), from each tile row's output gradient transposed once.
//!
//! Why: ResNet-50's stride-1 3x3 weight gradients at ImageNet sizes ran at 92-101 GMAC/s in
//! place (`direct::weight_grad`), near the two cores' peak, so fewer multiplications was the
//! way left to make them faster; docs/results/speed.md has the timings. (A first version on the
//! `gemm` crate, session 9, repacked its operands for every chunk and gained nothing.)

use rayon::prelude::*;

use super::super::geom::Geom;
use super::{XI, prefetch, transform_input};
use std::mem::MaybeUninit;
use std::ops::Range;

use crate::nn::fast::buffer::{SharedOut, assume_init, uninit_buffer, with_scratch};
use crate::nn::fast::tile_gemm::{Isa, gathered_product};

/// Values of `V` and `M` per chunk (2 MB, as the forward's): in L2 or close to it between the
/// transforms and the products. Twice as large chunks measured 1.2-1.3x slower at 64 and 128
/// channels alone (ResNet-50's 64 → 64 at 56x56, 128 → 128 at 28x28, batch 8).
const CHUNK_VALUES: usize = 512 * 1024;

/// Fewest tiles per chunk (the products' depth), whatever [`CHUNK_VALUES`] gives: each chunk's
/// products read and write the thread's whole partial `dUᵀ` (4 MB at 256 channels both ways),
/// so at 256 → 256 on 14x14 a depth of 64 tiles spent a quarter of the gradient on that. Inside
/// a ResNet-50 ImageNet training step (`densum bench resnet50 --dataset imagenet --batch 8
/// --mode train --conv-profile`, three rounds, AMD Zen 4), 256 → 256 at 14x14 took 54.6-60.5 ms
/// per step with 64, 42.8-47.2 with 128 and 41.0-42.2 with 256; 128 → 128 at 28x28 21.3-24.5,
/// 21.0-22.8 and 23.4-30.2.
const MIN_DEPTH: usize = 192;

/// Weight gradient `[O, C, 3, 3]` of `g` (3x3, stride 1, padding 1, the plane kept: what
/// [`super::applies`] checks) from its input `x` and output gradient `dy`. Tile rows split into
/// one contiguous range per thread, each summing its own `dUᵀ` a chunk of tile rows at a time.
///
/// (Splitting the 16 positions over the threads instead, each thread then computing its
/// positions' transforms over all tiles, saves adding the partial sums but repeats the
/// transforms' gathering steps: at 256 channels on 14x14 it was no faster, at 64 channels on
/// 56x56 slower; docs/results/speed.md, session 18.)
pub(in super::super) fn weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
    // Columns per tile row, as in the forward's input transform: one more than its tiles.
    let ne = tw + 1;
    let tile_rows = g.n * th;
    let threads = rayon::current_num_threads().clamp(1, tile_rows.max(1));
    let per_thread = tile_rows.div_ceil(threads).max(1);
    let per = (CHUNK_VALUES / (XI * (g.c + g.o) * ne).max(1))
        .max(MIN_DEPTH.div_ceil(ne))
        .clamp(1, per_thread);
    let tb = per * ne;
    // V_ξ[c, t] at v[(ξ·C + c)·tb + t]; M_ξ[t, o] at m[(ξ·tb + t)·O + o].
    let rows_v: Vec<usize> = (0..XI * g.c).map(|r| r * tb).collect();
    let depth_v: Vec<usize> = (0..tb).collect();
    let rows_m: Vec<usize> = (0..XI * tb).map(|t| t * g.o).collect();
    let cho = g.c * g.o;
    let partials: Vec<Vec<f32>> = (0..tile_rows.div_ceil(per_thread))
        .into_par_iter()
        .map(|part| {
            let mine = part * per_thread..((part + 1) * per_thread).min(tile_rows);
            let mut dut = uninit_buffer(XI * cho);
            let scratch = XI * (g.c + g.o) * tb + 10 * (tb + 1) + per * 2 * 2 * tw * g.o;
            with_scratch(scratch, |buf| {
                let (v, rest) = buf.split_at_mut(XI * g.c * tb);
                let (m, rest) = rest.split_at_mut(XI * tb * g.o);
                let (rows_t, tmp) = rest.split_at_mut(per * 2 * 2 * tw * g.o);
                for (i, r0) in mine.clone().step_by(per).enumerate() {
                    let rows = r0..(r0 + per).min(mine.end);
                    let width = rows.len() * ne;
                    transform_input(g, x, rows.clone(), tb, v, tmp);
                    transform_output_grad(g, dy, rows, tb, m, rows_t);
                    for (xi, du_xi) in dut.chunks_exact_mut(cho).enumerate() {
                        gathered_product(
                            Isa::detected(),
                            v,
                            &rows_v[xi * g.c..][..g.c],
                            &depth_v[..width],
                            m,
                            &rows_m[xi * tb..][..width],
                            g.o,
                            du_xi,
                            g.o,
                            i > 0,
                        );
                    }
                }
            });
            // SAFETY: the first chunk's products wrote every dUᵀ_ξ (accumulate false).
            unsafe { assume_init(dut) }
        })
        .collect();
    kernel_grad(g, &partials)
}

/// `M_ξ[t, o] = (A dY Aᵀ)_ξ` for the tiles of the tile rows `rows` (column `t` as in
/// [`transform_input`]; the spare column of each tile row is zero, so its `V` adds nothing),
/// with `dY` the 2x2 output-gradient tile at `(2·ty, 2·tx)` (zero outside the plane) and `A =
/// [[1, 0], [1, 1], [1, −1], [0, −1]]`. Each tile row's two output rows are first transposed
/// to `[2·TW, O]` (`rows_t`, `2·rows.len()` of them), so every combination is a loop over the
/// output channels.
fn transform_output_grad(
    g: &Geom,
    dy: &[f32],
    rows: Range<usize>,
    tb: usize,
    m: &mut [f32],
    rows_t: &mut [f32],
) {
    let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
    let (o, hw, ne) = (g.o, g.h * g.w, tw + 1);
    let wide = 2 * tw;
    // rows_t[local][a][x][o] = dY[n, o, 2·ty + a, x], zero past the plane: sixteen channels
    // (a line of rows_t) over all the chunk's rows at a time, so the planes are read as
    // sixteen sequential streams (all of them at once missed the caches).
    for ob in (0..o).step_by(16) {
        let oe = (ob + 16).min(o);
        for (local, r) in rows.clone().enumerate() {
            let (n, ty) = (r / th, r % th);
            // The same channels' rows two tile rows on, fetched while these are copied.
            let ahead = r + 2;
            if ahead < rows.end {
                let (an, aty) = (ahead / th, ahead % th);
                for a in 0..2 {
                    let y = 2 * aty + a;
                    if y < g.h {
                        for oc in ob..oe {
                            prefetch(&dy[(an * o + oc) * hw + y * g.w..][..g.w]);
                        }
                    }
                }
            }
            for a in 0..2 {
                let dst = &mut rows_t[(local * 2 + a) * wide * o..][..wide * o];
                let y = 2 * ty + a;
                if y >= g.h {
                    for x in 0..wide {
                        dst[x * o + ob..x * o + oe].fill(0.0);
                    }
                    continue;
                }
                let row = |oc: usize| &dy[(n * o + ob + oc) * hw + y * g.w..][..g.w];
                transpose_into(&mut dst[ob..], o, oe - ob, g.w, row);
                for x in g.w..wide {
                    dst[x * o + ob..x * o + oe].fill(0.0);
                }
            }
        }
    }
    for local in 0..rows.len() {
        let rows_t = &rows_t[local * 2 * wide * o..][..2 * wide * o];
        let (top, bottom) = rows_t.split_at(wide * o);
        for tx in 0..ne {
            let col = local * ne + tx;
            if tx == tw {
                for xi in 0..XI {
                    m[(xi * tb + col) * o..][..o].fill(0.0);
                }
                continue;
            }
            let y00 = &top[2 * tx * o..][..o];
            let y01 = &top[(2 * tx + 1) * o..][..o];
            let y10 = &bottom[2 * tx * o..][..o];
            let y11 = &bottom[(2 * tx + 1) * o..][..o];
            let ys = [y00, y01, y10, y11];
            // A·dY, row i: (first column, second column) = (y0· + s·y1·) for s = 0, 1, −1
            // and (−y1·) for the last row; then ·Aᵀ along it: [a, a + b, a − b, −b].
            for i in 0..4 {
                let at = |j: usize| ((i * 4 + j) * tb + col) * o;
                // (a, b) of row i from (y00, y01, y10, y11).
                let (sa, sb): (f32, f32) = match i {
                    0 => (0.0, 1.0),
                    1 => (1.0, 1.0),
                    2 => (-1.0, 1.0),
                    _ => (-1.0, 0.0),
                };
                combine(&mut m[at(0)..][..o], ys, |p, _q, r, _s| sb * p + sa * r);
                combine(&mut m[at(1)..][..o], ys, |p, q, r, s| {
                    sb * (p + q) + sa * (r + s)
                });
                combine(&mut m[at(2)..][..o], ys, |p, q, r, s| {
                    sb * (p - q) + sa * (r - s)
                });
                combine(&mut m[at(3)..][..o], ys, |_p, q, _r, s| -(sb * q + sa * s));
            }
        }
    }
}

/// `dst[x·ld + oc] = src(oc)[x]` for `oc < channels`, `x < w`: blocks of four channels by four
/// positions, each read whole before it is written.
///
/// Why: channel by channel, each value's store into the transposed rows waited on the loads
/// around it, and the transposition took a fifth of a 64 → 64 weight gradient at 16x16.
fn transpose_into<'a>(
    dst: &mut [f32],
    ld: usize,
    channels: usize,
    w: usize,
    src: impl Fn(usize) -> &'a [f32],
) {
    let (c4, w4) = (channels / 4 * 4, w / 4 * 4);
    for oc in (0..c4).step_by(4) {
        let rows: [&[f32]; 4] = std::array::from_fn(|i| &src(oc + i)[..w]);
        for x in (0..w4).step_by(4) {
            let block: [[f32; 4]; 4] = std::array::from_fn(|i| {
                let r = &rows[i][x..x + 4];
                [r[0], r[1], r[2], r[3]]
            });
            for j in 0..4 {
                dst[(x + j) * ld + oc..][..4].copy_from_slice(&[
                    block[0][j],
                    block[1][j],
                    block[2][j],
                    block[3][j],
                ]);
            }
        }
        for x in w4..w {
            for (i, row) in rows.iter().enumerate() {
                dst[x * ld + oc + i] = row[x];
            }
        }
    }
    for oc in c4..channels {
        for (x, &v) in src(oc)[..w].iter().enumerate() {
            dst[x * ld + oc] = v;
        }
    }
}

/// `d[k] = f(y00[k], y01[k], y10[k], y11[k])`: one output channel per step (vectorised).
#[inline(always)]
fn combine(d: &mut [f32], [p, q, r, s]: [&[f32]; 4], f: impl Fn(f32, f32, f32, f32) -> f32) {
    for ((((d, &p), &q), &r), &s) in d.iter_mut().zip(p).zip(q).zip(r).zip(s) {
        *d = f(p, q, r, s);
    }
}

/// `dW[o, c] = Gᵀ dU_oc G` from the threads' partial `dUᵀ_ξ[C, O]` (summed here), with `G =
/// [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`: input channels in parallel, each one's
/// sixteen rows over all output channels (contiguous in `dUᵀ`) combined as loops over them.
fn kernel_grad(g: &Geom, partials: &[Vec<f32>]) -> Vec<f32> {
    let (c, o) = (g.c, g.o);
    let k = c * 9;
    let mut dw = uninit_buffer(o * k);
    let out = SharedOut(dw.as_mut_ptr());
    let out = &out;
    (0..c).into_par_iter().for_each_init(
        || vec![0.0f32; (XI + 12 + 9) * o],
        |buf, cc| {
            let (du, rest) = buf.split_at_mut(XI * o);
            let (rg, fin) = rest.split_at_mut(12 * o);
            // dU_ξ[cc, 0..O] summed over the partials (the first two in one pass).
            let start = |xi: usize| (xi * c + cc) * o;
            for (xi, d) in du.chunks_exact_mut(o).enumerate() {
                match partials {
                    [one] => d.copy_from_slice(&one[start(xi)..][..o]),
                    [first, second, rest @ ..] => {
                        let (a, b) = (&first[start(xi)..][..o], &second[start(xi)..][..o]);
                        d.iter_mut()
                            .zip(a.iter().zip(b))
                            .for_each(|(d, (&a, &b))| *d = a + b);
                        for p in rest {
                            d.iter_mut()
                                .zip(&p[start(xi)..][..o])
                                .for_each(|(d, &s)| *d += s);
                        }
                    }
                    [] => d.fill(0.0),
                }
            }
            // Each row of dU times G (4 → 3 values), then Gᵀ over the rows: fin[j·3 + i][o].
            for (a, dst) in rg.chunks_exact_mut(3 * o).enumerate() {
                let u = |b: usize| &du[(a * 4 + b) * o..][..o];
                gt_rows(dst, [u(0), u(1), u(2), u(3)], o);
            }
            for (j, dst) in fin.chunks_exact_mut(3 * o).enumerate() {
                let r = |a: usize| &rg[(a * 3 + j) * o..][..o];
                gt_rows(dst, [r(0), r(1), r(2), r(3)], o);
            }
            for oc in 0..o {
                for (i, j) in (0..3).flat_map(|i| (0..3).map(move |j| (i, j))) {
                    // SAFETY: (oc, cc, i, j) lies inside dW, and only this task writes input
                    // channel cc's values.
                    unsafe {
                        out.0
                            .add(oc * k + cc * 9 + i * 3 + j)
                            .write(MaybeUninit::new(fin[(j * 3 + i) * o + oc]))
                    };
                }
            }
        },
    );
    // SAFETY: every (o, c) kernel's nine values were written above.
    unsafe { assume_init(dw) }
}

/// `dst[i·n..][..n] = Σ_b Gᵀ[i, b] · rows[b]` for the three rows `i` of `Gᵀ` ([`gt_times`]),
/// elementwise over `n` values.
fn gt_rows(dst: &mut [f32], [a, b, d, e]: [&[f32]; 4], n: usize) {
    let (d0, rest) = dst.split_at_mut(n);
    let (d1, d2) = rest.split_at_mut(n);
    for i in 0..n {
        let [x, y, z] = gt_times([a[i], b[i], d[i], e[i]]);
        d0[i] = x;
        d1[i] = y;
        d2[i] = z;
    }
}

/// `Gᵀ · [a, b, d, e]ᵀ`: `[a + (b + d)/2, (b − d)/2, (b + d)/2 + e]`.
fn gt_times([a, b, d, e]: [f32; 4]) -> [f32; 3] {
    [a + 0.5 * (b + d), 0.5 * (b - d), 0.5 * (b + d) + e]
}
