//! The papers' named variants and the registry that builds them by name.
//!
//! One file per paper: [`resnet`] (ResNet, pre-activation, ResNeXt, Wide ResNet, SE, CBAM),
//! [`dsnet`] (dense weighted normalised shortcuts), [`rgsnet`] (ReLU + GroupNorm
//! shortcuts), [`densenet`] (concatenation, transitions), [`res2net`] (multi-scale
//! bottlenecks, and Dense2Net), [`delugenet`] (cross-layer depthwise combinations). Each
//! contributes [`ModelEntry`]s: a name, a one-line description and an [`Arch`], the paper's
//! choice of block and connectivity, and checks the options that belong to it.
//! [`build_config`] resolves an entry and the user's [`ModelOptions`] into a [`NetConfig`],
//! within the bounds of [`limits`].

pub mod delugenet;
pub mod densenet;
pub mod dsnet;
pub mod limits;
pub mod res2net;
pub mod resnet;
pub mod rgsnet;

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use densum_data::normalize::Normalize;

use crate::block::{BlockConfig, BlockKind, InnerShortcut};
use crate::connect::{ConnectKind, DsInit, DsWeightKind, RgVariant, TransitionConfig};
use crate::error::{DensumError, Result};
use crate::net::{NetConfig, StageConfig, StemKind};
use crate::nn::{AttentionKind, NormKind};

/// A dataset's conventions: classes, input size, stem, normalisation (torchvision's ImageNet
/// constants; the usual per-dataset ones for CIFAR and SVHN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    /// ImageNet: 1000 classes, 224 px, ImageNet stem.
    Imagenet,
    /// CIFAR-10: 10 classes, 32 px, CIFAR stem.
    Cifar10,
    /// CIFAR-100: 100 classes, 32 px, CIFAR stem.
    Cifar100,
    /// SVHN: 10 classes, 32 px, CIFAR stem.
    Svhn,
}

impl Dataset {
    /// Parses `imagenet`, `cifar10`, `cifar100` or `svhn`.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase())).ok()
    }

    /// Number of classes.
    pub fn num_classes(self) -> usize {
        match self {
            Dataset::Imagenet => 1000,
            Dataset::Cifar100 => 100,
            Dataset::Cifar10 | Dataset::Svhn => 10,
        }
    }

    /// Input side in pixels.
    pub fn input_size(self) -> usize {
        match self {
            Dataset::Imagenet => 224,
            _ => 32,
        }
    }

    /// The stem used at this input size.
    pub fn stem(self) -> StemKind {
        match self {
            Dataset::Imagenet => StemKind::Imagenet,
            _ => StemKind::Cifar,
        }
    }

    /// Per-channel (mean, std) of RGB pixels scaled to [0, 1]: densum-data's constants,
    /// which its loaders apply.
    pub fn normalization(self) -> ([f32; 3], [f32; 3]) {
        let n = match self {
            Dataset::Imagenet => Normalize::IMAGENET,
            Dataset::Cifar10 => Normalize::CIFAR10,
            Dataset::Cifar100 => Normalize::CIFAR100,
            Dataset::Svhn => Normalize::SVHN,
        };
        (n.mean, n.std)
    }

    /// The dataset's name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Imagenet => "imagenet",
            Dataset::Cifar10 => "cifar10",
            Dataset::Cifar100 => "cifar100",
            Dataset::Svhn => "svhn",
        }
    }
}

/// Options a user may set on any model; `None` keeps the model's default. Serialised into
/// weight files' metadata, so a file says what it holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOptions {
    /// Dataset: sets stem, classes, input size and normalisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Dataset>,
    /// Stem override.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stem: Option<StemKind>,
    /// Width multiplier (every channel count; base 64 · w).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<f64>,
    /// Classifier outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    /// Input side in pixels (for MACs and preprocessing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_size: Option<usize>,
    /// Largest drop-path rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_path: Option<f64>,
    /// Dropout before the classifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// Dropout between a Wide ResNet block's convolutions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_dropout: Option<f64>,
    /// Zero-init the last BN of each branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_init_last: Option<bool>,
    /// ResNeXt cardinality.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cardinality: Option<usize>,
    /// ResNeXt base width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_width: Option<usize>,
    /// Block attention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<AttentionKind>,
    /// DSNet: the normalisation N.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ds_norm: Option<NormKind>,
    /// DSNet: how shortcuts are weighted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ds_weight: Option<DsWeightKind>,
    /// DSNet: initial weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ds_init: Option<DsInit>,
    /// RGSNet: which shortcut design (b, res, rbs, gs, rgb).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rg_variant: Option<RgVariant>,
    /// Blocks (or dense layers) per stage, replacing the model's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_config: Option<Vec<usize>>,
    /// DenseNet: growth rate k (channels each dense layer adds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth_rate: Option<usize>,
    /// DenseNet: channels of the stem (torchvision's `num_init_features`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_features: Option<usize>,
    /// DenseNet: bottleneck layers (B), BN-ReLU-conv1x1 (4k) before the 3x3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bottleneck: Option<bool>,
    /// DenseNet: transition compression θ in (0, 1] (C: 0.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<f64>,
    /// DenseNet: recompute concatenations and first BN-ReLUs in the backward pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_efficient: Option<bool>,
    /// Res2Net and Dense2Net: scale s (number of channel groups), at least 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<usize>,
}

