//! `densum train`, `densum eval` as a user runs them, including a `kill -9` in the middle of a
//! run and its resumption.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{fails, ok};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("densum-cli-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn image_folder(root: &Path, classes: usize, per_class: usize) {
    for c in 0..classes {
        let dir = root.join(format!("c{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                let n = ((x * 5 + y * 11 + i as u32 * 17) % 50) as u8;
                image::Rgb([(c * 80) as u8 + n, 200 - (c * 60) as u8, n])
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

fn losses(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {} {}", v["kind"], v["iteration"], v["loss"])
        })
        .collect()
}

const COMMON: &[&str] = &[
    "train",
    "--model",
    "resnet20",
    "--dataset",
    "cifar10",
    "--width",
    "0.5",
    "--num-classes",
    "3",
    "--batch",
    "8",
    "--epochs",
    "4",
    "--log-every",
    "1",
    "--checkpoint-every",
    "2",
    "--keep-last",
    "3",
    "--val-split",
    "6",
    "--seed",
    "11",
    "--quiet",
    "--schedule",
    "cosine",
];

#[test]
fn kill_9_then_resume_gives_the_uninterrupted_curve() {
    let data = tmp("data");
    image_folder(&data, 3, 18);
    let d = data.to_str().unwrap();
    let full = tmp("full").join("run");
    let mut args = COMMON.to_vec();
    args.extend(["--data", d, "--run-dir", full.to_str().unwrap()]);
    ok(&args);

    let killed = tmp("killed").join("run");
    let mut args = COMMON.to_vec();
    args.extend(["--data", d, "--run-dir", killed.to_str().unwrap()]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_densum"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it between checkpoints, once the second one exists.
    let deadline = Instant::now() + Duration::from_secs(300);
    let ckpt = killed
        .join("checkpoints")
        .join("iter-000000004")
        .join("state.json");
    while !ckpt.exists() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !killed.join("summary.json").exists(),
        "the run finished before the kill"
    );

    ok(&["train", "--resume", killed.to_str().unwrap(), "--quiet"]);
    assert_eq!(losses(&full), losses(&killed));

    // eval on the run: per-class accuracy for the 3 classes.
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--run",
        full.to_str().unwrap(),
        "--split",
        "train",
        "--json",
    ]))
    .unwrap();
    assert_eq!(v["samples"], 54);
    let per_class = v["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 3);
    // The per-class counts add up to the samples and to the reported top-1 error; with 3
    // classes the true class is always among the top 5.
    let count = |key: &str| {
        per_class
            .iter()
            .map(|c| c[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(count("total"), 54);
    let top1 = 100.0 * (1.0 - count("correct") as f64 / 54.0);
    assert!(
        (v["top1_error"].as_f64().unwrap() - top1).abs() < 1e-9,
        "{v}: top-1 error against {top1} from the per-class counts"
    );
    assert_eq!(v["top5_error"].as_f64().unwrap(), 0.0);

    // eval on the images the run held out: its best checkpoint's validation error again.
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--run",
        full.to_str().unwrap(),
        "--split",
        "val",
        "--json",
    ]))
    .unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(full.join("summary.json")).unwrap()).unwrap();
    assert_eq!(v["samples"], 6);
    let best = summary["best_top1_error"][0].as_f64().unwrap();
    assert!(
        (v["top1_error"].as_f64().unwrap() - best).abs() < 1e-6,
        "{v} vs best {best}"
    );

    // Curves of both runs on one figure.
    let png = tmp("plot").join("curves.png");
    ok(&[
        "plot",
        full.to_str().unwrap(),
        killed.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (1400, 560));
    assert!(
        fails(&["plot", "/no/such/run", "--out", png.to_str().unwrap()]).contains("/no/such/run")
    );

    // Resuming as another model is refused.
    let e = fails(&[
        "train",
        "--resume",
        killed.to_str().unwrap(),
        "--model",
        "dsnet20",
    ]);
    assert!(e.contains("resnet20"), "{e}");
}

