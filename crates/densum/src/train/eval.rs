//! Evaluation: loss, top-1 and top-5 error, per-class accuracy.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::Device;
use densum_data::Loader;
use serde::Serialize;

use super::data::{batch_err, tensors};
use crate::error::Result;
use crate::net::Net;

/// Accuracy of one class.
#[derive(Clone, Debug, Serialize)]
pub struct ClassAccuracy {
    /// Class name.
    pub class: String,
    /// Correct top-1 predictions.
    pub correct: usize,
    /// Samples.
    pub total: usize,
    /// correct / total.
    pub accuracy: f64,
}

/// The result of an evaluation pass.
#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    /// Samples evaluated.
    pub samples: usize,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Top-1 error, percent.
    pub top1_error: f64,
    /// Top-5 error, percent.
    pub top5_error: f64,
    /// Per-class top-1 accuracy.
    pub per_class: Vec<ClassAccuracy>,
}

/// Evaluates `net` (in inference mode: running BN statistics, no dropout) on every batch of
/// `loader`'s epoch 0.
pub fn evaluate(net: &Net, loader: &Loader, device: &Device) -> Result<EvalResult> {
    let names = loader.dataset().class_names().to_vec();
    let k = names.len();
    let (mut correct, mut total) = (vec![0usize; k], vec![0usize; k]);
    let (mut loss_sum, mut top1, mut top5, mut n) = (0f64, 0usize, 0usize, 0usize);
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    for batch in loader.epoch(0) {
        let mut batch = batch.map_err(batch_err)?;
        let (x, y) = tensors(&mut batch, device);
        let logits = net.forward(x);
        let loss: f32 = loss_fn.forward(logits.clone(), y).into_scalar();
        let classes = logits.dims()[1];
        let values = logits
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let b = batch.labels.len();
        loss_sum += loss as f64 * b as f64;
        for (i, &label) in batch.labels.iter().enumerate() {
            let row = &values[i * classes..(i + 1) * classes];
            let target = row[label as usize];
            // Rank of the true class: how many logits beat it (ties count against).
            let rank = row.iter().filter(|&&v| v > target).count();
            let label = label as usize;
            total[label] += 1;
            if rank == 0 {
                top1 += 1;
                correct[label] += 1;
            }
            if rank < 5 {
                top5 += 1;
            }
        }
        n += b;
    }
    let pct = |hits: usize| {
        if n == 0 {
            0.0
        } else {
            100.0 * (1.0 - hits as f64 / n as f64)
        }
    };
    Ok(EvalResult {
        samples: n,
        loss: if n == 0 { 0.0 } else { loss_sum / n as f64 },
        top1_error: pct(top1),
        top5_error: pct(top5),
        per_class: names
            .into_iter()
            .enumerate()
            .map(|(i, class)| ClassAccuracy {
                class,
                correct: correct[i],
                total: total[i],
                accuracy: if total[i] == 0 {
                    0.0
                } else {
                    correct[i] as f64 / total[i] as f64
                },
            })
            .collect(),
    })
}
