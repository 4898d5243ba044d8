//! A convolution's geometry and the column matrix of the GEMM formulation: im2col (one
//! image's input as `[C·kh·kw, OH·OW]`) and its adjoint col2im.
//!
//! Why apart: every convolution kernel (forward, input and weight gradient, on either GEMM)
//! works in these terms, and the index arithmetic of padding and strides is the part most
//! worth reading once, with the bounds reasoning that lets the inner loops skip bounds tests.

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::DType;
use burn::tensor::ops::ConvOptions;
use std::ops::Range;

/// Largest column matrix (values, 1 MB) built at once; larger ones (the ImageNet stem's: 147
/// x 12,544 values, 7.4 MB per image) are built and multiplied a band of output rows at a time
/// ([`Geom::columns`]), so they stay in L2.
const COL_VALUES: usize = 256 * 1024;

/// Geometry of one convolution, in the terms the kernels use.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geom {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) stride: [usize; 2],
    pub(super) pad: [usize; 2],
}

impl Geom {
    /// The geometry when the fast kernels support the case: f32, no groups, no dilation,
    /// symmetric padding. `None` sends the call to Burn's generic path.
    pub(super) fn supported(
        x: &FlexTensor,
        weight: &FlexTensor,
        options: &ConvOptions<2>,
    ) -> Option<Self> {
        if x.dtype() != DType::F32
            || weight.dtype() != DType::F32
            || options.groups != 1
            || options.dilation != [1, 1]
            || options.is_asymmetric()
        {
            return None;
        }
        let [n, c, h, w] = x.shape().dims();
        let [o, ci, kh, kw] = weight.shape().dims();
        let pad = options.padding_begin();
        let stride = options.stride;
        if ci != c || h + 2 * pad[0] < kh || w + 2 * pad[1] < kw {
            return None;
        }
        Some(Geom {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh: (h + 2 * pad[0] - kh) / stride[0] + 1,
            ow: (w + 2 * pad[1] - kw) / stride[1] + 1,
            stride,
            pad,
        })
    }

