//! Winograd's F(4x4, 3x3) (Lavin & Gray 2016): 6x6 input tiles, 4x4 output tiles, 36
//! multiplications per output tile and input channel where the direct convolution spends 144
//! and F(2x2, 3x3) 64, so the products shrink by 4x against direct and by 1.78x against
//! F(2x2, 3x3).
//!
//! Why a second size: on the planes ResNet-50 and DenseNet run at ImageNet size the products
//! are most of a 3x3 convolution's time even through F(2x2, 3x3), and each output costs 2.25
//! multiplications per channel here against 4 there. The price is larger transforms (their
//! coefficients go up to 8, so rounding grows; `tests/fast_paths.rs` holds values and
//! gradients to the same 1e-4 relative error against Burn's convolution as F(2x2, 3x3)) and
//! coarser tiles (a 14-wide plane is covered by 16, so [`super::Tiles::of`] keeps such planes
//! on F(2x2, 3x3)).
//!
//! The work is laid out as in [`super`]: chunks of tile rows (a tile row is one image's row of
//! 4-high tiles) in parallel, each transformed into `V_ξ[C, T]`, multiplied by the packed
//! `U_ξ[O, C]` on the tile kernel, and transformed back through the epilogue. Unlike F(2x2,
//! 3x3) there is no spare column per tile row: each of the six columns of a tile is gathered
//! into its own array (column `j` of tile `tx` is padded column `4·tx + j`), so every
//! transform is a loop over the whole chunk and no product column is wasted.
//!
//! With `d` a 6x6 input tile, `g` a 3x3 kernel, the output tile is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`:
//!
//! ```text
//! Bᵀ = [ 4  0 −5  0  1  0 ]   G = [  1/4     0     0  ]   Aᵀ = [ 1  1  1  1  1  0 ]
//!      [ 0 −4 −4  1  1  0 ]       [ −1/6  −1/6  −1/6  ]        [ 0  1 −1  2 −2  0 ]
//!      [ 0  4 −4 −1  1  0 ]       [ −1/6   1/6  −1/6  ]        [ 0  1  1  4  4  0 ]
//!      [ 0 −2 −1  2  1  0 ]       [ 1/24  1/12   1/6  ]        [ 0  1 −1  8 −8  1 ]
//!      [ 0  2 −1 −2  1  0 ]       [ 1/24 −1/12   1/6  ]
//!      [ 0  4  0 −5  0  1 ]       [   0     0     1   ]
//! ```

use std::ops::Range;

use super::super::geom::Geom;
use super::{packed_transform, prefetch, run_chunks};
use crate::nn::fast::buffer::SharedOut;
use crate::nn::fast::epilogue::{Epilogue, write_out};
use crate::nn::fast::tile_gemm::PackedA;

/// Input tile side: four outputs and the kernel's two extra taps.
const ALPHA: usize = 6;
/// Output tile side.
const TILE: usize = 4;
/// Transformed positions of a tile: one matrix product each.
const XI: usize = ALPHA * ALPHA;

/// Values of `V` and `M` per chunk (2 MB), as for F(2x2, 3x3).
const CHUNK_VALUES: usize = 512 * 1024;

/// The 36 matrices `U_ξ[O, C] = (G g_oc Gᵀ)_ξ`, packed for the tile kernel, of the kernels
/// `g_oc[i][j] = w(o, c, i, j)`.
pub(super) fn transform_weights(
    o: usize,
    c: usize,
    w: impl Fn(usize, usize, usize, usize) -> f32 + Sync,
) -> Vec<PackedA> {
    packed_transform(o, c, w, g_rows)
}

/// `G · [a, b, d]ᵀ`.
fn g_rows([a, b, d]: [f32; 3]) -> [f32; ALPHA] {
    let even = a / 24.0 + d / 6.0;
    [
        a / 4.0,
        -(a + b + d) / 6.0,
        -(a - b + d) / 6.0,
        even + b / 12.0,
        even - b / 12.0,
        d,
    ]
}

/// Tile rows per chunk: at most [`CHUNK_VALUES`] of `V` and `M`, in a multiple of the threads'
/// count of chunks, as even as the tile rows allow.
fn chunking(g: &Geom, tile_rows: usize, tw: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let most = (CHUNK_VALUES / (XI * (g.c + g.o) * tw).max(1)).max(1);
    let chunks = threads * tile_rows.div_ceil(threads * most).max(1);
    tile_rows.div_ceil(chunks).max(1)
}

