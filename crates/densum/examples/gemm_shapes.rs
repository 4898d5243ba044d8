//! The products of ResNet-50's convolutions (0.25x width, CIFAR, one image) through the `gemm`
//! crate and through densum's tile kernel (`nn::fast::tile_gemm`), one thread, best of 20 runs of
//! 10 calls each, so the two are compared in the same process a moment apart (whole-network
//! timings on a shared machine move more than the difference). Each product is
//! `Y[O, P] = W[O, K] · X[K, P]` with `X` a 1x1 convolution's input (`K` = input channels);
//! the tile kernel reads `X` from a contiguous band, as `nn::fast::conv` does. Used for the
//! per-product figures in docs/results/speed.md (session 5).
//!
//! `cargo run --release -p densum --example gemm_shapes [-- O,K,P ...]` (other products than
//! the built-in list, e.g. `128,512,196` for a DenseNet-121 1x1 convolution at 14x14).

use std::mem::MaybeUninit;
use std::time::Instant;

use densum::nn::fast::matmul::gemm;
use densum::nn::fast::tile_gemm::{Isa, PackedA, available, product_on, strided_rows};

/// Best seconds per call of `f` over 20 runs of 10 calls, after one warm-up call.
fn best(mut f: impl FnMut()) -> f64 {
    f();
    (0..20)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..10 {
                f();
            }
            t.elapsed().as_secs_f64() / 10.0
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    if !available() {
        println!("this CPU has no AVX2 + FMA: the tile kernel does not run here");
        return;
    }
    let isas: Vec<Isa> = Isa::runnable()
        .into_iter()
        .filter(|&i| i != Isa::Portable)
        .collect();
    let names: Vec<String> = isas.iter().map(|i| format!("{i:?} tile")).collect();
    println!(
        "O K P | gemm GFLOP/s | {} GFLOP/s | gemm time / best tile time",
        names.join(" GFLOP/s | ")
    );
    // (output rows O, depth K, columns P): from the command line, or ResNet-50's.
    let given: Vec<(usize, usize, usize)> = std::env::args()
        .skip(1)
        .map(|a| {
            let v: Vec<usize> = a
                .split(',')
                .map(|n| n.parse().expect("O,K,P as three integers"))
                .collect();
            assert_eq!(v.len(), 3, "O,K,P as three integers, got {a}");
            (v[0], v[1], v[2])
        })
        .collect();
    let builtin = [
        (16, 64, 1024),
        (64, 16, 1024),
        (16, 16, 1024),
        (16, 144, 1024),
        (32, 64, 1024),
        (32, 288, 256),
        (144, 16, 1024),
        (288, 32, 256),
        (64, 256, 64),
        (256, 64, 64),
        (128, 512, 16),
    ];
    let shapes = if given.is_empty() {
        builtin.to_vec()
    } else {
        given
    };
    for (o, k, p) in shapes {
        let w: Vec<f32> = (0..o * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let x: Vec<f32> = (0..k * p).map(|i| (i % 5) as f32 * 0.2).collect();
        let mut y = vec![0.0f32; o * p];
        let flop = 2.0 * (o * k * p) as f64;
        let g = best(|| gemm(o, p, k, &mut y, false, &w, (k, 1), &x, (p, 1)));
        let reference = y.clone();
        let a = PackedA::new(o, k, |r, d| w[r * k + d]);
        let band = (32 * 1024 / k).clamp(16, p) / 16 * 16;
        let rows = strided_rows(k, band);
        let mut buf = vec![0.0f32; k * band];
        let mut rates = Vec::new();
        let mut fastest = f64::MAX;
        for &isa in &isas {
            let mut out: Vec<MaybeUninit<f32>> = vec![MaybeUninit::new(0.0); o * p];
            let t = best(|| {
                for p0 in (0..p).step_by(band) {
                    let width = band.min(p - p0);
                    for (dst, src) in buf.chunks_exact_mut(band).zip(x.chunks_exact(p)) {
                        dst[..width].copy_from_slice(&src[p0..p0 + width]);
                    }
                    product_on(isa, &a, &buf, &rows, width, &mut out[p0..], p, false);
                }
            });
            // SAFETY: the products wrote every value (and the buffer started initialised).
            let err = out
                .iter()
                .zip(&reference)
                .map(|(a, b)| (unsafe { a.assume_init() } - b).abs() / (1.0 + b.abs()))
                .fold(0.0f32, f32::max);
            assert!(
                err < 1e-4,
                "{isa:?} tile and gemm disagree on {o}x{k}x{p}: {err}"
            );
            rates.push(format!("{:.1}", flop / t / 1e9));
            fastest = fastest.min(t);
        }
        println!(
            "{o} {k} {p} | {:.1} | {} | {:.2}",
            flop / g / 1e9,
            rates.join(" | "),
            g / fastest
        );
    }
}
