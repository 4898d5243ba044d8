//! What a network costs: parameters and multiply-accumulates per stage, and the time and
//! memory of training and inference ([`bench`]).

pub mod alloc;
pub mod bench;
pub mod chart;
pub mod sweep;

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
    /// Total forward MACs per image; `u64::MAX` when there are at least that many.
    pub macs: u64,
    /// Output shape per image `[classes]`.
    pub output: [usize; 1],
}

/// `n` with thousands separators: 25557032 -> "25,557,032".
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
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
        // Saturating, as each stage's count is (see `Stage::macs`).
        macs: stages.iter().fold(0, |t, s| t.saturating_add(s.macs)),
        stages,
        output: [classes],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;
    use crate::zoo::{ModelOptions, limits, resolve};

    /// Near the bounds' corner (16 blocks with a 2^17-channel grouped 3x3 convolution at
    /// 4096 px, 1.3e18 multiply-accumulates each) the count saturates instead of overflowing,
    /// and nothing is allocated to count it.
    #[test]
    fn counts_saturate_at_the_bounds() {
        let options = ModelOptions {
            width: Some(limits::MAX_WIDTH),
            cardinality: Some(2),
            base_width: Some(limits::MAX_BASE_WIDTH),
            input_size: Some(limits::MAX_INPUT_SIZE),
            block_config: Some(vec![16]),
            ..Default::default()
        };
        let spec = resolve("resnext29_8x64d", &options).unwrap();
        let net = Net::new(&spec.config, &Device::default());
        let c = cost(&spec, &net);
        assert_eq!(c.macs, u64::MAX);
        assert_eq!(c.stages[1].macs, u64::MAX);
        // Each block's conv2 alone (2^17 -> 2^17 in 2 groups, 3x3) has 2^17 · 2^16 · 9.
        assert!(c.params > 16 * (1 << 17) * (1 << 16) * 9, "{}", c.params);
        assert_eq!(c.stages[0].output, [4096, 4096, 4096]);
    }
}
