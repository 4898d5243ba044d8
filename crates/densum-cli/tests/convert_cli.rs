//! `densum convert` as a user runs it: a training checkpoint to densum weights that
//! `densum predict` reads, fine-tuning heads, and refused files.

use std::path::{Path, PathBuf};

mod common;
use common::{fails, ok};

fn checkpoints() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../densum/tests/fixtures/checkpoints")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("densum-convert-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `densum convert SRC --model MODEL EXTRA... --out OUT` as arguments.
fn convert<'a>(src: &'a Path, model: &'a str, extra: &[&'a str], out: &'a Path) -> Vec<&'a str> {
    let mut a = vec!["convert", s(src), "--model", model];
    a.extend_from_slice(extra);
    a.extend(["--out", s(out)]);
    a
}

const C10_W0125: &[&str] = &["--dataset", "cifar10", "--width", "0.125"];

#[test]
fn a_training_checkpoint_converts_and_predicts() {
    let src = checkpoints().join("resnet18_zip_train.pth");
    let out = tmp("r18.safetensors");
    let text = ok(&convert(&src, "resnet18", C10_W0125, &out));
    assert!(
        text.contains("PyTorch zip, state dict under \"state_dict\", prefix module. removed")
            && text.contains("wrote resnet18")
            && text.contains("\"num_classes\":10"),
        "{text}"
    );
    // The output names its model and options: predict needs no model flags.
    let img = checkpoints().join("../images/img0.png");
    let text = ok(&["predict", "--weights", s(&out), "--top", "1", s(&img)]);
    assert!(text.contains("img0.png"), "{text}");

    // Fine-tuning for CIFAR-100's 100 classes (the dataset's count: no --num-classes).
    let out100 = tmp("r18-100.safetensors");
    let extra = ["--dataset", "cifar100", "--width", "0.125", "--reset-head"];
    let text = ok(&convert(&src, "resnet18", &extra, &out100));
    let bytes = std::fs::read(&out100).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("fc.weight").unwrap().shape(), &[100, 64]);
    assert!(
        text.contains("classifier re-initialised") && text.contains("\"dataset\":\"cifar100\""),
        "{text}"
    );
}

#[test]
fn hostile_and_mismatched_checkpoints_fail_with_the_reason() {
    let out = tmp("refused.safetensors");
    let hostile = checkpoints().join("hostile_system_zip.pth");
    let err = fails(&convert(&hostile, "resnet18", &[], &out));
    assert!(
        err.contains("posix.system") && err.contains("nothing in it was executed"),
        "{err}"
    );
    let legacy = checkpoints().join("resnet18_legacy_plain.pth");
    let err = fails(&convert(&legacy, "resnet34", C10_W0125, &out));
    assert!(err.contains("missing     layer1.2.conv1.weight"), "{err}");
    let err = fails(&convert(Path::new("no-such.pth"), "resnet18", &[], &out));
    assert!(err.contains("no-such.pth"), "{err}");
    let err = fails(&convert(&legacy, "resnet_nope", &[], &out));
    assert!(err.contains("resnet_nope"), "{err}");
    assert!(!out.exists());
}
