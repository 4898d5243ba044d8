//! Loader benchmark without the rest of densum (no tensor library to build), for measuring
//! the data pipeline alone: `densum-data bench PATH [--cache] [--batch-size N] [--workers N]
//! [--images N]`. It times what `densum data bench` times, with the same defaults (preset by
//! image size, normalisation by format, batches of 128, one worker per core); the other
//! `densum data` commands are in the `densum` binary.
//!
//! `cargo run --release -p densum-data --example densum-data -- bench PATH --cache`

use std::process::ExitCode;
use std::sync::Arc;

use densum_data::{BenchSetup, Dataset, LoaderConfig, Split, bench, bench_loader, open};

const USAGE: &str =
    "usage: densum-data bench PATH [--cache] [--batch-size N] [--workers N] [--images N]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let mut args = args.into_iter();
    if args.next().as_deref() != Some("bench") {
        return Err(USAGE.into());
    }
    let mut path = None;
    let mut images = None;
    let mut loader = LoaderConfig {
        batch_size: 128,
        ..Default::default()
    };
    while let Some(a) = args.next() {
        let mut number = |flag: &str| -> Result<usize, String> {
            let v = args
                .next()
                .ok_or(format!("{flag} needs a value; {USAGE}"))?;
            v.parse()
                .map_err(|_| format!("{flag} {v}: expected a whole number"))
        };
        match a.as_str() {
            "--cache" => loader.cache = true,
            "--batch-size" => loader.batch_size = number("--batch-size")?,
            "--workers" => loader.workers = number("--workers")?,
            "--images" => images = Some(number("--images")?),
            p if !p.starts_with("--") && path.is_none() => path = Some(p.to_string()),
            other => return Err(format!("unexpected argument `{other}`; {USAGE}")),
        }
    }
    let path = path.ok_or(USAGE)?;
    let ds: Arc<dyn Dataset> = Arc::from(open(&path, Split::Train).map_err(|e| e.to_string())?);
    let cache = loader.cache;
    let setup = BenchSetup {
        loader,
        ..Default::default()
    };
    let (loader, preset) = bench_loader(ds, &setup).map_err(|e| e.to_string())?;
    let r = bench(&loader, images).map_err(|e| e.to_string())?;
    println!("{}", r.line(&preset, cache));
    Ok(())
}
