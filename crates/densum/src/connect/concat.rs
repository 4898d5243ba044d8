//! DenseNet's concatenation (Huang et al. 2017): block l reads the concatenation
//! of the stage input and every earlier block's output, `[x, X_0, ..., X_{l-1}]`, and the
//! stage ends with all of them, `[x, X_0, ..., X_{n-1}]`. Block 0's "shortcut" x is
//! concatenated, not added. So block l reads `in + l · k` channels and the stage ends with
//! `in + n · k`, k being what each block outputs.
//!
//! The parts are kept apart and concatenated only where they are read: a dense layer takes
//! them as they are (its memory-efficient mode recomputes the concatenation in the backward
//! pass), and the stage's output is the one concatenation every stage builds.

use burn::module::Module;
use burn::tensor::Tensor;

use super::Rule;
use crate::block::{Activation, Block, PartStats};

/// A dense stage's history: its parts and their batch statistics (computed once per part
/// when a layer first normalises it in training, shared by every later layer).
#[derive(Default)]
pub struct Parts {
    parts: Vec<Tensor<4>>,
    stats: PartStats,
}

/// The concatenation of every earlier output (no learned parts). Its history is the parts.
#[derive(Module, Debug, Default)]
pub struct Concat;

impl Concat {
    /// Input channels of block `l` of a stage entered with `stage_in` channels whose blocks
    /// output `block_out` channels each; with `l` = the number of blocks, the stage's output
    /// channels. Saturating, so a count too large for `usize` stays over any bound the zoo
    /// checks ([`check_channels`](crate::zoo::limits::check_channels)).
    pub fn block_in_channels(l: usize, stage_in: usize, block_out: usize) -> usize {
        stage_in.saturating_add(l.saturating_mul(block_out))
    }

    /// The shape after a block that read `input` and produced `out`: its new channels
    /// appended to what it read.
    pub fn next_shape(&self, input: [usize; 3], out: [usize; 3]) -> [usize; 3] {
        [input[0] + out[0], out[1], out[2]]
    }
}

impl Rule for Concat {
    type History = Parts;

    fn first(&self, block: &Block, x: Tensor<4>) -> (Tensor<4>, Parts) {
        let out = block.forward(x);
        // Y_0 stays unconcatenated: later blocks read the parts, the stage its output.
        let parts = vec![out.shortcut, out.branch.clone()];
        (
            out.branch,
            Parts {
                parts,
                ..Default::default()
            },
        )
    }

    fn branch(&self, block: &Block, _prev: &Tensor<4>, history: &Parts) -> Tensor<4> {
        match block {
            Block::DenseLayer(d) => d.forward_parts(history.parts.clone(), &history.stats),
            _ => block.forward(Tensor::cat(history.parts.clone(), 1)).branch,
        }
    }

    fn aggregate(
        &self,
        _l: usize,
        branch: Tensor<4>,
        _prev: Tensor<4>,
        history: &mut Parts,
        _f: Activation,
    ) -> Tensor<4> {
        history.parts.push(branch.clone());
        branch
    }

    fn output(&self, _last: Tensor<4>, history: Parts) -> Tensor<4> {
        Tensor::cat(history.parts, 1)
    }
}
