//! SVHN format 2: `train_32x32.mat`, `test_32x32.mat`, `extra_32x32.mat` (MATLAB v5) with
//! `X` uint8 `[H, W, 3, N]` (column-major) and `y` `[N, 1]`, where label 10 means digit 0.

use super::mat::{NumData, read_mat};
use crate::dataset::{Format, MemoryDataset, Split};
use crate::error::{Error, Result};
use std::path::Path;

/// File name of a split.
pub fn split_file(split: Split) -> Option<&'static str> {
    match split {
        Split::Train => Some("train_32x32.mat"),
        Split::Test => Some("test_32x32.mat"),
        Split::Extra => Some("extra_32x32.mat"),
        Split::Val => None,
    }
}

/// Parses SVHN `.mat` bytes; `location` names the file in errors.
pub fn parse(bytes: &[u8], location: &str) -> Result<MemoryDataset> {
    let err = |m: String| Error::format(location, m);
    let vars = read_mat(bytes).map_err(err)?;
    let x = vars
        .iter()
        .find(|v| v.name == "X")
        .ok_or_else(|| err("no variable 'X'".into()))?;
    let y = vars
        .iter()
        .find(|v| v.name == "y")
        .ok_or_else(|| err("no variable 'y'".into()))?;
    let (h, w, n) = match x.dims[..] {
        [h, w, 3, n] => (h, w, n),
        [h, w, 3] => (h, w, 1),
        _ => {
            return Err(err(format!(
                "'X' has dimensions {:?}, expected [H, W, 3, N]",
                x.dims
            )));
        }
    };
    if h == 0 || w == 0 || h > u32::MAX as usize || w > u32::MAX as usize {
        return Err(err(format!("'X' has bad image size {h}x{w}")));
    }
    if y.data.len() != n || y.dims.iter().filter(|&&d| d != 1).count() > 1 {
        return Err(err(format!(
            "'y' has dimensions {:?}, expected [{n}, 1]",
            y.dims
        )));
    }
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let v = y.data.at(i);
        if !(1.0..=10.0).contains(&v) || v.fract() != 0.0 {
            return Err(err(format!("'y'[{i}] = {v} is not a label in 1..=10")));
        }
        labels.push((v as u16) % 10);
    }
    // MATLAB is column-major: element (r, c, ch, k) is at r + h*(c + w*(ch + 3*k)).
    let img = h * w * 3;
    let mut pixels = vec![0u8; img * n];
    let conv = |out: &mut [u8], get: &dyn Fn(usize) -> Result<u8>| -> Result<()> {
        for k in 0..n {
            let o = &mut out[k * img..(k + 1) * img];
            for ch in 0..3 {
                for c in 0..w {
                    let base = h * (c + w * (ch + 3 * k));
                    for r in 0..h {
                        o[(r * w + c) * 3 + ch] = get(base + r)?;
                    }
                }
            }
        }
        Ok(())
    };
    match &x.data {
        NumData::U8(d) => conv(&mut pixels, &|i| Ok(d[i]))?,
        NumData::F64(d) => conv(&mut pixels, &|i| {
            let v = d[i];
            if (0.0..=255.0).contains(&v) {
                Ok(v as u8)
            } else {
                Err(err(format!("'X' element {i} = {v} is not a pixel value")))
            }
        })?,
    }
    Ok(MemoryDataset {
        format: Format::SvhnMat,
        source: location.to_string(),
        classes: (0..10).map(|d| d.to_string()).collect(),
        height: h as u32,
        width: w as u32,
        pixels,
        labels,
    })
}

/// Reads and parses an SVHN `.mat` file.
pub fn load(path: &Path) -> Result<MemoryDataset> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes, &path.display().to_string())
}
