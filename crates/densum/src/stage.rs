//! The one stage loop: blocks joined by a connectivity ([`run`], generic over the
//! connectivity's [`Rule`]).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::block::{Block, BlockArgs, BlockConfig};
use crate::connect::{Connect, ConnectKind, Rule, Transition, TransitionConfig};
use crate::net::StageConfig;

/// A resolution stage: an optional transition, then `blocks[0]` changes the shape
/// (projection), the rest keep it, and `connect` combines their outputs.
#[derive(Module, Debug)]
pub struct Stage {
    /// Resolution change before the blocks (DenseNet), when the network has transitions.
    pub transition: Option<Transition>,
    /// The blocks, in order.
    pub blocks: Vec<Block>,
    /// How the stage combines its history.
    pub connect: Connect,
}

impl Stage {
    /// A stage of `drop_paths.len()` blocks entered with `in_ch` channels. With a transition
    /// (and a stride), the transition takes the stride and every block has stride 1.
    pub fn new(
        block: &BlockConfig,
        connect: ConnectKind,
        transition: Option<&TransitionConfig>,
        in_ch: usize,
        st: &StageConfig,
        drop_paths: &[f64],
        device: &Device,
    ) -> Self {
        let out_ch = st.planes * block.kind.expansion();
        let transition = transition
            .filter(|_| st.stride != 1)
            .map(|t| Transition::new(t, in_ch, out_ch, st.stride, device));
        let (in_ch, stride) = match &transition {
            Some(t) => (t.out_channels(), 1),
            None => (in_ch, st.stride),
        };
        let blocks = drop_paths
            .iter()
            .enumerate()
            .map(|(l, &drop_path)| {
                let args = BlockArgs {
                    in_ch: connect.block_in_channels(l, in_ch, out_ch),
                    planes: st.planes,
                    stride: if l == 0 { stride } else { 1 },
                    drop_path,
                };
                Block::new(block, &args, device)
            })
            .collect::<Vec<_>>();
        let connect = Connect::new(connect, blocks.len(), out_ch, block.gn_base, device);
        Stage {
            transition,
            blocks,
            connect,
        }
    }

    /// Runs the stage: `Y_0 = f(X_0 + P(x))` (or the connectivity's form of it), then the
    /// connectivity's rule for each later block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match &self.transition {
            Some(t) => t.forward(x),
            None => x,
        };
        let blocks = &self.blocks;
        match &self.connect {
            Connect::Residual(c) => run(c, blocks, x),
            Connect::DenseIdentity(c) => run(c, blocks, x),
            Connect::DenseSum(c) => run(c, blocks, x),
            Connect::Rg(c) => run(c, blocks, x),
            Connect::Concat(c) => run(c, blocks, x),
            Connect::Deluge(c) => run(c, blocks, x),
        }
    }

    /// Multiply-accumulates for an input of `[c, h, w]`, and the output shape. The sum
    /// saturates at `u64::MAX`: one block's count fits (the zoo bounds channels and input
    /// size), a thousand of the widest at 4096 px do not.
    pub fn macs(&self, mut shape: [usize; 3]) -> (u64, [usize; 3]) {
        let mut total: u64 = 0;
        if let Some(t) = &self.transition {
            let (m, s) = t.macs(shape);
            total = total.saturating_add(m);
            shape = s;
        }
        for block in &self.blocks {
            let (m, s) = block.macs(shape);
            total = total.saturating_add(m);
            shape = self.connect.next_shape(shape, s);
        }
        (total, shape)
    }
}

/// The stage loop: block 0, then each later block's branch and aggregation by `rule`, then
/// the stage's output.
pub fn run<R: Rule>(rule: &R, blocks: &[Block], x: Tensor<4>) -> Tensor<4> {
    let (mut y, mut history) = rule.first(&blocks[0], x);
    for (l, block) in blocks.iter().enumerate().skip(1) {
        y = rule.next_block(l, block, y, &mut history);
    }
    rule.output(y, history)
}
