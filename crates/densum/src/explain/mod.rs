//! Looking inside trained networks: Grad-CAM class-activation maps ([`gradcam`]) and the
//! learned cross-layer weights of DSNet, DelugeNet and DenseNet as heat maps ([`reuse`]).
//! [`colormap`] and [`figure`] draw them; this module holds what both need: a network from a
//! weight file and raw maps written as `.npy`.

pub mod colormap;
pub mod figure;
pub mod gradcam;
pub mod reuse;

use std::io::Write;
use std::path::Path;

use burn::tensor::Device;

use crate::error::{DensumError, Result};
use crate::net::Net;
use crate::weights;
use crate::zoo::{self, ModelOptions, ModelSpec};

/// The model a weight file holds: `model` when given (it must agree with the name the file
/// records), else the recorded name; and the options the file records (empty if none).
pub fn weights_model(path: &Path, model: Option<&str>) -> Result<(String, ModelOptions)> {
    let file = weights::read_info(path)?;
    let name = crate::predict::model_for(&file, model, path)?;
    Ok((name, file.options.unwrap_or_default()))
}

/// Builds `model` with `options` on `device` and loads the weights at `path` into it.
pub fn load_net(
    path: &Path,
    model: &str,
    options: &ModelOptions,
    device: &Device,
) -> Result<(ModelSpec, Net)> {
    let spec = zoo::resolve(model, options)?;
    let net = weights::load(Net::new(&spec.config, device), &spec.name, path, device)?;
    Ok((spec, net))
}

/// Writes `values` (row-major, `shape`) as a NumPy `.npy` file (format 1.0, little-endian
/// f32), readable with `numpy.load`.
pub fn write_npy(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // The format pads the header with spaces and a newline to a multiple of 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * values.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let mut f = std::fs::File::create(path).map_err(|e| DensumError::io(path, e))?;
    f.write_all(&bytes).map_err(|e| DensumError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_data_follows() {
        let dir = std::env::temp_dir().join(format!("densum-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.npy");
        write_npy(&path, &[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.5]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.contains("'shape': (2, 3)"), "{header}");
        let last = &bytes[bytes.len() - 4..];
        assert_eq!(f32::from_le_bytes(last.try_into().unwrap()), 5.5);
        assert_eq!(bytes.len(), 10 + header_len + 24);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
