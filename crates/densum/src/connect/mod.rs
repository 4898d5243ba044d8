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
//!
//! f is the block's own output activation (ReLU for post-activation blocks, none for
//! pre-activation ones).

pub mod dense_sum;
pub mod rg;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use dense_sum::{DenseSum, DenseSumConfig, DsInit, DsVariant, DsWeight, DsWeightKind, InnerDs};
pub use rg::{RgShortcut, RgShortcuts, RgVariant};

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
}

/// The state a stage's connectivity keeps (its learned parts); see [`ConnectKind`].
#[derive(Module, Debug)]
pub struct Connect {
    /// Dense shortcuts, for [`ConnectKind::DenseSum`].
    pub dense: Option<DenseSum>,
    /// RG shortcuts, for [`ConnectKind::Rg`].
    pub rg: Option<RgShortcuts>,
    /// Which rule applies.
    #[module(skip)]
    pub kind: ConnectKind,
}

/// What a stage remembers of its earlier outputs while it runs.
#[derive(Default)]
pub struct History {
    /// Normalised earlier outputs (dense sums).
    normalised: Vec<Tensor<4>>,
    /// Running sum of earlier outputs (dense identity).
    sum: Option<Tensor<4>>,
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
            kind,
        }
    }

    /// Remembers block `i`'s output `y` (aggregation) and `x` (branch) for later blocks.
    pub fn record(&self, i: usize, y: &Tensor<4>, x: &Tensor<4>, history: &mut History) {
        match self.kind {
            ConnectKind::DenseSum(_) => {
                if let Some(d) = &self.dense {
                    d.record(i, y, x, &mut history.normalised);
                }
            }
            ConnectKind::DenseIdentity => {
                history.sum = Some(match history.sum.take() {
                    Some(s) => s + y.clone(),
                    None => y.clone(),
                });
            }
            ConnectKind::Residual | ConnectKind::Rg(_) => {}
        }
    }

    /// Block `l`'s output (l >= 1) from its branch `branch`, the previous output `prev` and
    /// the history; `finish` is the block's output activation.
    pub fn aggregate(
        &self,
        l: usize,
        branch: Tensor<4>,
        prev: Tensor<4>,
        history: &History,
        finish: impl Fn(Tensor<4>) -> Tensor<4>,
    ) -> Tensor<4> {
        match (&self.kind, &self.dense, &self.rg) {
            (ConnectKind::DenseSum(_), Some(d), _) => {
                finish(d.aggregate(l, branch, &history.normalised))
            }
            (ConnectKind::DenseIdentity, _, _) => match &history.sum {
                Some(s) => finish(branch + s.clone()),
                None => finish(branch + prev),
            },
            (ConnectKind::Rg(_), _, Some(rg)) => rg.aggregate(l, branch, prev),
            _ => finish(branch + prev),
        }
    }
}
