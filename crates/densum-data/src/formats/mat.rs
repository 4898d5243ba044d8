//! A reader for MATLAB level-5 MAT-files (the format of SVHN's `*_32x32.mat`), including
//! zlib-compressed `miCOMPRESSED` elements (MAT v7). Only what numeric arrays need: array
//! flags, dimensions, name and real part. Every error carries the byte offset of the element
//! (for compressed elements: the offset of the compressed element and the offset inside it).

use flate2::read::ZlibDecoder;
use std::io::Read;

/// A numeric array variable.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    /// Variable name.
    pub name: String,
    /// MATLAB class code (6 double, 9 uint8, ...).
    pub class: u8,
    /// Dimensions, MATLAB (column-major) order.
    pub dims: Vec<usize>,
    /// Real part, as stored.
    pub data: NumData,
}

/// The stored numbers of an array, in their storage type.
#[derive(Debug, Clone, PartialEq)]
pub enum NumData {
    /// `miUINT8` storage: kept as bytes (the fast path for images).
    U8(Vec<u8>),
    /// Any other numeric storage, widened to f64.
    F64(Vec<f64>),
}

impl NumData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            NumData::U8(v) => v.len(),
            NumData::F64(v) => v.len(),
        }
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element `i` as f64.
    pub fn at(&self, i: usize) -> f64 {
        match self {
            NumData::U8(v) => v[i] as f64,
            NumData::F64(v) => v[i],
        }
    }
}

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// Decompressed elements larger than this are refused (SVHN extra is 1.6 GB).
const MAX_DECOMPRESSED: u64 = 8 << 30;

type R<T> = Result<T, String>;

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    big_endian: bool,
    /// Offset of this buffer in the file, for messages (compressed elements name their own).
    what: String,
}

impl<'a> Cursor<'a> {
    fn here(&self) -> String {
        format!("{}offset {}", self.what, self.pos)
    }
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                format!(
                    "truncated: element needs {n} bytes at {}, {} left",
                    self.here(),
                    self.b.len() - self.pos
                )
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> R<u32> {
        let b: [u8; 4] = self.take(4)?.try_into().unwrap();
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
    /// Reads one element tag; returns `(type, payload)` and skips the padding.
    fn element(&mut self) -> R<(u32, &'a [u8], usize)> {
        let start = self.pos;
        let first = self.u32()?;
        if first >> 16 != 0 {
            // Small data element: size and type packed in 4 bytes, data in the next 4.
            let n = (first >> 16) as usize;
            let ty = first & 0xffff;
            if n > 4 {
                return Err(format!("small element of {n} bytes at {}", self.here()));
            }
            let d = self.take(4)?;
            return Ok((ty, &d[..n], start));
        }
        let ty = first;
        let n = self.u32()? as usize;
        let d = self.take(n)?;
        if ty != MI_COMPRESSED {
            // Uncompressed elements are padded to 8 bytes; the last one may omit it.
            let pad = (8 - n % 8) % 8;
            self.pos = (self.pos + pad).min(self.b.len());
        }
        Ok((ty, d, start))
    }
}

fn numbers(ty: u32, d: &[u8], big: bool, at: &str) -> R<NumData> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {{
            if d.len() % $n != 0 {
                return Err(format!(
                    "{} bytes is not a multiple of {} at {at}",
                    d.len(),
                    $n
                ));
            }
            NumData::F64(
                d.chunks_exact($n)
                    .map(|c| {
                        let a = c.try_into().unwrap();
                        (if big {
                            <$t>::from_be_bytes(a)
                        } else {
                            <$t>::from_le_bytes(a)
                        }) as f64
                    })
                    .collect(),
            )
        }};
    }
    Ok(match ty {
        MI_UINT8 => NumData::U8(d.to_vec()),
        MI_INT8 => NumData::F64(d.iter().map(|&x| x as i8 as f64).collect()),
        MI_INT16 => conv!(i16, 2),
        MI_UINT16 => conv!(u16, 2),
        MI_INT32 => conv!(i32, 4),
        MI_UINT32 => conv!(u32, 4),
        MI_SINGLE => conv!(f32, 4),
        MI_DOUBLE => conv!(f64, 8),
        MI_INT64 => conv!(i64, 8),
        MI_UINT64 => conv!(u64, 8),
        _ => return Err(format!("unsupported numeric storage type {ty} at {at}")),
    })
}

fn parse_matrix(payload: &[u8], big: bool, what: &str) -> R<Option<MatArray>> {
    let mut c = Cursor {
        b: payload,
        pos: 0,
        big_endian: big,
        what: what.to_string(),
    };
    let (ty, flags, _) = c.element()?;
    if ty != MI_UINT32 || flags.len() != 8 {
        return Err(format!("array flags missing at {}", c.here()));
    }
    let f0 = if big {
        u32::from_be_bytes(flags[..4].try_into().unwrap())
    } else {
        u32::from_le_bytes(flags[..4].try_into().unwrap())
    };
    let class = (f0 & 0xff) as u8;
    let complex = f0 & 0x0800 != 0;
    if !(6..=15).contains(&class) {
        // Cells, structs, objects, chars, sparse: not numeric, skip the variable.
        return Ok(None);
    }
    if complex {
        return Err(format!("complex array at {}", c.here()));
    }
    let at = c.here();
    let (ty, dims, _) = c.element()?;
    if ty != MI_INT32 || dims.len() % 4 != 0 || dims.is_empty() {
        return Err(format!("bad dimensions element at {at}"));
    }
    let dims: Vec<usize> = dims
        .chunks_exact(4)
        .map(|d| {
            let a = d.try_into().unwrap();
            let v = if big {
                i32::from_be_bytes(a)
            } else {
                i32::from_le_bytes(a)
            };
            usize::try_from(v).map_err(|_| format!("negative dimension at {at}"))
        })
        .collect::<R<_>>()?;
    let at = c.here();
    let (ty, name, _) = c.element()?;
    if ty != MI_INT8 {
        return Err(format!("bad array name element at {at}"));
    }
    let name = String::from_utf8_lossy(name).into_owned();
    let at = c.here();
    let (ty, real, _) = c.element()?;
    let data = numbers(ty, real, big, &at)?;
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("dimensions overflow at {at}"))?;
    if data.len() != n {
        return Err(format!(
            "array '{name}' of dimensions {dims:?} needs {n} elements, has {} at {at}",
            data.len()
        ));
    }
    Ok(Some(MatArray {
        name,
        class,
        dims,
        data,
    }))
}