/// The convolution `g` (3x3, stride 1, padding 1) of `x` `[N, C, H, W]` with the transformed
/// weights `u` ([`transform_weights`]), as `[N, O, H, W]`, with the epilogue applied as each
/// output value is written. Tile row `r` of a chunk (local index) owns columns `r·TW..` of
/// `V_ξ` and `M_ξ`.
pub(super) fn forward(g: &Geom, x: &[f32], u: &[PackedA], epilogue: Option<Epilogue>) -> Vec<f32> {
    debug_assert_eq!(u.len(), XI);
    let (th, tw) = (g.h.div_ceil(TILE), g.w.div_ceil(TILE));
    let tile_rows = g.n * th;
    let per = chunking(g, tile_rows, tw);
    let tb = per * tw;
    // The input transform's 36 gathered columns and 36 row combinations, and one padded row.
    run_chunks(
        g,
        u,
        (tile_rows, per, tw),
        2 * XI * tb + TILE * tw + 2,
        |rows, v, tmp| transform_input(g, x, rows, tb, v, tmp),
        // SAFETY: `run_chunks` hands each chunk's tile rows to one call only.
        |rows, m, out, tmp| unsafe { transform_output(g, m, rows, tb, out, epilogue, tmp) },
    )
}

/// `Bᵀ · [d0, .., d5]` element by element over `len` values, into `out`.
#[inline(always)]
fn bt(d: [&[f32]; ALPHA], out: [&mut [f32]; ALPHA], len: usize) {
    let [d0, d1, d2, d3, d4, d5] = d.map(|s| &s[..len]);
    let [o0, o1, o2, o3, o4, o5] = out.map(|s| &mut s[..len]);
    bt_rows(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5);
}

/// [`bt`] on separate slices of one length, so the compiler knows none overlaps and
/// vectorises the loop.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn bt_rows(
    d0: &[f32],
    d1: &[f32],
    d2: &[f32],
    d3: &[f32],
    d4: &[f32],
    d5: &[f32],
    o0: &mut [f32],
    o1: &mut [f32],
    o2: &mut [f32],
    o3: &mut [f32],
    o4: &mut [f32],
    o5: &mut [f32],
) {
    let len = o0.len();
    let (d0, d1, d2, d3, d4, d5) = (
        &d0[..len],
        &d1[..len],
        &d2[..len],
        &d3[..len],
        &d4[..len],
        &d5[..len],
    );
    let (o1, o2, o3, o4, o5) = (
        &mut o1[..len],
        &mut o2[..len],
        &mut o3[..len],
        &mut o4[..len],
        &mut o5[..len],
    );
    for t in 0..len {
        let (a1, a2, a3, a4) = (d1[t], d2[t], d3[t], d4[t]);
        // Shared sums of rows 1-4: (d4 − 4·d2) ± (d3 − 4·d1) and (d4 − d2) ± 2·(d3 − d1).
        let (p, q) = (a4 - 4.0 * a2, a3 - 4.0 * a1);
        let (r, s) = (a4 - a2, 2.0 * (a3 - a1));
        o0[t] = 4.0 * d0[t] - 5.0 * a2 + a4;
        o1[t] = p + q;
        o2[t] = p - q;
        o3[t] = r + s;
        o4[t] = r - s;
        o5[t] = 4.0 * a1 - 5.0 * a3 + d5[t];
    }
}

/// `Aᵀ · [m0, .., m5]` element by element over `len` values, into `out`.
#[inline(always)]
fn at(m: [&[f32]; ALPHA], out: [&mut [f32]; TILE], len: usize) {
    let [m0, m1, m2, m3, m4, m5] = m.map(|s| &s[..len]);
    let [o0, o1, o2, o3] = out.map(|s| &mut s[..len]);
    at_rows(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3);
}

