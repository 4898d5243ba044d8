//! Multi-scale features, Grad-CAM against PyTorch (tools/make_gradcam_fixture.py) and
//! shortcut-reuse maps from known weights.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use densum::explain::gradcam::{Target, grad_cam};
use densum::explain::reuse::{reuse_maps, to_csv};
use densum::weights::{self, TensorMap, named_tensors};
use densum::zoo::{self, ModelOptions, ModelSpec};
use densum::{Device, Net, burn};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn opts(json: &str) -> ModelOptions {
    serde_json::from_str(json).unwrap()
}

/// `model` with the options in `json`, freshly initialised on the default device.
fn build(model: &str, json: &str) -> (ModelSpec, Net) {
    let spec = zoo::resolve(model, &opts(json)).unwrap();
    let net = Net::new(&spec.config, &Device::default());
    (spec, net)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

// ------------------------------------------------------------------ multi-scale features

#[test]
fn feature_levels_of_imagenet_models() {
    let device = Device::default();
    let x = Tensor::<4>::zeros([1, 3, 224, 224], &device);
    let cases: [(&str, [usize; 5]); 3] = [
        ("resnet50", [64, 256, 512, 1024, 2048]),
        ("densenet121", [64, 256, 512, 1024, 1024]),
        ("dsnet50", [64, 256, 512, 1024, 2048]),
    ];
    let sides = [112, 56, 28, 14, 7];
    for (model, channels) in cases {
        let (spec, net) = build(model, "{}");
        let info = spec.config.feature_info();
        let got: Vec<(usize, usize)> = info.iter().map(|f| (f.num_chs, f.reduction)).collect();
        let want: Vec<(usize, usize)> = channels.iter().copied().zip([2, 4, 8, 16, 32]).collect();
        assert_eq!(got, want, "{model} feature_info");
        let shapes = net.feature_shapes(224, 224);
        let maps = net
            .forward_multi_scale(x.clone(), &[0, 1, 2, 3, 4])
            .unwrap();
        for (i, map) in maps.iter().enumerate() {
            let want = [1, channels[i], sides[i], sides[i]];
            assert_eq!(map.dims(), want, "{model} level {i}");
            assert_eq!(
                shapes[i],
                [channels[i], sides[i], sides[i]],
                "{model} shape {i}"
            );
        }
        // A detection head's levels only, in its order.
        let fpn = net.forward_multi_scale(x.clone(), &[4, 2]).unwrap();
        assert_eq!(fpn[0].dims()[1], channels[4]);
        assert_eq!(fpn[1].dims()[3], 28);
    }
}

#[test]
fn last_feature_level_is_forward_features() {
    let device = Device::default();
    device.seed(3);
    // Small versions of the three families, and a pre-activation net (final BN-ReLU).
    let cases = [
        (
            "resnet50",
            r#"{"dataset": "imagenet", "width": 0.25, "num_classes": 10}"#,
        ),
        (
            "densenet121",
            r#"{"dataset": "imagenet", "num_classes": 10, "growth_rate": 8, "block_config": [2, 2, 2, 2], "init_features": 16}"#,
        ),
        (
            "dsnet50",
            r#"{"dataset": "imagenet", "width": 0.125, "num_classes": 10}"#,
        ),
        (
            "preact_resnet18",
            r#"{"dataset": "cifar10", "width": 0.25}"#,
        ),
    ];
    for (model, o) in cases {
        let (spec, net) = build(model, o);
        let net = net.valid();
        let s = spec.input_size.min(64);
        let x = Tensor::<4>::random(
            [2, 3, s, s],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let levels = net.feature_levels();
        let maps = net.forward_multi_scale(x.clone(), &[levels - 1]).unwrap();
        let want = values(net.forward_features(x.clone()));
        let got = values(maps[0].clone());
        assert_eq!(max_abs_diff(&got, &want), 0.0, "{model}");
        // And the rest of the network from any level gives the logits.
        let logits = values(net.forward(x.clone()));
        for level in 0..levels {
            let a = net.forward_levels(x.clone(), level).pop().unwrap();
            let from = values(net.forward_from_level(level, a));
            let scale = logits.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(&from, &logits) <= 1e-5 * scale,
                "{model} level {level}"
            );
        }
    }
}

#[test]
fn bad_layer_and_index_are_errors() {
    let device = Device::default();
    let (_, net) = build("resnet18", r#"{"dataset": "cifar10", "width": 0.25}"#);
    assert_eq!(net.feature_level("layer4").unwrap(), 4);
    assert_eq!(net.feature_level("stem").unwrap(), 0);
    let e = net.feature_level("layer5").unwrap_err().to_string();
    assert!(e.contains("layer5") && e.contains("layer1..layer4"), "{e}");
    assert!(net.feature_level("denseblock1").is_err());
    let x = Tensor::<4>::zeros([1, 3, 32, 32], &device);
    let e = net
        .forward_multi_scale(x.clone(), &[1, 5])
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 is not a feature level"), "{e}");
    let e = grad_cam(&net, x, 4, Target::Class(10))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--class 10") && e.contains("10 classes"), "{e}");
    let (_, dense) = build(
        "densenet121",
        r#"{"num_classes": 10, "growth_rate": 8, "block_config": [2, 2, 2, 2]}"#,
    );
    assert_eq!(dense.feature_level("denseblock3").unwrap(), 3);
    assert_eq!(dense.feature_level("features.denseblock2").unwrap(), 2);
}

// ------------------------------------------------------------------ Grad-CAM vs PyTorch

#[derive(Deserialize)]
struct Entry {
    key: String,
    file: String,
    model: String,
    options: ModelOptions,
    layer: String,
    target: serde_json::Value,
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    max_abs_diff(a, b) / scale
}

#[test]
fn gradcam_matches_pytorch() {
    let dir = fixtures();
    let (info, reference) = weights::read_tensors(&dir.join("gradcam.safetensors")).unwrap();
    let entries: Vec<Entry> = serde_json::from_str(&info.metadata["entries"]).unwrap();
    assert!(entries.len() >= 7);
    let device = Device::default();
    let mut worst = 0f32;
    for e in &entries {
        let path = dir.join(&e.file);
        let (_, map) = weights::read_tensors(&path).unwrap();
        let spec = zoo::resolve(&e.model, &e.options).unwrap();
        let net =
            weights::load_tensors(Net::new(&spec.config, &device), &map, &path, &device).unwrap();
        let (shape, input) = &map["__input__"];
        let x = Tensor::<4>::from_data(TensorData::new(input.clone(), shape.clone()), &device);
        let target = match &e.target {
            serde_json::Value::Number(n) => Target::Class(n.as_u64().unwrap() as usize),
            _ => Target::Top,
        };
        let level = net.feature_level(&e.layer).unwrap();
        let got = grad_cam(&net, x, level, target).unwrap();
        let classes: Vec<f32> = got.classes.iter().map(|&c| c as f32).collect();
        assert_eq!(
            classes,
            reference[&format!("{}.classes", e.key)].1,
            "{}",
            e.key
        );
        let (cam_shape, cam) = &reference[&format!("{}.cam", e.key)];
        let (map_shape, maps) = &reference[&format!("{}.map", e.key)];
        assert_eq!(&got.cam_size[..], &cam_shape[1..], "{}", e.key);
        assert_eq!(&got.map_size[..], &map_shape[1..], "{}", e.key);
        let cam_err = rel_err(&got.cam.concat(), cam);
        let map_err = rel_err(&got.maps.concat(), maps);
        eprintln!(
            "{}: cam rel err {cam_err:.2e}, map rel err {map_err:.2e}",
            e.key
        );
        assert!(
            cam_err <= 1e-3 && map_err <= 1e-3,
            "{}: {cam_err} {map_err}",
            e.key
        );
        worst = worst.max(cam_err).max(map_err);
    }
    eprintln!(
        "largest relative error over {} entries: {worst:.2e}",
        entries.len()
    );
}

// ------------------------------------------------------------------ shortcut reuse

/// `net` with every tensor whose name passes `pick` replaced by `value(name, index)`.
fn with_weights(
    net: Net,
    pick: &dyn Fn(&str) -> bool,
    value: &dyn Fn(&str, &[usize], usize) -> f32,
) -> Net {
    let device = Device::default();
    let map: TensorMap = named_tensors(&net)
        .into_iter()
        .map(|t| {
            let values = if pick(&t.name) {
                (0..t.values.len())
                    .map(|i| value(&t.name, &t.shape, i))
                    .collect()
            } else {
                t.values
            };
            (t.name, (t.shape, values))
        })
        .collect();
    weights::load_tensors(net, &map, Path::new("known weights"), &device).unwrap()
}

/// The CSV's rows as (stage, target, source) -> value.
fn csv_rows(csv: &str) -> Vec<(String, String, String, f32)> {
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].into(), f[2].into(), f[3].into(), f[4].parse().unwrap())
        })
        .collect()
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
}

