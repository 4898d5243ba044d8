//! Dense weighted normalised shortcuts (DSNet, Zhang et al.): block l of a stage adds to its
//! branch a per-channel weighted sum of the normalised outputs of every earlier block,
//! `Y_l = ReLU(X_l + sum_{i<l} W_{l,i} ⊙ N(Y_i))` (variant b) or `N(X_i)` (variant a).
//!
//! Efficient form (paper section 4.5): each earlier output is normalised once, when it is
//! produced, and the normalised tensor is shared by every later block that reads it. N has no
//! affine parameters because the dense weights would make them redundant.
//!
//! Also here: DS2Net's inner shortcut over a bottleneck's 3x3 convolution, the same idea one
//! level down.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{Rule, lazy_param};
use crate::block::{Activation, Block};
use crate::nn::fast::dense_stage::{StageTape, stage_sum};
use crate::nn::fast::dense_sum::{dense_sum, dense_sum_stats};
use crate::nn::fast::{Op, applies};
use crate::nn::{FreeNorm, NormKind, apply_free_norm};

/// How a dense shortcut weights the outputs it reads (DSNet ablation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DsWeightKind {
    /// One learned weight per channel (the default).
    Channel,
    /// One learned scalar per earlier output.
    Scalar,
    /// Fixed weight 1 ("GN without weight").
    None,
}

/// Initial value of the dense weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DsInit {
    /// Every weight 1 (the default).
    Ones,
    /// 1 for the previous block's output (i = l-1), 0 for the others: starts as a ResNet.
    Last,
}

/// Which history a dense shortcut reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DsVariant {
    /// Variant a: the branch outputs X_i (X_0 taken as Y_0).
    A,
    /// Variant b (default): the aggregations Y_i.
    B,
}

/// Options of the dense weighted normalised shortcuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenseSumConfig {
    /// a or b.
    pub variant: DsVariant,
    /// The normalisation N.
    pub norm: NormKind,
    /// How outputs are weighted.
    pub weight: DsWeightKind,
    /// Initial weights.
    pub init: DsInit,
}

impl Default for DenseSumConfig {
    fn default() -> Self {
        DenseSumConfig {
            variant: DsVariant::B,
            norm: NormKind::Gn,
            weight: DsWeightKind::Channel,
            init: DsInit::Ones,
        }
    }
}

/// The learned weights of block l's dense shortcut: shape `[l, C]` per channel or `[l]` per
/// output (stored as `layer{s}.ds.{l}.weight`).
#[derive(Module, Debug)]
pub enum DsWeight {
    /// `[l, C]`.
    Channel(Param<Tensor<2>>),
    /// `[l]`.
    Scalar(Param<Tensor<1>>),
}

impl DsWeight {
    /// Weights for block `l` (reading `l` earlier outputs) of `channels` channels.
    pub fn new(
        kind: DsWeightKind,
        l: usize,
        channels: usize,
        init: DsInit,
        device: &Device,
    ) -> Option<Self> {
        let row = move |i: usize| match init {
            DsInit::Ones => 1.0f32,
            DsInit::Last => (i + 1 == l) as u8 as f32,
        };
        match kind {
            DsWeightKind::None => None,
            DsWeightKind::Channel => Some(DsWeight::Channel(lazy_param(
                [l, channels],
                device,
                move |d| {
                    let data: Vec<f32> = (0..l)
                        .flat_map(|i| std::iter::repeat_n(row(i), channels))
                        .collect();
                    Tensor::<1>::from_floats(data.as_slice(), d).reshape([l, channels])
                },
            ))),
            DsWeightKind::Scalar => Some(DsWeight::Scalar(lazy_param([l], device, move |d| {
                let data: Vec<f32> = (0..l).map(row).collect();
                Tensor::from_floats(data.as_slice(), d)
            }))),
        }
    }

