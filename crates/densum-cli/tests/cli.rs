//! The `densum` command as a user runs it: model listing, info, init, predict, bad input.

use std::path::{Path, PathBuf};

mod common;
use common::{fails, ok};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../densum/tests/fixtures")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("densum-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn info_reports_the_exact_counts() {
    let v: serde_json::Value = serde_json::from_str(&ok(&["info", "dsnet50", "--json"])).unwrap();
    assert_eq!(v["params"], 25_582_376);
    assert_eq!(v["macs"], 4_089_184_256u64);
    assert_eq!(v["output"][0], 1000);
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["info", "densenet121", "--json"])).unwrap();
    assert_eq!(v["params"], 7_978_856);
    // Convolution + linear MACs of torchvision's densenet121 and timm's res2net50_26w_4s,
    // counted with forward hooks on the PyTorch modules at 224 px.
    assert_eq!(v["macs"], 2_834_161_664u64);
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["info", "res2net50_26w_4s", "--json"])).unwrap();
    assert_eq!(v["params"], 25_699_120);
    assert_eq!(v["macs"], 4_255_166_464u64);
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "info",
        "densenet121",
        "--growth-rate",
        "8",
        "--block-config",
        "2,2,2,2",
        "--init-features",
        "16",
        "--json",
    ]))
    .unwrap();
    // torchvision's DenseNet(8, (2, 2, 2, 2), 16) with 1000 classes has 61,560 parameters.
    assert_eq!(v["params"], 61_560);
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "info",
        "ds2net50",
        "--dataset",
        "cifar100",
        "--width",
        "0.25",
        "--json",
    ]))
    .unwrap();
    assert_eq!(v["params"], 1_537_412);
    assert_eq!(v["input"][1], 32);
    let text = ok(&["info", "resnet50"]);
    assert!(
        text.contains("25,557,032") && text.contains("layer4"),
        "{text}"
    );
}

#[test]
fn every_issue_name_is_registered() {
    let v: serde_json::Value = serde_json::from_str(&ok(&["models", "--json"])).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let mut wanted: Vec<String> = [
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "preact_resnet164",
        "preact_resnet1001",
        "resnext50_32x4d",
        "resnext29_8x64d",
        "resnext29_16x64d",
        "wrn28_10",
        "wide_resnet50_2",
        "se_resnet50",
        "cbam_resnet50",
        "dsnet50",
        "ds2net50",
        "dsnet50_a",
        "resnet50_dense",
        "dsnext50_32x4d",
        "ds2next50_32x4d",
        "dswrn28_10",
        "brgsnet50",
        "drgsnet50",
        "resrgsnet50",
        "brgsnet50_rbs",
        "brgsnet50_gs",
        "brgsnet50_rgb",
        "resnet50_2gn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for d in [18, 26, 34, 38, 50, 62, 77, 101, 152, 200] {
        wanted.push(format!("resnet{d}"));
        wanted.push(format!("dsnet{d}"));
        wanted.push(format!("brgsnet{d}"));
    }
    for w in &wanted {
        assert!(
            names.contains(&w.as_str()),
            "{w} missing from `densum models`"
        );
    }
}

