//! RGSNet (Zhang et al., BMVC 2019): ReLU + GroupNorm shortcuts. b-RGS replaces the identity
//! shortcut, d-RGS adds the inner shortcut over stride-1 3x3 convolutions, Res-RGS keeps the
//! identity as well; RBS, GS, RGB and 2GN are the paper's ablations.

use super::resnet::{
    CIFAR_DEPTHS, IMAGENET_DEPTHS, RESNEXTS, cifar_resnet, imagenet_resnet, resnext,
};
use super::{Arch, ModelEntry, ModelOptions};
use crate::block::{BlockKind, InnerShortcut};
use crate::connect::{ConnectKind, RgVariant};
use crate::error::{DensumError, Result};

/// Registers this paper's variants.
pub fn register(r: &mut Vec<ModelEntry>) {
    const F: &str = "rgsnet";
    let rg = |v| ConnectKind::Rg(v);
    for &(depth, block, _) in IMAGENET_DEPTHS {
        let base = imagenet_resnet(depth).expect("listed depth");
        r.push(ModelEntry::new(
            format!("brgsnet{depth}"),
            F,
            format!("b-RGSNet-{depth}: shortcut GroupNorm(ReLU(x)), no output ReLU"),
            base.clone().with_connect(rg(RgVariant::B)),
        ));
        if block != BlockKind::Bottleneck {
            continue;
        }
        r.push(ModelEntry::new(
            format!("drgsnet{depth}"),
            F,
            format!(
                "d-RGSNet-{depth}: b-RGS plus inner RG shortcuts over stride-1 3x3 convolutions"
            ),
            base.clone()
                .with_connect(rg(RgVariant::B))
                .with_inner(InnerShortcut::Rg),
        ));
        r.push(ModelEntry::new(
            format!("resrgsnet{depth}"),
            F,
            format!("Res-RGSNet-{depth}: d-RGS plus the identity, y = x + F(x) + RG(x)"),
            base.clone()
                .with_connect(rg(RgVariant::Res))
                .with_inner(InnerShortcut::Rg),
        ));
        for (v, tag, what) in [
            (RgVariant::Rbs, "rbs", "ReLU + BatchNorm shortcut"),
            (RgVariant::Gs, "gs", "GroupNorm-only shortcut"),
            (RgVariant::Rgb, "rgb", "RG after the identity sum"),
        ] {
            r.push(ModelEntry::new(
                format!("brgsnet{depth}_{tag}"),
                F,
                format!("RGSNet ablation {}: {what}", tag.to_uppercase()),
                base.clone().with_connect(rg(v)),
            ));
        }
        r.push(ModelEntry::new(
            format!("resnet{depth}_2gn"),
            F,
            "RGSNet ablation 2GN: GroupNorm after each ReLU in the branch, identity shortcut"
                .to_string(),
            Arch {
                branch_gn: true,
                ..base
            },
        ));
    }
    for &(suffix, depth, c, d) in RESNEXTS {
        let base = resnext(depth, c, d).expect("listed depth");
        let b = base.clone().with_connect(rg(RgVariant::B));
        r.push(ModelEntry::new(
            format!("brgsnext{suffix}"),
            F,
            format!("b-RGSNeXt-{depth} {c}x{d}d: ResNeXt with RG shortcuts"),
            b.clone(),
        ));
        r.push(ModelEntry::new(
            format!("drgsnext{suffix}"),
            F,
            format!("d-RGSNeXt-{depth} {c}x{d}d: plus inner RG shortcuts"),
            b.with_inner(InnerShortcut::Rg),
        ));
        r.push(ModelEntry::new(
            format!("resrgsnext{suffix}"),
            F,
            format!("Res-RGSNeXt-{depth} {c}x{d}d: d-RGS plus the identity"),
            base.with_connect(rg(RgVariant::Res))
                .with_inner(InnerShortcut::Rg),
        ));
    }
    for &depth in CIFAR_DEPTHS {
        r.push(ModelEntry::new(
            format!("brgsnet{depth}"),
            F,
            format!("CIFAR b-RGSNet-{depth}"),
            cifar_resnet(depth).with_connect(rg(RgVariant::B)),
        ));
    }
}

/// Applies `rg_variant` to an RGSNet's shortcuts, refusing it on other models.
pub(crate) fn resolve_variant(
    connect: ConnectKind,
    o: &ModelOptions,
    bad: &dyn Fn(String) -> DensumError,
) -> Result<ConnectKind> {
    match (o.rg_variant, connect) {
        (None, c) => Ok(c),
        (Some(v), ConnectKind::Rg(_)) => Ok(ConnectKind::Rg(v)),
        (Some(_), _) => Err(bad("rg_variant applies to RGSNet models only".into())),
    }
}