    /// The weights as `[l, C]` (per channel) or `[l, 1]` (scalar), for the fused sum.
    fn rows(&self) -> Tensor<2> {
        match self {
            DsWeight::Channel(w) => w.val(),
            DsWeight::Scalar(w) => {
                let [l] = w.dims();
                w.val().reshape([l, 1])
            }
        }
    }

    /// `W_{l,i} ⊙ t`.
    fn weigh(&self, i: usize, t: Tensor<4>) -> Tensor<4> {
        match self {
            DsWeight::Channel(w) => {
                let [_, c] = w.dims();
                t * w.val().narrow(0, i, 1).reshape([1, c, 1, 1])
            }
            DsWeight::Scalar(w) => t * w.val().narrow(0, i, 1).reshape([1, 1, 1, 1]),
        }
    }
}

/// `sum_i W_i ⊙ t_i` over the given normalised history (weight 1 when `weight` is `None`).
pub(crate) fn weighted_sum(weight: &Option<DsWeight>, history: &[Tensor<4>]) -> Option<Tensor<4>> {
    history
        .iter()
        .enumerate()
        .map(|(i, t)| match weight {
            Some(w) => w.weigh(i, t.clone()),
            None => t.clone(),
        })
        .reduce(|a, b| a + b)
}

/// One earlier output as a dense shortcut keeps it (a few per stage: size does not matter).
#[allow(clippy::large_enum_variant)]
enum DsEntry {
    /// `N(Y_i)`, normalised when recorded (Burn's composed operations).
    Normalised(Tensor<4>),
    /// `Y_i` itself (alive anyway as a later block's input) and its per-(image, group)
    /// statistics (`None` without normalisation), for the fused sum.
    Raw {
        source: Tensor<4>,
        stats: Option<Tensor<3>>,
    },
}

/// What a stage's dense shortcuts remember of its earlier outputs.
#[derive(Default)]
pub struct DsHistory {
    entries: Vec<DsEntry>,
    /// Variant b on Flex: the stage's sums share one tape instead (`nn/fast/dense_stage.rs`).
    tape: Option<StageTape>,
}

/// What the fused sum needs to normalise `x` with `norm`: `Some(None)` without
/// normalisation, `Some(Some(stats))` for a parameter-free group norm (also layer and instance
/// norm), `None` when the fused sum does not apply (BatchNorm, other backends, or off).
fn fused_stats(norm: &Option<FreeNorm>, x: &Tensor<4>) -> Option<Option<Tensor<3>>> {
    if !applies(Op::DenseSum, x) {
        return None;
    }
    match norm {
        None => Some(None),
        Some(FreeNorm::Group(gn)) if gn.gamma.is_none() && gn.beta.is_none() => {
            Some(Some(dense_sum_stats(x, gn.num_groups, gn.epsilon)))
        }
        Some(_) => None,
    }
}

/// The dense shortcuts of one stage: weights for blocks 1..n and the parameter-free
/// normalisation of each output that a later block reads.
#[derive(Module, Debug)]
pub struct DenseSum {
    /// `ds[k]` weights block `k + 1`'s shortcut (file name `layer{s}.ds.{k+1}.weight`).
    pub ds: Vec<Option<DsWeight>>,
    /// `ds_norm[i]` normalises output i (only BatchNorm has state to store).
    pub ds_norm: Vec<Option<FreeNorm>>,
    /// Variant a or b.
    #[module(skip)]
    pub variant: DsVariant,
}

impl DenseSum {
    /// A tape for this stage's sums when they can all run on one (variant b, N a
    /// parameter-free group norm or none, Flex tensors like `y_0`).
    fn stage_tape(&self, y0: &Tensor<4>) -> Option<StageTape> {
        if self.variant != DsVariant::B || self.ds.is_empty() || !applies(Op::DenseSum, y0) {
            return None;
        }
        match self.ds_norm.first()? {
            None => Some(StageTape::new(0, 0.0)),
            Some(FreeNorm::Group(gn)) if gn.gamma.is_none() && gn.beta.is_none() => {
                Some(StageTape::new(gn.num_groups, gn.epsilon))
            }
            Some(_) => None,
        }
    }

