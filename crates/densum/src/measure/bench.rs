//! Time and memory of training steps and inference passes (`densum bench`).

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Distribution, Int, Tensor};
use serde::Serialize;
use serde_json::json;

use super::alloc;
use super::{cost, group_digits};
use crate::error::{DensumError, Result};
use crate::net::Net;
use crate::nn::fast::conv::profile::{self as conv_profile, ConvTime};
use crate::train::config::OptimConfig;
use crate::train::sgd::Sgd;
use crate::zoo::ModelSpec;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// Training steps only.
    Train,
    /// Inference passes only.
    Infer,
    /// Both.
    Both,
}

/// How to measure.
#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    /// Images per batch.
    pub batch: usize,
    /// Unmeasured iterations first.
    pub warmup: usize,
    /// Measured iterations.
    pub iters: usize,
    /// Train, infer or both.
    pub mode: BenchMode,
    /// Settings of the timed update: densum's own [`Sgd`], as `densum train` runs it (the
    /// training defaults, or a recipe's through [`crate::train::config::recipe_optimizer`]),
    /// at the constant rate `optimizer.lr`.
    pub optimizer: OptimConfig,
    /// Also time every fast convolution of the measured iterations by shape
    /// ([`conv_profile`]): `TrainCost::convolutions` and `InferCost::convolutions`.
    pub conv_profile: bool,
}

impl BenchConfig {
    /// Checks that there is something to measure.
    pub fn check(&self) -> Result<()> {
        if self.batch == 0 || self.iters == 0 {
            return Err(DensumError::Config(format!(
                "batch and iters must be at least 1, got batch {} and iters {}",
                self.batch, self.iters
            )));
        }
        Ok(())
    }
}

