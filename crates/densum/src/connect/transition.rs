//! Transitions: what changes the resolution between two stages when the blocks themselves do
//! not (their connectivity needs equal shapes across the whole stage, as concatenation does).
//! A stage with stride 2 and a transition starts with it; its blocks then all have stride 1.

use burn::module::Module;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::block::conv_macs;
use crate::nn::{batch_norm, conv, relu};

/// The form of a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// DenseNet: BN-ReLU-conv1x1 (compression θ) then average pool 2x2 stride 2
    /// (torchvision's `transition{n}.{norm,conv}`).
    DenseNet,
}

/// A network's transitions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransitionConfig {
    /// The form.
    pub kind: TransitionKind,
    /// DenseNet's θ in (0, 1]: the transition keeps `floor(θ · in)` channels.
    pub compression: f64,
}

impl TransitionConfig {
    /// Output channels for `in_ch` input channels.
    pub fn out_channels(&self, in_ch: usize) -> usize {
        match self.kind {
            TransitionKind::DenseNet => ((self.compression * in_ch as f64).floor() as usize).max(1),
        }
    }
}

/// A transition module (`transition` inside the stage it starts).
#[derive(Module, Debug)]
pub struct Transition {
    /// BN before the convolution.
    pub norm: BatchNorm,
    /// The 1x1 convolution.
    pub conv: Conv2d,
    /// The pooling that halves the resolution.
    pub pool: AvgPool2d,
}

impl Transition {
    /// The transition `cfg` from `in_ch` channels, downsampling by `stride`.
    pub fn new(cfg: &TransitionConfig, in_ch: usize, stride: usize, device: &Device) -> Self {
        let out = cfg.out_channels(in_ch);
        match cfg.kind {
            TransitionKind::DenseNet => Transition {
                norm: batch_norm(in_ch, false, device),
                conv: conv(in_ch, out, 1, 1, 1, device),
                pool: AvgPool2dConfig::new([stride, stride]).init(),
            },
        }
    }

    /// Applies the transition.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool
            .forward(self.conv.forward(relu(self.norm.forward(x))))
    }

    /// MACs and output shape for an input of `[c, h, w]`.
    pub fn macs(&self, [_, h, w]: [usize; 3]) -> (u64, [usize; 3]) {
        let (m, oh, ow) = conv_macs(&self.conv, h, w);
        let [s, _] = self.pool.stride;
        let c = self.conv.weight.dims()[0];
        (m, [c, oh / s, ow / s])
    }
}
