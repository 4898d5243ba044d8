//! Weight files: safetensors with torchvision's and timm's tensor names where those libraries
//! have the model (the scheme is in [`names`]), and the model's name and options in the
//! metadata, so a file alone says what it holds.

pub mod names;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};

use crate::error::{DensumError, Result};
use crate::net::Net;
use crate::zoo::ModelOptions;

pub use names::{NameScheme, PathTracker, spec_name};

/// Prefix of tensors that are not weights (test fixtures keep inputs and expected outputs
/// beside the weights); ignored on load.
pub const RESERVED_PREFIX: &str = "__";

/// One named tensor as stored in a file (PyTorch layout).
#[derive(Clone, Debug)]
pub struct NamedTensor {
    /// Name in the file ([`names`]).
    pub name: String,
    /// Shape in the file.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
    /// Whether this is a trainable parameter (false for running statistics).
    pub trainable: bool,
}

/// Whether a tensor name is a running statistic (state, not a trainable parameter).
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

struct Collector {
    path: PathTracker,
    out: Vec<NamedTensor>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let (name, transposed) = self.path.current();
        let t = param.val();
        let (t, shape) = if transposed && D == 2 {
            let d = t.dims();
            (t.swap_dims(0, 1), vec![d[1], d[0]])
        } else {
            let shape = t.dims().to_vec();
            (t, shape)
        };
        let values = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let trainable = !is_buffer(&name);
        self.out.push(NamedTensor {
            name,
            shape,
            values,
            trainable,
        });
    }
}

/// Every tensor of `module` under its file name, in module order.
pub fn named_tensors<M: Module>(module: &M) -> Vec<NamedTensor> {
    let mut c = Collector {
        path: PathTracker::for_module(module),
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

/// Names and shapes (file layout) of every tensor, without copying values.
pub fn tensor_shapes<M: Module>(module: &M) -> Vec<(String, Vec<usize>, bool)> {
    struct Shapes {
        path: PathTracker,
        out: Vec<(String, Vec<usize>, bool)>,
    }
    impl ModuleVisitor for Shapes {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let (name, transposed) = self.path.current();
            let mut shape = param.lazy_shape().to_vec();
            if transposed {
                shape.reverse();
            }
            let trainable = !is_buffer(&name);
            self.out.push((name, shape, trainable));
        }
    }
    let mut s = Shapes {
        path: PathTracker::for_module(module),
        out: Vec::new(),
    };
    module.visit(&mut s);
    s.out
}

/// Number of trainable parameters (running statistics excluded, as PyTorch counts).
pub fn count_params<M: Module>(module: &M) -> usize {
    tensor_shapes(module)
        .iter()
        .filter(|(_, _, trainable)| *trainable)
        .map(|(_, shape, _)| shape.iter().product::<usize>())
        .sum()
}

/// What a weight file says about itself.
#[derive(Clone, Debug, Default)]
pub struct FileInfo {
    /// Registry name of the model, if recorded.
    pub model: Option<String>,
    /// Its options, if recorded.
    pub options: Option<ModelOptions>,
    /// All metadata.
    pub metadata: HashMap<String, String>,
}

/// Writes `net` to `path` atomically (temporary file, fsync, rename): a crash never leaves a
/// partial file under the final name.
pub fn save(net: &Net, model: &str, options: &ModelOptions, path: &Path) -> Result<()> {
    // `valid()` folds pending running-statistic updates in (Burn keeps the last one per
    // thread until a sync); a plain read would store batch norms one training step behind.
    let tensors = named_tensors(&net.valid());
    let mut bytes: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = Vec::new();
    for t in &tensors {
        let data: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.push((t.name.clone(), t.shape.clone(), Dtype::F32, data));
        if let Some(prefix) = t.name.strip_suffix("running_var") {
            // torchvision's BN buffer, written for compatibility and ignored on load.
            bytes.push((
                format!("{prefix}num_batches_tracked"),
                vec![],
                Dtype::I64,
                0i64.to_le_bytes().to_vec(),
            ));
        }
    }
    let views = bytes
        .iter()
        .map(|(n, shape, dtype, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (n.clone(), v))
                .map_err(|e| DensumError::weights(path, format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta = HashMap::new();
    meta.insert("model".to_string(), model.to_string());
    meta.insert(
        "options".to_string(),
        serde_json::to_string(options).expect("options serialise"),
    );
    meta.insert("format".to_string(), "densum-1".to_string());
    let serialized = safetensors::serialize(views, Some(meta))
        .map_err(|e| DensumError::weights(path, e.to_string()))?;
    write_atomic(path, &canonical_header(serialized))
}

/// Rewrites a safetensors header with its keys sorted, so the same weights always give the
/// same bytes (the metadata map would otherwise come out in hash order).
fn canonical_header(bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length")) as usize;
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + n]) else {
        return bytes;
    };
    // serde_json's maps are sorted by key.
    let mut text = serde_json::to_vec(&header).expect("re-serialise header");
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// Writes `bytes` to `path` through a temporary file in the same folder, fsynced and renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| DensumError::weights(path, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DensumError::io(path, e)
    })
}