/// Median and spread of a series of measurements.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Stats {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Stats {
    /// Statistics of `values` (empty: zeros).
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Stats::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Stats {
            median,
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

/// Training-step measurements.
#[derive(Clone, Debug, Serialize)]
pub struct TrainCost {
    /// Forward pass (with loss), milliseconds.
    pub forward_ms: Stats,
    /// Backward pass, milliseconds.
    pub backward_ms: Stats,
    /// SGD update, milliseconds.
    pub optimizer_ms: Stats,
    /// Whole step, milliseconds.
    pub step_ms: Stats,
    /// Images per second at the median step time.
    pub images_per_s: f64,
    /// Peak bytes above the level before the step (activations, gradients, optimiser state
    /// created in the step); `None` without the counting allocator.
    pub peak_bytes: Option<usize>,
    /// Bytes held after the forward pass for the backward pass (activation memory).
    pub activation_bytes: Option<usize>,
    /// Per-shape convolution times of a measured step (with `conv_profile`; else empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub convolutions: Vec<ConvTime>,
}

/// Inference measurements.
#[derive(Clone, Debug, Serialize)]
pub struct InferCost {
    /// Forward pass, milliseconds.
    pub forward_ms: Stats,
    /// Images per second at the median time.
    pub images_per_s: f64,
    /// Peak bytes above the level before the pass.
    pub peak_bytes: Option<usize>,
    /// Per-shape convolution times of a measured pass (with `conv_profile`; else empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub convolutions: Vec<ConvTime>,
}

/// Everything measured for one model.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    /// Registry name.
    pub model: String,
    /// Input `[N, 3, H, W]`.
    pub input: [usize; 4],
    /// Trainable parameters.
    pub params: usize,
    /// Forward MACs per image.
    pub macs: u64,
    /// The optimiser settings the training step was timed with.
    pub optimizer: OptimConfig,
    /// Training step, if measured.
    pub train: Option<TrainCost>,
    /// Inference, if measured.
    pub infer: Option<InferCost>,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn measured_peak(base: usize) -> Option<usize> {
    alloc::installed().then(|| alloc::peak().saturating_sub(base))
}

/// Measures `spec` as `cfg` says, on `device` (the CPU backend by default); a `cfg` that
/// fails [`BenchConfig::check`] is an error before any work.
pub fn bench(spec: &ModelSpec, cfg: &BenchConfig, device: &Device) -> Result<BenchResult> {
    let mut results = bench_interleaved(std::slice::from_ref(spec), cfg, device)?;
    Ok(results.remove(0))
}

/// Measures every model of `specs` as `cfg` says, their iterations in turn (A, B, A, B, ...
/// for training, then the same for inference) rather than one model after the other.
///
/// Why: on a shared machine the speed drifts over seconds, so two models measured one after
/// the other see different machines and their ratio moves with the drift (DSNet-50 against
/// ResNet-50 read anywhere from 1.06x to 1.25x within an hour in `tools/bench_pair.sh`'s
/// sequential runs); taken in turn, every model sees the same drift. Every model is held in
/// memory at once; peak memory is still each step's own (measured from the bytes held when
/// the step starts). A convolution profile (`cfg.conv_profile`) would mix the models, so it
/// is refused for more than one.
pub fn bench_interleaved(
    specs: &[ModelSpec],
    cfg: &BenchConfig,
    device: &Device,
) -> Result<Vec<BenchResult>> {
    cfg.check()?;
    if cfg.conv_profile && specs.len() > 1 {
        return Err(DensumError::Config(
            "a convolution profile times one model at a time: measure the models in turn \
             without it, or profile each alone"
                .into(),
        ));
    }
    let shape = |spec: &ModelSpec| [cfg.batch, 3, spec.input_size, spec.input_size];
    let train = matches!(cfg.mode, BenchMode::Train | BenchMode::Both).then(|| {
        let mut runs: Vec<TrainRun> = specs
            .iter()
            .map(|spec| TrainRun::new(spec, cfg, shape(spec), device))
            .collect();
        in_turn(cfg, &mut runs, TrainRun::step);
        runs.into_iter().map(|r| r.finish(cfg)).collect::<Vec<_>>()
    });
    let infer = matches!(cfg.mode, BenchMode::Infer | BenchMode::Both).then(|| {
        let mut runs: Vec<InferRun> = specs
            .iter()
            .map(|spec| InferRun::new(spec, shape(spec), device))
            .collect();
        in_turn(cfg, &mut runs, InferRun::step);
        runs.into_iter().map(|r| r.finish(cfg)).collect::<Vec<_>>()
    });
    let mut train = train.map(Vec::into_iter);
    let mut infer = infer.map(Vec::into_iter);
    Ok(specs
        .iter()
        .map(|spec| {
            let c = cost(spec, &Net::new(&spec.config, device));
            BenchResult {
                model: spec.name.clone(),
                input: shape(spec),
                params: c.params,
                macs: c.macs,
                optimizer: cfg.optimizer,
                train: train.as_mut().and_then(Iterator::next),
                infer: infer.as_mut().and_then(Iterator::next),
            }
        })
        .collect())
}

/// `cfg.warmup + cfg.iters` iterations of every run in turn (`step(run, measured)`), with the
/// convolution profile (if asked for) over the measured ones.
fn in_turn<R>(cfg: &BenchConfig, runs: &mut [R], step: impl Fn(&mut R, bool)) {
    for i in 0..cfg.warmup + cfg.iters {
        if cfg.conv_profile && i == cfg.warmup {
            conv_profile::start();
        }
        for run in runs.iter_mut() {
            step(run, i >= cfg.warmup);
        }
    }
}

/// One model's training steps, measured one at a time ([`TrainRun::step`]).
struct TrainRun {
    /// Taken by each update and put back (SGD updates a parameter in place only when it holds
    /// it alone).
    net: Option<Net>,
    sgd: Sgd,
    lr: f64,
    x: Tensor<4>,
    y: Tensor<1, Int>,
    loss_fn: burn::nn::loss::CrossEntropyLoss,
    fwd: Vec<f64>,
    bwd: Vec<f64>,
    opt: Vec<f64>,
    peak: usize,
    act: usize,
}

impl TrainRun {
    fn new(spec: &ModelSpec, cfg: &BenchConfig, shape: [usize; 4], device: &Device) -> Self {
        let device = device.clone().autodiff();
        let classes = spec.config.num_classes as i64;
        let labels: Vec<i64> = (0..shape[0] as i64).map(|i| i % classes).collect();
        TrainRun {
            net: Some(Net::new(&spec.config, &device).train()),
            // The optimiser `train::train` steps, so the figure is the update training pays for.
            sgd: Sgd::new(cfg.optimizer),
            lr: cfg.optimizer.lr,
            x: Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device),
            y: Tensor::<1, Int>::from_data(labels.as_slice(), &device),
            loss_fn: CrossEntropyLossConfig::new().init(&device),
            fwd: vec![],
            bwd: vec![],
            opt: vec![],
            peak: 0,
            act: 0,
        }
    }

    /// One training step, its times and memory kept when `measured`.
    fn step(&mut self, measured: bool) {
        let net = self
            .net
            .take()
            .expect("the net is put back after every step");
        let base = alloc::current();
        alloc::reset_peak();
        let t0 = Instant::now();
        let loss = self
            .loss_fn
            .forward(net.forward(self.x.clone()), self.y.clone());
        let _: f32 = loss.clone().into_scalar();
        let t_fwd = ms(t0);
        let held = alloc::current().saturating_sub(base);
        let t1 = Instant::now();
        let grads = loss.backward();
        let t_bwd = ms(t1);
        let t2 = Instant::now();
        let net = self.sgd.step(net, &grads, self.lr);
        // Read one value so any deferred work finishes inside the measurement.
        let _ = net.fc.bias.as_ref().map(|b| b.val().into_data());
        let t_opt = ms(t2);
        self.net = Some(net);
        if measured {
            self.fwd.push(t_fwd);
            self.bwd.push(t_bwd);
            self.opt.push(t_opt);
            self.peak = self.peak.max(measured_peak(base).unwrap_or(0));
            self.act = self.act.max(held);
        }
    }

    fn finish(self, cfg: &BenchConfig) -> TrainCost {
        let step: Vec<f64> = (0..self.fwd.len())
            .map(|i| self.fwd[i] + self.bwd[i] + self.opt[i])
            .collect();
        let step_ms = Stats::of(&step);
        TrainCost {
            forward_ms: Stats::of(&self.fwd),
            backward_ms: Stats::of(&self.bwd),
            optimizer_ms: Stats::of(&self.opt),
            images_per_s: self.x.dims()[0] as f64 / (step_ms.median / 1e3),
            step_ms,
            peak_bytes: alloc::installed().then_some(self.peak),
            activation_bytes: alloc::installed().then_some(self.act),
            convolutions: profiled(cfg),
        }
    }
}

