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
use crate::block::{Activation, Block, BlockOut};

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
    type History = Vec<Tensor<4>>;

    fn first(&self, out: BlockOut, _f: Activation) -> (Tensor<4>, Vec<Tensor<4>>) {
        // Y_0 stays unconcatenated: later blocks read the parts, the stage its output.
        (out.branch.clone(), vec![out.shortcut, out.branch])
    }

    fn branch(&self, block: &Block, _prev: &Tensor<4>, parts: &Vec<Tensor<4>>) -> Tensor<4> {
        match block {
            Block::DenseLayer(d) => d.forward_parts(parts.clone()),
            _ => block.forward(Tensor::cat(parts.clone(), 1)).branch,
        }
    }

    fn aggregate(
        &self,
        _l: usize,
        branch: Tensor<4>,
        _prev: Tensor<4>,
        parts: &mut Vec<Tensor<4>>,
        _f: Activation,
    ) -> Tensor<4> {
        parts.push(branch.clone());
        branch
    }

    fn output(&self, _last: Tensor<4>, parts: Vec<Tensor<4>>) -> Tensor<4> {
        Tensor::cat(parts, 1)
    }
}
