//! A training run's configuration: defaults, then a named recipe (`configs/recipes/`, each
//! file citing the paper whose recipe it is), then a TOML file, then command-line flags, each
//! overriding the one before. Unknown keys are errors, so a typo never silently falls back
//! to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DensumError, Result};
use crate::zoo::ModelOptions;

/// The named recipes of the seed papers, as TOML (configs/recipes/).
pub const RECIPES: &[(&str, &str)] = &[
    (
        "dsnet-cifar",
        include_str!("../../../../configs/recipes/dsnet-cifar.toml"),
    ),
    (
        "rgsnet-cifar",
        include_str!("../../../../configs/recipes/rgsnet-cifar.toml"),
    ),
    (
        "densenet-cifar",
        include_str!("../../../../configs/recipes/densenet-cifar.toml"),
    ),
    (
        "dense2net-cifar",
        include_str!("../../../../configs/recipes/dense2net-cifar.toml"),
    ),
    (
        "imagenet",
        include_str!("../../../../configs/recipes/imagenet.toml"),
    ),
];

/// Where the images come from and how they are augmented.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Dataset path (CIFAR/SVHN files or archives, an image folder, ...).
    pub path: PathBuf,
    /// Split to train on.
    pub train_split: String,
    /// Validation: a count or fraction carved (stratified) from the training split, or a
    /// split name such as `test`. Empty: no validation.
    pub val: String,
    /// Augmentation preset for training (`cifar`, `imagenet-train`, `none`).
    pub augment: String,
    /// Preprocessing for evaluation (`none` keeps the size; `imagenet-eval` resizes and crops).
    pub eval_augment: String,
    /// Train on a stratified subset of this many images (after the validation split is
    /// carved), e.g. for short reproductions on a small machine.
    pub train_subset: Option<usize>,
    /// Cutout `[holes, length]`.
    pub cutout: Option<[u32; 2]>,
    /// Decode/augment threads (0: one per core).
    pub workers: usize,
    /// Keep decoded images in memory.
    pub cache: bool,
    /// Skip images that fail to decode instead of stopping.
    pub skip_corrupt: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            path: PathBuf::new(),
            train_split: "train".into(),
            val: String::new(),
            augment: "cifar".into(),
            eval_augment: "none".into(),
            train_subset: None,
            cutout: None,
            workers: 0,
            cache: true,
            skip_corrupt: false,
        }
    }
}

/// SGD with momentum, as PyTorch defines it (no dampening; weight decay added to the
/// gradient before momentum).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Learning rate (per `lr_reference_batch` images when that is set).
    pub lr: f64,
    /// Scale `lr` linearly with the batch: `lr · batch / lr_reference_batch`.
    pub lr_reference_batch: Option<usize>,
    /// Momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay (L2 added to the gradient).
    pub weight_decay: f64,
    /// No weight decay on normalisation parameters and biases.
    pub no_decay_norm_bias: bool,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 0.1,
            lr_reference_batch: None,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            no_decay_norm_bias: false,
            grad_clip: None,
        }
    }
}

/// Learning-rate schedule kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Constant.
    Constant,
    /// Multiply by `gamma` at each milestone.
    Multistep,
    /// Multiply by `gamma` every `step_size`.
    Step,
    /// Cosine annealing to `min_lr`.
    Cosine,
    /// Multiply by `gamma` when validation error has not improved for `patience` validations.
    Plateau,
}

/// Unit of milestones and step sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleUnit {
    /// Iterations.
    Iteration,
    /// Epochs.
    Epoch,
    /// Fractions of the whole run.
    Fraction,
}

