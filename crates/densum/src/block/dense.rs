//! DenseNet's dense layer (Huang et al. 2017): BN-ReLU-conv3x3 producing k channels
//! (the growth rate), or with the bottleneck (B) BN-ReLU-conv1x1 (4k)-BN-ReLU-conv3x3 (k).
//!
//! The layer only computes its new features `X_l`; the concatenation with its input is the
//! stage's [`ConnectKind::Concat`](crate::connect::ConnectKind::Concat) connectivity, so the
//! same layer serves DenseNet and Dense2Net (whose 3x3 convolution is a Res2Net module). Field
//! names are torchvision's (`norm1`, `conv1`, `norm2`, `conv2`).
//!
//! Memory-efficient mode (Pleiss et al. 2017): the concatenated input and the first BN-ReLU are
//! the quadratic part of DenseNet's memory. With `memory_efficient`, the bottleneck head
//! `conv1x1(ReLU(norm1(cat(parts))))` on Flex is the custom operation of
//! [`fast::dense_head`](crate::nn::fast::dense_head): it keeps only the parts (the k-channel
//! outputs of earlier layers, stored anyway), the batch statistics and the parameters, and
//! recomputes the normalised input in the backward pass. Other backends and the plain (3x3)
//! head run the concatenation and BN-ReLU under Burn's balanced gradient-checkpointing
//! strategy instead, which saves less (see docs/densenet-memory.md). The rest of the network
//! keeps the device's own strategy.

use std::cell::RefCell;

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Dropout, DropoutConfig};
use burn::tensor::{Device, GradientCheckpointingStrategy, Tensor};

use super::res2::Res2Module;
use super::{BlockArgs, BlockConfig, BlockOut, chain_macs};
use crate::nn::fast::dense_head::{dense_head, dense_head_inference};
use crate::nn::fast::norm::{batch_stats, update_running_stats};
use crate::nn::fast::{Op, applies};
use crate::nn::{
    Cbam, SqueezeExcite, apply_attention, attention, attention_macs, batch_norm,
    batch_norm_forward, batch_norm_forward_with, conv, conv_bn_forward, conv_forward, relu,
};

/// Training-batch statistics (`[mean; biased variance]` per channel) of a dense stage's parts,
/// each computed once, when a layer first normalises it. Why: BN is per channel, so the
/// statistics of layer l's concatenated input are its parts', and every later layer of the
/// stage reads the same parts again; computing them from each concatenation is a pass over
/// the whole input per layer, quadratic in depth.
#[derive(Default)]
pub struct PartStats(RefCell<Vec<Tensor<2>>>);

impl PartStats {
    /// The statistics of `cat(parts)`, for parts that extend those of earlier calls.
    fn of(&self, parts: &[Tensor<4>]) -> Tensor<2> {
        let mut known = self.0.borrow_mut();
        let start = known.len().min(parts.len());
        known.extend(parts[start..].iter().map(batch_stats));
        Tensor::cat(known[..parts.len()].to_vec(), 1)
    }
}

/// Channels of the bottleneck per unit of growth rate (DenseNet-B's 4k).
pub const BN_SIZE: usize = 4;

/// A dense layer. With `bottleneck` it has `norm2`/`conv2`; Dense2Net replaces the 3x3
/// `conv2` (4k -> k) by `res2` (a Res2Net module on 4k channels, optionally followed by SE or
/// CBAM on those channels, as Res2Net puts SE on its module's output) and the 1x1 `conv2`.
#[derive(Module, Debug)]
pub struct DenseLayer {
    /// BN of the concatenated input.
    pub norm1: BatchNorm,
    /// conv1x1 to 4k (bottleneck) or conv3x3 to k (plain).
    pub conv1: Conv2d,
    /// BN after the bottleneck.
    pub norm2: Option<BatchNorm>,
    /// Dense2Net's multi-scale module on 4k channels (BN-ReLU inside).
    pub res2: Option<Res2Module>,
    /// Dense2Net's optional squeeze-and-excitation on the module's 4k channels.
    pub se: Option<SqueezeExcite>,
    /// Or CBAM there.
    pub cbam: Option<Cbam>,
    /// conv3x3 4k -> k (DenseNet-B) or conv1x1 4k -> k (Dense2Net).
    pub conv2: Option<Conv2d>,
    /// Dropout on the new features (torchvision's `drop_rate`).
    pub dropout: Dropout,
    /// Recompute the input's concatenation and first BN-ReLU in the backward pass.
    pub memory_efficient: bool,
}

