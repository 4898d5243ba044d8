//! The [`Dataset`] trait, the in-memory dataset shared by the array formats (CIFAR, SVHN),
//! and the wrappers built on it ([`Subset`], [`Concat`], [`Cached`]).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

/// An 8-bit RGB image, rows top to bottom, pixels left to right, channels interleaved (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `height * width * 3` bytes, HWC order.
    pub pixels: Vec<u8>,
}

impl Image {
    /// Wraps pixels, checking the length.
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Result<Self> {
        if pixels.len() != width as usize * height as usize * 3 {
            return Err(Error::Invalid(format!(
                "image {width}x{height} needs {} bytes, got {}",
                width as usize * height as usize * 3,
                pixels.len()
            )));
        }
        Ok(Image {
            width,
            height,
            pixels,
        })
    }
}

/// One decoded example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The image.
    pub image: Image,
    /// Class index in `0..num_classes`.
    pub label: usize,
}

/// A dataset split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training split.
    Train,
    /// The validation split (ImageNet `val`).
    Val,
    /// The test split.
    Test,
    /// SVHN's extra split.
    Extra,
}

impl Split {
    /// All splits, in the order `info` lists them.
    pub const ALL: [Split; 4] = [Split::Train, Split::Val, Split::Test, Split::Extra];

    /// The lowercase name used in paths and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
            Split::Extra => "extra",
        }
    }

    /// Parses one split name (`train`, `val`/`validation`, `test`, `extra`).
    pub fn parse(s: &str) -> Result<Split> {
        match s.to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            "extra" => Ok(Split::Extra),
            _ => Err(Error::Invalid(format!(
                "unknown split '{s}' (expected train, val, test or extra)"
            ))),
        }
    }

    /// Parses `train` or a union such as `train+extra`.
    pub fn parse_list(s: &str) -> Result<Vec<Split>> {
        s.split('+').map(|p| Split::parse(p.trim())).collect()
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// On-disk format of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// CIFAR-10 binary version (`data_batch_N.bin`).
    Cifar10Binary,
    /// CIFAR-10 Python version (pickled batches).
    Cifar10Python,
    /// CIFAR-100 binary version (`train.bin`, `test.bin`).
    Cifar100Binary,
    /// CIFAR-100 Python version (pickled `train`, `test`).
    Cifar100Python,
    /// SVHN format 2 (`*_32x32.mat`, MATLAB v5).
    SvhnMat,
    /// `ROOT/<class>/<image>` folders.
    ImageFolder,
    /// A flat folder of images plus a labels file (ImageNet validation).
    FlatImageFolder,
    /// Several splits concatenated.
    Concat,
}

impl Format {
    /// The kebab-case name shown by `info`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Cifar10Binary => "cifar10-binary",
            Format::Cifar10Python => "cifar10-python",
            Format::Cifar100Binary => "cifar100-binary",
            Format::Cifar100Python => "cifar100-python",
            Format::SvhnMat => "svhn-mat",
            Format::ImageFolder => "image-folder",
            Format::FlatImageFolder => "flat-image-folder",
            Format::Concat => "concat",
        }
    }

    /// Name of the normalisation constants that fit this format ([`crate::Normalize::by_name`]).
    pub fn normalization_name(self) -> &'static str {
        match self {
            Format::Cifar10Binary | Format::Cifar10Python => "cifar10",
            Format::Cifar100Binary | Format::Cifar100Python => "cifar100",
            Format::SvhnMat => "svhn",
            _ => "imagenet",
        }
    }
}

