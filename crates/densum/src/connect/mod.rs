//! Connectivity: how a stage combines the outputs of its blocks, in the "dense
//! summation" notation of the DSNet paper (Zhang et al.).
//!
//! Every family in densum is one [`Block`] kind and one connectivity.
//! Block 0 of a stage always uses the original residual rule with its projection,
//! `Y_0 = f(X_0 + P(x))`; the connectivity decides the later blocks' aggregation `Y_l`:
//!
//! | connectivity | Y_l (l >= 1) |
//! | --- | --- |
//! | [`Residual`] (ResNet) | f(X_l + Y_{l-1}) |
//! | [`DenseIdentity`] ("ResNet-dense") | f(X_l + sum_{i<l} Y_i) |
//! | [`DenseSum`] (DSNet) | f(X_l + sum_{i<l} W_{l,i} ⊙ N(Y_i or X_i)) |
//! | [`RgShortcuts`] (RGSNet) | X_l + RG(Y_{l-1}), and the ablations |
//! | [`Concat`] (DenseNet) | concat(Y_{l-1}, X_l); Y_0 = concat(x, X_0) |
//! | [`Deluge`] (DelugeNet) | sum_i W_l\[i\] ⊙ H_i + b_l over H = [x, X_0, ..., X_l] |
//!
//! f is the block's own output activation (ReLU for post-activation blocks, none for
//! pre-activation ones). Each connectivity is a module of its own, with its own learned parts
//! and its own [`Rule::History`] (what it remembers of earlier outputs while a stage runs);
//! [`Connect`] is the choice of one of them, [`ConnectKind`] its configuration.
//!
//! Between stages, [`transition`] holds what changes the resolution when the blocks do not
//! (DenseNet's BN-ReLU-conv1x1-avgpool, DelugeNet's strided depthwise 3x3 + conv1x1).

pub mod concat;
pub mod deluge;
pub mod dense_sum;
pub mod residual;
pub mod rg;
pub mod transition;

use burn::module::{Module, Param, ParamId};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::block::{Activation, Block};

pub use concat::Concat;
pub use deluge::{CrossLayer, Deluge};
pub use dense_sum::{DenseSum, DenseSumConfig, DsInit, DsVariant, DsWeight, DsWeightKind, InnerDs};
pub use residual::{DenseIdentity, Residual};
pub use rg::{RgShortcut, RgShortcuts, RgVariant};
pub use transition::{Transition, TransitionConfig, TransitionKind};

/// The connectivity of a network's stages (configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectKind {
    /// ResNet's identity shortcut ([`Residual`]).
    Residual,
    /// The naive dense identity: every earlier output added unweighted, unnormalised
    /// ([`DenseIdentity`]).
    DenseIdentity,
    /// DSNet's dense weighted normalised shortcuts ([`DenseSum`]).
    DenseSum(DenseSumConfig),
    /// RGSNet's nonlinear shortcuts ([`RgShortcuts`]).
    Rg(RgVariant),
    /// DenseNet's concatenation of every earlier output ([`Concat`]).
    Concat,
    /// DelugeNet's cross-layer depthwise combination of every earlier output ([`Deluge`]).
    Deluge,
}

impl ConnectKind {
    /// Input channels of block `l` of a stage entered with `stage_in` channels whose blocks
    /// output `block_out` channels: the stage input for block 0 and the previous block's
    /// output after it, except where the connectivity widens the input ([`Concat`]).
    pub fn block_in_channels(self, l: usize, stage_in: usize, block_out: usize) -> usize {
        match (self, l) {
            (ConnectKind::Concat, _) => Concat::block_in_channels(l, stage_in, block_out),
            (_, 0) => stage_in,
            _ => block_out,
        }
    }

    /// Output channels of a stage of `blocks` blocks (see [`Self::block_in_channels`]).
    pub fn stage_out_channels(self, stage_in: usize, block_out: usize, blocks: usize) -> usize {
        match self {
            ConnectKind::Concat => Concat::block_in_channels(blocks, stage_in, block_out),
            _ => block_out,
        }
    }
}

/// One connectivity's rule as the stage loop ([`Stage`](crate::stage::Stage)) runs it: block
/// 0's output, then each later block's input and output, then the stage's output.
pub trait Rule {
    /// What the rule remembers of the stage's earlier outputs while the stage runs.
    type History;

    /// Runs block 0 on the stage input `x`: `Y_0` and the history after it. Rules whose
    /// `Y_0` is `f(X_0 + P(x))` take it from [`Block::forward_summed`] (the sum fused into the
    /// block's last layer), the others the branch and shortcut from [`Block::forward`].
    fn first(&self, block: &Block, x: Tensor<4>) -> (Tensor<4>, Self::History);

