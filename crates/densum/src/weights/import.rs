//! Weights in: PyTorch checkpoints (`.pth` / `.pt`, zip and legacy containers) and
//! safetensors files with torchvision / timm tensor names, mapped onto densum's names
//! ([`super::names`]) and written as densum weight files ([`convert`]).
//!
//! Checkpoints are parsed by `pytorch-reader` (the reader behind Burn's `burn-store`): a
//! pickle interpreter in Rust that understands only the opcodes and the few callables
//! (`torch._utils._rebuild_tensor*`, `OrderedDict`, `set`) that describe tensors, and never
//! calls anything. Any other call it keeps as an opaque value, so a file that would run
//! `os.system` under `torch.load` still opens; densum refuses such a file
//! ([`check_globals`]), as `torch.load(weights_only=True)` does, naming the callable. Tensor
//! bytes are read only for tensors whose shape the model expects, so a checkpoint declaring
//! a huge tensor never makes densum allocate it, and a panic inside the reader is caught and
//! reported as an error.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use pytorch_reader::{DType, FileFormat, PickleValue, PytorchReader};

use super::{TensorMap, decode_le, load_tensors, named_tensors, read_tensors, tensor_shapes};
use crate::error::{DensumError, Result};
use crate::net::Net;
use crate::zoo::{self, ModelOptions};
use burn::tensor::Device;
use safetensors::tensor::Dtype;

/// Top-level keys under which training scripts nest the state dict, in the order they are
/// tried (`{"state_dict": ...}` from the PyTorch ImageNet example and timm, `{"model": ...}`
/// from torchvision's reference scripts and DeiT-style trainers).
pub const STATE_DICT_KEYS: &[&str] = &["state_dict", "model_state_dict", "model", "net"];

/// Prefixes wrappers add to every name: `module.` (DataParallel / DistributedDataParallel),
/// `_orig_mod.` (`torch.compile`).
pub const WRAPPER_PREFIXES: &[&str] = &["module.", "_orig_mod."];

/// Python callables a checkpoint may name without being refused: the types PyTorch's
/// `weights_only` unpickler also accepts that carry no behaviour (tensors, storages,
/// dtypes, devices, sizes, numpy scalars), and `argparse.Namespace`, which timm's trainer
/// saves as `args` (constructing one runs no user code). The tensor-rebuilding callables
/// never get here: the reader interprets them.
const SAFE_GLOBALS: &[&str] = &[
    "torch.Tensor",
    "torch.TypedStorage",
    "torch.UntypedStorage",
    "torch.Size",
    "torch.device",
    "torch.dtype",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "argparse.Namespace",
];

/// torch dtypes appear as classes named `torch.float32`, `torch.FloatStorage`, ...
fn is_safe_global(name: &str) -> bool {
    if SAFE_GLOBALS.contains(&name) {
        return true;
    }
    let Some(rest) = name.strip_prefix("torch.") else {
        return false;
    };
    const DTYPES: &[&str] = &[
        "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
        "bool", "half", "float", "double", "long", "int",
    ];
    DTYPES.contains(&rest) || (rest.ends_with("Storage") && !rest.contains('.'))
}

/// Refuses a checkpoint whose pickle names a callable outside [`SAFE_GLOBALS`]: under
/// `torch.load` (without `weights_only`) it would run. densum never runs it either way;
/// the refusal tells the user the file is not what it claims. The message names the
/// callable and the keys leading to it; `path` is the file.
pub fn check_globals(value: &PickleValue, path: &Path) -> Result<()> {
    fn walk(v: &PickleValue, at: &mut Vec<String>, path: &Path) -> Result<()> {
        match v {
            PickleValue::Unsupported(name) if !is_safe_global(name) => {
                let location = if at.is_empty() {
                    "at the root".to_string()
                } else {
                    format!("at `{}`", at.join("."))
                };
                Err(DensumError::weights(
                    path,
                    format!(
                        "the checkpoint's pickle calls or builds `{name}` {location}; densum \
                         reads only tensors and plain values and refuses this file (nothing \
                         in it was executed). If you trust it, load it in PyTorch and save \
                         `model.state_dict()` alone"
                    ),
                ))
            }
            PickleValue::List(items) => items.iter().enumerate().try_for_each(|(i, item)| {
                at.push(i.to_string());
                let r = walk(item, at, path);
                at.pop();
                r
            }),
            PickleValue::Dict(map) => {
                // Sorted, so the same file always reports the same entry.
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                keys.into_iter().try_for_each(|k| {
                    at.push(k.clone());
                    let r = walk(&map[k], at, path);
                    at.pop();
                    r
                })
            }
            _ => Ok(()),
        }
    }
    walk(value, &mut Vec::new(), path)
}

