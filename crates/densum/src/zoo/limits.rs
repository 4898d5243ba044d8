//! Upper bounds on model options, all in one place. Options come from the command line and
//! from weight files' metadata; both go through [`check_options`] and [`check_channels`]
//! (called by [`resolve`](super::resolve)), so no option can overflow the arithmetic that
//! shapes a network or ask for an absurd allocation. The bounds are far above every
//! registered model (the widest stage output of the 197 is DenseNet-264's 2688 channels, the
//! longest stage pre-activation ResNet-1001's 111 blocks, the most classes 1000) and low enough
//! that every shape and parameter count densum computes from them fits a `usize`; MAC counts,
//! which can exceed a `u64` near the bounds' corner, saturate.

use crate::block::BlockKind;
use crate::block::dense::BN_SIZE;
use crate::net::NetConfig;

/// Largest width multiplier (ResNet-50 at 64 has 2048 · 64 = 131,072 output channels).
pub const MAX_WIDTH: f64 = 64.0;
/// Largest input side in pixels.
pub const MAX_INPUT_SIZE: usize = 4096;
/// Largest number of classes.
pub const MAX_NUM_CLASSES: usize = 100_000;
/// Largest DenseNet growth rate k.
pub const MAX_GROWTH_RATE: usize = 1024;
/// Most stem channels (`init_features`).
pub const MAX_INIT_FEATURES: usize = 16_384;
/// Most stages in `block_config`.
pub const MAX_STAGES: usize = 8;
/// Most blocks (or dense layers) in one stage.
pub const MAX_BLOCKS_PER_STAGE: usize = 1000;
/// Largest ResNeXt cardinality.
pub const MAX_CARDINALITY: usize = 1024;
/// Largest ResNeXt base width.
pub const MAX_BASE_WIDTH: usize = 1024;
/// Largest Res2Net / Dense2Net scale.
pub const MAX_SCALE: usize = 64;
/// Most channels any layer may have, whatever combination of options leads there.
pub const MAX_CHANNELS: usize = 1 << 17;

/// Checks every numeric option against its range; the message names the option, the value and
/// the range.
pub fn check_options(o: &super::ModelOptions) -> Result<(), String> {
    if let Some(w) = o.width
        && !(w.is_finite() && w > 0.0 && w <= MAX_WIDTH)
    {
        return Err(format!(
            "width must be a positive number at most {MAX_WIDTH}, got {w}"
        ));
    }
    let counts = [
        ("num_classes", o.num_classes, MAX_NUM_CLASSES),
        ("input_size", o.input_size, MAX_INPUT_SIZE),
        ("growth_rate", o.growth_rate, MAX_GROWTH_RATE),
        ("init_features", o.init_features, MAX_INIT_FEATURES),
        ("cardinality", o.cardinality, MAX_CARDINALITY),
        ("base_width", o.base_width, MAX_BASE_WIDTH),
    ];
    for (name, value, max) in counts {
        if let Some(v) = value
            && !(1..=max).contains(&v)
        {
            return Err(format!(
                "{name} must be at least 1 and at most {max}, got {v}"
            ));
        }
    }
    if let Some(s) = o.scale
        && !(2..=MAX_SCALE).contains(&s)
    {
        return Err(format!(
            "scale must be at least 2 and at most {MAX_SCALE} (groups of the split 3x3 convolution), got {s}"
        ));
    }
    for (name, value) in [
        ("drop_path", o.drop_path),
        ("dropout", o.dropout),
        ("block_dropout", o.block_dropout),
    ] {
        if let Some(v) = value
            && !(0.0..1.0).contains(&v)
        {
            return Err(format!("{name} must be in [0, 1), got {v}"));
        }
    }
    if let Some(c) = o.compression
        && !(c > 0.0 && c <= 1.0)
    {
        return Err(format!(
            "compression must be in (0, 1] (DenseNet-C uses 0.5), got {c}"
        ));
    }
    if let Some(b) = &o.block_config
        && (b.is_empty()
            || b.len() > MAX_STAGES
            || b.iter().any(|&n| !(1..=MAX_BLOCKS_PER_STAGE).contains(&n)))
    {
        return Err(format!(
            "block_config must list 1 to {MAX_STAGES} stages, each with 1 to {MAX_BLOCKS_PER_STAGE} blocks, got {b:?}"
        ));
    }
    Ok(())
}

