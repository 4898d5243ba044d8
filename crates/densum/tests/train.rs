//! Training runs end to end on a small image folder the test writes: run-directory contents,
//! determinism, exact resume after a crash, clear errors before any work.

use std::path::{Path, PathBuf};

use densum::train::{self, RunOptions, TrainConfig, config};

/// Writes `classes` folders of `per_class` 32x32 PNGs whose colour depends on the class, so
/// a network can learn them.
fn image_folder(root: &Path, classes: usize, per_class: usize) {
    for c in 0..classes {
        let dir = root.join(format!("class{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                let noise = ((x * 7 + y * 13 + i as u32 * 31) % 40) as u8;
                let base = [(c * 60) as u8, (255 - c * 60) as u8, ((c * 97) % 256) as u8];
                image::Rgb([
                    base[0].wrapping_add(noise),
                    base[1].wrapping_add(noise),
                    base[2],
                ])
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

/// The backend's random generator is process-wide: runs in parallel test threads would draw
/// from it in turn. Real runs train one model per process; the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("densum-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(data: &Path, run: &Path, extra: toml::Table) -> TrainConfig {
    let mut t = toml::toml! {
        model = "resnet20"
        batch = 16
        epochs = 2
        log_every = 2
        seed = 7
        options = { dataset = "cifar10", width = 0.5, num_classes = 4 }
        data = { val = "16", workers = 2 }
        optimizer = { lr = 0.05 }
        schedule = { kind = "cosine" }
    };
    config::merge(&mut t, extra);
    config::set_paths(&mut t, data, run);
    config::resolve(vec![t]).unwrap()
}

fn train_losses(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {} {}",
                v["kind"], v["iteration"], v["loss"], v["top1_error"]
            )
        })
        .collect()
}