impl DenseLayer {
    /// A dense layer reading `args.in_ch` channels and producing `args.planes` (= k).
    pub fn new(cfg: &BlockConfig, args: &BlockArgs, bottleneck: bool, device: &Device) -> Self {
        let k = args.planes;
        let inner = BN_SIZE * k;
        let res2 = (bottleneck && cfg.scale > 1)
            .then(|| Res2Module::new(inner, cfg.scale, cfg.cardinality, 1, false, device));
        // Attention only where the zoo allows it: on Dense2Net's multi-scale output.
        let (se, cbam) = match res2 {
            Some(_) => attention(cfg.attention, inner, device),
            None => (None, None),
        };
        DenseLayer {
            norm1: batch_norm(args.in_ch, false, device),
            conv1: if bottleneck {
                conv(args.in_ch, inner, 1, 1, 1, device)
            } else {
                conv(args.in_ch, k, 3, 1, 1, device)
            },
            norm2: bottleneck.then(|| batch_norm(inner, false, device)),
            conv2: bottleneck.then(|| {
                let kernel = if res2.is_some() { 1 } else { 3 };
                conv(inner, k, kernel, 1, 1, device)
            }),
            res2,
            se,
            cbam,
            dropout: DropoutConfig::new(cfg.dropout).init(),
            memory_efficient: cfg.memory_efficient,
        }
    }

    /// New features from the layer's inputs, given as the parts whose concatenation is the
    /// layer's input (the block input and the earlier layers' outputs).
    /// `stats` keeps the parts' batch statistics for the later layers of the stage.
    pub fn forward_parts(&self, parts: Vec<Tensor<4>>, stats: &PartStats) -> Tensor<4> {
        let checkpointed = self.memory_efficient && parts[0].is_autodiff();
        let h = match (&self.norm2, &self.conv2) {
            (Some(norm2), Some(conv2)) => {
                // `ReLU(norm2(conv1(..)))`: the head operation where it applies (training in
                // memory-efficient mode, inference on Flex), else the concatenation through
                // `conv_bn_forward` (which folds the norm into conv1 where it can).
                let h = if checkpointed {
                    batch_norm_forward(norm2, self.checkpointed_head(parts, stats), true)
                } else if let Some(h) = self.inference_head(&parts, norm2) {
                    h
                } else {
                    conv_bn_forward(
                        &self.conv1,
                        norm2,
                        self.normalised_input(parts, stats),
                        true,
                    )
                };
                let h = match &self.res2 {
                    Some(r) => apply_attention(&self.se, &self.cbam, r.forward(h)),
                    None => h,
                };
                conv_forward(conv2, h)
            }
            _ if checkpointed => self.checkpointed_head(parts, stats),
            _ => conv_forward(&self.conv1, self.normalised_input(parts, stats)),
        };
        self.dropout.forward(h)
    }

    /// For inference on Flex, `ReLU(norm2(conv1x1(ReLU(norm1(cat(parts))))))` as one kernel
    /// over the parts with the running statistics ([`dense_head_inference`]): no
    /// concatenation, no normalised copy and no separate pass for `norm2`.
    fn inference_head(&self, parts: &[Tensor<4>], norm2: &BatchNorm) -> Option<Tensor<4>> {
        if parts[0].is_autodiff() || !self.head_op_fits(parts) {
            return None;
        }
        dense_head_inference(parts, &self.conv1.weight.val(), &self.norm1, Some(norm2))
    }

    /// Whether [`dense_head`] can compute this layer's head: a 1x1 `conv1` without bias, on
    /// parts the fast path applies to.
    fn head_op_fits(&self, parts: &[Tensor<4>]) -> bool {
        let [_, _, kh, kw] = self.conv1.weight.dims();
        (kh, kw) == (1, 1)
            && self.conv1.bias.is_none()
            && parts.iter().all(|p| applies(Op::DenseHead, p))
    }

