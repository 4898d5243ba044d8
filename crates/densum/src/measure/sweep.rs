//! How cost grows with depth, width or batch (`densum bench --sweep`): the measured points,
//! their CSV lines and their chart.

use std::ops::Range;

use super::bench::{BenchConfig, BenchMode, BenchResult};
use super::chart::{Line, Panel};
use crate::error::{DensumError, Result};
use crate::zoo::{self, ModelOptions, ModelSpec};

/// What a sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepKind {
    /// The depth in the model's name (`resnet26`, `resnet50`, ...).
    Depth,
    /// The width multiplier.
    Width,
    /// Images per batch.
    Batch,
}

impl SweepKind {
    /// `depth`, `width` or `batch`.
    pub fn name(self) -> &'static str {
        match self {
            SweepKind::Depth => "depth",
            SweepKind::Width => "width",
            SweepKind::Batch => "batch",
        }
    }
}

/// A sweep: its kind and the values, as given.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    /// What varies.
    pub kind: SweepKind,
    /// The values, in order.
    pub values: Vec<f64>,
}

impl Sweep {
    /// Parses `KIND=V1,V2,...` (`depth=26,50,101`, `width=0.25,0.5`, `batch=16,32`). Depths
    /// and batches must be whole numbers of at least 1; widths are checked by the models.
    pub fn parse(text: &str) -> Result<Self> {
        let usage = || {
            DensumError::Config(format!(
                "sweep `{text}`: expected KIND=V1,V2,... with KIND depth, width or batch"
            ))
        };
        let (kind, values) = text.split_once('=').ok_or_else(usage)?;
        let kind = match kind {
            "depth" => SweepKind::Depth,
            "width" => SweepKind::Width,
            "batch" => SweepKind::Batch,
            _ => return Err(usage()),
        };
        let values = values
            .split(',')
            .filter(|v| !v.is_empty())
            .map(|v| {
                let bad = |why: &str| {
                    DensumError::Config(format!(
                        "sweep {}: `{v}` is not a valid value ({why})",
                        kind.name()
                    ))
                };
                match kind {
                    SweepKind::Width => v.parse::<f64>().map_err(|_| bad("a number")),
                    _ => match v.parse::<usize>() {
                        Ok(n) if n >= 1 => Ok(n as f64),
                        _ => Err(bad("a whole number of at least 1")),
                    },
                }
            })
            .collect::<Result<Vec<f64>>>()?;
        if values.is_empty() {
            return Err(usage());
        }
        Ok(Sweep { kind, values })
    }
}

/// Where the depth sits in a registered name: the digits that end the first `_`-separated
/// part ending in digits, as the registry spells its families (`ds2net50`, `dense2net121`,
/// `res2net50_26w_4s`, `ds2next50_32x4d`, `densenet_bc100_k12`, `wrn28_10`); digits inside a
/// family's name (the 2 of Res2Net) are not the depth.
pub fn depth_digits(name: &str) -> Option<Range<usize>> {
    let mut start = 0;
    for part in name.split('_') {
        let digits = part.len() - part.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && digits < part.len() {
            let end = start + part.len();
            return Some(end - digits..end);
        }
        start += part.len() + 1;
    }
    None
}

/// The registered name of `model` at `depth` (`res2net50_26w_4s` at 101 is
/// `res2net101_26w_4s`); an error names the depths the registry has for that family.
pub fn with_depth(model: &str, depth: usize) -> Result<String> {
    let name = zoo::find(model)?.name.as_str();
    let Some(at) = depth_digits(name) else {
        return Err(DensumError::Config(format!(
            "sweep depth: `{name}` has no depth in its name"
        )));
    };
    let (prefix, suffix) = (&name[..at.start], &name[at.end..]);
    let candidate = format!("{prefix}{depth}{suffix}");
    if zoo::find(&candidate).is_ok() {
        return Ok(candidate);
    }
    let mut depths: Vec<usize> = zoo::registry()
        .iter()
        .filter_map(|e| {
            let at = depth_digits(&e.name)?;
            let same = e.name[..at.start] == *prefix && e.name[at.end..] == *suffix;
            same.then(|| e.name[at].parse().ok()).flatten()
        })
        .collect();
    depths.sort_unstable();
    let depths: Vec<String> = depths.iter().map(|d| d.to_string()).collect();
    Err(DensumError::Config(format!(
        "sweep depth: no model `{candidate}`; {prefix}N{suffix} is registered at depth {}",
        depths.join(", ")
    )))
}

/// One point to measure: the series (the model as given), the swept value, the model and how
/// to measure it.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    /// The model as the user named it: one line per series in the chart.
    pub series: String,
    /// The swept value.
    pub x: f64,
    /// The model at this point.
    pub spec: ModelSpec,
    /// How to measure it.
    pub cfg: BenchConfig,
}

/// Every point of `sweep` for each model, resolved (and checked) before anything is
/// measured, so a bad value fails before minutes of measuring.
pub fn plan(
    models: &[String],
    options: &ModelOptions,
    cfg: &BenchConfig,
    sweep: &Sweep,
) -> Result<Vec<SweepPoint>> {
    let mut points = Vec::new();
    for model in models {
        for &x in &sweep.values {
            let mut options = options.clone();
            let mut name = model.clone();
            let mut c = *cfg;
            match sweep.kind {
                SweepKind::Depth => name = with_depth(model, x as usize)?,
                SweepKind::Width => options.width = Some(x),
                SweepKind::Batch => c.batch = x as usize,
            }
            c.check()?;
            points.push(SweepPoint {
                series: model.clone(),
                x,
                spec: zoo::resolve(&name, &options)?,
                cfg: c,
            });
        }
    }
    Ok(points)
}

