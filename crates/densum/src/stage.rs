//! The one stage loop: blocks joined by a connectivity.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::block::{Block, BlockArgs, BlockConfig};
use crate::connect::{Connect, ConnectKind, History};

/// A resolution stage: `blocks[0]` changes the shape (projection), the rest keep it, and
/// `connect` combines their outputs.
#[derive(Module, Debug)]
pub struct Stage {
    /// The blocks, in order.
    pub blocks: Vec<Block>,
    /// How the stage combines its history.
    pub connect: Connect,
}

impl Stage {
    /// A stage of `drop_paths.len()` blocks from `in_ch` channels to `planes · expansion`.
    pub fn new(
        block: &BlockConfig,
        connect: ConnectKind,
        in_ch: usize,
        planes: usize,
        stride: usize,
        drop_paths: &[f64],
        device: &Device,
    ) -> Self {
        let out_ch = planes * block.kind.expansion();
        let blocks = drop_paths
            .iter()
            .enumerate()
            .map(|(l, &drop_path)| {
                let args = BlockArgs {
                    in_ch: if l == 0 { in_ch } else { out_ch },
                    planes,
                    stride: if l == 0 { stride } else { 1 },
                    drop_path,
                };
                Block::new(block, &args, device)
            })
            .collect::<Vec<_>>();
        let connect = Connect::new(connect, blocks.len(), out_ch, block.gn_base, device);
        Stage { blocks, connect }
    }

    /// Runs the stage: `Y_0 = f(X_0 + P(x))`, then the connectivity's rule for each later block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut history = History::default();
        let first = &self.blocks[0];
        let out = first.forward(x);
        let mut y = first.finish(out.branch.clone() + out.shortcut);
        self.connect.record(0, &y, &out.branch, &mut history);
        for (l, block) in self.blocks.iter().enumerate().skip(1) {
            let out = block.forward(y.clone());
            let next = self
                .connect
                .aggregate(l, out.branch.clone(), y, &history, |s| block.finish(s));
            self.connect.record(l, &next, &out.branch, &mut history);
            y = next;
        }
        y
    }

    /// Multiply-accumulates for an input of `[c, h, w]`, and the output shape.
    pub fn macs(&self, mut shape: [usize; 3]) -> (u64, [usize; 3]) {
        let mut total = 0;
        for block in &self.blocks {
            let (m, s) = block.macs(shape);
            total += m;
            shape = s;
        }
        (total, shape)
    }
}
