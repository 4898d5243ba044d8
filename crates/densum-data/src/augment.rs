//! Augmentations and preprocessing of the papers' recipes, applied sample by sample: pad-4
//! random crop + flip for CIFAR (He et al. 2016, followed by DSNet, RGSNet and DenseNet's C10+
//! / C100+), random-resized crop + flip for ImageNet training and resize 256 + centre crop 224
//! for its evaluation (as torchvision's reference recipe), cutout (DeVries & Taylor 2017).
//!
//! The pipeline has up to three stages: an optional resampling (random-resized-crop, or
//! resize of the shorter side), a window (centre crop, or random crop of the zero-padded
//! image) with optional horizontal flip that writes normalised floats straight into the
//! batch buffer, and an optional cutout on those floats (as in DeVries & Taylor, the holes
//! are zeros of the normalised image). All random draws come from one [`Rng`] per sample.

use crate::dataset::Image;
use crate::error::{Error, Result};
use crate::normalize::NormLut;
use crate::rng::Rng;
use image::{RgbImage, imageops};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// torchvision's `RandomResizedCrop`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandomResizedCrop {
    /// Output side.
    pub size: u32,
    /// Range of the crop's area as a fraction of the image's.
    pub scale: [f64; 2],
    /// Range of the crop's aspect ratio (width / height).
    pub ratio: [f64; 2],
}

/// Random crop of the zero-padded image (torchvision `RandomCrop(size, padding=pad)`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PadCrop {
    /// Zero padding on each side.
    pub pad: u32,
    /// Output side; the input size when absent.
    #[serde(default)]
    pub size: Option<u32>,
}

/// Cutout: square holes, zero in the normalised image, centres uniform over the image and
/// clipped at the border.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cutout {
    /// Number of holes.
    pub holes: u32,
    /// Side of each hole.
    pub length: u32,
}

/// What to do to each sample. Serialisable so a run records its exact preprocessing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Random-resized-crop (ImageNet training).
    #[serde(default)]
    pub random_resized_crop: Option<RandomResizedCrop>,
    /// Resize so the shorter side has this length (ImageNet evaluation).
    #[serde(default)]
    pub resize: Option<u32>,
    /// Centre crop to this side (pads with zeros if the image is smaller).
    #[serde(default)]
    pub center_crop: Option<u32>,
    /// Pad-and-random-crop (CIFAR).
    #[serde(default)]
    pub pad_crop: Option<PadCrop>,
    /// Horizontal flip with probability 1/2.
    #[serde(default)]
    pub hflip: bool,
    /// Cutout.
    #[serde(default)]
    pub cutout: Option<Cutout>,
}

impl AugmentConfig {
    /// Names accepted by [`AugmentConfig::preset`].
    pub const PRESETS: [&'static str; 4] = ["cifar", "imagenet-train", "imagenet-eval", "none"];

    /// A named preset: `cifar` (pad 4 + random crop + flip), `imagenet-train`
    /// (random-resized-crop 224, scale 0.08-1, ratio 3/4-4/3, + flip), `imagenet-eval`
    /// (resize 256, centre crop 224), `none`.
    pub fn preset(name: &str) -> Result<AugmentConfig> {
        Ok(match name {
            "cifar" => AugmentConfig {
                pad_crop: Some(PadCrop { pad: 4, size: None }),
                hflip: true,
                ..Default::default()
            },
            "imagenet-train" => AugmentConfig {
                random_resized_crop: Some(RandomResizedCrop {
                    size: 224,
                    scale: [0.08, 1.0],
                    ratio: [3.0 / 4.0, 4.0 / 3.0],
                }),
                hflip: true,
                ..Default::default()
            },
            "imagenet-eval" => AugmentConfig {
                resize: Some(256),
                center_crop: Some(224),
                ..Default::default()
            },
            "none" => AugmentConfig::default(),
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown augmentation preset '{name}' (one of {})",
                    Self::PRESETS.join(", ")
                )));
            }
        })
    }

    /// Adds cutout (the dense2net recipe uses 1 hole of length 8).
    pub fn with_cutout(mut self, holes: u32, length: u32) -> Self {
        self.cutout = Some(Cutout { holes, length });
        self
    }

    /// Output `(height, width)` for inputs of size `input`, when it is fixed.
    pub fn output_size(&self, input: Option<(u32, u32)>) -> Option<(u32, u32)> {
        if let Some(r) = &self.random_resized_crop {
            return Some((r.size, r.size));
        }
        if let Some(c) = self.center_crop {
            return Some((c, c));
        }
        if let Some(PadCrop { size: Some(s), .. }) = &self.pad_crop {
            return Some((*s, *s));
        }
        if self.resize.is_some() {
            return None; // depends on each image's aspect ratio
        }
        input
    }
}

