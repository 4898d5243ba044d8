//! Blocks: what one layer of a stage computes, its residual branch `X_l = F(input)`.
//!
//! All blocks share one parameterised signature ([`BlockConfig`] for the network-wide choices,
//! [`BlockArgs`] for the position in the network), as timm's model files do. A block returns
//! its branch and the shortcut of the original residual rule (identity, or the projection of a
//! stage's first block); the stage's [`Connect`](crate::connect::Connect) decides how they
//! combine.

pub mod basic;
pub mod bottleneck;
pub mod dense;
pub mod preact;
pub mod res2;

use burn::module::Module;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use basic::BasicBlock;
pub use bottleneck::Bottleneck;
pub use dense::{DenseLayer, PartStats};
pub use preact::{PreActBasic, PreActBottleneck};
pub use res2::{Res2Bottleneck, Res2Module};

use crate::connect::DenseSumConfig;
use crate::nn::{
    AttentionKind, Cbam, DropPath, SqueezeExcite, add_relu, apply_attention, conv_bn_forward,
    conv_bn_sum_forward, relu,
};

/// The kind of block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// conv3x3-BN-ReLU-conv3x3-BN, output ReLU (He et al. 2016).
    Basic,
    /// conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1-BN, output ReLU; grouped (ResNeXt) or wide.
    Bottleneck,
    /// BN-ReLU-conv3x3-BN-ReLU-conv3x3, no output activation (He et al. 2016b; WRN).
    PreActBasic,
    /// BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1, no output activation.
    PreActBottleneck,
    /// Res2Net's bottleneck: its 3x3 convolution split into `scale` hierarchical groups.
    Res2Bottleneck,
    /// DenseNet's plain dense layer, BN-ReLU-conv3x3 to k channels (planes = k).
    DenseLayer,
    /// DenseNet-B's layer, BN-ReLU-conv1x1 (4k)-BN-ReLU-conv3x3 (k); with `scale` > 1 the
    /// 3x3 convolution is Dense2Net's Res2Net module on 4k channels plus a conv1x1 to k.
    DenseBottleneck,
}

impl BlockKind {
    /// Output channels per `planes`.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic
            | BlockKind::PreActBasic
            | BlockKind::DenseLayer
            | BlockKind::DenseBottleneck => 1,
            BlockKind::Bottleneck | BlockKind::PreActBottleneck | BlockKind::Res2Bottleneck => 4,
        }
    }

    /// Whether the block has a 3x3 convolution between two 1x1s (where inner shortcuts go).
    pub fn is_bottleneck(self) -> bool {
        matches!(
            self,
            BlockKind::Bottleneck | BlockKind::PreActBottleneck | BlockKind::Res2Bottleneck
        )
    }

    /// Whether the block normalises before its convolutions.
    pub fn is_preact(self) -> bool {
        matches!(
            self,
            BlockKind::PreActBasic
                | BlockKind::PreActBottleneck
                | BlockKind::DenseLayer
                | BlockKind::DenseBottleneck
        )
    }

    /// Whether this is a DenseNet layer (output = new features only, input concatenated).
    pub fn is_dense(self) -> bool {
        matches!(self, BlockKind::DenseLayer | BlockKind::DenseBottleneck)
    }
}

/// A shortcut inside a bottleneck, around its 3x3 convolution (when that has stride 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InnerShortcut {
    /// DS2Net: `ReLU(BN(conv3x3(a)) + w ⊙ N(a))`.
    Ds(DenseSumConfig),
    /// d-RGSNet: `ReLU(BN(conv3x3(a))) + RG(a)`.
    Rg,
}

/// Choices shared by every block of a network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockConfig {
    /// Block kind.
    pub kind: BlockKind,
    /// Groups of the 3x3 convolution (ResNeXt's C).
    pub cardinality: usize,
    /// Width per group at planes = 64 (ResNeXt's d; 128 for WRN-50-2).
    pub base_width: usize,
    /// Branch attention.
    pub attention: AttentionKind,
    /// Shortcut around the 3x3 convolution of stride-1 bottlenecks.
    pub inner: Option<InnerShortcut>,
    /// RGSNet's "2GN" ablation: GroupNorm after each ReLU inside the branch.
    pub branch_gn: bool,
    /// Dropout between the convolutions (Wide ResNet).
    pub dropout: f64,
    /// Start the last BN of each branch at scale 0.
    pub zero_init_last: bool,
    /// GroupNorm's base group count, 32 · width.
    pub gn_base: usize,
    /// Res2Net's scale s (groups of the split 3x3 convolution); 1 elsewhere.
    #[serde(default = "one")]
    pub scale: usize,
    /// DenseNet: recompute the concatenation and first BN-ReLU in the backward pass.
    #[serde(default)]
    pub memory_efficient: bool,
}

