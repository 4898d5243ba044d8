//! A matrix product for the NCHW convolutions whose output rows are long: `C[M, P] (+)= A[M, K]
//! · B[K, P]`, with `P` (the positions of a feature map) contiguous in `B` and `C`.
//!
//! Why: on the AVX2 machines the project runs on, the `gemm` crate reaches 34-45 GFLOP/s per
//! core on the first stages' shapes (`M`, `K` = 16-144, `P` = 1,024) against 80-95 GFLOP/s on
//! square products, and the full im2col buffer of a 3x3 convolution (`K·P` values) no longer
//! fits in L2. Here each row of `B` is any run of a slice (a 3x3 convolution's column matrix
//! is nine shifted views of one padded copy of the image, so no im2col is built), and an
//! explicit 6x16 AVX2 + FMA register tile (12 accumulators) runs over it. `A` (the weights)
//! is packed once per convolution, not once per image.
//!
//! The kernel is chosen at run time ([`Isa`]): on CPUs with AVX-512 a 6x64 tile (24 of the 32
//! vector registers accumulate, the last vector of a row is masked, so no column remainder is
//! copied), which reads each `B` row 64 values at a time and so does a third fewer loads per
//! FMA than the AVX2 tile; the 6x16 AVX2 + FMA tile otherwise. On CPUs with neither, or off
//! x86-64, [`available`] is false and callers keep the `gemm` crate.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::buffer::{SharedOut, assume_init, uninit_buffer};

/// Rows of `A` per register tile (a panel of [`PackedA`]).
pub const MR: usize = 6;
/// Columns of `C` per register tile: two 8-wide vectors, so a full tile keeps 12 accumulators,
/// two `B` vectors and one broadcast in the 16 AVX registers (a 4x24 tile needs all 16, and
/// it ran slower in a first benchmark of this session's, which was not kept).
const NR: usize = 16;
/// Values per vector.
const LANES: usize = 8;

/// Columns of `C` per AVX-512 register tile: four 16-wide vectors (24 accumulators).
const NR512: usize = 64;
/// Values per AVX-512 vector.
const LANES512: usize = 16;

/// The instruction sets the tile kernel has a version for, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F: the 6x64 tile.
    Avx512,
    /// AVX2 + FMA: the 6x16 tile.
    Avx2,
    /// Plain loops (no SIMD tile; the kernels' reference in tests).
    Portable,
}

impl Isa {
    /// The best this CPU runs (checked once); AVX-512 only with the `avx512` feature (default).
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
            *ISA.get_or_init(|| {
                // Without the `avx512` feature the AVX2 tile runs everywhere (to measure it).
                if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
                    Isa::Avx512
                } else if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    Isa::Avx2
                } else {
                    Isa::Portable
                }
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Isa::Portable
        }
    }

    /// The instruction set's name, as `densum bench` prints it.
    pub fn label(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512",
            Isa::Avx2 => "AVX2",
            Isa::Portable => "portable",
        }
    }

    /// Whether this CPU can run this version (every one at or below the detected best).
    pub fn runs_here(self) -> bool {
        self as u8 >= Isa::detected() as u8
    }

    /// Every version this CPU can run (the tests compare each with the plain loops).
    pub fn runnable() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Portable]
            .into_iter()
            .filter(|i| i.runs_here())
            .collect()
    }
}

/// Whether a SIMD tile kernel can run on this CPU (checked once).
pub fn available() -> bool {
    Isa::detected() != Isa::Portable
}

/// `A[M, K]` in panels of `MR` (6) rows, each stored depth-major (`[K][MR]`), the last panel
/// padded with zero rows: the layout the register tile reads with broadcasts.
pub struct PackedA {
    data: Vec<f32>,
    m: usize,
    k: usize,
}

