//! DenseNet (Huang et al. 2017): dense layers ([`BlockKind::DenseLayer`], or
//! [`BlockKind::DenseBottleneck`] for B) joined by concatenation ([`ConnectKind::Concat`]),
//! with BN-ReLU-conv1x1-avgpool transitions between stages (compression θ, C: 0.5).
//! Stage planes are the growth rate k in every stage.

use super::{Arch, Dataset, ModelEntry, ModelOptions};
use crate::block::BlockKind;
use crate::connect::{ConnectKind, TransitionConfig, TransitionKind};
use crate::error::{DensumError, Result};

/// ImageNet DenseNet-BC (k = 32): (depth, layers per block).
pub const IMAGENET: &[(usize, [usize; 4])] = &[
    (121, [6, 12, 24, 16]),
    (169, [6, 12, 32, 32]),
    (201, [6, 12, 48, 32]),
    (264, [6, 12, 64, 48]),
];

/// CIFAR DenseNets: (depth L, growth rate k, BC).
pub const CIFAR: &[(usize, usize, bool)] = &[
    (40, 12, false),
    (100, 12, false),
    (100, 24, false),
    (100, 12, true),
    (250, 24, true),
    (190, 40, true),
];

/// A DenseNet of `layers` dense layers per block with growth rate `k`; `bc` selects
/// bottleneck layers and compression 0.5 (stem 2k), otherwise plain layers, θ = 1 and a
/// 16-channel stem.
pub fn densenet(layers: &[usize], k: usize, bc: bool, dataset: Dataset) -> Arch {
    Arch {
        base_planes: k,
        stem_channels: 16,
        connect: ConnectKind::Concat,
        default_dataset: dataset,
        transition: Some(TransitionConfig {
            kind: TransitionKind::DenseNet,
            compression: if bc { 0.5 } else { 1.0 },
        }),
        constant_planes: true,
        stem_per_plane: bc.then_some(2),
        ..Arch::resnet(
            if bc {
                BlockKind::DenseBottleneck
            } else {
                BlockKind::DenseLayer
            },
            layers,
        )
    }
}

/// The CIFAR DenseNet of depth `l`: three equal blocks of (L-4)/3 plain layers, or
/// (L-4)/6 bottleneck layers with BC (each counts two convolutions).
pub fn cifar_densenet(l: usize, k: usize, bc: bool) -> Arch {
    let n = if bc { (l - 4) / 6 } else { (l - 4) / 3 };
    densenet(&[n, n, n], k, bc, Dataset::Cifar10)
}

/// The network-shape choices a model's options resolve to.
pub(crate) struct Shape {
    /// Block kind (the bottleneck option switches dense layers).
    pub block: BlockKind,
    /// Transitions.
    pub transition: Option<TransitionConfig>,
    /// Blocks per stage.
    pub layers: Vec<usize>,
    /// Planes of the first stage before the width multiplier (the growth rate when given).
    pub base_planes: usize,
}

/// Applies the DenseNet options (`growth_rate`, `init_features`, `bottleneck`,
/// `compression`, `memory_efficient`), refusing them on other models, and `block_config`,
/// which every model accepts.
pub(crate) fn resolve_options(
    arch: &Arch,
    o: &ModelOptions,
    bad: &dyn Fn(String) -> DensumError,
) -> Result<Shape> {
    let dense = arch.block.is_dense();
    let dense_opts = [
        ("growth_rate", o.growth_rate.is_some()),
        ("init_features", o.init_features.is_some()),
        ("bottleneck", o.bottleneck.is_some()),
        ("compression", o.compression.is_some()),
        ("memory_efficient", o.memory_efficient.is_some()),
    ];
    if let Some((name, _)) = dense_opts.iter().find(|(_, set)| *set && !dense) {
        return Err(bad(format!("{name} applies to DenseNet models only")));
    }
    // Ranges (growth rate, stem, compression, block_config) are checked in `limits`.
    let layers = o
        .block_config
        .clone()
        .unwrap_or_else(|| arch.layers.clone());
    let block = match o.bottleneck {
        Some(true) => BlockKind::DenseBottleneck,
        Some(false) => BlockKind::DenseLayer,
        None => arch.block,
    };
    let transition = arch.transition.map(|t| TransitionConfig {
        compression: o.compression.unwrap_or(t.compression),
        ..t
    });
    Ok(Shape {
        block,
        transition,
        layers,
        base_planes: o.growth_rate.unwrap_or(arch.base_planes),
    })
}

/// Registers this paper's variants.
pub fn register(r: &mut Vec<ModelEntry>) {
    const F: &str = "densenet";
    for &(depth, layers) in IMAGENET {
        r.push(ModelEntry::new(
            format!("densenet{depth}"),
            F,
            format!("DenseNet-BC-{depth} (ImageNet, k = 32, blocks {layers:?})"),
            densenet(&layers, 32, true, Dataset::Imagenet),
        ));
    }
    for &(l, k, bc) in CIFAR {
        let (name, label) = if bc {
            (format!("densenet_bc{l}_k{k}"), "DenseNet-BC")
        } else {
            (format!("densenet{l}_k{k}"), "DenseNet")
        };
        r.push(ModelEntry::new(
            name,
            F,
            format!("CIFAR {label} (L = {l}, k = {k})"),
            cifar_densenet(l, k, bc),
        ));
    }
}
