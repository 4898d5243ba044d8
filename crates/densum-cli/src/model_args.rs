//! The model options every command accepts, mapped onto the library's `ModelOptions`. Named
//! choices are clap value enums, so `--help` lists them and a wrong one is refused with the
//! possible values.

use clap::{Args, ValueEnum};
use densum::connect::{DsInit, DsWeightKind, RgVariant};
use densum::net::StemKind;
use densum::nn::{AttentionKind, NormKind};
use densum::zoo::{Dataset, ModelOptions};

/// A command-line twin of a library enum: the same variants, parsed by clap (lowercase
/// names, any case accepted), converted with `From`.
macro_rules! value_enum {
    ($(#[$doc:meta])* $name:ident => $lib:ty { $($(#[$vdoc:meta])* $v:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
        #[value(rename_all = "lower")]
        pub enum $name {
            $($(#[$vdoc])* $v),+
        }

        impl From<$name> for $lib {
            fn from(v: $name) -> Self {
                match v {
                    $($name::$v => <$lib>::$v),+
                }
            }
        }
    };
}

value_enum! {
    /// Dataset conventions.
    DatasetArg => Dataset {
        /// 224 px, 1000 classes, ImageNet stem.
        Imagenet,
        /// 32 px, 10 classes, CIFAR stem.
        Cifar10,
        /// 32 px, 100 classes, CIFAR stem.
        Cifar100,
        /// 32 px, 10 classes, CIFAR stem.
        Svhn,
    }
}

value_enum! {
    /// Stems.
    StemArg => StemKind {
        /// 7x7 convolution + max-pool.
        Imagenet,
        /// 3x3 convolution.
        Cifar,
    }
}

value_enum! {
    /// Block attention.
    AttentionArg => AttentionKind {
        /// No attention.
        None,
        /// Squeeze-and-excitation.
        Se,
        /// CBAM (channel and spatial).
        Cbam,
    }
}

value_enum! {
    /// DSNet's normalisation N.
    NormArg => NormKind {
        /// GroupNorm.
        Gn,
        /// LayerNorm.
        Ln,
        /// InstanceNorm.
        In,
        /// BatchNorm.
        Bn,
        /// No normalisation.
        None,
    }
}

value_enum! {
    /// DSNet's shortcut weights.
    DsWeightArg => DsWeightKind {
        /// One weight per channel.
        Channel,
        /// One weight per shortcut.
        Scalar,
        /// Unweighted.
        None,
    }
}

value_enum! {
    /// DSNet's initial shortcut weights.
    DsInitArg => DsInit {
        /// All ones.
        Ones,
        /// 1 for the previous block, 0 for the others.
        Last,
    }
}

value_enum! {
    /// RGSNet's shortcut designs.
    RgVariantArg => RgVariant {
        /// b-RGS (and d-RGS): y = F(x) + RG(x).
        B,
        /// Res-RGS: y = x + F(x) + RG(x).
        Res,
        /// ReLU + BatchNorm shortcut (ablation).
        Rbs,
        /// GroupNorm alone (ablation).
        Gs,
        /// RG after the identity sum (ablation).
        Rgb,
    }
}

/// Options of any model (see `densum models` for the names).
#[derive(Args, Clone, Debug, Default)]
pub struct ModelArgs {
    /// Dataset conventions (classes, input size, stem, normalisation).
    #[arg(long, value_enum, ignore_case = true)]
    pub dataset: Option<DatasetArg>,
    /// Width multiplier: every channel count scales (base 64·w).
    #[arg(long)]
    pub width: Option<f64>,
    /// Number of classes (default: the dataset's).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Stem.
    #[arg(long, value_enum, ignore_case = true)]
    pub stem: Option<StemArg>,
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
    /// Block attention.
    #[arg(long, value_enum, ignore_case = true)]
    pub attention: Option<AttentionArg>,
    /// DSNet normalisation N.
    #[arg(long, value_enum, ignore_case = true)]
    pub ds_norm: Option<NormArg>,
    /// DSNet shortcut weights.
    #[arg(long, value_enum, ignore_case = true)]
    pub ds_weight: Option<DsWeightArg>,
    /// DSNet initial weights.
    #[arg(long, value_enum, ignore_case = true)]
    pub ds_init: Option<DsInitArg>,
    /// RGSNet shortcut design.
    #[arg(long, value_enum, ignore_case = true)]
    pub rg_variant: Option<RgVariantArg>,
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

impl ModelArgs {
    /// The options given on the command line.
    pub fn options(&self) -> ModelOptions {
        self.options_over(ModelOptions::default())
    }

    /// The options given on the command line, over `base` (for example a weight file's).
    pub fn options_over(&self, base: ModelOptions) -> ModelOptions {
        ModelOptions {
            dataset: self.dataset.map(Into::into).or(base.dataset),
            stem: self.stem.map(Into::into).or(base.stem),
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
            attention: self.attention.map(Into::into).or(base.attention),
            ds_norm: self.ds_norm.map(Into::into).or(base.ds_norm),
            ds_weight: self.ds_weight.map(Into::into).or(base.ds_weight),
            ds_init: self.ds_init.map(Into::into).or(base.ds_init),
            rg_variant: self.rg_variant.map(Into::into).or(base.rg_variant),
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
        }
    }
}
