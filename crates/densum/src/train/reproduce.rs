//! `densum reproduce`: the experiments behind the seed papers' tables (spec section 5), at a
//! chosen scale, written as a markdown table of measured error beside the paper's.
//!
//! Scales:
//! - `full`: the paper's recipe on the whole dataset (a GPU job).
//! - `small`: the paper's recipe shortened to 30 epochs (cosine), whole dataset.
//! - `tiny`: a few minutes per run on a busy 2-core CPU: 1,000 training images (100 per
//!   class, stratified) and 500 validation images carved from the training split, the
//!   table's width, 3 epochs of batch 50, SGD momentum 0.9, lr 0.05 with 10 warm-up
//!   iterations and cosine decay, weight decay 5e-4, crop + flip. It checks that every
//!   configuration trains end to end and learns; at this size differences between the models
//!   are within seed noise and say nothing about the papers' claims.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::config::{self, TrainConfig};
use super::{RunOptions, train};
use crate::error::{DensumError, Result};

/// One row of a table: a model (with options) and the paper's error.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Label in the table.
    pub label: &'static str,
    /// Registry name.
    pub model: &'static str,
    /// Extra model options (TOML inline table text, may be empty).
    pub options: &'static str,
    /// The paper's top-1 error (%), on the paper's dataset.
    pub paper: f64,
}

/// A table of the papers.
#[derive(Clone, Debug, Serialize)]
pub struct Table {
    /// Name used on the command line.
    pub name: &'static str,
    /// What the table is.
    pub title: &'static str,
    /// The paper's dataset and width.
    pub setting: &'static str,
    /// The paper's recipe (for `full` and `small`).
    pub recipe: &'static str,
    /// Width multiplier of the paper's setting.
    pub width: f64,
    /// Rows.
    pub rows: Vec<Row>,
}

fn row(label: &'static str, model: &'static str, options: &'static str, paper: f64) -> Row {
    Row {
        label,
        model,
        options,
        paper,
    }
}

/// The reproducible tables.
pub fn tables() -> Vec<Table> {
    vec![
        Table {
            name: "dsnet-depth",
            title: "DSNet Table 3: ResNet / DSNet / DS2Net by depth",
            setting: "CIFAR-100, width 0.25",
            recipe: "dsnet-cifar",
            width: 0.25,
            rows: vec![
                row("ResNet-26", "resnet26", "", 27.74),
                row("DSNet-26", "dsnet26", "", 26.80),
                row("DS2Net-26", "ds2net26", "", 26.30),
                row("ResNet-38", "resnet38", "", 27.26),
                row("DSNet-38", "dsnet38", "", 25.59),
                row("DS2Net-38", "ds2net38", "", 25.30),
                row("ResNet-50", "resnet50", "", 26.13),
                row("DSNet-50", "dsnet50", "", 24.12),
                row("DS2Net-50", "ds2net50", "", 23.72),
                row("ResNet-101", "resnet101", "", 25.01),
                row("DSNet-101", "dsnet101", "", 23.63),
                row("DS2Net-101", "ds2net101", "", 23.40),
            ],
        },
        Table {
            name: "dsnet-ablation",
            title: "DSNet ablation: shortcut normalisation and weights",
            setting: "CIFAR-100, ResNet-50 at width 0.25",
            recipe: "dsnet-cifar",
            width: 0.25,
            rows: vec![
                row("naive dense identity", "resnet50_dense", "", 26.33),
                row("DSNet-a", "dsnet50_a", "", 25.23),
                row("GN + weight (DSNet)", "dsnet50", "", 24.12),
                row("LN + weight", "dsnet50", "ds_norm = \"ln\"", 24.43),
                row("BN + weight", "dsnet50", "ds_norm = \"bn\"", 24.90),
                row("IN + weight", "dsnet50", "ds_norm = \"in\"", 28.11),
                row("no norm + weight", "dsnet50", "ds_norm = \"none\"", 26.26),
                row("GN, no weight", "dsnet50", "ds_weight = \"none\"", 25.85),
            ],
        },
        Table {
            name: "rgsnet",
            title: "RGSNet Table 3: shortcut designs on ResNet-50",
            setting: "CIFAR-100, ResNet-50 at width 0.25",
            recipe: "rgsnet-cifar",
            width: 0.25,
            rows: vec![
                row("original", "resnet50", "", 26.13),
                row("b-RGS", "brgsnet50", "", 25.40),
                row("d-RGS", "drgsnet50", "", 24.80),
                row("Res-RGS", "resrgsnet50", "", 23.32),
            ],
        },
        Table {
            name: "densenet-cifar",
            title: "DenseNet CIFAR rows (C10+)",
            setting: "CIFAR-10 with crop + flip",
            recipe: "densenet-cifar",
            width: 1.0,
            rows: vec![
                row("DenseNet (L=40, k=12)", "densenet40_k12", "", 5.24),
                row("DenseNet-BC (L=100, k=12)", "densenet_bc100_k12", "", 4.51),
            ],
        },
    ]
}

