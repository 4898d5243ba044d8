//! ResNet's bottleneck (He et al. 2016), with ResNeXt's grouped 3x3 convolution, Wide
//! ResNet-50-2's wider inner width, and the inner shortcuts of DS2Net and d-RGSNet.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, GroupNorm, GroupNormConfig};
use burn::tensor::{Device, Tensor};

use super::{Activation, BlockArgs, BlockConfig, BlockOut, InnerShortcut, LastLayer, chain_macs};
use crate::connect::{InnerDs, RgShortcut};
use crate::nn::{
    Cbam, DropPath, Projection, SqueezeExcite, attention, attention_macs, batch_norm, conv,
    conv_bn_forward, gn_groups,
};

/// Bottleneck block (stride on the 3x3 convolution, as torchvision). torchvision names, plus
/// `inner_ds` / `inner_rg` (README, "Weight files") and `gn1` / `gn2` for the 2GN ablation.
#[derive(Module, Debug)]
pub struct Bottleneck {
    /// 1x1 reduction.
    pub conv1: Conv2d,
    /// Its BN.
    pub bn1: BatchNorm,
    /// 3x3 (grouped) convolution, carries the stride.
    pub conv2: Conv2d,
    /// Its BN.
    pub bn2: BatchNorm,
    /// 1x1 expansion to 4 · planes.
    pub conv3: Conv2d,
    /// Its BN (zero-initialised with `zero_init_last`).
    pub bn3: BatchNorm,
    /// Squeeze-and-excitation.
    pub se: Option<SqueezeExcite>,
    /// CBAM.
    pub cbam: Option<Cbam>,
    /// Projection shortcut when the shape changes.
    pub downsample: Option<Projection>,
    /// DS2Net's weighted normalised shortcut over the 3x3 convolution.
    pub inner_ds: Option<InnerDs>,
    /// d-RGSNet's RG shortcut over the 3x3 convolution.
    pub inner_rg: Option<RgShortcut>,
    /// 2GN ablation: GroupNorm after the first ReLU.
    pub gn1: Option<GroupNorm>,
    /// 2GN ablation: GroupNorm after the second ReLU.
    pub gn2: Option<GroupNorm>,
    /// Stochastic depth.
    pub drop_path: DropPath,
}

impl Bottleneck {
    /// A bottleneck at `args`.
    pub fn new(cfg: &BlockConfig, args: &BlockArgs, device: &Device) -> Self {
        let width = cfg.bottleneck_width(args.planes);
        let out = args.planes * 4;
        let (se, cbam) = attention(cfg.attention, out, device);
        let inner = if args.stride == 1 { cfg.inner } else { None };
        let gn = || {
            cfg.branch_gn
                .then(|| GroupNormConfig::new(gn_groups(width, cfg.gn_base), width).init(device))
        };
        Bottleneck {
            conv1: conv(args.in_ch, width, 1, 1, 1, device),
            bn1: batch_norm(width, false, device),
            conv2: conv(width, width, 3, args.stride, cfg.cardinality, device),
            bn2: batch_norm(width, false, device),
            conv3: conv(width, out, 1, 1, 1, device),
            bn3: batch_norm(out, cfg.zero_init_last, device),
            se,
            cbam,
            downsample: (args.stride != 1 || args.in_ch != out)
                .then(|| Projection::new(args.in_ch, out, args.stride, true, device)),
            inner_ds: match inner {
                Some(InnerShortcut::Ds(ds)) => Some(InnerDs::new(&ds, width, cfg.gn_base, device)),
                _ => None,
            },
            inner_rg: match inner {
                Some(InnerShortcut::Rg) => Some(RgShortcut::rg(width, cfg.gn_base, device)),
                _ => None,
            },
            gn1: gn(),
            gn2: gn(),
            drop_path: DropPath::new(args.drop_path),
        }
    }

    /// Branch and shortcut.
    pub fn forward(&self, x: Tensor<4>) -> BlockOut {
        let shortcut = Projection::or_identity(&self.downsample, x.clone());
        BlockOut {
            branch: self.last().branch(self.to_last(x)),
            shortcut,
        }
    }

    /// `f(branch + shortcut)`, the sum fused into conv3 + bn3 where it can be (see
    /// [`Block::forward_summed`](super::Block::forward_summed)).
    pub fn forward_summed(&self, x: Tensor<4>, f: Activation) -> Tensor<4> {
        let shortcut = Projection::or_identity(&self.downsample, x.clone());
        self.last().summed(self.to_last(x), shortcut, f)
    }

    /// conv3 + bn3 and what follows them.
    fn last(&self) -> LastLayer<'_> {
        LastLayer {
            conv: &self.conv3,
            bn: &self.bn3,
            se: &self.se,
            cbam: &self.cbam,
            drop_path: &self.drop_path,
        }
    }

    /// The branch up to the last convolution: conv1 and conv2 with their norms, ReLUs and
    /// inner shortcuts.
    fn to_last(&self, x: Tensor<4>) -> Tensor<4> {
        let maybe_gn = |gn: &Option<GroupNorm>, t: Tensor<4>| match gn {
            Some(gn) => gn.forward(t),
            None => t,
        };
        // BN + ReLU pairs go through the fused operation (one pass on Flex).
        let a = maybe_gn(&self.gn1, conv_bn_forward(&self.conv1, &self.bn1, x, true));
        let (conv2, bn2) = (&self.conv2, &self.bn2);
        let b = match (&self.inner_ds, &self.inner_rg) {
            (Some(ds), _) => ds.aggregate(conv_bn_forward(conv2, bn2, a.clone(), false), a),
            (None, Some(rg)) => conv_bn_forward(conv2, bn2, a.clone(), true) + rg.forward(a),
            (None, None) => conv_bn_forward(conv2, bn2, a, true),
        };
        maybe_gn(&self.gn2, b)
    }

    /// MACs and output shape.
    pub fn macs(&self, [_, h, w]: [usize; 3]) -> (u64, [usize; 3]) {
        let (mut m, c, oh, ow) = chain_macs(&[&self.conv1, &self.conv2, &self.conv3], h, w);
        m = m.saturating_add(attention_macs(&self.se, &self.cbam, c, oh, ow));
        if let Some(p) = &self.downsample {
            m = m.saturating_add(chain_macs(&[&p.conv], h, w).0);
        }
        (m, [c, oh, ow])
    }
}
