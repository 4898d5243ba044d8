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

use super::buffer::{assume_init, uninit_buffer};
use super::probe::{self, Kernel};
use super::tensor::{flex, values};
use super::{Op, applies};

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

/// `f(aᵢ, bᵢ)` for every value, one pass over both cores.
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = uninit_buffer(a.len());
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                o.write(f(a, b));
            }
        });
    // SAFETY: every chunk of `out` was written above.
    unsafe { assume_init(out) }
}

/// The output gradient of a ReLU whose output is `out`: `grad` where `out > 0`, zero elsewhere.
pub(crate) fn relu_grad(out: &[f32], grad: &[f32]) -> Vec<f32> {
    probe::hit(Kernel::AddReluBackward);
    zip_map(out, grad, |o, g| if o > 0.0 { g } else { 0.0 })
}

impl FastEltwiseBackend for Flex {
    fn add_relu(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        if a.dtype() != DType::F32 || b.dtype() != DType::F32 || a.shape() != b.shape() {
            return Flex::relu(Flex::float_add(a, b));
        }
        probe::hit(Kernel::AddRelu);
        let shape = a.shape().to_vec();
        flex(
            zip_map(&values(&a), &values(&b), |a, b| (a + b).max(0.0)),
            shape,
        )
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
        let g = flex(relu_grad(&values(&out), &values(&grad)), shape);
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
    if applies(Op::AddRelu, &a) && applies(Op::AddRelu, &b) && a.dims() == b.dims() {
        Tensor::from_dispatch(<Dispatch as FastEltwiseBackend>::add_relu(
            a.into_dispatch(),
            b.into_dispatch(),
        ))
    } else {
        burn::tensor::activation::relu(a + b)
    }
}
