//! Training: the papers' recipes, crash-safe checkpoints, exact resume, metrics files.
//!
//! A run directory holds `config.toml` (the resolved configuration), `metrics.jsonl` and
//! `metrics.csv` (one line per logging step and per validation), `checkpoints/iter-*/`
//! (weights, momentum, trainer state) and `summary.json`. Every random choice is a function
//! of the seed and the iteration (the device is reseeded per step; the data pipeline draws
//! from seed, epoch and sample index), so a resumed run repeats an uninterrupted one exactly.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod parallel;
pub mod plot;
pub mod reproduce;
pub mod schedule;
pub mod sgd;

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::Device;
use densum_data::LoaderConfig;
use serde::Serialize;
use serde_json::json;

pub use checkpoint::TrainState;
pub use config::TrainConfig;
pub use eval::{EvalResult, evaluate};

use crate::device::{self, DeviceSpec};
use crate::error::{DensumError, Result};
use crate::net::Net;
use crate::weights;
use crate::zoo::{self, ModelSpec};
use parallel::{AllReduce, Worker};
use schedule::Schedule;
use sgd::Sgd;

/// What a finished run reports (also written to `summary.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Model name.
    pub model: String,
    /// Run directory.
    pub run_dir: PathBuf,
    /// Iterations done.
    pub iterations: usize,
    /// Epochs started.
    pub epochs: usize,
    /// Best validation top-1 error and its iteration.
    pub best_top1_error: Option<(f64, usize)>,
    /// The last validation.
    pub last_validation: Option<EvalResult>,
    /// Why the run ended.
    pub stopped: String,
    /// Wall-clock seconds of this process's part of the run.
    pub seconds: f64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DensumError + '_ {
    move |e| DensumError::io(path, e)
}

/// Mixes the seed with a counter (splitmix64), for per-iteration device seeds.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Metrics {
    jsonl: std::fs::File,
    csv: std::fs::File,
    jsonl_path: PathBuf,
    csv_path: PathBuf,
}

impl Metrics {
    fn open(dir: &Path, truncate_to: Option<(u64, u64)>) -> Result<Self> {
        let jsonl_path = dir.join("metrics.jsonl");
        let csv_path = dir.join("metrics.csv");
        if let Some((j, c)) = truncate_to {
            for (p, len) in [(&jsonl_path, j), (&csv_path, c)] {
                let f = OpenOptions::new().write(true).open(p).map_err(io(p))?;
                f.set_len(len).map_err(io(p))?;
            }
        }
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(io(p))
        };
        let mut m = Metrics {
            jsonl: open(&jsonl_path)?,
            csv: open(&csv_path)?,
            jsonl_path,
            csv_path,
        };
        if m.csv.metadata().map(|x| x.len()).unwrap_or(0) == 0 {
            writeln!(
                m.csv,
                "kind,iteration,epoch,loss,lr,images_per_s,top1_error,top5_error"
            )
            .map_err(io(&m.csv_path))?;
        }
        Ok(m)
    }

    fn lengths(&self) -> (u64, u64) {
        let len = |f: &std::fs::File| f.metadata().map(|m| m.len()).unwrap_or(0);
        (len(&self.jsonl), len(&self.csv))
    }

    fn write(&mut self, row: serde_json::Value) -> Result<()> {
        writeln!(self.jsonl, "{row}").map_err(io(&self.jsonl_path))?;
        let f = |k: &str| match &row[k] {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        writeln!(
            self.csv,
            "{},{},{},{},{},{},{},{}",
            f("kind"),
            f("iteration"),
            f("epoch"),
            f("loss"),
            f("lr"),
            f("images_per_s"),
            f("top1_error"),
            f("top5_error")
        )
        .map_err(io(&self.csv_path))?;
        Ok(())
    }

    fn sync(&self) {
        let _ = self.jsonl.sync_data();
        let _ = self.csv.sync_data();
    }
}