    /// The branch `X_l` of block `l >= 1`, which reads the previous output `prev` unless the
    /// rule says otherwise.
    fn branch(&self, block: &Block, prev: &Tensor<4>, _history: &Self::History) -> Tensor<4> {
        block.forward(prev.clone()).branch
    }

    /// `Y_l` (l >= 1) from the branch, the previous output and the history (updated here).
    fn aggregate(
        &self,
        l: usize,
        branch: Tensor<4>,
        prev: Tensor<4>,
        history: &mut Self::History,
        f: Activation,
    ) -> Tensor<4>;

    /// Runs block `l >= 1`: `Y_l` from the previous output, by [`branch`](Self::branch) and
    /// [`aggregate`](Self::aggregate) unless the rule evaluates its own definition faster.
    fn next_block(
        &self,
        l: usize,
        block: &Block,
        prev: Tensor<4>,
        history: &mut Self::History,
    ) -> Tensor<4> {
        let branch = self.branch(block, &prev, history);
        self.aggregate(l, branch, prev, history, block.activation())
    }

    /// The stage's output from the last block's output.
    fn output(&self, last: Tensor<4>, _history: Self::History) -> Tensor<4> {
        last
    }
}

/// A stage's connectivity: one of the connectivity modules, each with its own learned parts.
#[derive(Module, Debug)]
pub enum Connect {
    /// [`ConnectKind::Residual`].
    Residual(Residual),
    /// [`ConnectKind::DenseIdentity`].
    DenseIdentity(DenseIdentity),
    /// [`ConnectKind::DenseSum`].
    DenseSum(DenseSum),
    /// [`ConnectKind::Rg`].
    Rg(RgShortcuts),
    /// [`ConnectKind::Concat`].
    Concat(Concat),
    /// [`ConnectKind::Deluge`].
    Deluge(Deluge),
}

impl Connect {
    /// The connectivity of `kind` for a stage of `blocks` blocks and `channels` channels.
    pub fn new(
        kind: ConnectKind,
        blocks: usize,
        channels: usize,
        gn_base: usize,
        device: &Device,
    ) -> Self {
        match kind {
            ConnectKind::Residual => Connect::Residual(Residual),
            ConnectKind::DenseIdentity => Connect::DenseIdentity(DenseIdentity),
            ConnectKind::DenseSum(cfg) => {
                Connect::DenseSum(DenseSum::new(&cfg, blocks, channels, gn_base, device))
            }
            ConnectKind::Rg(v) => {
                Connect::Rg(RgShortcuts::new(v, blocks, channels, gn_base, device))
            }
            ConnectKind::Concat => Connect::Concat(Concat),
            ConnectKind::Deluge => Connect::Deluge(Deluge::new(blocks, channels, device)),
        }
    }

    /// The shape after a block that read `input` and produced `out` (both `[c, h, w]`): the
    /// block's output, or what the connectivity makes of it ([`Concat::next_shape`]).
    pub fn next_shape(&self, input: [usize; 3], out: [usize; 3]) -> [usize; 3] {
        match self {
            Connect::Concat(c) => c.next_shape(input, out),
            _ => out,
        }
    }
}

/// A parameter of `shape` whose values `init` makes when it is first read, as Burn's own
/// initialisers do: building a network (to count it, or to load weights into it) allocates
/// none of the shortcut weights, which grow with the square of a stage's length.
pub(crate) fn lazy_param<const D: usize>(
    shape: [usize; D],
    device: &Device,
    init: impl FnOnce(&Device) -> Tensor<D> + Send + Sync + 'static,
) -> Param<Tensor<D>> {
    Param::uninitialized(
        ParamId::new(),
        move |device, require_grad| {
            let t = init(device);
            if require_grad { t.require_grad() } else { t }
        },
        device.clone(),
        true,
        shape.into(),
    )
}

/// Read access to a stage's learned cross-layer weights (shortcut-reuse maps, `explain::reuse`).
impl Connect {
    /// DSNet's dense shortcuts, when the stage has them.
    pub fn dense_sum(&self) -> Option<&DenseSum> {
        match self {
            Connect::DenseSum(d) => Some(d),
            _ => None,
        }
    }

    /// DelugeNet's cross-layer combinations, when the stage has them.
    pub fn cross_layer(&self) -> Option<&Deluge> {
        match self {
            Connect::Deluge(d) => Some(d),
            _ => None,
        }
    }
}
