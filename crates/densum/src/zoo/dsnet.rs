//! DSNet (Zhang et al.): dense weighted normalised shortcuts on ResNet, ResNeXt and Wide
//! ResNet backbones; DS2Net adds the inner shortcut over each stride-1 bottleneck's 3x3
//! convolution; "ResNet-dense" is the naive dense identity the paper ablates against.

use super::resnet::{
    CIFAR_DEPTHS, IMAGENET_DEPTHS, RESNEXTS, WIDE_RESNETS, cifar_resnet, imagenet_resnet, resnext,
    wide_resnet,
};
use super::{Arch, ModelEntry, ModelOptions};
use crate::block::{BlockKind, InnerShortcut};
use crate::connect::{ConnectKind, DenseSumConfig, DsVariant};
use crate::error::{DensumError, Result};

fn ds(variant: DsVariant) -> ConnectKind {
    ConnectKind::DenseSum(DenseSumConfig {
        variant,
        ..DenseSumConfig::default()
    })
}

/// DSNet on `arch` (variant b).
pub fn dsnet(arch: Arch) -> Arch {
    arch.with_connect(ds(DsVariant::B))
}

/// DS2Net on `arch`: DSNet plus the inner shortcut.
pub fn ds2net(arch: Arch) -> Arch {
    dsnet(arch).with_inner(InnerShortcut::Ds(DenseSumConfig::default()))
}

/// Registers this paper's variants.
pub fn register(r: &mut Vec<ModelEntry>) {
    const F: &str = "dsnet";
    for &(depth, block, _) in IMAGENET_DEPTHS {
        let base = imagenet_resnet(depth).expect("listed depth");
        r.push(ModelEntry::new(format!("dsnet{depth}"), F, format!("DSNet-{depth}: ResNet-{depth} with dense weighted normalised shortcuts (variant b, GN)"), dsnet(base.clone())));
        r.push(ModelEntry::new(
            format!("dsnet{depth}_a"),
            F,
            format!("DSNet-{depth}-a: dense shortcuts read branch outputs X_i"),
            base.clone().with_connect(ds(DsVariant::A)),
        ));
        r.push(ModelEntry::new(
            format!("resnet{depth}_dense"),
            F,
            format!("ResNet-{depth}-dense: naive dense identity, Y_l = ReLU(X_l + sum Y_i)"),
            base.clone().with_connect(ConnectKind::DenseIdentity),
        ));
        if block == BlockKind::Bottleneck {
            r.push(ModelEntry::new(
                format!("ds2net{depth}"),
                F,
                format!(
                    "DS2Net-{depth}: DSNet-{depth} plus inner shortcuts over the 3x3 convolutions"
                ),
                ds2net(base),
            ));
        }
    }
    for &depth in CIFAR_DEPTHS {
        r.push(ModelEntry::new(
            format!("dsnet{depth}"),
            F,
            format!("CIFAR DSNet-{depth} (ResNet-{depth} with dense shortcuts)"),
            dsnet(cifar_resnet(depth)),
        ));
    }
    for &(suffix, depth, c, d) in RESNEXTS {
        let base = resnext(depth, c, d).expect("listed depth");
        r.push(ModelEntry::new(
            format!("dsnext{suffix}"),
            F,
            format!("DSNeXt-{depth} {c}x{d}d: ResNeXt with dense shortcuts"),
            dsnet(base.clone()),
        ));
        r.push(ModelEntry::new(
            format!("ds2next{suffix}"),
            F,
            format!("DS2NeXt-{depth} {c}x{d}d: DSNeXt plus inner shortcuts"),
            ds2net(base),
        ));
    }
    for &(depth, k) in WIDE_RESNETS {
        r.push(ModelEntry::new(
            format!("dswrn{depth}_{k}"),
            F,
            format!("DSWRN-{depth}-{k}: Wide ResNet with dense shortcuts"),
            dsnet(wide_resnet(depth, k)),
        ));
    }
}

/// Why a DS name that looks plausible is not built, if it is one of those.
pub fn explain(name: &str) -> Option<String> {
    let depth: usize = name.strip_prefix("ds2net")?.parse().ok()?;
    let basic = IMAGENET_DEPTHS
        .iter()
        .any(|(d, b, _)| *d == depth && *b == BlockKind::Basic)
        || CIFAR_DEPTHS.contains(&depth);
    basic.then(|| format!("DS2 puts a shortcut around a bottleneck's 3x3 convolution, but ResNet-{depth} has basic blocks; use dsnet{depth}, or a bottleneck depth (ds2net26, ds2net50, ...)"))
}

/// Applies `ds_norm`, `ds_weight` and `ds_init` to the dense shortcuts (`connect`) and the
/// inner shortcut of a DSNet, refusing them on models with neither.
pub(crate) fn resolve_options(
    connect: ConnectKind,
    inner: Option<InnerShortcut>,
    o: &ModelOptions,
    bad: &dyn Fn(String) -> DensumError,
) -> Result<(ConnectKind, Option<InnerShortcut>)> {
    let given = o.ds_norm.is_some() || o.ds_weight.is_some() || o.ds_init.is_some();
    let apply = |c: DenseSumConfig| DenseSumConfig {
        norm: o.ds_norm.unwrap_or(c.norm),
        weight: o.ds_weight.unwrap_or(c.weight),
        init: o.ds_init.unwrap_or(c.init),
        ..c
    };
    let (connect, outer) = match connect {
        ConnectKind::DenseSum(c) => (ConnectKind::DenseSum(apply(c)), true),
        other => (other, false),
    };
    let (inner, inner_ds) = match inner {
        Some(InnerShortcut::Ds(c)) => (Some(InnerShortcut::Ds(apply(c))), true),
        other => (other, false),
    };
    if given && !outer && !inner_ds {
        return Err(bad(
            "ds_norm, ds_weight and ds_init apply to DSNet models (dense weighted shortcuts) only"
                .into(),
        ));
    }
    Ok((connect, inner))
}