    /// Rows of the column matrix: C·kh·kw.
    pub(super) fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per image.
    pub(super) fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Whether X_n is already the column matrix (1x1, stride 1, no padding).
    pub(super) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }

    /// For kernel offset `k` along one axis: the output range whose input index
    /// `o·stride + k − pad` lies inside `[0, len)`, so the inner loops need no bounds tests.
    fn valid(out: usize, stride: usize, k: usize, pad: usize, len: usize) -> (usize, usize) {
        let first = pad.saturating_sub(k).div_ceil(stride);
        let last = if len + pad > k {
            ((len + pad - k - 1) / stride + 1).min(out)
        } else {
            0
        };
        (first.min(last), last)
    }

    /// col[K, P] from one image x[C, H, W] (zeros where the window is in the padding).
    pub(super) fn im2col(&self, x: &[f32], col: &mut [f32]) {
        self.im2col_rows(x, col, 0..self.oh);
    }

    /// The columns of output rows `rows` only: col[K, rows.len()·OW], so a large column
    /// matrix can be built (and multiplied) a band of rows at a time.
    fn im2col_rows(&self, x: &[f32], col: &mut [f32], rows: Range<usize>) {
        let (r0, r1) = (rows.start, rows.end.min(self.oh));
        let len = r1.saturating_sub(r0) * self.ow;
        // Positions are absolute (oy·OW + ox); the band's row holds them from `base` on.
        let base = r0 * self.ow;
        for ci in 0..self.c {
            let plane = &x[ci * self.h * self.w..][..self.h * self.w];
            for ki in 0..self.kh {
                let (v0, v1) = Self::valid(self.oh, self.stride[0], ki, self.pad[0], self.h);
                let (oy0, oy1) = (v0.clamp(r0, r1), v1.clamp(r0, r1));
                for kj in 0..self.kw {
                    let (ox0, ox1) = Self::valid(self.ow, self.stride[1], kj, self.pad[1], self.w);
                    let row = &mut col[((ci * self.kh + ki) * self.kw + kj) * len..][..len];
                    // Every value is written: the padding parts are zeroed explicitly, so the
                    // buffer may hold anything before (no full memset per image).
                    row[..oy0 * self.ow - base].fill(0.0);
                    row[oy1 * self.ow - base..].fill(0.0);
                    if let Some(shift) = self.shift(ki, kj) {
                        // The valid rows are the plane shifted by one offset: one copy, then
                        // zeros over the columns that wrapped around a row's edge.
                        let (lo, hi) = self.clip(oy0, oy1, shift);
                        let (start, end) = (oy0 * self.ow, oy1 * self.ow);
                        row[start - base..lo - base].fill(0.0);
                        row[hi.max(lo) - base..end - base].fill(0.0);
                        if lo < hi {
                            let from = (lo as isize + shift) as usize;
                            row[lo - base..hi - base]
                                .copy_from_slice(&plane[from..from + (hi - lo)]);
                        }
                        for oy in oy0..oy1 {
                            let r = &mut row[oy * self.ow - base..][..self.ow];
                            r[..ox0].fill(0.0);
                            r[ox1..].fill(0.0);
                        }
                        continue;
                    }
                    for oy in oy0..oy1 {
                        let iy = oy * self.stride[0] + ki - self.pad[0];
                        let src = &plane[iy * self.w..][..self.w];
                        let dst = &mut row[oy * self.ow - base..][..self.ow];
                        dst[..ox0].fill(0.0);
                        dst[ox1..].fill(0.0);
                        if self.stride[1] == 1 {
                            let ix0 = ox0 + kj - self.pad[1];
                            dst[ox0..ox1].copy_from_slice(&src[ix0..ix0 + (ox1 - ox0)]);
                        } else {
                            let ix0 = ox0 * self.stride[1] + kj - self.pad[1];
                            gather(&mut dst[ox0..ox1], &src[ix0..], self.stride[1]);
                        }
                    }
                }
            }
        }
    }

    /// Output rows per band of [`Self::columns`]: a band's columns hold at most
    /// [`COL_VALUES`] values (at least one row).
    fn band_rows(&self) -> usize {
        (COL_VALUES / (self.k() * self.ow).max(1)).clamp(1, self.oh.max(1))
    }

    /// Scratch values [`Self::columns`] needs: none for a 1x1 stride-1 convolution.
    pub(super) fn column_scratch(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.k() * self.band_rows() * self.ow
        }
    }

    /// One image's column matrix a band of output rows at a time (built in `col`, at least
    /// [`Self::column_scratch`] values): `f(first position, positions, columns [K,
    /// positions])` per band. A 1x1 stride-1 convolution's image is its own column matrix,
    /// passed whole.
    pub(super) fn columns(
        &self,
        x: &[f32],
        col: &mut [f32],
        mut f: impl FnMut(usize, usize, &[f32]),
    ) {
        if self.pointwise() {
            return f(0, self.p(), x);
        }
        let band = self.band_rows();
        for r0 in (0..self.oh).step_by(band) {
            let len = band.min(self.oh - r0) * self.ow;
            let col = &mut col[..self.k() * len];
            self.im2col_rows(x, col, r0..r0 + band);
            f(r0 * self.ow, len, col);
        }
    }

    /// For stride 1 with an output as wide as the input (a "same" convolution), the offset
    /// `Δ` such that output position `i = oy·OW + ox` of kernel tap `(ki, kj)` reads input
    /// `i + Δ` (except in columns that wrap around a row's edge).
    fn shift(&self, ki: usize, kj: usize) -> Option<isize> {
        (self.stride == [1, 1] && self.ow == self.w).then(|| {
            (ki as isize - self.pad[0] as isize) * self.w as isize + kj as isize
                - self.pad[1] as isize
        })
    }

    /// The part `[lo, hi)` of output rows `oy0..oy1` whose shifted input index lies in the
    /// plane, inside `[oy0·OW, oy1·OW]` even when it is empty (a one-row plane's outer taps
    /// shift every position out of the plane).
    fn clip(&self, oy0: usize, oy1: usize, shift: isize) -> (usize, usize) {
        let plane = (self.h * self.w) as isize;
        let end = oy1 * self.ow;
        let lo = ((oy0 * self.ow) as isize).max(-shift).max(0) as usize;
        let hi = ((end as isize).min(plane - shift).max(0) as usize).min(end);
        (lo.min(end), hi)
    }

    /// dx[C, H, W] += col2im(dcol[K, P]) for one image (the adjoint of [`Self::im2col`]).
    /// `dcol` is scratch: the values that fall into the padding are overwritten with zeros.
    pub(super) fn col2im(&self, dcol: &mut [f32], dx: &mut [f32]) {
        let p = self.p();
        for ci in 0..self.c {
            let plane = &mut dx[ci * self.h * self.w..][..self.h * self.w];
            for ki in 0..self.kh {
                let (oy0, oy1) = Self::valid(self.oh, self.stride[0], ki, self.pad[0], self.h);
                for kj in 0..self.kw {
                    let (ox0, ox1) = Self::valid(self.ow, self.stride[1], kj, self.pad[1], self.w);
                    let row = &mut dcol[((ci * self.kh + ki) * self.kw + kj) * p..][..p];
                    if let Some(shift) = self.shift(ki, kj) {
                        // Drop the wrapped columns' values, then one shifted add.
                        for oy in oy0..oy1 {
                            let r = &mut row[oy * self.ow..][..self.ow];
                            r[..ox0].fill(0.0);
                            r[ox1..].fill(0.0);
                        }
                        let (lo, hi) = self.clip(oy0, oy1, shift);
                        if lo < hi {
                            let from = (lo as isize + shift) as usize;
                            for (d, s) in plane[from..from + (hi - lo)].iter_mut().zip(&row[lo..hi])
                            {
                                *d += *s;
                            }
                        }
                        continue;
                    }
                    let row = &*row;
                    for oy in oy0..oy1 {
                        let iy = oy * self.stride[0] + ki - self.pad[0];
                        let dst = &mut plane[iy * self.w..][..self.w];
                        let src = &row[oy * self.ow..][..self.ow];
                        if self.stride[1] == 1 {
                            let ix0 = ox0 + kj - self.pad[1];
                            for (d, s) in dst[ix0..ix0 + (ox1 - ox0)].iter_mut().zip(&src[ox0..ox1])
                            {
                                *d += *s;
                            }
                        } else {
                            let ix0 = ox0 * self.stride[1] + kj - self.pad[1];
                            scatter_add(&mut dst[ix0..], &src[ox0..ox1], self.stride[1]);
                        }
                    }
                }
            }
        }
    }
}

