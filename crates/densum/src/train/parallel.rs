//! Data-parallel training in one process: one replica of the model per device, the global
//! batch split across them, every replica's gradients replaced by their mean, then the same
//! SGD update on every replica (so the replicas stay equal, as in PyTorch's DDP).
//!
//! The averaging is a [`GradReduce`]: [`AllReduce`] is Burn's own collective
//! (`burn::tensor::distributed::all_reduce`, which Burn 0.22 implements with NCCL on CUDA
//! only); [`HostMean`] averages on the host, for the CPU, where Burn's Flex backend leaves
//! all-reduce unimplemented. Everything else (sharding, loss weights, flattening, the update)
//! is the same code for both, so a CPU test of [`step`] checks the multi-device path up to
//! the reduction itself.
//!
//! Batch norm normalises with each device's own shard (as PyTorch's DDP without SyncBatchNorm);
//! the running statistics that validation and checkpoints use are the first replica's.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::distributed::{ReduceOperation, all_reduce};
use burn::tensor::{Device, Int, Tensor, TensorData};
use densum_data::Batch;

use super::sgd::Sgd;
use crate::device::{BackendKind, DeviceSpec};
use crate::error::{DensumError, Result};

/// One worker's part of a global batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Shard {
    /// Normalised pixels, NCHW.
    pub images: Vec<f32>,
    /// Class indices.
    pub labels: Vec<i64>,
    /// `[n, 3, H, W]`.
    pub shape: [usize; 4],
}

/// Splits a batch into `workers` contiguous shards whose sizes differ by at most one (the
/// first ones larger), so the sample order of the global batch is kept.
pub fn shard(batch: &Batch, workers: usize) -> Result<Vec<Shard>> {
    let [n, c, h, w] = batch.shape;
    if workers == 0 || n < workers {
        return Err(DensumError::Config(format!(
            "a batch of {n} images cannot be split over {workers} devices (one image per device at least); use a larger --batch"
        )));
    }
    let per_image = c * h * w;
    let mut shards = Vec::with_capacity(workers);
    let mut start = 0;
    for i in 0..workers {
        let len = n / workers + usize::from(i < n % workers);
        shards.push(Shard {
            images: batch.images[start * per_image..(start + len) * per_image].to_vec(),
            labels: batch.labels[start..start + len].to_vec(),
            shape: [len, c, h, w],
        });
        start += len;
    }
    Ok(shards)
}

/// How workers' gradients (one flat vector per worker, same layout) become their mean, one
/// copy on each worker's device.
pub trait GradReduce {
    /// The element-wise mean of `flats`, returned in the same order, each on the device of
    /// the input it replaces.
    fn mean(&self, flats: Vec<Tensor<1>>) -> Result<Vec<Tensor<1>>>;
}

/// Averages on the host: reads every worker's gradient, sums in worker order, divides, and
/// writes the mean back to each device. For CPU workers (and tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostMean;

impl GradReduce for HostMean {
    fn mean(&self, flats: Vec<Tensor<1>>) -> Result<Vec<Tensor<1>>> {
        let n = flats.len();
        let devices: Vec<Device> = flats.iter().map(Tensor::device).collect();
        let mut sum: Vec<f32> = Vec::new();
        for t in flats {
            let v = t
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| DensumError::Config(format!("gradient read back: {e:?}")))?;
            if sum.is_empty() {
                sum = v;
            } else if sum.len() != v.len() {
                return Err(DensumError::Config(format!(
                    "workers' gradients differ in size ({} and {}): the replicas are not the same model",
                    sum.len(),
                    v.len()
                )));
            } else {
                sum.iter_mut().zip(&v).for_each(|(s, x)| *s += x);
            }
        }
        let inv = 1.0 / n as f32;
        sum.iter_mut().for_each(|s| *s *= inv);
        let len = sum.len();
        Ok(devices
            .iter()
            .map(|d| Tensor::from_data(TensorData::new(sum.clone(), [len]), d))
            .collect())
    }
}

/// Burn's all-reduce over the workers' devices (NCCL on CUDA). Submits every worker's
/// reduction, then waits for them, as Burn's own gradient-sync server does.
#[derive(Clone, Debug)]
pub struct AllReduce {
    devices: Vec<Device>,
}

impl AllReduce {
    /// The collective over `devices` (plain devices, in worker order); `specs` says which
    /// backend they are, because only CUDA has Burn's all-reduce in 0.22.
    pub fn new(specs: &[DeviceSpec], devices: Vec<Device>) -> Result<Self> {
        if let Some(s) = specs.iter().find(|s| s.backend != BackendKind::Cuda) {
            return Err(DensumError::Config(format!(
                "--devices: `{s}`: Burn 0.22 implements all-reduce with NCCL on CUDA only (not on the CPU, ROCm or wgpu), so data-parallel training needs cuda:N devices; train on one `{}` device instead",
                s.backend.name()
            )));
        }
        Ok(AllReduce { devices })
    }
}

