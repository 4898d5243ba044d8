//! SGD's update of one parameter as two passes on Flex: the momentum buffer
//! `v' = m·v + d` with `d = s·g + wd·p`, then the parameter `p' = p − lr·u` with `u` = `v'`,
//! `d + m·v'` (Nesterov) or `d` (no momentum), as PyTorch defines them (`train/sgd.rs`).
//!
//! Why: composed of Burn's operations the update is up to six elementwise passes (scale,
//! decay product, decay sum, momentum product, momentum sum, step) over every parameter every
//! step. Here it reads `p`, `g` and `v` and writes `v'` in place, then reads `v'` (and `g` for
//! Nesterov) and writes `p'` in place. ResNet-50, ImageNet batch 8, on 2 Intel cores
//! (`densum bench resnet50 --dataset imagenet --batch 8 --mode train --warmup 1 --iters 3`,
//! alternating binaries): optimiser 66.7-68.0 → 40.7-41.2 ms per step. DenseNet-121's
//! optimiser time (21-22 ms) did not move: its 364 mostly small tensors cost per tensor, not
//! per value. Other backends and dtypes use the composed default; a test compares both.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::probe::{self, Kernel};
use super::tensor::{flex, values};
use super::{Op, chosen};

/// Values per parallel task.
const CHUNK: usize = 1 << 15;

/// The hyper-parameters of one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    /// Gradient scale `s` (clipping), weight decay `wd` (0 for excluded tensors), momentum
    /// `m` (0: none), learning rate.
    pub scale: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub lr: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// SGD's two passes.
#[backend_extension(Flex, Autodiff)]
pub trait FastSgdBackend: Backend {
    /// `m·v + s·g + wd·p`, or `s·g + wd·p` on the `first` step (`v` is then ignored).
    fn sgd_velocity(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: SgdStep,
        first: bool,
    ) -> FloatTensor<Self> {
        composed_velocity::<Self>(p, g, v, step, first)
    }

    /// `p − lr·u` with `u = v` (momentum), `s·g + wd·p + m·v` (Nesterov) or `s·g + wd·p`
    /// (`momentum` 0; `v` ignored), `v` being the updated buffer.
    fn sgd_apply(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: SgdStep,
    ) -> FloatTensor<Self> {
        composed_apply::<Self>(p, g, v, step)
    }
}

/// `s·g + wd·p` in Burn's operations (no pass for `s = 1` or `wd = 0`).
fn composed_decayed<B: Backend>(
    p: FloatTensor<B>,
    g: FloatTensor<B>,
    step: SgdStep,
) -> FloatTensor<B> {
    let g = if step.scale == 1.0 {
        g
    } else {
        B::float_mul_scalar(g, (step.scale as f32).into())
    };
    if step.weight_decay == 0.0 {
        g
    } else {
        B::float_add(g, B::float_mul_scalar(p, (step.weight_decay as f32).into()))
    }
}

/// [`FastSgdBackend::sgd_velocity`] in Burn's operations.
fn composed_velocity<B: Backend>(
    p: FloatTensor<B>,
    g: FloatTensor<B>,
    v: FloatTensor<B>,
    step: SgdStep,
    first: bool,
) -> FloatTensor<B> {
    let d = composed_decayed::<B>(p, g, step);
    if first {
        d
    } else {
        B::float_add(B::float_mul_scalar(v, (step.momentum as f32).into()), d)
    }
}

/// [`FastSgdBackend::sgd_apply`] in Burn's operations.
fn composed_apply<B: Backend>(
    p: FloatTensor<B>,
    g: FloatTensor<B>,
    v: FloatTensor<B>,
    step: SgdStep,
) -> FloatTensor<B> {
    let u = if step.momentum == 0.0 {
        composed_decayed::<B>(p.clone(), g, step)
    } else if step.nesterov {
        let d = composed_decayed::<B>(p.clone(), g, step);
        B::float_add(d, B::float_mul_scalar(v, (step.momentum as f32).into()))
    } else {
        v
    };
    B::float_sub(p, B::float_mul_scalar(u, (step.lr as f32).into()))
}

/// `t' = f(t, a, b)` value by value, written over `t`'s own buffer when the tensor owns it
/// alone and holds exactly its values (a parameter or momentum buffer between steps: no
/// allocation, no fresh pages), over a copy otherwise (a buffer's first step).
fn update(
    mut t: FlexTensor,
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32, f32) -> f32 + Sync,
) -> FlexTensor {
    let n = a.len();
    let exact = t.is_contiguous() && t.as_slice::<f32>().is_some_and(|v| v.len() == n);
    if exact && let Some(dst) = t.try_storage_mut::<f32>().filter(|d| d.len() == n) {
        apply(dst, a, b, &f);
        return t;
    }
    let shape = t.shape().to_vec();
    let mut copy = values(&t).into_owned();
    apply(&mut copy, a, b, &f);
    flex(copy, shape)
}

