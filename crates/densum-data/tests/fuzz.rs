//! Fuzzing of every parser, on stable Rust.
//!
//! * proptest cases (run with the normal test suite): random bytes and mutated valid files
//!   for the CIFAR binary parser, the unpickler + CIFAR pickle reader, the MAT v5 + SVHN
//!   reader, `.tar.gz` archive reading, and the image decode path. The property: parsers
//!   return `Ok` or `Err`, never panic (and, for errors, the message names the file).
//! * `fuzz_long` (ignored): a mutation fuzzer over the same seed files for many iterations:
//!   `DENSUM_FUZZ_ITERS=200000 cargo test -p densum-data --release --test fuzz -- --ignored --nocapture`
//!   An input that panics is saved under the temp dir and the test fails naming it.

mod common;
use common::*;
use densum_data::formats::cifar::{Blob, CifarKind, Files, load_blob, wanted_member};
use densum_data::formats::{folder, mat, pickle, svhn};
use densum_data::rng::Rng;
use proptest::prelude::*;
use std::path::Path;

/// A named parser entry point.
type Target = (&'static str, fn(&[u8]));

/// The targets: each parses `bytes` and must not panic.
fn targets() -> Vec<Target> {
    fn blob(b: &[u8]) -> Blob {
        Blob {
            location: "fuzz-input".into(),
            bytes: b.to_vec(),
        }
    }
    fn check_err<T>(r: densum_data::Result<T>) {
        if let Err(e) = r {
            assert!(
                e.to_string().contains("fuzz-input"),
                "error does not name the file: {e}"
            );
        }
    }
    vec![
        ("cifar10-bin", |b| {
            let (mut p, mut l) = (Vec::new(), Vec::new());
            check_err(load_blob(
                &blob(b),
                CifarKind::C10Binary,
                false,
                &mut p,
                &mut l,
            ));
        }),
        ("cifar100-bin", |b| {
            let (mut p, mut l) = (Vec::new(), Vec::new());
            check_err(load_blob(
                &blob(b),
                CifarKind::C100Binary,
                true,
                &mut p,
                &mut l,
            ));
        }),
        ("pickle", |b| {
            let _ = pickle::unpickle(b).map(|v| v.get("data").map(pickle::ndarray_u8));
            let (mut p, mut l) = (Vec::new(), Vec::new());
            check_err(load_blob(
                &blob(b),
                CifarKind::C10Python,
                false,
                &mut p,
                &mut l,
            ));
            check_err(load_blob(
                &blob(b),
                CifarKind::C100Python,
                false,
                &mut p,
                &mut l,
            ));
        }),
        ("mat", |b| {
            let _ = mat::read_mat(b);
            check_err(svhn::parse(b, "fuzz-input"));
        }),
        ("targz", |b| {
            let d = std::env::temp_dir().join(format!("densum-fuzz-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            // One file per thread: proptest and the runner may run targets concurrently.
            let p =
                d.join(format!("{:?}.tar.gz", std::thread::current().id()).replace(['(', ')'], ""));
            std::fs::write(&p, b).unwrap();
            if let Err(e) = Files::archive(&p, &wanted_member) {
                assert!(e.to_string().contains(".tar.gz"), "{e}");
            }
        }),
        ("image", |b| {
            if let Err(e) = folder::decode_bytes(b, Path::new("fuzz-input.png")) {
                assert!(e.to_string().contains("fuzz-input"), "{e}");
            }
        }),
    ]
}

/// Valid seed files per target.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "cifar10-bin" => vec![c10_bin(0, 2)],
        "cifar100-bin" => vec![c100_bin(0, 2)],
        "pickle" => vec![
            c10_pickle(0, 2),
            c100_pickle(1, 2),
            names_pickle(&[("label_names", 10)]),
        ],
        "mat" => vec![svhn_mat(2, false).0, svhn_mat(2, true).0],
        "targz" => vec![tar_gz(
            "cifar-10-batches-bin",
            &cifar_files("c10bin", 1)[..2],
        )],
        "image" => {
            let mut png = Vec::new();
            rgb(8, 8, 1)
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            let mut jpg = Vec::new();
            rgb(8, 8, 1)
                .write_to(
                    &mut std::io::Cursor::new(&mut jpg),
                    image::ImageFormat::Jpeg,
                )
                .unwrap();
            vec![png, jpg]
        }
        _ => unreachable!(),
    }
}

/// One random mutation: flips, overwrites with boundary values, inserts, deletes,
/// truncates, or duplicates a chunk.
fn mutate(b: &mut Vec<u8>, rng: &mut Rng) {
    let n = 1 + rng.below(4);
    for _ in 0..n {
        let len = b.len().max(1) as u64;
        let pos = rng.below(len) as usize;
        match rng.below(7) {
            0 if !b.is_empty() => {
                let p = pos.min(b.len() - 1);
                b[p] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let v = [0u8, 0xff, 0x7f, 0x80, 1][rng.below(5) as usize];
                let p = pos.min(b.len() - 1);
                b[p] = v;
            }
            2 => b.insert(pos.min(b.len()), rng.next_u64() as u8),
            3 if !b.is_empty() => {
                b.remove(pos.min(b.len() - 1));
            }
            4 => b.truncate(pos),
            5 if b.len() > 8 => {
                // Overwrite 4 bytes with a large length-like integer.
                let p = pos.min(b.len() - 4);
                let v = [u32::MAX, 0x7fff_ffff, 0x1000_0000, 3073][rng.below(4) as usize];
                b[p..p + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ if !b.is_empty() => {
                let p = pos.min(b.len() - 1);
                let end = (p + 1 + rng.below(64) as usize).min(b.len());
                let chunk = b[p..end].to_vec();
                let at = rng.below(b.len() as u64 + 1) as usize;
                b.splice(at..at, chunk);
            }
            _ => b.push(rng.next_u64() as u8),
        }
    }
}

fn run(name: &str, bytes: &[u8]) {
    let t = targets().into_iter().find(|t| t.0 == name).unwrap();
    (t.1)(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), t in 0usize..6) {
        let name = targets()[t].0;
        run(name, &bytes);
    }

    #[test]
    fn random_bytes_with_valid_headers_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut m = mat::write::header();
        m.extend(&tail);
        run("mat", &m);
        let mut p = vec![0x80, 2];
        p.extend(&tail);
        run("pickle", &p);
        let mut g = vec![0x1f, 0x8b, 8, 0];
        g.extend(&tail);
        run("targz", &g);
    }

    #[test]
    fn mutated_seeds_never_panic(t in 0usize..6, seed in any::<u64>()) {
        let name = targets()[t].0;
        let ss = seeds(name);
        let mut rng = Rng::new(seed, 0, 0, 0);
        let mut b = ss[rng.below(ss.len() as u64) as usize].clone();
        mutate(&mut b, &mut rng);
        run(name, &b);
    }
}

#[test]
fn seeds_are_valid() {
    for (name, f) in targets() {
        for s in seeds(name) {
            f(&s);
        }
    }
    let (mut p, mut l) = (Vec::new(), Vec::new());
    let b = Blob {
        location: "x".into(),
        bytes: c10_pickle(0, 2),
    };
    load_blob(&b, CifarKind::C10Python, false, &mut p, &mut l).unwrap();
    assert_eq!(l.len(), 2);
}

#[test]
#[ignore = "long: DENSUM_FUZZ_ITERS=200000 cargo test -p densum-data --release --test fuzz -- --ignored"]
fn fuzz_long() {
    let iters: u64 = std::env::var("DENSUM_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("DENSUM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    std::panic::set_hook(Box::new(|_| {})); // failures are reported below, with the input
    let mut total = 0;
    for (t, (name, f)) in targets().into_iter().enumerate() {
        let ss = seeds(name);
        let start = std::time::Instant::now();
        for i in 0..iters {
            let mut rng = Rng::new(seed, t as u64, i, 0);
            let mut b = ss[rng.below(ss.len() as u64) as usize].clone();
            // Stack mutations so inputs drift further from the seeds.
            for _ in 0..1 + rng.below(3) {
                mutate(&mut b, &mut rng);
            }
            if std::panic::catch_unwind(|| f(&b)).is_err() {
                let p = std::env::temp_dir().join(format!("densum-fuzz-crash-{name}-{i}.bin"));
                std::fs::write(&p, &b).unwrap();
                let _ = std::panic::take_hook();
                panic!(
                    "target {name} panicked on iteration {i}; input saved to {}",
                    p.display()
                );
            }
            total += 1;
        }
        println!(
            "{name}: {iters} inputs in {:.1} s, no crash",
            start.elapsed().as_secs_f64()
        );
    }
    let _ = std::panic::take_hook();
    println!("{total} inputs, no crash");
}
