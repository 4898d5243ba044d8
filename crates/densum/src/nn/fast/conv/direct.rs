//! Direct convolution with the output channels across the vector lanes: the tile kernel reads
//! the input in place (a zero-padded copy of each image), one output position per tile row,
//! through [`gathered_product`], against the transposed weights `[C·kh·kw, O]`. The weight
//! gradient is the same product turned around: the taps as the tile's rows, the output
//! positions as its depth, the transposed output gradient `[P, O]` across the lanes. The
//! forward runs the output positions in classes by how their windows cross the image's border
//! ([`Border`]), each against only the taps that read the image, not its padding.
//!
//! Why: a strided 3x3 convolution's im2col gathers every other value of each row (a third to
//! a half of its forward time on ResNet-50's downsampling convolutions at CIFAR sizes), and
//! its products are narrow (4x4 to 16x16 output planes). Here there is no column matrix and
//! every lane holds an output channel, whatever the plane size. Inside a training step
//! (`densum bench --conv-profile`, ResNet-50 0.25x CIFAR, batch 64) the three strided 3x3
//! forwards went from 2.3-4.0 to 1.9-2.1 ms each. Stride-1 3x3 forwards on planes of at most
//! 64 positions take it too: on AMD Zen 4 (256-bit FMA rate) they were faster in training
//! and no faster in inference, on Intel AVX-512 1.1-1.4x faster ([`MAX_POSITIONS_STRIDE_1`]).
//! Their input gradients, the direct forward of the rotated weights, take it as well (on AMD
//! Zen 4 0.84-0.85x the time of GEMM + col2im at 8x8 and 4x4; see `grad.rs`). Where it did not
//! pay, measured the same way: 1x1 convolutions, strided input gradients (1.3-1.5x slower: too
//! little depth to hide the transposition of the output), 512 channels (1.5x slower: the
//! transposed weights, 9.4 MB, no longer stay in L2), and on the Intel CPU of session 11, with
//! the kernel of then, 4x4 planes (forward and input gradient 1.1-1.8x slower).

use rayon::prelude::*;

use super::geom::Geom;
use crate::nn::fast::buffer::{
    as_uninit, assume_init, assume_init_mut, uninit_buffer, with_scratch,
};
use crate::nn::fast::epilogue::Epilogue;
use crate::nn::fast::tile_gemm::{Isa, gathered_product, strided_rows};

/// Whether `g`'s forward runs here.
pub(super) fn applies(g: &Geom) -> bool {
    crate::nn::fast::tile_kernel_enabled()
        && g.kh == 3
        && g.kw == 3
        && match g.stride {
            [2, 2] => g.p() <= MAX_POSITIONS,
            [1, 1] => g.p() <= MAX_POSITIONS_STRIDE_1,
            _ => false,
        }
        && g.o >= MIN_OUTPUTS
        && g.k() * g.o <= MAX_WEIGHTS
}

/// Largest transposed weight matrix (values, 1 MB): the tiles stream it from L2 for every
/// group of images (512 → 512 channels at 7x7 ran 1.5x slower than im2col + GEMM).
const MAX_WEIGHTS: usize = 256 * 1024;

/// Output positions per image up to which [`applies`] holds for stride 2.
const MAX_POSITIONS: usize = 256;

/// Output positions per image up to which [`applies`] holds for stride 1 (8x8 planes and
/// smaller; the ones neither Winograd nor the shifted tile takes). On the Intel AVX-512 CPU of
/// session 11, inside a training step (`--conv-profile`), the stride-1 forwards went from 4.5
/// to 3.4-3.8 ms (ResNet-50 0.25x CIFAR, 128 → 128 at 4x4), 8.0 to 6.9-7.4 ms (64 → 64 at 8x8)
/// and 6.4 to 4.6 ms (DenseNet-121's 128 → 32 at 7x7); at 16x16 and 14x14 it gained nothing.
const MAX_POSITIONS_STRIDE_1: usize = 64;

/// Fewest output channels (lanes) for which a tile keeps enough FMA chains busy.
const MIN_OUTPUTS: usize = 32;

