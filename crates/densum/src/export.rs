//! ONNX export of a network through burn-onnx's forward-capture exporter (feature `onnx`).
//!
//! How it works: [`burn_onnx::export::OnnxExporter`] moves a copy of the network and a sample
//! input onto Burn's capture device, runs [`Net::forward`] once there, records every tensor
//! operation and lowers the recorded graph to ONNX (opset 18, weights embedded). Nothing in
//! densum is traced specially: the graph is the one Burn's generic operations build.
//!
//! Why densum's Flex fast paths do not get in the way: every fast path is taken only where
//! [`crate::nn::fast::enabled`] holds, which requires the tensor's device to be Flex. The
//! capture device is not Flex, so the forward pass on it takes Burn's generic path for every
//! operation (tests/onnx.rs checks with [`crate::nn::fast::probe`] that no fast kernel runs
//! during an export). The extension operations themselves could not be lowered: they are
//! opaque custom operations to the capture backend.
//!
//! One densum change for the exporter: GroupNorm (DSNet's and RGSNet's shortcut norms) is
//! composed of `sum_dim` and products while tracing ([`group_norm_traceable`]), because Burn's
//! own GroupNorm uses `mean_dim`, which burn-onnx 0.22 has no lowering for.
//!
//! Why the input is the normalised image batch: `densum predict` normalises pixels with the
//! dataset's mean and std before the forward pass (`predict`), and the network starts at its
//! stem convolution; the exported graph is the network alone, input `[N, 3, S, S]` (S the
//! model's input size), output logits `[N, classes]`.

use burn::tensor::{Device, Tensor};
use burn_onnx::export::{AxisSpec, InputSpec, OnnxExporter};

use crate::{DensumError, ModelSpec, Net, Result};

/// The batch axis of an exported model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// A fixed batch size, baked into the graph.
    Fixed(usize),
    /// A symbolic batch axis (`batch`): the model runs on any batch size.
    Dynamic,
}

/// The batch sizes of the two traces behind a dynamic batch axis. burn-onnx tells a batch
/// axis from a constant by capturing the forward pass twice with different sizes; 1 and 2
/// are the cheapest pair.
const DYNAMIC_TRACES: (usize, usize) = (1, 2);

/// Exports `net` (built from `spec`) as an ONNX model and returns its serialized protobuf.
///
/// The graph's input is the normalised image batch `[N, 3, S, S]` with `S` = `spec.input_size`,
/// its output the logits `[N, spec.config.num_classes]`. `device` is where `net` lives; the
/// capture runs on burn-onnx's own capture device whatever it is.
pub fn onnx(net: &Net, spec: &ModelSpec, batch: Batch, device: &Device) -> Result<Vec<u8>> {
    let size = spec.input_size;
    let sample = |n: usize| Tensor::<4>::zeros([n, 3, size, size], device);
    let exporter = OnnxExporter::new();
    let model = match batch {
        Batch::Fixed(0) => {
            return Err(DensumError::Export(
                "the batch size must be at least 1".to_string(),
            ));
        }
        Batch::Fixed(n) => {
            traced(|| exporter.export(net, sample(n), |net: &Net, x| net.forward(x)))
        }
        Batch::Dynamic => {
            let specs = [InputSpec::new([
                AxisSpec::dynamic("batch"),
                AxisSpec::Static,
                AxisSpec::Static,
                AxisSpec::Static,
            ])];
            let (a, b) = DYNAMIC_TRACES;
            traced(|| {
                exporter.export_dynamic(net, sample(a), sample(b), &specs, |net: &Net, x| {
                    net.forward(x)
                })
            })
        }
    };
    model
        .map(|m| m.into_bytes())
        .map_err(|e| DensumError::Export(format!("{} ({batch:?} batch): {e}", spec.name)))
}

thread_local! {
    /// Whether this thread is inside [`onnx`]'s trace. The capture runs the forward pass on the
    /// calling thread, so a thread-local flag marks exactly the traced operations.
    static TRACING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is tracing a network for ONNX export ([`onnx`]).
pub fn tracing() -> bool {
    TRACING.with(std::cell::Cell::get)
}

/// Runs `f` with [`tracing`] true on this thread, restoring the previous value afterwards
/// (even if `f` unwinds).
fn traced<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            TRACING.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(TRACING.with(|t| t.replace(true)));
    f()
}

/// GroupNorm composed only of operations burn-onnx 0.22 lowers: Burn's own GroupNorm reduces
/// with `mean_dim` and `square`, which its exporter rejects (`MeanDim` has no ONNX lowering),
/// so while [`tracing`] the mean is `sum_dim / n` and the square a product. Same mathematics
/// as `burn::nn::GroupNorm::forward` (biased variance, `epsilon` inside the square root).
pub fn group_norm_traceable(gn: &burn::nn::GroupNorm, x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let g = gn.num_groups;
    let len = c / g * h * w;
    let x = x.reshape([n, g, len]);
    let mean = x.clone().sum_dim(2).div_scalar(len as f64);
    let centred = x.sub(mean);
    let var = (centred.clone() * centred.clone())
        .sum_dim(2)
        .div_scalar(len as f64);
    let out = centred
        .div(var.add_scalar(gn.epsilon).sqrt())
        .reshape([n, c, h, w]);
    match (&gn.gamma, &gn.beta) {
        (Some(gamma), Some(beta)) => {
            out * gamma.val().reshape([1, c, 1, 1]) + beta.val().reshape([1, c, 1, 1])
        }
        (Some(gamma), None) => out * gamma.val().reshape([1, c, 1, 1]),
        (None, Some(beta)) => out + beta.val().reshape([1, c, 1, 1]),
        (None, None) => out,
    }
}
