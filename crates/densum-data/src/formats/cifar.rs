//! CIFAR-10 and CIFAR-100, binary and Python versions, from folders or `.tar.gz` archives.

use super::pickle;
use crate::dataset::{Format, MemoryDataset, Split};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Side of a CIFAR image.
const SIDE: usize = 32;
/// Bytes of one CHW image.
const PIXELS: usize = SIDE * SIDE * 3;

/// The four official layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarKind {
    /// `cifar-10-batches-bin`.
    C10Binary,
    /// `cifar-10-batches-py`.
    C10Python,
    /// `cifar-100-binary`.
    C100Binary,
    /// `cifar-100-python`.
    C100Python,
}

impl CifarKind {
    /// The dataset format.
    pub fn format(self) -> Format {
        match self {
            CifarKind::C10Binary => Format::Cifar10Binary,
            CifarKind::C10Python => Format::Cifar10Python,
            CifarKind::C100Binary => Format::Cifar100Binary,
            CifarKind::C100Python => Format::Cifar100Python,
        }
    }

    fn is_100(self) -> bool {
        matches!(self, CifarKind::C100Binary | CifarKind::C100Python)
    }

    /// Recognises the layout from the file names present.
    pub fn detect(names: &[String]) -> Option<CifarKind> {
        let has = |n: &str| names.iter().any(|x| x == n);
        if has("data_batch_1.bin") || has("test_batch.bin") {
            Some(CifarKind::C10Binary)
        } else if has("data_batch_1") || has("test_batch") {
            Some(CifarKind::C10Python)
        } else if has("train.bin") || has("test.bin") {
            Some(CifarKind::C100Binary)
        } else if (has("train") || has("test")) && has("meta") {
            Some(CifarKind::C100Python)
        } else {
            None
        }
    }

    /// Files holding `split`, in order; `None` if this layout has no such split.
    pub fn split_files(self, split: Split) -> Option<Vec<String>> {
        let v = match (self, split) {
            (CifarKind::C10Binary, Split::Train) => {
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
            }
            (CifarKind::C10Python, Split::Train) => {
                (1..=5).map(|i| format!("data_batch_{i}")).collect()
            }
            (CifarKind::C10Binary, Split::Test) => vec!["test_batch.bin".into()],
            (CifarKind::C10Python, Split::Test) => vec!["test_batch".into()],
            (CifarKind::C100Binary, Split::Train) => vec!["train.bin".into()],
            (CifarKind::C100Binary, Split::Test) => vec!["test.bin".into()],
            (CifarKind::C100Python, Split::Train) => vec!["train".into()],
            (CifarKind::C100Python, Split::Test) => vec!["test".into()],
            _ => return None,
        };
        Some(v)
    }

    fn meta_file(self, coarse: bool) -> &'static str {
        match self {
            CifarKind::C10Binary => "batches.meta.txt",
            CifarKind::C10Python => "batches.meta",
            CifarKind::C100Binary if coarse => "coarse_label_names.txt",
            CifarKind::C100Binary => "fine_label_names.txt",
            CifarKind::C100Python => "meta",
        }
    }

    fn num_classes(self, coarse: bool) -> usize {
        label_count(self.is_100(), coarse)
    }
}

/// Number of classes: CIFAR-10 10; CIFAR-100 100 fine or 20 coarse.
fn label_count(cifar100: bool, coarse: bool) -> usize {
    match (cifar100, coarse) {
        (false, _) => 10,
        (true, false) => 100,
        (true, true) => 20,
    }
}

/// CIFAR-10's class names, used when `batches.meta(.txt)` is absent.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Bytes of a file with the name to show in messages.
pub struct Blob {
    /// `path` or `archive (member m)`.
    pub location: String,
    /// The content.
    pub bytes: Vec<u8>,
}

/// Where CIFAR files come from: a folder, or the members of an archive.
pub enum Files {
    /// Plain files of a folder, by name.
    Dir {
        /// The folder.
        dir: PathBuf,
        /// File names present.
        names: Vec<String>,
    },
    /// Members of a `.tar.gz`, by base name; only the ones asked for are kept in memory.
    Archive {
        /// The archive.
        path: PathBuf,
        /// All member base names.
        names: Vec<String>,
        /// Loaded members: base name -> (member path, bytes).
        members: BTreeMap<String, (String, Vec<u8>)>,
    },
}