/// Checks that every layer of `cfg` has at most [`MAX_CHANNELS`] channels. Counts are
/// computed with saturating arithmetic, so one that would overflow is over the bound too
/// (the stages double their planes and DenseNet's stages grow by their blocks: bounded
/// options can still multiply up).
pub fn check_channels(cfg: &NetConfig) -> Result<(), String> {
    let check = |c: usize, what: &str| {
        if c <= MAX_CHANNELS {
            Ok(())
        } else {
            Err(format!(
                "{what} would have {c} channels, more than {MAX_CHANNELS}; use a smaller width, growth rate, cardinality, base width, scale or fewer stages"
            ))
        }
    };
    let b = &cfg.block;
    let mut c = cfg.stem_channels;
    check(c, "the stem")?;
    for (i, st) in cfg.stages.iter().enumerate() {
        let stage = format!("stage {}", i + 1);
        let out = st.planes.saturating_mul(b.kind.expansion());
        check(out, &format!("the blocks of {stage}"))?;
        let inner = if b.kind.is_bottleneck() {
            (st.planes.saturating_mul(b.base_width) / 64)
                .saturating_mul(b.cardinality)
                .saturating_mul(b.scale)
        } else if b.kind == BlockKind::DenseBottleneck {
            st.planes.saturating_mul(BN_SIZE)
        } else {
            out
        };
        check(inner, &format!("the inner layers of {stage}"))?;
        if let Some(t) = &cfg.transition
            && i > 0
            && st.stride != 1
        {
            c = t.out_channels(c, out);
        }
        // Every block reads at most what the stage outputs (a concatenation only grows).
        c = cfg.connect.stage_out_channels(c, out, st.blocks);
        check(c, &format!("the output of {stage}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::{ModelOptions, resolve};

    fn err(model: &str, o: ModelOptions) -> String {
        resolve(model, &o).unwrap_err().to_string()
    }

    #[test]
    fn every_option_has_an_upper_bound() {
        let o = ModelOptions::default;
        let cases: Vec<(&str, ModelOptions, &str)> = vec![
            (
                "resnet50",
                ModelOptions {
                    width: Some(1e9),
                    ..o()
                },
                "at most 64",
            ),
            (
                "resnet50",
                ModelOptions {
                    width: Some(f64::INFINITY),
                    ..o()
                },
                "width",
            ),
            (
                "resnet50",
                ModelOptions {
                    input_size: Some(MAX_INPUT_SIZE + 1),
                    ..o()
                },
                "input_size must be at least 1 and at most 4096",
            ),
            (
                "resnet50",
                ModelOptions {
                    num_classes: Some(MAX_NUM_CLASSES + 1),
                    ..o()
                },
                "num_classes must be at least 1 and at most 100000",
            ),
            (
                "resnet50",
                ModelOptions {
                    num_classes: Some(0),
                    ..o()
                },
                "num_classes must be at least 1",
            ),
            (
                "densenet121",
                ModelOptions {
                    growth_rate: Some(usize::MAX),
                    ..o()
                },
                "growth_rate must be at least 1 and at most 1024",
            ),
            (
                "densenet121",
                ModelOptions {
                    init_features: Some(MAX_INIT_FEATURES + 1),
                    ..o()
                },
                "init_features",
            ),
            (
                "resnext50_32x4d",
                ModelOptions {
                    cardinality: Some(MAX_CARDINALITY + 1),
                    ..o()
                },
                "cardinality must be at least 1 and at most 1024",
            ),
            (
                "resnext50_32x4d",
                ModelOptions {
                    base_width: Some(MAX_BASE_WIDTH + 1),
                    ..o()
                },
                "base_width must be at least 1 and at most 1024",
            ),
            (
                "res2net50_26w_4s",
                ModelOptions {
                    scale: Some(MAX_SCALE + 1),
                    ..o()
                },
                "scale must be at least 2 and at most 64",
            ),
            (
                "resnet50",
                ModelOptions {
                    block_config: Some(vec![1; MAX_STAGES + 1]),
                    ..o()
                },
                "block_config must list 1 to 8 stages",
            ),
            (
                "resnet50",
                ModelOptions {
                    block_config: Some(vec![3, MAX_BLOCKS_PER_STAGE + 1]),
                    ..o()
                },
                "each with 1 to 1000 blocks",
            ),
            (
                "resnet50",
                ModelOptions {
                    drop_path: Some(1.0),
                    ..o()
                },
                "drop_path must be in [0, 1)",
            ),
            (
                "resnet50",
                ModelOptions {
                    dropout: Some(f64::NAN),
                    ..o()
                },
                "dropout must be in [0, 1)",
            ),
            (
                "wrn16_4",
                ModelOptions {
                    block_dropout: Some(-0.1),
                    ..o()
                },
                "block_dropout must be in [0, 1)",
            ),
        ];
        for (model, options, want) in cases {
            let msg = err(model, options.clone());
            assert!(msg.contains(want), "{model} {options:?}: {msg}");
            assert!(msg.contains(model), "{msg}");
        }
    }

    #[test]
    fn bounded_options_that_multiply_up_are_refused() {
        // Width 64 and eight doubling stages: 64 · 64 · 2^7 · 4 channels in the last.
        let msg = err(
            "resnet50",
            ModelOptions {
                width: Some(MAX_WIDTH),
                block_config: Some(vec![1; MAX_STAGES]),
                ..Default::default()
            },
        );
        assert!(msg.contains("more than 131072"), "{msg}");
        assert!(msg.contains("the blocks of stage 5"), "{msg}");
        // DenseNet's concatenation: 1000 layers of 1024 channels in one stage.
        let msg = err(
            "densenet121",
            ModelOptions {
                growth_rate: Some(MAX_GROWTH_RATE),
                block_config: Some(vec![MAX_BLOCKS_PER_STAGE]),
                ..Default::default()
            },
        );
        assert!(msg.contains("the output of stage 1"), "{msg}");
        // ResNeXt's inner width: planes · d / 64 · C.
        let msg = err(
            "resnext50_32x4d",
            ModelOptions {
                width: Some(MAX_WIDTH),
                cardinality: Some(MAX_CARDINALITY),
                base_width: Some(MAX_BASE_WIDTH),
                ..Default::default()
            },
        );
        assert!(msg.contains("inner layers of stage 1"), "{msg}");
    }

    #[test]
    fn the_bounds_themselves_resolve() {
        for (model, options) in [
            (
                "resnet50",
                ModelOptions {
                    width: Some(MAX_WIDTH),
                    num_classes: Some(MAX_NUM_CLASSES),
                    input_size: Some(MAX_INPUT_SIZE),
                    ..Default::default()
                },
            ),
            (
                "densenet264",
                ModelOptions {
                    growth_rate: Some(MAX_GROWTH_RATE),
                    ..Default::default()
                },
            ),
            (
                "res2net50_26w_4s",
                ModelOptions {
                    scale: Some(MAX_SCALE),
                    block_config: Some(vec![MAX_BLOCKS_PER_STAGE]),
                    ..Default::default()
                },
            ),
        ] {
            let spec = resolve(model, &options).unwrap();
            let widest = *spec.config.stage_channels().iter().max().unwrap();
            assert!(widest <= MAX_CHANNELS, "{model}: {widest}");
        }
    }
}