/// The scale of a reproduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// 1,000 images, 3 epochs.
    Tiny,
    /// The recipe shortened to 30 epochs.
    Small,
    /// The paper's recipe.
    Full,
}

impl Scale {
    /// Parses `tiny`, `small` or `full`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "tiny" => Ok(Scale::Tiny),
            "small" => Ok(Scale::Small),
            "full" => Ok(Scale::Full),
            _ => Err(DensumError::Config(format!(
                "unknown scale `{s}`: tiny, small or full"
            ))),
        }
    }
}

/// What to reproduce and where.
#[derive(Clone, Debug)]
pub struct ReproduceOptions {
    /// Table name.
    pub table: String,
    /// Scale.
    pub scale: Scale,
    /// Dataset path.
    pub data: PathBuf,
    /// `cifar10` or `cifar100`: the model's dataset conventions.
    pub dataset: String,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Only rows whose model name contains one of these (all when empty).
    pub only: Vec<String>,
    /// Folder of the runs.
    pub runs: PathBuf,
    /// Markdown output.
    pub out: PathBuf,
}

fn scale_layer(scale: Scale) -> toml::Table {
    match scale {
        Scale::Full => toml::Table::new(),
        Scale::Small => toml::toml! {
            epochs = 30
            schedule = { kind = "cosine", warmup = 200 }
            data = { val = "5000" }
        },
        Scale::Tiny => toml::toml! {
            batch = 50
            epochs = 3
            log_every = 5
            data = { val = "500", train_subset = 1000 }
            optimizer = { lr = 0.05, momentum = 0.9, weight_decay = 5e-4, nesterov = false }
            schedule = { kind = "cosine", warmup = 10 }
        },
    }
}

/// A measured row.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// The row.
    pub row: Row,
    /// Best validation top-1 error (%) per seed.
    pub errors: Vec<f64>,
    /// Run directories.
    pub runs: Vec<PathBuf>,
}

/// The configuration of one row and seed.
pub fn row_config(
    table: &Table,
    row: &Row,
    opts: &ReproduceOptions,
    seed: u64,
) -> Result<TrainConfig> {
    let mut recipe = config::recipe(table.recipe)?;
    if opts.scale != Scale::Full {
        // Shortened scales count epochs; the recipe's iteration count would override them.
        recipe.remove("iterations");
    }
    let mut layers = vec![recipe, scale_layer(opts.scale)];
    let run_dir = opts
        .runs
        .join(format!(
            "{}-{}",
            table.name,
            serde_json::to_value(opts.scale)
                .unwrap()
                .as_str()
                .unwrap_or("x")
        ))
        .join(format!("{}{}-seed{seed}", row.model, slug(row.options)));
    let extra: toml::Table = format!(
        "model = \"{}\"\nseed = {seed}\n[options]\ndataset = \"{}\"\nwidth = {}\n{}\n",
        row.model, opts.dataset, table.width, row.options
    )
    .parse()
    .map_err(|e| DensumError::Config(format!("row {}: {e}", row.label)))?;
    layers.push(extra);
    let mut paths = toml::Table::new();
    config::set_paths(&mut paths, &opts.data, &run_dir);
    layers.push(paths);
    config::resolve(layers)
}

fn slug(options: &str) -> String {
    let s: String = options
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '=')
        .map(|c| if c == '=' { '-' } else { c })
        .collect();
    if s.is_empty() { s } else { format!("_{s}") }
}

