//! Helpers shared by the integration tests that compare a fast path against Burn's generic one:
//! the difference of two results, and which kernels ran.

use burn::tensor::Tensor;
use densum::nn::fast::probe::{Counts, Kernel};

/// `max |a − b| / max |b|`: the largest difference relative to the reference's scale.
pub fn rel_err<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-12);
    (a - b).abs().max().into_scalar::<f32>() / scale
}

/// Asserts that `ran` counted exactly the kernels of `want` (each as often as given; a kernel
/// listed twice counts twice) and no other: a comparison whose fast path fell back to the
/// generic one, or whose reference took a fast kernel, fails here instead of comparing a path
/// with itself.
pub fn assert_ran(ran: &Counts, want: &[(Kernel, u64)], case: &str) {
    for kernel in Kernel::ALL {
        let n: u64 = want
            .iter()
            .filter(|(k, _)| *k == kernel)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            ran.get(kernel),
            n,
            "{case}: {kernel:?} ran {} times, expected {n} (all that ran: {ran:?})",
            ran.get(kernel)
        );
    }
}