/// One measured point: what a CSV line and the chart show.
#[derive(Clone, Debug)]
pub struct SweepRow {
    /// The series (model as given).
    pub series: String,
    /// The swept value.
    pub x: f64,
    /// The model measured (registry name).
    pub model: String,
    /// Trainable parameters.
    pub params: usize,
    /// Forward MACs per image.
    pub macs: u64,
    /// Median training step, ms.
    pub train_ms: Option<f64>,
    /// Training peak memory, MB.
    pub train_mb: Option<f64>,
    /// Median inference pass, ms.
    pub infer_ms: Option<f64>,
    /// Inference peak memory, MB.
    pub infer_mb: Option<f64>,
    /// Training images per second.
    pub train_images_per_s: Option<f64>,
}

impl SweepRow {
    /// The row of `point` measured as `r`.
    pub fn new(point: &SweepPoint, r: &BenchResult) -> Self {
        let t = r.train.as_ref();
        let i = r.infer.as_ref();
        let mb = |b: Option<usize>| b.map(|b| b as f64 / 1e6);
        SweepRow {
            series: point.series.clone(),
            x: point.x,
            model: r.model.clone(),
            params: r.params,
            macs: r.macs,
            train_ms: t.map(|t| t.step_ms.median),
            train_mb: mb(t.and_then(|t| t.peak_bytes)),
            infer_ms: i.map(|i| i.forward_ms.median),
            infer_mb: mb(i.and_then(|i| i.peak_bytes)),
            train_images_per_s: t.map(|t| t.images_per_s),
        }
    }

    /// The CSV header of a sweep of `kind`.
    pub fn csv_header(kind: SweepKind) -> String {
        format!(
            "model,series,{},params,macs,train_step_ms,train_peak_mb,infer_ms,infer_peak_mb,train_images_per_s",
            kind.name()
        )
    }

    /// This row as a CSV line (no newline); unmeasured figures are empty.
    pub fn csv_line(&self) -> String {
        let show = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        format!(
            "{},{},{},{},{},{},{},{},{},{}",
            self.model,
            self.series,
            self.x,
            self.params,
            self.macs,
            show(self.train_ms),
            show(self.train_mb),
            show(self.infer_ms),
            show(self.infer_mb),
            show(self.train_images_per_s)
        )
    }
}

/// The chart of a sweep: time and peak memory against the swept value, one line per series;
/// training figures unless only inference was measured.
pub fn panels(
    rows: &[SweepRow],
    series: &[String],
    kind: SweepKind,
    mode: BenchMode,
) -> Vec<Panel> {
    let panel = |title: &str, y: &str, pick: &dyn Fn(&SweepRow) -> Option<f64>| Panel {
        title: title.into(),
        x_label: kind.name().into(),
        y_label: y.into(),
        lines: series
            .iter()
            .map(|s| Line {
                label: s.clone(),
                points: rows
                    .iter()
                    .filter(|r| r.series == *s)
                    .filter_map(|r| pick(r).map(|y| (r.x, y)))
                    .collect(),
            })
            .collect(),
    };
    if mode == BenchMode::Infer {
        vec![
            panel("inference time", "ms", &|r| r.infer_ms),
            panel("inference peak memory", "MB", &|r| r.infer_mb),
        ]
    } else {
        vec![
            panel("training step time", "ms", &|r| r.train_ms),
            panel("training peak memory", "MB", &|r| r.train_mb),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_depth_is_the_number_the_registry_names_a_family_by() {
        assert_eq!(with_depth("ds2net50", 101).unwrap(), "ds2net101");
        assert_eq!(
            with_depth("res2net50_26w_4s", 101).unwrap(),
            "res2net101_26w_4s"
        );
        assert_eq!(with_depth("dense2net121", 121).unwrap(), "dense2net121");
        assert_eq!(
            with_depth("ds2next50_32x4d", 50).unwrap(),
            "ds2next50_32x4d"
        );
        assert_eq!(with_depth("resnet50", 26).unwrap(), "resnet26");
        assert_eq!(
            with_depth("preact_resnet164", 1001).unwrap(),
            "preact_resnet1001"
        );
        assert_eq!(depth_digits("densenet_bc100_k12"), Some(11..14));
        // A depth the family lacks: the error lists the depths it has.
        let e = with_depth("ds2next50_32x4d", 101).unwrap_err().to_string();
        assert!(
            e.contains("ds2next101_32x4d") && e.contains("depth 50"),
            "{e}"
        );
        let e = with_depth("dense2net121", 169).unwrap_err().to_string();
        assert!(e.contains("dense2net169") && e.contains("121"), "{e}");
        assert!(with_depth("nosuchnet50", 26).is_err());
    }

    #[test]
    fn sweep_values_are_checked() {
        let s = Sweep::parse("depth=26,50").unwrap();
        assert_eq!((s.kind, s.values), (SweepKind::Depth, vec![26.0, 50.0]));
        for bad in [
            "batch=0",
            "depth=x",
            "depth=0",
            "batch=1.5",
            "size=1",
            "width=",
            "batch",
        ] {
            assert!(Sweep::parse(bad).is_err(), "{bad}");
        }
        let cfg = BenchConfig {
            batch: 0,
            warmup: 0,
            iters: 1,
            mode: BenchMode::Infer,
            optimizer: Default::default(),
            conv_profile: false,
        };
        let sweep = Sweep::parse("width=0.5").unwrap();
        let e = plan(&["resnet20".into()], &ModelOptions::default(), &cfg, &sweep).unwrap_err();
        assert!(e.to_string().contains("batch"), "{e}");
    }
}