impl PackedA {
    /// Packs `A` given by element: `a(row, depth)`, panels in parallel.
    pub fn new(m: usize, k: usize, a: impl Fn(usize, usize) -> f32 + Sync) -> Self {
        let mut one = Self::new_many(1, m, k, |rows, d, v| {
            for (v, r) in v.iter_mut().zip(rows) {
                *v = a(r, d);
            }
        });
        one.pop().expect("new_many returns `count` matrices")
    }

    /// Packs `count` matrices `A_i[M, K]` at once, panels in parallel: `fill(rows, depth,
    /// values)` writes elements `(r, depth)` of every matrix for the panel's rows `r` in `rows`
    /// (at most [`MR`]), matrix `i`'s at `values[i·MR + r − rows.start]`; the panel's rows past
    /// `M` are zeros.
    ///
    /// Why: the Winograd weight transform computes all 16 (or 36) transformed positions of a
    /// kernel together; through [`PackedA::new`] it kept them in a temporary, then packed each
    /// matrix in one serial pass, which took a quarter of a 256 → 256 3x3 convolution at 14x14
    /// (2.0 ms of 8.7 per forward inside `densum bench resnet50 --dataset imagenet --batch 8`,
    /// AMD Zen 4, 2 threads; 1.0 ms this way). A panel's rows at once, so each matrix gets
    /// [`MR`] values in a row and the transform can run across the rows.
    pub fn new_many(
        count: usize,
        m: usize,
        k: usize,
        fill: impl Fn(std::ops::Range<usize>, usize, &mut [f32]) + Sync,
    ) -> Vec<Self> {
        let panels = m.div_ceil(MR);
        let len = panels * k * MR;
        let mut data: Vec<Vec<MaybeUninit<f32>>> = (0..count).map(|_| uninit_buffer(len)).collect();
        let outs: Vec<SharedOut> = data.iter_mut().map(|d| SharedOut(d.as_mut_ptr())).collect();
        (0..panels).into_par_iter().for_each(|panel| {
            let rows = panel * MR..(panel * MR + MR).min(m);
            // Zeros stay in the rows past `m`; `fill` overwrites the others.
            let mut values = vec![0f32; count * MR];
            for d in 0..k {
                fill(rows.clone(), d, &mut values);
                let at = (panel * k + d) * MR;
                for (out, v) in outs.iter().zip(values.chunks_exact(MR)) {
                    // SAFETY: `at..at + MR` lies inside every buffer (`len` values), and this
                    // panel's values are written by this task only.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(at), MR) };
                    for (d, &v) in dst.iter_mut().zip(v) {
                        d.write(v);
                    }
                }
            }
        });
        data.into_iter()
            // SAFETY: the panels cover every value of every buffer (rows past `m` as zeros).
            .map(|d| PackedA {
                data: unsafe { assume_init(d) },
                m,
                k,
            })
            .collect()
    }
}

/// The row starts of a matrix stored with row stride `ld`: `[0, ld, 2·ld, ...]` (`k` rows).
pub fn strided_rows(k: usize, ld: usize) -> Vec<usize> {
    (0..k).map(|d| d * ld).collect()
}

/// `C[:, 0..width] (+)= A · B` where row `d` of `B` is `src[rows[d]..][..width]` (rows may
/// overlap: a shifted view of one feature map is a valid `B`), `C` row `r` is
/// `c[r * ldc..][..width]`. With `accumulate` false `C` is only written, so it may be
/// uninitialised; with `accumulate` true it must be initialised.
///
/// # Panics
/// If `rows` does not have `A`'s depth or a slice is too short for the shapes given.
pub fn product(
    a: &PackedA,
    src: &[f32],
    rows: &[usize],
    width: usize,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    accumulate: bool,
) {
    product_on(Isa::detected(), a, src, rows, width, c, ldc, accumulate);
}

/// [`product`] on the version of the kernel for `isa`.
///
/// # Panics
/// As [`product`]; also if this CPU cannot run `isa` ([`Isa::runnable`]).
#[allow(clippy::too_many_arguments)]
pub fn product_on(
    isa: Isa,
    a: &PackedA,
    src: &[f32],
    rows: &[usize],
    width: usize,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    accumulate: bool,
) {
    assert_eq!(rows.len(), a.k, "B has one row per depth step");
    run(isa, Source::Packed(a), src, rows, width, c, ldc, accumulate);
}

