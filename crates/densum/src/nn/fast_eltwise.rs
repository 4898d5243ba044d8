//! The residual sum and the ReLU after it, `max(0, a + b)`, as one operation on Flex.
//!
//! Why: every post-activation block ends with this. Composed, it is an add (two reads, one
//! write) and a ReLU (one read, one write) forward, and backward a ReLU mask plus the add's
//! gradient bookkeeping; fused, it is one pass each way, and both inputs share one gradient
//! tensor. Other backends, dtypes and broadcasting shapes use `relu(a + b)`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::fast_conv::{assume_init, flex, uninit_buffer, values};
use super::fast_norm::fast_norm_applies;

/// Values per parallel task: large enough to amortise scheduling, small enough to split a
/// layer's activation over both cores.
const CHUNK: usize = 1 << 14;

/// Fused elementwise operations.
#[backend_extension(Flex, Autodiff)]
pub trait FastEltwiseBackend: Backend {
    /// `max(0, a + b)` for tensors of the same shape.
    fn add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu(Self::float_add(a, b))
    }
}

/// `max(0, a + b)`, one pass over both cores.
fn add_relu_kernel(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = uninit_buffer(a.len());
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                o.write((a + b).max(0.0));
            }
        });
    // SAFETY: every chunk of `out` was written above.
    unsafe { assume_init(out) }
}

/// The output gradient where the output is positive, zero elsewhere.
fn relu_mask_kernel(out: &[f32], grad: &[f32]) -> Vec<f32> {
    let mut dx = uninit_buffer(out.len());
    dx.par_chunks_mut(CHUNK)
        .zip(out.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
        .for_each(|(d, (o, g))| {
            for ((d, &o), &g) in d.iter_mut().zip(o).zip(g) {
                d.write(if o > 0.0 { g } else { 0.0 });
            }
        });
    // SAFETY: every chunk of `dx` was written above.
    unsafe { assume_init(dx) }
}

impl FastEltwiseBackend for Flex {
    fn add_relu(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        if a.dtype() != DType::F32 || b.dtype() != DType::F32 || a.shape() != b.shape() {
            return Flex::relu(Flex::float_add(a, b));
        }
        let shape = a.shape().to_vec();
        flex(add_relu_kernel(&values(&a), &values(&b)), shape)
    }
}

#[derive(Debug)]
struct AddReluBackward;

impl Backward<Flex, 2> for AddReluBackward {
    /// The output, whose sign is the ReLU's mask.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_a, node_b] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let out = ops.state;
        let shape = out.shape().to_vec();
        let g = flex(relu_mask_kernel(&values(&out), &values(&grad)), shape);
        if let Some(node) = node_a {
            grads.register::<Flex>(node.id, g.clone());
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, g);
        }
    }
}

impl<C: CheckpointStrategy> FastEltwiseBackend for Autodiff<Flex, C> {
    fn add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        match AddReluBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = Flex::add_relu(a.into_primitive(), b.into_primitive());
                prep.finish(out.clone(), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::add_relu(a.into_primitive(), b.into_primitive()))
            }
        }
    }
}

/// `relu(a + b)`, fused on Flex when both are f32 tensors of the same shape.
pub fn add_relu(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    if fast_norm_applies(&a) && fast_norm_applies(&b) && a.dims() == b.dims() {
        Tensor::from_dispatch(<Dispatch as FastEltwiseBackend>::add_relu(
            a.into_dispatch(),
            b.into_dispatch(),
        ))
    } else {
        burn::tensor::activation::relu(a + b)
    }
}
