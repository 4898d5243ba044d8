//! Pre-activation blocks (He et al. 2016b, "Identity mappings"): BN-ReLU-conv order inside
//! the branch, nothing after the addition. Wide ResNet (Zagoruyko & Komodakis) is the basic
//! form with dropout between the convolutions. A stage's first block projects the
//! pre-activated input (conv only, as in those papers).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Dropout, DropoutConfig};
use burn::tensor::{Device, Tensor};

use super::{BlockArgs, BlockConfig, BlockOut, chain_macs};
use crate::nn::{DropPath, Projection, batch_norm, conv, conv_forward, relu};

/// Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3.
#[derive(Module, Debug)]
pub struct PreActBasic {
    /// BN before the first convolution.
    pub bn1: BatchNorm,
    /// First 3x3 convolution (carries the stride).
    pub conv1: Conv2d,
    /// BN before the second convolution.
    pub bn2: BatchNorm,
    /// Second 3x3 convolution.
    pub conv2: Conv2d,
    /// Wide ResNet's dropout between the convolutions.
    pub dropout: Dropout,
    /// Projection of the pre-activated input when the shape changes.
    pub downsample: Option<Projection>,
    /// Stochastic depth.
    pub drop_path: DropPath,
}

impl PreActBasic {
    /// A pre-activation basic block at `args`.
    pub fn new(cfg: &BlockConfig, args: &BlockArgs, device: &Device) -> Self {
        let out = args.planes;
        PreActBasic {
            bn1: batch_norm(args.in_ch, false, device),
            conv1: conv(args.in_ch, out, 3, args.stride, 1, device),
            bn2: batch_norm(out, false, device),
            conv2: conv(out, out, 3, 1, 1, device),
            dropout: DropoutConfig::new(cfg.dropout).init(),
            downsample: (args.stride != 1 || args.in_ch != out)
                .then(|| Projection::new(args.in_ch, out, args.stride, false, device)),
            drop_path: DropPath::new(args.drop_path),
        }
    }

    /// Branch and shortcut.
    pub fn forward(&self, x: Tensor<4>) -> BlockOut {
        let a = relu(self.bn1.forward(x.clone()));
        let shortcut = match &self.downsample {
            Some(p) => p.forward(a.clone()),
            None => x,
        };
        let h = conv_forward(&self.conv1, a);
        let h = self.dropout.forward(relu(self.bn2.forward(h)));
        let h = conv_forward(&self.conv2, h);
        BlockOut {
            branch: self.drop_path.forward(h),
            shortcut,
        }
    }

    /// MACs and output shape.
    pub fn macs(&self, [_, h, w]: [usize; 3]) -> (u64, [usize; 3]) {
        let (mut m, c, oh, ow) = chain_macs(&[&self.conv1, &self.conv2], h, w);
        if let Some(p) = &self.downsample {
            m = m.saturating_add(chain_macs(&[&p.conv], h, w).0);
        }
        (m, [c, oh, ow])
    }
}

/// Pre-activation bottleneck: BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1.
#[derive(Module, Debug)]
pub struct PreActBottleneck {
    /// BN before the 1x1 reduction.
    pub bn1: BatchNorm,
    /// 1x1 reduction.
    pub conv1: Conv2d,
    /// BN before the 3x3 convolution.
    pub bn2: BatchNorm,
    /// 3x3 (grouped) convolution, carries the stride.
    pub conv2: Conv2d,
    /// BN before the 1x1 expansion.
    pub bn3: BatchNorm,
    /// 1x1 expansion.
    pub conv3: Conv2d,
    /// Projection of the pre-activated input when the shape changes.
    pub downsample: Option<Projection>,
    /// Stochastic depth.
    pub drop_path: DropPath,
}

impl PreActBottleneck {
    /// A pre-activation bottleneck at `args`.
    pub fn new(cfg: &BlockConfig, args: &BlockArgs, device: &Device) -> Self {
        let width = cfg.bottleneck_width(args.planes);
        let out = args.planes * 4;
        PreActBottleneck {
            bn1: batch_norm(args.in_ch, false, device),
            conv1: conv(args.in_ch, width, 1, 1, 1, device),
            bn2: batch_norm(width, false, device),
            conv2: conv(width, width, 3, args.stride, cfg.cardinality, device),
            bn3: batch_norm(width, false, device),
            conv3: conv(width, out, 1, 1, 1, device),
            downsample: (args.stride != 1 || args.in_ch != out)
                .then(|| Projection::new(args.in_ch, out, args.stride, false, device)),
            drop_path: DropPath::new(args.drop_path),
        }
    }

    /// Branch and shortcut.
    pub fn forward(&self, x: Tensor<4>) -> BlockOut {
        let a = relu(self.bn1.forward(x.clone()));
        let shortcut = match &self.downsample {
            Some(p) => p.forward(a.clone()),
            None => x,
        };
        let h = conv_forward(&self.conv1, a);
        let h = conv_forward(&self.conv2, relu(self.bn2.forward(h)));
        let h = conv_forward(&self.conv3, relu(self.bn3.forward(h)));
        BlockOut {
            branch: self.drop_path.forward(h),
            shortcut,
        }
    }

    /// MACs and output shape.
    pub fn macs(&self, [_, h, w]: [usize; 3]) -> (u64, [usize; 3]) {
        let (mut m, c, oh, ow) = chain_macs(&[&self.conv1, &self.conv2, &self.conv3], h, w);
        if let Some(p) = &self.downsample {
            m = m.saturating_add(chain_macs(&[&p.conv], h, w).0);
        }
        (m, [c, oh, ow])
    }
}