/// `dst[i] = src[i·stride]`: one row of a strided convolution's column matrix. Stride 2 (the
/// downsampling convolutions) gets its own loop over pairs, which the compiler turns into
/// vector deinterleaves instead of one scalar load per value (the generic loop made im2col
/// half of a 3x3 stride-2 forward).
fn gather(dst: &mut [f32], src: &[f32], stride: usize) {
    if stride == 2 {
        let pairs = src.len().min(2 * dst.len()) / 2;
        let (head, tail) = dst.split_at_mut(pairs);
        for (d, s) in head.iter_mut().zip(src.chunks_exact(2)) {
            *d = s[0];
        }
        if let Some(d) = tail.first_mut() {
            *d = src[2 * pairs];
        }
        return;
    }
    for (i, d) in dst.iter_mut().enumerate() {
        *d = src[i * stride];
    }
}

/// `dst[i·stride] += src[i]`, the adjoint of [`gather`] (col2im of a strided convolution).
fn scatter_add(dst: &mut [f32], src: &[f32], stride: usize) {
    if stride == 2 {
        let pairs = dst.len().min(2 * src.len()) / 2;
        let (head, tail) = src.split_at(pairs);
        for (d, s) in dst.chunks_exact_mut(2).zip(head) {
            d[0] += *s;
        }
        if let Some(s) = tail.first() {
            dst[2 * pairs] += *s;
        }
        return;
    }
    for (i, s) in src.iter().enumerate() {
        dst[i * stride] += *s;
    }
}
