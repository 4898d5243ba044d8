//! Transitions: what changes the resolution between two stages when the blocks themselves do
//! not (their connectivity needs equal shapes across the whole stage, as concatenation does).
//! A stage with stride 2 and a transition starts with it; its blocks then all have stride 1.

use burn::module::Module;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::block::{chain_macs, out_channels};
use crate::nn::{avg_pool_forward, batch_norm, batch_norm_forward, conv, conv_forward};

/// The form of a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// DenseNet: BN-ReLU-conv1x1 (compression θ) then average pool 2x2 stride 2
    /// (torchvision's `transition{n}.{norm,conv}`).
    DenseNet,
    /// DelugeNet: BN-ReLU, a strided depthwise 3x3 convolution (`dw`), then a conv1x1 to the
    /// next stage's width (`conv`). The paper's transitions are strided 3x3 convolutions; a full 3x3
    /// from C to 2C channels would cost 9·C·2C parameters per transition, more than the
    /// papers' counts leave (6.7M at 16 and 10.0M at 24 layers per block differ by 3.3M, all
    /// of it composite layers, so the transitions may cost only about 0.1M): the depthwise
    /// form keeps the 3x3 spatial extent and stride at the cost of a 1x1.
    Deluge,
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
    /// Output channels for `in_ch` input channels into a stage whose blocks output
    /// `stage_width` channels.
    pub fn out_channels(&self, in_ch: usize, stage_width: usize) -> usize {
        match self.kind {
            TransitionKind::DenseNet => ((self.compression * in_ch as f64).floor() as usize).max(1),
            TransitionKind::Deluge => stage_width,
        }
    }
}

/// A transition module (`transition` inside the stage it starts).
#[derive(Module, Debug)]
pub struct Transition {
    /// BN before the convolution.
    pub norm: BatchNorm,
    /// DelugeNet's strided depthwise 3x3 convolution.
    pub dw: Option<Conv2d>,
    /// The 1x1 convolution.
    pub conv: Conv2d,
    /// DenseNet's pooling that halves the resolution.
    pub pool: Option<AvgPool2d>,
}

impl Transition {
    /// The transition `cfg` from `in_ch` channels into a stage of `stage_width` channels,
    /// downsampling by `stride`.
    pub fn new(
        cfg: &TransitionConfig,
        in_ch: usize,
        stage_width: usize,
        stride: usize,
        device: &Device,
    ) -> Self {
        let out = cfg.out_channels(in_ch, stage_width);
        let deluge = cfg.kind == TransitionKind::Deluge;
        Transition {
            norm: batch_norm(in_ch, false, device),
            dw: deluge.then(|| conv(in_ch, in_ch, 3, stride, in_ch, device)),
            conv: conv(in_ch, out, 1, 1, 1, device),
            pool: (!deluge).then(|| AvgPool2dConfig::new([stride, stride]).init()),
        }
    }

    /// Applies the transition.
    ///
    /// DenseNet's `pool(conv1x1(z))` runs as `conv1x1(pool(z))`: a 1x1 convolution acts on
    /// each position alone and average pooling is linear, so the two commute exactly (up to
    /// rounding), and the convolution then sees a quarter of the positions. The transitions
    /// are about a tenth of DenseNet-121's multiply-accumulates; [`Self::macs`] still counts
    /// the published order, the cost the papers compare.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = batch_norm_forward(&self.norm, x, true);
        match (&self.dw, &self.pool) {
            (None, Some(p)) => conv_forward(&self.conv, avg_pool_forward(p, x)),
            (dw, pool) => {
                let x = match dw {
                    Some(dw) => conv_forward(dw, x),
                    None => x,
                };
                let x = conv_forward(&self.conv, x);
                match pool {
                    Some(p) => avg_pool_forward(p, x),
                    None => x,
                }
            }
        }
    }

    /// Output channels (the stage's blocks read them).
    pub fn out_channels(&self) -> usize {
        out_channels(&self.conv)
    }

    /// MACs and output shape for an input of `[c, h, w]`.
    pub fn macs(&self, [_, h, w]: [usize; 3]) -> (u64, [usize; 3]) {
        let mut convs = Vec::new();
        convs.extend(self.dw.as_ref());
        convs.push(&self.conv);
        let (m, c, oh, ow) = chain_macs(&convs, h, w);
        let s = self.pool.as_ref().map_or(1, |p| p.stride[0]);
        (m, [c, oh / s, ow / s])
    }
}