/// Reads the metadata of a weight file.
pub fn read_info(path: &Path) -> Result<FileInfo> {
    let bytes = std::fs::read(path).map_err(|e| DensumError::io(path, e))?;
    info_from_bytes(path, &bytes)
}

fn info_from_bytes(path: &Path, bytes: &[u8]) -> Result<FileInfo> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| DensumError::weights(path, format!("not a valid safetensors file: {e}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let options = match metadata.get("options") {
        Some(s) => Some(serde_json::from_str(s).map_err(|e| {
            DensumError::weights(path, format!("metadata `options` is not valid: {e}"))
        })?),
        None => None,
    };
    Ok(FileInfo {
        model: metadata.get("model").cloned(),
        options,
        metadata,
    })
}

/// The tensors of a file, by name, as f32 in file layout.
pub type TensorMap = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads every tensor of a safetensors file as f32 (f64, f16, bf16 and i64 are converted;
/// other integer tensors are skipped).
pub fn read_tensors(path: &Path) -> Result<(FileInfo, TensorMap)> {
    let bytes = std::fs::read(path).map_err(|e| DensumError::io(path, e))?;
    let info = info_from_bytes(path, &bytes)?;
    Ok((info, tensors_from_bytes(path, &bytes)?))
}

/// Decodes every tensor of a safetensors file's bytes (see [`read_tensors`]).
fn tensors_from_bytes(path: &Path, bytes: &[u8]) -> Result<TensorMap> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| DensumError::weights(path, format!("not a valid safetensors file: {e}")))?;
    let mut map = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            _ => continue,
        };
        map.insert(name, (view.shape().to_vec(), values));
    }
    Ok(map)
}

fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            // Subnormal: renormalise.
            let mut e = 113u32;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

struct Loader<'a> {
    path: PathTracker,
    tensors: &'a TensorMap,
    used: BTreeSet<String>,
    errors: Vec<String>,
    device: Device,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (name, transposed) = self.path.current();
        let mut expected = param.lazy_shape().to_vec();
        if transposed {
            expected.reverse();
        }
        let Some((shape, values)) = self.tensors.get(&name) else {
            self.errors
                .push(format!("missing tensor `{name}` (shape {expected:?})"));
            return param;
        };
        self.used.insert(name.clone());
        if *shape != expected {
            self.errors.push(format!(
                "tensor `{name}` has shape {shape:?}, the model expects {expected:?}"
            ));
            return param;
        }
        let device = self.device.clone();
        // Transpose on the host: a strided view would make later matrix products sum in
        // another order than on a freshly built model, and resumed runs would drift by ULPs.
        let data = if transposed && shape.len() == 2 {
            let (rows, cols) = (shape[0], shape[1]);
            let mut t = vec![0f32; values.len()];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = values[r * cols + c];
                }
            }
            TensorData::new(t, vec![cols, rows])
        } else {
            TensorData::new(values.clone(), shape.clone())
        };
        param.map(move |_| Tensor::<D>::from_data(data, &device))
    }
}

/// Loads tensors into `module`, checking that every tensor the model has is present with its
/// shape and that the file has no tensor the model lacks. `path` names the source in errors.
pub fn load_tensors<M: Module>(
    module: M,
    tensors: &TensorMap,
    path: &Path,
    device: &Device,
) -> Result<M> {
    let mut loader = Loader {
        path: PathTracker::for_module(&module),
        tensors,
        used: BTreeSet::new(),
        errors: Vec::new(),
        device: device.clone(),
    };
    let module = module.map(&mut loader);
    let mut extra: Vec<&String> = tensors
        .keys()
        .filter(|k| {
            !loader.used.contains(*k)
                && !k.starts_with(RESERVED_PREFIX)
                && !k.ends_with("num_batches_tracked")
        })
        .collect();
    extra.sort();
    for k in extra {
        loader
            .errors
            .push(format!("unexpected tensor `{k}` (not part of this model)"));
    }
    if loader.errors.is_empty() {
        Ok(module)
    } else {
        let n = loader.errors.len();
        let mut msg = loader
            .errors
            .into_iter()
            .take(8)
            .collect::<Vec<_>>()
            .join("; ");
        if n > 8 {
            msg.push_str(&format!("; and {} more", n - 8));
        }
        Err(DensumError::weights(path, msg))
    }
}

/// Loads a weight file into `net`, built as `model`. A file whose metadata names another
/// model is refused from its header, before any tensor is decoded (the file is read whole).
pub fn load(net: Net, model: &str, path: &Path, device: &Device) -> Result<Net> {
    let bytes = std::fs::read(path).map_err(|e| DensumError::io(path, e))?;
    let info = info_from_bytes(path, &bytes)?;
    if let Some(m) = &info.model
        && m != model
    {
        return Err(DensumError::weights(
            path,
            format!("the file holds model `{m}`, not `{model}`"),
        ));
    }
    load_tensors(net, &tensors_from_bytes(path, &bytes)?, path, device)
}
