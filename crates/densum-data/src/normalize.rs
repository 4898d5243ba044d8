//! Per-channel normalisation: torchvision's ImageNet mean and std, and for CIFAR-10,
//! CIFAR-100 and SVHN the per-channel mean and std of their training sets (as commonly
//! published), all on pixels scaled to [0, 1].

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// `(pixel / 255 - mean[c]) / std[c]` per RGB channel.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Channel means, in [0, 1] units.
    pub mean: [f32; 3],
    /// Channel standard deviations, in [0, 1] units.
    pub std: [f32; 3],
}

impl Normalize {
    /// ImageNet (torchvision's constants).
    pub const IMAGENET: Normalize = Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    /// CIFAR-10.
    pub const CIFAR10: Normalize = Normalize {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2470, 0.2435, 0.2616],
    };
    /// CIFAR-100.
    pub const CIFAR100: Normalize = Normalize {
        mean: [0.5071, 0.4865, 0.4409],
        std: [0.2673, 0.2564, 0.2762],
    };
    /// SVHN.
    pub const SVHN: Normalize = Normalize {
        mean: [0.4377, 0.4438, 0.4728],
        std: [0.1980, 0.2010, 0.1970],
    };
    /// Only scale to [0, 1].
    pub const NONE: Normalize = Normalize {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// Constants by dataset name: `imagenet`, `cifar10`, `cifar100`, `svhn`, `none`.
    pub fn by_name(name: &str) -> Result<Normalize> {
        match name.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "imagenet" => Ok(Self::IMAGENET),
            "cifar10" => Ok(Self::CIFAR10),
            "cifar100" => Ok(Self::CIFAR100),
            "svhn" => Ok(Self::SVHN),
            "none" => Ok(Self::NONE),
            _ => Err(Error::Invalid(format!(
                "unknown normalisation '{name}' (imagenet, cifar10, cifar100, svhn, none)"
            ))),
        }
    }

    /// The normalised value of pixel byte `v` in channel `c`.
    pub fn apply(&self, c: usize, v: u8) -> f32 {
        (v as f32 / 255.0 - self.mean[c]) / self.std[c]
    }

    /// A lookup table: 256 values per channel, so the hot loop is one load per byte.
    pub fn lut(&self) -> NormLut {
        let mut t = Box::new([[0f32; 256]; 3]);
        for (c, row) in t.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                *x = self.apply(c, v as u8);
            }
        }
        NormLut { t }
    }
}

/// Precomputed [`Normalize`] table.
#[derive(Clone)]
pub struct NormLut {
    pub(crate) t: Box<[[f32; 256]; 3]>,
}
