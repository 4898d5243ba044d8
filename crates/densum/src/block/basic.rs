//! ResNet's basic block (He et al. 2016): conv3x3-BN-ReLU-conv3x3-BN.

use burn::module::Module;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use super::{Activation, BlockArgs, BlockConfig, BlockOut, LastLayer, chain_macs};
use crate::nn::{
    Cbam, DropPath, Projection, SqueezeExcite, attention, attention_macs, batch_norm, conv,
    conv_bn_forward,
};

/// Basic block, with optional SE/CBAM after the last BN. torchvision names.
#[derive(Module, Debug)]
pub struct BasicBlock {
    /// First 3x3 convolution (carries the stride).
    pub conv1: Conv2d,
    /// Its BN.
    pub bn1: BatchNorm,
    /// Second 3x3 convolution.
    pub conv2: Conv2d,
    /// Its BN (zero-initialised with `zero_init_last`).
    pub bn2: BatchNorm,
    /// Squeeze-and-excitation.
    pub se: Option<SqueezeExcite>,
    /// CBAM.
    pub cbam: Option<Cbam>,
    /// Projection shortcut when the shape changes.
    pub downsample: Option<Projection>,
    /// Stochastic depth.
    pub drop_path: DropPath,
}

impl BasicBlock {
    /// A basic block at `args`.
    pub fn new(cfg: &BlockConfig, args: &BlockArgs, device: &Device) -> Self {
        let out = args.planes;
        let (se, cbam) = attention(cfg.attention, out, device);
        BasicBlock {
            conv1: conv(args.in_ch, out, 3, args.stride, 1, device),
            bn1: batch_norm(out, false, device),
            conv2: conv(out, out, 3, 1, 1, device),
            bn2: batch_norm(out, cfg.zero_init_last, device),
            se,
            cbam,
            downsample: (args.stride != 1 || args.in_ch != out)
                .then(|| Projection::new(args.in_ch, out, args.stride, true, device)),
            drop_path: DropPath::new(args.drop_path),
        }
    }

    /// Branch and shortcut.
    pub fn forward(&self, x: Tensor<4>) -> BlockOut {
        let shortcut = Projection::or_identity(&self.downsample, x.clone());
        let h = conv_bn_forward(&self.conv1, &self.bn1, x, true);
        BlockOut {
            branch: self.last().branch(h),
            shortcut,
        }
    }

    /// `f(branch + shortcut)`, the sum fused into conv2 + bn2 where it can be (see
    /// [`Block::forward_summed`](super::Block::forward_summed)).
    pub fn forward_summed(&self, x: Tensor<4>, f: Activation) -> Tensor<4> {
        let shortcut = Projection::or_identity(&self.downsample, x.clone());
        let h = conv_bn_forward(&self.conv1, &self.bn1, x, true);
        self.last().summed(h, shortcut, f)
    }

    /// conv2 + bn2 and what follows them.
    fn last(&self) -> LastLayer<'_> {
        LastLayer {
            conv: &self.conv2,
            bn: &self.bn2,
            se: &self.se,
            cbam: &self.cbam,
            drop_path: &self.drop_path,
        }
    }

    /// MACs and output shape.
    pub fn macs(&self, [_, h, w]: [usize; 3]) -> (u64, [usize; 3]) {
        let (mut m, c, oh, ow) = chain_macs(&[&self.conv1, &self.conv2], h, w);
        m = m.saturating_add(attention_macs(&self.se, &self.cbam, c, oh, ow));
        if let Some(p) = &self.downsample {
            m = m.saturating_add(chain_macs(&[&p.conv], h, w).0);
        }
        (m, [c, oh, ow])
    }
}