/// True for names that are CIFAR archives of any of the four layouts.
pub fn is_archive_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".tar.gz") || n.ends_with(".tgz") || n.ends_with(".tar")
}

impl Files {
    /// Lists the plain files of `dir`.
    pub fn dir(dir: &Path) -> Result<Files> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let e = e.map_err(|e| Error::io(dir, e))?;
            if e.path().is_file() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(Files::Dir {
            dir: dir.to_path_buf(),
            names,
        })
    }

    /// Reads the archive at `path` (gzip-compressed or plain tar), keeping the members whose
    /// base name satisfies `keep`. Errors name the archive and the member being read.
    pub fn archive(path: &Path, keep: &dyn Fn(&str) -> bool) -> Result<Files> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let reader = std::io::BufReader::new(file);
        let lower = path.to_string_lossy().to_ascii_lowercase();
        let inner: Box<dyn Read> = if lower.ends_with(".tar") {
            Box::new(reader)
        } else {
            Box::new(flate2::read::GzDecoder::new(reader))
        };
        let mut ar = tar::Archive::new(inner);
        let mut names = Vec::new();
        let mut members = BTreeMap::new();
        let loc = |member: &str, e: std::io::Error| {
            if member.is_empty() {
                Error::format(path.display(), format!("corrupt archive: {e}"))
            } else {
                Error::format(
                    path.display(),
                    format!("corrupt archive after member {member}: {e}"),
                )
            }
        };
        let mut last = String::new();
        let entries = ar.entries().map_err(|e| loc(&last, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| loc(&last, e))?;
            let member = entry
                .path()
                .map_err(|e| loc(&last, e))?
                .to_string_lossy()
                .into_owned();
            last = member.clone();
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let base = member.rsplit('/').next().unwrap_or(&member).to_string();
            if keep(&base) {
                let mut bytes = Vec::new();
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| Error::format(path.display(), format!("member {member}: {e}")))?;
                members.insert(base.clone(), (member.clone(), bytes));
            }
            names.push(base);
        }
        Ok(Files::Archive {
            path: path.to_path_buf(),
            names,
            members,
        })
    }

    /// Base names present.
    pub fn names(&self) -> &[String] {
        match self {
            Files::Dir { names, .. } | Files::Archive { names, .. } => names,
        }
    }

    /// Display name of the folder or archive.
    pub fn root(&self) -> String {
        match self {
            Files::Dir { dir, .. } => dir.display().to_string(),
            Files::Archive { path, .. } => path.display().to_string(),
        }
    }

    /// Reads `name`; `Ok(None)` if it is not present.
    pub fn read(&self, name: &str) -> Result<Option<Blob>> {
        match self {
            Files::Dir { dir, names } => {
                if !names.iter().any(|n| n == name) {
                    return Ok(None);
                }
                let p = dir.join(name);
                let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
                Ok(Some(Blob {
                    location: p.display().to_string(),
                    bytes,
                }))
            }
            Files::Archive { path, members, .. } => {
                Ok(members.get(name).map(|(member, bytes)| Blob {
                    location: format!("{} (member {member})", path.display()),
                    bytes: bytes.clone(),
                }))
            }
        }
    }

    fn require(&self, name: &str, split: Split) -> Result<Blob> {
        self.read(name)?.ok_or_else(|| Error::MissingSplit {
            location: self.root(),
            split: split.to_string(),
            msg: match self {
                Files::Dir { .. } => format!("file {name} not found"),
                Files::Archive { .. } => format!("archive has no member {name}"),
            },
        })
    }
}