/// Reads all numeric array variables of a MAT v5 file. Errors name the byte offset.
pub fn read_mat(bytes: &[u8]) -> R<Vec<MatArray>> {
    if bytes.len() < 128 {
        return Err(format!(
            "file of {} bytes is too short for a MAT-file header (128 bytes)",
            bytes.len()
        ));
    }
    if bytes.starts_with(b"MATLAB 7.3") {
        return Err("MAT v7.3 (HDF5) files are not supported; re-save with -v7".into());
    }
    if !bytes.starts_with(b"MATLAB 5.0 MAT-file") {
        return Err("bad magic at offset 0: not a MATLAB 5.0 MAT-file".into());
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        e => return Err(format!("bad endian indicator {e:?} at offset 126")),
    };
    let mut c = Cursor {
        b: bytes,
        pos: 128,
        big_endian: big,
        what: String::new(),
    };
    let mut out = Vec::new();
    while c.pos < bytes.len() {
        let (ty, payload, start) = c.element()?;
        match ty {
            MI_MATRIX => {
                if let Some(a) = parse_matrix(payload, big, &format!("matrix at offset {start}, "))?
                {
                    out.push(a);
                }
            }
            MI_COMPRESSED => {
                let mut inner = Vec::new();
                ZlibDecoder::new(payload)
                    .take(MAX_DECOMPRESSED)
                    .read_to_end(&mut inner)
                    .map_err(|e| format!("compressed element at offset {start}: {e}"))?;
                let mut ic = Cursor {
                    b: &inner,
                    pos: 0,
                    big_endian: big,
                    what: format!("compressed element at offset {start}, inner "),
                };
                while ic.pos < inner.len() {
                    let (ity, ip, istart) = ic.element()?;
                    if ity == MI_MATRIX {
                        let what = format!(
                            "compressed element at offset {start}, matrix at inner offset {istart}, "
                        );
                        if let Some(a) = parse_matrix(ip, big, &what)? {
                            out.push(a);
                        }
                    }
                }
            }
            _ => {} // Other top-level elements carry nothing we need.
        }
    }
    Ok(out)
}

/// Writers for tests and fuzz seeds: little-endian MAT v5, optionally compressed.
pub mod write {
    use flate2::{Compression, write::ZlibEncoder};
    use std::io::Write;

    fn element(out: &mut Vec<u8>, ty: u32, data: &[u8]) {
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out.resize(out.len() + (8 - data.len() % 8) % 8, 0);
    }

    /// The 128-byte header.
    pub fn header() -> Vec<u8> {
        let mut h = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created by: densum tests".to_vec();
        h.resize(116, b' ');
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&0x0100u16.to_le_bytes());
        h.extend_from_slice(b"IM");
        h
    }

    /// One numeric matrix element; `data` is stored with storage type `ty` (2 = uint8,
    /// 9 = double) and class `class` (9 = uint8, 6 = double).
    pub fn matrix(name: &str, class: u8, dims: &[usize], ty: u32, data: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        let mut flags = [0u8; 8];
        flags[0] = class;
        element(&mut m, 6, &flags);
        let d: Vec<u8> = dims
            .iter()
            .flat_map(|&d| (d as i32).to_le_bytes())
            .collect();
        element(&mut m, 5, &d);
        element(&mut m, 1, name.as_bytes());
        element(&mut m, ty, data);
        let mut out = Vec::new();
        element(&mut out, 14, &m);
        out
    }

    /// Wraps an element in a zlib-compressed element.
    pub fn compressed(elem: &[u8]) -> Vec<u8> {
        let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
        z.write_all(elem).unwrap();
        let z = z.finish().unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&15u32.to_le_bytes());
        out.extend_from_slice(&(z.len() as u32).to_le_bytes());
        out.extend_from_slice(&z);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_plain_and_compressed() {
        let mut f = write::header();
        f.extend(write::matrix(
            "X",
            9,
            &[2, 3],
            MI_UINT8,
            &[1, 2, 3, 4, 5, 6],
        ));
        let y: Vec<u8> = [1.0f64, 10.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        f.extend(write::compressed(&write::matrix(
            "y",
            6,
            &[2, 1],
            MI_DOUBLE,
            &y,
        )));
        let v = read_mat(&f).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "X");
        assert_eq!(v[0].data, NumData::U8(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(v[1].dims, vec![2, 1]);
        assert_eq!(v[1].data, NumData::F64(vec![1.0, 10.0]));
    }

    #[test]
    fn bad_magic_and_truncation() {
        assert!(read_mat(&[0u8; 200]).unwrap_err().contains("magic"));
        let mut f = write::header();
        f.extend(write::matrix(
            "X",
            9,
            &[2, 3],
            MI_UINT8,
            &[1, 2, 3, 4, 5, 6],
        ));
        let e = read_mat(&f[..f.len() - 12]).unwrap_err();
        assert!(e.contains("offset"), "{e}");
    }
}