#[test]
fn a_run_writes_its_directory_and_repeats_exactly() {
    let _turn = serial();
    let data = tmp("data1");
    image_folder(&data, 4, 20);
    let run_a = tmp("run-a");
    let cfg = config(&data, &run_a, toml::Table::new());
    let s = train::train(
        &cfg,
        RunOptions {
            resume: false,
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    // 80 images, 16 held out, batches of 16 with drop_last: 4 per epoch.
    assert_eq!(s.iterations, 8);
    for f in [
        "config.toml",
        "metrics.jsonl",
        "metrics.csv",
        "summary.json",
    ] {
        assert!(run_a.join(f).exists(), "{f} missing");
    }
    let ckpts = train::checkpoint::list(&run_a.join("checkpoints"));
    assert!(!ckpts.is_empty());
    let last = &ckpts.last().unwrap().1;
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        assert!(last.join(f).exists(), "{f} missing in checkpoint");
    }
    let csv = std::fs::read_to_string(run_a.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("kind,iteration,epoch,loss,lr,images_per_s,top1_error,top5_error"));
    assert!(csv.lines().any(|l| l.starts_with("val,")), "{csv}");
    // The resolved configuration reloads to the same run.
    let saved = config::resolve(vec![
        config::read_table(&run_a.join("config.toml")).unwrap(),
    ])
    .unwrap();
    assert_eq!(saved, cfg);

    let run_b = tmp("run-b");
    let cfg_b = config(&data, &run_b, toml::Table::new());
    train::train(
        &cfg_b,
        RunOptions {
            resume: false,
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        train_losses(&run_a),
        train_losses(&run_b),
        "same seed, different run"
    );

    // A second run into the same directory is refused, never overwriting results.
    let e = train::train(
        &cfg,
        RunOptions {
            resume: false,
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--resume"), "{e}");
}

#[test]
fn resume_after_a_crash_repeats_the_uninterrupted_run_bit_for_bit() {
    let _turn = serial();
    let data = tmp("data2");
    image_folder(&data, 4, 20);
    let extra = toml::toml! { checkpoint_every = 3 epochs = 3 keep_last = 10 };
    let full = tmp("full");
    train::train(
        &config(&data, &full, extra.clone()),
        RunOptions {
            resume: false,
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();

    let crashed = tmp("crashed");
    let cfg = config(&data, &crashed, extra);
    train::train(
        &cfg,
        RunOptions {
            resume: false,
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    // Simulate a crash just before iteration 7's checkpoint: later checkpoints never existed,
    // the summary was never written, and metrics lines after the checkpoint are a torn tail.
    let ckpt_dir = crashed.join("checkpoints");
    for (it, path) in train::checkpoint::list(&ckpt_dir) {
        if it > 6 {
            std::fs::remove_dir_all(path).unwrap();
        }
    }
    std::fs::remove_file(crashed.join("summary.json")).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(crashed.join("metrics.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"kind\":\"train\",\"iteration\":99,\"loss\":").unwrap();
    drop(f);

    // Resuming with another configuration would mix two experiments: refused, naming the
    // keys, and the checkpoints stay.
    let kept = train::checkpoint::list(&ckpt_dir);
    let mut other = cfg.clone();
    other.optimizer.lr = 0.2;
    other.data.workers = 1; // a thread count changes nothing and is not a difference
    let e = train::train(
        &other,
        RunOptions {
            resume: true,
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("optimizer.lr") && !e.contains("workers"), "{e}");
    assert_eq!(train::checkpoint::list(&ckpt_dir), kept);

    let s = train::train(
        &cfg,
        RunOptions {
            resume: true,
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.iterations, 12);
    assert_eq!(train_losses(&full), train_losses(&crashed));
    let a = std::fs::read(
        full.join("checkpoints")
            .join(train::checkpoint::name(12))
            .join("model.safetensors"),
    )
    .unwrap();
    let b = std::fs::read(
        crashed
            .join("checkpoints")
            .join(train::checkpoint::name(12))
            .join("model.safetensors"),
    )
    .unwrap();
    assert!(a == b, "final weights differ after resume");
}

#[test]
fn bad_configurations_fail_before_any_work() {
    let _turn = serial();
    let data = tmp("data3");
    image_folder(&data, 4, 4);
    let run = tmp("bad");
    // 4 classes on disk, 10 in the model.
    let mut t = toml::toml! { model = "resnet20" options = { dataset = "cifar10" } };
    config::set_paths(&mut t, &data, &run.join("r"));
    let cfg = config::resolve(vec![t]).unwrap();
    let e = train::train(
        &cfg,
        RunOptions {
            resume: false,
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("4 classes") && e.contains("10"), "{e}");
    assert!(
        !run.join("r").exists(),
        "the run directory was created before the error"
    );
    // Unknown model, resume of a run of another model.
    let mut t = toml::toml! { model = "resnet2O" };
    config::set_paths(&mut t, &data, &run.join("r2"));
    let cfg = config::resolve(vec![t]).unwrap();
    let e = train::train(&cfg, RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("resnet20"), "{e}");
}

#[test]
fn a_failing_checkpoint_write_leaves_the_previous_one_intact() {
    let dir = tmp("ckpt-fail");
    let first = train::checkpoint::write(&dir, 4, |tmp| {
        std::fs::write(tmp.join("state.json"), b"{}").map_err(|e| densum::DensumError::io(tmp, e))
    })
    .unwrap();
    // A disk that fills up half-way through the next checkpoint.
    let err = train::checkpoint::write(&dir, 8, |tmp| {
        std::fs::write(tmp.join("model.safetensors"), b"partial").unwrap();
        Err(densum::DensumError::io(
            tmp.join("state.json"),
            std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device"),
        ))
    })
    .unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    let all = train::checkpoint::list(&dir);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].1, first);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "temporary folder left behind: {leftovers:?}"
    );
}

#[test]
fn a_diverging_run_stops_with_a_clear_message_and_keeps_its_checkpoint() {
    let _turn = serial();
    let data = tmp("data4");
    image_folder(&data, 4, 20);
    let run = tmp("diverge");
    // A learning rate so large that the first update overflows the weights.
    let extra = toml::toml! {
        epochs = 1
        checkpoint_every = 1
        optimizer = { lr = 1e38, momentum = 0.0, weight_decay = 0.0 }
        schedule = { kind = "constant" }
    };
    let cfg = config(&data, &run, extra);
    let e = train::train(
        &cfg,
        RunOptions {
            resume: false,
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("the loss became") && e.contains("is intact"),
        "{e}"
    );
    let ckpts = train::checkpoint::list(&run.join("checkpoints"));
    assert_eq!(ckpts.first().map(|c| c.0), Some(1), "{ckpts:?}");
    assert!(ckpts[0].1.join("model.safetensors").exists());
}
