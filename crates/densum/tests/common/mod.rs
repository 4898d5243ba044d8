//! Helpers shared by the integration tests that compare a fast path against Burn's generic one.

use burn::tensor::Tensor;

/// `max |a − b| / max |b|`: the largest difference relative to the reference's scale.
pub fn rel_err<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-12);
    (a - b).abs().max().into_scalar::<f32>() / scale
}