/// A validated [`AugmentConfig`], ready to apply.
#[derive(Clone, Debug)]
pub struct Augment {
    cfg: AugmentConfig,
}

impl Augment {
    /// Validates the configuration.
    pub fn new(cfg: AugmentConfig) -> Result<Augment> {
        let bad = |m: &str| Err(Error::Invalid(format!("augmentation: {m}")));
        if let Some(r) = &cfg.random_resized_crop {
            if r.size == 0
                || !(r.scale[0] > 0.0 && r.scale[0] <= r.scale[1] && r.scale[1] <= 1.0)
                || !(r.ratio[0] > 0.0 && r.ratio[0] <= r.ratio[1] && r.ratio[1].is_finite())
            {
                return bad(
                    "random_resized_crop needs size > 0, 0 < scale0 <= scale1 <= 1, 0 < ratio0 <= ratio1",
                );
            }
            if cfg.resize.is_some() || cfg.center_crop.is_some() || cfg.pad_crop.is_some() {
                return bad(
                    "random_resized_crop cannot be combined with resize, center_crop or pad_crop",
                );
            }
        }
        if cfg.center_crop.is_some() && cfg.pad_crop.is_some() {
            return bad("choose either center_crop or pad_crop");
        }
        if cfg.resize == Some(0) || cfg.center_crop == Some(0) {
            return bad("sizes must be positive");
        }
        if let Some(PadCrop { size: Some(0), .. }) = cfg.pad_crop {
            return bad("pad_crop size must be positive");
        }
        Ok(Augment { cfg })
    }

    /// From a preset name.
    pub fn preset(name: &str) -> Result<Augment> {
        Augment::new(AugmentConfig::preset(name)?)
    }

    /// The configuration.
    pub fn config(&self) -> &AugmentConfig {
        &self.cfg
    }

    /// Output size for an input of `(height, width)`.
    pub fn output_size_for(&self, h: u32, w: u32) -> (u32, u32) {
        if let Some(s) = self.cfg.output_size(Some((h, w))) {
            return s;
        }
        let (h, w) = self.cfg.resize.map_or((h, w), |s| resized(h, w, s));
        (h, w)
    }