/// Runs (or reuses finished runs of) every row and seed, then writes the markdown table.
pub fn reproduce(opts: &ReproduceOptions, quiet: bool) -> Result<Vec<Measured>> {
    let table = tables()
        .into_iter()
        .find(|t| t.name == opts.table)
        .ok_or_else(|| {
            let names: Vec<&str> = tables().iter().map(|t| t.name).collect();
            DensumError::Config(format!(
                "unknown table `{}`; tables: {}",
                opts.table,
                names.join(", ")
            ))
        })?;
    let rows: Vec<Row> = table
        .rows
        .iter()
        .filter(|r| opts.only.is_empty() || opts.only.iter().any(|o| r.model.contains(o.as_str())))
        .cloned()
        .collect();
    // Every configuration is checked before the first run starts.
    let configs = rows
        .iter()
        .map(|r| {
            opts.seeds
                .iter()
                .map(|&s| row_config(&table, r, opts, s))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let mut measured = Vec::new();
    for (row, cfgs) in rows.into_iter().zip(configs) {
        let mut m = Measured {
            row,
            errors: vec![],
            runs: vec![],
        };
        for cfg in cfgs {
            let dir = cfg.run_dir();
            let summary = match read_summary(&dir) {
                Some(s) => s,
                None => {
                    let resume = dir.join("checkpoints").exists();
                    if !quiet {
                        println!(
                            "{} seed {}: training into {}",
                            m.row.label,
                            cfg.seed,
                            dir.display()
                        );
                    }
                    let s = train(
                        &cfg,
                        RunOptions {
                            resume,
                            quiet: true,
                            ..Default::default()
                        },
                    )?;
                    s.best_top1_error.map(|(e, _)| e)
                }
            };
            m.errors.push(summary.ok_or_else(|| {
                DensumError::Config(format!("{} has no validation result", dir.display()))
            })?);
            m.runs.push(dir);
        }
        measured.push(m);
    }
    write_markdown(&table, opts, &measured)?;
    Ok(measured)
}

fn read_summary(dir: &Path) -> Option<Option<f64>> {
    let text = std::fs::read(dir.join("summary.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    Some(v["best_top1_error"][0].as_f64())
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

fn write_markdown(table: &Table, opts: &ReproduceOptions, measured: &[Measured]) -> Result<()> {
    let mut md = format!(
        "# {} ({} scale)\n\nPaper: {}. Measured here: `{}` ({}), best validation top-1 error per seed.\n\n",
        table.title,
        serde_json::to_value(opts.scale)
            .unwrap()
            .as_str()
            .unwrap_or(""),
        table.setting,
        opts.data.display(),
        opts.dataset
    );
    md.push_str("| model | paper error % | measured error % (per seed) | mean ± std | runs |\n|---|---|---|---|---|\n");
    for m in measured {
        let (mean, std) = mean_std(&m.errors);
        let per: Vec<String> = m.errors.iter().map(|e| format!("{e:.2}")).collect();
        let runs: Vec<String> = m
            .runs
            .iter()
            .map(|r| format!("`{}`", r.display()))
            .collect();
        md.push_str(&format!(
            "| {} | {:.2} | {} | {mean:.2} ± {std:.2} | {} |\n",
            m.row.label,
            m.row.paper,
            per.join(", "),
            runs.join(", ")
        ));
    }
    if let Some(parent) = opts.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| DensumError::io(parent, e))?;
    }
    crate::weights::write_atomic(&opts.out, md.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo;

    #[test]
    fn every_row_resolves_at_every_scale() {
        for table in tables() {
            for scale in [Scale::Tiny, Scale::Small, Scale::Full] {
                let opts = ReproduceOptions {
                    table: table.name.into(),
                    scale,
                    data: ".".into(),
                    dataset: "cifar100".into(),
                    seeds: vec![0],
                    only: vec![],
                    runs: "runs".into(),
                    out: "x.md".into(),
                };
                for row in &table.rows {
                    let cfg = row_config(&table, row, &opts, 0).unwrap();
                    zoo::resolve(&cfg.model, &cfg.options)
                        .unwrap_or_else(|e| panic!("{} {}: {e}", table.name, row.label));
                }
            }
        }
    }

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 2f64.sqrt()).abs() < 1e-12);
    }
}
