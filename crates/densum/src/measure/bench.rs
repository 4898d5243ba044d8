//! Time and memory of training steps and inference passes (`densum bench`).

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor};
use serde::Serialize;

use super::alloc;
use super::cost;
use crate::net::Net;
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

/// Measures `spec` as `cfg` says, on `device` (the CPU backend by default).
pub fn bench(spec: &ModelSpec, cfg: &BenchConfig, device: &Device) -> BenchResult {
    let size = spec.input_size;
    let shape = [cfg.batch, 3, size, size];
    let c = cost(spec, &Net::new(&spec.config, device));
    let train = matches!(cfg.mode, BenchMode::Train | BenchMode::Both)
        .then(|| bench_train(spec, cfg, shape, device));
    let infer = matches!(cfg.mode, BenchMode::Infer | BenchMode::Both)
        .then(|| bench_infer(spec, cfg, shape, device));
    BenchResult {
        model: spec.name.clone(),
        input: shape,
        params: c.params,
        macs: c.macs,
        train,
        infer,
    }
}

fn bench_train(
    spec: &ModelSpec,
    cfg: &BenchConfig,
    shape: [usize; 4],
    device: &Device,
) -> TrainCost {
    let device = device.clone().autodiff();
    let mut net = Net::new(&spec.config, &device).train();
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init();
    let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let classes = spec.config.num_classes as i64;
    let labels: Vec<i64> = (0..shape[0] as i64).map(|i| i % classes).collect();
    let y = Tensor::<1, Int>::from_data(labels.as_slice(), &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (mut fwd, mut bwd, mut opt, mut step) = (vec![], vec![], vec![], vec![]);
    let (mut peak, mut act) = (0usize, 0usize);
    for i in 0..cfg.warmup + cfg.iters {
        let base = alloc::current();
        alloc::reset_peak();
        let t0 = Instant::now();
        let loss = loss_fn.forward(net.forward(x.clone()), y.clone());
        let _: f32 = loss.clone().into_scalar();
        let t_fwd = ms(t0);
        let held = alloc::current().saturating_sub(base);
        let t1 = Instant::now();
        let grads = loss.backward();
        let t_bwd = ms(t1);
        let t2 = Instant::now();
        let grads = GradientsParams::from_grads(grads, &net);
        net = optim.step(0.01, net, grads);
        // Read one value so any deferred work finishes inside the measurement.
        let _ = net.fc.bias.as_ref().map(|b| b.val().into_data());
        let t_opt = ms(t2);
        if i >= cfg.warmup {
            fwd.push(t_fwd);
            bwd.push(t_bwd);
            opt.push(t_opt);
            step.push(t_fwd + t_bwd + t_opt);
            peak = peak.max(measured_peak(base).unwrap_or(0));
            act = act.max(held);
        }
    }
    let step_ms = Stats::of(&step);
    TrainCost {
        forward_ms: Stats::of(&fwd),
        backward_ms: Stats::of(&bwd),
        optimizer_ms: Stats::of(&opt),
        images_per_s: shape[0] as f64 / (step_ms.median / 1e3),
        step_ms,
        peak_bytes: alloc::installed().then_some(peak),
        activation_bytes: alloc::installed().then_some(act),
    }
}

fn bench_infer(
    spec: &ModelSpec,
    cfg: &BenchConfig,
    shape: [usize; 4],
    device: &Device,
) -> InferCost {
    let net = Net::new(&spec.config, device).valid();
    let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let mut times = vec![];
    let mut peak = 0usize;
    for i in 0..cfg.warmup + cfg.iters {
        let base = alloc::current();
        alloc::reset_peak();
        let t0 = Instant::now();
        let _ = net.forward(x.clone()).into_data();
        let t = ms(t0);
        if i >= cfg.warmup {
            times.push(t);
            peak = peak.max(measured_peak(base).unwrap_or(0));
        }
    }
    let forward_ms = Stats::of(&times);
    InferCost {
        images_per_s: shape[0] as f64 / (forward_ms.median / 1e3),
        forward_ms,
        peak_bytes: alloc::installed().then_some(peak),
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
}
