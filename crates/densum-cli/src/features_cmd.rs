//! `densum info MODEL --features`: the feature levels a detection or segmentation head reads.

use densum::Net;
use densum::features::FeatureInfo;
use densum::zoo::ModelSpec;
use serde_json::{Value, json};

/// Every feature level of `net` with its `[C, H, W]` at `spec`'s input size.
fn rows(spec: &ModelSpec, net: &Net) -> Vec<(FeatureInfo, [usize; 3])> {
    let size = spec.input_size;
    let shapes = net.feature_shapes(size, size);
    spec.config.feature_info().into_iter().zip(shapes).collect()
}

/// [`rows`] as JSON: index, module, num_chs, reduction, shape.
pub fn levels(spec: &ModelSpec, net: &Net) -> Value {
    let list = rows(spec, net)
        .into_iter()
        .map(|(f, shape)| {
            json!({
                "index": f.index,
                "module": f.module,
                "num_chs": f.num_chs,
                "reduction": f.reduction,
                "shape": shape,
            })
        })
        .collect();
    Value::Array(list)
}

/// Prints [`rows`] as a table.
pub fn print(spec: &ModelSpec, net: &Net) {
    println!("feature levels (out_indices of Net::forward_multi_scale):");
    println!(
        "{:>5} {:8} {:>8} {:>9} {:>16}",
        "index", "module", "channels", "reduction", "shape"
    );
    for (f, [c, h, w]) in rows(spec, net) {
        println!(
            "{:>5} {:8} {:>8} {:>9} {:>16}",
            f.index,
            f.module,
            f.num_chs,
            f.reduction,
            format!("{c}x{h}x{w}")
        );
    }
}
