//! Writers of small datasets in every supported format, shared by the tests and the fuzz
//! seeds. Pixels are pseudo-random but deterministic, so expected values are computable.
#![allow(dead_code)]

use densum_data::formats::{mat, pickle};
use flate2::{Compression, write::GzEncoder};
use std::path::{Path, PathBuf};

/// A 32x32 CHW image derived from `(seed, i)`.
pub fn chw(seed: u32, i: u32) -> Vec<u8> {
    (0..3072u32)
        .map(|k| {
            (k.wrapping_mul(31) ^ i.wrapping_mul(97) ^ seed.wrapping_mul(13)).wrapping_add(k / 7)
                as u8
        })
        .collect()
}

/// CHW -> HWC, as the readers return images.
pub fn to_hwc(chw: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 3072];
    for c in 0..3 {
        for p in 0..1024 {
            out[p * 3 + c] = chw[c * 1024 + p];
        }
    }
    out
}

/// A CIFAR-10 binary batch of `n` records with labels `(i + seed) % 10`.
pub fn c10_bin(seed: u32, n: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(((i + seed) % 10) as u8);
        v.extend(chw(seed, i));
    }
    v
}

/// A CIFAR-100 binary batch: coarse `fine % 20`, fine `(i + seed) % 100`.
pub fn c100_bin(seed: u32, n: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        let fine = ((i + seed) % 100) as u8;
        v.push(fine % 20);
        v.push(fine);
        v.extend(chw(seed, i));
    }
    v
}

/// A CIFAR-10 Python batch pickle (protocol 2, numpy array), labels `(i + seed) % 10`.
pub fn c10_pickle(seed: u32, n: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..n).flat_map(|i| chw(seed, i)).collect();
    let mut arr = Vec::new();
    pickle::write::ndarray_u8(&mut arr, &[n as usize, 3072], &data);
    let mut labels = Vec::new();
    pickle::write::int_list(
        &mut labels,
        &(0..n).map(|i| (i + seed) % 10).collect::<Vec<_>>(),
    );
    let mut name = Vec::new();
    pickle::write::bytes(&mut name, b"training batch 1 of 5");
    let names: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("img_{i}.png").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = names.iter().map(|v| v.as_slice()).collect();
    let mut files = Vec::new();
    pickle::write::bytes_list(&mut files, &refs);
    pickle::write::dict(&[
        (b"batch_label", name),
        (b"labels", labels),
        (b"data", arr),
        (b"filenames", files),
    ])
}

/// A CIFAR-100 Python pickle (`train`/`test`).
pub fn c100_pickle(seed: u32, n: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..n).flat_map(|i| chw(seed, i)).collect();
    let mut arr = Vec::new();
    pickle::write::ndarray_u8(&mut arr, &[n as usize, 3072], &data);
    let fine: Vec<u32> = (0..n).map(|i| (i + seed) % 100).collect();
    let mut f = Vec::new();
    pickle::write::int_list(&mut f, &fine);
    let mut c = Vec::new();
    pickle::write::int_list(&mut c, &fine.iter().map(|x| x % 20).collect::<Vec<_>>());
    pickle::write::dict(&[(b"fine_labels", f), (b"coarse_labels", c), (b"data", arr)])
}

/// The `meta` pickles.
pub fn names_pickle(pairs: &[(&str, usize)]) -> Vec<u8> {
    let lists: Vec<(&[u8], Vec<u8>)> = pairs
        .iter()
        .map(|(k, n)| {
            let names: Vec<Vec<u8>> = (0..*n).map(|i| format!("{k}{i}").into_bytes()).collect();
            let refs: Vec<&[u8]> = names.iter().map(|v| v.as_slice()).collect();
            let mut l = Vec::new();
            pickle::write::bytes_list(&mut l, &refs);
            (k.as_bytes(), l)
        })
        .collect();
    pickle::write::dict(&lists)
}

