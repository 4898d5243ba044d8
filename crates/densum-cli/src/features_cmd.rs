//! `densum info MODEL --features`: the feature levels a detection or segmentation head reads.

use densum::Net;
use densum::zoo::ModelSpec;
use serde_json::{Value, json};

/// Every feature level of `net` at `spec`'s input size: index, module, channels, reduction,
/// shape.
pub fn levels(spec: &ModelSpec, net: &Net) -> Value {
    let size = spec.input_size;
    let shapes = net.feature_shapes(size, size);
    let rows: Vec<Value> = spec
        .config
        .feature_info()
        .into_iter()
        .zip(shapes)
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
    Value::Array(rows)
}

/// Prints [`levels`] as a table.
pub fn print(spec: &ModelSpec, net: &Net) {
    println!("feature levels (out_indices; Net::forward_multi_scale):");
    println!(
        "{:>5} {:8} {:>8} {:>9} {:>16}",
        "index", "module", "channels", "reduction", "shape"
    );
    for row in levels(spec, net).as_array().into_iter().flatten() {
        let shape = &row["shape"];
        println!(
            "{:>5} {:8} {:>8} {:>9} {:>16}",
            row["index"],
            row["module"].as_str().unwrap_or_default(),
            row["num_chs"],
            row["reduction"],
            format!("{}x{}x{}", shape[0], shape[1], shape[2])
        );
    }
}