/// Runs `f`, turning a panic inside the checkpoint reader into an error naming the file.
fn guarded<T>(path: &Path, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(DensumError::weights(
            path,
            format!("{what}: the checkpoint reader failed ({msg}); the file is malformed"),
        ))
    })
}

fn reader_error(path: &Path, e: pytorch_reader::PytorchError) -> DensumError {
    DensumError::weights(path, format!("not a readable PyTorch checkpoint: {e}"))
}

enum Data {
    /// Bytes still in the checkpoint, read on demand.
    Torch(pytorch_reader::Tensor),
    /// Already decoded (safetensors input).
    Values(Vec<f32>),
}

/// One tensor of a source file, under its densum name.
pub struct SourceTensor {
    /// Name in the source file.
    pub source_name: String,
    /// Shape in the source file.
    pub shape: Vec<usize>,
    /// Element type in the source file (`F32`, `F16`, ...).
    pub dtype: String,
    data: Data,
}

impl SourceTensor {
    /// The values as f32 (f64, f16 and bf16 are converted); other element types are refused.
    pub fn values(&self, path: &Path) -> Result<Vec<f32>> {
        let t = match &self.data {
            Data::Values(v) => return Ok(v.clone()),
            Data::Torch(t) => t,
        };
        let what = format!("tensor `{}`", self.source_name);
        guarded(path, &what, || {
            let bytes = t
                .read()
                .map_err(|e| DensumError::weights(path, format!("{what}: {e}")))?;
            let expected = t.num_elements() * t.dtype().size();
            if bytes.len() != expected {
                return Err(DensumError::weights(
                    path,
                    format!("{what}: {} bytes, expected {expected}", bytes.len()),
                ));
            }
            // Weights are floating point; an integer tensor where one is expected is refused.
            let dtype = match t.dtype() {
                DType::F32 => Some(Dtype::F32),
                DType::F64 => Some(Dtype::F64),
                DType::F16 => Some(Dtype::F16),
                DType::BF16 => Some(Dtype::BF16),
                _ => None,
            };
            dtype.and_then(|d| decode_le(d, &bytes)).ok_or_else(|| {
                DensumError::weights(
                    path,
                    format!(
                        "{what} holds {:?} values; weights must be floating point",
                        t.dtype()
                    ),
                )
            })
        })
    }
}

/// A source file's tensors under densum's names, and how they were found.
pub struct Checkpoint {
    /// The file.
    pub path: PathBuf,
    /// Container: `PyTorch zip`, `PyTorch legacy`, `PyTorch tar`, `pickle`, `safetensors`.
    pub format: String,
    /// The top-level key holding the state dict, if it was nested.
    pub key: Option<String>,
    /// Wrapper prefixes removed from the names (`module.`, ...).
    pub stripped: Vec<String>,
    /// Names changed to densum's (old torchvision DenseNet names such as `norm.1`).
    pub renamed: usize,
    /// Tensors by densum name.
    pub tensors: BTreeMap<String, SourceTensor>,
}

/// Whether `bytes` open like a safetensors file: a little-endian header length, then `{`.
fn looks_like_safetensors(bytes: &[u8]) -> bool {
    bytes.len() > 8 && bytes[8] == b'{'
}

/// torchvision's DenseNet checkpoints before 0.3 name a dense layer's parts `norm.1`,
/// `conv.2`, ...; torchvision's own loader rewrites them to `norm1`, `conv2`, as here.
fn modern_densenet_name(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let i = parts.iter().position(|p| p.starts_with("denselayer"))?;
    let (kind, num) = (parts.get(i + 1)?, parts.get(i + 2)?);
    if ["norm", "relu", "conv"].contains(kind) && ["1", "2"].contains(num) && parts.len() > i + 3 {
        let mut out: Vec<String> = parts[..=i].iter().map(|s| s.to_string()).collect();
        out.push(format!("{kind}{num}"));
        out.extend(parts[i + 3..].iter().map(|s| s.to_string()));
        Some(out.join("."))
    } else {
        None
    }
}

