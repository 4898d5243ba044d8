//! Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", CVPR 2016) for stride-1 3x3 convolutions with padding 1:
//! the forward, and the input gradient (the same kind of convolution with the kernel rotated).
//!
//! Why: a direct 3x3 convolution spends 36 multiplications on each 2x2 block of outputs per
//! input channel; Winograd's algorithm spends 16, so the products shrink by 2.25x. At the speed
//! the products already run (near one core's peak, docs/results/speed.md), fewer
//! multiplications is the one way left to outrun oneDNN, which runs these convolutions directly
//! on CPUs.
//!
//! With `d` a 4x4 input tile (tiles overlap by 2), `g` a 3x3 kernel and the constant matrices
//! `B`, `G`, `A` below, the 2x2 output tile is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over input
//! channels, each of the 16 transformed positions `ξ` is a matrix product
//! `M_ξ[O, T] = U_ξ[O, C] · V_ξ[C, T]` over tiles `T`: the weights are transformed and packed
//! once per call (`U`), the input a chunk of tile rows at a time (`V`, sized to stay in cache),
//! and the 16 products run on [`tile_gemm`](crate::nn::fast::tile_gemm). Chunks of tile rows
//! run in parallel and may span images, so small planes still get long products. The weight
//! gradient, the algorithm transposed, is in `winograd/weight_grad.rs` (F(2x2, 3x3) only).
//!
//! The transforms' coefficients are 0, ±1 and ½, so rounding stays at the level of the direct
//! convolution's (tests/fast_paths.rs compares values and gradients with Burn's convolution).
//! Planes at least 28 wide take the larger tiles of F(4x4, 3x3) instead ([`Tiles`], `f4`).
//! `DENSUM_WINOGRAD=0` switches both off (see `nn/fast/mod.rs`).

use std::ops::Range;

use rayon::prelude::*;

use super::geom::Geom;
use crate::nn::fast::buffer::{SharedOut, as_uninit, assume_init, uninit_buffer, with_scratch};
use crate::nn::fast::epilogue::Epilogue;
use crate::nn::fast::tile_gemm::{MR, PackedA, product, strided_rows};

mod f4;
mod weight_grad;

pub(super) use weight_grad::weight_grad;

/// Transformed positions of a 4x4 tile: one matrix product each.
const XI: usize = 16;

/// Fewest input and output channels, and narrowest plane, for which the transforms pay off.
/// The transforms cost in proportion to the channels and the products in proportion to their
/// product, so few channels leave the saving to the transforms' passes over memory; at 7x7
/// the 2x2 tiles cover 8x8 (31 % wasted) and the extra column of every tile row (see
/// [`forward`]) another 25 %. On 8x8 planes (ResNet-50 0.25x CIFAR, 64 channels) the forward
/// alone was faster, but whole-network inference was 4-29 % slower in three of three
/// alternations (`densum bench resnet50 --dataset cifar100 --width 0.25 --batch 64`,
/// `DENSUM_WINOGRAD=0/1`), so planes under 14 wide stay direct. Measured with `op_profile
/// --fast-only --kernel 3`
/// (`DENSUM_WINOGRAD=0` against `=1`, 2 threads, AMD Zen 4, ms per forward; the table in
/// docs/results/speed.md, session 9): ResNet-50 at 224, batch 8: 64 channels at 56x56 9.2 →
/// 6.1, 128 at 28x28 9.2 → 5.7, 256 at 14x14 9.2 → 6.6, but 512 at 7x7 11.1 → 14.3; ResNet-50
/// 0.25x at 32, batch 64: 16 channels at 32x32 1.7 → 2.2, 32 at 16x16 1.7 → 1.6, 64 at 8x8
/// 2.1 → 1.6; DenseNet-121's 128 → 32, batch 8: 8.9 → 7.1 at 56x56, 2.4 → 2.1 at 28x28, 0.85
/// → 0.68 at 14x14, 0.28 → 0.30 at 7x7.
const MIN_CHANNELS: usize = 32;
/// See [`MIN_CHANNELS`].
const MIN_WIDTH: usize = 14;

/// Values of `V` and `M` per chunk (2 MB): they stay in L2 or close to it between the input
/// transform, the products and the output transform.
const CHUNK_VALUES: usize = 512 * 1024;

