//! The per-output-channel affine map applied to a kernel's output while it is in cache: a
//! frozen batch norm folded into the operation before it, optionally followed by a residual
//! sum and a ReLU.
//!
//! Why apart: the convolution kernels (direct, tiled, Winograd) and DenseNet's inference head
//! all end this way, so the map is written once.

use std::mem::MaybeUninit;

/// Per-output-channel `y·scale + shift`, plus the residual, then ReLU, applied to a kernel's
/// output `[N, O, P]`. Every method takes `at`, the offset of its first value in that output,
/// which is where the residual (shaped like the output) is read.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub(crate) scale: &'a [f32],
    pub(crate) shift: &'a [f32],
    /// Added after the affine map and before the ReLU: a post-activation block's shortcut
    /// when the block's last convolution + batch norm carries its residual sum.
    pub(crate) residual: Option<&'a [f32]>,
    pub(crate) relu: bool,
}

/// Writes `src` (values of output channel `o`, starting at output offset `at`) into `dst`
/// through `epilogue` when there is one, as they are otherwise: how a kernel's output row
/// leaves its scratch.
pub(crate) fn write_out(
    epilogue: Option<Epilogue>,
    o: usize,
    src: &[f32],
    dst: &mut [MaybeUninit<f32>],
    at: usize,
) {
    match epilogue {
        Some(e) => e.apply_one(o, src, dst, at),
        None => {
            for (d, &v) in dst.iter_mut().zip(src) {
                d.write(v);
            }
        }
    }
}

impl Epilogue<'_> {
    /// `dst = f(src·scale[o] + shift[o] + residual)` for values of output channel `o`
    /// starting at output offset `at`.
    pub(crate) fn apply_one(&self, o: usize, src: &[f32], dst: &mut [MaybeUninit<f32>], at: usize) {
        let (s, t) = (self.scale[o], self.shift[o]);
        let dst = &mut dst[..src.len()];
        match (self.residual, self.relu) {
            (Some(r), true) => {
                let r = &r[at..at + src.len()];
                for ((d, &v), &r) in dst.iter_mut().zip(src).zip(r) {
                    d.write((v * s + t + r).max(0.0));
                }
            }
            (Some(r), false) => {
                let r = &r[at..at + src.len()];
                for ((d, &v), &r) in dst.iter_mut().zip(src).zip(r) {
                    d.write(v * s + t + r);
                }
            }
            (None, true) => dst
                .iter_mut()
                .zip(src)
                .for_each(|(d, &v)| _ = d.write((v * s + t).max(0.0))),
            (None, false) => dst
                .iter_mut()
                .zip(src)
                .for_each(|(d, &v)| _ = d.write(v * s + t)),
        }
    }

    /// `y = f(y·scale[o] + shift[o] + residual)` over an image's output `[O, P]` (starting at
    /// output offset `at`), in place.
    pub(crate) fn apply(&self, y: &mut [f32], p: usize, at: usize) {
        for (o, plane) in y.chunks_exact_mut(p).enumerate() {
            let (s, t) = (self.scale[o], self.shift[o]);
            let at = at + o * p;
            match (self.residual, self.relu) {
                (Some(r), true) => plane
                    .iter_mut()
                    .zip(&r[at..at + p])
                    .for_each(|(v, &r)| *v = (*v * s + t + r).max(0.0)),
                (Some(r), false) => plane
                    .iter_mut()
                    .zip(&r[at..at + p])
                    .for_each(|(v, &r)| *v = *v * s + t + r),
                (None, true) => plane.iter_mut().for_each(|v| *v = (*v * s + t).max(0.0)),
                (None, false) => plane.iter_mut().for_each(|v| *v = *v * s + t),
            }
        }
    }
}
