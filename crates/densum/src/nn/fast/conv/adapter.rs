//! The tensor-level entry points: a bias-free convolution through the extension on Flex
//! (unless a switch in [`crate::nn::fast`] says otherwise), and `Conv2d::forward` through it when the
//! module's configuration maps onto plain convolution options.
//!
//! Why apart from the operation: the model code calls these with Burn's modules and tensors;
//! the choice of path (device, switches, module configuration) is made here, once, and the
//! operation below only ever sees Flex tensors.

use burn::backend::Dispatch;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;

use super::FastConvBackend;
use crate::nn::fast::{self, Op};

/// Bias-free convolution through the fast operation (Flex) or Burn's generic one.
pub fn conv2d_fast(x: Tensor<4>, weight: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
    if fast::chosen(Op::Conv, &x.device()) {
        Tensor::from_dispatch(<Dispatch as FastConvBackend>::fast_conv2d(
            x.into_dispatch(),
            weight.into_dispatch(),
            options,
        ))
    } else {
        burn::tensor::module::conv2d(x, weight, None, options)
    }
}

/// The options of `conv` when the fast operations can run it: no bias and explicit or no
/// padding (`Same` padding is computed privately by Burn, so it keeps Burn's path).
pub(crate) fn fast_conv_options(conv: &Conv2d) -> Option<ConvOptions<2>> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => return None,
    };
    if conv.bias.is_some() {
        return None;
    }
    Some(ConvOptions::new_with_padding(
        conv.stride,
        padding,
        conv.dilation,
        conv.groups,
    ))
}

/// `conv.forward(x)`, through the fast operation when the module has no bias and no `Same`
/// padding (`fast_conv_options`).
pub fn conv_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match fast_conv_options(conv) {
        Some(options) => conv2d_fast(x, conv.weight.val(), options),
        None => conv.forward(x),
    }
}