/// Fewest output channels for the weight gradient: one AVX-512 vector (two AVX2 ones) is
/// enough there, since its depth (the output positions) is long. ResNet-50 0.25x CIFAR's 16 →
/// 16 3x3 weight gradient at 32x32 took 0.82-0.93x (median 0.88x, seven pairs, `densum bench
/// resnet50 --dataset cifar100 --width 0.25 --batch 64 --mode train --conv-profile`, AMD Zen
/// 4) the time of im2col + GEMM this way.
const MIN_WEIGHT_GRAD_OUTPUTS: usize = 16;

/// Values (512 KB) of a group of images' padded copies and outputs.
const GROUP_VALUES: usize = 128 * 1024;

/// Depth steps per block: 64 steps of a 64-column tile read 16 KB of the weights.
const DEPTH_BLOCK: usize = 64;

/// Forward `[N, O, OH, OW]` of `g` (see the module documentation), with the weights `w(o,
/// r)` (`r` the column of `[O, C·kh·kw]`: `(c·kh + ki)·kw + kj`) and an optional epilogue.
pub(super) fn forward(
    g: &Geom,
    x: &[f32],
    w: impl Fn(usize, usize) -> f32,
    epilogue: Option<Epilogue>,
) -> Vec<f32> {
    let (k, p, o) = (g.k(), g.p(), g.o);
    // Wᵀ [K, O]: row (c, ki, kj) holds every output channel's weight for that tap.
    let mut wt = vec![0.0f32; k * o];
    for (kk, row) in wt.chunks_exact_mut(o).enumerate() {
        for (oc, v) in row.iter_mut().enumerate() {
            *v = w(oc, kk);
        }
    }
    let wt_rows = strided_rows(k, o);
    let Padded {
        hp,
        wp,
        len: padded_len,
        taps: depth,
        positions,
    } = Padded::of(g);
    let (img_in, img_out) = (g.c * g.h * g.w, o * p);
    // Images per task: their padded copies and outputs within L2, so the depth blocks below
    // are reused over all of the group's positions; the groups come in a multiple of the
    // threads and as even as the batch allows (with the largest groups that fit, 64 images at
    // 4x4 and 128 channels made groups of 19, 19, 19 and 7, and one of two threads sat idle
    // for a quarter of the convolution).
    let threads = rayon::current_num_threads().max(1);
    let largest = (GROUP_VALUES / (padded_len + p * o).max(1)).max(1);
    let groups = g.n.div_ceil(largest).div_ceil(threads) * threads;
    let group = g.n.div_ceil(groups.max(1)).max(1);
    let classes = Border::classes(g, &positions, &depth, &wt_rows, group, padded_len);
    // (class, index within it) of each output position.
    let mut classes_of = vec![(0, 0); p];
    for (c, class) in classes.iter().enumerate() {
        for (at, &q) in class.positions.iter().enumerate() {
            classes_of[q] = (c, at);
        }
    }
    let mut y = uninit_buffer(g.n * img_out);
    y.par_chunks_mut((group * img_out).max(1))
        .zip(x.par_chunks((group * img_in).max(1)))
        .enumerate()
        .for_each(|(gi, (y_g, x_g))| {
            let m = x_g.len() / img_in.max(1);
            with_scratch(m * (padded_len + p * o), |buf| {
                let (padded, out) = buf.split_at_mut(m * padded_len);
                for (dst, src) in padded
                    .chunks_exact_mut(padded_len)
                    .zip(x_g.chunks_exact(img_in))
                {
                    pad(g, src, dst, hp, wp);
                }
                let out = &mut out[..m * p * o];
                // Each border class's rows of `out` in turn (after the earlier classes' rows of
                // `m` images each): its positions of every image of the group, against the taps
                // that fall inside the image.
                for class in &classes {
                    let rows = &class.rows[..m * class.positions.len()];
                    let first = m * class.before;
                    let out = &mut out[first * o..(first + rows.len()) * o];
                    if class.depth.is_empty() {
                        out.fill(0.0);
                    }
                    // Depth blocks of at most DEPTH_BLOCK taps: the block of Wᵀ a tile reads
                    // stays in L1 across all the group's positions.
                    for d0 in (0..class.depth.len()).step_by(DEPTH_BLOCK) {
                        let d1 = (d0 + DEPTH_BLOCK).min(class.depth.len());
                        gathered_product(
                            Isa::detected(),
                            padded,
                            rows,
                            &class.depth[d0..d1],
                            &wt,
                            &class.wt_rows[d0..d1],
                            o,
                            as_uninit(out),
                            o,
                            d0 > 0,
                        );
                    }
                }
                // Row of `out` holding each position's output, for image i of the group.
                let row_of = |i: usize, q: usize| {
                    let (c, at) = classes_of[q];
                    let class = &classes[c];
                    m * class.before + i * class.positions.len() + at
                };
                let mut rows = vec![0; p];
                // out is [m·P, O]; each image's output is [O, P], transposed first and then
                // mapped through the epilogue a plane at a time while it is in L1, in vector
                // loops. Applied value by value inside the transposition, the map made these
                // convolutions 1.12x slower in inference (ResNet-50 0.25x CIFAR, the 3x3 ones
                // 35.9-37.1 against 31.0-33.6 ms per pass, three pairs; `densum bench resnet50
                // --dataset cifar100 --width 0.25 --batch 64 --mode infer --conv-profile`).
                for (i, y_n) in y_g.chunks_exact_mut(img_out).enumerate() {
                    for (q, row) in rows.iter_mut().enumerate() {
                        *row = row_of(i, q) * o;
                    }
                    let at = (gi * group + i) * img_out;
                    for (oc, dst) in y_n.chunks_exact_mut(p).enumerate() {
                        for (d, &row) in dst.iter_mut().zip(&rows) {
                            d.write(out[row + oc]);
                        }
                    }
                    if let Some(e) = epilogue {
                        // SAFETY: the transposition above wrote every value of y_n.
                        e.apply(unsafe { assume_init_mut(y_n) }, p, at);
                    }
                }
            });
        });
    // SAFETY: every image's output was written above.
    unsafe { assume_init(y) }
}