impl GradReduce for AllReduce {
    fn mean(&self, flats: Vec<Tensor<1>>) -> Result<Vec<Tensor<1>>> {
        let pending: Vec<_> = flats
            .into_iter()
            .map(|t| all_reduce(t, ReduceOperation::Mean, self.devices.clone()))
            .collect();
        Ok(pending.into_iter().map(|c| c.resolve()).collect())
    }
}

/// Takes every gradient out of a worker's [`GradientsParams`] into one flat vector, recording
/// the layout (parameter order of the module, which is the same on every replica).
struct Flatten<'a> {
    grads: &'a mut GradientsParams,
    parts: Vec<Tensor<1>>,
    layout: Vec<(ParamId, Vec<usize>)>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let dims = g.dims().to_vec();
            self.parts.push(g.reshape([dims.iter().product::<usize>()]));
            self.layout.push((param.id, dims));
        }
    }
}

/// Puts a flat vector back into per-parameter gradients.
struct Unflatten<'a> {
    flat: Tensor<1>,
    layout: &'a [(ParamId, Vec<usize>)],
    next: usize,
    offset: usize,
    out: GradientsParams,
}

impl ModuleVisitor for Unflatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some((id, dims)) = self.layout.get(self.next) else {
            return;
        };
        if *id != param.id || dims.len() != D {
            return;
        }
        let len: usize = dims.iter().product();
        let part = self.flat.clone().slice(self.offset..self.offset + len);
        let shape: [usize; D] = std::array::from_fn(|i| dims[i]);
        self.out.register(*id, part.reshape(shape));
        self.next += 1;
        self.offset += len;
    }
}

/// A replica: its device (with autodiff), its copy of the model and of the optimiser.
pub struct Worker<M> {
    /// The autodiff device the replica lives on.
    pub device: Device,
    /// The model replica.
    pub model: M,
    /// The replica's optimiser (the same state on every worker).
    pub sgd: Sgd,
}