/// Files `(name, bytes)` of a CIFAR layout with `n` images per batch.
pub fn cifar_files(kind: &str, n: u32) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    match kind {
        "c10bin" => {
            for b in 1..=5 {
                v.push((format!("data_batch_{b}.bin"), c10_bin(b, n)));
            }
            v.push(("test_batch.bin".into(), c10_bin(0, n)));
            let names: String = (0..10).map(|i| format!("class{i}\n")).collect();
            v.push(("batches.meta.txt".into(), names.into_bytes()));
        }
        "c10py" => {
            for b in 1..=5 {
                v.push((format!("data_batch_{b}"), c10_pickle(b, n)));
            }
            v.push(("test_batch".into(), c10_pickle(0, n)));
            v.push(("batches.meta".into(), names_pickle(&[("label_names", 10)])));
        }
        "c100bin" => {
            v.push(("train.bin".into(), c100_bin(1, n)));
            v.push(("test.bin".into(), c100_bin(0, n)));
            let f: String = (0..100).map(|i| format!("fine{i}\n")).collect();
            let c: String = (0..20).map(|i| format!("coarse{i}\n")).collect();
            v.push(("fine_label_names.txt".into(), f.into_bytes()));
            v.push(("coarse_label_names.txt".into(), c.into_bytes()));
        }
        "c100py" => {
            v.push(("train".into(), c100_pickle(1, n)));
            v.push(("test".into(), c100_pickle(0, n)));
            v.push((
                "meta".into(),
                names_pickle(&[("fine_label_names", 100), ("coarse_label_names", 20)]),
            ));
        }
        _ => panic!("unknown kind {kind}"),
    }
    v
}

/// Writes files into `dir`.
pub fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (n, b) in files {
        std::fs::write(dir.join(n), b).unwrap();
    }
}

/// A `.tar.gz` with `files` under `prefix/`.
pub fn tar_gz(prefix: &str, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (n, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("{prefix}/{n}"), bytes.as_slice())
            .unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// An SVHN `.mat` with `n` images (HWC pixel (r,c,ch) = f(i)), labels `1 + i % 10`.
/// Returns the file and the expected HWC images.
pub fn svhn_mat(n: usize, compressed: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut x = vec![0u8; 3072 * n];
    let mut expected = Vec::new();
    for k in 0..n {
        let hwc = to_hwc(&chw(7, k as u32));
        for r in 0..32 {
            for c in 0..32 {
                for ch in 0..3 {
                    x[r + 32 * (c + 32 * (ch + 3 * k))] = hwc[(r * 32 + c) * 3 + ch];
                }
            }
        }
        expected.push(hwc);
    }
    let y: Vec<u8> = (0..n)
        .flat_map(|i| ((1 + i % 10) as f64).to_le_bytes())
        .collect();
    let mut f = mat::write::header();
    let xm = mat::write::matrix("X", 9, &[32, 32, 3, n], 2, &x);
    let ym = mat::write::matrix("y", 6, &[n, 1], 9, &y);
    if compressed {
        f.extend(mat::write::compressed(&xm));
        f.extend(mat::write::compressed(&ym));
    } else {
        f.extend(xm);
        f.extend(ym);
    }
    (f, expected)
}

/// A small RGB image `w x h` derived from `i`.
pub fn rgb(w: u32, h: u32, i: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 8 + i) as u8, (y * 8) as u8, (i * 40) as u8])
    })
}

/// Writes `ROOT/<class>/<k>.png` (lossless, so pixels can be compared exactly); returns
/// the paths in torchvision order.
pub fn image_folder(root: &Path, classes: &[&str], per_class: u32) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (ci, c) in classes.iter().enumerate() {
        let d = root.join(c);
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..per_class {
            let p = d.join(format!("{k:03}.png"));
            rgb(12, 10, ci as u32 * 10 + k).save(&p).unwrap();
            out.push(p);
        }
    }
    out
}

/// A fresh temporary folder, unique per call (under the OS temp dir).
pub fn tmp(name: &str) -> PathBuf {
    // One directory per call: two tests building the same fixture (`loader.rs`'s `cifar(20)`)
    // ran at once in one process, and one read a file the other had just emptied to rewrite.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir()
        .join(format!("densum-data-tests-{}", std::process::id()))
        .join(format!("{name}-{call}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