/// A paper's architecture: the choices a registry entry fixes.
#[derive(Clone, Debug, PartialEq)]
pub struct Arch {
    /// Block kind.
    pub block: BlockKind,
    /// Blocks per stage.
    pub layers: Vec<usize>,
    /// Planes of the first stage at width 1 (64 for ImageNet-style, 16 for CIFAR ResNets).
    pub base_planes: usize,
    /// Stem channels at width 1.
    pub stem_channels: usize,
    /// Cardinality.
    pub cardinality: usize,
    /// Base width.
    pub base_width: usize,
    /// Connectivity.
    pub connect: ConnectKind,
    /// Inner shortcut of stride-1 bottlenecks.
    pub inner: Option<InnerShortcut>,
    /// Attention.
    pub attention: AttentionKind,
    /// 2GN ablation.
    pub branch_gn: bool,
    /// Wide ResNet dropout.
    pub block_dropout: f64,
    /// The dataset assumed when none is given.
    pub default_dataset: Dataset,
    /// Transitions between stages (DenseNet).
    pub transition: Option<TransitionConfig>,
    /// Every stage has `base_planes` planes (DenseNet's growth rate) instead of doubling.
    pub constant_planes: bool,
    /// The stem has this many times the first stage's planes (DenseNet-BC's 2k, DelugeNet's
    /// first block width), following the growth rate and the width multiplier; `None`: the
    /// stem has `stem_channels` scaled by the width.
    pub stem_per_plane: Option<usize>,
    /// Res2Net's scale (1: no split convolution).
    pub scale: usize,
}

impl Arch {
    /// A post-activation ResNet of `block` with `layers`, ImageNet defaults.
    pub fn resnet(block: BlockKind, layers: &[usize]) -> Self {
        Arch {
            block,
            layers: layers.to_vec(),
            base_planes: 64,
            stem_channels: 64,
            cardinality: 1,
            base_width: 64,
            connect: ConnectKind::Residual,
            inner: None,
            attention: AttentionKind::None,
            branch_gn: false,
            block_dropout: 0.0,
            default_dataset: Dataset::Imagenet,
            transition: None,
            constant_planes: false,
            stem_per_plane: None,
            scale: 1,
        }
    }

    /// The same architecture with another connectivity.
    pub fn with_connect(mut self, connect: ConnectKind) -> Self {
        self.connect = connect;
        self
    }

    /// The same architecture with an inner shortcut.
    pub fn with_inner(mut self, inner: InnerShortcut) -> Self {
        self.inner = Some(inner);
        self
    }
}

/// A registered model.
#[derive(Clone, Debug)]
pub struct ModelEntry {
    /// Registry name.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// The paper this variant comes from.
    pub family: &'static str,
    /// Its architecture.
    pub arch: Arch,
}

impl ModelEntry {
    /// A new entry.
    pub fn new(
        name: impl Into<String>,
        family: &'static str,
        description: impl Into<String>,
        arch: Arch,
    ) -> Self {
        ModelEntry {
            name: name.into(),
            description: description.into(),
            family,
            arch,
        }
    }
}

/// Every registered model, in registration order.
pub fn registry() -> &'static [ModelEntry] {
    static REGISTRY: OnceLock<Vec<ModelEntry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Vec::new();
        resnet::register(&mut r);
        dsnet::register(&mut r);
        rgsnet::register(&mut r);
        densenet::register(&mut r);
        res2net::register(&mut r);
        delugenet::register(&mut r);
        r
    })
}