/// The output positions whose kernel windows cross the image's border the same way, and the
/// taps that fall inside it: [`forward`] runs each class against its own taps only.
///
/// Why: the zero-padded copy lets every position read all `kh·kw` taps, but on small planes
/// many of them read padding, multiplying zeros: at 8x8 with padding 1, 16 % of a 3x3
/// convolution's products, at 4x4 31 %. (oneDNN's direct convolutions skip them too.) Inside a
/// ResNet-50 0.25x CIFAR training step (`densum bench resnet50 --dataset cifar100 --width 0.25
/// --batch 64 --mode both --conv-profile`, AMD Zen 4, 2 threads, two pairs), ms per step:
/// 128 → 128 at 4x4 forward 3.82 / 3.83 → 3.19 / 2.93, input gradient 3.85 / 3.81 → 3.67 /
/// 3.42; 64 → 64 at 8x8 forward 9.22 / 9.06 → 8.64 / 7.82, input gradient 9.25 / 9.08 → 8.48
/// / 8.10.
struct Border {
    /// Output positions (indices into the plane) of the class.
    positions: Vec<usize>,
    /// Output positions per image in the classes before this one.
    before: usize,
    /// Their window offsets in the group's padded copies (as [`in_group`] lays them out).
    rows: Vec<usize>,
    /// Offsets of the class's (channel, tap) pairs in a padded copy, and the matching rows of
    /// `Wᵀ`.
    depth: Vec<usize>,
    wt_rows: Vec<usize>,
}

impl Border {
    /// The classes of `g`'s output positions (window offsets `positions`), with the (channel,
    /// tap) offsets `depth` and rows `wt_rows` of `Wᵀ` in `W`'s column order, for groups of up
    /// to `group` padded copies `len` values apart.
    fn classes(
        g: &Geom,
        positions: &[usize],
        depth: &[usize],
        wt_rows: &[usize],
        group: usize,
        len: usize,
    ) -> Vec<Border> {
        let taps = g.kh * g.kw;
        let mut classes: Vec<(u64, Vec<usize>)> = Vec::new();
        for q in 0..g.p() {
            // The taps of position q that read the image, as a mask.
            let mask = (0..taps)
                .filter(|&t| reads_image(g, q, t))
                .fold(0u64, |m, t| m | 1 << t);
            match classes.iter_mut().find(|(m, _)| *m == mask) {
                Some((_, qs)) => qs.push(q),
                None => classes.push((mask, vec![q])),
            }
        }
        let mut before = 0;
        classes
            .into_iter()
            .map(|(mask, qs)| {
                let kept: Vec<usize> = (0..depth.len())
                    .filter(|d| mask >> (d % taps) & 1 == 1)
                    .collect();
                let offsets: Vec<usize> = qs.iter().map(|&q| positions[q]).collect();
                before += qs.len();
                Border {
                    rows: in_group(&offsets, group, len),
                    before: before - qs.len(),
                    positions: qs,
                    depth: kept.iter().map(|&d| depth[d]).collect(),
                    wt_rows: kept.iter().map(|&d| wt_rows[d]).collect(),
                }
            })
            .collect()
    }
}

