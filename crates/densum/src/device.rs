//! Which device a command runs on, and in which precision.
//!
//! `cpu` is Burn's Flex backend, always built and the default. The GPU backends are Burn's
//! own, compiled in by densum's cargo features: `cuda[:N]` (feature `cuda`), `rocm[:N]`
//! (`rocm`), `wgpu[:N]` (`wgpu`; Vulkan, Metal or DirectX, whichever the machine has),
//! `vulkan[:N]` and `metal[:N]` (features of the same names, pinning wgpu's graphics API).
//!
//! Why an explicit parser instead of `Device::default()`: Burn's default picks the *first
//! compiled* backend (CUDA before Flex), so a binary built with `--features cuda` would
//! silently move every command to the GPU; here the device is always the one asked for.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::error::{DensumError, Result};

/// A backend densum can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Burn's Flex CPU backend (the default; the only one with densum's fast paths).
    Cpu,
    /// NVIDIA GPUs through CUDA (cargo feature `cuda`).
    Cuda,
    /// AMD GPUs through ROCm/HIP (cargo feature `rocm`).
    Rocm,
    /// Any GPU wgpu reaches, on the graphics API it chooses (cargo feature `wgpu`).
    Wgpu,
    /// wgpu pinned to Vulkan (cargo feature `vulkan`).
    Vulkan,
    /// wgpu pinned to Metal (cargo feature `metal`).
    Metal,
}

impl BackendKind {
    /// Every backend, in the order the error messages list them.
    pub const ALL: [BackendKind; 6] = [
        BackendKind::Cpu,
        BackendKind::Cuda,
        BackendKind::Rocm,
        BackendKind::Wgpu,
        BackendKind::Vulkan,
        BackendKind::Metal,
    ];

    /// The name used on the command line (and as the cargo feature, for GPU backends).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Rocm => "rocm",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Vulkan => "vulkan",
            BackendKind::Metal => "metal",
        }
    }

    /// Whether this build of densum contains the backend.
    pub fn compiled(self) -> bool {
        match self {
            BackendKind::Cpu => true,
            BackendKind::Cuda => cfg!(feature = "cuda"),
            BackendKind::Rocm => cfg!(feature = "rocm"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Vulkan => cfg!(feature = "vulkan"),
            BackendKind::Metal => cfg!(feature = "metal"),
        }
    }
}

/// A device as written on the command line: `cpu`, `cuda`, `cuda:1`, `wgpu:0`, ...
///
/// Parsing only checks the spelling; [`DeviceSpec::to_device`] checks that this build has the
/// backend and that the device exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceSpec {
    /// The backend.
    pub backend: BackendKind,
    /// The device index (`None`: the backend's default device, index 0 for CUDA/ROCm).
    pub index: Option<usize>,
}

impl Default for DeviceSpec {
    /// The CPU (Flex).
    fn default() -> Self {
        DeviceSpec {
            backend: BackendKind::Cpu,
            index: None,
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}:{i}", self.backend.name()),
            None => f.write_str(self.backend.name()),
        }
    }
}

fn spec_err(text: &str, why: impl fmt::Display) -> DensumError {
    DensumError::Config(format!("device `{text}`: {why}"))
}

impl FromStr for DeviceSpec {
    type Err = DensumError;

    fn from_str(text: &str) -> Result<Self> {
        let (name, index) = match text.trim().split_once(':') {
            Some((n, i)) => (n, Some(i)),
            None => (text.trim(), None),
        };
        let lower = name.to_ascii_lowercase();
        let backend = match lower.as_str() {
            // `flex` is Burn's name for the same backend.
            "cpu" | "flex" => BackendKind::Cpu,
            other => BackendKind::ALL
                .into_iter()
                .find(|b| b.name() == other)
                .ok_or_else(|| {
                    spec_err(
                        text,
                        format!(
                            "unknown backend `{name}`; expected cpu, cuda[:N], rocm[:N], wgpu[:N], vulkan[:N] or metal[:N]"
                        ),
                    )
                })?,
        };
        let index = match index {
            None => None,
            Some(i) => Some(i.parse::<usize>().map_err(|_| {
                spec_err(
                    text,
                    format!("index `{i}` is not a device number (0, 1, ...)"),
                )
            })?),
        };
        if backend == BackendKind::Cpu && index.is_some() {
            return Err(spec_err(
                text,
                "the CPU backend has one device; write `cpu` (Flex uses every core through rayon; RAYON_NUM_THREADS limits them)",
            ));
        }
        Ok(DeviceSpec { backend, index })
    }
}

/// Parses a comma-separated device list (`cuda:0,cuda:1`), rejecting repeats and mixed
/// backends (one collective group holds one backend).
pub fn parse_list(text: &str) -> Result<Vec<DeviceSpec>> {
    let specs = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(str::parse)
        .collect::<Result<Vec<DeviceSpec>>>()?;
    check_list(&specs)?;
    Ok(specs)
}