    /// Dense shortcuts for a stage of `blocks` blocks with `channels` output channels.
    pub fn new(
        cfg: &DenseSumConfig,
        blocks: usize,
        channels: usize,
        gn_base: usize,
        device: &Device,
    ) -> Self {
        DenseSum {
            ds: (1..blocks)
                .map(|l| DsWeight::new(cfg.weight, l, channels, cfg.init, device))
                .collect(),
            ds_norm: (0..blocks.saturating_sub(1))
                .map(|_| FreeNorm::new(cfg.norm, channels, gn_base, device))
                .collect(),
            variant: cfg.variant,
        }
    }

    /// The learned weights `W_{l,i}` of blocks l = 1..n-1 (index l-1): `[l, C]` per channel,
    /// `[l, 1]` with scalar weights, `None` with fixed weights (`ds_weight none`).
    pub fn weights(&self) -> Vec<Option<Tensor<2>>> {
        self.ds
            .iter()
            .map(|w| w.as_ref().map(DsWeight::rows))
            .collect()
    }

    /// Records output `i` of the stage: normalise once, keep for every later block.
    /// `y` is the aggregation Y_i, `x` the branch output X_i (variant a reads X_i, with
    /// X_0 := Y_0).
    fn record(&self, i: usize, y: &Tensor<4>, x: &Tensor<4>, history: &mut DsHistory) {
        let Some(norm) = self.ds_norm.get(i) else {
            return; // the last output is read by no later shortcut
        };
        let source = match (self.variant, i) {
            (DsVariant::B, _) | (DsVariant::A, 0) => y.clone(),
            (DsVariant::A, _) => x.clone(),
        };
        history.entries.push(match fused_stats(norm, &source) {
            Some(stats) => DsEntry::Raw { source, stats },
            None => DsEntry::Normalised(apply_free_norm(norm, source)),
        });
    }

    /// `f(X_l + sum_{i<l} W_{l,i} ⊙ N(.)_i)`: on Flex, variant b on the stage's tape
    /// (`nn/fast/dense_stage.rs`), variant a one fused operation (`nn/fast/dense_sum.rs`);
    /// Burn's composed operations otherwise.
    fn sum(
        &self,
        l: usize,
        branch: Tensor<4>,
        prev: &Tensor<4>,
        history: &DsHistory,
        f: Activation,
    ) -> Tensor<4> {
        if let Some(tape) = &history.tape {
            let weight = match &self.ds[l - 1] {
                Some(w) => w.rows(),
                None => Tensor::ones([l, 1], &branch.device()),
            };
            return stage_sum(branch, weight, prev, tape, f == Activation::Relu);
        }
        let entries = &history.entries[..l];
        let raw: Option<Vec<(&Tensor<4>, &Option<Tensor<3>>)>> = entries
            .iter()
            .map(|e| match e {
                DsEntry::Raw { source, stats } => Some((source, stats)),
                DsEntry::Normalised(_) => None,
            })
            .collect();
        if let Some(raw) = raw.filter(|r| !r.is_empty() && applies(Op::DenseSum, &branch)) {
            let sources: Vec<Tensor<4>> = raw.iter().map(|(s, _)| (*s).clone()).collect();
            let stats: Option<Vec<Tensor<3>>> = raw.iter().map(|(_, st)| (*st).clone()).collect();
            // All entries of a stage are normalised alike; a mix would mean no normalisation
            // for some, which `dense_sum` cannot express, so it takes the composed path.
            if stats.is_some() || raw.iter().all(|(_, st)| st.is_none()) {
                let weight = match &self.ds[l - 1] {
                    Some(w) => w.rows(),
                    None => Tensor::ones([l, 1], &branch.device()),
                };
                // Every block but the stage's last adds its sources' gradients into those the
                // last block's sum registered (see `dense_sum`).
                let last = l == self.ds.len();
                return dense_sum(
                    branch,
                    weight,
                    &sources,
                    stats.as_deref(),
                    f == Activation::Relu,
                    !last,
                );
            }
        }
        // Composed: normalise what was kept raw (the fused sum did not apply after all).
        let normalised: Vec<Tensor<4>> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| match e {
                DsEntry::Normalised(t) => t.clone(),
                DsEntry::Raw { source, .. } => apply_free_norm(&self.ds_norm[i], source.clone()),
            })
            .collect();
        match weighted_sum(&self.ds[l - 1], &normalised) {
            Some(s) => f.apply(branch + s),
            None => f.apply(branch),
        }
    }
}