/// Member names any CIFAR layout may need (so archive reading keeps only those).
pub fn wanted_member(base: &str) -> bool {
    matches!(
        base,
        "batches.meta"
            | "batches.meta.txt"
            | "meta"
            | "fine_label_names.txt"
            | "coarse_label_names.txt"
            | "train"
            | "test"
            | "train.bin"
            | "test.bin"
            | "test_batch"
            | "test_batch.bin"
    ) || base.strip_prefix("data_batch_").is_some_and(|r| {
        matches!(
            r,
            "1" | "2" | "3" | "4" | "5" | "1.bin" | "2.bin" | "3.bin" | "4.bin" | "5.bin"
        )
    })
}

/// Parses a binary batch, appending HWC pixels and labels.
pub fn parse_binary(
    blob: &Blob,
    cifar100: bool,
    coarse: bool,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u16>,
) -> Result<()> {
    let rec = if cifar100 { PIXELS + 2 } else { PIXELS + 1 };
    let b = &blob.bytes;
    if b.is_empty() {
        return Err(Error::format(&blob.location, "empty file"));
    }
    if !b.len().is_multiple_of(rec) {
        let whole = b.len() / rec;
        return Err(Error::format(
            &blob.location,
            format!(
                "size {} is not a multiple of the record size {rec} ({}): record {whole} at offset {} is incomplete (truncated file or wrong dataset?)",
                b.len(),
                if cifar100 {
                    "CIFAR-100: coarse, fine, 3072 pixels"
                } else {
                    "CIFAR-10: label, 3072 pixels"
                },
                whole * rec
            ),
        ));
    }
    let n_classes = label_count(cifar100, coarse);
    pixels.reserve(b.len() / rec * PIXELS);
    for (i, r) in b.chunks_exact(rec).enumerate() {
        let (lab, chw) = if cifar100 {
            let coarse_l = r[0];
            let fine_l = r[1];
            if coarse_l >= 20 || fine_l >= 100 {
                return Err(Error::format(
                    &blob.location,
                    format!(
                        "record {i} at offset {}: labels coarse {coarse_l} / fine {fine_l} out of range (20 / 100 classes)",
                        i * rec
                    ),
                ));
            }
            (if coarse { coarse_l } else { fine_l }, &r[2..])
        } else {
            (r[0], &r[1..])
        };
        if lab as usize >= n_classes {
            return Err(Error::format(
                &blob.location,
                format!(
                    "record {i} at offset {}: label {lab} out of range (10 classes)",
                    i * rec
                ),
            ));
        }
        labels.push(lab as u16);
        chw_to_hwc(chw, pixels);
    }
    Ok(())
}

/// Appends one 32x32 CHW planar image as HWC.
fn chw_to_hwc(chw: &[u8], out: &mut Vec<u8>) {
    let plane = SIDE * SIDE;
    let (r, rest) = chw.split_at(plane);
    let (g, b) = rest.split_at(plane);
    out.extend(r.iter().zip(g).zip(b).flat_map(|((&r, &g), &b)| [r, g, b]));
}

/// Parses a pickled batch (`data` uint8 [N, 3072], `labels` or `fine_labels`/`coarse_labels`).
pub fn parse_pickle(
    blob: &Blob,
    cifar100: bool,
    coarse: bool,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u16>,
) -> Result<()> {
    let err = |m: String| Error::format(&blob.location, m);
    let v = pickle::unpickle(&blob.bytes).map_err(|m| err(format!("bad pickle: {m}")))?;
    let data = v
        .get("data")
        .ok_or_else(|| err("pickle has no 'data' entry".into()))?;
    let arr = pickle::ndarray_u8(data).map_err(|m| err(format!("'data': {m}")))?;
    if arr.shape.len() != 2 || arr.shape[1] != PIXELS {
        return Err(err(format!(
            "'data' has shape {:?}, expected [N, {PIXELS}]",
            arr.shape
        )));
    }
    let key = match (cifar100, coarse) {
        (false, _) => "labels",
        (true, false) => "fine_labels",
        (true, true) => "coarse_labels",
    };
    let n_classes = label_count(cifar100, coarse);
    let labs = v
        .get(key)
        .and_then(|l| l.as_seq())
        .ok_or_else(|| err(format!("pickle has no '{key}' list")))?;
    if labs.len() != arr.shape[0] {
        return Err(err(format!(
            "'{key}' has {} entries but 'data' has {} images",
            labs.len(),
            arr.shape[0]
        )));
    }
    for (i, l) in labs.iter().enumerate() {
        match l.as_int() {
            Some(x) if (0..n_classes as i64).contains(&x) => labels.push(x as u16),
            _ => {
                return Err(err(format!(
                    "'{key}'[{i}] = {l:?} is not a class index below {n_classes}"
                )));
            }
        }
    }
    pixels.reserve(arr.data.len());
    for chw in arr.data.chunks_exact(PIXELS) {
        chw_to_hwc(chw, pixels);
    }
    Ok(())
}

