//! `densum info --features`, `densum gradcam` and `densum reuse` as a user runs them.

use std::path::{Path, PathBuf};

mod common;
use common::{fails, ok};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../densum/tests/fixtures")
}

fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("densum-explain-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The f32 values of a `.npy` file written by densum (header, then little-endian f32).
fn npy(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn info_lists_feature_levels() {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["info", "resnet50", "--features", "--json"])).unwrap();
    let f = v["features"].as_array().unwrap();
    let got: Vec<(u64, u64, u64)> = f
        .iter()
        .map(|l| {
            let side = l["shape"][1].as_u64().unwrap();
            (
                l["num_chs"].as_u64().unwrap(),
                l["reduction"].as_u64().unwrap(),
                side,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (64, 2, 112),
            (256, 4, 56),
            (512, 8, 28),
            (1024, 16, 14),
            (2048, 32, 7)
        ]
    );
    let text = ok(&["info", "densenet121", "--features"]);
    assert!(text.contains("1024x7x7"), "{text}");
}

#[test]
fn gradcam_writes_overlays_maps_and_a_comparison_grid() {
    let out = tmp("gradcam");
    let out_s = out.display().to_string();
    let resnet = fixture("tv_resnet18_w025_imagenetstem.safetensors");
    let densenet = fixture("tv_densenet_k8_2222.safetensors");
    let images = [fixture("images/img0_64.png"), fixture("images/img1_64.png")];
    let text = ok(&[
        "gradcam",
        "--weights",
        &resnet,
        "--input-size",
        "64",
        &images[0],
        &images[1],
        "--out",
        &out_s,
        "--compare",
        &densenet,
    ]);
    assert!(text.contains("class 9"), "{text}");
    let png = out.join("img0_64_tv_resnet18_w025_imagenetstem.png");
    assert_eq!(image::image_dimensions(&png).unwrap(), (64, 64));
    // The map equals PyTorch's Grad-CAM of the same weights and image (layer4, top class):
    // the CLI's image decoding, network and Grad-CAM end to end.
    let (_, reference) = densum_ref(
        &fixtures().join("gradcam.safetensors"),
        "tv_resnet18_w025_imagenetstem.layer4.top.map",
    );
    let map = npy(&out.join("img0_64_tv_resnet18_w025_imagenetstem.map.npy"));
    assert_eq!(map.len(), 64 * 64);
    let err = map
        .iter()
        .zip(&reference[..64 * 64])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err <= 1e-3, "map differs from PyTorch's by {err}");
    let cam = npy(&out.join("img1_64_tv_densenet_k8_2222.cam.npy"));
    assert_eq!(cam.len(), 2 * 2);
    // Two rows (images) of two columns (networks), cells enlarged to at least 192 px.
    let (w, h) = image::image_dimensions(out.join("compare.png")).unwrap();
    assert!(w > 2 * 192 && h > 2 * 192, "{w}x{h}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gradcam.json")).unwrap()).unwrap();
    assert_eq!(summary.as_array().unwrap().len(), 4);
    assert_eq!(summary[0]["class"], 9);
}

/// One tensor of a safetensors fixture (shape, f32 values).
fn densum_ref(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let values = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), values)
}

#[test]
fn gradcam_bad_input_is_a_clear_error() {
    let out = tmp("gradcam-bad").display().to_string();
    let resnet = fixture("tv_resnet18_w025_imagenetstem.safetensors");
    let img = fixture("images/img0_64.png");
    // A CIFAR network takes 32 px inputs: it cannot share a grid with a 224 px one.
    let cifar = fixture("dsnet50.safetensors");
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &[&resnet, &img, "--layer", "layer7"],
            &["unknown layer `layer7`", "layer1..layer4"],
        ),
        (
            &[&resnet, &img, "--class", "12"],
            &["--class 12", "10 classes"],
        ),
        (&[&resnet, &img, "--class", "cat"], &["--class cat"]),
        (&[&resnet, "missing.png"], &["missing.png"]),
        (&["nowhere.safetensors", &img], &["nowhere.safetensors"]),
        (&[&resnet, &img, "--compare", &cifar], &["one input size"]),
    ];
    for (args, says) in cases {
        let mut all = vec!["gradcam", "--out", &out, "--weights"];
        all.extend_from_slice(args);
        let e = fails(&all);
        assert!(says.iter().all(|s| e.contains(s)), "{args:?}: {e}");
    }
}

#[test]
fn reuse_writes_a_heat_map_and_csv() {
    for (file, kind, rows) in [
        // dsnet50: stages of 3, 4, 6, 3 blocks, block l reads l earlier outputs.
        ("dsnet50.safetensors", "dense_sum", 3 + 6 + 15 + 3),
        // delugenet [2, 2, 2]: block l reads l + 2 inputs.
        ("delugenet_w0125_222.safetensors", "deluge", 3 * (2 + 3)),
        // densenet [2, 2, 2, 2]: layer l reads l + 1 sources, the transition or classifier 3.
        ("tv_densenet_k8_2222.safetensors", "concat", 4 * (1 + 2 + 3)),
    ] {
        let png = tmp(&format!("reuse-{kind}.png"));
        ok(&[
            "reuse",
            "--weights",
            &fixture(file),
            "--out",
            &png.display().to_string(),
        ]);
        let (w, h) = image::image_dimensions(&png).unwrap();
        assert!(w > h && h > 100, "{file}: {w}x{h}");
        let csv = std::fs::read_to_string(png.with_extension("csv")).unwrap();
        assert_eq!(
            csv.lines().next().unwrap(),
            "stage,kind,target,source,mean_abs_weight"
        );
        assert_eq!(csv.lines().count() - 1, rows, "{file}");
        assert!(
            csv.lines()
                .skip(1)
                .all(|l| l.split(',').nth(1) == Some(kind))
        );
    }
    let out = tmp("reuse-resnet.png").display().to_string();
    let e = fails(&[
        "reuse",
        "--weights",
        &fixture("tv_resnet18_w025_c10.safetensors"),
        "--out",
        &out,
    ]);
    assert!(e.contains("no learned cross-layer connections"), "{e}");
}
