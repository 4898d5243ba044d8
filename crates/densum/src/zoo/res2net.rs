//! Res2Net (Gao et al. 2019): the bottleneck's 3x3 convolution split into `scale`
//! hierarchical groups ([`BlockKind::Res2Bottleneck`]), on ResNet and ResNeXt backbones and
//! with DSNet's dense shortcuts; and Dense2Net, a DenseNet-BC whose bottleneck 3x3 is a
//! Res2Net module on 4k channels followed by a conv1x1 to k (a [`BlockKind::DenseBottleneck`]
//! with `scale` > 1).

use super::densenet::densenet;
use super::dsnet::dsnet;
use super::resnet::{cifar_resnext, imagenet_resnet};
use super::{Arch, Dataset, ModelEntry, ModelOptions};
use crate::block::BlockKind;
use crate::block::dense::BN_SIZE;
use crate::error::{DensumError, Result};

/// Res2Net on `base` (a bottleneck ResNet or ResNeXt) with base width `w` and scale `s`.
pub fn res2net(base: Arch, w: usize, s: usize) -> Arch {
    Arch {
        block: BlockKind::Res2Bottleneck,
        base_width: w,
        scale: s,
        ..base
    }
}

/// Dense2Net: DenseNet-BC-121 (k = 32) with Res2Net modules of scale `s`, CIFAR-100.
pub fn dense2net121(s: usize) -> Arch {
    Arch {
        scale: s,
        ..densenet(&[6, 12, 24, 16], 32, true, Dataset::Cifar100)
    }
}

/// Registers this paper's variants.
pub fn register(r: &mut Vec<ModelEntry>) {
    const F: &str = "res2net";
    let r50 = || imagenet_resnet(50).expect("ResNet-50");
    r.push(ModelEntry::new(
        "res2net50_26w_4s",
        F,
        "Res2Net-50 26w x 4s (timm layout)",
        res2net(r50(), 26, 4),
    ));
    r.push(ModelEntry::new(
        "res2net50_48w_2s",
        F,
        "Res2Net-50 48w x 2s",
        res2net(r50(), 48, 2),
    ));
    r.push(ModelEntry::new(
        "res2net101_26w_4s",
        F,
        "Res2Net-101 26w x 4s",
        res2net(imagenet_resnet(101).expect("ResNet-101"), 26, 4),
    ));
    r.push(ModelEntry::new(
        "res2next50",
        F,
        "Res2NeXt-50 8c x 4w x 4s (timm's res2next50)",
        Arch {
            cardinality: 8,
            ..res2net(r50(), 4, 4)
        },
    ));
    r.push(ModelEntry::new(
        "res2next29_6cx24wx4s",
        F,
        "CIFAR Res2NeXt-29 6c x 24w x 4s",
        Arch {
            default_dataset: Dataset::Cifar100,
            ..res2net(cifar_resnext(6, 24), 24, 4)
        },
    ));
    r.push(ModelEntry::new(
        "ds2res2net50",
        F,
        "DS2Res2Net-50: Res2Net-50 26w x 4s with DSNet's dense weighted normalised shortcuts",
        dsnet(res2net(r50(), 26, 4)),
    ));
    r.push(ModelEntry::new(
        "dense2net121",
        F,
        "Dense2Net-121: DenseNet-BC-121 (k = 32, CIFAR-100) whose 3x3 is a Res2Net module (scale 4) on 4k channels + conv1x1",
        dense2net121(4),
    ));
}

/// The scale of `arch` with the `scale` option, which applies to Res2Net and to Dense2Net
/// (bottleneck dense layers) only; its range is checked in `limits`.
pub(crate) fn resolve_scale(
    arch: &Arch,
    block: BlockKind,
    o: &ModelOptions,
    bad: &dyn Fn(String) -> DensumError,
) -> Result<usize> {
    match o.scale {
        Some(s) if arch.scale == 1 && block != BlockKind::DenseBottleneck => Err(bad(format!(
            "scale {s} applies to Res2Net and Dense2Net (bottleneck dense layer) models only"
        ))),
        Some(s) => Ok(s),
        None => Ok(arch.scale),
    }
}

/// Whether `block` at `scale` is Dense2Net's layer (a Res2Net module on 4k channels).
pub(crate) fn is_dense2net(block: BlockKind, scale: usize) -> bool {
    block == BlockKind::DenseBottleneck && scale > 1
}

/// Dense2Net splits 4k channels into `scale` groups, each a multiple of `cardinality`.
pub(crate) fn check_dense2net_split(
    block: BlockKind,
    scale: usize,
    k: usize,
    cardinality: usize,
    bad: &dyn Fn(String) -> DensumError,
) -> Result<()> {
    let inner = BN_SIZE * k;
    if is_dense2net(block, scale)
        && (!inner.is_multiple_of(scale) || !(inner / scale).is_multiple_of(cardinality))
    {
        return Err(bad(format!(
            "Dense2Net splits 4k = {inner} channels into scale {scale} groups of a multiple of cardinality {cardinality} channels: they must divide"
        )));
    }
    Ok(())
}
