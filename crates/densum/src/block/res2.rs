//! Res2Net (Gao et al. 2019): the bottleneck's 3x3 convolution becomes a hierarchy
//! of s smaller 3x3 convolutions over s channel groups of width w, each group also reading the
//! previous group's output, so one block sees several receptive-field sizes.
//!
//! Layout and names follow timm's `Bottle2neck` (`conv1`, `bn1`, `convs.{i}`, `bns.{i}`,
//! `conv3`, `bn3`, `downsample`), which orders the groups as: the first s-1 groups go through
//! `K_i` (conv3x3-BN-ReLU), group i > 1 after adding the previous output; the last group is
//! passed through. In a stage's first block (stride, or a projection) the groups do not read
//! each other and the last group is average pooled (3x3, the stride, padding 1, zero padding
//! counted as timm does).
//!
//! [`Res2Module`] is the multi-scale part alone, shared by the Res2Net bottleneck and
//! Dense2Net's dense layer.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::{BlockArgs, BlockConfig, BlockOut, chain_macs, conv_macs};
use crate::nn::{
    Cbam, DropPath, Projection, SqueezeExcite, apply_attention, attention, attention_macs,
    batch_norm, conv, conv_forward, relu,
};

/// The hierarchical split-convolution of Res2Net on `scale · width` channels.
#[derive(Module, Debug)]
pub struct Res2Module {
    /// `convs[i]`: the 3x3 convolution of group i (grouped by the cardinality).
    pub convs: Vec<Conv2d>,
    /// `bns[i]`: its BN.
    pub bns: Vec<BatchNorm>,
    /// The pool of the last group in a stage's first block.
    pub pool: Option<AvgPool2d>,
    /// Channels per group.
    pub width: usize,
}

impl Res2Module {
    /// A module on `channels` channels split into `scale` groups (`channels` must be a
    /// multiple of `scale`), with 3x3 convolutions of `groups` groups and the given stride;
    /// `first` selects the stage-first form.
    pub fn new(
        channels: usize,
        scale: usize,
        groups: usize,
        stride: usize,
        first: bool,
        device: &Device,
    ) -> Self {
        let width = channels / scale;
        Res2Module {
            convs: (1..scale)
                .map(|_| conv(width, width, 3, stride, groups, device))
                .collect(),
            bns: (1..scale)
                .map(|_| batch_norm(width, false, device))
                .collect(),
            pool: first.then(|| {
                AvgPool2dConfig::new([3, 3])
                    .with_strides([stride, stride])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_count_include_pad(true)
                    .init()
            }),
            width,
        }
    }

    /// Applies the module.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let groups = x.split(self.width, 1);
        let last = groups.last().expect("at least one group").clone();
        let mut outs = Vec::with_capacity(groups.len());
        let mut prev: Option<Tensor<4>> = None;
        for (i, (conv, bn)) in self.convs.iter().zip(&self.bns).enumerate() {
            let input = match (&prev, &self.pool) {
                (Some(p), None) => groups[i].clone() + p.clone(),
                _ => groups[i].clone(),
            };
            let y = relu(bn.forward(conv_forward(conv, input)));
            prev = Some(y.clone());
            outs.push(y);
        }
        outs.push(match &self.pool {
            Some(pool) => pool.forward(last),
            None => last,
        });
        Tensor::cat(outs, 1)
    }

    /// MACs of the group convolutions on an `h` x `w` input.
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        self.convs
            .iter()
            .fold(0, |t, c| t.saturating_add(conv_macs(c, h, w).0))
    }
}

/// Res2Net's bottleneck: conv1x1 to `s · w`, [`Res2Module`], conv1x1 to 4 · planes, with the
/// post-activation residual rule of ResNet (and SE when asked).
#[derive(Module, Debug)]
pub struct Res2Bottleneck {
    /// 1x1 reduction to `scale · width`.
    pub conv1: Conv2d,
    /// Its BN.
    pub bn1: BatchNorm,
    /// The multi-scale convolutions (`convs.{i}`, `bns.{i}` in files: the module is flattened).
    pub res2: Res2Module,
    /// 1x1 expansion.
    pub conv3: Conv2d,
    /// Its BN.
    pub bn3: BatchNorm,
    /// Squeeze-and-excitation.
    pub se: Option<SqueezeExcite>,
    /// CBAM.
    pub cbam: Option<Cbam>,
    /// Projection shortcut when the shape changes.
    pub downsample: Option<Projection>,
    /// Stochastic depth.
    pub drop_path: DropPath,
}

impl Res2Bottleneck {
    /// A Res2Net bottleneck at `args`: width `w = floor(planes · base_width / 64) · C`.
    pub fn new(cfg: &BlockConfig, args: &BlockArgs, device: &Device) -> Self {
        let width = cfg.bottleneck_width(args.planes);
        let out = args.planes * 4;
        let project = args.stride != 1 || args.in_ch != out;
        let (se, cbam) = attention(cfg.attention, out, device);
        Res2Bottleneck {
            conv1: conv(args.in_ch, width * cfg.scale, 1, 1, 1, device),
            bn1: batch_norm(width * cfg.scale, false, device),
            res2: Res2Module::new(
                width * cfg.scale,
                cfg.scale,
                cfg.cardinality,
                args.stride,
                project,
                device,
            ),
            conv3: conv(width * cfg.scale, out, 1, 1, 1, device),
            bn3: batch_norm(out, cfg.zero_init_last, device),
            se,
            cbam,
            downsample: project
                .then(|| Projection::new(args.in_ch, out, args.stride, true, device)),
            drop_path: DropPath::new(args.drop_path),
        }
    }

    /// Branch and shortcut.
    pub fn forward(&self, x: Tensor<4>) -> BlockOut {
        let shortcut = Projection::or_identity(&self.downsample, x.clone());
        let a = relu(self.bn1.forward(conv_forward(&self.conv1, x)));
        let h = self
            .bn3
            .forward(conv_forward(&self.conv3, self.res2.forward(a)));
        let h = apply_attention(&self.se, &self.cbam, h);
        BlockOut {
            branch: self.drop_path.forward(h),
            shortcut,
        }
    }

    /// MACs and output shape.
    pub fn macs(&self, [_, h, w]: [usize; 3]) -> (u64, [usize; 3]) {
        let (mut m, _, _, _) = chain_macs(&[&self.conv1], h, w);
        let stride = self.res2.convs.first().map_or(1, |c| c.stride[0]);
        m = m.saturating_add(self.res2.macs(h, w));
        let (oh, ow) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
        let (m3, c, _, _) = chain_macs(&[&self.conv3], oh, ow);
        m = m
            .saturating_add(m3)
            .saturating_add(attention_macs(&self.se, &self.cbam, c, oh, ow));
        if let Some(p) = &self.downsample {
            m = m.saturating_add(chain_macs(&[&p.conv], h, w).0);
        }
        (m, [c, oh, ow])
    }
}
