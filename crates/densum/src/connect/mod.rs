//! Connectivity: how a stage combines the outputs of its blocks (spec section 1).
//!
//! Every family in densum is one [`Block`](crate::block::Block) kind and one connectivity.
//! Block 0 of a stage always uses the original residual rule with its projection,
//! `Y_0 = f(X_0 + P(x))`; the connectivity decides the later blocks' aggregation `Y_l`:
//!
//! | connectivity | Y_l (l >= 1) |
//! | --- | --- |
//! | [`ConnectKind::Residual`] (ResNet) | f(X_l + Y_{l-1}) |
//! | [`ConnectKind::DenseIdentity`] ("ResNet-dense") | f(X_l + sum_{i<l} Y_i) |
//! | [`ConnectKind::DenseSum`] (DSNet) | f(X_l + sum_{i<l} W_{l,i} ⊙ N(Y_i or X_i)) |
//! | [`ConnectKind::Rg`] (RGSNet) | X_l + RG(Y_{l-1}), and the ablations |
//! | [`ConnectKind::Concat`] (DenseNet) | concat(Y_{l-1}, X_l); Y_0 = concat(x, X_0) |
//! | [`ConnectKind::Deluge`] (DelugeNet) | sum_i W_l[i] ⊙ H_i + b_l over H = [x, X_0, ..., X_l] |
//!
//! f is the block's own output activation (ReLU for post-activation blocks, none for
//! pre-activation ones). Concatenation is the one rule that also changes block 0 (its
//! "shortcut" x is concatenated, not added) and the channel counts: block l reads
//! `in + l · k` channels and the stage ends with `in + n · k`.
//!
//! Between stages, [`transition`] holds what changes the resolution when the blocks do not
//! (DenseNet's BN-ReLU-conv1x1-avgpool, DelugeNet's strided depthwise 3x3 + conv1x1).

pub mod deluge;
pub mod dense_sum;
pub mod rg;
pub mod transition;

use crate::block::Activation;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use deluge::{CrossLayer, Deluge};
pub use dense_sum::{DenseSum, DenseSumConfig, DsInit, DsVariant, DsWeight, DsWeightKind, InnerDs};
pub use rg::{RgShortcut, RgShortcuts, RgVariant};
pub use transition::{Transition, TransitionConfig, TransitionKind};

/// The connectivity of a network's stages (configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectKind {
    /// ResNet's identity shortcut.
    Residual,
    /// The naive dense identity: every earlier output added unweighted, unnormalised.
    DenseIdentity,
    /// DSNet's dense weighted normalised shortcuts.
    DenseSum(DenseSumConfig),
    /// RGSNet's nonlinear shortcuts.
    Rg(RgVariant),
    /// DenseNet's concatenation of every earlier output.
    Concat,
    /// DelugeNet's cross-layer depthwise combination of every earlier output.
    Deluge,
}

impl ConnectKind {
    /// Input channels of block `l` of a stage entered with `stage_in` channels whose blocks
    /// output `block_out` channels.
    pub fn block_in_channels(self, l: usize, stage_in: usize, block_out: usize) -> usize {
        match (self, l) {
            (ConnectKind::Concat, _) => stage_in + l * block_out,
            (_, 0) => stage_in,
            _ => block_out,
        }
    }

    /// Output channels of a stage of `blocks` blocks (see [`Self::block_in_channels`]).
    pub fn stage_out_channels(self, stage_in: usize, block_out: usize, blocks: usize) -> usize {
        match self {
            ConnectKind::Concat => stage_in + blocks * block_out,
            _ => block_out,
        }
    }
}

/// The state a stage's connectivity keeps (its learned parts); see [`ConnectKind`].
#[derive(Module, Debug)]
pub struct Connect {
    /// Dense shortcuts, for [`ConnectKind::DenseSum`].
    pub dense: Option<DenseSum>,
    /// RG shortcuts, for [`ConnectKind::Rg`].
    pub rg: Option<RgShortcuts>,
    /// Cross-layer depthwise combinations, for [`ConnectKind::Deluge`].
    pub deluge: Option<Deluge>,
    /// Which rule applies.
    #[module(skip)]
    pub kind: ConnectKind,
}