/// Whether `g` runs through Winograd's algorithm: a 3x3 kernel, stride 1, padding 1 (so the
/// output has the input's size), enough channels both ways, the tile kernel available, and
/// the environment not switching it off.
pub(super) fn applies(g: &Geom) -> bool {
    crate::nn::fast::winograd_enabled()
        && (g.kh, g.kw) == (3, 3)
        && g.stride == [1, 1]
        && g.pad == [1, 1]
        && (g.oh, g.ow) == (g.h, g.w)
        && g.c >= MIN_CHANNELS
        && g.o >= MIN_CHANNELS
        && g.w >= MIN_WIDTH
}

/// Whether `g`'s weight gradient runs through Winograd's F(2x2, 3x3) ([`weight_grad`]): the
/// convolutions [`applies`] takes, with enough channels that the products saved (in proportion
/// to `C·O` per tile) outweigh the transforms (to `C + O`): `C·O / (C + O)` at least 32.
/// Alone (`examples/weight_grad`, with and without `DENSUM_WINOGRAD_WEIGHT_GRAD=0` in turn, three
/// pairs each, AMD Zen 4, 2 threads; docs/results/speed.md, session 18), Winograd took 0.67-0.69x
/// the in-place direct gradient's time at 128 → 128 on 28x28 (batch 8), 0.74-0.78x (once
/// 1.06x) at 64 → 64 on 56x56, 0.78-0.88x at 256 → 256 on 14x14, 0.68-0.75x at 128 → 128 on
/// 16x16 (batch 64), 0.85-0.90x at 64 → 64 on 16x16 (batch 32; `C·O / (C + O)` = 32). Below 32
/// it lost: DenseNet-121's 128 → 32 (25.6) 0.89-1.87x on 28x28 and 1.28-1.44x on 14x14 (though
/// 0.83-0.90x on 56x56), 32 → 32 on 16x16 (16) 1.00-1.20x.
pub(super) fn weight_grad_applies(g: &Geom) -> bool {
    crate::nn::fast::winograd_weight_grad_enabled()
        && applies(g)
        && g.c * g.o >= WEIGHT_GRAD_MIN_HARMONIC * (g.c + g.o)
}

/// See [`weight_grad_applies`].
const WEIGHT_GRAD_MIN_HARMONIC: usize = 32;

/// Winograd's tile sizes: F(2x2, 3x3) or F(4x4, 3x3) ([`f4`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tiles {
    /// 2x2 output tiles, 16 products.
    F2,
    /// 4x4 output tiles, 36 products, 1.78x fewer multiplications.
    F4,
}

impl Tiles {
    /// The tiles `g` ([`applies`]) runs with: 4x4 on planes at least [`F4_MIN_WIDTH`] wide.
    pub(super) fn of(g: &Geom) -> Tiles {
        if g.w >= F4_MIN_WIDTH {
            Tiles::F4
        } else {
            Tiles::F2
        }
    }
}

/// Narrowest plane that takes F(4x4, 3x3). Speed alone would put it at 16: at 14x14 its tiles
/// cover 16x16 and its chunks are a few tiles wide, and it was no faster than F(2x2, 3x3) (256
/// channels, ResNet-50 at 224, batch 8: 6.2 → 6.2-7.7 ms per forward, `examples/op_profile
/// --net resnet50 --fast-only --kernel 3`, alternating), from 16 wide it was faster (32
/// channels at 16x16, batch 64: 1.60 → 1.41 ms). But its rounding is about six times F(2x2,
/// 3x3)'s (`tests/fast_paths.rs`: 3-5e-6 against 5-8e-7 of the largest output), and in the
/// CIFAR ResNet-18 training step of `tests/parity.rs` that was enough to flip a ReLU whose
/// input lay within it of zero, which moved gradients by up to 5.7e-2 of their scale against
/// PyTorch (4.4e-6 with F(2x2, 3x3) there). So the larger tiles run where they gain most, the
/// ImageNet-sized planes (28 and 56 wide: 13-19 % per forward), and CIFAR-sized ones keep the
/// more exact F(2x2, 3x3) (docs/results/speed.md, session 16).
const F4_MIN_WIDTH: usize = 28;