/// The learning-rate schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Kind.
    pub kind: ScheduleKind,
    /// Unit of `milestones` and `step_size`.
    pub unit: ScheduleUnit,
    /// Multistep milestones.
    pub milestones: Vec<f64>,
    /// Step size.
    pub step_size: f64,
    /// Decay factor.
    pub gamma: f64,
    /// Linear warm-up iterations (from 0 to the scheduled rate).
    pub warmup: usize,
    /// Cosine's final rate.
    pub min_lr: f64,
    /// Plateau patience, in validations.
    pub patience: usize,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            kind: ScheduleKind::Multistep,
            unit: ScheduleUnit::Fraction,
            milestones: vec![0.5, 0.75],
            step_size: 30.0,
            gamma: 0.1,
            warmup: 0,
            min_lr: 0.0,
            patience: 10,
        }
    }
}

/// Everything a run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Registered model name.
    pub model: String,
    /// Model options.
    pub options: ModelOptions,
    /// Data.
    pub data: DataConfig,
    /// Images per batch.
    pub batch: usize,
    /// Run length in epochs (ignored when `iterations` is set).
    pub epochs: usize,
    /// Run length in iterations.
    pub iterations: Option<usize>,
    /// Optimiser.
    pub optimizer: OptimConfig,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Label smoothing of the cross-entropy loss.
    pub label_smoothing: f64,
    /// Stop after this many validations without improvement.
    pub early_stopping: Option<usize>,
    /// Validate every N iterations (0: at the end of each epoch).
    pub val_every: usize,
    /// Log the mean training loss every N iterations.
    pub log_every: usize,
    /// Checkpoint every N iterations (0: only at the end of each epoch).
    pub checkpoint_every: usize,
    /// Keep the last K checkpoints (and the best).
    pub keep_last: usize,
    /// Drop the last incomplete batch of an epoch.
    pub drop_last: bool,
    /// The run's seed: initialisation, data order, augmentation, dropout.
    pub seed: u64,
    /// Run directory (default `runs/<model>-<seed>`).
    pub run_dir: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: String::new(),
            options: ModelOptions::default(),
            data: DataConfig::default(),
            batch: 128,
            epochs: 10,
            iterations: None,
            optimizer: OptimConfig::default(),
            schedule: ScheduleConfig::default(),
            label_smoothing: 0.0,
            early_stopping: None,
            val_every: 0,
            log_every: 50,
            checkpoint_every: 0,
            keep_last: 2,
            drop_last: true,
            seed: 0,
            run_dir: None,
        }
    }
}

fn invalid(message: impl Into<String>) -> DensumError {
    DensumError::Config(message.into())
}

/// Whether the lower end of a range in [`number`] belongs to it (the upper end never does,
/// except for infinity, which is refused anyway).
#[derive(Clone, Copy)]
enum Bound {
    /// `[low, high)`.
    Closed,
    /// `(low, high)`.
    Open,
}

/// Checks that the option `key` is a finite number in the range; NaN and infinities fail
/// every comparison-based check silently, so they are named here.
fn number(key: &str, v: f64, low: f64, high: f64, bound: Bound) -> Result<()> {
    let above = match bound {
        Bound::Closed => v >= low,
        Bound::Open => v > low,
    };
    if v.is_finite() && above && v < high {
        return Ok(());
    }
    let open = if matches!(bound, Bound::Closed) {
        '['
    } else {
        '('
    };
    let range = if high.is_infinite() {
        format!("{open}{low}, inf)")
    } else {
        format!("{open}{low}, {high})")
    };
    Err(invalid(format!(
        "{key} must be a finite number in {range}, got {v}"
    )))
}

/// Keys that do not change what a run computes: where it is written, and how fast the data
/// arrives (the loader's batches do not depend on its thread count or on caching).
pub const NEUTRAL_KEYS: &[&str] = &["run_dir", "data.workers", "data.cache"];

