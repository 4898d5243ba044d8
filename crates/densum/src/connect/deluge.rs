//! DelugeNet's cross-layer depthwise convolutions (Kuen et al. 2017): the input of
//! composite layer l is, per channel c, `sum_i w^c_i h^c_i + b^c` over every earlier output of
//! the stage, the stage input included — a 1x1 depthwise filter across the layer axis.
//!
//! In the stage loop's terms (see `connect/mod.rs`): with `H = [x, X_0, ..., X_l]`,
//! `Y_l = sum_i W_l[i] ⊙ H_i + b_l`, and block l+1 reads Y_l; the stage's output is the last
//! Y, which the next transition reads. Block 0 reads x itself (a combination of one input
//! would only be a per-channel affine map).
//!
//! File names: `layer{s}.deluge.{l}.weight` (shape `[l + 2, C]`, row i weighting H_i) and
//! `layer{s}.deluge.{l}.bias` (`[C]`). Weights start at 1 and biases at 0, so a new network
//! sums its history like a pre-activation ResNet (`x + X_0 + ... + X_l`).

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use super::{Rule, lazy_param};
use crate::block::{Activation, Block};

/// One combination `sum_i W[i] ⊙ H_i + b`.
#[derive(Module, Debug)]
pub struct CrossLayer {
    /// `[inputs, C]`.
    pub weight: Param<Tensor<2>>,
    /// `[C]`.
    pub bias: Param<Tensor<1>>,
}

impl CrossLayer {
    /// A combination of `inputs` tensors of `channels` channels.
    pub fn new(inputs: usize, channels: usize, device: &Device) -> Self {
        CrossLayer {
            weight: lazy_param([inputs, channels], device, move |d| {
                Tensor::ones([inputs, channels], d)
            }),
            bias: lazy_param([channels], device, move |d| Tensor::zeros([channels], d)),
        }
    }

    /// Applies it to `history` (as many tensors as the weight has rows).
    pub fn forward(&self, history: &[Tensor<4>]) -> Tensor<4> {
        let [_, c] = self.weight.dims();
        let w = self.weight.val();
        let sum = history
            .iter()
            .enumerate()
            .map(|(i, h)| h.clone() * w.clone().narrow(0, i, 1).reshape([1, c, 1, 1]))
            .reduce(|a, b| a + b)
            .expect("at least one input");
        sum + self.bias.val().reshape([1, c, 1, 1])
    }
}

/// The cross-layer combinations of one stage: `deluge[l]` makes Y_l from `l + 2` inputs.
#[derive(Module, Debug)]
pub struct Deluge {
    /// One per block.
    pub deluge: Vec<CrossLayer>,
}

impl Deluge {
    /// Combinations for a stage of `blocks` blocks with `channels` channels.
    pub fn new(blocks: usize, channels: usize, device: &Device) -> Self {
        Deluge {
            deluge: (0..blocks)
                .map(|l| CrossLayer::new(l + 2, channels, device))
                .collect(),
        }
    }

    /// The learned weights of blocks 0..n-1: block l's `[l + 2, C]`, row i weighting H_i of
    /// `H = [x, X_0, ..., X_l]`.
    pub fn weights(&self) -> Vec<Tensor<2>> {
        self.deluge.iter().map(|c| c.weight.val()).collect()
    }
}

/// The history is `H = [x, X_0, ..., X_l]`, the stage input and every branch so far.
impl Rule for Deluge {
    type History = Vec<Tensor<4>>;

    fn first(&self, block: &Block, x: Tensor<4>) -> (Tensor<4>, Vec<Tensor<4>>) {
        let out = block.forward(x);
        let history = vec![out.shortcut, out.branch];
        (self.deluge[0].forward(&history), history)
    }

    fn aggregate(
        &self,
        l: usize,
        branch: Tensor<4>,
        _prev: Tensor<4>,
        history: &mut Vec<Tensor<4>>,
        _f: Activation,
    ) -> Tensor<4> {
        history.push(branch);
        self.deluge[l].forward(history)
    }
}