/// Opens a PyTorch checkpoint or a safetensors file and names its tensors as densum does:
/// the state dict is taken from under [`STATE_DICT_KEYS`] when nested there, wrapper
/// prefixes ([`WRAPPER_PREFIXES`]) are removed and old DenseNet names modernised.
/// BN's step counters (`num_batches_tracked`) are left out.
pub fn open_checkpoint(path: &Path) -> Result<Checkpoint> {
    let mut head = [0u8; 9];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| DensumError::io(path, e))?;
        let n = f.read(&mut head).map_err(|e| DensumError::io(path, e))?;
        if n == 0 {
            return Err(DensumError::weights(path, "the file is empty"));
        }
    }
    let (format, key, raw) = if looks_like_safetensors(&head) {
        let (_, map) = read_tensors(path)?;
        let raw: Vec<(String, SourceTensor)> = map
            .into_iter()
            .map(|(name, (shape, values))| {
                let t = SourceTensor {
                    source_name: name.clone(),
                    shape,
                    dtype: "safetensors".into(),
                    data: Data::Values(values),
                };
                (name, t)
            })
            .collect();
        ("safetensors".to_string(), None, raw)
    } else {
        open_torch(path)?
    };
    let mut stripped = Vec::new();
    let mut renamed = 0;
    let mut tensors = BTreeMap::new();
    for (name, t) in raw {
        let mut n = name.as_str();
        while let Some(p) = WRAPPER_PREFIXES.iter().find(|p| n.starts_with(*p)) {
            n = &n[p.len()..];
            if !stripped.iter().any(|s: &String| s == p) {
                stripped.push(p.to_string());
            }
        }
        let n = match modern_densenet_name(n) {
            Some(m) => {
                renamed += 1;
                m
            }
            None => n.to_string(),
        };
        // BN's step counters are not weights; reserved names are fixtures' extras.
        if n.ends_with("num_batches_tracked") || n.starts_with(super::RESERVED_PREFIX) {
            continue;
        }
        if let Some(prev) = tensors.insert(n.clone(), t) {
            return Err(DensumError::weights(
                path,
                format!(
                    "tensors `{}` and `{name}` both become `{n}`; the file holds two state dicts",
                    prev.source_name
                ),
            ));
        }
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        format,
        key,
        stripped,
        renamed,
        tensors,
    })
}

type Opened = (String, Option<String>, Vec<(String, SourceTensor)>);

fn open_torch(path: &Path) -> Result<Opened> {
    let root = guarded(path, "reading the pickle", || {
        PytorchReader::read_pickle_data(path, None).map_err(|e| reader_error(path, e))
    })?;
    check_globals(&root, path)?;
    let holds_tensors = |v: &PickleValue| match v {
        PickleValue::Dict(m) => m
            .values()
            .any(|x| matches!(x, PickleValue::Unsupported(n) if n == "torch.Tensor")),
        _ => false,
    };
    // A nested state dict wins over tensors at the root (`best_acc1` beside "state_dict").
    let key = match &root {
        PickleValue::Dict(m) => STATE_DICT_KEYS
            .iter()
            .find(|k| m.get(**k).is_some_and(holds_tensors))
            .map(|k| k.to_string()),
        _ => None,
    };
    if key.is_none() && !holds_tensors(&root) {
        let keys = match &root {
            PickleValue::Dict(m) => {
                let mut k: Vec<&String> = m.keys().collect();
                k.sort();
                format!("top-level keys {k:?}")
            }
            _ => "no dictionary at the root".to_string(),
        };
        return Err(DensumError::weights(
            path,
            format!(
                "no state dict found: neither the root nor any of {STATE_DICT_KEYS:?} is a \
                 dictionary of tensors ({keys})"
            ),
        ));
    }
    let reader = guarded(path, "reading the tensors", || {
        match &key {
            Some(k) => PytorchReader::with_top_level_key(path, k),
            None => PytorchReader::new(path),
        }
        .map_err(|e| reader_error(path, e))
    })?;
    let format = match reader.metadata().format_type {
        FileFormat::Zip => "PyTorch zip",
        FileFormat::Legacy => "PyTorch legacy",
        FileFormat::Tar => "PyTorch tar",
        FileFormat::Pickle => "pickle",
    }
    .to_string();
    let raw = reader
        .into_tensors()
        .into_iter()
        .map(|(name, t)| {
            let st = SourceTensor {
                source_name: name.clone(),
                shape: t.shape().to_vec(),
                dtype: format!("{:?}", t.dtype()),
                data: Data::Torch(t),
            };
            (name, st)
        })
        .collect();
    Ok((format, key, raw))
}