    /// Stage 1: resampling, if configured (else the input, borrowed).
    fn resample<'a>(&self, img: &'a Image, rng: &mut Rng) -> Cow<'a, Image> {
        if let Some(r) = &self.cfg.random_resized_crop {
            let (y, x, h, w) = rrc_box(img.height, img.width, r, rng);
            return Cow::Owned(crop_resize(img, y, x, h, w, r.size, r.size));
        }
        if let Some(s) = self.cfg.resize {
            let (h, w) = resized(img.height, img.width, s);
            if (h, w) != (img.height, img.width) {
                return Cow::Owned(crop_resize(img, 0, 0, img.height, img.width, h, w));
            }
        }
        Cow::Borrowed(img)
    }

    /// Applies the pipeline to `img` for the given generator and writes the normalised
    /// result, NCHW for one sample, into `out` (length `3 * h * w` of the output size).
    pub fn apply_into(
        &self,
        img: &Image,
        rng: &mut Rng,
        lut: &NormLut,
        out: &mut [f32],
    ) -> Result<()> {
        let img = self.resample(img, rng);
        let (ih, iw) = (img.height as i64, img.width as i64);
        let (oh, ow) = self.output_size_for(img.height, img.width);
        let (oh, ow) = (oh as i64, ow as i64);
        if out.len() != (3 * oh * ow) as usize {
            return Err(Error::Invalid(format!(
                "image of {iw}x{ih} gives {ow}x{oh} after augmentation, but the batch holds {} values per image",
                out.len()
            )));
        }
        // Window origin in input coordinates; may be negative or overhang (zero padding).
        let (oy, ox) = if let Some(p) = &self.cfg.pad_crop {
            let pad = p.pad as i64;
            let sy = (ih + 2 * pad - oh).max(0) as u64;
            let sx = (iw + 2 * pad - ow).max(0) as u64;
            let y = rng.below(sy + 1) as i64 - pad;
            let x = rng.below(sx + 1) as i64 - pad;
            (y, x)
        } else if self.cfg.center_crop.is_some() {
            // torchvision: int(round((h - th) / 2)), round half to even.
            (
                ((ih - oh) as f64 / 2.0).round_ties_even() as i64,
                ((iw - ow) as f64 / 2.0).round_ties_even() as i64,
            )
        } else {
            (0, 0)
        };
        let flip = self.cfg.hflip && rng.coin();
        write_window(&img, oy, ox, oh as usize, ow as usize, flip, lut, out);
        if let Some(c) = &self.cfg.cutout {
            cutout(out, oh as usize, ow as usize, c, rng);
        }
        Ok(())
    }

    /// The augmented image as 8-bit RGB (no normalisation, no cutout): for inspection.
    pub fn apply_image(&self, img: &Image, rng: &mut Rng) -> Result<Image> {
        let (h, w) = {
            let tmp = self.resample(img, &mut rng.clone());
            self.output_size_for(tmp.height, tmp.width)
        };
        let mut f = vec![0f32; 3 * h as usize * w as usize];
        let ident = crate::normalize::Normalize {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
        }
        .lut();
        let cfg = AugmentConfig {
            cutout: None,
            ..self.cfg.clone()
        };
        Augment { cfg }.apply_into(img, rng, &ident, &mut f)?;
        let plane = (h * w) as usize;
        let mut px = vec![0u8; plane * 3];
        for i in 0..plane {
            for c in 0..3 {
                px[i * 3 + c] = f[c * plane + i].round().clamp(0.0, 255.0) as u8;
            }
        }
        Image::new(w, h, px)
    }
}

/// Shorter side to `s`, as torchvision: the long side is `int(s * long / short)`.
fn resized(h: u32, w: u32, s: u32) -> (u32, u32) {
    if h <= w {
        (s, ((s as u64 * w as u64) / h as u64).max(1) as u32)
    } else {
        (((s as u64 * h as u64) / w as u64).max(1) as u32, s)
    }
}

