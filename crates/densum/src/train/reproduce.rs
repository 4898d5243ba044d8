//! `densum reproduce`: the experiments behind the seed papers' tables (DSNet Table 3 and its
//! ablation, RGSNet Table 3, DenseNet's C10+ rows of its Table 2), at a chosen scale, written
//! as a markdown table of measured error beside the paper's.
//!
//! Each run folder is keyed by everything that changes its result: the readable part names
//! model, options, dataset and seed, and a hash of the whole resolved configuration (recipe,
//! scale, data path included) follows, so a table on CIFAR-100 never reuses a CIFAR-10 run.
//! A folder whose recorded `config.toml` differs anyway (edited by hand, an older layout) is
//! refused, never reused or resumed.
//!
//! Scales:
//! - `full`: the paper's recipe on the whole dataset, as long as the paper's runs.
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
use crate::zoo::Dataset;

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
    /// The dataset of the paper's rows: the default of [`ReproduceOptions::dataset`].
    pub dataset: Dataset,
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
            dataset: Dataset::Cifar100,
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
            dataset: Dataset::Cifar100,
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
            dataset: Dataset::Cifar100,
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
            dataset: Dataset::Cifar10,
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
    /// `tiny`, `small` or `full`.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Tiny => "tiny",
            Scale::Small => "small",
            Scale::Full => "full",
        }
    }

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
    /// CIFAR-10 or CIFAR-100: the models' dataset conventions (classes, normalisation);
    /// `None`: the dataset of the table's paper rows ([`Table::dataset`]).
    pub dataset: Option<Dataset>,
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

/// The dataset the rows of `table` are trained on with `opts`: the one asked for, else the
/// paper's; only the CIFAR sets have these tables.
pub fn dataset(table: &Table, opts: &ReproduceOptions) -> Result<Dataset> {
    match opts.dataset.unwrap_or(table.dataset) {
        d @ (Dataset::Cifar10 | Dataset::Cifar100) => Ok(d),
        d => Err(DensumError::Config(format!(
            "table {}: dataset {} has no such table; use cifar10 or cifar100",
            table.name,
            d.name()
        ))),
    }
}

/// The configuration of one row and seed, with its run folder (see the module notes).
pub fn row_config(
    table: &Table,
    row: &Row,
    opts: &ReproduceOptions,
    seed: u64,
) -> Result<TrainConfig> {
    let dataset = dataset(table, opts)?;
    let mut recipe = config::recipe(table.recipe)?;
    if opts.scale != Scale::Full {
        // Shortened scales count epochs; the recipe's iteration count would override them.
        recipe.remove("iterations");
    }
    let mut layers = vec![recipe, scale_layer(opts.scale)];
    let extra: toml::Table = format!(
        "model = \"{}\"\nseed = {seed}\n[options]\ndataset = \"{}\"\nwidth = {}\n{}\n",
        row.model,
        dataset.name(),
        table.width,
        row.options
    )
    .parse()
    .map_err(|e| DensumError::Config(format!("row {}: {e}", row.label)))?;
    layers.push(extra);
    // The same data reached through another relative path is the same run.
    let data = std::fs::canonicalize(&opts.data).unwrap_or_else(|_| opts.data.clone());
    let mut paths = toml::Table::new();
    config::set_paths(&mut paths, &data, Path::new(""));
    layers.push(paths);
    let mut cfg = config::resolve(layers)?;
    let name = format!(
        "{}{}-{}-seed{seed}-{:012x}",
        row.model,
        slug(row.options),
        dataset.name(),
        key_hash(&cfg)
    );
    cfg.run_dir = Some(
        opts.runs
            .join(format!("{}-{}", table.name, opts.scale.name()))
            .join(name),
    );
    Ok(cfg)
}

