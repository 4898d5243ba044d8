//! Stochastic depth (Huang et al. 2016) on residual branches.

use burn::module::{Flag, Module, Param};
use burn::tensor::{Distribution, Tensor};

/// Drops a whole residual branch per sample with probability `prob` during training and
/// rescales the survivors, so the expected output is unchanged.
#[derive(Module, Debug)]
pub struct DropPath {
    /// Probability of dropping the branch.
    pub prob: f64,
    /// Whether the module is in training mode.
    pub training: Param<Flag>,
}

impl DropPath {
    /// Drop path with probability `prob`.
    pub fn new(prob: f64) -> Self {
        DropPath {
            prob,
            training: Param::from_bool(true),
        }
    }

    /// Whether [`forward`](Self::forward) returns a tensor on `x`'s device unchanged (no
    /// drop probability, evaluation mode, or no gradients).
    pub fn is_identity(&self, x: &Tensor<4>) -> bool {
        self.prob <= 0.0 || !self.training.is_enabled() || !x.device().is_autodiff()
    }

    /// Applies it to a branch output.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if self.is_identity(&x) {
            return x;
        }
        let keep = 1.0 - self.prob;
        let n = x.dims()[0];
        let mask = Tensor::<4>::random([n, 1, 1, 1], Distribution::Bernoulli(keep), &x.device());
        x * (mask / keep)
    }
}
