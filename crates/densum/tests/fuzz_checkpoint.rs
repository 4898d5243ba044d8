//! Fuzzing of the checkpoint path (`weights::import`), as crates/densum-data/tests/fuzz.rs
//! does for the dataset parsers: proptest mutations (truncations, byte flips, spliced runs)
//! of valid small checkpoints, zip and legacy, opened and imported into their model. The
//! property: an error naming the file or a loaded model; never a panic, and never a panic
//! caught inside the reader (the error would say "reader failed").
//!
//! More cases: `PROPTEST_CASES=2000 cargo test -p densum --release --test fuzz_checkpoint`.

use std::path::{Path, PathBuf};

use densum::weights::import;
use densum::zoo::{self, ModelOptions};
use densum::{Device, Net};
use proptest::prelude::*;

const SEEDS: &[&str] = &[
    "resnet18_zip_train.pth",
    "resnet18_legacy_plain.pth",
    "resnet18_bf16_legacy.pt",
];

fn seed(i: usize) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints");
    std::fs::read(dir.join(SEEDS[i])).unwrap()
}

fn net() -> Net {
    let o = ModelOptions {
        dataset: Some(zoo::Dataset::parse("cifar10").unwrap()),
        width: Some(0.125),
        num_classes: Some(10),
        ..Default::default()
    };
    Net::new(
        &zoo::resolve("resnet18", &o).unwrap().config,
        &Device::default(),
    )
}

fn check(bytes: &[u8], path: &PathBuf) -> Result<(), TestCaseError> {
    std::fs::write(path, bytes).unwrap();
    let r = import::open_checkpoint(path)
        .and_then(|c| import::import_into(net(), &c, false, &Device::default()));
    if let Err(e) = r {
        let e = e.to_string();
        prop_assert!(
            e.contains("fuzz-input"),
            "error does not name the file: {e}"
        );
        prop_assert!(!e.contains("reader failed"), "the reader panicked: {e}");
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip(Vec<(usize, u8)>),
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        prop::collection::vec((any::<usize>(), 1u8..=255), 1..8).prop_map(Mutation::Flip),
        (any::<usize>(), any::<usize>(), 1usize..64)
            .prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn apply(mut b: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let len = b.len();
    match m {
        Mutation::Truncate(n) => b.truncate(n % len),
        Mutation::Flip(flips) => {
            for (at, x) in flips {
                b[at % len] ^= x;
            }
        }
        // Copy a run of bytes over another place: plausible lengths and opcodes elsewhere.
        Mutation::Splice(from, to, n) => {
            let (from, to) = (from % len, to % len);
            let n = (*n).min(len - from).min(len - to);
            let run = b[from..from + n].to_vec();
            b[to..to + n].copy_from_slice(&run);
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_checkpoints_give_errors_not_panics(which in 0..SEEDS.len(), m in mutation()) {
        let dir = std::env::temp_dir().join(format!("densum-fuzz-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("fuzz-input-{which}.pth"));
        check(&apply(seed(which), &m), &path)?;
    }
}
