//! Checkpoints: model weights, optimiser state and trainer state in one folder, written
//! atomically (temporary folder, fsync, rename) so a crash or a full disk never leaves a
//! partial checkpoint under a checkpoint's name, and the previous one stays intact.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::schedule::PlateauState;
use crate::error::{DensumError, Result};

/// Everything besides weights and momentum that a resumed run needs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Iterations done.
    pub iteration: usize,
    /// Current epoch.
    pub epoch: usize,
    /// Batches of the current epoch already done.
    pub batch_in_epoch: usize,
    /// Losses of the current logging window.
    pub window: Vec<f64>,
    /// Plateau schedule state.
    pub plateau: PlateauState,
    /// Best validation top-1 error and its iteration.
    pub best: Option<(f64, usize)>,
    /// Validations without improvement (early stopping).
    pub stale: usize,
    /// Byte lengths of metrics.jsonl and metrics.csv when the checkpoint was written: a
    /// resumed run truncates them there, dropping lines of the interrupted tail.
    pub metrics_len: (u64, u64),
}

/// Name of the checkpoint folder of `iteration`.
pub fn name(iteration: usize) -> String {
    format!("iter-{iteration:09}")
}

/// The checkpoints in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            let it = n.strip_prefix("iter-")?.parse().ok()?;
            e.path().join("state.json").exists().then(|| (it, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// The weights `densum eval --run` uses: those of the run's best checkpoint (lowest
/// validation error, as the last checkpoint's state records it) when it is still kept, else
/// those of the last checkpoint.
pub fn best_or_last(run: &Path) -> Result<PathBuf> {
    let all = list(&run.join("checkpoints"));
    let Some((_, last)) = all.last() else {
        return Err(DensumError::Config(format!(
            "{} has no checkpoint",
            run.display()
        )));
    };
    let state_path = last.join("state.json");
    let text = std::fs::read(&state_path).map_err(|e| DensumError::io(&state_path, e))?;
    let state: TrainState = serde_json::from_slice(&text)
        .map_err(|e| DensumError::Config(format!("{}: {e}", state_path.display())))?;
    let pick = state
        .best
        .and_then(|(_, it)| all.iter().find(|(i, _)| *i == it))
        .map_or(last, |(_, p)| p);
    Ok(pick.join("model.safetensors"))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes a checkpoint: `write_files` fills a temporary folder, which is then renamed to
/// `dir/<name(iteration)>`.
pub fn write(
    dir: &Path,
    iteration: usize,
    write_files: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| DensumError::io(dir, e))?;
    let tmp = dir.join(format!(".tmp-{}", name(iteration)));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| DensumError::io(&tmp, e))?;
    let result = write_files(&tmp).and_then(|()| {
        sync_dir(&tmp);
        let target = dir.join(name(iteration));
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| DensumError::io(&target, e))?;
        }
        std::fs::rename(&tmp, &target).map_err(|e| DensumError::io(&target, e))?;
        sync_dir(dir);
        Ok(target)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Deletes all but the last `keep` checkpoints, never the one at `protect` (the best).
pub fn prune(dir: &Path, keep: usize, protect: Option<usize>) {
    let all = list(dir);
    let n = all.len();
    for (i, (it, path)) in all.into_iter().enumerate() {
        if i + keep < n && Some(it) != protect {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}