/// torchvision's `RandomResizedCrop.get_params`: 10 tries, then a centre crop.
fn rrc_box(h: u32, w: u32, r: &RandomResizedCrop, rng: &mut Rng) -> (u32, u32, u32, u32) {
    let area = h as f64 * w as f64;
    let (lr0, lr1) = (r.ratio[0].ln(), r.ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.uniform(r.scale[0], r.scale[1]);
        let aspect = rng.uniform(lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round();
        let ch = (target / aspect).sqrt().round();
        if cw > 0.0 && ch > 0.0 && cw <= w as f64 && ch <= h as f64 {
            let (cw, ch) = (cw as u32, ch as u32);
            let y = rng.below((h - ch + 1) as u64) as u32;
            let x = rng.below((w - cw + 1) as u64) as u32;
            return (y, x, ch, cw);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < r.ratio[0] {
        (w, ((w as f64 / r.ratio[0]).round() as u32).clamp(1, h))
    } else if in_ratio > r.ratio[1] {
        (((h as f64 * r.ratio[1]).round() as u32).clamp(1, w), h)
    } else {
        (w, h)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// Crops `(y, x, h, w)` and resizes to `(oh, ow)` with an antialiased bilinear filter
/// (the `image` crate's triangle filter, like PIL's bilinear).
fn crop_resize(img: &Image, y: u32, x: u32, h: u32, w: u32, oh: u32, ow: u32) -> Image {
    let mut crop = Vec::with_capacity(h as usize * w as usize * 3);
    let stride = img.width as usize * 3;
    for r in y..y + h {
        let start = r as usize * stride + x as usize * 3;
        crop.extend_from_slice(&img.pixels[start..start + w as usize * 3]);
    }
    let buf = RgbImage::from_raw(w, h, crop).expect("crop buffer has w*h*3 bytes");
    let out = if (h, w) == (oh, ow) {
        buf
    } else {
        imageops::resize(&buf, ow, oh, imageops::FilterType::Triangle)
    };
    Image {
        width: ow,
        height: oh,
        pixels: out.into_raw(),
    }
}

/// Writes the `oh x ow` window at `(oy, ox)` of `img` (zeros outside), optionally flipped,
/// normalised through `lut`, as CHW planes into `out`.
#[allow(clippy::too_many_arguments)]
fn write_window(
    img: &Image,
    oy: i64,
    ox: i64,
    oh: usize,
    ow: usize,
    flip: bool,
    lut: &NormLut,
    out: &mut [f32],
) {
    let plane = oh * ow;
    let (ih, iw) = (img.height as i64, img.width as i64);
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    let (lr, lg, lb) = (&lut.t[0], &lut.t[1], &lut.t[2]);
    // Output columns whose source column lies inside the image: a contiguous range.
    let src_x = |x: usize| -> i64 {
        if flip {
            ox + (ow - 1 - x) as i64
        } else {
            ox + x as i64
        }
    };
    for y in 0..oh {
        let sy = oy + y as i64;
        let row = y * ow;
        let (rr, gr, br) = (
            &mut r_plane[row..row + ow],
            &mut g_plane[row..row + ow],
            &mut b_plane[row..row + ow],
        );
        if sy < 0 || sy >= ih {
            rr.fill(lr[0]);
            gr.fill(lg[0]);
            br.fill(lb[0]);
            continue;
        }
        let src_row = &img.pixels[(sy * iw * 3) as usize..((sy + 1) * iw * 3) as usize];
        for x in 0..ow {
            let sx = src_x(x);
            if sx < 0 || sx >= iw {
                rr[x] = lr[0];
                gr[x] = lg[0];
                br[x] = lb[0];
            } else {
                let p = &src_row[sx as usize * 3..sx as usize * 3 + 3];
                rr[x] = lr[p[0] as usize];
                gr[x] = lg[p[1] as usize];
                br[x] = lb[p[2] as usize];
            }
        }
    }
}

/// Zeroes `holes` squares of side `length` in every channel.
fn cutout(out: &mut [f32], h: usize, w: usize, c: &Cutout, rng: &mut Rng) {
    let plane = h * w;
    let half = c.length as i64 / 2;
    for _ in 0..c.holes {
        let cy = rng.below(h as u64) as i64;
        let cx = rng.below(w as u64) as i64;
        let (y0, y1) = (
            (cy - half).max(0) as usize,
            ((cy + half).min(h as i64)) as usize,
        );
        let (x0, x1) = (
            (cx - half).max(0) as usize,
            ((cx + half).min(w as i64)) as usize,
        );
        for ch in 0..3 {
            for y in y0..y1 {
                out[ch * plane + y * w + x0..ch * plane + y * w + x1].fill(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Normalize;

    fn ramp(h: u32, w: u32) -> Image {
        let px = (0..h * w * 3).map(|i| (i % 251) as u8).collect();
        Image::new(w, h, px).unwrap()
    }

    #[test]
    fn no_aug_is_plain_normalisation() {
        let img = ramp(4, 5);
        let a = Augment::preset("none").unwrap();
        let mut out = vec![0f32; 60];
        a.apply_into(
            &img,
            &mut Rng::new(0, 0, 0, 0),
            &Normalize::CIFAR10.lut(),
            &mut out,
        )
        .unwrap();
        // Channel 1 of pixel (y=2, x=3).
        let v = img.pixels[(2 * 5 + 3) * 3 + 1];
        assert_eq!(out[20 + 2 * 5 + 3], Normalize::CIFAR10.apply(1, v));
    }

    #[test]
    fn pad_crop_is_a_shifted_window_with_zero_padding() {
        let img = ramp(8, 8);
        let a = Augment::new(AugmentConfig {
            pad_crop: Some(PadCrop { pad: 4, size: None }),
            hflip: true,
            ..Default::default()
        })
        .unwrap();
        let mut seen_flip = [false; 2];
        for i in 0..64 {
            let out = a.apply_image(&img, &mut Rng::new(1, 0, i, 0)).unwrap();
            // Find the shift: every pixel is either 0 (padding) or the source at a fixed shift.
            let mut ok = false;
            for flip in [false, true] {
                for dy in -4i64..=4 {
                    for dx in -4i64..=4 {
                        let matches = (0..8i64).all(|y| {
                            (0..8i64).all(|x| {
                                let sx = if flip { 7 - x } else { x } + dx;
                                let sy = y + dy;
                                let o = &out.pixels[((y * 8 + x) * 3) as usize..][..3];
                                if (0..8).contains(&sy) && (0..8).contains(&sx) {
                                    o == &img.pixels[((sy * 8 + sx) * 3) as usize..][..3]
                                } else {
                                    o == [0, 0, 0]
                                }
                            })
                        });
                        if matches {
                            ok = true;
                            seen_flip[flip as usize] = true;
                        }
                    }
                }
            }
            assert!(ok, "sample {i} is not a padded shifted window");
        }
        assert!(seen_flip[0] && seen_flip[1]);
    }

    #[test]
    fn eval_preset_sizes() {
        let a = Augment::preset("imagenet-eval").unwrap();
        assert_eq!(a.output_size_for(300, 500), (224, 224));
        let img = ramp(300, 500);
        let out = a.apply_image(&img, &mut Rng::new(0, 0, 0, 0)).unwrap();
        assert_eq!((out.height, out.width), (224, 224));
        assert_eq!(resized(300, 500, 256), (256, 426));
    }

    #[test]
    fn rrc_box_within_bounds_and_scale() {
        let r = AugmentConfig::preset("imagenet-train")
            .unwrap()
            .random_resized_crop
            .unwrap();
        for i in 0..500 {
            let (y, x, h, w) = rrc_box(100, 150, &r, &mut Rng::new(3, 0, i, 0));
            assert!(h >= 1 && w >= 1 && y + h <= 100 && x + w <= 150);
            let frac = (h * w) as f64 / 15000.0;
            assert!(frac <= 1.0 + 1e-9 && frac > 0.05, "{frac}");
        }
    }

    #[test]
    fn cutout_zeroes_a_square() {
        let img = Image::new(16, 16, vec![200; 16 * 16 * 3]).unwrap();
        let a = Augment::new(AugmentConfig::default().with_cutout(1, 8)).unwrap();
        let mut out = vec![0f32; 3 * 256];
        a.apply_into(
            &img,
            &mut Rng::new(0, 0, 5, 0),
            &Normalize::CIFAR10.lut(),
            &mut out,
        )
        .unwrap();
        let zeros = out[..256].iter().filter(|&&v| v == 0.0).count();
        assert!(zeros > 0 && zeros <= 64, "{zeros}");
        let z1 = out[256..512].iter().filter(|&&v| v == 0.0).count();
        assert_eq!(zeros, z1);
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = AugmentConfig::preset("imagenet-train")
            .unwrap()
            .with_cutout(1, 16);
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<AugmentConfig>(&s).unwrap(), c);
    }
}
