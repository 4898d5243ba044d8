//! Time one 3x3 stride-1 convolution's weight gradient alone, on the kernel densum picks for
//! it (printed), through the Flex extension's `conv2d_w_grad`: the mean and best of `reps`
//! calls after one warm-up call. Run it twice, the second time with
//! `DENSUM_WINOGRAD_WEIGHT_GRAD=0`, to compare Winograd's F(2x2, 3x3) with the in-place direct
//! kernel on one shape; tools/ab.sh-style alternation of the two runs keeps a drifting machine
//! from favouring either. Used for the thresholds of `conv/winograd.rs`'s
//! `weight_grad_applies` (docs/results/speed.md, session 18).
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p densum --example weight_grad -- N C O SIDE
//! [REPS]`, e.g. `8 256 256 14` for ResNet-50's 256 → 256 at 14x14, batch 8.

use std::time::Instant;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;
use burn::tensor::ops::ConvOptions;
use densum::nn::fast::conv::FastConvBackend;
use densum::nn::fast::probe;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("N C O SIDE [REPS]: whole numbers"))
        .collect();
    let [n, c, o, side] = args[..4] else {
        panic!("usage: weight_grad N C O SIDE [REPS]");
    };
    let reps = args.get(4).copied().unwrap_or(10).max(1);
    // As the CLI does, so large outputs reuse freed memory instead of fresh pages.
    densum::measure::alloc::keep_freed_memory();
    // Deterministic values in [-1, 1).
    let tensor = |shape: Vec<usize>| {
        let len: usize = shape.iter().product();
        let values: Vec<f32> = (0..len)
            .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
            .collect();
        FlexTensor::from_data(TensorData::new(values, shape))
    };
    let (x, w, dy) = (
        tensor(vec![n, c, side, side]),
        tensor(vec![o, c, 3, 3]),
        tensor(vec![n, o, side, side]),
    );
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let call = || Flex::conv2d_w_grad(x.clone(), w.clone(), dy.clone(), options.clone());
    let (_, ran) = probe::counted(call);
    let times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            drop(call());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let mean = times.iter().sum::<f64>() / reps as f64;
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    println!("{n}x{c}->{o}@{side}: mean {mean:.3} ms, best {best:.3} ms ({ran:?})");
}