/// Checks a device list for data-parallel training: not empty, one backend, no repeats.
pub fn check_list(specs: &[DeviceSpec]) -> Result<()> {
    let Some(first) = specs.first() else {
        return Err(DensumError::Config(
            "--devices: the list is empty; give e.g. --devices cuda:0,cuda:1".into(),
        ));
    };
    if let Some(other) = specs.iter().find(|s| s.backend != first.backend) {
        return Err(DensumError::Config(format!(
            "--devices: `{first}` and `{other}` are different backends; data-parallel workers all-reduce within one backend"
        )));
    }
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].contains(s) {
            return Err(DensumError::Config(format!(
                "--devices: `{s}` is listed twice"
            )));
        }
    }
    Ok(())
}

/// The error for a backend this build lacks, with the command that builds it.
fn not_compiled(backend: BackendKind) -> DensumError {
    let name = backend.name();
    DensumError::Config(format!(
        "this densum was built without the `{name}` feature: cargo build --release -p densum-cli --features {name}"
    ))
}

impl DeviceSpec {
    /// The Burn device, or an error naming what is missing: the backend's cargo feature, or
    /// the device (with how many this machine has).
    ///
    /// GPU devices are enumerated through Burn (`Device::enumerate`), which answers "none"
    /// rather than failing on a machine without the driver.
    pub fn to_device(&self) -> Result<Device> {
        if !self.backend.compiled() {
            return Err(not_compiled(self.backend));
        }
        match self.backend {
            BackendKind::Cpu => Ok(Device::flex()),
            _ => self.gpu_device(),
        }
    }

    #[cfg(any(feature = "cuda", feature = "rocm", feature = "wgpu"))]
    fn gpu_device(&self) -> Result<Device> {
        use burn::tensor::DeviceType;
        let kind = match self.backend {
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => DeviceType::Cuda,
            #[cfg(feature = "rocm")]
            BackendKind::Rocm => DeviceType::Rocm,
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => DeviceType::Wgpu,
            #[cfg(feature = "vulkan")]
            BackendKind::Vulkan => DeviceType::Vulkan,
            #[cfg(feature = "metal")]
            BackendKind::Metal => DeviceType::Metal,
            other => return Err(not_compiled(other)),
        };
        let found = Device::enumerate(kind).into_vec();
        let index = self.index.unwrap_or(0);
        let name = self.backend.name();
        match found.get(index) {
            Some(device) => Ok(device.clone()),
            None if found.is_empty() => Err(DensumError::Config(format!(
                "device `{self}`: Burn finds no {name} device on this machine (is the driver installed and the GPU visible to this process?); use --device cpu"
            ))),
            None => Err(DensumError::Config(format!(
                "device `{self}` does not exist: this machine has {} {name} device(s), {name}:0 to {name}:{}",
                found.len(),
                found.len() - 1
            ))),
        }
    }

    #[cfg(not(any(feature = "cuda", feature = "rocm", feature = "wgpu")))]
    fn gpu_device(&self) -> Result<Device> {
        Err(not_compiled(self.backend))
    }
}

