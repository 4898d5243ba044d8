//! Weight files: round trip, strict checking of names and shapes, torchvision names.

use std::path::Path;

use densum::weights::{self, TensorMap};
use densum::zoo::{self, Dataset, ModelOptions};
use densum::{Device, Net, Tensor};

fn small(name: &str) -> (zoo::ModelSpec, Net) {
    let options = ModelOptions {
        dataset: Some(Dataset::Cifar10),
        width: Some(0.125),
        ..Default::default()
    };
    let spec = zoo::resolve(name, &options).unwrap();
    let net = Net::new(&spec.config, &Device::default());
    (spec, net)
}

fn as_map(net: &Net) -> TensorMap {
    weights::named_tensors(net)
        .into_iter()
        .map(|t| (t.name, (t.shape, t.values)))
        .collect()
}

#[test]
fn save_then_load_gives_the_same_network() {
    let dir = std::env::temp_dir().join(format!("densum-w-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ds2net26.safetensors");
    let device = Device::default();
    device.seed(1);
    let (spec, net) = small("ds2net26");
    weights::save(&net, &spec.name, &spec.options, &path).unwrap();
    let info = weights::read_info(&path).unwrap();
    assert_eq!(info.model.as_deref(), Some("ds2net26"));
    assert_eq!(info.options.as_ref(), Some(&spec.options));
    device.seed(2);
    let (_, other) = small("ds2net26");
    let loaded = weights::load(other, "ds2net26", &path, &device).unwrap();
    let x = Tensor::<4>::ones([1, 3, 32, 32], &device);
    let a = net.forward(x.clone()).into_data();
    let b = loaded.forward(x).into_data();
    a.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::absolute(1e-6));
}

#[test]
fn names_follow_torchvision_and_the_spec() {
    let (_, net) = small("ds2net50");
    let names: Vec<String> = weights::named_tensors(&net)
        .into_iter()
        .map(|t| t.name)
        .collect();
    for n in [
        "conv1.weight",
        "bn1.weight",
        "bn1.running_var",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.bias",
        "layer3.5.conv3.weight",
        "layer1.ds.1.weight",
        "layer3.ds.5.weight",
        "layer1.0.inner_ds.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing in {names:?}");
    }
    let shapes: Vec<(String, Vec<usize>, bool)> = weights::tensor_shapes(&net);
    let find = |n: &str| shapes.iter().find(|s| s.0 == n).unwrap().1.clone();
    assert_eq!(find("layer3.ds.5.weight"), vec![5, 128]);
    assert_eq!(find("fc.weight"), vec![10, 256]);
    let (_, rgs) = small("resrgsnet26");
    let names: Vec<String> = weights::named_tensors(&rgs)
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(names.contains(&"layer2.1.rg.weight".to_string()));
    assert!(names.contains(&"layer2.1.inner_rg.bias".to_string()));
    assert!(!names.iter().any(|n| n.starts_with("layer2.0.rg")));
}

#[test]
fn missing_extra_and_misshapen_tensors_are_named() {
    let device = Device::default();
    let (_, net) = small("dsnet26");
    let path = Path::new("model.safetensors");
    let full = as_map(&net);

    let mut missing = full.clone();
    missing.remove("layer2.ds.1.weight");
    let (_, fresh) = small("dsnet26");
    let err = weights::load_tensors(fresh, &missing, path, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing tensor `layer2.ds.1.weight`"), "{err}");

    let mut extra = full.clone();
    extra.insert("layer9.0.conv1.weight".into(), (vec![1], vec![0.0]));
    let (_, fresh) = small("dsnet26");
    let err = weights::load_tensors(fresh, &extra, path, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unexpected tensor `layer9.0.conv1.weight`"),
        "{err}"
    );

    let mut wrong = full;
    wrong.insert(
        "layer1.0.conv2.weight".into(),
        (vec![8, 8, 1, 1], vec![0.0; 64]),
    );
    let (_, fresh) = small("dsnet26");
    let err = weights::load_tensors(fresh, &wrong, path, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`layer1.0.conv2.weight` has shape [8, 8, 1, 1]"),
        "{err}"
    );
    assert!(err.contains("model.safetensors"), "{err}");
}

/// Names and shapes (file layout) of every tensor of a built model, sorted.
fn file_layout(model: &str, options: &ModelOptions) -> Vec<String> {
    let spec = zoo::resolve(model, options).unwrap();
    let net = Net::new(&spec.config, &Device::default());
    let mut v: Vec<String> = weights::tensor_shapes(&net)
        .into_iter()
        .map(|(n, s, _)| format!("{n} {s:?}"))
        .collect();
    v.sort();
    v
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The file format does not depend on how the modules are written: every tensor of the
/// PyTorch fixtures (torchvision, timm and the reference implementations of every family;
/// test inputs and `num_batches_tracked` aside) is exactly what the model names and shapes.
#[test]
fn tensor_names_equal_the_pytorch_fixtures() {
    #[derive(serde::Deserialize)]
    struct Case {
        file: String,
        model: String,
        options: ModelOptions,
    }
    #[derive(serde::Deserialize)]
    struct Manifest {
        cases: Vec<Case>,
    }
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    let cases = serde_json::from_str::<Manifest>(&text).unwrap().cases;
    assert!(cases.len() >= 7, "{} cases", cases.len());
    for case in cases {
        let bytes = std::fs::read(fixtures().join(&case.file)).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut file: Vec<String> = meta
            .tensors()
            .into_iter()
            .filter(|(n, _)| {
                !n.starts_with(weights::RESERVED_PREFIX) && !n.ends_with("num_batches_tracked")
            })
            .map(|(n, info)| format!("{n} {:?}", info.shape))
            .collect();
        file.sort();
        assert_eq!(
            file_layout(&case.model, &case.options),
            file,
            "{} ({})",
            case.file,
            case.model
        );
    }
}

/// Models no fixture covers (attention, pre-activation, 2GN, BatchNorm in the dense and RG
/// shortcuts, plain DenseNet layers, ...): their complete name lists as densum wrote them
/// before its modules were restructured (tests/fixtures/names.txt, one `== model options`
/// section each).
#[test]
fn tensor_names_equal_the_committed_lists() {
    let text = std::fs::read_to_string(fixtures().join("names.txt")).unwrap();
    let mut sections = 0;
    for section in text.split("== ").filter(|s| !s.is_empty()) {
        let (head, body) = section.split_once('\n').unwrap();
        let (model, options) = head.split_once(' ').unwrap();
        let options: ModelOptions = serde_json::from_str(options).unwrap();
        let mut expected: Vec<String> = body.lines().map(str::to_string).collect();
        expected.sort();
        assert_eq!(file_layout(model, &options), expected, "{head}");
        sections += 1;
    }
    assert!(sections >= 10, "{sections} sections");
}

/// A weight file's metadata goes through the same bounds as the command line.
#[test]
fn out_of_range_options_in_a_file_are_refused() {
    let dir = std::env::temp_dir().join(format!("densum-wb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resnet20.safetensors");
    let (spec, net) = small("resnet20");
    let options = ModelOptions {
        width: Some(1e9),
        ..spec.options.clone()
    };
    weights::save(&net, &spec.name, &options, &path).unwrap();
    let info = weights::read_info(&path).unwrap();
    let err = zoo::resolve("resnet20", &info.options.unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("width must be a positive number at most 64"),
        "{err}"
    );
}