/// Whether kernel tap `t` (`ki·kw + kj`) of output position `q` reads the image rather than
/// its zero padding.
fn reads_image(g: &Geom, q: usize, t: usize) -> bool {
    let (iy, ix) = (
        (q / g.ow) * g.stride[0] + t / g.kw,
        (q % g.ow) * g.stride[1] + t % g.kw,
    );
    (g.pad[0]..g.pad[0] + g.h).contains(&iy) && (g.pad[1]..g.pad[1] + g.w).contains(&ix)
}

/// Where [`forward`] and [`weight_grad`] read an image's zero-padded copy `[C, hp, wp]`.
struct Padded {
    hp: usize,
    wp: usize,
    /// Values of one image's padded copy.
    len: usize,
    /// Offset of each tap `(c, ki, kj)`, in the order of `W`'s columns.
    taps: Vec<usize>,
    /// Offset of each output position `(oy, ox)`'s window.
    positions: Vec<usize>,
}

impl Padded {
    fn of(g: &Geom) -> Padded {
        let (hp, wp) = (g.h + 2 * g.pad[0], g.w + 2 * g.pad[1]);
        let plane = hp * wp;
        let taps = (0..g.c)
            .flat_map(|c| {
                (0..g.kh).flat_map(move |ki| (0..g.kw).map(move |kj| c * plane + ki * wp + kj))
            })
            .collect();
        let positions = (0..g.oh)
            .flat_map(|oy| (0..g.ow).map(move |ox| oy * g.stride[0] * wp + ox * g.stride[1]))
            .collect();
        Padded {
            hp,
            wp,
            len: g.c * plane,
            taps,
            positions,
        }
    }
}

/// `positions` of each of `group` padded copies laid end to end, `len` values apart.
fn in_group(positions: &[usize], group: usize, len: usize) -> Vec<usize> {
    (0..group)
        .flat_map(|i| positions.iter().map(move |&q| i * len + q))
        .collect()
}

/// Copies image `x[C, H, W]` into zero-padded planes `[C, hp, wp]`.
fn pad(g: &Geom, x: &[f32], out: &mut [f32], hp: usize, wp: usize) {
    let [top, left] = g.pad;
    // One fill for all borders: per-row fills of one or two values each cost a call.
    out.fill(0.0);
    for (dst, src) in out.chunks_exact_mut(hp * wp).zip(x.chunks_exact(g.h * g.w)) {
        for (row, s) in dst[top * wp..]
            .chunks_exact_mut(wp)
            .zip(src.chunks_exact(g.w))
        {
            row[left..left + g.w].copy_from_slice(s);
        }
    }
}

/// Whether `g`'s weight gradient runs here ([`weight_grad`]): 3x3 convolutions of any stride
/// with at least [`MIN_WEIGHT_GRAD_OUTPUTS`] outputs and up to 1 Mi weights. Inside the
/// network (`--conv-profile`) it took DenseNet-121's 128 → 32 weight gradient at 56x56 from
/// 95.3 to 60.9 ms per step (per image the im2col + GEMM path built a 14 MB column matrix
/// there, 1,152 x 3,136) and the six 3x3 weight gradients of ResNet-50 0.25x CIFAR that it
/// takes from 28.9 to 22.9 ms.
pub(super) fn weight_grad_applies(g: &Geom) -> bool {
    crate::nn::fast::tile_kernel_enabled()
        && g.kh == 3
        && g.kw == 3
        && g.o >= MIN_WEIGHT_GRAD_OUTPUTS
        && g.k() * g.o <= MAX_WEIGHT_GRAD_VALUES
}