/// Each output is recorded (normalised once) as soon as it is made.
impl Rule for DenseSum {
    type History = DsHistory;

    /// Block 0's branch is not needed apart from `Y_0` (both variants read `Y_0`).
    fn first(&self, block: &Block, x: Tensor<4>) -> (Tensor<4>, DsHistory) {
        let y = block.forward_summed(x);
        let mut history = DsHistory {
            tape: self.stage_tape(&y),
            ..Default::default()
        };
        if history.tape.is_none() {
            self.record(0, &y, &y, &mut history);
        }
        (y, history)
    }

    fn aggregate(
        &self,
        l: usize,
        branch: Tensor<4>,
        prev: Tensor<4>,
        history: &mut DsHistory,
        f: Activation,
    ) -> Tensor<4> {
        let y = self.sum(l, branch.clone(), &prev, history, f);
        if history.tape.is_none() {
            self.record(l, &y, &branch, history);
        }
        y
    }
}

/// DS2Net's inner shortcut over a stride-1 bottleneck's 3x3 convolution:
/// `b = ReLU(BN(conv3x3(a)) + w ⊙ N(a))` (`layer{s}.{b}.inner_ds.weight`, shape `[C]`, or
/// `[1]` with scalar weights).
#[derive(Module, Debug)]
pub struct InnerDs {
    /// The weight (absent for the fixed-1 ablation).
    pub weight: Option<Param<Tensor<1>>>,
    /// N (stored as `inner_ds_norm` when it has state).
    pub norm: Option<FreeNorm>,
}

impl InnerDs {
    /// The inner shortcut for `channels` channels.
    pub fn new(cfg: &DenseSumConfig, channels: usize, gn_base: usize, device: &Device) -> Self {
        let len = match cfg.weight {
            DsWeightKind::Channel => Some(channels),
            DsWeightKind::Scalar => Some(1),
            DsWeightKind::None => None,
        };
        InnerDs {
            weight: len.map(|n| lazy_param([n], device, move |d| Tensor::ones([n], d))),
            norm: FreeNorm::new(cfg.norm, channels, gn_base, device),
        }
    }

    /// `ReLU(branch + w ⊙ N(a))`: the inner shortcut added to the 3x3 convolution's
    /// normalised output `branch`; one fused operation on Flex.
    pub fn aggregate(&self, branch: Tensor<4>, a: Tensor<4>) -> Tensor<4> {
        if applies(Op::DenseSum, &branch)
            && let Some(stats) = fused_stats(&self.norm, &a)
        {
            let weight = match &self.weight {
                Some(w) => {
                    let [k] = w.dims();
                    w.val().reshape([1, k])
                }
                None => Tensor::ones([1, 1], &branch.device()),
            };
            let stats = stats.map(|s| vec![s]);
            return dense_sum(branch, weight, &[a], stats.as_deref(), true, false);
        }
        burn::tensor::activation::relu(branch + self.forward(a))
    }

    /// `w ⊙ N(a)`.
    pub fn forward(&self, a: Tensor<4>) -> Tensor<4> {
        let n = apply_free_norm(&self.norm, a);
        match &self.weight {
            Some(w) => {
                let [k] = w.dims();
                n * w.val().reshape([1, k, 1, 1])
            }
            None => n,
        }
    }
}