#[test]
fn predict_reproduces_pytorch_logits_on_the_fixtures() {
    for case in [
        "dsnet50",
        "tv_resnet50_w025_c100",
        "tv_resnet18_w025_imagenetstem",
        "resrgsnet50",
        "tv_densenet_k8_2222",
        "timm_res2net50_w0125_2211",
        "dense2net_k8_2222_c2_se",
        "delugenet_w0125_222",
    ] {
        let file = fixtures().join(format!("{case}.safetensors"));
        let st_bytes = std::fs::read(&file).unwrap();
        let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&st_bytes).unwrap();
        let images: Vec<String> = meta.metadata().as_ref().unwrap()["images"]
            .split(',')
            .map(|p| fixtures().join(p).display().to_string())
            .collect();
        let want: Vec<f32> = st
            .tensor("__logits__")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut args = vec![
            "predict",
            "--weights",
            file.to_str().unwrap(),
            "--format",
            "json",
        ];
        if ["imagenetstem", "densenet", "res2net"]
            .iter()
            .any(|k| case.contains(k))
        {
            // 64 px inputs to an ImageNet-stem network: say so, or they would be resized to 224.
            args.extend(["--input-size", "64"]);
        }
        args.extend(images.iter().map(|s| s.as_str()));
        let v: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        let got: Vec<f32> = v
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r["logits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        assert_eq!(got.len(), want.len(), "{case}");
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
            / scale;
        assert!(err <= 1e-4, "{case}: relative error {err}");
        assert_eq!(v[0]["top5"].as_array().unwrap().len(), 5);
        assert_eq!(v[1]["file"], images[1].as_str());
    }
}