/// The convolution profile of the measured iterations, if `cfg` asked for one.
fn profiled(cfg: &BenchConfig) -> Vec<ConvTime> {
    if cfg.conv_profile {
        conv_profile::stop(cfg.iters)
    } else {
        Vec::new()
    }
}

/// One model's inference passes, measured one at a time ([`InferRun::step`]).
struct InferRun {
    net: Net,
    x: Tensor<4>,
    times: Vec<f64>,
    peak: usize,
}

impl InferRun {
    fn new(spec: &ModelSpec, shape: [usize; 4], device: &Device) -> Self {
        InferRun {
            net: Net::new(&spec.config, device).valid(),
            x: Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device),
            times: vec![],
            peak: 0,
        }
    }

    /// One inference pass, its time and memory kept when `measured`.
    fn step(&mut self, measured: bool) {
        let base = alloc::current();
        alloc::reset_peak();
        let t0 = Instant::now();
        let _ = self.net.forward(self.x.clone()).into_data();
        let t = ms(t0);
        if measured {
            self.times.push(t);
            self.peak = self.peak.max(measured_peak(base).unwrap_or(0));
        }
    }

    fn finish(self, cfg: &BenchConfig) -> InferCost {
        let forward_ms = Stats::of(&self.times);
        InferCost {
            images_per_s: self.x.dims()[0] as f64 / (forward_ms.median / 1e3),
            forward_ms,
            peak_bytes: alloc::installed().then_some(self.peak),
            convolutions: profiled(cfg),
        }
    }
}

