//! Training curves of one or more runs on one figure: training loss (left) and validation
//! top-1 error (right) against iterations, one colour per run, labelled by model.

use std::path::{Path, PathBuf};

use crate::error::{DensumError, Result};
use crate::measure::chart::{self, Line, Panel};

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

/// Draws the runs' curves to a PNG at `out`: training loss and validation top-1 error
/// against iterations.
pub fn plot(runs: &[PathBuf], out: &Path) -> Result<()> {
    let curves = runs
        .iter()
        .map(|r| read_curves(r))
        .collect::<Result<Vec<_>>>()?;
    let panel = |title: &str, y: &str, pick: fn(&Curves) -> &Vec<(f64, f64)>| Panel {
        title: title.into(),
        x_label: "iteration".into(),
        y_label: y.into(),
        lines: curves
            .iter()
            .map(|c| Line {
                label: c.label.clone(),
                points: pick(c).clone(),
            })
            .collect(),
    };
    let panels = [
        panel("training loss", "loss", |c| &c.loss),
        panel("validation top-1 error", "error (%)", |c| &c.val_error),
    ];
    chart::draw(&panels, out, 700, 560)
}