/// [`at`] on separate slices of one length (see [`bt_rows`]).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn at_rows(
    m0: &[f32],
    m1: &[f32],
    m2: &[f32],
    m3: &[f32],
    m4: &[f32],
    m5: &[f32],
    o0: &mut [f32],
    o1: &mut [f32],
    o2: &mut [f32],
    o3: &mut [f32],
) {
    let len = o0.len();
    let (m0, m1, m2, m3, m4, m5) = (
        &m0[..len],
        &m1[..len],
        &m2[..len],
        &m3[..len],
        &m4[..len],
        &m5[..len],
    );
    let (o1, o2, o3) = (&mut o1[..len], &mut o2[..len], &mut o3[..len]);
    for t in 0..len {
        let (plus1, minus1) = (m1[t] + m2[t], m1[t] - m2[t]);
        let (plus2, minus2) = (m3[t] + m4[t], m3[t] - m4[t]);
        o0[t] = m0[t] + plus1 + plus2;
        o1[t] = minus1 + 2.0 * minus2;
        o2[t] = plus1 + 4.0 * plus2;
        o3[t] = minus1 + 8.0 * minus2 + m5[t];
    }
}

/// Column `j` of every tile of one padded row (`d_j[tx] = padded[4·tx + j]`), in one loop so
/// the compiler reads the row with vector shuffles.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn gather(
    padded: &[f32],
    d0: &mut [f32],
    d1: &mut [f32],
    d2: &mut [f32],
    d3: &mut [f32],
    d4: &mut [f32],
    d5: &mut [f32],
    tw: usize,
) {
    let padded = &padded[..TILE * tw + 2];
    let (d0, d1, d2, d3, d4, d5) = (
        &mut d0[..tw],
        &mut d1[..tw],
        &mut d2[..tw],
        &mut d3[..tw],
        &mut d4[..tw],
        &mut d5[..tw],
    );
    for tx in 0..tw {
        let q = &padded[TILE * tx..][..ALPHA];
        d0[tx] = q[0];
        d1[tx] = q[1];
        d2[tx] = q[2];
        d3[tx] = q[3];
        d4[tx] = q[4];
        d5[tx] = q[5];
    }
}

/// One output row from its tiles' four columns (`line[4·tx + b] = y_b[tx]`), in one loop
/// (see [`gather`]).
#[inline(never)]
fn scatter(y0: &[f32], y1: &[f32], y2: &[f32], y3: &[f32], line: &mut [f32], tw: usize) {
    let (y0, y1, y2, y3) = (&y0[..tw], &y1[..tw], &y2[..tw], &y3[..tw]);
    for (tx, quad) in line[..TILE * tw].chunks_exact_mut(TILE).enumerate() {
        quad[0] = y0[tx];
        quad[1] = y1[tx];
        quad[2] = y2[tx];
        quad[3] = y3[tx];
    }
}

/// `COUNT` rows, `stride` apart, starting at `s[0]`.
fn rows_of<const COUNT: usize>(s: &[f32], stride: usize) -> [&[f32]; COUNT] {
    std::array::from_fn(|i| &s[i * stride..])
}

/// `count` disjoint mutable rows, `stride` apart, starting at `s[0]`.
fn rows_mut<const COUNT: usize>(s: &mut [f32], stride: usize) -> [&mut [f32]; COUNT] {
    let mut it = s.chunks_mut(stride);
    std::array::from_fn(|_| it.next().expect("the buffer holds every row"))
}