/// The convolution `g` ([`applies`]) of `x` with the kernels `w(o, c, i, j)`, through `tiles`.
pub(super) fn convolve(
    g: &Geom,
    tiles: Tiles,
    x: &[f32],
    w: impl Fn(usize, usize, usize, usize) -> f32 + Sync,
    epilogue: Option<Epilogue>,
) -> Vec<f32> {
    match tiles {
        Tiles::F4 => f4::forward(g, x, &f4::transform_weights(g.o, g.c, w), epilogue),
        Tiles::F2 => forward(g, x, &transform_weights(g.o, g.c, w), epilogue),
    }
}

/// The 16 matrices `U_ξ[O, C] = (G g_oc Gᵀ)_ξ`, packed for the tile kernel, of the kernels
/// `g_oc[i][j] = w(o, c, i, j)`. `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`.
fn transform_weights(
    o: usize,
    c: usize,
    w: impl Fn(usize, usize, usize, usize) -> f32 + Sync,
) -> Vec<PackedA> {
    packed_transform(o, c, w, g_rows)
}

/// The `A·A` matrices `U_ξ[O, C] = (G g_oc Gᵀ)_ξ` (`ξ = i·A + j`) of the kernels `g_oc[i][j]
/// = w(o, c, i, j)`, packed for the tile kernel, for the `A x 3` matrix `G` given by
/// `g_rows(v) = G·v`.
fn packed_transform<const A: usize>(
    o: usize,
    c: usize,
    w: impl Fn(usize, usize, usize, usize) -> f32 + Sync,
    g_rows: impl Fn([f32; 3]) -> [f32; A] + Sync,
) -> Vec<PackedA> {
    // All A·A values of a panel's kernels at once, written straight into the packed matrices,
    // each step across the panel's rows. `g_rows` is inlined (as a function pointer it was one
    // indirect call per row of G: 14 % of the samples of an experimental 512 → 512 Winograd
    // forward at 7x7 under `perf`, speed.md session 19): forwards at 256 → 256 on 14x14 and
    // 128 → 128 on 28x28 (batch 8) took 0.83-0.88x and 0.81-0.95x the time, 64 → 64 on 56x56
    // and 32 → 32 on 16x16 the same (0.98-1.11x; four pairs each, two builds in turn,
    // `examples/weight_grad N C O SIDE 15 --pass forward`, AMD Zen 4, 2 threads).
    PackedA::new_many(A * A, o, c, |rows, cc, u| {
        // kernel[i][j][lane] = g_{row, cc}[i][j].
        let mut kernel = [[[0f32; MR]; 3]; 3];
        for (lane, oo) in rows.enumerate() {
            for (i, kernel_i) in kernel.iter_mut().enumerate() {
                for (j, kernel_ij) in kernel_i.iter_mut().enumerate() {
                    kernel_ij[lane] = w(oo, cc, i, j);
                }
            }
        }
        // G g: the three kernel rows combined, per column j.
        let cols = [0, 1, 2].map(|j| across(&g_rows, [kernel[0][j], kernel[1][j], kernel[2][j]]));
        // (G g) Gᵀ: each row i of G g combined over its three columns.
        for i in 0..A {
            let row = across(&g_rows, [cols[0][i], cols[1][i], cols[2][i]]);
            for (j, lanes) in row.iter().enumerate() {
                u[(i * A + j) * MR..][..MR].copy_from_slice(lanes);
            }
        }
    })
}

/// `g_rows` applied lane by lane to three `MR`-lane vectors: `A` vectors.
#[inline(always)]
fn across<const A: usize>(
    g_rows: &impl Fn([f32; 3]) -> [f32; A],
    [a, b, d]: [[f32; MR]; 3],
) -> [[f32; MR]; A] {
    let mut out = [[0f32; MR]; A];
    for lane in 0..MR {
        for (o, v) in out.iter_mut().zip(g_rows([a[lane], b[lane], d[lane]])) {
            o[lane] = v;
        }
    }
    out
}

/// `G · [a, b, d]ᵀ`: `[a, (a + b + d)/2, (a − b + d)/2, d]`.
fn g_rows([a, b, d]: [f32; 3]) -> [f32; 4] {
    [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d]
}