#[test]
fn dsnet_reuse_is_mean_abs_shortcut_weight() {
    let (_, net) = build("dsnet50", r#"{"dataset": "cifar10", "width": 0.125}"#);
    // layer{s}.ds.{l}.weight [l, C]: row i, channel c holds ±(100 s + 10 l + i) · (c + 1) / C,
    // so the mean |.| over channels is (100 s + 10 l + i) (C + 1) / (2 C).
    let parse = |name: &str| {
        let p: Vec<&str> = name.split('.').collect();
        let s: usize = p[0].trim_start_matches("layer").parse().unwrap();
        (s, p[2].parse::<usize>().unwrap())
    };
    let net = with_weights(
        net,
        &|n| n.contains(".ds.") && n.ends_with("weight"),
        &|name, shape, idx| {
            let (s, l) = parse(name);
            let c = shape[1];
            let (i, ch) = (idx / c, idx % c);
            let sign = if ch % 2 == 0 { 1.0 } else { -1.0 };
            sign * (100 * s + 10 * l + i) as f32 * (ch + 1) as f32 / c as f32
        },
    );
    let maps = reuse_maps(&net).unwrap();
    assert_eq!(maps.len(), 4);
    let rows = csv_rows(&to_csv(&maps));
    // Stages of 3, 4, 6, 3 blocks: blocks l = 1..n-1 read i = 0..l-1.
    let expected: usize = [3usize, 4, 6, 3].iter().map(|n| n * (n - 1) / 2).sum();
    assert_eq!(rows.len(), expected);
    let channels = [32, 64, 128, 256];
    for (stage, target, source, v) in rows {
        let s: usize = stage.trim_start_matches("layer").parse().unwrap();
        let (l, i): (usize, usize) = (target.parse().unwrap(), source.parse().unwrap());
        assert!(i < l, "{stage} {l} {i}");
        let c = channels[s - 1] as f32;
        let want = (100 * s + 10 * l + i) as f32 * (c + 1.0) / (2.0 * c);
        assert!(close(v, want), "{stage} W_{l},{i}: {v} != {want}");
    }
}

#[test]
fn delugenet_reuse_is_mean_abs_cross_layer_weight() {
    let (_, net) = build(
        "delugenet146",
        r#"{"dataset": "cifar10", "width": 0.125, "block_config": [2, 3, 2]}"#,
    );
    let net = with_weights(
        net,
        &|n| n.contains(".deluge.") && n.ends_with("weight"),
        &|name, shape, idx| {
            let p: Vec<&str> = name.split('.').collect();
            let l: usize = p[2].parse().unwrap();
            let i = idx / shape[1];
            // Constant over channels, negative for odd rows: mean |.| = 1 + l + i / 10.
            let v = 1.0 + l as f32 + i as f32 / 10.0;
            if i % 2 == 1 { -v } else { v }
        },
    );
    let maps = reuse_maps(&net).unwrap();
    assert_eq!(
        maps.iter().map(|m| m.targets.len()).collect::<Vec<_>>(),
        [2, 3, 2]
    );
    let rows = csv_rows(&to_csv(&maps));
    // Block l reads x, X_0, ..., X_l: l + 2 inputs.
    assert_eq!(rows.len(), (2 + 3) + (2 + 3 + 4) + (2 + 3));
    for (stage, target, source, v) in rows {
        let l: usize = target.parse().unwrap();
        let i = match source.as_str() {
            "input" => 0,
            s => s.parse::<usize>().unwrap() + 1,
        };
        let want = 1.0 + l as f32 + i as f32 / 10.0;
        assert!(
            close(v, want),
            "{stage} block {l} input {source}: {v} != {want}"
        );
    }
}

#[test]
fn densenet_reuse_is_mean_abs_weight_per_source() {
    // growth 8, 16 stem channels, layers [2, 3, 2, 2], BC (1x1 first convolutions).
    let (_, net) = build(
        "densenet121",
        r#"{"num_classes": 10, "growth_rate": 8, "block_config": [2, 3, 2, 2], "init_features": 16}"#,
    );
    // Every reading weight is ±(input channel + 1) · (s + 1) in stage s (layer1 = 0), so the
    // mean |w| over a source's channels [a, b) is (a + b + 1) / 2 · (s + 1).
    let stage_of = |name: &str| -> usize {
        let digit = |p: &str| {
            name.split(p)
                .nth(1)
                .and_then(|r| r[..1].parse::<usize>().ok())
        };
        match (digit("denseblock"), digit("transition")) {
            (Some(b), _) => b - 1,
            (_, Some(t)) => t - 1,
            _ => 3, // the classifier reads the last stage
        }
    };
    let reads = |n: &str| {
        (n.contains("denselayer") && n.ends_with("conv1.weight"))
            || (n.contains("transition") && n.ends_with("conv.weight"))
            || n == "classifier.weight"
    };
    let net = with_weights(net, &reads, &|name, shape, idx| {
        let s = stage_of(name) as f32;
        // File layout: conv [out, in, kh, kw]; classifier [out, in].
        let per_out: usize = shape[1..].iter().product();
        let taps: usize = shape[2..].iter().product();
        let (o, j) = (idx / per_out, idx % per_out / taps);
        let sign = if o % 2 == 0 { 1.0 } else { -1.0 };
        sign * (j + 1) as f32 * (s + 1.0)
    });
    let maps = reuse_maps(&net).unwrap();
    assert_eq!(
        maps.iter()
            .map(|m| m.targets.last().unwrap().as_str())
            .collect::<Vec<_>>(),
        ["transition", "transition", "transition", "classifier"]
    );
    // Stage inputs: 16; transition halves (16 + 2·8) / 2 = 16 → 16 + 3·8 = 40 → 20; ...
    let inputs = [16usize, 16, 20, 18];
    let k = 8;
    let rows = csv_rows(&to_csv(&maps));
    let mut seen = 0;
    for (stage, target, source, v) in rows {
        let s: usize = stage.trim_start_matches("layer").parse::<usize>().unwrap() - 1;
        let c0 = inputs[s];
        let (a, b) = match source.as_str() {
            "input" => (0, c0),
            j => {
                let j: usize = j.parse().unwrap();
                if let Ok(l) = target.parse::<usize>() {
                    assert!(j < l, "layer {l} reads only earlier layers, not {j}");
                }
                (c0 + j * k, c0 + (j + 1) * k)
            }
        };
        let want = (a + b + 1) as f32 / 2.0 * (s + 1) as f32;
        assert!(
            close(v, want),
            "{stage} {target} <- {source}: {v} != {want}"
        );
        seen += 1;
    }
    // Layer l reads l + 1 sources; the transition or classifier reads all n + 1.
    let per_stage = |n: usize| (1..=n).sum::<usize>() + n + 1;
    assert_eq!(
        seen,
        per_stage(2) + per_stage(3) + per_stage(2) + per_stage(2)
    );
}

#[test]
fn reuse_needs_learned_cross_layer_connections() {
    for (model, o, says) in [
        (
            "resnet18",
            r#"{"dataset": "cifar10", "width": 0.25}"#,
            "identity shortcuts",
        ),
        (
            "brgsnet50",
            r#"{"dataset": "cifar10", "width": 0.125}"#,
            "RG shortcuts",
        ),
        (
            "dsnet50",
            r#"{"dataset": "cifar10", "width": 0.125, "ds_weight": "none"}"#,
            "ds_weight none",
        ),
    ] {
        let e = reuse_maps(&build(model, o).1).unwrap_err().to_string();
        assert!(e.contains(says), "{model}: {e}");
    }
}