/// `C[r, 0..width] (+)= Σ_d a[rows_a[r] + depth_a[d]] · B[d, 0..width]` (`B` as in
/// [`product`]): `A` read in place, row `r` at its own offset into `a` plus one offset per
/// depth step, instead of packed.
///
/// Why: it is a direct convolution with the output channels across the vector lanes. With
/// `a` a zero-padded image, `rows_a` the output positions (any of them, in any order) and
/// `depth_a` the offsets of the (channel, tap) pairs, `B` the transposed weights `[K, O]`, the
/// product is the convolution's output `[positions, O]`: no column matrix is built and no
/// lanes are spent on padding columns or on planes narrower than a vector.
///
/// On the version of the kernel for `isa` (callers pass [`Isa::detected`]; tests every
/// [`Isa::runnable`]).
///
/// # Panics
/// If `depth_a` does not have `B`'s depth, a slice is too short for the shapes given, or this
/// CPU cannot run `isa`.
#[allow(clippy::too_many_arguments)]
pub fn gathered_product(
    isa: Isa,
    a: &[f32],
    rows_a: &[usize],
    depth_a: &[usize],
    src: &[f32],
    rows: &[usize],
    width: usize,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    accumulate: bool,
) {
    assert_eq!(rows.len(), depth_a.len(), "B has one row per depth step");
    let last = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
    assert!(
        rows_a.is_empty() || depth_a.is_empty() || last(rows_a) + last(depth_a) < a.len(),
        "A's values lie in a"
    );
    let source = Source::Gathered {
        a,
        rows: rows_a,
        depth: depth_a,
    };
    run(isa, source, src, rows, width, c, ldc, accumulate);
}

/// Where a product's `A` comes from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Packed panels.
    Packed(&'a PackedA),
    /// Read in place: `(r, d)` at `a[rows[r] + depth[d]]`.
    Gathered {
        a: &'a [f32],
        rows: &'a [usize],
        depth: &'a [usize],
    },
}

impl Source<'_> {
    /// Rows and depth of `A`.
    fn shape(&self) -> (usize, usize) {
        match self {
            Source::Packed(p) => (p.m, p.k),
            Source::Gathered { rows, depth, .. } => (rows.len(), depth.len()),
        }
    }

    /// `A[r, d]`.
    fn at(&self, r: usize, d: usize) -> f32 {
        match self {
            Source::Packed(p) => p.data[(r / MR) * p.k * MR + d * MR + r % MR],
            Source::Gathered { a, rows, depth } => a[rows[r] + depth[d]],
        }
    }
}

