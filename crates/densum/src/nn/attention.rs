//! Block attention: squeeze-and-excitation (Hu et al.) and CBAM (Woo et al.), applied to a
//! residual branch after its last normalisation.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::nn::conv::relu;

/// Which attention a block applies to its branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    /// None.
    #[default]
    None,
    /// Squeeze-and-excitation, reduction 16.
    Se,
    /// CBAM: channel attention, then spatial attention.
    Cbam,
}

/// timm's `make_divisible`: the reduced width, rounded to a multiple of 8 and at least 8, so
/// that files from timm's SE-ResNets load unchanged.
fn reduced_channels(channels: usize) -> usize {
    let v = channels as f64 / 16.0;
    let rounded = ((v + 4.0) as usize / 8) * 8;
    rounded.max(8)
}

fn conv1x1_bias(in_ch: usize, out_ch: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([in_ch, out_ch], [1, 1]).init(device)
}

/// Squeeze-and-excitation: `x * sigmoid(fc2(relu(fc1(avgpool(x)))))`, fc as 1x1 convs with
/// bias (timm's `se.fc1`, `se.fc2`).
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    /// Reduction.
    pub fc1: Conv2d,
    /// Expansion.
    pub fc2: Conv2d,
}

impl SqueezeExcite {
    /// SE for `channels` channels.
    pub fn new(channels: usize, device: &Device) -> Self {
        let rd = reduced_channels(channels);
        SqueezeExcite {
            fc1: conv1x1_bias(channels, rd, device),
            fc2: conv1x1_bias(rd, channels, device),
        }
    }

    /// Reweights the channels of `x`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s = adaptive_avg_pool2d(x.clone(), [1, 1]);
        let s = sigmoid(self.fc2.forward(relu(self.fc1.forward(s))));
        x * s
    }
}

/// CBAM: a shared bias-free MLP over average- and max-pooled channels, then a 7x7 convolution
/// over the channel-wise mean and max.
#[derive(Module, Debug)]
pub struct Cbam {
    /// MLP reduction (1x1 conv, no bias).
    pub fc1: Conv2d,
    /// MLP expansion (1x1 conv, no bias).
    pub fc2: Conv2d,
    /// Spatial attention: 7x7 conv from 2 channels to 1.
    pub spatial: Conv2d,
}

impl Cbam {
    /// CBAM for `channels` channels.
    pub fn new(channels: usize, device: &Device) -> Self {
        let rd = reduced_channels(channels);
        let fc = |i, o| {
            Conv2dConfig::new([i, o], [1, 1])
                .with_bias(false)
                .init(device)
        };
        Cbam {
            fc1: fc(channels, rd),
            fc2: fc(rd, channels),
            spatial: Conv2dConfig::new([2, 1], [7, 7])
                .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
                .with_bias(false)
                .init(device),
        }
    }

    /// Applies channel then spatial attention.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let mlp = |t: Tensor<4>| self.fc2.forward(relu(self.fc1.forward(t)));
        let avg = adaptive_avg_pool2d(x.clone(), [1, 1]);
        let max = x
            .clone()
            .reshape([n, c, h * w])
            .max_dim(2)
            .reshape([n, c, 1, 1]);
        let x = x * sigmoid(mlp(avg) + mlp(max));
        let pooled = Tensor::cat(vec![x.clone().mean_dim(1), x.clone().max_dim(1)], 1);
        let s = sigmoid(self.spatial.forward(pooled));
        x * s
    }
}

/// Builds the attention modules of `kind` as the pair of optional fields blocks carry (`se`,
/// `cbam`): SE's tensors carry timm's names (`se.fc1`, `se.fc2`). CBAM's do not
/// (`cbam.fc1`, `cbam.fc2`, `cbam.spatial`; timm's `se.channel.*` / `se.spatial.conv.*`, and
/// timm adds a BatchNorm after the 7x7 spatial conv that the CBAM paper does not have), so
/// timm CBAM weights do not load unchanged.
pub fn attention(
    kind: AttentionKind,
    channels: usize,
    device: &Device,
) -> (Option<SqueezeExcite>, Option<Cbam>) {
    match kind {
        AttentionKind::None => (None, None),
        AttentionKind::Se => (Some(SqueezeExcite::new(channels, device)), None),
        AttentionKind::Cbam => (None, Some(Cbam::new(channels, device))),
    }
}

/// Applies whichever attention is present.
pub fn apply_attention(se: &Option<SqueezeExcite>, cbam: &Option<Cbam>, x: Tensor<4>) -> Tensor<4> {
    let x = match se {
        Some(se) => se.forward(x),
        None => x,
    };
    match cbam {
        Some(cbam) => cbam.forward(x),
        None => x,
    }
}

/// Multiply-accumulates of the attention present, for `c` channels at `h` x `w`.
pub fn attention_macs(
    se: &Option<SqueezeExcite>,
    cbam: &Option<Cbam>,
    c: usize,
    h: usize,
    w: usize,
) -> u64 {
    let rd = reduced_channels(c) as u64;
    let c = c as u64;
    let mut macs = 0;
    if se.is_some() {
        macs += 2 * c * rd;
    }
    if cbam.is_some() {
        macs += 4 * c * rd + (h * w) as u64 * 2 * 49;
    }
    macs
}

#[cfg(test)]
mod tests {
    use super::reduced_channels;

    #[test]
    fn reduction_matches_timm() {
        assert_eq!(reduced_channels(256), 16);
        assert_eq!(reduced_channels(2048), 128);
        assert_eq!(reduced_channels(64), 8);
    }
}