fn save_checkpoint(
    run_dir: &Path,
    spec: &ModelSpec,
    net: &Net,
    sgd: &Sgd,
    state: &TrainState,
    keep_last: usize,
) -> Result<()> {
    let dir = run_dir.join("checkpoints");
    checkpoint::write(&dir, state.iteration, |tmp| {
        weights::save(
            net,
            &spec.name,
            &spec.options,
            &tmp.join("model.safetensors"),
        )?;
        let momentum = sgd.state();
        let bytes: Vec<(String, Vec<u8>, usize)> = momentum
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    v.len(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(k, b, n)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*n], b)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| DensumError::Config(format!("optimizer state `{k}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let opt_path = tmp.join("optimizer.safetensors");
        let data = safetensors::serialize(views, None)
            .map_err(|e| DensumError::weights(&opt_path, e.to_string()))?;
        weights::write_atomic(&opt_path, &data)?;
        let state_path = tmp.join("state.json");
        let text = serde_json::to_vec_pretty(state).expect("state serialises");
        weights::write_atomic(&state_path, &text)
    })?;
    checkpoint::prune(&dir, keep_last, state.best.map(|(_, it)| it));
    Ok(())
}

/// Prints progress: a bar with ETA on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(total: usize, done: usize, enabled: bool) -> Self {
        let bar = (enabled && std::io::stdout().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} it  {elapsed_precise} ETA {eta_precise}  {msg}",
                )
                .expect("valid template"),
            );
            bar.set_position(done as u64);
            bar
        });
        Progress { bar }
    }

    fn line(&self, text: &str, quiet: bool) {
        match &self.bar {
            Some(bar) => bar.set_message(text.to_string()),
            None if !quiet => println!("{text}"),
            None => {}
        }
    }

    fn tick(&self, pos: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(pos as u64);
        }
    }
}

/// Options of [`train`] that are not part of the run's configuration.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue from the run directory's last checkpoint.
    pub resume: bool,
    /// No progress output.
    pub quiet: bool,
    /// The devices to train on (empty: the CPU). More than one trains data-parallel
    /// ([`parallel`]): the configured batch is the global batch, split across them.
    pub devices: Vec<DeviceSpec>,
}