/// Every key of `cfg` that can change its result, dotted (`optimizer.lr`), with its value
/// as TOML text, sorted by key. Arrays are one value.
pub fn result_keys(cfg: &TrainConfig) -> BTreeMap<String, String> {
    fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            v => {
                out.insert(prefix.to_string(), v.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    let value = toml::Value::try_from(cfg).expect("a configuration serialises to TOML");
    flatten("", &value, &mut out);
    out.retain(|k, _| !NEUTRAL_KEYS.contains(&k.as_str()));
    out
}

/// How `recorded` (a run's `config.toml`) and `given` differ in keys that change the result:
/// one `key (recorded X, now Y)` per key, empty when they agree.
pub fn differences(recorded: &TrainConfig, given: &TrainConfig) -> Vec<String> {
    let (a, b) = (result_keys(recorded), result_keys(given));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "unset".into());
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k} (recorded {}, now {})", show(a.get(k)), show(b.get(k))))
        .collect()
}

/// Reads the configuration a run recorded in `dir/config.toml`, `None` when there is none.
/// It is not checked (its data path may have moved since): it is only compared.
pub fn read_recorded(dir: &Path) -> Result<Option<TrainConfig>> {
    let path = dir.join("config.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DensumError::io(&path, e)),
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| invalid(format!("{}: {}", path.display(), e.message())))
}

/// Refuses to continue the run in `dir` with `given` when the configuration it recorded
/// differs in a key that changes the result (a resumed or reused run would mix two
/// experiments). A folder without `config.toml` passes.
pub fn check_recorded(dir: &Path, given: &TrainConfig) -> Result<()> {
    let Some(recorded) = read_recorded(dir)? else {
        return Ok(());
    };
    let diff = differences(&recorded, given);
    if diff.is_empty() {
        return Ok(());
    }
    Err(invalid(format!(
        "{} holds a run of another configuration; its config.toml differs in {}",
        dir.display(),
        diff.join(", ")
    )))
}

/// Deep-merges `overlay` into `base` (tables merge key by key; anything else replaces).
pub fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The TOML of a named recipe, or an error listing the recipes.
pub fn recipe(name: &str) -> Result<toml::Table> {
    let text = RECIPES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = RECIPES.iter().map(|(n, _)| *n).collect();
            invalid(format!(
                "unknown recipe `{name}`; recipes: {}",
                names.join(", ")
            ))
        })?;
    text.parse::<toml::Table>()
        .map_err(|e| invalid(format!("recipe `{name}`: {e}")))
}

/// The optimiser settings of a named recipe over the defaults (what `densum train --recipe`
/// would use), e.g. for timing the same update in `densum bench`.
pub fn recipe_optimizer(name: &str) -> Result<OptimConfig> {
    let mut table = match toml::Value::try_from(OptimConfig::default()) {
        Ok(toml::Value::Table(t)) => t,
        _ => unreachable!("OptimConfig serialises to a table"),
    };
    if let Some(toml::Value::Table(o)) = recipe(name)?.remove("optimizer") {
        merge(&mut table, o);
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| invalid(format!("recipe `{name}`: {}", e.message())))
}

/// Reads a TOML config file as a table.
pub fn read_table(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).map_err(|e| DensumError::io(path, e))?;
    text.parse::<toml::Table>()
        .map_err(|e| invalid(format!("{}: {e}", path.display())))
}

/// Builds the config from layers (recipe, file, flags), lowest priority first, and checks it.
pub fn resolve(layers: Vec<toml::Table>) -> Result<TrainConfig> {
    let mut table = toml::Table::new();
    for layer in layers {
        merge(&mut table, layer);
    }
    let cfg: TrainConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| invalid(format!("configuration: {}", e.message())))?;
    cfg.check()?;
    Ok(cfg)
}

