//! Time one stride-1 3x3 (or, with `--kernel 1`, 1x1) convolution's weight gradient alone
//! (or, with `--pass forward`, `input` or `inference`, its forward, input gradient or forward
//! with a folded batch norm and ReLU), on the kernel densum picks for it (printed), through the
//! Flex extension (`conv2d_w_grad`, `fast_conv2d`, `conv2d_x_grad`, `fast_conv2d_affine`): the
//! mean, median and best of `reps` calls after one warm-up call. `--cold` streams 64 MB through
//! the caches before each call, so the operands come from memory as inside a network. Run the
//! weight gradient twice, the second time with `DENSUM_WINOGRAD_WEIGHT_GRAD=0`, to compare
//! Winograd's F(2x2, 3x3) with the in-place direct kernel on one shape; tools/ab.sh-style
//! alternation of the two runs keeps a drifting machine from favouring either. Used for the
//! thresholds of `conv/winograd.rs`'s `weight_grad_applies` (docs/results/speed.md, session 18).
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p densum --example weight_grad -- N C O SIDE
//! [REPS] [--pass weight|forward|input|inference] [--kernel 1|3] [--cold]`, e.g. `8 256 256
//! 14` for ResNet-50's 256 → 256 at 14x14, batch 8. Two builds' binaries run in turn compare a
//! change to a kernel on one shape (the Winograd weight transform's, session 19).

use std::time::Instant;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;
use burn::tensor::ops::ConvOptions;
use densum::nn::fast::conv::FastConvBackend;
use densum::nn::fast::probe;

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let option = |name: &str| {
        raw.iter()
            .position(|a| a == name)
            .map(|i| raw.get(i + 1).map(String::as_str).unwrap_or("").to_string())
    };
    let pass = option("--pass").unwrap_or_else(|| "weight".to_string());
    let kernel: usize = option("--kernel")
        .map(|k| k.parse().expect("--kernel takes 1 or 3"))
        .unwrap_or(3);
    if ![1, 3].contains(&kernel) {
        panic!("--kernel takes 1 or 3, not {kernel}");
    }
    if !["weight", "forward", "input", "inference"].contains(&pass.as_str()) {
        panic!("--pass takes weight, forward, input or inference, not {pass:?}");
    }
    let cold = raw.iter().any(|a| a == "--cold");
    // Option names and the values right after them are not positional arguments.
    let args: Vec<usize> = raw
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with("--") && (*i == 0 || !["--pass", "--kernel"].contains(&&*raw[i - 1]))
        })
        .map(|(_, a)| a)
        .map(|a| a.parse().expect("N C O SIDE [REPS]: whole numbers"))
        .collect();
    let [n, c, o, side] = args[..4] else {
        panic!(
            "usage: weight_grad N C O SIDE [REPS] [--pass weight|forward|input|inference] [--kernel 1|3] [--cold]"
        );
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
        tensor(vec![o, c, kernel, kernel]),
        tensor(vec![n, o, side, side]),
    );
    let pad = kernel / 2;
    let options = ConvOptions::new([1, 1], [pad, pad], [1, 1], 1);
    let (scale, shift) = (tensor(vec![o]), tensor(vec![o]));
    let call = || match pass.as_str() {
        "forward" => Flex::fast_conv2d(x.clone(), w.clone(), options.clone()),
        // A folded batch norm and ReLU: the inference epilogue.
        "inference" => Flex::fast_conv2d_affine(
            x.clone(),
            w.clone(),
            scale.clone(),
            shift.clone(),
            options.clone(),
            true,
        ),
        "input" => Flex::conv2d_x_grad(x.clone(), w.clone(), dy.clone(), options.clone()),
        _ => Flex::conv2d_w_grad(x.clone(), w.clone(), dy.clone(), options.clone()),
    };
    let (_, ran) = probe::counted(call);
    // 64 MB, twice the L3 cache of the machines measured here.
    let mut junk = vec![0u8; if cold { 64 << 20 } else { 0 }];
    let mut times: Vec<f64> = (0..reps)
        .map(|rep| {
            // With `--cold`, the operands come from memory, as inside a network.
            junk.fill(rep as u8);
            std::hint::black_box(&junk);
            let start = Instant::now();
            drop(call());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let mean = times.iter().sum::<f64>() / reps as f64;
    times.sort_by(f64::total_cmp);
    let (median, best) = (times[reps / 2], times[0]);
    println!(
        "{pass} {n}x{c}->{o} {kernel}x{kernel} @{side}: mean {mean:.3} ms, median {median:.3} ms, best {best:.3} ms ({ran:?})"
    );
}