/// Trains `cfg` (or resumes it), writing everything to its run directory.
pub fn train(cfg: &TrainConfig, opts: RunOptions) -> Result<Summary> {
    let started = Instant::now();
    cfg.check()?;
    let specs = if opts.devices.is_empty() {
        vec![DeviceSpec::default()]
    } else {
        opts.devices.clone()
    };
    device::check_list(&specs)?;
    let plains = specs
        .iter()
        .map(DeviceSpec::to_device)
        .collect::<Result<Vec<_>>>()?;
    let reduce = match specs.len() {
        1 => None,
        n if cfg.batch < n => {
            return Err(DensumError::Config(format!(
                "batch {} cannot be split over {n} devices; the batch is the global batch, give at least one image per device",
                cfg.batch
            )));
        }
        _ => Some(AllReduce::new(&specs, plains.clone())?),
    };
    let spec = zoo::resolve(&cfg.model, &cfg.options)?;
    let run_dir = cfg.run_dir();
    let ckpt_dir = run_dir.join("checkpoints");
    let last = checkpoint::list(&ckpt_dir).pop();
    if !opts.resume && last.is_some() {
        return Err(DensumError::Config(format!(
            "{} already holds checkpoints of a run; resume it with --resume {} or choose another --run-dir",
            run_dir.display(),
            run_dir.display()
        )));
    }
    let splits = data::open_splits(&cfg.data, &spec, cfg.seed)?;
    let train_loader = data::loader(
        splits.train.clone(),
        &cfg.data.augment,
        cfg.data.cutout,
        &spec,
        LoaderConfig {
            batch_size: cfg.batch,
            shuffle: true,
            drop_last: cfg.drop_last,
            seed: cfg.seed,
            workers: cfg.data.workers,
            cache: cfg.data.cache,
            skip_corrupt: cfg.data.skip_corrupt,
            ..Default::default()
        },
    )?;
    let val_loader = match &splits.val {
        Some(v) => Some(data::loader(
            v.clone(),
            &cfg.data.eval_augment,
            None,
            &spec,
            LoaderConfig {
                batch_size: cfg.batch.max(100),
                shuffle: false,
                drop_last: false,
                seed: cfg.seed,
                workers: cfg.data.workers,
                cache: cfg.data.cache,
                skip_corrupt: cfg.data.skip_corrupt,
                ..Default::default()
            },
        )?),
        None => None,
    };
    let per_epoch = train_loader.batches_per_epoch();
    if per_epoch == 0 {
        return Err(DensumError::Config(format!(
            "{} samples make no batch of {} (drop_last is on)",
            splits.train.len(),
            cfg.batch
        )));
    }
    let total = cfg.iterations.unwrap_or(cfg.epochs * per_epoch);
    let schedule = Schedule::new(&cfg.schedule, cfg.base_lr(), total, per_epoch);

    std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
    let plain = plains[0].clone();
    let device = plain.clone().autodiff();
    plain.seed(cfg.seed);
    let mut net = Net::new(&spec.config, &device).train();
    let mut sgd = Sgd::new(cfg.optimizer);
    let mut state = TrainState::default();
    let config_text =
        toml::to_string_pretty(cfg).map_err(|e| DensumError::Config(e.to_string()))?;
    let metrics = match (&last, opts.resume) {
        (Some((_, path)), true) => {
            // A resumed run continues the recorded experiment or none.
            config::check_recorded(&run_dir, cfg)?;
            // Loaded tensors are plain values: `train()` marks them trainable again.
            net = weights::load(net, &spec.name, &path.join("model.safetensors"), &device)?.train();
            let (_, momentum) = weights::read_tensors(&path.join("optimizer.safetensors"))?;
            sgd.load_state(&momentum, &plain);
            let state_path = path.join("state.json");
            let text = std::fs::read(&state_path).map_err(io(&state_path))?;
            state = serde_json::from_slice(&text)
                .map_err(|e| DensumError::Config(format!("{}: {e}", state_path.display())))?;
            Metrics::open(&run_dir, Some(state.metrics_len))?
        }
        (None, true) => {
            return Err(DensumError::Config(format!(
                "{} has no checkpoint to resume from",
                run_dir.display()
            )));
        }
        _ => {
            weights::write_atomic(&run_dir.join("config.toml"), config_text.as_bytes())?;
            Metrics::open(&run_dir, None)?
        }
    };

    // Replicas of the model and optimiser on the other devices, equal to the first.
    let mut replicas: Vec<Worker<Net>> = plains[1..]
        .iter()
        .map(|d| {
            let device = d.clone().autodiff();
            Worker {
                model: net.clone().fork(&device),
                sgd: sgd.fork(d),
                device,
            }
        })
        .collect();
    let loss_fn = CrossEntropyLossConfig::new()
        .with_smoothing((cfg.label_smoothing > 0.0).then_some(cfg.label_smoothing as f32))
        .init(&device);
    let mut session = Session {
        cfg,
        spec: &spec,
        run_dir: &run_dir,
        plain: &plain,
        schedule: &schedule,
        val_loader: val_loader.as_ref(),
        progress: Progress::new(total, state.iteration, !opts.quiet),
        quiet: opts.quiet,
        metrics,
        sgd,
        last_val: None,
    };
    let mut stopped = String::from("finished");
    let mut window_start = Instant::now();
    let mut window_images = 0usize;

    'run: while state.iteration < total {
        let epoch = state.epoch;
        let mut batches = train_loader.epoch_from(epoch as u64, state.batch_in_epoch);
        while state.iteration < total {
            let Some(batch) = batches.next() else { break };
            let mut batch = batch.map_err(data::batch_err)?;
            let lr = schedule.lr(state.iteration, &state.plateau);
            let seed = mix(cfg.seed, state.iteration as u64);
            plain.seed(seed);
            // The loss still to backpropagate (one device), or none: the data-parallel step
            // has updated every replica already.
            let (value, stepped, pending): (f32, Net, Option<burn::Tensor<1>>) = match &reduce {
                None => {
                    let (x, y) = data::tensors(&mut batch, &device);
                    let loss = loss_fn.forward(net.forward(x), y);
                    (loss.clone().into_scalar(), net, Some(loss))
                }
                Some(reduce) => {
                    for (rank, d) in plains.iter().enumerate().skip(1) {
                        d.seed(mix(seed, rank as u64));
                    }
                    let shards = parallel::shard(&batch, plains.len())?;
                    let lead = Worker {
                        device: device.clone(),
                        model: net,
                        sgd: std::mem::replace(&mut session.sgd, Sgd::new(cfg.optimizer)),
                    };
                    let mut all = vec![lead];
                    all.append(&mut replicas);
                    let loss_fn = loss_fn.clone();
                    let value = parallel::step(
                        &mut all,
                        shards,
                        move |m: &Net, x, y| loss_fn.forward(m.forward(x), y),
                        reduce,
                        lr,
                    )?;
                    let mut all = all.into_iter();
                    let lead = all.next().expect("the first worker comes back");
                    session.sgd = lead.sgd;
                    replicas = all.collect();
                    (value, lead.model, None)
                }
            };
            if !value.is_finite() {
                session.metrics.sync();
                return Err(DensumError::Stopped(format!(
                    "the loss became {value} at iteration {}; the last checkpoint in {} is intact (lower the learning rate or clip gradients)",
                    state.iteration,
                    ckpt_dir.display()
                )));
            }
            net = match pending {
                Some(loss) => session.sgd.step(stepped, &loss.backward(), lr),
                None => stepped,
            };
            state.iteration += 1;
            state.batch_in_epoch += 1;
            state.window.push(value as f64);
            window_images += batch.labels.len();
            session.progress.tick(state.iteration);
            if state.iteration % cfg.log_every == 0 || state.iteration == total {
                let mean = state.window.iter().sum::<f64>() / state.window.len() as f64;
                let ips = window_images as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
                session.metrics.write(json!({
                    "kind": "train", "iteration": state.iteration, "epoch": epoch,
                    "loss": mean, "lr": lr, "images_per_s": ips,
                }))?;
                session.say(&format!(
                    "iter {} epoch {epoch} loss {mean:.4} lr {lr:.4} {ips:.0} img/s",
                    state.iteration
                ));
                state.window.clear();
                window_start = Instant::now();
                window_images = 0;
            }
            if cfg.val_every > 0
                && state.iteration % cfg.val_every == 0
                && session.validate(&net, &mut state, epoch)?
            {
                stopped = "early stopping".into();
                break 'run;
            }
            if cfg.checkpoint_every > 0 && state.iteration % cfg.checkpoint_every == 0 {
                session.checkpoint(&net, &mut state)?;
            }
        }
        if state.iteration >= total && state.batch_in_epoch < per_epoch {
            break; // the run ended inside this epoch
        }
        state.epoch += 1;
        state.batch_in_epoch = 0;
        if cfg.val_every == 0 && session.validate(&net, &mut state, epoch)? {
            stopped = "early stopping".into();
            break;
        }
        session.checkpoint(&net, &mut state)?;
    }
    if checkpoint::list(&ckpt_dir).last().map(|(it, _)| *it) != Some(state.iteration) {
        session.checkpoint(&net, &mut state)?;
    }
    if let Some(bar) = &session.progress.bar {
        bar.finish();
    }
    let summary = Summary {
        model: spec.name.clone(),
        run_dir: run_dir.clone(),
        iterations: state.iteration,
        epochs: state.epoch,
        best_top1_error: state.best,
        last_validation: session.last_val,
        stopped,
        seconds: started.elapsed().as_secs_f64(),
    };
    let text = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    weights::write_atomic(&run_dir.join("summary.json"), &text)?;
    Ok(summary)
}