/// The entry named `name`, or an error listing the closest names.
pub fn find(name: &str) -> Result<&'static ModelEntry> {
    let key = name.to_ascii_lowercase().replace('-', "_");
    if let Some(why) = dsnet::explain(&key) {
        return Err(DensumError::option(name, why));
    }
    registry().iter().find(|e| e.name == key).ok_or_else(|| {
        let mut scored: Vec<(usize, &str)> = registry()
            .iter()
            .map(|e| (edit_distance(&key, &e.name), e.name.as_str()))
            .collect();
        scored.sort();
        DensumError::UnknownModel {
            name: name.to_string(),
            suggestions: scored.iter().take(5).map(|(_, n)| n.to_string()).collect(),
        }
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A fully resolved model: its name, options, dataset and network configuration.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// Registry name.
    pub name: String,
    /// The options as given.
    pub options: ModelOptions,
    /// The dataset whose conventions apply.
    pub dataset: Dataset,
    /// Input side in pixels.
    pub input_size: usize,
    /// The network.
    pub config: NetConfig,
}

/// Resolves `name` with `options` into a [`ModelSpec`], checking every option.
pub fn resolve(name: &str, options: &ModelOptions) -> Result<ModelSpec> {
    let entry = find(name)?;
    let config = build_config(entry, options)?;
    let dataset = options.dataset.unwrap_or(entry.arch.default_dataset);
    let input_size = options.input_size.unwrap_or(dataset.input_size());
    check_input_size(&entry.name, &config, input_size)?;
    Ok(ModelSpec {
        name: entry.name.clone(),
        options: options.clone(),
        dataset,
        input_size,
        config,
    })
}

fn check_input_size(model: &str, cfg: &NetConfig, size: usize) -> Result<()> {
    if size > limits::MAX_INPUT_SIZE {
        return Err(DensumError::option(
            model,
            format!(
                "input size {size} is larger than {} pixels",
                limits::MAX_INPUT_SIZE
            ),
        ));
    }
    let mut s = size;
    if cfg.stem == StemKind::Imagenet {
        if s < 4 {
            return Err(DensumError::option(
                model,
                format!("input size {size} is too small for the ImageNet stem"),
            ));
        }
        s = (s - 1) / 2 + 1;
        s = (s - 1) / 2 + 1;
    }
    for (i, st) in cfg.stages.iter().enumerate() {
        let pooled = i > 0
            && st.stride != 1
            && cfg
                .transition
                .is_some_and(|t| t.kind == crate::connect::TransitionKind::DenseNet);
        s = match s {
            0 => 0,
            // DenseNet's transition pools (floor); strided convolutions round up.
            _ if pooled => s / st.stride,
            _ => (s - 1) / st.stride + 1,
        };
    }
    if size == 0 || s == 0 {
        return Err(DensumError::option(
            model,
            format!("input size {size} leaves no pixels after the stages"),
        ));
    }
    Ok(())
}

/// Builds the [`NetConfig`] of `entry` with `options`: the bounds of [`limits`] first, then
/// each family's own options and checks (in its module), then the shared shape.
pub fn build_config(entry: &ModelEntry, o: &ModelOptions) -> Result<NetConfig> {
    let name = entry.name.as_str();
    let arch = &entry.arch;
    let bad = |m: String| DensumError::option(name, m);
    limits::check_options(o).map_err(bad)?;
    let width = o.width.unwrap_or(1.0);
    let scaled = |c: usize| ((c as f64 * width).round() as usize).max(1);
    let dataset = o.dataset.unwrap_or(arch.default_dataset);
    let densenet::Shape {
        block,
        transition,
        layers,
        base_planes,
    } = densenet::resolve_options(arch, o, &bad)?;
    let scale = res2net::resolve_scale(arch, block, o, &bad)?;
    let (cardinality, base_width) = resnet::resolve_groups(arch, block, scale, o, &bad)?;
    // An explicit growth rate is taken as given; the model's own planes follow the width.
    let base = if o.growth_rate.is_some() {
        base_planes
    } else {
        scaled(base_planes)
    };
    res2net::check_dense2net_split(block, scale, base, cardinality, &bad)?;
    resnet::check_group_width(arch, base, base_width, &bad)?;
    let (connect, inner) = dsnet::resolve_options(arch.connect, arch.inner, o, &bad)?;
    let connect = rgsnet::resolve_variant(connect, o, &bad)?;
    let attention = o.attention.unwrap_or(arch.attention);
    resnet::check_block_options(arch, block, scale, attention, inner, o, &bad)?;

    let stem = o.stem.unwrap_or(dataset.stem());
    let strides = std::iter::once(1).chain(std::iter::repeat(2));
    let stages = layers
        .iter()
        .zip(strides)
        .enumerate()
        .map(|(i, (&blocks, stride))| StageConfig {
            blocks,
            planes: if arch.constant_planes {
                base
            } else {
                base << i
            },
            stride,
        })
        .collect();
    let preact = block.is_preact();
    let cfg = NetConfig {
        stem,
        stem_channels: match (o.init_features, arch.stem_per_plane) {
            (Some(c), _) => c,
            (None, Some(f)) => f * base,
            (None, None) => scaled(arch.stem_channels),
        },
        stem_norm: !(preact && stem == StemKind::Cifar),
        stages,
        block: BlockConfig {
            kind: block,
            cardinality,
            base_width,
            attention,
            inner,
            branch_gn: arch.branch_gn,
            dropout: o.block_dropout.unwrap_or(arch.block_dropout),
            zero_init_last: o.zero_init_last.unwrap_or(false),
            gn_base: ((32.0 * width).round() as usize).max(1),
            scale,
            memory_efficient: o.memory_efficient.unwrap_or(false),
        },
        connect,
        transition,
        final_norm: preact,
        num_classes: o.num_classes.unwrap_or(dataset.num_classes()),
        drop_path: o.drop_path.unwrap_or(0.0),
        head_dropout: o.dropout.unwrap_or(0.0),
    };
    limits::check_channels(&cfg).map_err(bad)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = registry().iter().map(|e| e.name.as_str()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn unknown_model_suggests_close_names() {
        let err = find("dsnet5O").unwrap_err().to_string();
        assert!(err.contains("dsnet50"), "{err}");
    }

    #[test]
    fn bad_densenet_and_res2net_options_are_rejected() {
        let e = |name: &str, o: ModelOptions| resolve(name, &o).unwrap_err().to_string();
        let growth = e(
            "densenet121",
            ModelOptions {
                growth_rate: Some(0),
                ..Default::default()
            },
        );
        assert!(
            growth.contains("growth_rate must be at least 1"),
            "{growth}"
        );
        for c in [0.0, -0.5, 1.5, f64::NAN] {
            let msg = e(
                "densenet_bc100_k12",
                ModelOptions {
                    compression: Some(c),
                    ..Default::default()
                },
            );
            assert!(msg.contains("compression must be in (0, 1]"), "{msg}");
        }
        for name in ["res2net50_26w_4s", "dense2net121"] {
            let msg = e(
                name,
                ModelOptions {
                    scale: Some(1),
                    ..Default::default()
                },
            );
            assert!(msg.contains("scale must be at least 2"), "{msg}");
        }
        let msg = e(
            "resnet50",
            ModelOptions {
                growth_rate: Some(12),
                ..Default::default()
            },
        );
        assert!(msg.contains("DenseNet models only"), "{msg}");
        let msg = e(
            "resnet50",
            ModelOptions {
                scale: Some(4),
                ..Default::default()
            },
        );
        assert!(msg.contains("Res2Net"), "{msg}");
        let msg = e(
            "densenet121",
            ModelOptions {
                block_config: Some(vec![6, 0, 24]),
                ..Default::default()
            },
        );
        assert!(msg.contains("block_config"), "{msg}");
        // 16 px: 4 after the stem, then 2 and 1, and DenseNet's last transition pools to 0.
        let msg = e(
            "densenet121",
            ModelOptions {
                input_size: Some(16),
                ..Default::default()
            },
        );
        assert!(msg.contains("leaves no pixels"), "{msg}");
        let msg = e(
            "dense2net121",
            ModelOptions {
                scale: Some(3),
                ..Default::default()
            },
        );
        assert!(msg.contains("must divide"), "{msg}");
        for s in [2, 4, 8] {
            let spec = resolve(
                "dense2net121",
                &ModelOptions {
                    scale: Some(s),
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(spec.config.block.scale, s);
        }
        // Valid edge values resolve.
        for c in [1.0, 0.01] {
            resolve(
                "densenet121",
                &ModelOptions {
                    compression: Some(c),
                    ..Default::default()
                },
            )
            .unwrap();
        }
    }

    #[test]
    fn options_that_do_not_apply_are_rejected() {
        let e = |name: &str, o: ModelOptions| resolve(name, &o).unwrap_err().to_string();
        assert!(
            e(
                "resnet50",
                ModelOptions {
                    width: Some(0.0),
                    ..Default::default()
                }
            )
            .contains("width")
        );
        assert!(
            e(
                "resnet18",
                ModelOptions {
                    cardinality: Some(4),
                    ..Default::default()
                }
            )
            .contains("basic blocks")
        );
        assert!(
            e(
                "resnet50",
                ModelOptions {
                    ds_norm: Some(NormKind::Bn),
                    ..Default::default()
                }
            )
            .contains("DSNet")
        );
        assert!(
            e(
                "resnext50_32x4d",
                ModelOptions {
                    width: Some(0.01),
                    ..Default::default()
                }
            )
            .contains("group width")
        );
        assert!(
            e(
                "resnet50",
                ModelOptions {
                    input_size: Some(1),
                    ..Default::default()
                }
            )
            .contains("input size")
        );
    }
}