    /// `conv1x1(ReLU(norm1(cat(parts))))` as [`dense_head`] with the statistics `stats`
    /// (`[μ; σ²]`, the batch's or the running ones).
    fn head_op(&self, parts: &[Tensor<4>], stats: Tensor<2>) -> Tensor<4> {
        dense_head(
            parts,
            self.conv1.weight.val(),
            self.norm1.gamma.val(),
            self.norm1.beta.val(),
            stats,
            self.norm1.epsilon,
        )
    }

    /// `ReLU(norm1(cat(parts)))`, the fused batch norm over the concatenation (no copy for a
    /// single part), in training with the parts' statistics from `stats` where the fused
    /// batch norm runs.
    fn normalised_input(&self, parts: Vec<Tensor<4>>, stats: &PartStats) -> Tensor<4> {
        let known = (self.norm1.training.is_enabled()
            && parts[0].is_autodiff()
            && parts.iter().all(|p| applies(Op::Norm, p)))
        .then(|| stats.of(&parts));
        let x = if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            Tensor::cat(parts, 1)
        };
        batch_norm_forward_with(&self.norm1, x, true, known)
    }

    /// `conv1(ReLU(norm1(cat(parts))))` without keeping the concatenation or the BN-ReLU
    /// output for the backward pass. On Flex with a 1x1 `conv1` (the bottleneck): the
    /// recomputing head operation of `nn/fast/dense_head.rs`, which keeps only the parts
    /// (stored anyway), the statistics and the parameters. Elsewhere (other backends, the
    /// plain 3x3 head): the concatenation and BN-ReLU under Burn's balanced checkpointing
    /// strategy, which recomputes them but still keeps some of them (see
    /// docs/densenet-memory.md).
    fn checkpointed_head(&self, parts: Vec<Tensor<4>>, stats: &PartStats) -> Tensor<4> {
        if self.norm1.training.is_enabled() && self.head_op_fits(&parts) {
            // BN statistics of the concatenation, per channel: those of each part.
            let stats = stats.of(&parts);
            update_running_stats(&self.norm1, &stats);
            return self.head_op(&parts, stats);
        }
        // Tensors carrying different strategies cannot meet in one operation, so the
        // parameters used here are switched too (same autodiff nodes, so their gradients land
        // on the model's parameters), and the result is switched back to the strategy of the
        // rest of the network.
        let outer = parts[0]
            .gradient_checkpointing_strategy()
            .expect("autodiff tensor");
        let inner = GradientCheckpointingStrategy::Balanced;
        let switch = |t: Tensor<4>| t.with_gradient_checkpointing_strategy(inner);
        let parts: Vec<Tensor<4>> = parts.into_iter().map(switch).collect();
        let norm1 = self.norm1.clone().map(&mut Switch(inner));
        let conv1 = self.conv1.clone().map(&mut Switch(inner));
        let h = conv_forward(&conv1, relu(norm1.forward(Tensor::cat(parts, 1))));
        h.with_gradient_checkpointing_strategy(outer)
    }

    /// MACs and output shape for an input of `[c, h, w]`.
    pub fn macs(&self, [_, h, w]: [usize; 3]) -> (u64, [usize; 3]) {
        let (mut m, mut c, h, w) = chain_macs(&[&self.conv1], h, w);
        if let Some(r) = &self.res2 {
            m = m
                .saturating_add(r.macs(h, w))
                .saturating_add(attention_macs(&self.se, &self.cbam, c, h, w));
        }
        if let Some(conv2) = &self.conv2 {
            let (m2, c2, _, _) = chain_macs(&[conv2], h, w);
            m = m.saturating_add(m2);
            c = c2;
        }
        (m, [c, h, w])
    }

    /// As a block of the stage loop: the branch is the new features, the shortcut the input
    /// (which [`ConnectKind::Concat`](crate::connect::ConnectKind::Concat) concatenates).
    pub fn forward(&self, x: Tensor<4>) -> BlockOut {
        BlockOut {
            branch: self.forward_parts(vec![x.clone()], &PartStats::default()),
            shortcut: x,
        }
    }
}

/// Puts every parameter of a module under one checkpointing strategy.
struct Switch(GradientCheckpointingStrategy);

impl burn::module::ModuleMapper for Switch {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let strategy = self.0;
        param.map(move |t| t.with_gradient_checkpointing_strategy(strategy))
    }
}
