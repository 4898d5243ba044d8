//! Line charts as PNG (training curves, cost sweeps): side-by-side panels, one coloured line
//! per series, a legend. Text uses a bundled font, so charts render on any machine.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::{DensumError, Result};

/// DejaVu Sans (see assets/fonts/DejaVu-LICENSE.txt).
pub(crate) static FONT: &[u8] = include_bytes!("../../../../assets/fonts/DejaVuSans.ttf");

/// One line of a panel.
#[derive(Clone, Debug)]
pub struct Line {
    /// Legend label.
    pub label: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
}

/// One chart of a figure.
#[derive(Clone, Debug)]
pub struct Panel {
    /// Title above the chart.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The lines; line `i` has the same colour in every panel.
    pub lines: Vec<Line>,
}

fn chart_err(e: impl std::fmt::Display) -> DensumError {
    DensumError::Config(format!("chart: {e}"))
}

/// Draws `panels` side by side into a PNG of `panel_width` x `height` pixels per panel.
pub fn draw(panels: &[Panel], out: &Path, panel_width: u32, height: u32) -> Result<()> {
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let root = BitMapBackend::new(out, (panel_width * panels.len().max(1) as u32, height))
        .into_drawing_area();
    root.fill(&WHITE).map_err(chart_err)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let pts = || panel.lines.iter().flat_map(|l| l.points.iter());
        let (x0, x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
        let (y0, y1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
        let (x0, x1) = if x0.is_finite() {
            (x0.min(0.0), x1.max(x0 + 1e-9))
        } else {
            (0.0, 1.0)
        };
        let (y0, y1) = if y0.is_finite() {
            (y0.min(0.0), y1 * 1.05 + 1e-9)
        } else {
            (0.0, 1.0)
        };
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(chart_err)?;
        chart
            .configure_mesh()
            .x_desc(panel.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(chart_err)?;
        for (i, line) in panel.lines.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))
                .map_err(chart_err)?
                .label(line.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
                });
            if line.points.len() < 40 {
                chart
                    .draw_series(
                        line.points
                            .iter()
                            .map(|&p| Circle::new(p, 3, color.filled())),
                    )
                    .map_err(chart_err)?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(chart_err)?;
    }
    root.present()
        .map_err(|e| DensumError::Config(format!("chart {}: {e}", out.display())))
}
