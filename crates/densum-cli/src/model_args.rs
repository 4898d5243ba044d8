//! The model options every command accepts, mapped onto the library's `ModelOptions`.

use anyhow::{Result, anyhow};
use clap::Args;
use densum::zoo::ModelOptions;
use serde::de::DeserializeOwned;

/// Options of any model (see `densum models` for the names).
#[derive(Args, Clone, Debug, Default)]
pub struct ModelArgs {
    /// Dataset conventions: imagenet (224 px, 1000 classes, ImageNet stem), cifar10, cifar100
    /// or svhn (32 px, CIFAR stem).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Width multiplier: every channel count scales (base 64·w).
    #[arg(long)]
    pub width: Option<f64>,
    /// Number of classes (default: the dataset's).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Stem: imagenet (7x7 conv + max-pool) or cifar (3x3 conv).
    #[arg(long)]
    pub stem: Option<String>,
    /// Input side in pixels (default: the dataset's).
    #[arg(long)]
    pub input_size: Option<usize>,
    /// Largest stochastic-depth rate (linearly increasing over blocks).
    #[arg(long)]
    pub drop_path: Option<f64>,
    /// Dropout before the classifier.
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Dropout between a Wide ResNet block's convolutions.
    #[arg(long)]
    pub block_dropout: Option<f64>,
    /// Start the last BN of every residual branch at zero.
    #[arg(long)]
    pub zero_init_last: bool,
    /// ResNeXt cardinality (groups of the 3x3 convolution).
    #[arg(long)]
    pub cardinality: Option<usize>,
    /// ResNeXt base width d.
    #[arg(long)]
    pub base_width: Option<usize>,
    /// Block attention: none, se or cbam.
    #[arg(long)]
    pub attention: Option<String>,
    /// DSNet normalisation N: gn, ln, in, bn or none.
    #[arg(long)]
    pub ds_norm: Option<String>,
    /// DSNet shortcut weights: channel, scalar or none.
    #[arg(long)]
    pub ds_weight: Option<String>,
    /// DSNet initial weights: ones, or last (1 for the previous block, 0 for the others).
    #[arg(long)]
    pub ds_init: Option<String>,
    /// RGSNet shortcut design: b, res, rbs, gs or rgb.
    #[arg(long)]
    pub rg_variant: Option<String>,
    /// Blocks (dense layers for DenseNet) per stage, comma-separated, e.g. 6,12,24,16.
    #[arg(long, value_delimiter = ',')]
    pub block_config: Option<Vec<usize>>,
    /// DenseNet growth rate k.
    #[arg(long)]
    pub growth_rate: Option<usize>,
    /// DenseNet stem channels (torchvision's num_init_features).
    #[arg(long)]
    pub init_features: Option<usize>,
    /// DenseNet bottleneck layers (B): true or false.
    #[arg(long)]
    pub bottleneck: Option<bool>,
    /// DenseNet transition compression θ in (0, 1].
    #[arg(long)]
    pub compression: Option<f64>,
    /// DenseNet: recompute concatenations and first BN-ReLUs in the backward pass.
    #[arg(long)]
    pub memory_efficient: bool,
    /// Res2Net / Dense2Net scale s (at least 2).
    #[arg(long)]
    pub scale: Option<usize>,
}

fn parse<T: DeserializeOwned>(
    flag: &str,
    value: &Option<String>,
    allowed: &str,
) -> Result<Option<T>> {
    value
        .as_ref()
        .map(|v| {
            serde_json::from_value(serde_json::Value::String(v.to_ascii_lowercase()))
                .map_err(|_| anyhow!("--{flag} {v}: expected one of {allowed}"))
        })
        .transpose()
}

impl ModelArgs {
    /// The options given on the command line.
    pub fn options(&self) -> Result<ModelOptions> {
        self.options_over(ModelOptions::default())
    }

    /// The options given on the command line, over `base` (for example a weight file's).
    pub fn options_over(&self, base: ModelOptions) -> Result<ModelOptions> {
        Ok(ModelOptions {
            dataset: parse(
                "dataset",
                &self.dataset,
                "imagenet, cifar10, cifar100, svhn",
            )?
            .or(base.dataset),
            stem: parse("stem", &self.stem, "imagenet, cifar")?.or(base.stem),
            width: self.width.or(base.width),
            num_classes: self.num_classes.or(base.num_classes),
            input_size: self.input_size.or(base.input_size),
            drop_path: self.drop_path.or(base.drop_path),
            dropout: self.dropout.or(base.dropout),
            block_dropout: self.block_dropout.or(base.block_dropout),
            zero_init_last: if self.zero_init_last {
                Some(true)
            } else {
                base.zero_init_last
            },
            cardinality: self.cardinality.or(base.cardinality),
            base_width: self.base_width.or(base.base_width),
            attention: parse("attention", &self.attention, "none, se, cbam")?.or(base.attention),
            ds_norm: parse("ds-norm", &self.ds_norm, "gn, ln, in, bn, none")?.or(base.ds_norm),
            ds_weight: parse("ds-weight", &self.ds_weight, "channel, scalar, none")?
                .or(base.ds_weight),
            ds_init: parse("ds-init", &self.ds_init, "ones, last")?.or(base.ds_init),
            rg_variant: parse("rg-variant", &self.rg_variant, "b, res, rbs, gs, rgb")?
                .or(base.rg_variant),
            block_config: self.block_config.clone().or(base.block_config),
            growth_rate: self.growth_rate.or(base.growth_rate),
            init_features: self.init_features.or(base.init_features),
            bottleneck: self.bottleneck.or(base.bottleneck),
            compression: self.compression.or(base.compression),
            memory_efficient: if self.memory_efficient {
                Some(true)
            } else {
                base.memory_efficient
            },
            scale: self.scale.or(base.scale),
        })
    }
}
