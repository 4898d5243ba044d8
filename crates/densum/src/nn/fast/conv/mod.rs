//! A bias-free 2-D convolution whose forward and gradients run on densum's own kernels on the
//! Flex (CPU) backend: im2col + GEMM per image, or the AVX2 tile kernel where that measured
//! faster. One file per part:
//!
//! - `geom.rs`: the convolution's geometry, im2col and col2im;
//! - `forward.rs`: `Y_n[O, P] = W · col(X_n)`, optionally with a folded batch norm applied
//!   while each image's output is in cache;
//! - `tiled.rs`: the shapes that take the tile kernel and how it reads them (1x1 input bands,
//!   shifted views of a padded image);
//! - `batch.rs`: which small-plane products go over the whole batch at once, and how the
//!   images' matrices sit side by side;
//! - `direct.rs`: strided 3x3 convolutions on small planes, and 3x3 weight gradients, read in
//!   place by the tile kernel, output channels across the lanes (no im2col);
//! - `winograd.rs`: stride-1 3x3 convolutions (and their input gradients) through Winograd's
//!   F(2x2, 3x3), 2.25x fewer multiplications, `winograd/f4.rs`: F(4x4, 3x3) on planes at
//!   least 28 wide, 4x fewer, and `winograd/weight_grad.rs`: their weight gradients through
//!   F(2x2, 3x3) where the channels make it pay;
//! - `grad.rs`: weight gradient `dW[O, C·kh·kw] += dY_n · col(X_n)ᵀ`, input gradient
//!   `col(dX_n) = Wᵀ · dY_n` then col2im, or a tiled forward of the rotated weights; on small
//!   planes with large weights each of them as one product over the whole batch;
//! - `profile.rs`: per-shape timing inside a network (`densum bench --conv-profile`);
//! - `adapter.rs`: the tensor-level entry points ([`conv2d_fast`], [`conv_forward`]);
//! - this file: the extension operation.
//!
//! 1x1 stride-1 unpadded convolutions skip im2col/col2im entirely (X_n already is the column
//! matrix).
//!
//! The mechanism is Burn's backend extension: [`FastConvBackend`] is implemented for `Flex`
//! (the kernels) and for `Autodiff<B, C>` (a custom differentiable operation whose forward and
//! backward call the inner backend's). Other backends, other dtypes, grouped, dilated or
//! asymmetrically padded convolutions, and convolutions with a bias use Burn's generic
//! [`conv2d`](burn::tensor::module::conv2d) unchanged; tests compare both paths.

mod adapter;
mod batch;
mod direct;
mod forward;
mod geom;
mod grad;
pub mod profile;
mod tiled;
mod winograd;

pub(crate) use adapter::fast_conv_options;
pub use adapter::{conv_forward, conv2d_fast};

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::DType;
use burn::tensor::ops::ConvOptions;

use super::epilogue::Epilogue;
use super::probe::{self, Kernel};
use super::tensor::{flex, values};
use forward::forward;
use geom::Geom;
use grad::{input_grad, weight_grad};
use profile::Pass;

/// Convolution operations with backend-specific forward and gradient kernels.
///
/// The default bodies are Burn's generic implementations, so a backend that does not override
/// them behaves exactly like [`burn::tensor::module::conv2d`].
#[backend_extension(Flex, Autodiff)]
pub trait FastConvBackend: Backend {
    /// Bias-free 2-D convolution (forward); on `Autodiff` its backward uses
    /// [`conv2d_x_grad`](Self::conv2d_x_grad) and [`conv2d_w_grad`](Self::conv2d_w_grad).
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }

    /// Inference convolution followed by a per-output-channel affine map and an optional ReLU:
    /// `max(0, conv(x, w)·scale[o] + shift[o])`, i.e. a convolution with its (frozen) batch
    /// norm folded in. On Flex the affine map runs on each image's output while it is still in
    /// cache, so the network's inference makes one pass over each activation instead of two.
    /// Not meant for training: `Autodiff` composes it from differentiable generic operations.
    fn fast_conv2d_affine(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
    ) -> FloatTensor<Self> {
        let y = Self::conv2d(x, weight, None, options);
        affine_generic::<Self>(y, scale, shift, None, relu)
    }

    /// [`fast_conv2d_affine`](Self::fast_conv2d_affine) with a residual (shaped like the
    /// output) added before the ReLU: `max(0, conv(x, w)·scale[o] + shift[o] + residual)`, a
    /// post-activation block's last layer with the block's sum. On Flex the sum joins the
    /// epilogue, so it costs no pass of its own.
    #[allow(clippy::too_many_arguments)]
    fn fast_conv2d_affine_sum(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
    ) -> FloatTensor<Self> {
        let y = Self::conv2d(x, weight, None, options);
        affine_generic::<Self>(y, scale, shift, Some(residual), relu)
    }

    /// Gradient of the convolution with respect to its input.
    fn conv2d_x_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, options)
    }

    /// Gradient of the convolution with respect to its weight.
    fn conv2d_w_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, options)
    }
}

