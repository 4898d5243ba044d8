//! Time a training-mode batch norm + ReLU alone on one activation shape, on the default (Flex)
//! device: the forward (statistics and the normalisation) and the backward (both passes of
//! the input gradient, behind the gradient of a product with a fixed tensor and its sum, which
//! seed it), each the median and best of `reps` calls after one warm-up call.
//! `--cold` streams 64 MB through the caches before each call, so the operands come from
//! memory as inside a network. `--sum` adds a residual before the ReLU (a post-activation
//! block's end, `batch_norm_sum_forward`).
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p densum --example norm_pass -- N C H W [REPS]
//! [--cold] [--sum]`, e.g. `64 128 16 16` for ResNet-50 0.25x's expansion output at CIFAR size.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use densum::nn::{batch_norm_forward, batch_norm_sum_forward};

/// Median and best of `times` (milliseconds).
fn summary(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let cold = raw.iter().any(|a| a == "--cold");
    let sum = raw.iter().any(|a| a == "--sum");
    let args: Vec<usize> = raw
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse().expect("N C H W [REPS]: whole numbers"))
        .collect();
    let [n, c, h, w] = args[..4] else {
        panic!("usage: norm_pass N C H W [REPS] [--cold] [--sum]");
    };
    let reps = args.get(4).copied().unwrap_or(10).max(1);
    densum::measure::alloc::keep_freed_memory();
    let device = Device::flex().autodiff();
    let bn = burn::nn::BatchNormConfig::new(c).init(&device);
    let x =
        Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let dy = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
    let r =
        Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device).require_grad();
    // 64 MB, twice the L3 cache of the machines measured here.
    let mut junk = vec![0u8; if cold { 64 << 20 } else { 0 }];
    let (mut forward, mut backward) = (vec![], vec![]);
    for rep in 0..=reps {
        junk.fill(rep as u8);
        std::hint::black_box(&junk);
        let t = Instant::now();
        let y = if sum {
            batch_norm_sum_forward(&bn, x.clone(), r.clone(), true)
        } else {
            batch_norm_forward(&bn, x.clone(), true)
        };
        let mid = Instant::now();
        let grads = (y * dy.clone()).sum().backward();
        let _ = x.grad(&grads).map(|g| g.into_data());
        if rep > 0 {
            forward.push((mid - t).as_secs_f64() * 1e3);
            backward.push(mid.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (fm, fb) = summary(forward);
    let (bm, bb) = summary(backward);
    let what = if sum {
        "batch norm + sum + ReLU"
    } else {
        "batch norm + ReLU"
    };
    println!(
        "{what} [{n}, {c}, {h}, {w}]: forward median {fm:.3} ms (best {fb:.3}), backward median {bm:.3} ms (best {bb:.3})"
    );
}