/// A random-access collection of labelled images.
///
/// Implementations are shared between worker threads, hence `Send + Sync`; `get` takes
/// `&self` and must be safe to call concurrently.
pub trait Dataset: Send + Sync {
    /// The on-disk format.
    fn format(&self) -> Format;
    /// Where the data comes from (path and split), for messages and `info`.
    fn source(&self) -> String;
    /// Number of samples.
    fn len(&self) -> usize;
    /// True when there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class names; index `i` is label `i`.
    fn class_names(&self) -> &[String];
    /// Number of classes.
    fn num_classes(&self) -> usize {
        self.class_names().len()
    }
    /// `(height, width)` when every image has the same size, known without decoding.
    fn image_size(&self) -> Option<(u32, u32)>;
    /// The label of sample `index`, without decoding it (used for stratified splits).
    /// Panics only if `index >= len()`, which is a caller bug.
    fn label(&self, index: usize) -> usize;
    /// Decodes sample `index`.
    fn get(&self, index: usize) -> Result<Sample>;
    /// Name of the file (or record) behind `index`, for error reports.
    fn item_name(&self, index: usize) -> String;
    /// True when samples are already decoded in memory (caching would not help).
    fn in_memory(&self) -> bool;
}

/// Checks `index < len` with a message naming the dataset.
pub(crate) fn check_index(ds: &dyn Dataset, index: usize) -> Result<()> {
    if index >= ds.len() {
        return Err(Error::Invalid(format!(
            "{}: index {index} out of range (len {})",
            ds.source(),
            ds.len()
        )));
    }
    Ok(())
}

/// Fixed-size images held in memory: what CIFAR and SVHN files decode to.
///
/// Pixels are converted to HWC once at load, so `get` is a copy of `h*w*3` bytes.
pub struct MemoryDataset {
    pub(crate) format: Format,
    pub(crate) source: String,
    pub(crate) classes: Vec<String>,
    pub(crate) height: u32,
    pub(crate) width: u32,
    pub(crate) pixels: Vec<u8>,
    pub(crate) labels: Vec<u16>,
}

impl MemoryDataset {
    fn image_bytes(&self) -> usize {
        self.height as usize * self.width as usize * 3
    }

    /// Borrowed HWC pixels of sample `index` (no copy), for the fast loader path.
    pub fn pixels_of(&self, index: usize) -> &[u8] {
        let n = self.image_bytes();
        &self.pixels[index * n..(index + 1) * n]
    }
}

impl Dataset for MemoryDataset {
    fn format(&self) -> Format {
        self.format
    }
    fn source(&self) -> String {
        self.source.clone()
    }
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn class_names(&self) -> &[String] {
        &self.classes
    }
    fn image_size(&self) -> Option<(u32, u32)> {
        Some((self.height, self.width))
    }
    fn label(&self, index: usize) -> usize {
        self.labels[index] as usize
    }
    fn get(&self, index: usize) -> Result<Sample> {
        check_index(self, index)?;
        Ok(Sample {
            image: Image {
                width: self.width,
                height: self.height,
                pixels: self.pixels_of(index).to_vec(),
            },
            label: self.labels[index] as usize,
        })
    }
    fn item_name(&self, index: usize) -> String {
        format!("{} record {index}", self.source)
    }
    fn in_memory(&self) -> bool {
        true
    }
}

/// A view of some samples of another dataset, in the given order (for validation splits).
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
    name: String,
}

impl Subset {
    /// Samples `indices` of `inner`; errors if any index is out of range.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>, name: &str) -> Result<Self> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= inner.len()) {
            return Err(Error::Invalid(format!(
                "{}: subset index {bad} out of range (len {})",
                inner.source(),
                inner.len()
            )));
        }
        Ok(Subset {
            inner,
            indices,
            name: name.to_string(),
        })
    }

    /// The indices into the inner dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Dataset for Subset {
    fn format(&self) -> Format {
        self.inner.format()
    }
    fn source(&self) -> String {
        format!("{} [{}]", self.inner.source(), self.name)
    }
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
    fn image_size(&self) -> Option<(u32, u32)> {
        self.inner.image_size()
    }
    fn label(&self, index: usize) -> usize {
        self.inner.label(self.indices[index])
    }
    fn get(&self, index: usize) -> Result<Sample> {
        check_index(self, index)?;
        self.inner.get(self.indices[index])
    }
    fn item_name(&self, index: usize) -> String {
        self.inner.item_name(self.indices[index])
    }
    fn in_memory(&self) -> bool {
        self.inner.in_memory()
    }
}