/// What a stage remembers of its earlier outputs while it runs.
#[derive(Default)]
pub struct History {
    /// Earlier outputs as the dense sums read them.
    dense: dense_sum::DsHistory,
    /// Running sum of earlier outputs (dense identity).
    sum: Option<Tensor<4>>,
    /// The stage input and every block's branch (concatenation, cross-layer combination),
    /// kept apart: a concatenation is built only where it is read.
    parts: Vec<Tensor<4>>,
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
        Connect {
            dense: match &kind {
                ConnectKind::DenseSum(cfg) => {
                    Some(DenseSum::new(cfg, blocks, channels, gn_base, device))
                }
                _ => None,
            },
            rg: match kind {
                ConnectKind::Rg(v) => Some(RgShortcuts::new(v, blocks, channels, gn_base, device)),
                _ => None,
            },
            deluge: (kind == ConnectKind::Deluge).then(|| Deluge::new(blocks, channels, device)),
            kind,
        }
    }

    /// Block 0's output from its branch and the original residual shortcut:
    /// `f(X_0 + P(x))`, or for concatenation the parts `[x, X_0]` (kept in `history`).
    pub fn first(
        &self,
        branch: Tensor<4>,
        shortcut: Tensor<4>,
        history: &mut History,
        f: Activation,
    ) -> Tensor<4> {
        match self.kind {
            ConnectKind::Concat => {
                history.parts = vec![shortcut, branch.clone()];
                // Y_0 stays unconcatenated: later blocks read `parts`, the stage `output`.
                branch
            }
            ConnectKind::Deluge => {
                history.parts = vec![shortcut, branch];
                let d = self.deluge.as_ref().expect("deluge connectivity");
                d.aggregate(0, &history.parts)
            }
            _ => f.sum(branch, shortcut),
        }
    }

    /// What block `l >= 1` reads when it is not simply the previous output: the parts of a
    /// concatenation.
    pub fn parts<'h>(&self, history: &'h History) -> Option<&'h [Tensor<4>]> {
        match self.kind {
            ConnectKind::Concat => Some(&history.parts),
            _ => None,
        }
    }

    /// The stage's output from the last block's output `y`.
    pub fn output(&self, y: Tensor<4>, history: History) -> Tensor<4> {
        match self.kind {
            ConnectKind::Concat => Tensor::cat(history.parts, 1),
            _ => y,
        }
    }

    /// Remembers block `i`'s output `y` (aggregation) and `x` (branch) for later blocks.
    pub fn record(&self, i: usize, y: &Tensor<4>, x: &Tensor<4>, history: &mut History) {
        match self.kind {
            ConnectKind::DenseSum(_) => {
                if let Some(d) = &self.dense {
                    d.record(i, y, x, &mut history.dense);
                }
            }
            ConnectKind::DenseIdentity => {
                history.sum = Some(match history.sum.take() {
                    Some(s) => s + y.clone(),
                    None => y.clone(),
                });
            }
            ConnectKind::Residual
            | ConnectKind::Rg(_)
            | ConnectKind::Concat
            | ConnectKind::Deluge => {}
        }
    }

    /// Block `l`'s output (l >= 1) from its branch `branch`, the previous output `prev` and
    /// the history; `f` is the block's output activation.
    pub fn aggregate(
        &self,
        l: usize,
        branch: Tensor<4>,
        prev: Tensor<4>,
        history: &mut History,
        f: Activation,
    ) -> Tensor<4> {
        match (&self.kind, &self.dense, &self.rg) {
            (ConnectKind::Concat, _, _) => {
                history.parts.push(branch.clone());
                branch
            }
            (ConnectKind::Deluge, _, _) => {
                history.parts.push(branch);
                let d = self.deluge.as_ref().expect("deluge connectivity");
                d.aggregate(l, &history.parts)
            }
            (ConnectKind::DenseSum(_), Some(d), _) => d.aggregate(l, branch, &history.dense, f),
            (ConnectKind::DenseIdentity, _, _) => match &history.sum {
                Some(s) => f.sum(branch, s.clone()),
                None => f.sum(branch, prev),
            },
            (ConnectKind::Rg(_), _, Some(rg)) => rg.aggregate(l, branch, prev),
            _ => f.sum(branch, prev),
        }
    }
}

/// Read access to a stage's learned cross-layer weights (shortcut-reuse maps, `explain::reuse`).
impl Connect {
    /// DSNet's dense shortcuts, when the stage has them.
    pub fn dense_sum(&self) -> Option<&DenseSum> {
        self.dense.as_ref()
    }

    /// DelugeNet's cross-layer combinations, when the stage has them.
    pub fn cross_layer(&self) -> Option<&Deluge> {
        self.deluge.as_ref()
    }
}
