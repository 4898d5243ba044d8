//! SGD's update of one parameter as one pass on Flex: the momentum buffer `v' = m·v + d` with
//! `d = s·g + wd·p`, and the parameter `p' = p − lr·u` with `u` = `v'`, `d + m·v'` (Nesterov)
//! or `d` (no momentum), as PyTorch defines them (`train/sgd.rs`), both written in place.
//!
//! Why: composed of Burn's operations the update is up to six elementwise passes (scale,
//! decay product, decay sum, momentum product, momentum sum, step) over every parameter every
//! step. Here it reads `p`, `g` and `v` once and writes `v'` and `p'` over their own buffers.
//! ResNet-50, ImageNet batch 8, on 2 Intel cores (`densum bench resnet50 --dataset imagenet
//! --batch 8 --mode train --warmup 1 --iters 3`, alternating binaries): optimiser 66.7-68.0 ms
//! composed, 40.7-41.2 ms as two passes (velocity, then parameter; docs/results/speed.md has
//! the one-pass figures). DenseNet-121's 364 mostly small tensors cost per tensor, not per
//! value. Other backends and dtypes use the composed default; a test compares both.

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

/// SGD's update in one pass.
#[backend_extension(Flex, Autodiff)]
pub trait FastSgdBackend: Backend {
    /// `(v', p')`: the buffer `v' = m·v + s·g + wd·p` (`s·g + wd·p` on the `first` step, when
    /// `v` is ignored) and the parameter `p − lr·u`, `u = v'` (momentum), `s·g + wd·p + m·v'`
    /// (Nesterov) or `s·g + wd·p` (`momentum` 0: `v` ignored, returned as given).
    fn sgd_step(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: SgdStep,
        first: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_step::<Self>(p, g, v, step, first)
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

/// [`FastSgdBackend::sgd_step`] in Burn's operations (the definition the kernel follows).
fn composed_step<B: Backend>(
    p: FloatTensor<B>,
    g: FloatTensor<B>,
    v: FloatTensor<B>,
    step: SgdStep,
    first: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let scaled = |t: FloatTensor<B>, by: f64| B::float_mul_scalar(t, (by as f32).into());
    let d = composed_decayed::<B>(p.clone(), g, step);
    let (v, u) = if step.momentum == 0.0 {
        (v, d)
    } else {
        let v = if first {
            d.clone()
        } else {
            B::float_add(scaled(v, step.momentum), d.clone())
        };
        let u = if step.nesterov {
            B::float_add(d, scaled(v.clone(), step.momentum))
        } else {
            v.clone()
        };
        (v, u)
    };
    (v, B::float_sub(p, scaled(u, step.lr)))
}

/// `t`'s values as a buffer this call may write: its own when the tensor owns it alone and
/// holds exactly its values (a parameter or momentum buffer between steps: no allocation, no
/// fresh pages), a copy otherwise (a buffer's first step).
fn owned(t: FlexTensor) -> FlexTensor {
    let n = t.shape().num_elements();
    let exact = t.is_contiguous() && t.as_slice::<f32>().is_some_and(|v| v.len() == n);
    let mut t = t;
    if exact && t.try_storage_mut::<f32>().is_some_and(|d| d.len() == n) {
        return t;
    }
    let shape = t.shape().to_vec();
    flex(values(&t).into_owned(), shape)
}

/// The buffer of a tensor [`owned`] returned.
fn storage(t: &mut FlexTensor) -> &mut [f32] {
    t.try_storage_mut::<f32>()
        .expect("`owned` returns a tensor that owns its buffer")
}

/// `f(&mut p, &mut v, g)` value by value over both cores, or on the calling thread for one
/// chunk or less (most of a network's parameters are small norm and bias vectors, which a
/// split would only delay).
fn each(p: &mut [f32], v: &mut [f32], g: &[f32], f: impl Fn(&mut f32, &mut f32, f32) + Sync) {
    let run = |((p, v), g): ((&mut [f32], &mut [f32]), &[f32])| {
        for ((p, v), &g) in p.iter_mut().zip(v.iter_mut()).zip(g) {
            f(p, v, g);
        }
    };
    if p.len() <= CHUNK {
        run(((p, v), g));
    } else {
        p.par_chunks_mut(CHUNK)
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(run);
    }
}

/// Whether the kernel takes these tensors: f32, one shape.
fn fits(ts: [&FlexTensor; 3]) -> bool {
    ts.iter()
        .all(|t| t.dtype() == DType::F32 && t.shape() == ts[0].shape())
}

impl FastSgdBackend for Flex {
    fn sgd_step(
        p: FlexTensor,
        g: FlexTensor,
        v: FlexTensor,
        step: SgdStep,
        first: bool,
    ) -> (FlexTensor, FlexTensor) {
        if !fits([&p, &g, &v]) {
            return composed_step::<Flex>(p, g, v, step, first);
        }
        probe::hit(Kernel::Sgd);
        let (s, wd, m, lr) = (
            step.scale as f32,
            step.weight_decay as f32,
            step.momentum as f32,
            step.lr as f32,
        );
        let gv = values(&g);
        let mut p = owned(p);
        if step.momentum == 0.0 {
            // No buffer: `v` passes through untouched.
            let pv = storage(&mut p);
            let run = |(p, g): (&mut [f32], &[f32])| {
                for (p, &g) in p.iter_mut().zip(g) {
                    *p -= lr * (s * g + wd * *p);
                }
            };
            if pv.len() <= CHUNK {
                run((pv, &gv));
            } else {
                pv.par_chunks_mut(CHUNK)
                    .zip(gv.par_chunks(CHUNK))
                    .for_each(run);
            }
            return (v, p);
        }
        let mut v = owned(v);
        let (pv, vv) = (storage(&mut p), storage(&mut v));
        let nesterov = step.nesterov;
        each(pv, vv, &gv, |p, v, g| {
            let d = s * g + wd * *p;
            *v = if first { d } else { m * *v + d };
            *p -= lr * if nesterov { d + m * *v } else { *v };
        });
        (v, p)
    }
}

/// Never reached by the optimiser (it updates the parameters' inner tensors); the composed
/// defaults keep the extension complete.
impl<C: CheckpointStrategy> FastSgdBackend for Autodiff<Flex, C> {}

/// One parameter's update: the new momentum buffer (`None` without momentum) and the new
/// value. `v` is the buffer from the last step (`None` on the first). On Flex for f32 tensors
/// of one shape, unless [`with_generic`](super::with_generic)`(Op::Sgd, ..)`: the one pass
/// above; elsewhere Burn's operations.
pub fn sgd_update<const D: usize>(
    p: Tensor<D>,
    g: Tensor<D>,
    v: Option<Tensor<D>>,
    step: SgdStep,
) -> (Option<Tensor<D>>, Tensor<D>) {
    let fast = chosen(Op::Sgd, &p.device());
    let momentum = step.momentum > 0.0;
    let first = v.is_none();
    // Without a buffer yet (or without momentum) the gradient stands in for it.
    let buf = v.unwrap_or_else(|| g.clone());
    let (pp, gp, bp) = (p.into_dispatch(), g.into_dispatch(), buf.into_dispatch());
    let (v, p) = if fast {
        <Dispatch as FastSgdBackend>::sgd_step(pp, gp, bp, step, first)
    } else {
        composed_step::<Dispatch>(pp, gp, bp, step, first)
    };
    (
        momentum.then(|| Tensor::from_dispatch(v)),
        Tensor::from_dispatch(p),
    )
}