#[test]
fn bad_train_input_fails_before_any_work() {
    let data = tmp("bad-data");
    image_folder(&data, 3, 2);
    let d = data.to_str().unwrap();
    let run = tmp("bad-run").join("r");
    let r = run.to_str().unwrap();
    assert!(
        fails(&[
            "train",
            "--recipe",
            "dsnet-cifarx",
            "--model",
            "resnet20",
            "--data",
            d
        ])
        .contains("dsnet-cifar")
    );
    assert!(
        fails(&[
            "train",
            "--model",
            "resnet20",
            "--data",
            "/no/such/data",
            "--run-dir",
            r
        ])
        .contains("/no/such/data")
    );
    assert!(
        fails(&[
            "train",
            "--model",
            "resnet20",
            "--dataset",
            "cifar10",
            "--data",
            d,
            "--run-dir",
            r
        ])
        .contains("3 classes")
    );
    let cfg = tmp("cfg").join("c.toml");
    std::fs::write(&cfg, "model = \"resnet20\"\nbatchsize = 3\n").unwrap();
    assert!(
        fails(&["train", "--config", cfg.to_str().unwrap(), "--data", d]).contains("batchsize")
    );
    // Non-finite or negative optimiser numbers are refused by name.
    for (flag, key) in [
        ("--weight-decay=NaN", "optimizer.weight_decay"),
        ("--grad-clip=-1", "optimizer.grad_clip"),
        ("--grad-clip=NaN", "optimizer.grad_clip"),
        ("--lr=inf", "optimizer.lr"),
        ("--momentum=NaN", "optimizer.momentum"),
        ("--label-smoothing=-0.1", "label_smoothing"),
    ] {
        let e = fails(&[
            "train",
            "--model",
            "resnet20",
            "--data",
            d,
            "--run-dir",
            r,
            flag,
        ]);
        assert!(e.contains(key), "{flag}: {e}");
    }
    assert!(!run.exists(), "a failed start left a run directory");
    // An unwritable run directory: a clear error naming it.
    let e = fails(&[
        "train",
        "--model",
        "resnet20",
        "--dataset",
        "cifar10",
        "--num-classes",
        "3",
        "--data",
        d,
        "--run-dir",
        "/proc/densum-run",
        "--iterations",
        "1",
        "--batch",
        "2",
    ]);
    assert!(e.contains("/proc/densum-run"), "{e}");
}

#[test]
fn reproduce_checks_its_input_before_training() {
    let e = fails(&["reproduce", "dsnet-depthh", "--data", "."]);
    assert!(e.contains("dsnet-depth") && e.contains("rgsnet"), "{e}");
    assert!(fails(&["reproduce", "rgsnet", "--data", "/no/such/data"]).contains("/no/such/data"));
    assert!(fails(&["reproduce", "rgsnet", "--data", ".", "--scale", "huge"]).contains("tiny"));
    let e = fails(&["reproduce", "rgsnet", "--data", ".", "--dataset", "svhn"]);
    assert!(e.contains("cifar10") && e.contains("cifar100"), "{e}");
}

#[test]
fn data_commands_run_from_the_densum_binary() {
    let data = tmp("data-cmds");
    image_folder(&data, 3, 4);
    let d = data.to_str().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["data", "info", d, "--val-split", "3", "--json"])).unwrap();
    assert_eq!(v["dataset"]["len"], 12);
    assert_eq!(v["validation part"]["len"], 3);
    let v: serde_json::Value = serde_json::from_str(&ok(&["data", "verify", d, "--json"])).unwrap();
    assert_eq!(
        (v["total"].clone(), v["ok"].clone()),
        (12.into(), 12.into())
    );
    let text = ok(&["data", "bench", d, "--batch-size", "4", "--workers", "1"]);
    assert!(text.contains("12 images (32x32, preset cifar)"), "{text}");
    std::fs::write(data.join("c0").join("bad.png"), b"not a png").unwrap();
    assert!(fails(&["data", "verify", d]).contains("1 of 13 images"));
    assert!(fails(&["data", "download", "mnist", "--to", d]).contains("cifar100"));
}