fn class_names(files: &Files, kind: CifarKind, coarse: bool) -> Result<Vec<String>> {
    let n = kind.num_classes(coarse);
    let Some(blob) = files.read(kind.meta_file(coarse))? else {
        return Ok(if kind.is_100() {
            (0..n).map(|i| i.to_string()).collect()
        } else {
            CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
        });
    };
    let names: Vec<String> = match kind {
        CifarKind::C10Binary | CifarKind::C100Binary => String::from_utf8_lossy(&blob.bytes)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        _ => {
            let key = match (kind, coarse) {
                (CifarKind::C10Python, _) => "label_names",
                (_, false) => "fine_label_names",
                (_, true) => "coarse_label_names",
            };
            let v = pickle::unpickle(&blob.bytes)
                .map_err(|m| Error::format(&blob.location, format!("bad pickle: {m}")))?;
            v.get(key)
                .and_then(|l| l.as_seq())
                .and_then(|l| l.iter().map(|x| x.as_text()).collect::<Option<Vec<_>>>())
                .ok_or_else(|| {
                    Error::format(
                        &blob.location,
                        format!("pickle has no '{key}' list of strings"),
                    )
                })?
        }
    };
    if names.len() != n {
        return Err(Error::format(
            &blob.location,
            format!("{} class names, expected {n}", names.len()),
        ));
    }
    Ok(names)
}

/// Loads `split` of a CIFAR layout.
pub fn load(files: &Files, kind: CifarKind, split: Split, coarse: bool) -> Result<MemoryDataset> {
    let names = kind.split_files(split).ok_or_else(|| Error::MissingSplit {
        location: files.root(),
        split: split.to_string(),
        msg: "CIFAR has only train and test splits (carve a validation split with --val-split)"
            .into(),
    })?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for name in &names {
        let blob = files.require(name, split)?;
        load_blob(&blob, kind, coarse, &mut pixels, &mut labels)?;
    }
    Ok(MemoryDataset {
        format: kind.format(),
        source: format!("{} [{split}]", files.root()),
        classes: class_names(files, kind, coarse)?,
        height: SIDE as u32,
        width: SIDE as u32,
        pixels,
        labels,
    })
}

/// Parses one batch file of `kind`.
pub fn load_blob(
    blob: &Blob,
    kind: CifarKind,
    coarse: bool,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u16>,
) -> Result<()> {
    match kind {
        CifarKind::C10Binary | CifarKind::C100Binary => {
            parse_binary(blob, kind.is_100(), coarse, pixels, labels)
        }
        _ => parse_pickle(blob, kind.is_100(), coarse, pixels, labels),
    }
}

/// Loads a single batch file given by path (e.g. `data_batch_1.bin`).
pub fn load_single(path: &Path, kind: CifarKind, coarse: bool) -> Result<MemoryDataset> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let blob = Blob {
        location: path.display().to_string(),
        bytes,
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    load_blob(&blob, kind, coarse, &mut pixels, &mut labels)?;
    // Class names from the sibling meta file when there is one.
    let classes = match path.parent().map(Files::dir) {
        Some(Ok(f)) => class_names(&f, kind, coarse)?,
        _ => class_names(
            &Files::Dir {
                dir: PathBuf::new(),
                names: vec![],
            },
            kind,
            coarse,
        )?,
    };
    Ok(MemoryDataset {
        format: kind.format(),
        source: blob.location,
        classes,
        height: SIDE as u32,
        width: SIDE as u32,
        pixels,
        labels,
    })
}