fn one() -> usize {
    1
}

/// Where a block sits: its input channels, planes, stride and drop-path rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockArgs {
    /// Input channels.
    pub in_ch: usize,
    /// The stage's planes (output = planes · expansion).
    pub planes: usize,
    /// Stride (on the 3x3 convolution).
    pub stride: usize,
    /// Drop-path probability of this block's branch.
    pub drop_path: f64,
}

impl BlockConfig {
    /// Inner width of a bottleneck: `floor(planes · d / 64) · C`.
    pub fn bottleneck_width(&self, planes: usize) -> usize {
        planes * self.base_width / 64 * self.cardinality
    }
}

/// A block's result: its branch X and the original residual shortcut (the input, or its
/// projection).
pub struct BlockOut {
    /// `X_l = F(input)`.
    pub branch: Tensor<4>,
    /// Identity or `P(input)`.
    pub shortcut: Tensor<4>,
}

/// One block of any kind.
// Variants differ in size, but a network holds few blocks and Burn's derive does not see
// through a Box, so they stay inline.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Block {
    /// [`BasicBlock`].
    Basic(BasicBlock),
    /// [`Bottleneck`].
    Bottleneck(Bottleneck),
    /// [`PreActBasic`].
    PreActBasic(PreActBasic),
    /// [`PreActBottleneck`].
    PreActBottleneck(PreActBottleneck),
    /// [`Res2Bottleneck`].
    Res2Bottleneck(Res2Bottleneck),
    /// [`DenseLayer`] (plain or bottleneck).
    DenseLayer(DenseLayer),
}

/// A block's output activation f, applied to what the connectivity aggregates
/// (`Y_l = f(aggregate)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Post-activation blocks (ResNet, ResNeXt, Res2Net, ...): ReLU.
    Relu,
    /// Pre-activation blocks and dense layers: none.
    Identity,
}

impl Activation {
    /// `f(x)`.
    pub fn apply(self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Activation::Relu => relu(x),
            Activation::Identity => x,
        }
    }

    /// `f(a + b)`: the residual sum, fused with the ReLU into one operation on Flex.
    pub fn sum(self, a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
        match self {
            Activation::Relu => add_relu(a, b),
            Activation::Identity => a + b,
        }
    }
}

impl Block {
    /// The block `cfg.kind` at position `args`.
    pub fn new(cfg: &BlockConfig, args: &BlockArgs, device: &Device) -> Self {
        match cfg.kind {
            BlockKind::Basic => Block::Basic(BasicBlock::new(cfg, args, device)),
            BlockKind::Bottleneck => Block::Bottleneck(Bottleneck::new(cfg, args, device)),
            BlockKind::PreActBasic => Block::PreActBasic(PreActBasic::new(cfg, args, device)),
            BlockKind::PreActBottleneck => {
                Block::PreActBottleneck(PreActBottleneck::new(cfg, args, device))
            }
            BlockKind::Res2Bottleneck => {
                Block::Res2Bottleneck(Res2Bottleneck::new(cfg, args, device))
            }
            BlockKind::DenseLayer => Block::DenseLayer(DenseLayer::new(cfg, args, false, device)),
            BlockKind::DenseBottleneck => {
                Block::DenseLayer(DenseLayer::new(cfg, args, true, device))
            }
        }
    }

    /// Runs the branch (drop path included) and the shortcut.
    pub fn forward(&self, x: Tensor<4>) -> BlockOut {
        match self {
            Block::Basic(b) => b.forward(x),
            Block::Bottleneck(b) => b.forward(x),
            Block::PreActBasic(b) => b.forward(x),
            Block::PreActBottleneck(b) => b.forward(x),
            Block::Res2Bottleneck(b) => b.forward(x),
            Block::DenseLayer(b) => b.forward(x),
        }
    }

    /// `f(X + S(x))`: the block's output under an identity connectivity (ResNet's), its branch
    /// and shortcut summed, then its activation. Basic blocks and bottlenecks fuse the sum
    /// into their last convolution + batch norm (one pass fewer over the output in training,
    /// two fewer in inference); the other blocks compute the branch and sum it.
    pub fn forward_summed(&self, x: Tensor<4>) -> Tensor<4> {
        let f = self.activation();
        match self {
            Block::Basic(b) => b.forward_summed(x, f),
            Block::Bottleneck(b) => b.forward_summed(x, f),
            _ => {
                let out = self.forward(x);
                f.sum(out.branch, out.shortcut)
            }
        }
    }

