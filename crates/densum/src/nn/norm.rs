//! Normalisation kinds, and the parameter-free normalisations used by dense shortcuts.

use burn::module::{Flag, Module, Param, RunningState};
use burn::nn::{BatchNorm, GroupNorm, GroupNormConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::nn::conv::batch_norm;
use crate::nn::fast::norm::group_norm_forward;

/// Which normalisation a shortcut uses (the normalisation ablation of DSNet, Zhang et al.).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// GroupNorm with G groups ([`gn_groups`]); the default.
    Gn,
    /// LayerNorm over (C, H, W): GroupNorm with one group.
    Ln,
    /// InstanceNorm: GroupNorm with one group per channel.
    In,
    /// BatchNorm (running statistics, no affine parameters).
    Bn,
    /// No normalisation.
    None,
}

impl NormKind {
    /// Parses `gn`, `ln`, `in`, `bn` or `none`.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase())).ok()
    }
}

/// GroupNorm's group count for `channels`: `base` (32 · width), or the largest divisor of
/// `channels` below it when `base` does not divide the channel count.
pub fn gn_groups(channels: usize, base: usize) -> usize {
    let base = base.clamp(1, channels.max(1));
    (1..=base)
        .rev()
        .find(|g| channels.is_multiple_of(*g))
        .unwrap_or(1)
}

/// BatchNorm without affine parameters: what DSNet's "bn" ablation normalises with, since
/// affine parameters in front of a learned dense weight would be redundant.
#[derive(Module, Debug)]
pub struct FreeBatchNorm {
    /// Running mean.
    pub running_mean: RunningState<Tensor<1>>,
    /// Running variance.
    pub running_var: RunningState<Tensor<1>>,
    /// Whether batch statistics are used (training) or running ones.
    pub training: Param<Flag>,
    momentum: f64,
    epsilon: f64,
}

impl FreeBatchNorm {
    /// A fresh one for `channels` channels (mean 0, variance 1).
    pub fn new(channels: usize, device: &Device) -> Self {
        FreeBatchNorm {
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            training: Param::from_bool(true),
            momentum: 0.1,
            epsilon: 1e-5,
        }
    }

    /// Normalises `x` with batch statistics in training, running statistics otherwise.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let c = x.dims()[1];
        let device = x.device();
        let ones = Tensor::<1>::ones([c], &device);
        let zeros = Tensor::<1>::zeros([c], &device);
        if device.is_autodiff() && self.training.is_enabled() {
            let out = burn::tensor::module::batch_norm_train(x, ones, zeros, self.epsilon);
            let m = self.momentum;
            let mean = self.running_mean.value_sync().to_device(&device);
            let var = self.running_var.value_sync().to_device(&device);
            self.running_mean
                .update((mean * (1.0 - m) + out.mean.detach() * m).detach());
            self.running_var
                .update((var * (1.0 - m) + out.variance.detach() * m).detach());
            out.output
        } else {
            let mean = self.running_mean.value().to_device(&device);
            let var = self.running_var.value().to_device(&device);
            burn::tensor::module::batch_norm(x, ones, zeros, mean, var, self.epsilon)
        }
    }
}

/// A normalisation with no learned parameters (DSNet's N, Zhang et al.: affine parameters
/// would duplicate the dense shortcut's weights).
#[derive(Module, Debug)]
pub enum FreeNorm {
    /// GroupNorm without affine (also LayerNorm and InstanceNorm, by group count).
    Group(GroupNorm),
    /// BatchNorm without affine.
    Batch(FreeBatchNorm),
}

impl FreeNorm {
    /// The normalisation of `kind` for `channels`; `None` for [`NormKind::None`].
    pub fn new(kind: NormKind, channels: usize, gn_base: usize, device: &Device) -> Option<Self> {
        let group = |g: usize| {
            FreeNorm::Group(
                GroupNormConfig::new(g, channels)
                    .with_affine(false)
                    .init(device),
            )
        };
        match kind {
            NormKind::Gn => Some(group(gn_groups(channels, gn_base))),
            NormKind::Ln => Some(group(1)),
            NormKind::In => Some(group(channels)),
            NormKind::Bn => Some(FreeNorm::Batch(FreeBatchNorm::new(channels, device))),
            NormKind::None => None,
        }
    }

    /// Applies the normalisation.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            FreeNorm::Group(gn) => group_norm_forward(gn, x),
            FreeNorm::Batch(bn) => bn.forward(x),
        }
    }
}

/// Applies an optional parameter-free normalisation (`None` is the identity).
pub fn apply_free_norm(norm: &Option<FreeNorm>, x: Tensor<4>) -> Tensor<4> {
    match norm {
        Some(n) => n.forward(x),
        None => x,
    }
}

/// A normalisation with affine parameters, as RGSNet's shortcuts use (GroupNorm by default,
/// BatchNorm in the RBS ablation).
#[derive(Module, Debug)]
pub enum ShortcutNorm {
    /// GroupNorm with affine parameters.
    Group(GroupNorm),
    /// BatchNorm with affine parameters.
    Batch(BatchNorm),
}

impl ShortcutNorm {
    /// GroupNorm (affine) with [`gn_groups`]'s group count.
    pub fn group(channels: usize, gn_base: usize, device: &Device) -> Self {
        ShortcutNorm::Group(
            GroupNormConfig::new(gn_groups(channels, gn_base), channels).init(device),
        )
    }

    /// BatchNorm (affine).
    pub fn batch(channels: usize, device: &Device) -> Self {
        ShortcutNorm::Batch(batch_norm(channels, false, device))
    }

    /// Applies the normalisation.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            // Burn's GroupNorm (the fast one is parameter-free only), except while tracing for
            // ONNX export, where it is composed of operations the exporter lowers.
            ShortcutNorm::Group(gn) => crate::nn::fast::norm::group_norm_forward(gn, x),
            ShortcutNorm::Batch(bn) => bn.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_spec() {
        assert_eq!(gn_groups(256, 32), 32);
        assert_eq!(gn_groups(64, 8), 8);
        assert_eq!(gn_groups(24, 16), 12);
        assert_eq!(gn_groups(10, 4), 2);
        assert_eq!(gn_groups(8, 0), 1);
    }

    #[test]
    fn norm_kind_parses() {
        assert_eq!(NormKind::parse("GN"), Some(NormKind::Gn));
        assert_eq!(NormKind::parse("none"), Some(NormKind::None));
        assert_eq!(NormKind::parse("xx"), None);
    }
}