/// Tile rows (a tile row is one image's row of 2-high tiles, `cols` columns of `V`) per chunk.
fn chunking(g: &Geom, tile_rows: usize, cols: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (CHUNK_VALUES / (XI * (g.c + g.o) * cols).max(1))
        .max(1)
        .min(tile_rows.div_ceil(threads).max(1))
}

/// The convolution `g` (3x3, stride 1, padding 1; [`applies`]) of `x` `[N, C, H, W]` with the
/// transformed weights `u` ([`transform_weights`]), as `[N, O, H, W]`, with the epilogue
/// applied as each output value is written.
///
/// Within a chunk, tile row `r` (local index) owns columns `r·(TW + 1)..` of `V_ξ` and `M_ξ`:
/// one column more than its tiles, so the transforms run as single loops over the whole chunk
/// (a tile's right neighbour is the next column even at the end of a row) instead of short
/// loops per row; the extra column is computed and never written out.
fn forward(g: &Geom, x: &[f32], u: &[PackedA], epilogue: Option<Epilogue>) -> Vec<f32> {
    debug_assert_eq!(u.len(), XI);
    let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
    let ne = tw + 1;
    let tile_rows = g.n * th;
    let per = chunking(g, tile_rows, ne);
    let tb = per * ne;
    // Ten rows of `tb + 1` values: the even and odd columns of four input rows, and two
    // combinations of them (see `transform_input`; `transform_output` uses six).
    run_chunks(
        g,
        u,
        (tile_rows, per, ne),
        10 * (tb + 1),
        |rows, v, tmp| transform_input(g, x, rows, tb, v, tmp),
        // SAFETY: `run_chunks` hands each chunk's tile rows to one call only.
        |rows, m, out, tmp| unsafe { transform_output(g, m, rows, tb, out, epilogue, tmp) },
    )
}

/// Runs a Winograd convolution of `g` a chunk of `per` tile rows at a time (`tile_rows` in
/// all, `cols` columns of `V_ξ` and `M_ξ` each, so rows are `tb = per·cols` apart), chunks in
/// parallel: `input(rows, V, scratch)` writes the `u.len()` matrices `V_ξ[C, tb]`, the
/// products give `M_ξ = U_ξ · V_ξ`, and `output(rows, M, out, scratch)` writes the output rows
/// of its tile rows (and no others) through `out`, all of them. `scratch` values are the
/// transforms' own.
pub(super) fn run_chunks(
    g: &Geom,
    u: &[PackedA],
    (tile_rows, per, cols): (usize, usize, usize),
    scratch: usize,
    input: impl Fn(Range<usize>, &mut [f32], &mut [f32]) + Sync,
    output: impl Fn(Range<usize>, &[f32], SharedOut, &mut [f32]) + Sync,
) -> Vec<f32> {
    let xi = u.len();
    // V_ξ and M_ξ rows are `tb` apart in every chunk (the last one may fill fewer).
    let tb = per * cols;
    let rows_v = strided_rows(g.c, tb);
    let mut y = uninit_buffer(g.n * g.o * g.h * g.w);
    let out = SharedOut(y.as_mut_ptr());
    let out = &out;
    (0..tile_rows.div_ceil(per))
        .into_par_iter()
        .for_each(|chunk| {
            let rows = chunk * per..((chunk + 1) * per).min(tile_rows);
            let width = rows.len() * cols;
            with_scratch(xi * (g.c + g.o) * tb + scratch, |buf| {
                let (v, rest) = buf.split_at_mut(xi * g.c * tb);
                let (m, tmp) = rest.split_at_mut(xi * g.o * tb);
                input(rows.clone(), v, tmp);
                for (u_xi, (v_xi, m_xi)) in u
                    .iter()
                    .zip(v.chunks_exact(g.c * tb).zip(m.chunks_exact_mut(g.o * tb)))
                {
                    product(u_xi, v_xi, &rows_v, width, as_uninit(m_xi), tb, false);
                }
                output(rows, m, SharedOut(out.0), tmp);
            });
        });
    // SAFETY: every output row belongs to one tile row, and every tile row's chunk wrote all
    // of its rows' values (the contract on `output`).
    unsafe { assume_init(y) }
}