/// Largest weight gradient (values, 4 MB) computed in place: each thread's partial `dWᵀ`
/// outgrows L2 from 1 MB, but the tile streams it once per image while the batched product
/// ([`super::batch`]) first builds a whole-batch column matrix. Inside a ResNet-50 ImageNet
/// training step (`densum bench resnet50 --dataset imagenet --batch 8 --conv-profile`, AMD
/// Zen 4, 2 threads, alternating): 256 → 256 at 14x14 (2.4 MB) 57.9 / 58.7 → 51.9 / 53.3 ms
/// per step; 512 → 512 at 7x7 (9.4 MB) 21.6 / 20.1 → 40.5 / 41.1, so the bound stays below it.
const MAX_WEIGHT_GRAD_VALUES: usize = 1 << 20;

/// Weight gradient `[O, C, kh, kw]` of `g` with the input read in place: `dWᵀ[K, O] =
/// Σ_images Σ_p X_pad[tap_k + position_p] · dYᵀ[p, O]`, the taps as the tile's rows, the output
/// positions as its depth, each image's output gradient transposed to `[P, O]` for the lanes.
/// Images split over the threads, each summing its own partial `dWᵀ`.
pub(super) fn weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, p, o) = (g.k(), g.p(), g.o);
    let Padded {
        hp,
        wp,
        len: padded_len,
        taps,
        positions,
    } = Padded::of(g);
    let (img_in, img_out) = (g.c * g.h * g.w, o * p);
    // Images per product: on small planes several images' positions make one product's depth
    // (each product reads and writes the whole partial dWᵀ, which one image's 16 or 64
    // positions hardly pay for). ResNet-50 0.25x CIFAR's 3x3 weight gradients per training
    // step, image by image → grouped: 64 → 64 at 8x8 8.36-8.93 → 8.07-8.53 ms, 128 → 128 at
    // 4x4 4.12-4.45 → 3.27-3.56, all of them 31.8-34.6 → 29.7-32.3 (three pairs, `densum
    // bench resnet50 --dataset cifar100 --width 0.25 --batch 64 --mode train --conv-profile`,
    // AMD Zen 4); groups of 512 positions were slower again (29.2-34.4 → 31.3-44.4).
    let group = (POSITION_BLOCK / p.max(1)).max(1);
    // Per kernel tap, the channels' rows of dWᵀ and the positions whose window reads the image
    // there (not its padding, whose zeros add nothing), as [`Border`] does for the forward,
    // where that skips enough (else all taps as one product, over every position).
    let kernel_taps = g.kh * g.kw;
    let read = (0..kernel_taps)
        .map(|t| (0..p).filter(|&q| reads_image(g, q, t)).count())
        .sum::<usize>();
    let per_tap: Vec<TapPositions> =
        if read * SKIP_DENOMINATOR > kernel_taps * p * (SKIP_DENOMINATOR - 1) {
            vec![TapPositions::all(g, &taps, &positions, group, padded_len)]
        } else {
            (0..kernel_taps)
                .map(|t| TapPositions::of(g, t, &taps, &positions, group, padded_len))
                .collect()
        };
    let threads = rayon::current_num_threads().clamp(1, g.n.max(1));
    let per = g.n.div_ceil(threads).max(1);
    let partials: Vec<Vec<f32>> = (0..g.n.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let mut dwt = vec![0.0f32; k * o];
            let images = t * per..((t + 1) * per).min(g.n);
            with_scratch(group * (padded_len + p * o), |buf| {
                let (padded, dyt) = buf.split_at_mut(group * padded_len);
                for first in images.clone().step_by(group) {
                    let m = group.min(images.end - first);
                    for i in 0..m {
                        let img = first + i;
                        let x_n = &x[img * img_in..][..img_in];
                        pad(g, x_n, &mut padded[i * padded_len..][..padded_len], hp, wp);
                        // dYᵀ [P, O] of this image, after the group's earlier images'.
                        let dy_n = &dy[img * img_out..][..img_out];
                        let dyt_n = &mut dyt[i * p * o..][..p * o];
                        for (oc, row) in dy_n.chunks_exact(p).enumerate() {
                            for (q, &v) in row.iter().enumerate() {
                                dyt_n[q * o + oc] = v;
                            }
                        }
                    }
                    for (t, tap) in per_tap.iter().enumerate() {
                        // Rows c·taps + t of dWᵀ (`taps` rows apart), or all of them.
                        let dwt_t = &mut as_uninit(&mut dwt)[t * o..];
                        let depth = m * tap.valid;
                        for d0 in (0..depth).step_by(POSITION_BLOCK) {
                            let d1 = (d0 + POSITION_BLOCK).min(depth);
                            gathered_product(
                                Isa::detected(),
                                padded,
                                &tap.rows,
                                &tap.positions[d0..d1],
                                dyt,
                                &tap.dyt_rows[d0..d1],
                                o,
                                dwt_t,
                                tap.ldc,
                                true,
                            );
                        }
                    }
                }
            });
            dwt
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut dwt = parts.next().unwrap_or_else(|| vec![0.0; k * o]);
    for part in parts {
        dwt.iter_mut().zip(&part).for_each(|(a, b)| *a += *b);
    }
    // dWᵀ [K, O] → dW [O, K].
    let mut dw = vec![0.0f32; o * k];
    for (kk, row) in dwt.chunks_exact(o).enumerate() {
        for (oc, &v) in row.iter().enumerate() {
            dw[oc * k + kk] = v;
        }
    }
    dw
}

