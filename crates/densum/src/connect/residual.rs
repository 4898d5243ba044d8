//! ResNet's identity shortcut and the naive dense identity DSNet ablates against: the two
//! connectivities without learned parts.

use burn::module::Module;
use burn::tensor::Tensor;

use super::Rule;
use crate::block::{Activation, BlockOut};

/// ResNet (He et al. 2016): `Y_l = f(X_l + Y_{l-1})`.
#[derive(Module, Debug, Default)]
pub struct Residual;

impl Rule for Residual {
    type History = ();

    fn first(&self, out: BlockOut, f: Activation) -> (Tensor<4>, ()) {
        (f.sum(out.branch, out.shortcut), ())
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

    fn first(&self, out: BlockOut, f: Activation) -> (Tensor<4>, Tensor<4>) {
        let y = f.sum(out.branch, out.shortcut);
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