/// `d = f(d, a, b)` over both cores, or on the calling thread for one chunk or less (most of
/// a network's parameters are small norm and bias vectors, which a split would only delay).
fn apply(dst: &mut [f32], a: &[f32], b: &[f32], f: &(impl Fn(f32, f32, f32) -> f32 + Sync)) {
    let step = |(d, (a, b)): (&mut [f32], (&[f32], &[f32]))| {
        for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
            *d = f(*d, a, b);
        }
    };
    if dst.len() <= CHUNK {
        step((dst, (a, b)));
    } else {
        dst.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(step);
    }
}

/// Whether the kernels take these tensors: f32, one shape.
fn fits(ts: [&FlexTensor; 3]) -> bool {
    ts.iter()
        .all(|t| t.dtype() == DType::F32 && t.shape() == ts[0].shape())
}

impl FastSgdBackend for Flex {
    fn sgd_velocity(
        p: FlexTensor,
        g: FlexTensor,
        v: FlexTensor,
        step: SgdStep,
        first: bool,
    ) -> FlexTensor {
        if !fits([&p, &g, &v]) {
            return composed_velocity::<Flex>(p, g, v, step, first);
        }
        probe::hit(Kernel::Sgd);
        let (s, wd, m) = (
            step.scale as f32,
            step.weight_decay as f32,
            step.momentum as f32,
        );
        let (pv, gv) = (values(&p), values(&g));
        if first {
            // `v` is a stand-in (the gradient itself): the buffer starts as `d`.
            update(v, &pv, &gv, |_, p, g| s * g + wd * p)
        } else {
            update(v, &pv, &gv, |v, p, g| m * v + (s * g + wd * p))
        }
    }

    fn sgd_apply(p: FlexTensor, g: FlexTensor, v: FlexTensor, step: SgdStep) -> FlexTensor {
        if !fits([&p, &g, &v]) {
            return composed_apply::<Flex>(p, g, v, step);
        }
        probe::hit(Kernel::Sgd);
        let (s, wd, m, lr) = (
            step.scale as f32,
            step.weight_decay as f32,
            step.momentum as f32,
            step.lr as f32,
        );
        let (gv, vv) = (values(&g), values(&v));
        if step.momentum == 0.0 {
            update(p, &gv, &vv, |p, g, _| p - lr * (s * g + wd * p))
        } else if step.nesterov {
            update(p, &gv, &vv, |p, g, v| p - lr * ((s * g + wd * p) + m * v))
        } else {
            update(p, &gv, &vv, |p, _, v| p - lr * v)
        }
    }
}

/// Never reached by the optimiser (it updates the parameters' inner tensors); the composed
/// defaults keep the extension complete.
impl<C: CheckpointStrategy> FastSgdBackend for Autodiff<Flex, C> {}

/// One parameter's update: the new momentum buffer (`None` without momentum) and the new
/// value. `v` is the buffer from the last step (`None` on the first). On Flex for f32 tensors
/// of one shape, unless [`with_generic`](super::with_generic)`(Op::Sgd, ..)`: the two passes
/// above; elsewhere Burn's operations.
pub fn sgd_update<const D: usize>(
    p: Tensor<D>,
    g: Tensor<D>,
    v: Option<Tensor<D>>,
    step: SgdStep,
) -> (Option<Tensor<D>>, Tensor<D>) {
    let fast = chosen(Op::Sgd, &p.device());
    let prim = |t: Tensor<D>| t.into_dispatch();
    let v = (step.momentum > 0.0).then(|| {
        let first = v.is_none();
        let buf = v.unwrap_or_else(|| g.clone());
        let (pp, gp, bp) = (prim(p.clone()), prim(g.clone()), prim(buf));
        Tensor::from_dispatch(if fast {
            <Dispatch as FastSgdBackend>::sgd_velocity(pp, gp, bp, step, first)
        } else {
            composed_velocity::<Dispatch>(pp, gp, bp, step, first)
        })
    });
    let buf = v.clone().unwrap_or_else(|| g.clone());
    let (pp, gp, bp) = (prim(p), prim(g), prim(buf));
    let p = Tensor::from_dispatch(if fast {
        <Dispatch as FastSgdBackend>::sgd_apply(pp, gp, bp, step)
    } else {
        composed_apply::<Dispatch>(pp, gp, bp, step)
    });
    (v, p)
}
