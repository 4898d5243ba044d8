//! DelugeNet (Kuen et al. 2017): pre-activation bottleneck composite layers of
//! equal width within a block ([`BlockKind::PreActBottleneck`]), each reading a cross-layer
//! depthwise combination of every earlier output of its block ([`ConnectKind::Deluge`]),
//! with transitions of strided depthwise 3x3 + conv1x1 between blocks
//! ([`TransitionKind::Deluge`]; see there why not a full 3x3).
//!
//! Widths (the paper gives only parameter totals): blocks of C, 2C, 4C channels with
//! bottleneck width C/4, C = 132 for DelugeNet-146 and -218 and C = 232 for
//! Wide-DelugeNet-146. One C serves both depths because the difference of the two targets
//! (3.3M for 8 more layers per block) fixes the cost of a layer; C = 132 lands 146 and 218
//! within 1.5% of 6.7M and 10.0M (tests/params.rs), and C = 232 within 0.5% of 20.2M. The
//! stem is a bare 3x3 convolution to C channels (pre-activation CIFAR stem), the head
//! BN-ReLU, global average pool, linear.

use super::{Arch, Dataset, ModelEntry};
use crate::block::BlockKind;
use crate::connect::{ConnectKind, TransitionConfig, TransitionKind};

/// A CIFAR DelugeNet with `layers` composite layers per block and first-block width `c`.
pub fn delugenet(layers: usize, c: usize) -> Arch {
    Arch {
        base_planes: c / 4,
        stem_channels: c,
        stem_per_plane: Some(4),
        connect: ConnectKind::Deluge,
        transition: Some(TransitionConfig {
            kind: TransitionKind::Deluge,
            compression: 1.0,
        }),
        default_dataset: Dataset::Cifar10,
        ..Arch::resnet(BlockKind::PreActBottleneck, &[layers, layers, layers])
    }
}

/// (name, depth, composite layers per block, C).
pub const DELUGENETS: &[(&str, usize, usize, usize)] = &[
    ("delugenet146", 146, 16, 132),
    ("delugenet218", 218, 24, 132),
    ("wide_delugenet146", 146, 16, 232),
];

/// Registers this paper's variants.
pub fn register(r: &mut Vec<ModelEntry>) {
    for &(name, depth, n, c) in DELUGENETS {
        let wide = if name.starts_with("wide") {
            "Wide-"
        } else {
            ""
        };
        r.push(ModelEntry::new(
            name,
            "delugenet",
            format!(
                "CIFAR {wide}DelugeNet-{depth}: 3 blocks of {n} composite layers, widths {c}/{}/{}, cross-layer depthwise inputs",
                2 * c,
                4 * c
            ),
            delugenet(n, c),
        ));
    }
}
