//! Readers of the on-disk formats and the auto-detection behind [`open`].

pub mod cifar;
pub mod folder;
pub mod mat;
pub mod pickle;
pub mod svhn;

use crate::dataset::{Concat, Dataset, Split};
use crate::error::{Error, Result};
use cifar::{CifarKind, Files};
use folder::ImageFolder;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How to open a dataset.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Which split (ignored when the path is itself a single split: a class-folder root, a
    /// flat image folder, or a single batch / `.mat` file).
    pub split: Split,
    /// CIFAR-100: use the 20 coarse labels instead of the 100 fine ones.
    pub coarse_labels: bool,
    /// Flat image folder: the labels file (otherwise looked for next to the folder).
    pub labels_file: Option<PathBuf>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            split: Split::Train,
            coarse_labels: false,
            labels_file: None,
        }
    }
}

/// What a path holds.
enum Layout {
    /// CIFAR batches in a folder, or an archive (`true`); the kind is read from the names.
    Cifar(PathBuf, bool),
    /// One CIFAR batch file.
    CifarFile(PathBuf, CifarKind),
    /// A folder of SVHN `.mat` files.
    SvhnDir(PathBuf),
    /// One SVHN `.mat` file.
    SvhnFile(PathBuf),
    /// A folder with `train/`, `val/`, `test/` subfolders.
    SplitRoot(PathBuf),
    /// A folder of class folders.
    ClassRoot(PathBuf),
    /// A folder of images (labels from a file).
    Flat(PathBuf),
}

/// Archive names of the official downloads, best first (binary reads fastest).
const CIFAR_ARCHIVES: [&str; 4] = [
    "cifar-10-binary.tar.gz",
    "cifar-100-binary.tar.gz",
    "cifar-10-python.tar.gz",
    "cifar-100-python.tar.gz",
];

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn detect(path: &Path) -> Result<Layout> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        let name = file_name(path);
        let lower = name.to_ascii_lowercase();
        if cifar::is_archive_name(&lower) {
            // The kind is known once the member names are read.
            return Ok(Layout::Cifar(path.to_path_buf(), true));
        }
        if lower.ends_with(".mat") {
            return Ok(Layout::SvhnFile(path.to_path_buf()));
        }
        let kind = match lower.as_str() {
            "train.bin" | "test.bin" => CifarKind::C100Binary,
            "train" | "test" => CifarKind::C100Python,
            n if n.ends_with(".bin") => CifarKind::C10Binary,
            n if n.starts_with("data_batch_") || n == "test_batch" => CifarKind::C10Python,
            _ => {
                return Err(Error::format(
                    path.display(),
                    "unrecognised file: expected a CIFAR batch, a .tar.gz archive or an SVHN .mat file",
                ));
            }
        };
        return Ok(Layout::CifarFile(path.to_path_buf(), kind));
    }
    let files = Files::dir(path)?;
    if CifarKind::detect(files.names()).is_some() {
        return Ok(Layout::Cifar(path.to_path_buf(), false));
    }
    let mut subdirs = Vec::new();
    for e in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let e = e.map_err(|e| Error::io(path, e))?;
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with('.') && e.path().is_dir() {
            subdirs.push(n);
        }
    }
    subdirs.sort();
    // An extracted archive: ROOT/cifar-10-batches-bin/...
    for d in &subdirs {
        if d.starts_with("cifar-") {
            let p = path.join(d);
            if CifarKind::detect(Files::dir(&p)?.names()).is_some() {
                return Ok(Layout::Cifar(p, false));
            }
        }
    }
    for a in CIFAR_ARCHIVES {
        if files.names().iter().any(|n| n == a) {
            return Ok(Layout::Cifar(path.join(a), true));
        }
    }
    if files.names().iter().any(|n| n.ends_with("_32x32.mat")) {
        return Ok(Layout::SvhnDir(path.to_path_buf()));
    }
    if subdirs
        .iter()
        .any(|d| Split::ALL.iter().any(|s| s.name() == d))
    {
        return Ok(Layout::SplitRoot(path.to_path_buf()));
    }
    if !subdirs.is_empty() {
        return Ok(Layout::ClassRoot(path.to_path_buf()));
    }
    if files.names().iter().any(|n| folder::is_image_name(n)) {
        return Ok(Layout::Flat(path.to_path_buf()));
    }
    Err(Error::format(
        path.display(),
        "no dataset found: expected CIFAR batches or archives, SVHN *_32x32.mat files, \
         class folders, or a folder of images with a labels file",
    ))
}

