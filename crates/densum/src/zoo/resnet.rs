//! ResNet (He et al. 2016) and friends: pre-activation ResNet (He et al. 2016b), ResNeXt
//! (Xie et al. 2017), Wide ResNet (Zagoruyko & Komodakis 2016), SE (Hu et al. 2018) and CBAM
//! (Woo et al. 2018). All use ResNet's identity shortcut
//! ([`ConnectKind::Residual`](crate::connect::ConnectKind::Residual)). The checks of the block
//! options (groups, attention, inner shortcuts, block dropout) are here too.

use super::res2net::is_dense2net;
use super::{Arch, Dataset, ModelEntry, ModelOptions};
use crate::block::{BlockKind, InnerShortcut};
use crate::error::{DensumError, Result};
use crate::nn::AttentionKind;

/// ImageNet ResNet depths: (depth, block, blocks per stage) (He et al. 2016, Table 1).
pub const IMAGENET_DEPTHS: &[(usize, BlockKind, [usize; 4])] = &[
    (18, BlockKind::Basic, [2, 2, 2, 2]),
    (26, BlockKind::Bottleneck, [2, 2, 2, 2]),
    (34, BlockKind::Basic, [3, 4, 6, 3]),
    (38, BlockKind::Bottleneck, [3, 3, 3, 3]),
    (50, BlockKind::Bottleneck, [3, 4, 6, 3]),
    (62, BlockKind::Bottleneck, [3, 4, 10, 3]),
    (77, BlockKind::Bottleneck, [3, 4, 15, 3]),
    (101, BlockKind::Bottleneck, [3, 4, 23, 3]),
    (152, BlockKind::Bottleneck, [3, 8, 36, 3]),
    (200, BlockKind::Bottleneck, [3, 24, 36, 3]),
];

/// CIFAR ResNet depths 6n+2 (He et al. 2016, section 4.2).
pub const CIFAR_DEPTHS: &[usize] = &[20, 32, 44, 56, 110];

/// ImageNet ResNet of `depth` (bottleneck or basic per [`IMAGENET_DEPTHS`]).
pub fn imagenet_resnet(depth: usize) -> Option<Arch> {
    IMAGENET_DEPTHS
        .iter()
        .find(|(d, _, _)| *d == depth)
        .map(|(_, block, layers)| Arch::resnet(*block, layers))
}

/// CIFAR ResNet-(6n+2): 16-channel stem, three stages of n basic blocks with 16, 32, 64
/// channels.
pub fn cifar_resnet(depth: usize) -> Arch {
    let n = (depth - 2) / 6;
    Arch {
        base_planes: 16,
        stem_channels: 16,
        default_dataset: Dataset::Cifar10,
        ..Arch::resnet(BlockKind::Basic, &[n, n, n])
    }
}

/// Wide ResNet WRN-d-k for CIFAR: pre-activation basic blocks, (d-4)/6 per stage, widths
/// 16k, 32k, 64k, 16-channel stem.
pub fn wide_resnet(depth: usize, k: usize) -> Arch {
    let n = (depth - 4) / 6;
    Arch {
        base_planes: 16 * k,
        stem_channels: 16,
        default_dataset: Dataset::Cifar10,
        ..Arch::resnet(BlockKind::PreActBasic, &[n, n, n])
    }
}

/// CIFAR ResNeXt-29 Cxd: three stages of 3 bottlenecks, outputs 256, 512, 1024.
pub fn cifar_resnext(cardinality: usize, base_width: usize) -> Arch {
    Arch {
        cardinality,
        base_width,
        default_dataset: Dataset::Cifar10,
        ..Arch::resnet(BlockKind::Bottleneck, &[3, 3, 3])
    }
}

/// ImageNet ResNeXt of `depth` with `cardinality` x `base_width`.
pub fn resnext(depth: usize, cardinality: usize, base_width: usize) -> Option<Arch> {
    imagenet_resnet(depth).map(|a| Arch {
        cardinality,
        base_width,
        ..a
    })
}

/// The named ResNeXt variants: (name suffix, depth, C, d).
pub const RESNEXTS: &[(&str, usize, usize, usize)] = &[
    ("50_32x4d", 50, 32, 4),
    ("101_32x8d", 101, 32, 8),
    ("101_64x4d", 101, 64, 4),
];

/// The named CIFAR ResNeXt-29 variants: (C, d).
pub const CIFAR_RESNEXTS: &[(usize, usize)] = &[(8, 64), (16, 64)];

/// The named Wide ResNets: (depth, k).
pub const WIDE_RESNETS: &[(usize, usize)] = &[(28, 10), (16, 8), (40, 4), (16, 4), (22, 8)];