/// `V_ξ[c, j] = (Bᵀ d B)_ξ` for the tiles of the tile rows `rows` (column `j = (row −
/// rows.start)·(TW + 1) + tx`), with `d` the 4x4 input tile whose top-left corner is input
/// position `(2·ty − 1, 2·tx − 1)` (zero outside the image).
/// `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`.
///
/// Per channel: the four input rows of every tile row are split into even and odd padded
/// columns (`e[t] = d[2t]`, `o[t] = d[2t + 1]`, `TW + 1` of each per tile row), then combined
/// row-wise by `Bᵀ` and column-wise (`t` with `t + 1`) in loops over the whole chunk.
fn transform_input(
    g: &Geom,
    x: &[f32],
    rows: Range<usize>,
    tb: usize,
    v: &mut [f32],
    tmp: &mut [f32],
) {
    let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
    let (hw, ne) = (g.h * g.w, tw + 1);
    let len = rows.len() * ne;
    let (even, rest) = tmp.split_at_mut(4 * (tb + 1));
    let (odd, rest) = rest.split_at_mut(4 * (tb + 1));
    let (re, ro) = rest.split_at_mut(tb + 1);
    let (re, ro) = (&mut re[..len + 1], &mut ro[..len + 1]);
    let full = g.w / 2;
    for c in 0..g.c {
        // The next channel's rows of these tile rows, fetched while this one is transformed:
        // the chunk reads each plane a few rows at a time, too little for the CPU's own
        // prefetching to follow (docs/results/speed.md, session 18).
        if c + 1 < g.c {
            for r in rows.clone() {
                let (n, ty) = (r / th, r % th);
                let y0 = (2 * ty).min(g.h - 1);
                let y1 = (2 * ty + 2).min(g.h);
                prefetch(&x[(n * g.c + c + 1) * hw + y0 * g.w..][..(y1 - y0) * g.w]);
            }
        }
        for i in 0..4 {
            let e_all = &mut even[i * (tb + 1)..][..len + 1];
            let o_all = &mut odd[i * (tb + 1)..][..len + 1];
            e_all[len] = 0.0;
            o_all[len] = 0.0;
            for (local, r) in rows.clone().enumerate() {
                let (n, ty) = (r / th, r % th);
                let e = &mut e_all[local * ne..][..ne];
                let o = &mut o_all[local * ne..][..ne];
                // Padded row 2·ty + i is input row 2·ty + i − 1.
                let iy = (2 * ty + i).wrapping_sub(1);
                if iy >= g.h {
                    e.fill(0.0);
                    o.fill(0.0);
                    continue;
                }
                // Padded column p is input column p − 1: e[t] = src[2t − 1], o[t] = src[2t],
                // one pass over the row's pairs, then the padding (e[0], and the columns past
                // the row's end).
                let src = &x[(n * g.c + c) * hw + iy * g.w..][..g.w];
                let pairs = src.chunks_exact(2);
                let last = pairs.remainder().first().copied();
                for ((pair, o), e) in pairs.zip(o.iter_mut()).zip(e[1..].iter_mut()) {
                    *o = pair[0];
                    *e = pair[1];
                }
                e[0] = 0.0;
                e[full + 1..].fill(0.0);
                o[full] = last.unwrap_or(0.0);
                o[full + 1..].fill(0.0);
            }
        }
        // Bᵀ's rows: d0 − d2, d1 + d2, d2 − d1, d1 − d3.
        for (i, (p, q, sign)) in [(0, 2, -1.0), (1, 2, 1.0), (2, 1, -1.0), (1, 3, -1.0f32)]
            .into_iter()
            .enumerate()
        {
            let combine = |src: &[f32], dst: &mut [f32]| {
                let a = &src[p * (tb + 1)..][..len + 1];
                let b = &src[q * (tb + 1)..][..len + 1];
                for ((d, &a), &b) in dst.iter_mut().zip(a).zip(b) {
                    *d = a + sign * b;
                }
            };
            combine(even, re);
            combine(odd, ro);
            // Then B over columns: e_t − e_{t+1}, o_t + e_{t+1}, e_{t+1} − o_t, o_t − o_{t+1}.
            let (e0, e1, o0, o1) = (&re[..len], &re[1..], &ro[..len], &ro[1..]);
            let at = |jj: usize| ((i * 4 + jj) * g.c + c) * tb;
            for ((d, &a), &b) in v[at(0)..][..len].iter_mut().zip(e0).zip(e1) {
                *d = a - b;
            }
            for ((d, &a), &b) in v[at(1)..][..len].iter_mut().zip(o0).zip(e1) {
                *d = a + b;
            }
            for ((d, &a), &b) in v[at(2)..][..len].iter_mut().zip(e1).zip(o0) {
                *d = a - b;
            }
            for ((d, &a), &b) in v[at(3)..][..len].iter_mut().zip(o0).zip(o1) {
                *d = a - b;
            }
        }
    }
}