/// `V_ξ[c, j] = (Bᵀ d B)_ξ` for the tiles of the tile rows `rows` (column `j = (row −
/// rows.start)·TW + tx`), with `d` the 6x6 input tile whose top-left corner is input position
/// `(4·ty − 1, 4·tx − 1)` (zero outside the image).
fn transform_input(
    g: &Geom,
    x: &[f32],
    rows: Range<usize>,
    tb: usize,
    v: &mut [f32],
    tmp: &mut [f32],
) {
    let (th, tw) = (g.h.div_ceil(TILE), g.w.div_ceil(TILE));
    let hw = g.h * g.w;
    let len = rows.len() * tw;
    // cols[i·6 + j]: value (i, j) of every tile; comb[k·6 + j]: (Bᵀ d)[k][j].
    let (cols, rest) = tmp.split_at_mut(XI * tb);
    let (comb, rest) = rest.split_at_mut(XI * tb);
    let padded = &mut rest[..TILE * tw + 2];
    for c in 0..g.c {
        // The next channel's rows of these tile rows, fetched while this one is transformed,
        // as in F(2x2, 3x3)'s input transform: inside a ResNet-50 ImageNet training step the
        // forwards and input gradients of 64 → 64 at 56x56 and 128 → 128 at 28x28 took
        // 0.77-0.98x (median of four pairs 0.93x) the time without it (`densum bench resnet50
        // --dataset imagenet --batch 8 --mode train --conv-profile`, AMD Zen 4).
        if c + 1 < g.c {
            for r in rows.clone() {
                let (n, ty) = (r / th, r % th);
                let y0 = (TILE * ty).min(g.h - 1);
                let y1 = (TILE * ty + TILE).min(g.h);
                prefetch(&x[(n * g.c + c + 1) * hw + y0 * g.w..][..(y1 - y0) * g.w]);
            }
        }
        for i in 0..ALPHA {
            for (local, r) in rows.clone().enumerate() {
                let (n, ty) = (r / th, r % th);
                // Padded row 4·ty + i is input row 4·ty + i − 1.
                let iy = (TILE * ty + i).wrapping_sub(1);
                if iy >= g.h {
                    for j in 0..ALPHA {
                        cols[(i * ALPHA + j) * tb + local * tw..][..tw].fill(0.0);
                    }
                    continue;
                }
                let src = &x[(n * g.c + c) * hw + iy * g.w..][..g.w];
                padded[0] = 0.0;
                padded[1..=g.w].copy_from_slice(src);
                padded[g.w + 1..].fill(0.0);
                let at = i * ALPHA * tb + local * tw;
                let [c0, c1, c2, c3, c4, c5] = rows_mut::<ALPHA>(&mut cols[at..], tb);
                gather(padded, c0, c1, c2, c3, c4, c5, tw);
            }
        }
        // Bᵀ over the rows i of each column j, then over the columns of each result row k,
        // straight into V_{k·6 + l} (rows of channel c, `C·tb` apart).
        for j in 0..ALPHA {
            bt(
                rows_of(&cols[j * tb..], ALPHA * tb),
                rows_mut(&mut comb[j * tb..], ALPHA * tb),
                len,
            );
        }
        for k in 0..ALPHA {
            bt(
                rows_of(&comb[k * ALPHA * tb..], tb),
                rows_mut(&mut v[(k * ALPHA * g.c + c) * tb..], g.c * tb),
                len,
            );
        }
    }
}

/// Writes the output rows of the tile rows `rows` from `M_ξ[o, j]` (columns as in
/// [`transform_input`]): `Aᵀ m A` per tile, cropped to the image, through the epilogue.
///
/// # Safety
/// `out` must point to the `[N, O, H, W]` output, and no other thread may write the output
/// rows of `rows` (rows `4·ty..4·ty + 4` of every channel of the tile rows' images).
unsafe fn transform_output(
    g: &Geom,
    m: &[f32],
    rows: Range<usize>,
    tb: usize,
    out: SharedOut,
    epilogue: Option<Epilogue>,
    tmp: &mut [f32],
) {
    let (th, tw) = (g.h.div_ceil(TILE), g.w.div_ceil(TILE));
    let len = rows.len() * tw;
    // s[a·6 + l]: (Aᵀ m)[a][l]; y[b]: output column b of every tile, for one output row a.
    let (s, rest) = tmp.split_at_mut(TILE * ALPHA * tb);
    let (y, rest) = rest.split_at_mut(TILE * tb);
    let line = &mut rest[..TILE * tw];
    for o in 0..g.o {
        // M_{k·6 + l} of channel o is `O·tb` values after M_{k·6 + l − 1}'s.
        let m_o = &m[o * tb..];
        for l in 0..ALPHA {
            at(
                rows_of(&m_o[l * g.o * tb..], ALPHA * g.o * tb),
                rows_mut(&mut s[l * tb..], ALPHA * tb),
                len,
            );
        }
        for a in 0..TILE {
            at(rows_of(&s[a * ALPHA * tb..], tb), rows_mut(y, tb), len);
            for (local, r) in rows.clone().enumerate() {
                let (n, ty) = (r / th, r % th);
                let oy = TILE * ty + a;
                if oy >= g.h {
                    continue;
                }
                let [y0, y1, y2, y3] = rows_of(&y[local * tw..], tb);
                scatter(y0, y1, y2, y3, line, tw);
                let at = ((n * g.o + o) * g.h + oy) * g.w;
                // SAFETY: row (n, o, oy) lies inside the output, and only this chunk writes it
                // (the caller's contract).
                let row = unsafe { std::slice::from_raw_parts_mut(out.0.add(at), g.w) };
                write_out(epilogue, o, &line[..g.w], row, at);
            }
        }
    }
}