/// `max(0, y·scale[o] + shift[o] + residual)` (ReLU when `relu`) out of generic backend
/// operations.
fn affine_generic<B: Backend>(
    y: FloatTensor<B>,
    scale: FloatTensor<B>,
    shift: FloatTensor<B>,
    residual: Option<FloatTensor<B>>,
    relu: bool,
) -> FloatTensor<B> {
    let o = scale.shape().num_elements();
    let per_channel = |t: FloatTensor<B>| B::float_reshape(t, [1, o, 1, 1].into());
    let y = B::float_add(B::float_mul(y, per_channel(scale)), per_channel(shift));
    let y = match residual {
        Some(r) => B::float_add(y, r),
        None => y,
    };
    if relu { B::relu(y) } else { y }
}

/// The geometry of a convolution the kernels run ([`Geom::supported`], with any other inputs
/// f32: `others_f32`); `None`, counted as [`Kernel::ConvGeneric`], sends it to Burn's
/// operation.
fn geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    options: &ConvOptions<2>,
    others_f32: bool,
) -> Option<Geom> {
    let g = Geom::supported(x, weight, options).filter(|_| others_f32);
    if g.is_none() {
        probe::hit(Kernel::ConvGeneric);
    }
    g
}

/// The Flex side of [`FastConvBackend::fast_conv2d_affine`] and
/// [`FastConvBackend::fast_conv2d_affine_sum`].
#[allow(clippy::too_many_arguments)]
fn affine_flex(
    x: FlexTensor,
    weight: FlexTensor,
    scale: FlexTensor,
    shift: FlexTensor,
    residual: Option<FlexTensor>,
    options: ConvOptions<2>,
    relu: bool,
) -> FlexTensor {
    let affine_f32 = scale.dtype() == DType::F32 && shift.dtype() == DType::F32;
    let residual_fits = |g: &Geom| {
        residual.as_ref().is_none_or(|r| {
            r.dtype() == DType::F32 && r.shape().as_slice() == [g.n, g.o, g.oh, g.ow]
        })
    };
    match geometry(&x, &weight, &options, affine_f32).filter(residual_fits) {
        Some(g) => {
            probe::hit(Kernel::ConvAffine);
            let (scale, shift) = (values(&scale), values(&shift));
            let residual = residual.as_ref().map(values);
            let epilogue = Epilogue {
                scale: &scale,
                shift: &shift,
                residual: residual.as_deref(),
                relu,
            };
            let y = profile::timed(&g, Pass::Inference, || {
                forward(&g, &values(&x), &values(&weight), Some(epilogue))
            });
            flex(y, vec![g.n, g.o, g.oh, g.ow])
        }
        None => {
            let y = Flex::conv2d(x, weight, None, options);
            affine_generic::<Flex>(y, scale, shift, residual, relu)
        }
    }
}

impl FastConvBackend for Flex {
    fn fast_conv2d(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        match geometry(&x, &weight, &options, true) {
            Some(g) => {
                let y = profile::timed(&g, Pass::Forward, || {
                    forward(&g, &values(&x), &values(&weight), None)
                });
                flex(y, vec![g.n, g.o, g.oh, g.ow])
            }
            None => Flex::conv2d(x, weight, None, options),
        }
    }

    fn fast_conv2d_affine(
        x: FlexTensor,
        weight: FlexTensor,
        scale: FlexTensor,
        shift: FlexTensor,
        options: ConvOptions<2>,
        relu: bool,
    ) -> FlexTensor {
        affine_flex(x, weight, scale, shift, None, options, relu)
    }

    fn fast_conv2d_affine_sum(
        x: FlexTensor,
        weight: FlexTensor,
        scale: FlexTensor,
        shift: FlexTensor,
        residual: FlexTensor,
        options: ConvOptions<2>,
        relu: bool,
    ) -> FlexTensor {
        affine_flex(x, weight, scale, shift, Some(residual), options, relu)
    }

    fn conv2d_x_grad(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        match geometry(&x, &weight, &options, true) {
            Some(g) => {
                let dx = profile::timed(&g, Pass::InputGrad, || {
                    input_grad(&g, &values(&weight), &values(&grad))
                });
                flex(dx, vec![g.n, g.c, g.h, g.w])
            }
            None => Flex::conv2d_x_backward(x, weight, grad, options),
        }
    }

    fn conv2d_w_grad(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        match geometry(&x, &weight, &options, true) {
            Some(g) => {
                let dw = profile::timed(&g, Pass::WeightGrad, || {
                    weight_grad(&g, &values(&x), &values(&grad))
                });
                flex(dw, vec![g.o, g.c, g.kh, g.kw])
            }
            None => Flex::conv2d_weight_backward(x, weight, grad, options),
        }
    }
}

/// The differentiable operation: the inner backend's forward and gradient kernels.
#[derive(Debug)]
struct FastConvBackward;

impl<B: FastConvBackend> Backward<B, 2> for FastConvBackward {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        let weight = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(weight_state);
        if let Some(node) = node_x {
            let dx = B::conv2d_x_grad(x.clone(), weight.clone(), grad.clone(), options.clone());
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, B::conv2d_w_grad(x, weight, grad, options));
        }
    }
}

impl<B: FastConvBackend, C: CheckpointStrategy> FastConvBackend for Autodiff<B, C> {
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match FastConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let out =
                    B::fast_conv2d(x.into_primitive(), weight.into_primitive(), options.clone());
                prep.finish((x_state, weight_state, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fast_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                options,
            )),
        }
    }
}