/// Writes the output rows of the tile rows `rows` from `M_ξ[o, j]` (columns as in
/// [`transform_input`]): `Aᵀ m A` per tile with `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`, cropped
/// to the image, through the epilogue.
///
/// # Safety
/// `out` must point to the `[N, O, H, W]` output, and no other thread may write the output
/// rows of `rows` (rows `2·ty` and `2·ty + 1` of every channel of the tile rows' images).
unsafe fn transform_output(
    g: &Geom,
    m: &[f32],
    rows: Range<usize>,
    tb: usize,
    out: SharedOut,
    epilogue: Option<Epilogue>,
    tmp: &mut [f32],
) {
    let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
    let ne = tw + 1;
    let len = rows.len() * ne;
    let (s, rest) = tmp.split_at_mut(4 * len);
    let (y0, rest) = rest.split_at_mut(len);
    let (y1, rest) = rest.split_at_mut(len);
    // One output row, interleaved, for the epilogue (at least 4·(TW + 1) values are left).
    let line = &mut rest[..g.w];
    for o in 0..g.o {
        let mm = |xi: usize| &m[(xi * g.o + o) * tb..][..len];
        for a in 0..2 {
            // Aᵀ's row a over the tiles' rows, for each of their four columns jj.
            for jj in 0..4 {
                let dst = &mut s[jj * len..][..len];
                let (m0, m1, m2, m3) = (mm(jj), mm(4 + jj), mm(8 + jj), mm(12 + jj));
                if a == 0 {
                    for (((d, &p), &q), &r) in dst.iter_mut().zip(m0).zip(m1).zip(m2) {
                        *d = p + q + r;
                    }
                } else {
                    for (((d, &p), &q), &r) in dst.iter_mut().zip(m1).zip(m2).zip(m3) {
                        *d = p - q - r;
                    }
                }
            }
            // Then A over the columns, and the epilogue.
            let (s0, s1, s2, s3) = (
                &s[..len],
                &s[len..2 * len],
                &s[2 * len..3 * len],
                &s[3 * len..],
            );
            for ((((y0, y1), &p), &q), (&r, &w)) in y0
                .iter_mut()
                .zip(y1.iter_mut())
                .zip(s0)
                .zip(s1)
                .zip(s2.iter().zip(s3))
            {
                *y0 = p + q + r;
                *y1 = q - r - w;
            }
            for (local, r) in rows.clone().enumerate() {
                let (n, ty) = (r / th, r % th);
                let oy = 2 * ty + a;
                if oy >= g.h {
                    continue;
                }
                let at = ((n * g.o + o) * g.h + oy) * g.w;
                // SAFETY: row (n, o, oy) lies inside the output, and only this chunk writes it
                // (the caller's contract).
                let row = unsafe { std::slice::from_raw_parts_mut(out.0.add(at), g.w) };
                let (p, q) = (&y0[local * ne..][..tw], &y1[local * ne..][..tw]);
                match epilogue {
                    Some(e) => {
                        for (pair, (&p, &q)) in line.chunks_mut(2).zip(p.iter().zip(q)) {
                            pair[0] = p;
                            if let Some(second) = pair.get_mut(1) {
                                *second = q;
                            }
                        }
                        e.apply_one(o, line, row, at);
                    }
                    None => {
                        for (pair, (&p, &q)) in row.chunks_mut(2).zip(p.iter().zip(q)) {
                            pair[0].write(p);
                            if let Some(second) = pair.get_mut(1) {
                                second.write(q);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Asks for the cache lines of `values` ahead of their use (a hint; nothing off x86-64).
#[inline(always)]
pub(super) fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(16) {
        // SAFETY: a prefetch only hints at an address inside `values`; it reads nothing.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}
