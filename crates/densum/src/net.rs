//! A network: stem, stages, head. `forward_features` runs stem and stages; `forward_head`
//! pools and classifies, as in timm.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::block::{BlockConfig, conv_macs, out_channels};
use crate::connect::{ConnectKind, TransitionConfig};
use crate::nn::{
    batch_norm, batch_norm_forward, conv, conv_bn_forward, conv_forward, max_pool_forward,
};
use crate::stage::Stage;

/// The stem's form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StemKind {
    /// conv 7x7 stride 2 + BN + ReLU + max-pool 3x3 stride 2.
    Imagenet,
    /// conv 3x3 stride 1 + BN + ReLU, no pooling (32x32 inputs).
    Cifar,
}

/// One stage: how many blocks, their planes and the stride of the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageConfig {
    /// Number of blocks.
    pub blocks: usize,
    /// Planes (output channels = planes · expansion).
    pub planes: usize,
    /// Stride of the first block.
    pub stride: usize,
}

/// Everything needed to build a network; what a registry entry and the user's options
/// resolve to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetConfig {
    /// Stem form.
    pub stem: StemKind,
    /// Stem output channels.
    pub stem_channels: usize,
    /// Whether the stem has BN + ReLU (pre-activation CIFAR nets start with a bare conv).
    pub stem_norm: bool,
    /// The stages.
    pub stages: Vec<StageConfig>,
    /// Blocks.
    pub block: BlockConfig,
    /// Connectivity.
    pub connect: ConnectKind,
    /// Transitions at the start of strided stages (DenseNet); `None`: the first block strides.
    #[serde(default)]
    pub transition: Option<TransitionConfig>,
    /// BN + ReLU after the last stage (pre-activation nets).
    pub final_norm: bool,
    /// Classifier outputs.
    pub num_classes: usize,
    /// Largest drop-path rate (linearly increasing over blocks, as timm).
    pub drop_path: f64,
    /// Dropout before the classifier.
    pub head_dropout: f64,
}

impl NetConfig {
    /// Input channels of every stage, then the last stage's output channels.
    pub fn stage_channels(&self) -> Vec<usize> {
        let mut c = self.stem_channels;
        let mut out = vec![c];
        for (i, st) in self.stages.iter().enumerate() {
            let block_out = st.planes * self.block.kind.expansion();
            if let Some(t) = &self.transition
                && i > 0
                && st.stride != 1
            {
                c = t.out_channels(c, block_out);
            }
            c = self.connect.stage_out_channels(c, block_out, st.blocks);
            out.push(c);
        }
        out
    }

    /// Output channels of the last stage.
    pub fn feature_channels(&self) -> usize {
        *self.stage_channels().last().expect("stem channels")
    }
}

/// A network of any family.
#[derive(Module, Debug)]
pub struct Net {
    /// Stem convolution.
    pub conv1: Conv2d,
    /// Stem BN.
    pub bn1: Option<BatchNorm>,
    /// Stem max-pool (ImageNet stem).
    pub maxpool: Option<MaxPool2d>,
    /// Stages (`layer1`, `layer2`, ... in weight files).
    pub layers: Vec<Stage>,
    /// Final BN of pre-activation networks (`final_bn`).
    pub final_bn: Option<BatchNorm>,
    /// Dropout before the classifier.
    pub head_dropout: Dropout,
    /// Classifier.
    pub fc: Linear,
}

impl Net {
    /// Builds `cfg` on `device` with fresh weights (torchvision's initialisation, `nn/conv.rs`).
    pub fn new(cfg: &NetConfig, device: &Device) -> Self {
        let (k, s) = match cfg.stem {
            StemKind::Imagenet => (7, 2),
            StemKind::Cifar => (3, 1),
        };
        let total: usize = cfg.stages.iter().map(|s| s.blocks).sum();
        let mut index = 0;
        let channels = cfg.stage_channels();
        let layers = cfg
            .stages
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let rates: Vec<f64> = (0..st.blocks)
                    .map(|i| {
                        let r = cfg.drop_path * (index + i) as f64 / (total.max(2) - 1) as f64;
                        if cfg.drop_path > 0.0 { r } else { 0.0 }
                    })
                    .collect();
                index += st.blocks;
                Stage::new(
                    &cfg.block,
                    cfg.connect,
                    cfg.transition.as_ref().filter(|_| i > 0),
                    channels[i],
                    st,
                    &rates,
                    device,
                )
            })
            .collect();
        let features = cfg.feature_channels();
        Net {
            conv1: conv(3, cfg.stem_channels, k, s, 1, device),
            bn1: cfg
                .stem_norm
                .then(|| batch_norm(cfg.stem_channels, false, device)),
            maxpool: (cfg.stem == StemKind::Imagenet).then(|| {
                MaxPool2dConfig::new([3, 3])
                    .with_strides([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init()
            }),
            layers,
            final_bn: cfg.final_norm.then(|| batch_norm(features, false, device)),
            head_dropout: DropoutConfig::new(cfg.head_dropout).init(),
            fc: LinearConfig::new(features, cfg.num_classes).init(device),
        }
    }

    /// The stem's output.
    pub fn forward_stem(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_stem_pool(self.forward_stem_unpooled(x))
    }

    /// The stem's convolution (and BN-ReLU) before its max-pool: timm's first feature level
    /// (`act1`, see [`crate::features`]).
    pub fn forward_stem_unpooled(&self, x: Tensor<4>) -> Tensor<4> {
        match &self.bn1 {
            Some(bn) => conv_bn_forward(&self.conv1, bn, x, true),
            None => conv_forward(&self.conv1, x),
        }
    }

    /// The stem's max-pool (ImageNet stem; the identity otherwise).
    pub fn forward_stem_pool(&self, x: Tensor<4>) -> Tensor<4> {
        match &self.maxpool {
            Some(p) => max_pool_forward(p, x),
            None => x,
        }
    }

    /// Feature map after the last stage (and the final BN-ReLU of pre-activation nets).
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.forward_stem(x);
        for stage in &self.layers {
            x = stage.forward(x);
        }
        self.forward_final_norm(x)
    }

    /// The final BN-ReLU of pre-activation networks on the last stage's output (the identity
    /// for the others).
    pub fn forward_final_norm(&self, x: Tensor<4>) -> Tensor<4> {
        match &self.final_bn {
            Some(bn) => batch_norm_forward(bn, x, true),
            None => x,
        }
    }

    /// Logits from a feature map: global average pool, dropout, classifier.
    pub fn forward_head(&self, features: Tensor<4>) -> Tensor<2> {
        let [n, c, _, _] = features.dims();
        let pooled = adaptive_avg_pool2d(features, [1, 1]).reshape([n, c]);
        self.fc.forward(self.head_dropout.forward(pooled))
    }

    /// Logits for a batch of normalised images `[N, 3, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_head(self.forward_features(x))
    }

    /// Multiply-accumulates of the stem for a `[3, h, w]` input, and its output shape.
    pub fn stem_macs(&self, h: usize, w: usize) -> (u64, [usize; 3]) {
        let (m, oh, ow) = conv_macs(&self.conv1, h, w);
        let c = out_channels(&self.conv1);
        match self.maxpool {
            Some(_) => (m, [c, (oh - 1) / 2 + 1, (ow - 1) / 2 + 1]),
            None => (m, [c, oh, ow]),
        }
    }
}