/// The figures of one result by name, in table order (`None`: not measured).
pub fn figures(r: &BenchResult) -> Vec<(&'static str, Option<f64>)> {
    let mb = |b: Option<usize>| b.map(|b| b as f64 / 1e6);
    let t = r.train.as_ref();
    let i = r.infer.as_ref();
    vec![
        ("params", Some(r.params as f64)),
        ("macs", Some(r.macs as f64)),
        ("train_step_ms", t.map(|t| t.step_ms.median)),
        ("forward_ms", t.map(|t| t.forward_ms.median)),
        ("backward_ms", t.map(|t| t.backward_ms.median)),
        ("optimizer_ms", t.map(|t| t.optimizer_ms.median)),
        ("train_images_per_s", t.map(|t| t.images_per_s)),
        ("train_peak_mb", mb(t.and_then(|t| t.peak_bytes))),
        ("activation_mb", mb(t.and_then(|t| t.activation_bytes))),
        ("infer_ms", i.map(|i| i.forward_ms.median)),
        ("infer_images_per_s", i.map(|i| i.images_per_s)),
        ("infer_peak_mb", mb(i.and_then(|i| i.peak_bytes))),
    ]
}

/// Results of several models side by side, every figure also as a ratio to the first model's
/// (as the DSNet paper's Table 9 gives cost relative to ResNet-50).
pub struct Comparison {
    results: Vec<BenchResult>,
    rows: Vec<Vec<(&'static str, Option<f64>)>>,
}

impl Comparison {
    /// Compares `results`; the first is the reference. Refuses an empty list.
    pub fn new(results: Vec<BenchResult>) -> Result<Self> {
        if results.is_empty() {
            return Err(DensumError::Config("no results to compare".into()));
        }
        let rows = results.iter().map(figures).collect();
        Ok(Comparison { results, rows })
    }

    /// The results, in the order given.
    pub fn results(&self) -> &[BenchResult] {
        &self.results
    }

    /// Figure `i` of result `r` over the first result's (`None`: unmeasured or zero).
    pub fn ratio(&self, r: usize, i: usize) -> Option<f64> {
        match (self.rows[r][i].1, self.rows[0][i].1) {
            (Some(v), Some(b)) if b != 0.0 => Some(v / b),
            _ => None,
        }
    }