/// One kernel tap's part of [`weight_grad`]: its rows (one per channel) and the output
/// positions whose window reads the image at that tap.
struct TapPositions {
    /// Offset of tap `t` of each channel in a padded copy.
    rows: Vec<usize>,
    /// Distance between the rows' rows of dWᵀ.
    ldc: usize,
    /// Positions per image that read the image at the tap.
    valid: usize,
    /// Their offsets in a group's padded copies, and their rows of the group's `dYᵀ`, image
    /// by image (a group of `m` images is the first `m · valid`).
    positions: Vec<usize>,
    dyt_rows: Vec<usize>,
}

impl TapPositions {
    fn of(
        g: &Geom,
        t: usize,
        taps: &[usize],
        positions: &[usize],
        group: usize,
        len: usize,
    ) -> TapPositions {
        let kernel_taps = g.kh * g.kw;
        let valid: Vec<usize> = (0..g.p()).filter(|&q| reads_image(g, q, t)).collect();
        let offsets: Vec<usize> = valid.iter().map(|&q| positions[q]).collect();
        let p = g.p();
        TapPositions {
            rows: (0..g.c).map(|c| taps[c * kernel_taps + t]).collect(),
            ldc: kernel_taps * g.o,
            valid: valid.len(),
            positions: in_group(&offsets, group, len),
            dyt_rows: (0..group)
                .flat_map(|i| valid.iter().map(move |&q| (i * p + q) * g.o))
                .collect(),
        }
    }

    /// Every tap (all rows of dWᵀ) over every position.
    fn all(g: &Geom, taps: &[usize], positions: &[usize], group: usize, len: usize) -> Self {
        TapPositions {
            rows: taps.to_vec(),
            ldc: g.o,
            valid: g.p(),
            positions: in_group(positions, group, len),
            dyt_rows: strided_rows(group * g.p(), g.o),
        }
    }
}

/// [`weight_grad`] splits its product by kernel tap when that skips at least 1 / 8 of the
/// (tap, position) pairs, those that read padding. Alone (AMD Zen 4, 2 threads, best of 31
/// calls, `examples/weight_grad 64 64 64 8 31 --pass weight --cold`, the two builds in turn),
/// split by tap / not: 64 → 64 at 8x8 (16 % skipped) 0.88x, 0.94x, 0.88x, 0.83x; 128 → 128 at
/// 4x4 (31 %) 0.75x, 0.82x, 0.85x (and once 1.28x in a noisy pair). At 14x14 and 32x32 (9 %
/// and 4 %) the nine narrower products were slower (DenseNet-121's 128 → 32 at 14x14, batch 8,
/// best 0.68 / 0.74 → 0.84 / 1.26 ms; 16 → 16 at 32x32, batch 64, 2.14 / 2.20 → 2.54 / 2.94).
const SKIP_DENOMINATOR: usize = 8;

/// Output positions per depth block of [`weight_grad`] (of one image, or of a group of images
/// on small planes): 256 rows of a 64-lane `dYᵀ` are 64 KB.
const POSITION_BLOCK: usize = 256;