/// One data-parallel step: worker `i` runs `loss_fn` on `shards[i]` and backpropagates (all
/// workers at once, one thread each), the gradients are averaged by `reduce`, and every
/// worker applies the same SGD update at rate `lr`. Returns the loss of the global batch.
///
/// Unequal shards (a last batch that does not divide) weigh each worker's loss by its share,
/// `n_i · workers / n`, so the mean of the workers' gradients is the gradient of the mean
/// loss over the whole batch, exactly as with one device.
///
/// On an error the workers are consumed (`workers` is left empty): the run cannot continue.
pub fn step<M, F>(
    workers: &mut Vec<Worker<M>>,
    shards: Vec<Shard>,
    loss_fn: F,
    reduce: &dyn GradReduce,
    lr: f64,
) -> Result<f32>
where
    M: Module,
    F: Fn(&M, Tensor<4>, Tensor<1, Int>) -> Tensor<1> + Clone + Send,
{
    if shards.len() != workers.len() {
        return Err(DensumError::Config(format!(
            "{} shards for {} workers",
            shards.len(),
            workers.len()
        )));
    }
    let total: usize = shards.iter().map(|s| s.shape[0]).sum();
    let n = workers.len();
    let taken = std::mem::take(workers);
    // Each worker returns itself, its shard's mean loss, its share of the batch, its gradients.
    let results: Vec<(Worker<M>, f64, f64, GradientsParams)> = std::thread::scope(|scope| {
        let handles: Vec<_> = taken
            .into_iter()
            .zip(shards)
            .map(|(worker, s)| {
                let loss_fn = loss_fn.clone();
                scope.spawn(move || {
                    let share = s.shape[0] as f64 / total as f64;
                    let weight = share * n as f64;
                    let x = Tensor::from_data(TensorData::new(s.images, s.shape), &worker.device);
                    let y =
                        Tensor::from_data(TensorData::new(s.labels, [s.shape[0]]), &worker.device);
                    let loss = loss_fn(&worker.model, x, y);
                    let value: f32 = loss.clone().into_scalar();
                    // Equal shards keep the loss untouched, so no extra operation runs.
                    let loss = if weight != 1.0 { loss * weight } else { loss };
                    let grads = GradientsParams::from_grads(loss.backward(), &worker.model);
                    (worker, value as f64, share, grads)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| DensumError::Stopped("a data-parallel worker panicked".into()))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut global = 0.0f64;
    let mut flats = Vec::with_capacity(n);
    let mut layout = Vec::new();
    let mut replicas = Vec::with_capacity(n);
    for (worker, value, share, mut grads) in results {
        global += value * share;
        let mut f = Flatten {
            grads: &mut grads,
            parts: Vec::new(),
            layout: Vec::new(),
        };
        worker.model.visit(&mut f);
        if f.parts.is_empty() {
            return Err(DensumError::Config(
                "the loss has no gradient for any parameter of the model".into(),
            ));
        }
        flats.push(Tensor::cat(f.parts, 0));
        layout = f.layout;
        replicas.push(worker);
    }
    let mean = reduce.mean(flats)?;
    for (mut worker, flat) in replicas.into_iter().zip(mean) {
        let mut u = Unflatten {
            flat,
            layout: &layout,
            next: 0,
            offset: 0,
            out: GradientsParams::new(),
        };
        worker.model.visit(&mut u);
        worker.model = worker.sgd.step(worker.model, &u.out, lr);
        workers.push(worker);
    }
    Ok(global as f32)
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::nn::{Linear, LinearConfig};

    use super::*;
    use crate::train::config::OptimConfig;

    /// A model without batch norm, so one device and several compute the same gradient of the
    /// same global batch (with batch norm they differ by design: per-device statistics).
    #[derive(Module, Debug)]
    struct Tiny {
        fc: Linear,
    }

    fn loss_of(m: &Tiny, x: Tensor<4>, y: Tensor<1, Int>) -> Tensor<1> {
        let logits = m.fc.forward(x.flatten::<2>(1, 3));
        CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits, y)
    }

    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let d = p.val().into_data().convert::<f32>();
            self.0.extend(d.try_into_vec::<f32>().unwrap());
        }
    }
    fn values(m: &Tiny) -> Vec<f32> {
        let mut v = Values(Vec::new());
        m.visit(&mut v);
        v.0
    }

    fn batch(step: usize) -> Batch {
        let n = 6;
        let images = (0..n * 4)
            .map(|i| ((i * 37 + step * 11) % 17) as f32 / 8.0 - 1.0)
            .collect();
        Batch {
            images,
            labels: (0..n).map(|i| ((i + step) % 3) as i64).collect(),
            shape: [n, 1, 2, 2],
            indices: (0..n).collect(),
            batch: step,
            skipped: Vec::new(),
        }
    }

    fn optim() -> OptimConfig {
        OptimConfig {
            momentum: 0.9,
            weight_decay: 1e-2,
            ..Default::default()
        }
    }

    fn workers(model: &Tiny, n: usize) -> Vec<Worker<Tiny>> {
        let device = Device::flex().autodiff();
        (0..n)
            .map(|_| Worker {
                device: device.clone(),
                model: model.clone().fork(&device),
                sgd: Sgd::new(optim()),
            })
            .collect()
    }

    #[test]
    fn shards_keep_order_and_differ_by_at_most_one() {
        let b = batch(0);
        let s = shard(&b, 4).unwrap();
        assert_eq!(
            s.iter().map(|s| s.shape[0]).collect::<Vec<_>>(),
            [2, 2, 1, 1]
        );
        let labels: Vec<i64> = s.iter().flat_map(|s| s.labels.clone()).collect();
        assert_eq!(labels, b.labels);
        let images: Vec<f32> = s.iter().flat_map(|s| s.images.clone()).collect();
        assert_eq!(images, b.images);
        let e = shard(&b, 7).unwrap_err().to_string();
        assert!(e.contains("6 images cannot be split over 7 devices"), "{e}");
    }

    /// The data-parallel step (sharding, loss weights, flattening, mean, SGD on every replica)
    /// gives the update one device computes from the whole batch, over steps with momentum
    /// and weight decay, for equal and unequal shards; the replicas stay bit-identical.
    #[test]
    fn several_workers_update_as_one() {
        let device = Device::flex().autodiff();
        device.seed(7);
        let model = Tiny {
            fc: LinearConfig::new(4, 3).init(&device),
        };
        // One device, the trainer's own path: backward of the whole batch, then SGD.
        let mut single = model.clone();
        let mut sgd = Sgd::new(optim());
        let mut single_losses = Vec::new();
        for step in 0..3 {
            let mut b = batch(step);
            let (x, y) = crate::train::data::tensors(&mut b, &device);
            let loss = loss_of(&single, x, y);
            single_losses.push(loss.clone().into_scalar::<f32>());
            single = sgd.step(single, &loss.backward(), 0.1);
        }
        let reference = values(&single);
        for n in [1, 2, 3, 4] {
            let mut ws = workers(&model, n);
            for (step, want) in single_losses.iter().enumerate() {
                let shards = shard(&batch(step), n).unwrap();
                let loss = super::step(&mut ws, shards, loss_of, &HostMean, 0.1).unwrap();
                assert!(
                    (loss - want).abs() < 1e-5,
                    "{n} workers: loss {loss} vs {want}"
                );
            }
            let first = values(&ws[0].model);
            for w in &ws[1..] {
                assert_eq!(values(&w.model), first, "{n} workers: replicas differ");
            }
            let worst = first
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            if n == 1 {
                // Nothing is averaged: the same operations as the one-device path.
                assert_eq!(first, reference);
            } else {
                assert!(worst < 1e-5, "{n} workers: parameters off by {worst}");
            }
            // The update moved the parameters (a test of a no-op step would pass too).
            assert!(first.iter().zip(values(&model)).any(|(a, b)| a != &b));
        }
    }

    #[test]
    fn all_reduce_is_cuda_only() {
        let specs = crate::device::parse_list("cpu").unwrap();
        let e = AllReduce::new(&specs, vec![Device::flex()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("NCCL on CUDA only"), "{e}");
        let specs = crate::device::parse_list("wgpu:0,wgpu:1").unwrap();
        let e = AllReduce::new(&specs, vec![]).unwrap_err().to_string();
        assert!(e.contains("`wgpu:0`") && e.contains("cuda:N"), "{e}");
    }
}