/// The classifier's tensors (`fc.*` in the ResNet scheme, `classifier.*` in DenseNet's).
pub fn is_head(name: &str) -> bool {
    matches!(name.split('.').next(), Some("fc" | "classifier"))
}

/// What [`import_into`] found wrong: every tensor by name.
#[derive(Debug, Default)]
pub struct Mismatch {
    /// Tensors the model has and the file lacks, with the model's shape.
    pub missing: Vec<(String, Vec<usize>)>,
    /// Tensors the file has and the model lacks, with the file's shape.
    pub extra: Vec<(String, Vec<usize>)>,
    /// Tensors of both with different shapes: (name, file's, model's).
    pub misshapen: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl Mismatch {
    fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.misshapen.is_empty()
    }

    /// One line per tensor.
    pub fn describe(&self) -> String {
        let mut lines = vec![format!(
            "{} missing, {} unexpected, {} misshapen tensors",
            self.missing.len(),
            self.extra.len(),
            self.misshapen.len()
        )];
        for (n, s) in &self.missing {
            lines.push(format!("  missing     {n} (the model expects {s:?})"));
        }
        for (n, s) in &self.extra {
            lines.push(format!("  unexpected  {n} {s:?} (not part of this model)"));
        }
        for (n, file, model) in &self.misshapen {
            lines.push(format!(
                "  misshapen   {n}: the file has {file:?}, the model expects {model:?}"
            ));
        }
        lines.join("\n")
    }
}

/// Copies the checkpoint's tensors into `net`. Every tensor of the model must be in the
/// file with its shape and the file must have no other (BN counters aside); otherwise the
/// error lists each missing, unexpected and misshapen tensor. With `reset_head` the
/// classifier keeps `net`'s fresh initialisation and the file's classifier is ignored, so
/// the backbone can be fine-tuned for another number of classes.
pub fn import_into(net: Net, ckpt: &Checkpoint, reset_head: bool, device: &Device) -> Result<Net> {
    let path = ckpt.path.as_path();
    // With reset_head the classifier comes from `net`, whatever the file holds.
    let fresh = |name: &str| reset_head && is_head(name);
    let mut mismatch = Mismatch::default();
    let expected: HashMap<String, Vec<usize>> = tensor_shapes(&net)
        .into_iter()
        .map(|(n, s, _)| (n, s))
        .collect();
    let mut names: Vec<&String> = expected.keys().collect();
    names.sort();
    for name in names {
        let want = &expected[name];
        if fresh(name) {
            continue;
        }
        match ckpt.tensors.get(name) {
            None => mismatch.missing.push((name.clone(), want.clone())),
            Some(t) if t.shape != *want => {
                mismatch
                    .misshapen
                    .push((name.clone(), t.shape.clone(), want.clone()))
            }
            Some(_) => {}
        }
    }
    for (name, t) in &ckpt.tensors {
        if !(expected.contains_key(name) || fresh(name)) {
            mismatch.extra.push((name.clone(), t.shape.clone()));
        }
    }
    if !mismatch.is_empty() {
        return Err(DensumError::weights(
            path,
            format!(
                "does not match the model: {}{}",
                mismatch.describe(),
                if mismatch.misshapen.iter().all(|(n, ..)| is_head(n))
                    && mismatch.missing.is_empty()
                    && mismatch.extra.is_empty()
                {
                    "\n(only the classifier differs: pass --num-classes to match it, or \
                     --reset-head to re-initialise it)"
                } else {
                    ""
                }
            ),
        ));
    }
    // Shapes are checked, so every read below is bounded by the model's own size.
    let mut map: TensorMap = HashMap::new();
    for (name, want) in &expected {
        if fresh(name) {
            continue;
        }
        let values = ckpt.tensors[name].values(path)?;
        map.insert(name.clone(), (want.clone(), values));
    }
    if reset_head {
        for t in named_tensors(&net) {
            if is_head(&t.name) {
                map.insert(t.name, (t.shape, t.values));
            }
        }
    }
    load_tensors(net, &map, path, device)
}

