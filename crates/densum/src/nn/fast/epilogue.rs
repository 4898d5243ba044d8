//! The per-output-channel affine map applied to a kernel's output while it is in cache: a
//! frozen batch norm folded into the operation before it, optionally with its ReLU.
//!
//! Why apart: the convolution kernels (direct, tiled, Winograd) and DenseNet's inference head
//! all end this way, so the map is written once.

use std::mem::MaybeUninit;

/// Per-output-channel `y·scale + shift`, then ReLU, applied to one image's output `[O, P]`.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub(crate) scale: &'a [f32],
    pub(crate) shift: &'a [f32],
    pub(crate) relu: bool,
}

impl Epilogue<'_> {
    /// `dst = f(src·scale[o] + shift[o])` for values of output channel `o`.
    pub(crate) fn apply_one(&self, o: usize, src: &[f32], dst: &mut [MaybeUninit<f32>]) {
        let (s, t) = (self.scale[o], self.shift[o]);
        for (d, &v) in dst.iter_mut().zip(src) {
            let v = v * s + t;
            d.write(if self.relu { v.max(0.0) } else { v });
        }
    }

    /// `f(v·scale[o] + shift[o])` for one value of output channel `o`.
    pub(crate) fn value(&self, o: usize, v: f32) -> f32 {
        let v = v * self.scale[o] + self.shift[o];
        if self.relu { v.max(0.0) } else { v }
    }

    /// `y = f(y·scale[o] + shift[o])` over an image's output `[O, P]`, in place.
    pub(crate) fn apply(&self, y: &mut [f32], p: usize) {
        for ((plane, &s), &t) in y.chunks_exact_mut(p).zip(self.scale).zip(self.shift) {
            if self.relu {
                plane.iter_mut().for_each(|v| *v = (*v * s + t).max(0.0));
            } else {
                plane.iter_mut().for_each(|v| *v = *v * s + t);
            }
        }
    }
}
