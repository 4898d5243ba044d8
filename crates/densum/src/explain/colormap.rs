//! Colour maps and overlays for heat maps.

use image::{Rgb, RgbImage};

use crate::zoo::Dataset;

/// The jet colour map (blue, cyan, yellow, red) at `v` in [0, 1] (clamped), the piecewise
/// linear form of MATLAB's and OpenCV's `COLORMAP_JET` that pytorch-grad-cam overlays with.
pub fn jet(v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0);
    let channel = |centre: f32| {
        let c = (1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0);
        (c * 255.0).round() as u8
    };
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// `map` (row-major, `image`'s size, values in [0, 1]) in jet colours blended half and half
/// with `image`, as pytorch-grad-cam's `show_cam_on_image` with `image_weight = 0.5` (without
/// its final rescaling by the maximum, which only brightens).
pub fn overlay(image: &RgbImage, map: &[f32]) -> RgbImage {
    let (w, h) = image.dimensions();
    assert_eq!(map.len(), (w * h) as usize, "map and image differ in size");
    RgbImage::from_fn(w, h, |x, y| {
        let heat = jet(map[(y * w + x) as usize]);
        let px = image.get_pixel(x, y);
        Rgb(std::array::from_fn(|c| {
            (heat[c] as u16 + px[c] as u16).div_ceil(2) as u8
        }))
    })
}

/// The input image as the network saw it (cropped and resized by
/// [`load_image`](crate::predict::load_image)), from its `[3, size, size]` normalised pixels.
pub fn input_image(pixels: &[f32], size: usize, dataset: Dataset) -> RgbImage {
    let (mean, std) = dataset.normalization();
    let plane = size * size;
    RgbImage::from_fn(size as u32, size as u32, |x, y| {
        let i = y as usize * size + x as usize;
        Rgb(std::array::from_fn(|c| {
            ((pixels[c * plane + i] * std[c] + mean[c]) * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8
        }))
    })
}

/// An image scaled up `factor` times by repeating pixels (small inputs stay visible).
pub fn upscale(image: &RgbImage, factor: u32) -> RgbImage {
    let factor = factor.max(1);
    let (w, h) = image.dimensions();
    RgbImage::from_fn(w * factor, h * factor, |x, y| {
        *image.get_pixel(x / factor, y / factor)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_runs_blue_to_red() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(0.5), [128, 255, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(jet(-1.0), jet(0.0));
    }

    #[test]
    fn overlay_blends_half_and_half() {
        let img = RgbImage::from_pixel(2, 1, Rgb([200, 100, 0]));
        let out = overlay(&img, &[0.0, 1.0]);
        assert_eq!(out.get_pixel(0, 0).0, [100, 50, 64]);
        assert_eq!(out.get_pixel(1, 0).0, [164, 50, 0]);
        assert_eq!(upscale(&out, 3).dimensions(), (6, 3));
    }
}
