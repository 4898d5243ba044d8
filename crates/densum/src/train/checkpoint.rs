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