    /// Every result as JSON, each with `ratio_to_first` by figure name.
    pub fn to_json(&self) -> serde_json::Value {
        let list: Vec<_> = self
            .results
            .iter()
            .enumerate()
            .map(|(r, result)| {
                let mut v = serde_json::to_value(result).expect("serialisable");
                let ratios: serde_json::Map<String, serde_json::Value> = self.rows[r]
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (k.to_string(), json!(self.ratio(r, i))))
                    .collect();
                v["ratio_to_first"] = serde_json::Value::Object(ratios);
                v
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// CSV: `model`, every figure, then every figure's ratio (`NAME_ratio`); one line per
    /// result, each ending in a newline.
    pub fn to_csv(&self) -> String {
        let header: Vec<&str> = self.rows[0].iter().map(|(k, _)| *k).collect();
        let ratio_header: Vec<String> = header.iter().map(|k| format!("{k}_ratio")).collect();
        let mut out = format!("model,{},{}\n", header.join(","), ratio_header.join(","));
        for (r, (result, row)) in self.results.iter().zip(&self.rows).enumerate() {
            let vals: Vec<String> = row
                .iter()
                .map(|(_, v)| v.map(|x| format!("{x}")).unwrap_or_default())
                .collect();
            let ratios: Vec<String> = (0..row.len())
                .map(|i| {
                    self.ratio(r, i)
                        .map(|x| format!("{x:.4}"))
                        .unwrap_or_default()
                })
                .collect();
            out.push_str(&format!(
                "{},{},{}\n",
                result.model,
                vals.join(","),
                ratios.join(",")
            ));
        }
        out
    }

    /// The convolution profiles of every result (`BenchConfig::conv_profile`), one table
    /// per model and mode; empty when none was taken.
    pub fn conv_profiles(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            let modes = [
                ("training step", r.train.as_ref().map(|t| &t.convolutions)),
                ("inference", r.infer.as_ref().map(|t| &t.convolutions)),
            ];
            for (mode, times) in modes {
                if let Some(times) = times.filter(|t| !t.is_empty()) {
                    out += &format!("{}, {mode}: convolutions by shape\n", r.model);
                    out += &conv_profile::table(times);
                }
            }
        }
        out
    }

    /// The human-readable table (`cfg`: how the results were measured), newline-terminated.
    pub fn to_text(&self, cfg: &BenchConfig) -> String {
        let first = &self.results[0];
        let mut out = format!(
            "input {:?}, {} warm-up + {} measured iterations; median [min, max]; (x) = ratio to {}; \
             CPU kernels {}\n",
            first.input,
            cfg.warmup,
            cfg.iters,
            first.model,
            crate::nn::fast::tile_gemm::Isa::detected().label()
        );
        for (r, (result, row)) in self.results.iter().zip(&self.rows).enumerate() {
            let show = |k: &str, unit: &str| match row.iter().position(|(n, _)| *n == k) {
                Some(i) => match row[i].1 {
                    Some(v) => format!(
                        "{v:.1}{unit} ({:.2}x)",
                        self.ratio(r, i).unwrap_or(f64::NAN)
                    ),
                    None => "-".into(),
                },
                None => "-".into(),
            };
            out.push_str(&format!("{}\n", result.model));
            out.push_str(&format!(
                "  params {} ({:.2}x), MACs {} ({:.2}x)\n",
                group_digits(result.params as u64),
                result.params as f64 / first.params as f64,
                group_digits(result.macs),
                result.macs as f64 / first.macs.max(1) as f64
            ));
            if let Some(t) = &result.train {
                out.push_str(&format!(
                    "  train step {:.1} ms [{:.1}, {:.1}] = forward {:.1} + backward {:.1} + optimiser {:.1}; {}\n",
                    t.step_ms.median,
                    t.step_ms.min,
                    t.step_ms.max,
                    t.forward_ms.median,
                    t.backward_ms.median,
                    t.optimizer_ms.median,
                    show("train_images_per_s", " img/s")
                ));
                out.push_str(&format!(
                    "  train time {}, peak memory {}, activations {}\n",
                    show("train_step_ms", " ms"),
                    show("train_peak_mb", " MB"),
                    show("activation_mb", " MB")
                ));
            }
            if let Some(t) = &result.infer {
                out.push_str(&format!(
                    "  inference {:.1} ms [{:.1}, {:.1}]; {}, peak memory {}\n",
                    t.forward_ms.median,
                    t.forward_ms.min,
                    t.forward_ms.max,
                    show("infer_images_per_s", " img/s"),
                    show("infer_peak_mb", " MB")
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_median_and_spread() {
        let s = Stats::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(Stats::of(&[4.0, 1.0, 2.0]).median, 2.0);
    }

    #[test]
    fn models_in_turn_keep_their_own_results() {
        use crate::zoo::{ModelOptions, resolve};
        let options = ModelOptions::default();
        let specs: Vec<ModelSpec> = ["resnet20", "dsnet20"]
            .iter()
            .map(|m| resolve(m, &options).unwrap())
            .collect();
        let cfg = BenchConfig {
            batch: 2,
            warmup: 1,
            iters: 2,
            mode: BenchMode::Both,
            optimizer: OptimConfig::default(),
            conv_profile: false,
        };
        let device = Device::flex();
        let both = bench_interleaved(&specs, &cfg, &device).unwrap();
        for (r, spec) in both.iter().zip(&specs) {
            let alone = bench(spec, &cfg, &device).unwrap();
            assert_eq!(r.model, spec.name);
            assert_eq!(
                (r.params, r.macs, r.input),
                (alone.params, alone.macs, alone.input)
            );
            let (t, i) = (r.train.as_ref().unwrap(), r.infer.as_ref().unwrap());
            assert!(t.step_ms.min > 0.0 && t.step_ms.min <= t.step_ms.max);
            assert!(i.forward_ms.min > 0.0);
        }
        assert!(
            both[1].params > both[0].params,
            "dsnet20 has the shortcut weights"
        );
        // A convolution profile would mix the models.
        let profiled = BenchConfig {
            conv_profile: true,
            ..cfg
        };
        let e = bench_interleaved(&specs, &profiled, &device).unwrap_err();
        assert!(e.to_string().contains("one model at a time"), "{e}");
    }
}