/// Several datasets with the same classes, one after the other (SVHN `train+extra`).
pub struct Concat {
    parts: Vec<Arc<dyn Dataset>>,
    /// `starts[i]` is the global index of the first sample of `parts[i]`.
    starts: Vec<usize>,
    len: usize,
}

impl Concat {
    /// Concatenates `parts`; they must agree on class names.
    pub fn new(parts: Vec<Arc<dyn Dataset>>) -> Result<Self> {
        if parts.is_empty() {
            return Err(Error::Invalid("concat of no datasets".into()));
        }
        for p in &parts[1..] {
            if p.class_names() != parts[0].class_names() {
                return Err(Error::Invalid(format!(
                    "cannot concatenate {} and {}: different classes",
                    parts[0].source(),
                    p.source()
                )));
            }
        }
        let mut starts = Vec::with_capacity(parts.len());
        let mut len = 0;
        for p in &parts {
            starts.push(len);
            len += p.len();
        }
        Ok(Concat { parts, starts, len })
    }

    fn locate(&self, index: usize) -> (usize, usize) {
        // partition_point gives the first part starting after `index`; the one before holds it.
        let part = self.starts.partition_point(|&s| s <= index) - 1;
        (part, index - self.starts[part])
    }
}

impl Dataset for Concat {
    fn format(&self) -> Format {
        let f = self.parts[0].format();
        if self.parts.iter().all(|p| p.format() == f) {
            f
        } else {
            Format::Concat
        }
    }
    fn source(&self) -> String {
        self.parts
            .iter()
            .map(|p| p.source())
            .collect::<Vec<_>>()
            .join(" + ")
    }
    fn len(&self) -> usize {
        self.len
    }
    fn class_names(&self) -> &[String] {
        self.parts[0].class_names()
    }
    fn image_size(&self) -> Option<(u32, u32)> {
        let s = self.parts[0].image_size()?;
        self.parts
            .iter()
            .all(|p| p.image_size() == Some(s))
            .then_some(s)
    }
    fn label(&self, index: usize) -> usize {
        let (p, i) = self.locate(index);
        self.parts[p].label(i)
    }
    fn get(&self, index: usize) -> Result<Sample> {
        check_index(self, index)?;
        let (p, i) = self.locate(index);
        self.parts[p].get(i)
    }
    fn item_name(&self, index: usize) -> String {
        let (p, i) = self.locate(index);
        self.parts[p].item_name(i)
    }
    fn in_memory(&self) -> bool {
        self.parts.iter().all(|p| p.in_memory())
    }
}

/// Keeps every decoded sample of `inner` in memory after its first decode.
///
/// For image folders that fit in RAM: the first epoch decodes, later ones copy.
pub struct Cached {
    inner: Arc<dyn Dataset>,
    slots: Vec<OnceLock<Sample>>,
}

impl Cached {
    /// Wraps `inner`; nothing is decoded until asked for.
    pub fn new(inner: Arc<dyn Dataset>) -> Self {
        let slots = (0..inner.len()).map(|_| OnceLock::new()).collect();
        Cached { inner, slots }
    }

    /// Number of samples decoded so far.
    pub fn filled(&self) -> usize {
        self.slots.iter().filter(|s| s.get().is_some()).count()
    }
}

impl Dataset for Cached {
    fn format(&self) -> Format {
        self.inner.format()
    }
    fn source(&self) -> String {
        self.inner.source()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
    fn image_size(&self) -> Option<(u32, u32)> {
        self.inner.image_size()
    }
    fn label(&self, index: usize) -> usize {
        self.inner.label(index)
    }
    fn get(&self, index: usize) -> Result<Sample> {
        check_index(self, index)?;
        if let Some(s) = self.slots[index].get() {
            return Ok(s.clone());
        }
        // Errors are not cached: a failing file fails again, with its message, every time.
        let s = self.inner.get(index)?;
        Ok(self.slots[index].get_or_init(|| s).clone())
    }
    fn item_name(&self, index: usize) -> String {
        self.inner.item_name(index)
    }
    fn in_memory(&self) -> bool {
        true
    }
}