/// What [`convert`] did.
#[derive(Debug)]
pub struct ConvertReport {
    /// Registry name of the model written.
    pub model: String,
    /// Its options, as recorded in the output.
    pub options: ModelOptions,
    /// The source's container.
    pub format: String,
    /// The top-level key the state dict came from.
    pub key: Option<String>,
    /// Wrapper prefixes removed.
    pub stripped: Vec<String>,
    /// Names modernised.
    pub renamed: usize,
    /// Tensors copied, by source element type.
    pub dtypes: BTreeMap<String, usize>,
    /// Whether the classifier was re-initialised.
    pub head_reset: bool,
    /// Trainable parameters of the model written.
    pub params: usize,
}

/// Converts a PyTorch checkpoint or a torchvision / timm safetensors file into a densum
/// weight file for `model`: the output carries the model's name and options in its
/// metadata, as `densum init` writes. When `options` leave the class count open, it is
/// taken from the file's classifier (unless `reset_head`). `seed` initialises the
/// classifier with `reset_head`. The output is written atomically, so a failure never
/// leaves a partial or replaced file.
pub fn convert(
    input: &Path,
    model: &str,
    options: &ModelOptions,
    reset_head: bool,
    seed: u64,
    out: &Path,
) -> Result<ConvertReport> {
    let ckpt = open_checkpoint(input)?;
    let mut options = options.clone();
    if options.num_classes.is_none() && !reset_head {
        options.num_classes = ["fc.weight", "classifier.weight"]
            .iter()
            .find_map(|n| ckpt.tensors.get(*n))
            .and_then(|t| t.shape.first().copied());
    }
    let spec = zoo::resolve(model, &options)?;
    let device = Device::flex();
    device.seed(seed);
    let net = Net::new(&spec.config, &device);
    let net = import_into(net, &ckpt, reset_head, &device)?;
    let mut dtypes = BTreeMap::new();
    for (name, t) in &ckpt.tensors {
        if !(reset_head && is_head(name)) {
            *dtypes.entry(t.dtype.clone()).or_insert(0) += 1;
        }
    }
    super::save(&net, &spec.name, &spec.options, out)?;
    Ok(ConvertReport {
        model: spec.name,
        options: spec.options,
        format: ckpt.format,
        key: ckpt.key,
        stripped: ckpt.stripped,
        renamed: ckpt.renamed,
        dtypes,
        head_reset: reset_head,
        params: super::count_params(&net),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_densenet_names_are_modernised_as_torchvision_does() {
        assert_eq!(
            modern_densenet_name("features.denseblock1.denselayer1.norm.1.weight").as_deref(),
            Some("features.denseblock1.denselayer1.norm1.weight")
        );
        assert_eq!(
            modern_densenet_name("features.denseblock4.denselayer16.conv.2.weight").as_deref(),
            Some("features.denseblock4.denselayer16.conv2.weight")
        );
        // Modern names and other modules are left alone.
        assert_eq!(
            modern_densenet_name("features.denseblock1.denselayer1.norm1.weight"),
            None
        );
        assert_eq!(
            modern_densenet_name("features.transition1.norm.weight"),
            None
        );
        assert_eq!(modern_densenet_name("layer1.0.conv1.weight"), None);
    }

    #[test]
    fn only_harmless_globals_pass() {
        let p = Path::new("x.pth");
        let ok = PickleValue::Dict(HashMap::from([
            (
                "w".to_string(),
                PickleValue::Unsupported("torch.Tensor".into()),
            ),
            (
                "dtype".to_string(),
                PickleValue::Unsupported("torch.float16".into()),
            ),
        ]));
        assert!(check_globals(&ok, p).is_ok());
        for bad in [
            "posix.system",
            "builtins.eval",
            "torch.hub.load",
            "subprocess.Popen",
        ] {
            let v = PickleValue::Dict(HashMap::from([(
                "opt".to_string(),
                PickleValue::List(vec![PickleValue::Unsupported(bad.into())]),
            )]));
            let e = check_globals(&v, p).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("`opt.0`"), "{e}");
        }
    }

    #[test]
    fn heads_are_fc_and_classifier() {
        assert!(is_head("fc.weight") && is_head("classifier.bias"));
        assert!(!is_head("layer1.0.se.fc1.weight") && !is_head("features.conv0.weight"));
    }
}
