//! Single-threaded matrix products through the `gemm` crate (the one Burn's Flex backend uses),
//! with explicit strides.
//!
//! Why: the convolution kernels and the dense-layer head run one small product per image and
//! split images over the rayon threads, which keeps both cores busy with less overhead than
//! splitting each product; strides let one call read a matrix or its transpose in place.

use std::mem::MaybeUninit;

use super::buffer::as_uninit;

/// `dst[m, n] (+)= a · b` with explicit strides (`*_rs` row, `*_cs` column; `dst` row-major
/// when `dst_rs == n`, column-major when `dst_cs == m`), single threaded: callers parallelise
/// over images, which keeps both cores busy with less overhead than splitting each small GEMM.
///
/// `dst` may be uninitialised when `accumulate` is false: GEMM then writes every element of
/// the `m × n` matrix without reading it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_raw(
    shape: (usize, usize, usize),
    dst: &mut [MaybeUninit<f32>],
    dst_strides: (usize, usize),
    accumulate: bool,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) {
    gemm_on(
        1,
        shape,
        dst,
        dst_strides,
        accumulate,
        a,
        a_strides,
        b,
        b_strides,
    );
}

/// [`gemm_raw`] split by the `gemm` crate over `threads` rayon threads: for one large product
/// that has no images to parallelise over (a whole batch's weight gradient).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_on(
    threads: usize,
    (m, n, k): (usize, usize, usize),
    dst: &mut [MaybeUninit<f32>],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
) {
    assert!(m == 0 || n == 0 || dst.len() > (m - 1) * dst_rs + (n - 1) * dst_cs);
    assert!(m == 0 || k == 0 || a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(n == 0 || k == 0 || b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts above keep every index the GEMM touches inside the three slices,
    // `dst` is borrowed mutably, so it aliases neither input, and with `accumulate` false
    // (`read_dst` in gemm's terms) the destination is only written, never read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<f32>(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            },
        );
    }
}

/// Row-major `dst[m, n] (+)= a · b` over an initialised destination, through the `gemm` crate
/// on one thread (`a` and `b` given with their row and column strides).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) {
    gemm_raw(
        (m, n, k),
        as_uninit(dst),
        (n, 1),
        accumulate,
        a,
        a_strides,
        b,
        b_strides,
    );
}