#[test]
fn init_then_predict_round_trips_and_resizes() {
    let out = tmp("resnet20.safetensors");
    ok(&[
        "init",
        "resnet20",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let img = fixtures().join("images/img0_64.png");
    // A 64x64 image into a 32 px model: resized and centre-cropped.
    let text = ok(&[
        "predict",
        "--weights",
        out.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(text.contains("1. class"), "{text}");
    // Same seed, same weights.
    let again = tmp("resnet20b.safetensors");
    ok(&[
        "init",
        "resnet20",
        "--seed",
        "3",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn predict_in_several_batches_matches_one_batch() {
    let w = tmp("resnet20-batches.safetensors");
    let w = w.to_str().unwrap();
    ok(&["init", "resnet20", "--seed", "5", "--out", w]);
    let images: Vec<String> = [
        "img0.png",
        "img1.png",
        "img0_64.png",
        "img1_64.png",
        "img1.png",
    ]
    .iter()
    .map(|f| fixtures().join("images").join(f).display().to_string())
    .collect();
    let run = |batch: &str| {
        let mut args = vec![
            "predict",
            "--weights",
            w,
            "--format",
            "json",
            "--batch",
            batch,
        ];
        args.extend(images.iter().map(|s| s.as_str()));
        let v: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        v
    };
    let one = run("5");
    assert_eq!(one.as_array().unwrap().len(), 5);
    // 5 images in batches of 2 (2 + 2 + 1) and of 1: the same files, logits and classes.
    assert_eq!(run("2"), one);
    assert_eq!(run("1"), one);
    let e = fails(&["predict", "--weights", w, "--batch", "0", &images[0]]);
    assert!(e.contains("batch"), "{e}");
}

#[test]
fn bad_input_gives_clear_errors() {
    assert!(fails(&["info", "dsnet5O"]).contains("did you mean: dsnet50"));
    assert!(fails(&["info", "densenet121", "--growth-rate", "0"]).contains("growth_rate"));
    assert!(fails(&["info", "densenet121", "--compression", "1.5"]).contains("(0, 1]"));
    assert!(fails(&["info", "res2net50_26w_4s", "--scale", "1"]).contains("at least 2"));
    assert!(fails(&["info", "ds2net18"]).contains("basic blocks"));
    assert!(fails(&["info", "resnet50", "--width=-1"]).contains("width"));
    assert!(fails(&["info", "resnet50", "--width", "0"]).contains("width"));
    assert!(
        fails(&[
            "info",
            "resnext50_32x4d",
            "--cardinality",
            "32",
            "--base-width",
            "1",
            "--width",
            "0.25"
        ])
        .contains("group width")
    );
    // Named choices are value enums: the error names the flag, the value and the choices.
    let e = fails(&["info", "resnet50", "--dataset", "mnist"]);
    assert!(
        e.contains("--dataset") && e.contains("'mnist'") && e.contains("cifar100"),
        "{e}"
    );
    let e = fails(&["info", "dsnet50", "--ds-norm", "xx"]);
    assert!(
        e.contains("--ds-norm") && e.contains("gn, ln, in, bn, none"),
        "{e}"
    );
    // Any case is accepted, as before.
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "info",
        "resnet20",
        "--dataset",
        "CIFAR100",
        "--json",
    ]))
    .unwrap();
    assert_eq!(v["output"][0], 100);

    // Weights of another model, or with a wrong shape, name the model or tensor.
    let file = fixtures().join("dsnet50.safetensors");
    let img = fixtures().join("images/img0.png");
    let (f, i) = (file.to_str().unwrap(), img.to_str().unwrap());
    assert!(
        fails(&["predict", "--model", "resnet50", "--weights", f, i])
            .contains("holds model `dsnet50`")
    );
    assert!(
        fails(&["predict", "--weights", f, "--width", "0.25", i]).contains("layer1.0.conv1.weight")
    );

    // Missing tensors: a resnet50 file loaded as ... its own name but fewer tensors.
    let small = tmp("dsnet26.safetensors");
    ok(&[
        "init",
        "dsnet26",
        "--dataset",
        "cifar10",
        "--width",
        "0.125",
        "--out",
        small.to_str().unwrap(),
    ]);
    let err = fails(&[
        "predict",
        "--model",
        "dsnet26",
        "--dataset",
        "cifar10",
        "--width",
        "0.125",
        "--weights",
        f,
        i,
    ]);
    assert!(err.contains("dsnet50"), "{err}");

    // Corrupt weight file, unreadable image, missing file.
    let corrupt = tmp("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a safetensors file at all").unwrap();
    assert!(
        fails(&["predict", "--weights", corrupt.to_str().unwrap(), i])
            .contains("corrupt.safetensors")
    );
    let bad_img = tmp("bad.png");
    std::fs::write(&bad_img, b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let err = fails(&["predict", "--weights", f, bad_img.to_str().unwrap()]);
    assert!(err.contains("bad.png") && err.contains("decode"), "{err}");
    assert!(
        fails(&["predict", "--weights", f, "/nonexistent/x.png"]).contains("/nonexistent/x.png")
    );
    assert!(
        fails(&["predict", "--weights", "/nonexistent/w.safetensors", i])
            .contains("/nonexistent/w.safetensors")
    );

    // init into a folder that does not exist leaves nothing behind.
    assert!(
        fails(&[
            "init",
            "resnet20",
            "--out",
            "/nonexistent/dir/w.safetensors"
        ])
        .contains("/nonexistent/dir")
    );
}

/// Options beyond their bounds end with a clear error, not an aborted allocation; counting
/// the largest model the bounds allow needs no weights.
#[test]
fn huge_options_are_refused_and_counting_allocates_no_weights() {
    for (args, want) in [
        (
            &["info", "resnet50", "--width", "1e9"][..],
            "width must be a positive number at most 64",
        ),
        (
            &["info", "resnet50", "--input-size", "100000"],
            "input_size must be at least 1 and at most 4096",
        ),
        (
            &["info", "resnet50", "--num-classes", "1000000000"],
            "num_classes must be at least 1 and at most 100000",
        ),
        (
            &["info", "densenet121", "--growth-rate", "100000"],
            "growth_rate must be at least 1 and at most 1024",
        ),
        (
            &["info", "densenet121", "--block-config", "6,12,1000000"],
            "block_config",
        ),
        (
            &[
                "info",
                "resnet50",
                "--width",
                "64",
                "--block-config",
                "1,1,1,1,1,1",
            ],
            "channels, more than 131072",
        ),
    ] {
        let out = common::densum(args);
        let err = String::from_utf8_lossy(&out.stderr);
        // An abort (failed allocation) or a panic has no exit code 1.
        assert_eq!(out.status.code(), Some(1), "densum {args:?}: {err}");
        assert!(err.contains(want), "densum {args:?}: {err}");
    }
    // ResNet-50 at width 64 has about 64^2 times its 25.6M parameters: 400 GB of f32 weights
    // if `info` created them.
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["info", "resnet50", "--width", "64", "--json"])).unwrap();
    let params = v["params"].as_u64().unwrap();
    assert!(params > 60 * 60 * 25_000_000, "{params}");
    // The shortcut weights grow with the square of a stage's length: a 1000-block DSNet stage
    // at width 64 has 1000 · 999 / 2 · 16384 of them (33 GB), DelugeNet's three stages 68 GB.
    for model in [
        &["dsnet50", "--block-config", "1000"][..],
        &["delugenet146", "--block-config", "1000,1000,1000"],
    ] {
        let args = [&["info"][..], model, &["--width", "64", "--json"]].concat();
        let v: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        assert!(
            v["params"].as_u64().unwrap() > 8_000_000_000,
            "{args:?}: {v}"
        );
    }
}

#[test]
fn bench_reports_time_memory_and_ratios() {
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "bench", "resnet20", "dsnet20", "--batch", "2", "--warmup", "0", "--iters", "1", "--json",
    ]))
    .unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for r in list {
        let t = &r["train"];
        assert!(t["step_ms"]["median"].as_f64().unwrap() > 0.0);
        assert!(t["forward_ms"]["median"].as_f64().unwrap() > 0.0);
        assert!(
            t["peak_bytes"].as_u64().unwrap() > 0,
            "counting allocator not installed"
        );
        assert!(r["infer"]["images_per_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(list[0]["ratio_to_first"]["params"], 1.0);
    // The timed update is `densum train`'s SGD with its default settings.
    let o = &list[0]["optimizer"];
    assert_eq!(
        (o["lr"].as_f64(), o["momentum"].as_f64()),
        (Some(0.1), Some(0.9))
    );
    assert_eq!(o["weight_decay"].as_f64(), Some(5e-4));
    assert!(list[0]["train"]["optimizer_ms"]["median"].as_f64().unwrap() > 0.0);
    let p = list[1]["ratio_to_first"]["params"].as_f64().unwrap();
    assert!(p > 1.0, "dsnet20 has more parameters than resnet20: {p}");
    let csv = ok(&[
        "bench", "resnet20", "--batch", "1", "--iters", "1", "--warmup", "0", "--mode", "infer",
        "--csv",
    ]);
    assert!(csv.starts_with("model,params,macs,"), "{csv}");
    assert!(fails(&["bench", "resnet20", "nosuchnet", "--iters", "1"]).contains("nosuchnet"));
    // A recipe's optimiser settings, as `densum train --recipe` would use them.
    let args =
        "bench resnet20 --batch 1 --warmup 0 --iters 1 --mode train --recipe densenet-cifar --json";
    let words: Vec<&str> = args.split(' ').collect();
    let v: serde_json::Value = serde_json::from_str(&ok(&words)).unwrap();
    let o = &v[0]["optimizer"];
    assert_eq!(o["nesterov"], true);
    assert_eq!(o["weight_decay"].as_f64(), Some(1e-4));
    assert!(fails(&["bench", "resnet20", "--recipe", "nosuch"]).contains("dsnet-cifar"));
    // Per-shape convolution times: in JSON under each mode, and as tables in text.
    let args = "bench resnet20 --batch 2 --warmup 0 --iters 1 --conv-profile";
    let words: Vec<&str> = args.split(' ').collect();
    let v: serde_json::Value =
        serde_json::from_str(&ok(&[&words[..], &["--json"]].concat())).unwrap();
    let convs = v[0]["train"]["convolutions"].as_array().unwrap();
    let passes: Vec<&str> = convs.iter().map(|t| t["pass"].as_str().unwrap()).collect();
    for p in ["forward", "input_grad", "weight_grad"] {
        assert!(passes.contains(&p), "{p} missing: {passes:?}");
    }
    // ResNet-20's 3x3 16 -> 16 convolutions at 32x32: six per forward pass (and the stem).
    let c16 = convs
        .iter()
        .find(|t| t["shape"]["c"] == 16 && t["shape"]["o"] == 16 && t["pass"] == "forward")
        .unwrap();
    assert_eq!(c16["calls"].as_f64(), Some(6.0));
    assert!(v[0]["infer"]["convolutions"].as_array().unwrap().len() > 3);
    let text = ok(&words);
    assert!(
        text.contains("resnet20, training step: convolutions by shape"),
        "{text}"
    );
    assert!(
        text.contains("resnet20, inference: convolutions by shape"),
        "{text}"
    );
    assert!(
        !ok(&[
            "bench", "resnet20", "--batch", "1", "--warmup", "0", "--iters", "1"
        ])
        .contains("by shape")
    );
    // Several models with a profile: measured one after the other, a table for each.
    let text = ok(&[&words[..], &["dsnet20"]].concat());
    assert!(
        text.contains("dsnet20, training step: convolutions by shape"),
        "{text}"
    );
}

#[test]
fn bench_sweep_writes_csv_and_a_chart() {
    let png = tmp("sweep.png");
    let csv = ok(&[
        "bench",
        "resnet20",
        "--dataset",
        "cifar10",
        "--sweep",
        "width=0.25,0.5",
        "--batch",
        "2",
        "--warmup",
        "0",
        "--iters",
        "1",
        "--plot",
        png.to_str().unwrap(),
    ]);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("model,series,width,params"), "{csv}");
    assert_eq!(lines.len(), 3, "{csv}");
    let params: Vec<u64> = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect();
    assert!(
        params[1] > 3 * params[0],
        "width 0.5 should have about 4x the parameters: {params:?}"
    );
    assert!(image::open(&png).is_ok());
    assert!(fails(&["bench", "resnet20", "--sweep", "depth=x"]).contains("depth"));
    assert!(fails(&["bench", "resnet20", "--sweep", "batch=0"]).contains("batch"));
    assert!(fails(&["bench", "resnet20", "--sweep", "batch=4", "--iters", "0"]).contains("iters"));
    // The depth is the number the registry names each family by, not the first digits.
    let args = "bench ds2net50 res2net50_26w_4s ds2next50_32x4d --dataset cifar100 --width 0.25 \
        --sweep depth=50 --mode infer --batch 1 --warmup 0 --iters 1";
    let words: Vec<&str> = args.split_whitespace().collect();
    let csv = ok(&words);
    let models: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        models,
        ["ds2net50", "res2net50_26w_4s", "ds2next50_32x4d"],
        "{csv}"
    );
    let e = fails(&["bench", "res2net50_26w_4s", "--sweep", "depth=26,77"]);
    assert!(
        e.contains("res2net26_26w_4s") && e.contains("50, 101"),
        "{e}"
    );
    let e = fails(&["bench", "dense2net121", "--sweep", "depth=169"]);
    assert!(e.contains("dense2net169") && e.contains("121"), "{e}");
}

#[test]
fn init_and_predict_work_for_the_concatenating_and_multi_scale_families() {
    let img = fixtures().join("images/img0.png");
    for model in ["densenet_bc100_k12", "dense2net121", "delugenet146"] {
        let out = tmp(&format!("{model}.safetensors"));
        ok(&["init", model, "--seed", "1", "--out", out.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_str(&ok(&[
            "predict",
            "--weights",
            out.to_str().unwrap(),
            "--format",
            "json",
            img.to_str().unwrap(),
        ]))
        .unwrap();
        let logits = v[0]["logits"].as_array().unwrap();
        let classes = if model == "dense2net121" { 100 } else { 10 };
        assert_eq!(logits.len(), classes, "{model}");
        assert!(
            logits.iter().all(|x| x.as_f64().unwrap().is_finite()),
            "{model}"
        );
    }
}

#[test]
fn a_closed_pipe_ends_quietly() {
    use std::process::{Command, Stdio};
    // The reader goes away before the command writes (as with `densum models | head -0`).
    let mut child = Command::new(env!("CARGO_BIN_EXE_densum"))
        .args(["info", "resnet18", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