impl TrainConfig {
    /// Checks values that would fail later, so errors come before any work.
    pub fn check(&self) -> Result<()> {
        if self.model.is_empty() {
            return Err(invalid("no model given (--model or `model = ...`)"));
        }
        if self.data.path.as_os_str().is_empty() {
            return Err(invalid("no data path given (--data or `data.path = ...`)"));
        }
        if !self.data.path.exists() {
            return Err(invalid(format!(
                "data path {} does not exist",
                self.data.path.display()
            )));
        }
        if self.batch == 0 {
            return Err(invalid("batch must be at least 1"));
        }
        if self.iterations == Some(0) || (self.iterations.is_none() && self.epochs == 0) {
            return Err(invalid(
                "the run has no iterations (epochs or iterations must be positive)",
            ));
        }
        let o = &self.optimizer;
        number("optimizer.lr", o.lr, 0.0, f64::INFINITY, Bound::Open)?;
        if o.lr_reference_batch == Some(0) {
            return Err(invalid("optimizer.lr_reference_batch must be at least 1"));
        }
        number("optimizer.momentum", o.momentum, 0.0, 1.0, Bound::Closed)?;
        number(
            "optimizer.weight_decay",
            o.weight_decay,
            0.0,
            f64::INFINITY,
            Bound::Closed,
        )?;
        if let Some(clip) = o.grad_clip {
            number("optimizer.grad_clip", clip, 0.0, f64::INFINITY, Bound::Open)?;
        }
        number(
            "label_smoothing",
            self.label_smoothing,
            0.0,
            1.0,
            Bound::Closed,
        )?;
        if self.keep_last == 0 {
            return Err(invalid("keep_last must be at least 1"));
        }
        if self.log_every == 0 {
            return Err(invalid("log_every must be at least 1"));
        }
        let s = &self.schedule;
        if !(s.gamma.is_finite() && s.gamma > 0.0 && s.gamma <= 1.0) {
            return Err(invalid(format!(
                "schedule.gamma must be in (0, 1], got {}",
                s.gamma
            )));
        }
        if s.kind == ScheduleKind::Step {
            number(
                "schedule.step_size",
                s.step_size,
                0.0,
                f64::INFINITY,
                Bound::Open,
            )?;
        }
        number(
            "schedule.min_lr",
            s.min_lr,
            0.0,
            f64::INFINITY,
            Bound::Closed,
        )?;
        for &m in &s.milestones {
            number("schedule.milestones", m, 0.0, f64::INFINITY, Bound::Closed)?;
        }
        if s.kind == ScheduleKind::Plateau && self.data.val.is_empty() {
            return Err(invalid(
                "the plateau schedule needs validation (data.val / --val-split)",
            ));
        }
        if self.early_stopping.is_some() && self.data.val.is_empty() {
            return Err(invalid(
                "early stopping needs validation (data.val / --val-split)",
            ));
        }
        Ok(())
    }

    /// The learning rate after linear batch scaling.
    pub fn base_lr(&self) -> f64 {
        match self.optimizer.lr_reference_batch {
            Some(b) if b > 0 => self.optimizer.lr * self.batch as f64 / b as f64,
            _ => self.optimizer.lr,
        }
    }

    /// The run directory.
    pub fn run_dir(&self) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("runs/{}-seed{}", self.model, self.seed)))
    }
}

