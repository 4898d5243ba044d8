//! `densum gradcam`: Grad-CAM overlays and raw maps, one network or several side by side.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use densum::Device;
use densum::explain::colormap::{input_image, overlay, upscale};
use densum::explain::figure::{Cell, grid, save_png};
use densum::explain::gradcam::{Target, grad_cam};
use densum::explain::write_npy;
use densum::predict::{batch, load_image, softmax};
use serde_json::json;

use crate::weights_args::{WeightsArgs, load};

/// Arguments of `densum gradcam`.
#[derive(Args)]
pub struct GradcamArgs {
    #[command(flatten)]
    net: WeightsArgs,
    /// Images (PNG, JPEG), prepared as `densum predict` prepares them.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Feature map to explain: stem, layer1..layerN (DenseNet also denseblock1..N); default
    /// the last stage's output (with the final BN-ReLU of pre-activation nets and DenseNet).
    #[arg(long)]
    layer: Option<String>,
    /// Class to explain: a class number, or `top` (each image's most probable class, per
    /// network).
    #[arg(long, default_value = "top")]
    class: String,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// More weight files to compare with --weights in one grid PNG, `compare.png`: rows =
    /// images, columns = networks. Each uses the model its file records; the model options
    /// given apply to every network. Give it after the images.
    #[arg(long, num_args = 1..)]
    compare: Vec<PathBuf>,
}

fn file_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

/// Runs `densum gradcam`.
pub fn run(a: &GradcamArgs) -> Result<()> {
    let target = Target::parse(&a.class)?;
    let stems: Vec<String> = a.images.iter().map(|p| file_stem(p)).collect();
    if stems.iter().collect::<HashSet<_>>().len() != stems.len() {
        bail!("two images have the same file name; their outputs in --out would collide");
    }
    let mut networks = vec![(a.net.weights.clone(), a.net.model.clone())];
    networks.extend(a.compare.iter().map(|w| (w.clone(), None)));
    let labels: Vec<String> = networks.iter().map(|(w, _)| file_stem(w)).collect();
    if labels.iter().collect::<HashSet<_>>().len() != labels.len() {
        bail!("two weight files have the same file name; their outputs would collide");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let device = Device::flex();
    let mut columns: Vec<String> = Vec::new();
    let mut cells: Vec<Vec<Cell>> = (0..a.images.len()).map(|_| Vec::new()).collect();
    let mut summary = Vec::new();
    let mut size = None;
    for ((path, model), label) in networks.iter().zip(&labels) {
        let (spec, net) = load(path, model.as_deref(), &a.net.args, &device)?;
        let level = match &a.layer {
            Some(l) => net
                .feature_level(l)
                .with_context(|| format!("--layer for {}", path.display()))?,
            None => net.feature_levels() - 1,
        };
        let input = spec.input_size;
        if *size.get_or_insert(input) != input {
            bail!(
                "{} takes {input} px inputs, the first network {} px: compared networks need one input size",
                path.display(),
                size.unwrap_or(input)
            );
        }
        let layer_name = a.layer.clone().unwrap_or_else(|| format!("layer{level}"));
        columns.push(format!("{}\n{label}", spec.name));
        eprintln!("{}: {} at {layer_name}", path.display(), spec.name);
        for (i, image) in a.images.iter().enumerate() {
            let pixels = load_image(image, input, spec.dataset)?;
            let x = batch(std::slice::from_ref(&pixels), input, &device);
            let cam = grad_cam(&net, x, level, target).with_context(|| {
                format!("Grad-CAM of {} on {}", path.display(), image.display())
            })?;
            let class = cam.classes[0];
            let p = softmax(&cam.logits[0])[class];
            let out = |ext: &str| a.out.join(format!("{}_{label}.{ext}", stems[i]));
            let (png, map_npy, cam_npy) = (out("png"), out("map.npy"), out("cam.npy"));
            let shown = overlay(&input_image(&pixels, input, spec.dataset), &cam.maps[0]);
            save_png(&shown, &png)?;
            write_npy(&map_npy, &cam.map_size, &cam.maps[0])?;
            write_npy(&cam_npy, &cam.cam_size, &cam.cam[0])?;
            println!(
                "{} {}: class {class} (p = {p:.4}) -> {}",
                image.display(),
                spec.name,
                png.display()
            );
            // Small inputs (CIFAR's 32 px) are enlarged in the grid to stay visible.
            let factor = 192u32.div_ceil(input as u32);
            cells[i].push(Cell {
                image: upscale(&shown, factor),
                caption: format!("class {class}, p = {p:.3}"),
            });
            summary.push(json!({
                "image": image.display().to_string(),
                "weights": path.display().to_string(),
                "model": spec.name,
                "layer": layer_name,
                "class": class,
                "logit": cam.logits[0][class],
                "probability": p,
                "overlay": png.display().to_string(),
                "map": map_npy.display().to_string(),
                "map_shape": cam.map_size,
                "cam": cam_npy.display().to_string(),
                "cam_shape": cam.cam_size,
            }));
        }
    }
    let json_path = a.out.join("gradcam.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    if !a.compare.is_empty() {
        let grid_path = a.out.join("compare.png");
        let rows: Vec<String> = stems.clone();
        save_png(&grid(&cells, &rows, &columns)?, &grid_path)?;
        println!("grid: {}", grid_path.display());
    }
    println!("summary: {}", json_path.display());
    Ok(())
}
