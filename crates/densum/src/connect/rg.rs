//! Nonlinear ReLU + GroupNorm shortcuts (RGSNet, Zhang et al., BMVC 2019). In the general residual form
//! `y_l = h(x_l) + F(x_l)`, `x_{l+1} = f(y_l)`, RGSNet replaces the identity h with
//! `RG(z) = GroupNorm(ReLU(z))` and drops the output ReLU f. The paper's ablations are other
//! choices of h and f, all built here.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::Rule;
use crate::block::{Activation, Block};
use crate::nn::{ShortcutNorm, relu};

/// Which RG design a stage uses for its non-first blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RgVariant {
    /// b-RGS (and d-RGS, which adds the inner shortcut): `y = F(x) + RG(x)`.
    B,
    /// Res-RGS: `y = x + F(x) + RG(x)`.
    Res,
    /// RBS ablation: ReLU + BatchNorm shortcut, `y = F(x) + BN(ReLU(x))`.
    Rbs,
    /// GS ablation: GroupNorm alone, `y = F(x) + GN(x)`.
    Gs,
    /// RGB ablation: RG placed after the identity sum, `y = RG(x + F(x))`.
    Rgb,
}

/// One block's RG module `layer{s}.{b}.rg`: a normalisation with affine parameters, preceded
/// by a ReLU unless the variant says otherwise.
#[derive(Module, Debug)]
pub struct RgShortcut {
    /// The normalisation (GroupNorm, or BatchNorm in RBS).
    pub norm: ShortcutNorm,
    /// Whether a ReLU precedes it.
    pub pre_relu: bool,
}

impl RgShortcut {
    /// `RG(z) = GroupNorm(ReLU(z))` for `channels` channels.
    pub fn rg(channels: usize, gn_base: usize, device: &Device) -> Self {
        RgShortcut {
            norm: ShortcutNorm::group(channels, gn_base, device),
            pre_relu: true,
        }
    }

    /// The shortcut of `variant`.
    pub fn for_variant(
        variant: RgVariant,
        channels: usize,
        gn_base: usize,
        device: &Device,
    ) -> Self {
        match variant {
            RgVariant::Rbs => RgShortcut {
                norm: ShortcutNorm::batch(channels, device),
                pre_relu: true,
            },
            RgVariant::Gs => RgShortcut {
                norm: ShortcutNorm::group(channels, gn_base, device),
                pre_relu: false,
            },
            _ => Self::rg(channels, gn_base, device),
        }
    }

    /// Applies it.
    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let z = if self.pre_relu { relu(z) } else { z };
        self.norm.forward(z)
    }
}

/// The RG shortcuts of one stage: `rg[k]` belongs to block `k + 1` (file name
/// `layer{s}.{k+1}.rg`).
#[derive(Module, Debug)]
pub struct RgShortcuts {
    /// One per non-first block.
    pub rg: Vec<RgShortcut>,
    /// The design.
    #[module(skip)]
    pub variant: RgVariant,
}

impl RgShortcuts {
    /// Shortcuts for a stage of `blocks` blocks with `channels` output channels.
    pub fn new(
        variant: RgVariant,
        blocks: usize,
        channels: usize,
        gn_base: usize,
        device: &Device,
    ) -> Self {
        RgShortcuts {
            rg: (1..blocks)
                .map(|_| RgShortcut::for_variant(variant, channels, gn_base, device))
                .collect(),
            variant,
        }
    }
}

/// Block 0 keeps the residual rule with its projection; later blocks have no output ReLU
/// (f = identity) whatever their kind.
impl Rule for RgShortcuts {
    type History = ();

    fn first(&self, block: &Block, x: Tensor<4>) -> (Tensor<4>, ()) {
        (block.forward_summed(x), ())
    }

    /// Y_l from the branch X_l and the previous output Y_{l-1}.
    fn aggregate(
        &self,
        l: usize,
        branch: Tensor<4>,
        prev: Tensor<4>,
        _history: &mut (),
        _f: Activation,
    ) -> Tensor<4> {
        let rg = &self.rg[l - 1];
        match self.variant {
            RgVariant::Res => prev.clone() + branch + rg.forward(prev),
            RgVariant::Rgb => rg.forward(prev + branch),
            RgVariant::B | RgVariant::Rbs | RgVariant::Gs => branch + rg.forward(prev),
        }
    }
}
