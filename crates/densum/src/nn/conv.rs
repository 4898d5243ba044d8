//! Convolution and batch-norm builders with torchvision's ResNet initialisation (convolutions
//! Kaiming-normal, fan_out, ReLU gain; BN scale 1, shift 0).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use crate::nn::fast::conv::conv_forward;
use crate::nn::fast::norm::conv_bn_forward;

/// A bias-free convolution with "same"-style padding `k / 2`, Kaiming-normal initialised
/// (fan_out, ReLU gain) as torchvision's ResNet does.
pub fn conv(
    in_ch: usize,
    out_ch: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
    device: &Device,
) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([in_ch, out_ch], [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal {
            gain: 2f64.sqrt(),
            fan_out_only: true,
        })
        .init(device)
}

/// Batch normalisation with scale 1 and shift 0, or scale 0 when `zero_init` (the option that
/// makes every residual branch start as the identity).
pub fn batch_norm(channels: usize, zero_init: bool, device: &Device) -> BatchNorm {
    let bn = BatchNormConfig::new(channels).init(device);
    if zero_init {
        BatchNorm {
            gamma: bn.gamma.map(|g| g.zeros_like()),
            ..bn
        }
    } else {
        bn
    }
}

/// ReLU, as a free function so block code reads like the papers' formulas.
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::relu(x)
}

/// The projection shortcut of a stage's first block: conv 1x1 (stride of the stage) + BN.
/// Pre-activation blocks use the convolution alone (their input is already normalised).
/// Stored as torchvision's `downsample.0` (conv) and `downsample.1` (BN).
#[derive(Module, Debug)]
pub struct Projection {
    /// The 1x1 convolution.
    pub conv: Conv2d,
    /// Its batch norm, absent in pre-activation networks.
    pub bn: Option<BatchNorm>,
}

impl Projection {
    /// A projection from `in_ch` to `out_ch` channels with the given stride.
    pub fn new(in_ch: usize, out_ch: usize, stride: usize, with_bn: bool, device: &Device) -> Self {
        Projection {
            conv: conv(in_ch, out_ch, 1, stride, 1, device),
            bn: with_bn.then(|| batch_norm(out_ch, false, device)),
        }
    }

    /// A post-activation block's shortcut: `p` applied to `x` when the block has a
    /// projection, `x` itself otherwise.
    pub fn or_identity(p: &Option<Projection>, x: Tensor<4>) -> Tensor<4> {
        match p {
            Some(p) => p.forward(x),
            None => x,
        }
    }

    /// Applies the projection.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match &self.bn {
            Some(bn) => conv_bn_forward(&self.conv, bn, x, false),
            None => conv_forward(&self.conv, x),
        }
    }
}
