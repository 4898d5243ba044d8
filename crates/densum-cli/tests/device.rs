//! `--device`, `--devices` and `--precision` as a user meets them: bad spellings, a backend
//! the binary was built without, low precision. Every error comes before any work is done.

use std::path::{Path, PathBuf};

mod common;
use common::{fails, ok};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../densum/tests/fixtures")
}

/// The GPU backends this binary lacks (all of them in the default build CI tests).
fn missing() -> Vec<&'static str> {
    [
        ("cuda", cfg!(feature = "cuda")),
        ("rocm", cfg!(feature = "rocm")),
        ("wgpu", cfg!(feature = "wgpu")),
        ("vulkan", cfg!(feature = "vulkan")),
        ("metal", cfg!(feature = "metal")),
    ]
    .into_iter()
    .filter(|(_, on)| !on)
    .map(|(n, _)| n)
    .collect()
}

#[test]
fn a_backend_not_built_in_says_how_to_build_it() {
    let data = fixtures();
    let data = data.to_str().unwrap();
    let weights = fixtures().join("dsnet50.safetensors");
    let img = fixtures().join("images/img0.png");
    let (w, i) = (weights.to_str().unwrap(), img.to_str().unwrap());
    for name in missing() {
        let want = format!(
            "this densum was built without the `{name}` feature: cargo build --release -p densum-cli --features {name}"
        );
        let dev = format!("{name}:0");
        for args in [
            vec!["bench", "resnet18", "--device", &dev],
            vec!["predict", "--weights", w, i, "--device", name],
            vec!["eval", "--weights", w, "--data", data, "--device", &dev],
            vec![
                "train", "--model", "resnet18", "--data", data, "--device", &dev,
            ],
        ] {
            let e = fails(&args);
            assert!(e.contains(&want), "densum {args:?}: {e}");
        }
        let list = format!("{name}:0,{name}:1");
        let e = fails(&[
            "train",
            "--model",
            "resnet18",
            "--data",
            data,
            "--devices",
            &list,
        ]);
        assert!(e.contains(&want), "--devices {list}: {e}");
    }
}

#[test]
fn bad_device_lists_and_precisions_are_named() {
    let data = fixtures();
    let data = data.to_str().unwrap();
    let e = fails(&["bench", "resnet18", "--device", "tpu:0"]);
    assert!(
        e.contains("unknown backend `tpu`") && e.contains("cuda[:N]"),
        "{e}"
    );
    let e = fails(&["bench", "resnet18", "--device", "cuda:one"]);
    assert!(e.contains("index `one` is not a device number"), "{e}");
    let e = fails(&["bench", "resnet18", "--device", "cpu:1"]);
    assert!(e.contains("one device"), "{e}");
    let train = ["train", "--model", "resnet18", "--data", data];
    let e = fails(&[&train[..], &["--devices", "cuda:0,cuda:0"]].concat());
    assert!(e.contains("`cuda:0` is listed twice"), "{e}");
    let e = fails(&[&train[..], &["--devices", "cuda:0,rocm:0"]].concat());
    assert!(e.contains("different backends"), "{e}");
    let e = fails(&[&train[..], &["--devices", "cuda:0", "--device", "cpu"]].concat());
    assert!(e.contains("cannot be used with"), "{e}");
    let e = fails(&["bench", "resnet18", "--precision", "bf16"]);
    assert!(
        e.contains("--precision bf16 on `cpu`: densum runs f32 only"),
        "{e}"
    );
    let e = fails(&[&train[..], &["--precision", "f16"]].concat());
    assert!(e.contains("--precision f16 on `cpu`"), "{e}");
    let e = fails(&["bench", "resnet18", "--precision", "f64"]);
    assert!(e.contains("expected f32, bf16 or f16"), "{e}");
}

#[test]
fn cpu_is_the_default_device() {
    let weights = fixtures().join("dsnet50.safetensors");
    let img = fixtures().join("images/img0.png");
    let (w, i) = (weights.to_str().unwrap(), img.to_str().unwrap());
    let plain = ok(&["predict", "--weights", w, i]);
    let cpu = ok(&[
        "predict",
        "--weights",
        w,
        i,
        "--device",
        "cpu",
        "--precision",
        "f32",
    ]);
    assert_eq!(plain, cpu);
    assert!(plain.contains("img0.png"), "{plain}");
}
