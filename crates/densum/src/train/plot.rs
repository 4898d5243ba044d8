//! Training curves of one or more runs on one figure: training loss (left) and validation
//! top-1 error (right) against iterations, one colour per run, labelled by model.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::{DensumError, Result};

/// Picks one series of a run's curves.
type Series = fn(&Curves) -> &Vec<(f64, f64)>;

/// DejaVu Sans (see assets/fonts/DejaVu-LICENSE.txt), bundled so plots render anywhere.
static FONT: &[u8] = include_bytes!("../../../../assets/fonts/DejaVuSans.ttf");

/// One run's curves.
#[derive(Clone, Debug, Default)]
pub struct Curves {
    /// Legend label.
    pub label: String,
    /// (iteration, training loss).
    pub loss: Vec<(f64, f64)>,
    /// (iteration, validation top-1 error %).
    pub val_error: Vec<(f64, f64)>,
}

/// Reads a run directory's metrics and model name.
pub fn read_curves(run: &Path) -> Result<Curves> {
    let metrics = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).map_err(|e| DensumError::io(&metrics, e))?;
    let model = std::fs::read_to_string(run.join("config.toml"))
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("model").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let name = run
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut c = Curves {
        label: format!("{model} ({name})"),
        ..Default::default()
    };
    for (i, line) in text.lines().enumerate() {
        // A torn last line (a run killed while writing) is skipped, anything else is an error.
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if i + 1 == text.lines().count() => continue,
            Err(e) => {
                return Err(DensumError::Config(format!(
                    "{}:{}: {e}",
                    metrics.display(),
                    i + 1
                )));
            }
        };
        let it = v["iteration"].as_f64().unwrap_or(0.0);
        match v["kind"].as_str() {
            Some("train") => {
                if let Some(l) = v["loss"].as_f64() {
                    c.loss.push((it, l));
                }
            }
            Some("val") => {
                if let Some(e) = v["top1_error"].as_f64() {
                    c.val_error.push((it, e));
                }
            }
            _ => {}
        }
    }
    if c.loss.is_empty() && c.val_error.is_empty() {
        return Err(DensumError::Config(format!(
            "{} has no metrics yet",
            run.display()
        )));
    }
    Ok(c)
}

fn plot_err(e: impl std::fmt::Display) -> DensumError {
    DensumError::Config(format!("plot: {e}"))
}

/// Draws the runs' curves to a PNG at `out`.
pub fn plot(runs: &[PathBuf], out: &Path) -> Result<()> {
    let curves = runs
        .iter()
        .map(|r| read_curves(r))
        .collect::<Result<Vec<_>>>()?;
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let root = BitMapBackend::new(out, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(700);
    let max_it = curves
        .iter()
        .flat_map(|c| c.loss.iter().chain(&c.val_error).map(|p| p.0))
        .fold(1.0, f64::max);
    let panels: [(&DrawingArea<_, _>, &str, &str, Series); 2] = [
        (&left, "training loss", "loss", |c| &c.loss),
        (&right, "validation top-1 error", "error (%)", |c| {
            &c.val_error
        }),
    ];
    for (area, title, ylabel, series) in panels {
        let ys: Vec<f64> = curves
            .iter()
            .flat_map(|c| series(c).iter().map(|p| p.1))
            .collect();
        let (lo, hi) = ys
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| {
                (a.min(y), b.max(y))
            });
        let (lo, hi) = if lo.is_finite() {
            (lo.min(0.0), hi * 1.05 + 1e-9)
        } else {
            (0.0, 1.0)
        };
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_it, lo..hi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("iteration")
            .y_desc(ylabel)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
        for (i, c) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points = series(c).clone();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(c.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
                });
            if points.len() < 40 {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(plot_err)?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
    }
    root.present()
        .map_err(|e| DensumError::Config(format!("plot {}: {e}", out.display())))?;
    Ok(())
}
