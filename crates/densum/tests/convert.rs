//! `weights::import`: PyTorch checkpoints as users have them (tools/make_checkpoints.py)
//! convert to densum weights that give PyTorch's logits; densum files carry exactly
//! torchvision's / timm's state_dict names and shapes (so they load with strict=True);
//! hostile, absurd, truncated and mismatched files are refused with errors naming them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use densum::weights::{self, import};
use densum::zoo::{self, ModelOptions};
use densum::{Device, Net, burn};
use serde::Deserialize;

#[derive(Deserialize)]
struct Manifest {
    hostile_marker: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    model: String,
    options: ModelOptions,
    file: String,
    /// Tensors in the source state dict, BN counters included.
    tensors: usize,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints")
}

fn manifest_in(dir: &Path) -> Manifest {
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("densum-convert-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// max |a - b| / max(1, max |b|), as tests/parity.rs.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// Converts every case of `dir`'s manifest, reloads the output as `densum predict` would
/// (model and options from the file) and compares logits with PyTorch's.
fn converted_logits_equal_pytorch_in(dir: &Path) {
    let (_, expected) = weights::read_tensors(&dir.join("expected.safetensors")).unwrap();
    let device = Device::default();
    let mut failures = Vec::new();
    for case in manifest_in(dir).cases {
        let out = tmp(&format!("{}.safetensors", case.name));
        let report = import::convert(
            &dir.join(&case.file),
            &case.model,
            &case.options,
            false,
            0,
            &out,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let info = weights::read_info(&out).unwrap();
        assert_eq!(info.model.as_deref(), Some(case.model.as_str()));
        let options = info.options.unwrap();
        let spec = zoo::resolve(&case.model, &options).unwrap();
        let net = weights::load(Net::new(&spec.config, &device), &case.model, &out, &device)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let (shape, input) = &expected[&format!("{}.input", case.name)];
        let x = Tensor::<4>::from_data(TensorData::new(input.clone(), shape.clone()), &device);
        let logits = net
            .forward(x)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        let err = rel_err(&logits, &expected[&format!("{}.logits", case.name)].1);
        println!(
            "{:28} {:14} {:?} relative logit error {err:.2e}",
            case.name, report.format, report.dtypes
        );
        if err.is_nan() || err > 1e-4 {
            failures.push(format!("{}: {err:.3e}", case.name));
        }
        // The output holds the source's names: the same number of tensors (BN counters
        // included), and the source's own names once wrappers and old names are undone.
        let (_, written) = weights::read_tensors(&out).unwrap();
        assert_eq!(written.len(), case.tensors, "{}: tensor count", case.name);
        let source = import::open_checkpoint(&dir.join(&case.file)).unwrap();
        let written: BTreeSet<&String> = written
            .keys()
            .filter(|k| !k.ends_with("num_batches_tracked"))
            .collect();
        assert_eq!(
            written,
            source.tensors.keys().collect::<BTreeSet<_>>(),
            "{}",
            case.name
        );
    }
    assert!(failures.is_empty(), "logits differ: {failures:?}");
}

#[test]
fn converted_checkpoints_give_pytorchs_logits() {
    converted_logits_equal_pytorch_in(&dir());
}

/// Full-size torchvision ResNet-50 and DenseNet-121 training checkpoints
/// ({"state_dict": {"module.*"}, "optimizer", ...}, about 200 MB): make them with
/// `.venv/bin/python tools/make_checkpoints.py --large`.
#[test]
#[ignore = "needs tools/make_checkpoints.py --large (about 200 MB)"]
fn large_training_checkpoints_convert() {
    let dir = std::env::var_os("DENSUM_LARGE_CHECKPOINTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir().join("../../../../../tools/fixtures/large/checkpoints"));
    assert!(
        dir.join("manifest.json").exists(),
        "no large checkpoints in {}: run tools/make_checkpoints.py --large",
        dir.display()
    );
    converted_logits_equal_pytorch_in(&dir);
}

fn c10_resnet18() -> ModelOptions {
    ModelOptions {
        dataset: Some(zoo::Dataset::parse("cifar10").unwrap()),
        width: Some(0.125),
        ..Default::default()
    }
}

#[test]
fn hostile_checkpoints_are_refused_and_run_nothing() {
    let m = manifest_in(&dir());
    let marker = Path::new(&m.hostile_marker);
    let _ = std::fs::remove_file(marker);
    // A good file already at the output must survive a refused conversion.
    let out = tmp("kept.safetensors");
    std::fs::write(&out, b"previous good output").unwrap();
    for file in [
        "hostile_system_zip.pth",
        "hostile_system_legacy.pth",
        "hostile_system_plain.pkl",
    ] {
        let path = dir().join(file);
        let e = import::convert(&path, "resnet18", &c10_resnet18(), false, 0, &out)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(file) && e.contains("posix.system") && e.contains("refuses"),
            "{file}: {e}"
        );
        assert!(!marker.exists(), "{file}: its command ran");
        assert_eq!(std::fs::read(&out).unwrap(), b"previous good output");
    }
}

#[test]
fn absurd_sizes_offsets_and_truncations_are_errors() {
    let out = tmp("absurd.safetensors");
    for (file, says) in [
        (
            "absurd_size.pth",
            "needs 1000000000000 elements, but storage '0' declares 4",
        ),
        ("absurd_offset.pth", "at offset 1152921504606846976"),
    ] {
        let e = match import::open_checkpoint(&dir().join(file)) {
            Err(e) => e.to_string(),
            // Opened: the tensor must still be refused, never read at its declared size.
            Ok(c) => import::import_into(
                Net::new(
                    &zoo::resolve("resnet18", &c10_resnet18()).unwrap().config,
                    &Device::default(),
                ),
                &c,
                false,
                &Device::default(),
            )
            .map(|_| ())
            .unwrap_err()
            .to_string(),
        };
        assert!(e.contains(file) && e.contains(says), "{file}: {e}");
        assert!(!out.exists());
    }
    // Every truncation of a zip and a legacy checkpoint is an error naming the file.
    for file in ["resnet18_zip_train.pth", "resnet18_legacy_plain.pth"] {
        let bytes = std::fs::read(dir().join(file)).unwrap();
        let cut = tmp(&format!("cut-{file}"));
        let step = bytes.len() / 97;
        for n in (0..bytes.len()).step_by(step) {
            std::fs::write(&cut, &bytes[..n]).unwrap();
            let e = import::convert(&cut, "resnet18", &c10_resnet18(), false, 0, &out)
                .map(|_| ())
                .expect_err(&format!("{file} cut at {n} of {} bytes", bytes.len()))
                .to_string();
            assert!(e.contains("cut-"), "{file} at {n}: {e}");
            assert!(!e.contains("reader failed"), "{file} at {n}: panicked: {e}");
        }
    }
    assert!(!out.exists());
}

#[test]
fn mismatches_are_listed_by_name() {
    let src = dir().join("resnet18_zip_train.pth");
    let out = tmp("mismatch.safetensors");
    // resnet34 has more blocks: each missing tensor is named.
    let e = import::convert(&src, "resnet34", &c10_resnet18(), false, 0, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing     layer1.2.conv1.weight (the model expects [8, 8, 3, 3])"));
    assert!(e.contains("missing     layer4.2.bn2.running_var"), "{e}");
    // resnet50's blocks differ: unexpected and misshapen tensors too.
    let e = import::convert(&src, "resnet50", &c10_resnet18(), false, 0, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing     layer1.0.conv3.weight"), "{e}");
    assert!(e.contains("misshapen   layer1.0.conv1.weight: the file has [8, 8, 3, 3], the model expects [8, 8, 1, 1]"), "{e}");
    // Another class count than the file's: only the classifier, with the way out.
    let mut o = c10_resnet18();
    o.num_classes = Some(100);
    let e = import::convert(&src, "resnet18", &o, false, 0, &out)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("misshapen   fc.weight: the file has [10, 64], the model expects [100, 64]")
            && e.contains("--reset-head"),
        "{e}"
    );
    assert!(!out.exists());
    // A missing file and a file that is no checkpoint.
    let e = import::open_checkpoint(&dir().join("nope.pth"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nope.pth"), "{e}");
    let e = import::open_checkpoint(&dir().join("manifest.json"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("manifest.json") && e.contains("not a readable PyTorch checkpoint"),
        "{e}"
    );
}

#[test]
fn reset_head_keeps_the_backbone_for_another_class_count() {
    let src = dir().join("resnet18_zip_train.pth");
    let out = tmp("reset.safetensors");
    let mut o = c10_resnet18();
    o.num_classes = Some(100);
    let r = import::convert(&src, "resnet18", &o, true, 3, &out).unwrap();
    assert!(r.head_reset);
    let (info, written) = weights::read_tensors(&out).unwrap();
    assert_eq!(info.options.unwrap().num_classes, Some(100));
    assert_eq!(written["fc.weight"].0, vec![100, 64]);
    let source = import::open_checkpoint(&src).unwrap();
    for (name, t) in &source.tensors {
        if !import::is_head(name) {
            assert_eq!(written[name].1, t.values(&src).unwrap(), "{name}");
        }
    }
}

#[derive(Deserialize)]
struct Names {
    source: String,
    tensors: Vec<(String, Vec<usize>, String)>,
}

/// What `weights::save` writes for a model: its tensors (f32) and an int64 counter per BN.
/// `converted_checkpoints_give_pytorchs_logits` checks the same rule on real output.
fn file_layout(net: &Net) -> BTreeMap<String, (Vec<usize>, String)> {
    let mut out = BTreeMap::new();
    for (name, shape, _) in weights::tensor_shapes(net) {
        if let Some(prefix) = name.strip_suffix("running_var") {
            out.insert(
                format!("{prefix}num_batches_tracked"),
                (vec![], "int64".into()),
            );
        }
        out.insert(name, (shape, "float32".into()));
    }
    out
}

#[test]
fn densum_files_have_torchvision_and_timm_state_dict_layouts() {
    let text = std::fs::read_to_string(dir().join("export_names.json")).unwrap();
    let all: BTreeMap<String, Names> = serde_json::from_str(&text).unwrap();
    assert_eq!(all.len(), 6);
    for (model, names) in all {
        let spec = zoo::resolve(&model, &ModelOptions::default()).unwrap();
        let net = Net::new(&spec.config, &Device::default());
        let ours = file_layout(&net);
        let theirs: BTreeMap<String, (Vec<usize>, String)> = names
            .tensors
            .into_iter()
            .map(|(n, s, d)| (n, (s, d)))
            .collect();
        let only_ours: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
        let only_theirs: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
        assert!(
            only_ours.is_empty() && only_theirs.is_empty(),
            "{model} vs {}: only densum {only_ours:?}, only theirs {only_theirs:?}",
            names.source
        );
        for (n, t) in &theirs {
            assert_eq!(&ours[n], t, "{model} vs {}: {n}", names.source);
        }
        println!("{model:18} = {} ({} tensors)", names.source, theirs.len());
    }
}