/// Sets `data.path` and `run_dir` in a configuration table (used by tests and tools).
pub fn set_paths(table: &mut toml::Table, data: &Path, run_dir: &Path) {
    let mut overlay = toml::Table::new();
    let mut d = toml::Table::new();
    d.insert("path".into(), data.display().to_string().into());
    overlay.insert("data".into(), toml::Value::Table(d));
    overlay.insert("run_dir".into(), run_dir.display().to_string().into());
    merge(table, overlay);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recipe_parses() {
        for (name, _) in RECIPES {
            let mut t = recipe(name).unwrap();
            merge(
                &mut t,
                toml::toml! { model = "resnet20" data = { path = "." } },
            );
            if name.contains("dense2net") {
                merge(&mut t, toml::toml! { data = { val = "5000" } });
            }
            resolve(vec![t]).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn typos_and_unknown_recipes_are_errors() {
        let t = toml::toml! { model = "resnet20" data = { path = "." } batchh = 3 };
        let e = resolve(vec![t]).unwrap_err().to_string();
        assert!(e.contains("batchh"), "{e}");
        assert!(
            recipe("dsnet-cifarr")
                .unwrap_err()
                .to_string()
                .contains("dsnet-cifar")
        );
        let t = toml::toml! { model = "resnet20" data = { path = "/no/such/dir" } };
        assert!(
            resolve(vec![t])
                .unwrap_err()
                .to_string()
                .contains("/no/such/dir")
        );
    }

    /// A valid base configuration with `overlay` merged in, resolved.
    fn with(overlay: toml::Table) -> Result<TrainConfig> {
        let mut t = toml::toml! { model = "resnet20" data = { path = "." } };
        merge(&mut t, overlay);
        resolve(vec![t])
    }

    #[test]
    fn nan_infinite_and_negative_numbers_are_refused_by_name() {
        let cases = [
            ("optimizer.weight_decay", "optimizer.weight_decay = nan"),
            ("optimizer.weight_decay", "optimizer.weight_decay = -1e-4"),
            ("optimizer.weight_decay", "optimizer.weight_decay = inf"),
            ("optimizer.grad_clip", "optimizer.grad_clip = -1.0"),
            ("optimizer.grad_clip", "optimizer.grad_clip = 0.0"),
            ("optimizer.grad_clip", "optimizer.grad_clip = nan"),
            ("optimizer.lr", "optimizer.lr = nan"),
            ("optimizer.lr", "optimizer.lr = inf"),
            ("optimizer.lr", "optimizer.lr = -0.1"),
            ("optimizer.momentum", "optimizer.momentum = nan"),
            ("optimizer.momentum", "optimizer.momentum = -0.5"),
            (
                "optimizer.lr_reference_batch",
                "optimizer.lr_reference_batch = 0",
            ),
            ("label_smoothing", "label_smoothing = nan"),
            ("label_smoothing", "label_smoothing = -0.1"),
            ("schedule.gamma", "schedule.gamma = nan"),
            (
                "schedule.step_size",
                "schedule.kind = \"step\"\nschedule.step_size = nan",
            ),
            ("schedule.min_lr", "schedule.min_lr = nan"),
            ("schedule.min_lr", "schedule.min_lr = -1.0"),
            ("schedule.milestones", "schedule.milestones = [0.5, nan]"),
        ];
        for (key, text) in cases {
            let overlay: toml::Table = text.parse().unwrap();
            let e = with(overlay).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let ok =
            toml::toml! { optimizer = { weight_decay = 0.0, grad_clip = 5.0, momentum = 0.0 } };
        with(ok).unwrap();
    }

    #[test]
    fn differences_name_the_keys_that_change_the_result() {
        let a = with(toml::Table::new()).unwrap();
        let mut b = a.clone();
        b.data.path = "/elsewhere".into();
        b.options.width = Some(0.5);
        b.run_dir = Some("runs/other".into());
        b.data.workers = 7;
        let d = differences(&a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].starts_with("data.path (recorded \".\", now \"/elsewhere\")"),
            "{d:?}"
        );
        assert!(
            d[1].starts_with("options.width (recorded unset, now 0.5)"),
            "{d:?}"
        );
        assert!(differences(&a, &a).is_empty());
    }

    #[test]
    fn later_layers_override_earlier_ones() {
        let mut r = recipe("dsnet-cifar").unwrap();
        merge(
            &mut r,
            toml::toml! { model = "resnet20" data = { path = "." } iterations = 2000 batch = 64 },
        );
        let c = resolve(vec![r]).unwrap();
        assert_eq!((c.iterations, c.batch), (Some(2000), 64));
        assert_eq!(c.schedule.milestones, vec![32000.0, 48000.0]);
        assert_eq!(c.data.augment, "cifar");
    }
}