/// The number format of a run's weights and arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// 32-bit floats everywhere (the only precision densum runs in).
    #[default]
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl FromStr for Precision {
    type Err = DensumError;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            _ => Err(DensumError::Config(format!(
                "--precision `{text}`: expected f32, bf16 or f16"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl Precision {
    /// Checks that densum can run in this precision on `device`; only f32 passes.
    ///
    /// Why low precision is refused rather than approximated: Burn 0.22 has no autocast (no
    /// per-operation choice of compute dtype with f32 master weights and loss scaling), so a
    /// bf16/f16 model would keep its weights, BN statistics and SGD updates in low precision
    /// too, which is not the mixed-precision recipe the papers' GPU numbers come from; and on
    /// the CPU (Flex) densum's fast kernels are f32-only.
    pub fn check(self, device: &DeviceSpec) -> Result<()> {
        match self {
            Precision::F32 => Ok(()),
            low if device.backend == BackendKind::Cpu => Err(DensumError::Config(format!(
                "--precision {low} on `cpu`: densum runs f32 only; the CPU backend has no fast {low} arithmetic and densum's Flex kernels are f32-only"
            ))),
            low => Err(DensumError::Config(format!(
                "--precision {low} on `{device}`: densum runs f32 only; Burn 0.22 has no autocast (mixed precision with f32 master weights), and casting the whole model would also keep weights, batch-norm statistics and SGD updates in {low}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(backend: BackendKind, index: Option<usize>) -> DeviceSpec {
        DeviceSpec { backend, index }
    }

    #[test]
    fn parses_every_backend_and_index() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::default());
        assert_eq!(
            "flex".parse::<DeviceSpec>().unwrap(),
            spec(BackendKind::Cpu, None)
        );
        assert_eq!(
            "cuda".parse::<DeviceSpec>().unwrap(),
            spec(BackendKind::Cuda, None)
        );
        assert_eq!(
            "CUDA:3".parse::<DeviceSpec>().unwrap(),
            spec(BackendKind::Cuda, Some(3))
        );
        assert_eq!(
            "rocm:1".parse::<DeviceSpec>().unwrap(),
            spec(BackendKind::Rocm, Some(1))
        );
        assert_eq!(
            "wgpu:0".parse::<DeviceSpec>().unwrap(),
            spec(BackendKind::Wgpu, Some(0))
        );
        assert_eq!(
            "vulkan".parse::<DeviceSpec>().unwrap(),
            spec(BackendKind::Vulkan, None)
        );
        assert_eq!(
            "metal:0".parse::<DeviceSpec>().unwrap(),
            spec(BackendKind::Metal, Some(0))
        );
        for text in ["cpu", "cuda", "cuda:2", "wgpu:1"] {
            assert_eq!(text.parse::<DeviceSpec>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn bad_spellings_name_the_problem() {
        let err = |t: &str| t.parse::<DeviceSpec>().unwrap_err().to_string();
        let e = err("tpu:0");
        assert!(
            e.contains("`tpu:0`") && e.contains("unknown backend `tpu`"),
            "{e}"
        );
        assert!(e.contains("cuda[:N]"), "{e}");
        let e = err("cuda:x");
        assert!(e.contains("index `x` is not a device number"), "{e}");
        let e = err("cuda:-1");
        assert!(e.contains("index `-1`"), "{e}");
        let e = err("cpu:1");
        assert!(e.contains("one device"), "{e}");
    }

    #[test]
    fn device_lists() {
        let l = parse_list("cuda:0,cuda:1").unwrap();
        assert_eq!(
            l,
            vec![
                spec(BackendKind::Cuda, Some(0)),
                spec(BackendKind::Cuda, Some(1))
            ]
        );
        let e = parse_list("cuda:0,cuda:0").unwrap_err().to_string();
        assert!(e.contains("`cuda:0` is listed twice"), "{e}");
        let e = parse_list("cuda:0,rocm:0").unwrap_err().to_string();
        assert!(e.contains("different backends"), "{e}");
        let e = parse_list("").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = parse_list("cuda:0,gpu:1").unwrap_err().to_string();
        assert!(e.contains("unknown backend `gpu`"), "{e}");
    }

    #[test]
    fn cpu_is_flex_and_the_default() {
        let d = DeviceSpec::default().to_device().unwrap();
        assert_eq!(d, Device::flex());
    }

    #[test]
    fn missing_backends_say_how_to_build_them() {
        for backend in BackendKind::ALL {
            if backend.compiled() {
                continue;
            }
            let e = spec(backend, Some(0)).to_device().unwrap_err().to_string();
            let name = backend.name();
            assert_eq!(
                e,
                format!(
                    "this densum was built without the `{name}` feature: cargo build --release -p densum-cli --features {name}"
                )
            );
        }
    }

    #[test]
    fn only_f32_runs() {
        assert_eq!("f32".parse::<Precision>().unwrap(), Precision::F32);
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("fp16".parse::<Precision>().unwrap(), Precision::F16);
        let e = "f8".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("`f8`") && e.contains("f32, bf16 or f16"), "{e}");
        let cpu = DeviceSpec::default();
        let cuda = spec(BackendKind::Cuda, Some(0));
        assert!(Precision::F32.check(&cpu).is_ok());
        assert!(Precision::F32.check(&cuda).is_ok());
        let e = Precision::Bf16.check(&cpu).unwrap_err().to_string();
        assert!(e.contains("bf16 on `cpu`") && e.contains("f32 only"), "{e}");
        let e = Precision::F16.check(&cuda).unwrap_err().to_string();
        assert!(
            e.contains("f16 on `cuda:0`") && e.contains("no autocast"),
            "{e}"
        );
    }

    /// The Flex-only fast paths are not taken on a GPU device. A CUDA/wgpu device value is
    /// constructible without the hardware (Burn opens it lazily), so this runs on any machine
    /// in a build with the feature; the default build has no other backend to construct.
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    #[test]
    fn fast_paths_are_flex_only() {
        use crate::nn::fast;
        #[allow(unused_mut)]
        let mut others: Vec<Device> = Vec::new();
        #[cfg(feature = "cuda")]
        others.push(Device::cuda(0));
        #[cfg(feature = "wgpu")]
        others.push(Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(0)));
        for d in others {
            assert!(!fast::enabled(&d), "{d:?}");
            assert!(!fast::enabled(&d.clone().autodiff()), "{d:?}");
        }
    }
}