/// The loop over tiles shared by both sources of `A` (the callers checked `A`'s own bounds).
#[allow(clippy::too_many_arguments)]
fn run(
    isa: Isa,
    a: Source,
    src: &[f32],
    rows: &[usize],
    width: usize,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    accumulate: bool,
) {
    assert!(isa.runs_here(), "this CPU cannot run the {isa:?} kernel");
    let (m, k) = a.shape();
    if m == 0 || width == 0 {
        return;
    }
    assert!(
        rows.iter().all(|&r| r + width <= src.len()),
        "B's rows lie in src"
    );
    assert!(c.len() >= (m - 1) * ldc + width, "C's rows lie in c");
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Portable {
        type Tile = unsafe fn(usize, usize, x86::Operands);
        let gathered = matches!(a, Source::Gathered { .. });
        // The version's columns per tile and its tile function; the loop over tiles is shared.
        let (nr, tile): (usize, Tile) = match (isa, gathered) {
            (Isa::Avx512, false) => (NR512, x86::avx512::tile::<false>),
            (Isa::Avx512, true) => (NR512, x86::avx512::tile::<true>),
            (_, false) => (NR, x86::tile::<false>),
            (_, true) => (NR, x86::tile::<true>),
        };
        for j0 in (0..width).step_by(nr) {
            let cols = nr.min(width - j0);
            for panel in 0..m.div_ceil(MR) {
                let tile_rows = MR.min(m - panel * MR);
                let (a_ptr, a_depth, a_rows) = match a {
                    Source::Packed(p) => {
                        (p.data[panel * k * MR..].as_ptr(), std::ptr::null(), [0; MR])
                    }
                    Source::Gathered { a, rows, depth } => {
                        let mut offsets = [0; MR];
                        offsets[..tile_rows].copy_from_slice(&rows[panel * MR..][..tile_rows]);
                        (a.as_ptr(), depth.as_ptr(), offsets)
                    }
                };
                // SAFETY: the version's instructions are present (`runs_here`); A's rows
                // r < tile_rows lie in the panel (k·MR values) or, gathered, at offsets
                // inside `a` (the caller's assert); every B row has `width ≥ j0 + cols`
                // values from `rows[d]` inside `src`, and the tile reads only those `cols`
                // columns; C's rows panel·MR + r (r < tile_rows) have `j0 + cols ≤ width`
                // values at stride ldc inside `c` (asserts above).
                unsafe {
                    let op = x86::Operands {
                        k,
                        a: a_ptr,
                        b: src.as_ptr().add(j0),
                        rows_b: rows.as_ptr(),
                        c: c.as_mut_ptr().cast::<f32>().add(panel * MR * ldc + j0),
                        ldc,
                        accumulate,
                        a_depth,
                        a_rows,
                    };
                    tile(tile_rows, cols, op);
                }
            }
        }
        return;
    }
    // Portable path: plain loops (the kernels' reference in tests).
    for r in 0..m {
        for j in 0..width {
            let mut s = 0.0f32;
            for (d, &row) in rows.iter().enumerate() {
                s += a.at(r, d) * src[row + j];
            }
            let dst = &mut c[r * ldc + j];
            // SAFETY: with `accumulate` the caller guarantees C is initialised.
            let old = if accumulate {
                unsafe { dst.assume_init() }
            } else {
                0.0
            };
            dst.write(old + s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{LANES, MR};
    use std::arch::x86_64::*;

    /// The AVX-512 tile: `R ≤ 6` rows by up to `V ≤ 4` vectors of 16 columns, the last vector
    /// masked to the columns that exist.
    pub(super) mod avx512 {
        use super::super::{LANES512, MR};
        use super::Operands;
        use std::arch::x86_64::*;

        /// One register tile: `C[rows, cols] (+)= A_panel[rows, k] · B[k, cols]`,
        /// `1 ≤ cols ≤ 64`.
        ///
        /// # Safety
        /// AVX-512 F must be available; otherwise as [`super::tile`] (only `cols` columns of
        /// `B` and `C` are touched).
        #[target_feature(enable = "avx512f")]
        pub(in super::super) unsafe fn tile<const G: bool>(rows: usize, cols: usize, op: Operands) {
            let vectors = cols.div_ceil(LANES512);
            let tail = cols - (vectors - 1) * LANES512;
            let mask: __mmask16 = if tail == LANES512 {
                u16::MAX
            } else {
                (1u16 << tail) - 1
            };
            // SAFETY: the caller's contract; direct calls so each instance is inlined here.
            unsafe {
                macro_rules! run {
                    ($($r:literal),*) => {
                        match (rows, vectors) {
                            $(
                                ($r, 4) => full::<$r, 4, G>(op, mask),
                                ($r, 3) => full::<$r, 3, G>(op, mask),
                                ($r, 2) => full::<$r, 2, G>(op, mask),
                                ($r, _) => full::<$r, 1, G>(op, mask),
                            )*
                            _ => unreachable!("1 to {MR} rows"),
                        }
                    };
                }
                run!(6, 5, 4, 3, 2, 1)
            }
        }

        /// The `R x 16V` tile: `V` vector loads of `B` (the last masked) and `R` broadcasts
        /// of `A` per depth step feed `R·V` independent FMA chains.
        #[inline(always)]
        unsafe fn full<const R: usize, const V: usize, const G: bool>(
            op: Operands,
            mask: __mmask16,
        ) {
            let Operands {
                k,
                b,
                rows_b,
                c,
                ldc,
                accumulate,
                ..
            } = op;
            // SAFETY (whole body): the caller's contract (see `tile`); masked lanes are
            // neither read nor written.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); V]; R];
                // Gathered A (G): each row's own pointer, plus the depth's offset.
                let gathered = G;
                let row_ptr: [*const f32; R] = std::array::from_fn(|r| op.a.add(op.a_rows[r]));
                let mut pa = op.a;
                for d in 0..k {
                    let pb = b.add(*rows_b.add(d));
                    let mut bv = [_mm512_setzero_ps(); V];
                    for (v, slot) in bv.iter_mut().enumerate() {
                        *slot = if v + 1 == V {
                            _mm512_maskz_loadu_ps(mask, pb.add(v * LANES512))
                        } else {
                            _mm512_loadu_ps(pb.add(v * LANES512))
                        };
                    }
                    let off = if gathered { *op.a_depth.add(d) } else { 0 };
                    for (r, row) in acc.iter_mut().enumerate() {
                        let from = if gathered {
                            row_ptr[r].add(off)
                        } else {
                            pa.add(r)
                        };
                        let av = _mm512_set1_ps(*from);
                        for (v, slot) in row.iter_mut().enumerate() {
                            *slot = _mm512_fmadd_ps(av, bv[v], *slot);
                        }
                    }
                    pa = pa.add(MR);
                }
                for (r, row) in acc.iter().enumerate() {
                    let out = c.add(r * ldc);
                    for (v, &val) in row.iter().enumerate() {
                        let dst = out.add(v * LANES512);
                        let m = if v + 1 == V { mask } else { u16::MAX };
                        let val = if accumulate {
                            _mm512_add_ps(val, _mm512_maskz_loadu_ps(m, dst))
                        } else {
                            val
                        };
                        _mm512_mask_storeu_ps(dst, m, val);
                    }
                }
            }
        }
    }

    /// One product's operands: `C (+)= A_panel[·, k] · B[k, ·]`, row `d` of `B` at
    /// `b + rows_b[d]`, `C` rows at stride `ldc`.
    #[derive(Clone, Copy)]
    pub(super) struct Operands {
        pub k: usize,
        pub a: *const f32,
        pub b: *const f32,
        pub rows_b: *const usize,
        pub c: *mut f32,
        pub ldc: usize,
        pub accumulate: bool,
        /// Gathered `A` (null: `a` is a packed panel): element `(r, d)` at
        /// `a + a_rows[r] + a_depth[d]`.
        pub a_depth: *const usize,
        pub a_rows: [usize; MR],
    }

    /// One register tile: `C[rows, cols] (+)= A_panel[rows, k] · B[k, cols]`.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a` holds `k·MR` values (or, with `G`, the gathered
    /// values `a + a_rows[r] + a_depth[d]` exist); `rows_b` holds `k` offsets
    /// and each row of `B` has `cols` readable values; `C` rows `0..rows` at stride `ldc`
    /// have `cols` writable values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const G: bool>(rows: usize, cols: usize, op: Operands) {
        // SAFETY (whole body): the caller's contract above.
        unsafe {
            let vectors = cols / LANES;
            if vectors > 0 {
                // Direct calls (not function pointers), so each instance is inlined into
                // this AVX2 function and compiled with its features.
                macro_rules! run {
                    ($r:literal, $v:literal) => {
                        full::<$r, $v, G>(op)
                    };
                }
                match (rows, vectors) {
                    (6, 2) => run!(6, 2),
                    (6, _) => run!(6, 1),
                    (5, 2) => run!(5, 2),
                    (5, _) => run!(5, 1),
                    (4, 2) => run!(4, 2),
                    (4, _) => run!(4, 1),
                    (3, 2) => run!(3, 2),
                    (3, _) => run!(3, 1),
                    (2, 2) => run!(2, 2),
                    (2, _) => run!(2, 1),
                    (_, 2) => run!(1, 2),
                    (_, _) => run!(1, 1),
                }
            }
            let done = vectors * LANES;
            if done == cols {
                return;
            }
            // Fewer than 8 columns left: copy them into a one-vector scratch band, compute
            // into a scratch tile, and write back the valid part.
            let rest = cols - done;
            let mut bb = vec![0.0f32; op.k * LANES];
            let mut bb_rows = Vec::with_capacity(op.k);
            for d in 0..op.k {
                let from = op.b.add(*op.rows_b.add(d) + done);
                std::ptr::copy_nonoverlapping(from, bb.as_mut_ptr().add(d * LANES), rest);
                bb_rows.push(d * LANES);
            }
            let mut cc = [0.0f32; MR * LANES];
            full::<MR, 1, G>(Operands {
                b: bb.as_ptr(),
                rows_b: bb_rows.as_ptr(),
                c: cc.as_mut_ptr(),
                ldc: LANES,
                accumulate: false,
                ..op
            });
            for r in 0..rows {
                for j in 0..rest {
                    let dst = op.c.add(r * op.ldc + done + j);
                    let v = cc[r * LANES + j];
                    *dst = if op.accumulate { *dst + v } else { v };
                }
            }
        }
    }

    /// The full `R x 8V` tile (`R ≤ 6`, `V ≤ 2`): `V` vector loads of `B` and `R` broadcasts
    /// of `A` per depth step feed `R·V` independent FMA chains.
    #[inline(always)]
    unsafe fn full<const R: usize, const V: usize, const G: bool>(op: Operands) {
        let Operands {
            k,
            b,
            rows_b,
            c,
            ldc,
            accumulate,
            ..
        } = op;
        // SAFETY (whole body): the caller's contract (see `tile`).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            let gathered = G;
            let row_ptr: [*const f32; R] = std::array::from_fn(|r| op.a.add(op.a_rows[r]));
            let mut pa = op.a;
            for d in 0..k {
                let pb = b.add(*rows_b.add(d));
                let mut bv = [_mm256_setzero_ps(); V];
                for (v, slot) in bv.iter_mut().enumerate() {
                    *slot = _mm256_loadu_ps(pb.add(v * LANES));
                }
                let off = if gathered { *op.a_depth.add(d) } else { 0 };
                for (r, row) in acc.iter_mut().enumerate() {
                    let from = if gathered {
                        row_ptr[r].add(off)
                    } else {
                        pa.add(r)
                    };
                    let av = _mm256_broadcast_ss(&*from);
                    for (v, slot) in row.iter_mut().enumerate() {
                        *slot = _mm256_fmadd_ps(av, bv[v], *slot);
                    }
                }
                pa = pa.add(MR);
            }
            for (r, row) in acc.iter().enumerate() {
                let out = c.add(r * ldc);
                for (v, &val) in row.iter().enumerate() {
                    let dst = out.add(v * LANES);
                    let val = if accumulate {
                        _mm256_add_ps(val, _mm256_loadu_ps(dst))
                    } else {
                        val
                    };
                    _mm256_storeu_ps(dst, val);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gathered kernel (A read in place) against plain loops: every remainder of rows and
    /// columns, rows of A at arbitrary offsets, depth offsets that overlap between rows (a
    /// convolution's windows), accumulation, every version of the kernel this CPU runs.
    #[test]
    fn gathered_kernel_matches_plain_loops() {
        let value = |i: usize| ((i * 7919) % 23) as f32 / 11.0 - 1.0;
        for (m, k, width) in [
            (1, 1, 1),
            (6, 9, 16),
            (13, 9, 37),
            (7, 27, 64),
            (17, 5, 129),
        ] {
            let a: Vec<f32> = (0..m * 5 + k * 3 + 8).map(|i| value(i + 3)).collect();
            let rows_a: Vec<usize> = (0..m).map(|r| (r * 5) % (m * 5 + 1)).collect();
            let depth_a: Vec<usize> = (0..k).map(|d| d * 3 % (k * 3 + 1)).collect();
            let ldb = width + 2;
            let b: Vec<f32> = (0..k * ldb).map(|i| value(i + 5)).collect();
            let rows: Vec<usize> = (0..k).map(|d| d * ldb).collect();
            let ldc = width + 3;
            for accumulate in [false, true] {
                for isa in Isa::runnable() {
                    let init: Vec<f32> = (0..m * ldc).map(|i| value(i + 11)).collect();
                    let mut c: Vec<MaybeUninit<f32>> =
                        init.iter().map(|&v| MaybeUninit::new(v)).collect();
                    gathered_product(
                        isa, &a, &rows_a, &depth_a, &b, &rows, width, &mut c, ldc, accumulate,
                    );
                    for r in 0..m {
                        for j in 0..ldc {
                            // SAFETY: every element was initialised above.
                            let got = unsafe { c[r * ldc + j].assume_init() };
                            let term = |d: usize| a[rows_a[r] + depth_a[d]] * b[rows[d] + j];
                            let want = if j < width {
                                let s: f32 = (0..k).map(term).sum();
                                if accumulate { init[r * ldc + j] + s } else { s }
                            } else {
                                init[r * ldc + j]
                            };
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs() + k as f32),
                                "{isa:?} m{m} k{k} w{width} r{r} j{j}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The kernel against plain loops, over every remainder of rows (panels of 6) and
    /// columns (vectors of 8 and 16, tiles of 16 and 64), shifted overlapping rows of `B`, and
    /// accumulation, for every version of the kernel this CPU runs.
    #[test]
    fn kernel_matches_plain_loops() {
        let value = |i: usize| ((i * 7919) % 23) as f32 / 11.0 - 1.0;
        let shapes = [
            (1, 1, 1),
            (6, 5, 16),
            (13, 9, 37),
            (16, 32, 8),
            (5, 3, 23),
            (7, 4, 64),
            (12, 6, 129),
            (3, 2, 100),
            // deep products, where rounding grows with the depth
            (7, 300, 70),
            (13, 1000, 20),
        ];
        for (m, k, width) in shapes {
            let a_full: Vec<f32> = (0..m * k).map(value).collect();
            let a = PackedA::new(m, k, |r, d| a_full[r * k + d]);
            let src: Vec<f32> = (0..k * 3 + width + 8).map(|i| value(i + 5)).collect();
            let rows: Vec<usize> = (0..k).map(|d| d * 3 % (k + 2)).collect();
            let ldc = width + 3;
            for (accumulate, isa) in [false, true]
                .into_iter()
                .flat_map(|acc| Isa::runnable().into_iter().map(move |isa| (acc, isa)))
            {
                let init: Vec<f32> = (0..m * ldc).map(|i| value(i + 11)).collect();
                let mut c: Vec<MaybeUninit<f32>> =
                    init.iter().map(|&v| MaybeUninit::new(v)).collect();
                product_on(isa, &a, &src, &rows, width, &mut c, ldc, accumulate);
                for r in 0..m {
                    for j in 0..ldc {
                        // SAFETY: every element was initialised above.
                        let got = unsafe { c[r * ldc + j].assume_init() };
                        let term = |d: usize| a_full[r * k + d] * src[rows[d] + j];
                        let (want, scale) = if j < width {
                            let s: f32 = (0..k).map(term).sum();
                            let scale: f32 = (0..k).map(|d| term(d).abs()).sum();
                            (if accumulate { init[r * ldc + j] + s } else { s }, scale)
                        } else {
                            (init[r * ldc + j], 0.0) // outside the product: untouched
                        };
                        // Rounding grows with the magnitudes summed, not with the result.
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs() + scale),
                            "{isa:?} m{m} k{k} w{width} r{r} j{j}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