    /// The block's output activation f: ReLU after the sum for post-activation blocks, none
    /// for pre-activation ones.
    pub fn activation(&self) -> Activation {
        match self {
            Block::Basic(_) | Block::Bottleneck(_) | Block::Res2Bottleneck(_) => Activation::Relu,
            Block::PreActBasic(_) | Block::PreActBottleneck(_) | Block::DenseLayer(_) => {
                Activation::Identity
            }
        }
    }

    /// Multiply-accumulates of the block (convolutions and attention) for an input of
    /// `[c, h, w]`, and the output shape.
    pub fn macs(&self, shape: [usize; 3]) -> (u64, [usize; 3]) {
        match self {
            Block::Basic(b) => b.macs(shape),
            Block::Bottleneck(b) => b.macs(shape),
            Block::PreActBasic(b) => b.macs(shape),
            Block::PreActBottleneck(b) => b.macs(shape),
            Block::Res2Bottleneck(b) => b.macs(shape),
            Block::DenseLayer(b) => b.macs(shape),
        }
    }
}

/// Output channels of `conv`, read from the weight's shape without initialising it (Burn's
/// parameters are lazy: reading the tensor would allocate it, and counting a model must not).
pub fn out_channels(conv: &Conv2d) -> usize {
    conv.weight.lazy_shape()[0]
}

/// Multiply-accumulates of `conv` on an input of `h` x `w` (saturating at `u64::MAX`), and
/// its output size (from the weight's shape alone, see [`out_channels`]).
pub fn conv_macs(conv: &Conv2d, h: usize, w: usize) -> (u64, usize, usize) {
    let [out_c, in_per_group, kh, kw] = conv.weight.lazy_shape().dims();
    let (pad_h, pad_w) = match conv.padding {
        burn::nn::PaddingConfig2d::Explicit(t, l, _, _) => (t, l),
        _ => (kh / 2, kw / 2),
    };
    let oh = (h + 2 * pad_h - kh) / conv.stride[0] + 1;
    let ow = (w + 2 * pad_w - kw) / conv.stride[1] + 1;
    // Saturating, as every sum of these counts is: under the zoo's bounds one convolution
    // fits (at most 4096^2 px · 2^17 · 2^17 · 9 < 2^62), a stage of them may not.
    let macs = [oh, ow, out_c, in_per_group, kh, kw]
        .iter()
        .fold(1u64, |m, &d| m.saturating_mul(d as u64));
    (macs, oh, ow)
}

/// Chains [`conv_macs`] over convolutions applied in sequence.
pub(crate) fn chain_macs(convs: &[&Conv2d], h: usize, w: usize) -> (u64, usize, usize, usize) {
    let mut total: u64 = 0;
    let (mut h, mut w, mut c) = (h, w, 0);
    for conv in convs {
        let (m, oh, ow) = conv_macs(conv, h, w);
        total = total.saturating_add(m);
        h = oh;
        w = ow;
        c = out_channels(conv);
    }
    (total, c, h, w)
}

/// The end a post-activation block's branch shares (basic block, bottleneck): its last
/// convolution + batch norm, then attention and drop path.
pub(crate) struct LastLayer<'a> {
    pub(crate) conv: &'a Conv2d,
    pub(crate) bn: &'a BatchNorm,
    pub(crate) se: &'a Option<SqueezeExcite>,
    pub(crate) cbam: &'a Option<Cbam>,
    pub(crate) drop_path: &'a DropPath,
}

impl LastLayer<'_> {
    /// The branch's output from the last convolution's input `h`.
    pub(crate) fn branch(&self, h: Tensor<4>) -> Tensor<4> {
        let h = conv_bn_forward(self.conv, self.bn, h, false);
        self.drop_path
            .forward(apply_attention(self.se, self.cbam, h))
    }

    /// `f(branch + shortcut)`, the sum (and f) fused into the convolution and batch norm
    /// ([`conv_bn_sum_forward`]) unless attention or an active drop path comes between them.
    pub(crate) fn summed(&self, h: Tensor<4>, shortcut: Tensor<4>, f: Activation) -> Tensor<4> {
        if self.se.is_some() || self.cbam.is_some() || !self.drop_path.is_identity(&h) {
            return f.sum(self.branch(h), shortcut);
        }
        conv_bn_sum_forward(self.conv, self.bn, h, shortcut, f == Activation::Relu)
    }
}