/// A stable 48-bit hash (FNV-1a) of every key of `cfg` that changes its result
/// ([`config::result_keys`]): equal configurations give equal hashes in every process.
pub fn key_hash(cfg: &TrainConfig) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in config::result_keys(cfg) {
        for b in k.bytes().chain([b'=']).chain(v.bytes()).chain([b'\n']) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h >> 16
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
    // A folder of another configuration stops the reproduction before any run starts.
    for cfg in configs.iter().flatten() {
        let dir = cfg.run_dir();
        config::check_recorded(&dir, cfg)?;
        if dir.join("summary.json").exists() && config::read_recorded(&dir)?.is_none() {
            return Err(DensumError::Config(format!(
                "{} holds a finished run without config.toml: which configuration made it is unknown; move it away",
                dir.display()
            )));
        }
    }
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
        opts.scale.name(),
        table.setting,
        opts.data.display(),
        dataset(table, opts)?.name()
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
                    dataset: None,
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

    fn options(table: &str, dataset: Option<Dataset>, data: &str, runs: &Path) -> ReproduceOptions {
        ReproduceOptions {
            table: table.into(),
            scale: Scale::Tiny,
            data: data.into(),
            dataset,
            seeds: vec![0],
            only: vec![],
            runs: runs.into(),
            out: runs.join("table.md"),
        }
    }

    fn table(name: &str) -> Table {
        tables().into_iter().find(|t| t.name == name).unwrap()
    }

    #[test]
    fn run_folders_differ_in_every_input_that_changes_the_result() {
        let t = table("dsnet-depth");
        let row = &t.rows[0];
        let runs = Path::new("runs");
        let dir = |o: &ReproduceOptions, seed| row_config(&t, row, o, seed).unwrap().run_dir();
        let base = options("dsnet-depth", None, ".", runs);
        let c10 = options("dsnet-depth", Some(Dataset::Cifar10), ".", runs);
        let c100 = options("dsnet-depth", Some(Dataset::Cifar100), ".", runs);
        // Unit tests run in the crate folder: `src` is another existing data path.
        let other_data = options("dsnet-depth", None, "src", runs);
        let small = ReproduceOptions {
            scale: Scale::Small,
            ..base.clone()
        };
        let dirs = [
            dir(&c10, 0),
            dir(&c100, 0),
            dir(&other_data, 0),
            dir(&small, 0),
            dir(&base, 1),
        ];
        for (i, a) in dirs.iter().enumerate() {
            for b in &dirs[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // The paper's dataset is the default; the same inputs give the same folder.
        assert_eq!(dir(&base, 0), dir(&c100, 0));
        assert_eq!(
            dir(&base, 0),
            dir(&options("dsnet-depth", None, "./", runs), 0)
        );
        let name = dir(&c10, 0)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("resnet26-cifar10-seed0-"), "{name}");
        // The DenseNet table's rows are CIFAR-10 (C10+) rows.
        let d = table("densenet-cifar");
        let cfg = row_config(
            &d,
            &d.rows[0],
            &options("densenet-cifar", None, ".", runs),
            0,
        )
        .unwrap();
        assert_eq!(cfg.options.dataset, Some(Dataset::Cifar10));
        assert!(
            dataset(
                &d,
                &options("densenet-cifar", Some(Dataset::Svhn), ".", runs)
            )
            .is_err()
        );
    }

    #[test]
    fn a_finished_run_is_reused_only_when_its_recorded_config_matches() {
        let runs = std::env::temp_dir().join(format!("densum-reproduce-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&runs);
        let mut opts = options("rgsnet", None, ".", &runs);
        opts.only = vec!["resrgsnet50".into()];
        let t = table("rgsnet");
        let row = t.rows.iter().find(|r| r.model == "resrgsnet50").unwrap();
        let cfg = row_config(&t, row, &opts, 0).unwrap();
        let dir = cfg.run_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let summary = r#"{"best_top1_error": [12.5, 30]}"#;
        std::fs::write(dir.join("summary.json"), summary).unwrap();
        // A finished run without its configuration is not trusted.
        let e = reproduce(&opts, true).unwrap_err().to_string();
        assert!(e.contains(&dir.display().to_string()), "{e}");
        // The recorded configuration matches: reused, no training.
        let text = toml::to_string_pretty(&cfg).unwrap();
        std::fs::write(dir.join("config.toml"), &text).unwrap();
        let m = reproduce(&opts, true).unwrap();
        assert_eq!(m[0].errors, vec![12.5]);
        assert!(
            std::fs::read_to_string(&opts.out)
                .unwrap()
                .contains("12.50")
        );
        // Another dataset and recipe value under the same folder: refused, naming both.
        let mut other = cfg.clone();
        other.options.dataset = Some(Dataset::Cifar10);
        other.epochs += 1;
        let text = toml::to_string_pretty(&other).unwrap();
        std::fs::write(dir.join("config.toml"), &text).unwrap();
        let e = reproduce(&opts, true).unwrap_err().to_string();
        assert!(e.contains(&dir.display().to_string()), "{e}");
        assert!(e.contains("options.dataset") && e.contains("epochs"), "{e}");
        let _ = std::fs::remove_dir_all(&runs);
    }

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 2f64.sqrt()).abs() < 1e-12);
    }
}
