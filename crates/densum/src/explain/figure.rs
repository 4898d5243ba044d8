//! Figures: a labelled grid of images (Grad-CAM overlays, rows = images, columns = networks)
//! and heat-map panels (shortcut reuse). Text uses the bundled font, as the charts do.

use std::path::Path;

use image::{Rgb, RgbImage};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::colormap::jet;
use crate::error::{DensumError, Result};
use crate::measure::chart::FONT;

fn draw_err(e: impl std::fmt::Display) -> DensumError {
    DensumError::Config(format!("figure: {e}"))
}

/// Saves `image` as PNG at `path`.
pub fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    image.save(path).map_err(|e| DensumError::Image {
        path: path.to_path_buf(),
        message: format!("cannot write PNG: {e}"),
    })
}

/// One grid cell: an image and a caption under it.
pub struct Cell {
    /// The image (all cells of a grid have the same size).
    pub image: RgbImage,
    /// Text under the image.
    pub caption: String,
}

/// Cells in rows with a label left of each row and above each column (a column label's
/// lines are separated by `\n`; each line is cut to the cell's width).
pub fn grid(cells: &[Vec<Cell>], row_labels: &[String], col_labels: &[String]) -> Result<RgbImage> {
    let (cw, ch) = cells
        .first()
        .and_then(|r| r.first())
        .map(|c| c.image.dimensions())
        .ok_or_else(|| DensumError::Config("figure: a grid needs at least one cell".into()))?;
    let (left, top, caption, pad) = (120u32, 48u32, 22u32, 10u32);
    let cols = col_labels.len() as u32;
    let width = left + cols * (cw + pad);
    let height = top + cells.len() as u32 * (ch + caption + pad);
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (r, row) in cells.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let x0 = left + c as u32 * (cw + pad);
            let y0 = top + r as u32 * (ch + caption + pad);
            image::imageops::replace(&mut canvas, &cell.image, x0 as i64, y0 as i64);
        }
    }
    let mut buf = canvas.into_raw();
    {
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
        let area = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        let style = ("sans-serif", 15).into_font().color(&BLACK);
        let small = ("sans-serif", 13).into_font().color(&BLACK);
        // About 8 px per character at this size.
        let fit = |s: &str| s.chars().take((cw / 8).max(4) as usize).collect::<String>();
        for (c, label) in col_labels.iter().enumerate() {
            let x = (left + c as u32 * (cw + pad)) as i32;
            for (i, line) in label.lines().take(2).enumerate() {
                area.draw_text(&fit(line), &style, (x, 6 + 19 * i as i32))
                    .map_err(draw_err)?;
            }
        }
        for (r, row) in cells.iter().enumerate() {
            let y = (top + r as u32 * (ch + caption + pad)) as i32;
            if let Some(label) = row_labels.get(r) {
                area.draw_text(label, &style, (6, y + ch as i32 / 2 - 8))
                    .map_err(draw_err)?;
            }
            for (c, cell) in row.iter().enumerate() {
                let x = (left + c as u32 * (cw + pad)) as i32;
                area.draw_text(&cell.caption, &small, (x, y + ch as i32 + 3))
                    .map_err(draw_err)?;
            }
        }
        area.present().map_err(draw_err)?;
    }
    RgbImage::from_raw(width, height, buf)
        .ok_or_else(|| DensumError::Config("figure: canvas size changed".into()))
}

/// One heat-map panel: `values[row][col]`, `None` where there is no connection.
#[derive(Clone, Debug)]
pub struct HeatPanel {
    /// Title above the panel.
    pub title: String,
    /// Labels of the rows, top to bottom (targets).
    pub rows: Vec<String>,
    /// Labels of the columns, left to right (sources).
    pub cols: Vec<String>,
    /// Values, `rows.len()` rows of `cols.len()`.
    pub values: Vec<Vec<Option<f32>>>,
    /// Axis titles: (x, y).
    pub axes: (String, String),
}

/// Draws `panels` side by side into a PNG at `out`, each coloured with [`jet`] from the
/// panel's smallest value (blue) to its largest (red), both in its title; absent cells stay
/// white.
pub fn heat_maps(panels: &[HeatPanel], out: &Path, panel_size: u32) -> Result<()> {
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let count = panels.len().max(1) as u32;
    let root = BitMapBackend::new(out, (panel_size * count, panel_size + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let areas = root.split_evenly((1, count as usize));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let present = || panel.values.iter().flatten().flatten().copied();
        let min = present().fold(f32::INFINITY, f32::min);
        let max = present().fold(f32::NEG_INFINITY, f32::max);
        let (nr, nc) = (panel.rows.len(), panel.cols.len());
        // Cell (r, c) spans [c - 0.5, c + 0.5] x [y - 0.5, y + 0.5] with y = nr - 1 - r, so
        // row 0 is at the top and integer ticks fall on cell centres.
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{} (blue {min:.3}, red {max:.3})", panel.title),
                ("sans-serif", 17),
            )
            .margin(10)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..nc as f64 - 0.5, -0.5f64..nr as f64 - 0.5)
            .map_err(draw_err)?;
        let label = |v: f64, labels: &[String], flip: bool| {
            let i = v.round();
            if (v - i).abs() > 1e-6 || i < 0.0 || i as usize >= labels.len() {
                return String::new();
            }
            let i = i as usize;
            labels[if flip { labels.len() - 1 - i } else { i }].clone()
        };
        let x_fmt = |v: &f64| label(*v, &panel.cols, false);
        let y_fmt = |v: &f64| label(*v, &panel.rows, true);
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(panel.axes.0.as_str())
            .y_desc(panel.axes.1.as_str())
            .x_labels(nc.min(24))
            .y_labels(nr.min(24))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(draw_err)?;
        let cells = panel.values.iter().enumerate().flat_map(|(r, row)| {
            row.iter().enumerate().filter_map(move |(c, v)| {
                v.map(|v| {
                    let t = if max > min {
                        (v - min) / (max - min)
                    } else {
                        0.5
                    };
                    let [red, green, blue] = jet(t);
                    let (x, y) = (c as f64, (nr - 1 - r) as f64);
                    Rectangle::new(
                        [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                        RGBColor(red, green, blue).filled(),
                    )
                })
            })
        });
        chart.draw_series(cells).map_err(draw_err)?;
    }
    root.present()
        .map_err(|e| DensumError::Config(format!("figure {}: {e}", out.display())))
}
