//! Multi-scale features: every stage's feature map, as a detection or segmentation head (FPN,
//! U-Net decoder) reads it. The interface follows timm's `features_only` models:
//!
//! - feature levels are numbered as timm numbers a ResNet's `out_indices`: level 0 is the
//!   stem's convolution + BN-ReLU *before* its max-pool (timm's `act1`), level i (1..=n) the
//!   output of stage i (`layer{i}`). On an ImageNet stem the reductions (strides) are
//!   2, 4, 8, 16, 32; on a CIFAR stem 1, 1, 2, 4, 8;
//! - the last level has the network's final BN-ReLU applied where it has one (pre-activation
//!   nets, DenseNet's `norm5`), so it equals [`Net::forward_features`]; the others are the raw
//!   stage outputs (a DenseNet stage's concatenation, before the next transition);
//! - [`NetConfig::feature_info`] gives each level's channels and reduction without running
//!   the network (timm's `feature_info.channels()` / `.reduction()`);
//! - [`Net::forward_multi_scale`] returns the levels listed in `out_indices` (timm's default
//!   is every level; a typical FPN asks for `[1, 2, 3, 4]`, strides 4 to 32).
//!
//! ```no_run
//! use densum::{zoo, Net, Device, Tensor};
//! let spec = zoo::resolve("resnet50", &zoo::ModelOptions::default()).unwrap();
//! let device = Device::default();
//! let net = Net::new(&spec.config, &device);
//! let info = spec.config.feature_info(); // channels 64, 256, 512, 1024, 2048
//! let x = Tensor::<4>::zeros([1, 3, 224, 224], &device);
//! let maps = net.forward_multi_scale(x, &[1, 2, 3, 4]).unwrap(); // 56x56 ... 7x7
//! ```

use burn::tensor::Tensor;
use serde::Serialize;

use crate::block::conv_macs;
use crate::error::{DensumError, Result};
use crate::net::{Net, NetConfig, StemKind};
use crate::weights::NameScheme;

/// One feature level (timm's `feature_info` entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeatureInfo {
    /// Level number, as `out_indices` name it.
    pub index: usize,
    /// Where it is taken: `stem` or `layer{i}`.
    pub module: String,
    /// Channels.
    pub num_chs: usize,
    /// Input side over feature side (the product of the strides before it).
    pub reduction: usize,
}

impl NetConfig {
    /// Channels and reductions of every feature level, level 0 (the stem) first.
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        // The ImageNet stem's convolution and its max-pool both have stride 2.
        let stem_stride = match self.stem {
            StemKind::Imagenet => 2,
            StemKind::Cifar => 1,
        };
        let channels = self.stage_channels();
        let mut out = vec![FeatureInfo {
            index: 0,
            module: "stem".into(),
            num_chs: self.stem_channels,
            reduction: stem_stride,
        }];
        let mut reduction = stem_stride * stem_stride;
        for (i, st) in self.stages.iter().enumerate() {
            reduction *= st.stride;
            out.push(FeatureInfo {
                index: i + 1,
                module: format!("layer{}", i + 1),
                num_chs: channels[i + 1],
                reduction,
            });
        }
        out
    }
}

impl Net {
    /// Number of feature levels: the stem and one per stage.
    pub fn feature_levels(&self) -> usize {
        self.layers.len() + 1
    }

    /// The level a layer name denotes: `stem`, `layer1`..`layer{n}`, and for DenseNet-family
    /// networks also torchvision's `denseblock1`..`denseblock{n}` (also with its `features.`
    /// prefix). Errors name the layer and list the valid names.
    pub fn feature_level(&self, name: &str) -> Result<usize> {
        let n = self.layers.len();
        let dense = NameScheme::of(self) == NameScheme::DenseNet;
        let stage = |prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|s| (1..=n).contains(s))
        };
        let found = match name {
            "stem" => Some(0),
            _ => stage("layer").or_else(|| {
                dense
                    .then(|| stage("denseblock").or_else(|| stage("features.denseblock")))
                    .flatten()
            }),
        };
        found.ok_or_else(|| {
            let family = if dense {
                format!(", denseblock1..denseblock{n}")
            } else {
                String::new()
            };
            DensumError::Config(format!(
                "unknown layer `{name}`: this network's feature levels are stem, layer1..layer{n}{family}"
            ))
        })
    }

    /// Feature levels `0..=last` of a batch `x` (see the module documentation).
    pub fn forward_levels(&self, x: Tensor<4>, last: usize) -> Vec<Tensor<4>> {
        let n = self.layers.len();
        let mut out = vec![self.forward_stem_unpooled(x)];
        for (i, stage) in self.layers.iter().enumerate().take(last) {
            let input = match i {
                0 => self.forward_stem_pool(out[0].clone()),
                _ => out[i].clone(),
            };
            let y = stage.forward(input);
            out.push(if i + 1 == n {
                self.forward_final_norm(y)
            } else {
                y
            });
        }
        out
    }

    /// The feature maps of the levels in `out_indices`, in that order (timm's
    /// `features_only` forward); an index past the last level is an error.
    pub fn forward_multi_scale(
        &self,
        x: Tensor<4>,
        out_indices: &[usize],
    ) -> Result<Vec<Tensor<4>>> {
        let levels = self.feature_levels();
        if let Some(bad) = out_indices.iter().find(|&&i| i >= levels) {
            return Err(DensumError::Config(format!(
                "out_indices: {bad} is not a feature level (this network has levels 0..={})",
                levels - 1
            )));
        }
        let Some(&last) = out_indices.iter().max() else {
            return Ok(Vec::new());
        };
        let all = self.forward_levels(x, last);
        Ok(out_indices.iter().map(|&i| all[i].clone()).collect())
    }

    /// Logits from feature level `level`'s map: the rest of the stages, the final BN-ReLU
    /// (unless `level` is the last, which already has it) and the head.
    pub fn forward_from_level(&self, level: usize, feature: Tensor<4>) -> Tensor<2> {
        let n = self.layers.len();
        if level >= n {
            return self.forward_head(feature);
        }
        let mut x = match level {
            0 => self.forward_stem_pool(feature),
            _ => feature,
        };
        for stage in &self.layers[level..] {
            x = stage.forward(x);
        }
        self.forward_head(self.forward_final_norm(x))
    }
}

impl Net {
    /// `[C, H, W]` of every feature level for one `h` x `w` input, from the layers' shapes
    /// alone (nothing runs).
    pub fn feature_shapes(&self, h: usize, w: usize) -> Vec<[usize; 3]> {
        let (_, oh, ow) = conv_macs(&self.conv1, h, w);
        let mut out = vec![[self.conv1.weight.dims()[0], oh, ow]];
        let (_, mut shape) = self.stem_macs(h, w);
        for stage in &self.layers {
            shape = stage.macs(shape).1;
            out.push(shape);
        }
        out
    }
}