/// Registers this paper family's variants.
pub fn register(r: &mut Vec<ModelEntry>) {
    const F: &str = "resnet";
    for &(depth, block, _) in IMAGENET_DEPTHS {
        let arch = imagenet_resnet(depth).expect("listed depth");
        let kind = if block == BlockKind::Basic {
            "basic"
        } else {
            "bottleneck"
        };
        r.push(ModelEntry::new(
            format!("resnet{depth}"),
            F,
            format!("ResNet-{depth} ({kind} blocks)"),
            arch.clone(),
        ));
        if block == BlockKind::Bottleneck {
            for (prefix, att, label) in [
                ("se", AttentionKind::Se, "SE"),
                ("cbam", AttentionKind::Cbam, "CBAM"),
            ] {
                r.push(ModelEntry::new(
                    format!("{prefix}_resnet{depth}"),
                    F,
                    format!("{label}-ResNet-{depth}: {label} attention on every bottleneck branch"),
                    Arch {
                        attention: att,
                        ..arch.clone()
                    },
                ));
            }
        }
        let preact = Arch {
            block: if block == BlockKind::Basic {
                BlockKind::PreActBasic
            } else {
                BlockKind::PreActBottleneck
            },
            ..arch.clone()
        };
        if [18, 34, 50, 101, 152, 200].contains(&depth) {
            r.push(ModelEntry::new(
                format!("preact_resnet{depth}"),
                F,
                format!("pre-activation ResNet-{depth}"),
                preact,
            ));
        }
    }
    for &depth in CIFAR_DEPTHS {
        r.push(ModelEntry::new(
            format!("resnet{depth}"),
            F,
            format!(
                "CIFAR ResNet-{depth}: 3 stages of {} basic blocks, 16/32/64 channels",
                (depth - 2) / 6
            ),
            cifar_resnet(depth),
        ));
    }
    for (depth, n) in [(164, 18), (1001, 111)] {
        let arch = Arch {
            base_planes: 16,
            stem_channels: 16,
            default_dataset: Dataset::Cifar10,
            ..Arch::resnet(BlockKind::PreActBottleneck, &[n, n, n])
        };
        r.push(ModelEntry::new(
            format!("preact_resnet{depth}"),
            F,
            format!("CIFAR pre-activation ResNet-{depth}: 3 stages of {n} bottlenecks"),
            arch,
        ));
    }
    for &(suffix, depth, c, d) in RESNEXTS {
        r.push(ModelEntry::new(
            format!("resnext{suffix}"),
            F,
            format!("ResNeXt-{depth} {c}x{d}d (grouped 3x3 convolutions)"),
            resnext(depth, c, d).expect("listed depth"),
        ));
    }
    for &(c, d) in CIFAR_RESNEXTS {
        r.push(ModelEntry::new(
            format!("resnext29_{c}x{d}d"),
            F,
            format!("CIFAR ResNeXt-29 {c}x{d}d"),
            cifar_resnext(c, d),
        ));
    }
    for &(depth, k) in WIDE_RESNETS {
        r.push(ModelEntry::new(
            format!("wrn{depth}_{k}"),
            F,
            format!("Wide ResNet WRN-{depth}-{k} (CIFAR, pre-activation basic blocks)"),
            wide_resnet(depth, k),
        ));
    }
    for depth in [50, 101] {
        r.push(ModelEntry::new(
            format!("wide_resnet{depth}_2"),
            F,
            format!("Wide ResNet-{depth}-2: bottleneck inner width doubled"),
            Arch {
                base_width: 128,
                ..imagenet_resnet(depth).expect("listed depth")
            },
        ));
    }
}

/// ResNeXt's cardinality and base width, which apply to bottleneck blocks and Dense2Net's
/// multi-scale modules (cardinality only) alone; their ranges are checked in `limits`.
pub(crate) fn resolve_groups(
    arch: &Arch,
    block: BlockKind,
    scale: usize,
    o: &ModelOptions,
    bad: &dyn Fn(String) -> DensumError,
) -> Result<(usize, usize)> {
    let dense2net = is_dense2net(block, scale);
    if dense2net && o.base_width.is_some() {
        return Err(bad(
            "base_width does not apply to Dense2Net (its groups split 4k channels)".into(),
        ));
    }
    if !arch.block.is_bottleneck()
        && !dense2net
        && (o.cardinality.is_some() || o.base_width.is_some())
    {
        return Err(bad("cardinality and base_width apply to bottleneck blocks only; this model has basic blocks".into()));
    }
    Ok((
        o.cardinality.unwrap_or(arch.cardinality),
        o.base_width.unwrap_or(arch.base_width),
    ))
}

/// A bottleneck's group width `floor(planes · d / 64)` at the first stage's `planes` must be
/// at least 1.
pub(crate) fn check_group_width(
    arch: &Arch,
    planes: usize,
    base_width: usize,
    bad: &dyn Fn(String) -> DensumError,
) -> Result<()> {
    if arch.block.is_bottleneck() && planes * base_width / 64 == 0 {
        return Err(bad(format!(
            "base width {base_width} at {planes} planes gives a group width of 0 (floor(planes · d / 64) must be at least 1)"
        )));
    }
    Ok(())
}

/// The block options that only some blocks take: inner shortcuts (post-activation
/// bottlenecks), attention (post-activation blocks and Dense2Net's modules) and block
/// dropout (Wide ResNet and dense layers).
pub(crate) fn check_block_options(
    arch: &Arch,
    block: BlockKind,
    scale: usize,
    attention: AttentionKind,
    inner: Option<InnerShortcut>,
    o: &ModelOptions,
    bad: &dyn Fn(String) -> DensumError,
) -> Result<()> {
    if inner.is_some() && arch.block != BlockKind::Bottleneck {
        return Err(bad(
            "inner shortcuts (DS2, d-RGS) need post-activation bottleneck blocks".into(),
        ));
    }
    if attention != AttentionKind::None && block.is_preact() && !is_dense2net(block, scale) {
        return Err(bad(
            "attention (SE, CBAM) is built for post-activation blocks and Dense2Net's multi-scale modules only".into(),
        ));
    }
    if o.block_dropout.is_some() && arch.block != BlockKind::PreActBasic && !arch.block.is_dense() {
        return Err(bad(
            "block_dropout applies to Wide ResNet (pre-activation basic) blocks and dense layers only"
                .into(),
        ));
    }
    Ok(())
}
