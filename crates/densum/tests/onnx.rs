//! `densum::export::onnx` (feature `onnx`): the exported file parses as ONNX, declares the
//! input and output the network has, and was traced without any Flex fast path.
//!
//! Numerical agreement with densum's own logits is checked outside Rust, in onnxruntime
//! (tools/check_onnx.py), because no ONNX runtime is in the Rust dependency tree.

#![cfg(feature = "onnx")]

use std::path::{Path, PathBuf};

use densum::Device;
use densum::explain::{load_net, weights_model};
use densum::export::{self, Batch};
use densum::nn::fast::probe;
use onnx_ir::{Message, ModelProto, OnnxGraphBuilder, ValueInfoProto};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Each axis of a graph input or output: `Ok(size)` for a fixed one, `Err(name)` for a
/// symbolic one.
fn dims(value: &ValueInfoProto) -> Vec<Result<i64, String>> {
    value
        .type_
        .tensor_type()
        .shape
        .dim
        .iter()
        .map(|d| {
            if d.has_dim_param() {
                Err(d.dim_param().to_string())
            } else {
                Ok(d.dim_value())
            }
        })
        .collect()
}

/// Exports the fixture `file` at `size` px with `batch` and returns the parsed model, after
/// checking that onnx-ir's importer accepts it and that no fast kernel ran while tracing.
fn export_fixture(file: &str, size: usize, batch: Batch) -> ModelProto {
    let path = fixture(file);
    let device = Device::default();
    let (name, mut options) = weights_model(&path, None).unwrap();
    options.input_size = Some(size);
    let (spec, net) = load_net(&path, &name, &options, &device).unwrap();
    let (bytes, counts) = probe::counted(|| export::onnx(&net, &spec, batch, &device));
    let bytes = bytes.unwrap();
    assert_eq!(
        counts.total(),
        0,
        "a Flex fast path ran during the trace: {counts:?}"
    );
    OnnxGraphBuilder::new()
        .parse_bytes(&bytes)
        .unwrap_or_else(|e| panic!("onnx-ir rejects the export: {e:?}"));
    ModelProto::parse_from_bytes(&bytes).unwrap()
}

#[test]
fn fixed_batch_export_declares_the_networks_shapes() {
    // dsnet50 (width 1/8, CIFAR-10): GroupNorm shortcuts, the traceable composition.
    let model = export_fixture("dsnet50.safetensors", 32, Batch::Fixed(2));
    assert_eq!(model.opset_import.iter().map(|o| o.version).max(), Some(18));
    let graph = &model.graph;
    assert_eq!(graph.input.len(), 1, "one runtime input, weights embedded");
    assert_eq!(graph.output.len(), 1);
    assert_eq!(dims(&graph.input[0]), vec![Ok(2), Ok(3), Ok(32), Ok(32)]);
    assert_eq!(dims(&graph.output[0]), vec![Ok(2), Ok(10)]);
    assert!(
        graph.node.iter().any(|n| n.op_type == "Conv"),
        "convolutions are lowered to ONNX Conv"
    );
    assert!(!graph.initializer.is_empty(), "the weights are embedded");
}

#[test]
fn dynamic_batch_export_has_a_symbolic_batch_axis() {
    // DenseNet (growth 8, blocks 2-2-2-2, ImageNet stem at 64 px). dsnet50 does not export
    // with a dynamic batch (README "PyTorch checkpoints").
    let model = export_fixture("tv_densenet_k8_2222.safetensors", 64, Batch::Dynamic);
    let graph = &model.graph;
    let batch = Err("batch".to_string());
    assert_eq!(
        dims(&graph.input[0]),
        vec![batch.clone(), Ok(3), Ok(64), Ok(64)]
    );
    assert_eq!(dims(&graph.output[0])[0], batch);
}

#[test]
fn batch_zero_is_an_error_not_a_panic() {
    let path = fixture("dsnet50.safetensors");
    let device = Device::default();
    let (name, options) = weights_model(&path, None).unwrap();
    let (spec, net) = load_net(&path, &name, &options, &device).unwrap();
    let err = export::onnx(&net, &spec, Batch::Fixed(0), &device).unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
}
