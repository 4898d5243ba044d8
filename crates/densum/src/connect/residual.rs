//! ResNet's identity shortcut and the naive dense identity DSNet ablates against: the two
//! connectivities without learned parts.

use burn::module::Module;
use burn::tensor::Tensor;

use super::Rule;
use crate::block::{Activation, Block};

/// ResNet (He et al. 2016): `Y_l = f(X_l + Y_{l-1})`.
///
/// Every block runs through [`Block::forward_summed`]: the block's shortcut is the identity
/// `Y_{l-1}` for l >= 1, so the sum fuses into the block's last layer ([`aggregate`](Rule::aggregate)
/// states the same rule for a branch computed apart).
#[derive(Module, Debug, Default)]
pub struct Residual;

impl Rule for Residual {
    type History = ();

    fn next_block(&self, _l: usize, block: &Block, prev: Tensor<4>, _: &mut ()) -> Tensor<4> {
        block.forward_summed(prev)
    }

    fn first(&self, block: &Block, x: Tensor<4>) -> (Tensor<4>, ()) {
        (block.forward_summed(x), ())
    }

    fn aggregate(
        &self,
        _l: usize,
        branch: Tensor<4>,
        prev: Tensor<4>,
        _history: &mut (),
        f: Activation,
    ) -> Tensor<4> {
        f.sum(branch, prev)
    }
}

/// "ResNet-dense": `Y_l = f(X_l + sum_{i<l} Y_i)`, every earlier output added unweighted and
/// unnormalised. Its history is the running sum.
#[derive(Module, Debug, Default)]
pub struct DenseIdentity;

impl Rule for DenseIdentity {
    type History = Tensor<4>;

    fn first(&self, block: &Block, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let y = block.forward_summed(x);
        (y.clone(), y)
    }

    fn aggregate(
        &self,
        _l: usize,
        branch: Tensor<4>,
        _prev: Tensor<4>,
        sum: &mut Tensor<4>,
        f: Activation,
    ) -> Tensor<4> {
        let y = f.sum(branch, sum.clone());
        *sum = sum.clone() + y.clone();
        y
    }
}
