//! What a network costs: parameters and multiply-accumulates per stage, and the time and
//! memory of training and inference ([`bench`]).

pub mod alloc;
pub mod bench;
pub mod chart;

use serde::Serialize;

use crate::net::Net;
use crate::weights::count_params;
use crate::zoo::ModelSpec;

/// One row of a cost table.
#[derive(Clone, Debug, Serialize)]
pub struct StageCost {
    /// `stem`, `layer1`, ..., `head`.
    pub name: String,
    /// Blocks in the stage (0 for stem and head).
    pub blocks: usize,
    /// Output shape `[C, H, W]` (head: `[classes, 1, 1]`).
    pub output: [usize; 3],
    /// Trainable parameters.
    pub params: usize,
    /// Forward multiply-accumulates per image (convolutions, linear layers, attention).
    pub macs: u64,
}

/// The cost of a whole network for one input size.
#[derive(Clone, Debug, Serialize)]
pub struct NetCost {
    /// Registry name.
    pub model: String,
    /// Input shape `[3, H, W]`.
    pub input: [usize; 3],
    /// Per-stage rows.
    pub stages: Vec<StageCost>,
    /// Total trainable parameters.
    pub params: usize,
    /// Total forward MACs per image.
    pub macs: u64,
    /// Output shape per image `[classes]`.
    pub output: [usize; 1],
}

/// Parameters and MACs of `net` at `spec`'s input size.
pub fn cost(spec: &ModelSpec, net: &Net) -> NetCost {
    let size = spec.input_size;
    let (stem_macs, mut shape) = net.stem_macs(size, size);
    let stem_params = count_params(&net.conv1) + net.bn1.as_ref().map_or(0, count_params);
    let mut stages = vec![StageCost {
        name: "stem".into(),
        blocks: 0,
        output: shape,
        params: stem_params,
        macs: stem_macs,
    }];
    for (i, stage) in net.layers.iter().enumerate() {
        let (macs, out) = stage.macs(shape);
        shape = out;
        stages.push(StageCost {
            name: format!("layer{}", i + 1),
            blocks: stage.blocks.len(),
            output: shape,
            params: count_params(stage),
            macs,
        });
    }
    // The shape alone: reading the weight would allocate it (Burn's parameters are lazy).
    let [features, classes] = net.fc.weight.lazy_shape().dims();
    stages.push(StageCost {
        name: "head".into(),
        blocks: 0,
        output: [classes, 1, 1],
        params: count_params(&net.fc) + net.final_bn.as_ref().map_or(0, count_params),
        macs: (features * classes) as u64,
    });
    NetCost {
        model: spec.name.clone(),
        input: [3, size, size],
        params: stages.iter().map(|s| s.params).sum(),
        macs: stages.iter().map(|s| s.macs).sum(),
        stages,
        output: [classes],
    }
}
