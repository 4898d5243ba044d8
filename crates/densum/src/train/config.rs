//! A training run's configuration: defaults, then a named recipe (spec section 4), then a
//! TOML file, then command-line flags, each overriding the one before. Unknown keys are
//! errors, so a typo never silently falls back to a default.

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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return Err(invalid(format!(
                "optimizer.lr must be positive, got {}",
                o.lr
            )));
        }
        if !(0.0..1.0).contains(&o.momentum) || o.weight_decay < 0.0 {
            return Err(invalid(
                "optimizer.momentum must be in [0, 1) and weight_decay >= 0",
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(invalid("label_smoothing must be in [0, 1)"));
        }
        if self.keep_last == 0 {
            return Err(invalid("keep_last must be at least 1"));
        }
        if self.log_every == 0 {
            return Err(invalid("log_every must be at least 1"));
        }
        let s = &self.schedule;
        if !(s.gamma > 0.0 && s.gamma <= 1.0) {
            return Err(invalid(format!(
                "schedule.gamma must be in (0, 1], got {}",
                s.gamma
            )));
        }
        if s.kind == ScheduleKind::Step && s.step_size <= 0.0 {
            return Err(invalid("schedule.step_size must be positive"));
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