/// Finds the labels file of a flat folder `dir` (split name `split`).
fn find_labels_file(dir: &Path, split: &str, opts: &OpenOptions) -> Result<PathBuf> {
    if let Some(l) = &opts.labels_file {
        return Ok(l.clone());
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join("labels.txt"),
        parent.join(format!("{split}_labels.txt")),
        parent.join(format!("{split}.txt")),
        parent.join(format!("LOC_{split}_solution.csv")),
    ];
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or_else(|| {
            Error::format(
                dir.display(),
                format!(
                    "flat image folder needs a labels file (--labels FILE, or one of {})",
                    candidates
                        .iter()
                        .map(|c| c.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
}

fn open_flat(dir: &Path, opts: &OpenOptions) -> Result<ImageFolder> {
    let split = file_name(dir);
    let labels = find_labels_file(dir, &split, opts)?;
    // Use the training folder's classes when there is one, so indices agree with training.
    let train = dir.parent().map(|p| p.join("train"));
    let classes = match train {
        Some(t) if t.is_dir() && t != dir => Some(ImageFolder::open(&t)?.class_names().to_vec()),
        _ => None,
    };
    ImageFolder::open_flat(dir, &labels, classes)
}

fn open_folder(dir: &Path, opts: &OpenOptions) -> Result<Box<dyn Dataset>> {
    let has_subdirs = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .any(|e| !e.file_name().to_string_lossy().starts_with('.') && e.path().is_dir());
    Ok(if has_subdirs {
        Box::new(ImageFolder::open(dir)?)
    } else {
        Box::new(open_flat(dir, opts)?)
    })
}

/// Opens one split of the dataset at `path`, detecting the format.
///
/// `path` may be: a CIFAR folder (extracted archive) or its parent, an official CIFAR
/// `.tar.gz` (read in place) or a folder holding one, a single CIFAR batch file, an SVHN
/// folder or `.mat` file, a `ROOT` with `train/`/`val/`/`test/` subfolders of class folders
/// (or a flat `val/` with a labels file), or a class-folder root itself.
pub fn open(path: impl AsRef<Path>, split: Split) -> Result<Box<dyn Dataset>> {
    open_with(
        path,
        &OpenOptions {
            split,
            ..Default::default()
        },
    )
}

/// [`open`] with all options.
pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Box<dyn Dataset>> {
    let path = path.as_ref();
    let split = opts.split;
    Ok(match detect(path)? {
        Layout::Cifar(p, archive) => {
            let files = if archive {
                Files::archive(&p, &cifar::wanted_member)?
            } else {
                Files::dir(&p)?
            };
            let kind = CifarKind::detect(files.names()).ok_or_else(|| {
                Error::format(
                    p.display(),
                    "archive has no CIFAR members (data_batch_N, test_batch, train, test)",
                )
            })?;
            Box::new(cifar::load(&files, kind, split, opts.coarse_labels)?)
        }
        Layout::CifarFile(p, kind) => Box::new(cifar::load_single(&p, kind, opts.coarse_labels)?),
        Layout::SvhnFile(p) => Box::new(svhn::load(&p)?),
        Layout::SvhnDir(d) => {
            let name = svhn::split_file(split).ok_or_else(|| Error::MissingSplit {
                location: d.display().to_string(),
                split: split.to_string(),
                msg: "SVHN has train, test and extra splits".into(),
            })?;
            let p = d.join(name);
            if !p.is_file() {
                return Err(Error::MissingSplit {
                    location: d.display().to_string(),
                    split: split.to_string(),
                    msg: format!("file {name} not found"),
                });
            }
            Box::new(svhn::load(&p)?)
        }
        Layout::SplitRoot(root) => {
            let d = root.join(split.name());
            if !d.is_dir() {
                return Err(Error::MissingSplit {
                    location: root.display().to_string(),
                    split: split.to_string(),
                    msg: format!("folder {} not found", d.display()),
                });
            }
            open_folder(&d, opts)?
        }
        Layout::ClassRoot(d) => Box::new(ImageFolder::open(&d)?),
        Layout::Flat(d) => Box::new(open_flat(&d, opts)?),
    })
}

/// Opens several splits as one dataset (e.g. SVHN `train+extra`).
pub fn open_splits(
    path: impl AsRef<Path>,
    splits: &[Split],
    opts: &OpenOptions,
) -> Result<Arc<dyn Dataset>> {
    let mut parts: Vec<Arc<dyn Dataset>> = Vec::new();
    for &s in splits {
        let o = OpenOptions {
            split: s,
            ..opts.clone()
        };
        parts.push(Arc::from(open_with(path.as_ref(), &o)?));
    }
    if parts.len() == 1 {
        return Ok(parts.pop().unwrap());
    }
    Ok(Arc::new(Concat::new(parts)?))
}

/// Splits present at `path`, without loading them. Empty when the path is itself a single
/// split (a class-folder root, a flat folder, a single file).
pub fn available_splits(path: impl AsRef<Path>) -> Result<Vec<Split>> {
    let path = path.as_ref();
    Ok(match detect(path)? {
        Layout::Cifar(p, archive) => {
            let files = if archive {
                Files::archive(&p, &|_| false)?
            } else {
                Files::dir(&p)?
            };
            match CifarKind::detect(files.names()) {
                Some(kind) => [Split::Train, Split::Test]
                    .into_iter()
                    .filter(|&s| {
                        kind.split_files(s)
                            .is_some_and(|f| f.iter().all(|n| files.names().contains(n)))
                    })
                    .collect(),
                None => vec![],
            }
        }
        Layout::SvhnDir(d) => [Split::Train, Split::Test, Split::Extra]
            .into_iter()
            .filter(|&s| svhn::split_file(s).is_some_and(|f| d.join(f).is_file()))
            .collect(),
        Layout::SplitRoot(root) => Split::ALL
            .into_iter()
            .filter(|s| root.join(s.name()).is_dir())
            .collect(),
        _ => vec![],
    })
}