/// What the loop needs besides the network and its state.
struct Session<'a> {
    cfg: &'a TrainConfig,
    spec: &'a ModelSpec,
    run_dir: &'a Path,
    plain: &'a Device,
    schedule: &'a Schedule,
    val_loader: Option<&'a densum_data::Loader>,
    progress: Progress,
    quiet: bool,
    metrics: Metrics,
    sgd: Sgd,
    last_val: Option<EvalResult>,
}

impl Session<'_> {
    fn say(&self, text: &str) {
        self.progress.line(text, self.quiet);
    }

    /// Writes a checkpoint recording how far the metrics files are written.
    fn checkpoint(&mut self, net: &Net, state: &mut TrainState) -> Result<()> {
        self.metrics.sync();
        state.metrics_len = self.metrics.lengths();
        save_checkpoint(
            self.run_dir,
            self.spec,
            net,
            &self.sgd,
            state,
            self.cfg.keep_last,
        )
    }

    /// Validates (when there is validation data), updates best / plateau / early-stopping
    /// state; returns whether the run should stop early (after a final checkpoint).
    fn validate(&mut self, net: &Net, state: &mut TrainState, epoch: usize) -> Result<bool> {
        let Some(loader) = self.val_loader else {
            return Ok(false);
        };
        let r = evaluate(&net.valid(), loader, self.plain)?;
        self.schedule.observe(&mut state.plateau, r.top1_error);
        match state.best {
            Some((b, _)) if r.top1_error >= b => state.stale += 1,
            _ => {
                state.best = Some((r.top1_error, state.iteration));
                state.stale = 0;
            }
        }
        self.metrics.write(json!({
            "kind": "val", "iteration": state.iteration, "epoch": epoch,
            "loss": r.loss, "top1_error": r.top1_error, "top5_error": r.top5_error,
        }))?;
        self.say(&format!(
            "validation at iter {}: loss {:.4}, top-1 error {:.2}%, top-5 error {:.2}%",
            state.iteration, r.loss, r.top1_error, r.top5_error
        ));
        self.last_val = Some(r);
        let stop = self.cfg.early_stopping.is_some_and(|p| state.stale >= p);
        if stop {
            self.checkpoint(net, state)?;
        }
        Ok(stop)
    }
}
