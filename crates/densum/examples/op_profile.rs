//! Per-operation timing of one ResNet-50 (0.25x width, CIFAR, batch 64) training step on the
//! default (Flex) device: every convolution shape of the network, forward, input gradient and
//! weight gradient separately, plus batch norm, ReLU and residual adds, each through Burn's
//! generic operation and through densum's Flex fast path (same run, so the ratio is fair on a
//! shared machine). Used to write docs/results/profile.md; `tools/op_profile.py` times the same
//! convolution shapes in PyTorch.
//!
//! `cargo run --release -p densum --example op_profile [-- --batch 64 --reps 3]`; with
//! `--net densenet121` the shapes are DenseNet-121's at 224x224 instead (use `--batch 8`; a
//! block's 1x1 convolutions as one row at the block's mean input width), with `--net
//! resnet50` ResNet-50's at 224x224. `--fast-only` skips Burn's generic convolution, `--kernel
//! 3` keeps only the 3x3 convolutions.

use std::time::Instant;

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use densum::nn::{batch_norm_forward, conv2d_fast};

/// (in channels, out channels, kernel, stride, input side, occurrences per forward pass).
const CONVS: &[(usize, usize, usize, usize, usize, usize)] = &[
    (3, 16, 3, 1, 32, 1),
    (16, 16, 1, 1, 32, 1),
    (64, 16, 1, 1, 32, 2),
    (16, 16, 3, 1, 32, 3),
    (16, 64, 1, 1, 32, 4),
    (64, 32, 1, 1, 32, 1),
    (32, 32, 3, 2, 32, 1),
    (64, 128, 1, 2, 32, 1),
    (128, 32, 1, 1, 16, 3),
    (32, 32, 3, 1, 16, 3),
    (32, 128, 1, 1, 16, 4),
    (128, 64, 1, 1, 16, 1),
    (64, 64, 3, 2, 16, 1),
    (128, 256, 1, 2, 16, 1),
    (256, 64, 1, 1, 8, 5),
    (64, 64, 3, 1, 8, 5),
    (64, 256, 1, 1, 8, 6),
    (256, 128, 1, 1, 8, 1),
    (128, 128, 3, 2, 8, 1),
    (256, 512, 1, 2, 8, 1),
    (512, 128, 1, 1, 4, 2),
    (128, 128, 3, 1, 4, 2),
    (128, 512, 1, 1, 4, 3),
];

/// DenseNet-121 at 224x224 (growth 32, bottleneck 128), same columns: the stem, per dense
/// block its 1x1 convolution (at the mean input width of the block's layers) and its 3x3, and
/// the transitions.
const DENSENET121: &[(usize, usize, usize, usize, usize, usize)] = &[
    (3, 64, 7, 2, 224, 1),
    (144, 128, 1, 1, 56, 6),
    (128, 32, 3, 1, 56, 6),
    (256, 128, 1, 1, 56, 1),
    (304, 128, 1, 1, 28, 12),
    (128, 32, 3, 1, 28, 12),
    (512, 256, 1, 1, 28, 1),
    (624, 128, 1, 1, 14, 24),
    (128, 32, 3, 1, 14, 24),
    (1024, 512, 1, 1, 14, 1),
    (752, 128, 1, 1, 7, 16),
    (128, 32, 3, 1, 7, 16),
];

/// ResNet-50 (torchvision, stride on the 3x3) at 224x224, same columns: the stem, per stage
/// its 1x1 reductions, 3x3s (the strided first one apart), expansions and projection.
const RESNET50: &[(usize, usize, usize, usize, usize, usize)] = &[
    (3, 64, 7, 2, 224, 1),
    (64, 64, 1, 1, 56, 1),
    (256, 64, 1, 1, 56, 2),
    (64, 64, 3, 1, 56, 3),
    (64, 256, 1, 1, 56, 4),
    (256, 128, 1, 1, 56, 1),
    (128, 128, 3, 2, 56, 1),
    (256, 512, 1, 2, 56, 1),
    (512, 128, 1, 1, 28, 3),
    (128, 128, 3, 1, 28, 3),
    (128, 512, 1, 1, 28, 4),
    (512, 256, 1, 1, 28, 1),
    (256, 256, 3, 2, 28, 1),
    (512, 1024, 1, 2, 28, 1),
    (1024, 256, 1, 1, 14, 5),
    (256, 256, 3, 1, 14, 5),
    (256, 1024, 1, 1, 14, 6),
    (1024, 512, 1, 1, 14, 1),
    (512, 512, 3, 2, 14, 1),
    (1024, 2048, 1, 2, 14, 1),
    (2048, 512, 1, 1, 7, 2),
    (512, 512, 3, 1, 7, 2),
    (512, 2048, 1, 1, 7, 3),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median milliseconds of `f` over `reps` runs after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let batch = arg("--batch", 64);
    let reps = arg("--reps", 3);
    // As the CLI does: without it every large output is a fresh mmap and its page faults.
    densum::measure::alloc::keep_freed_memory();
    let dev = Device::flex(); // the fast paths are Flex-only
    let ad = dev.clone().autodiff();
    let rnd = |shape: [usize; 4], d: &Device| {
        Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), d)
    };
    println!(
        "cin cout k s hw n | fwd_ms generic fast | xgrad_ms generic fast | wgrad_ms generic fast"
    );
    let mut tot = [0.0f64; 6];
    let args: Vec<String> = std::env::args().collect();
    let convs = match args
        .iter()
        .position(|a| a == "--net")
        .map(|i| args.get(i + 1))
    {
        None => CONVS,
        Some(Some(net)) if net == "densenet121" => DENSENET121,
        Some(Some(net)) if net == "resnet50" => RESNET50,
        Some(other) => panic!("--net takes densenet121 or resnet50, not {other:?}"),
    };
    // `--fast-only`: skip Burn's generic convolution (its columns print as 0) for quick A/B
    // runs of densum's kernels; `--kernel K`: only the convolutions with a KxK kernel.
    let fast_only = args.iter().any(|a| a == "--fast-only");
    let only_kernel = arg("--kernel", 0);
    for &(ci, co, k, s, hw, n) in convs {
        if only_kernel != 0 && k != only_kernel {
            continue;
        }
        let opts = ConvOptions::new([s, s], [k / 2, k / 2], [1, 1], 1);
        let x = rnd([batch, ci, hw, hw], &dev);
        let w = rnd([co, ci, k, k], &dev);
        let fwd = if fast_only {
            0.0
        } else {
            time(reps, || {
                let _ = conv2d(x.clone(), w.clone(), None, opts.clone()).into_data();
            })
        };
        let fwd_fast = time(reps, || {
            let _ = conv2d_fast(x.clone(), w.clone(), opts.clone()).into_data();
        });
        // Forward + backward with one of input / weight requiring a gradient, minus the
        // forward: the time of that gradient alone.
        let grad_time = |fast: bool, of_input: bool| {
            if fast_only && !fast {
                return 0.0;
            }
            let xa = rnd([batch, ci, hw, hw], &ad);
            let wa = rnd([co, ci, k, k], &ad);
            let (xa, wa) = if of_input {
                (xa.require_grad(), wa)
            } else {
                (xa, wa.require_grad())
            };
            let t = time(reps, || {
                let y = if fast {
                    conv2d_fast(xa.clone(), wa.clone(), opts.clone())
                } else {
                    conv2d(xa.clone(), wa.clone(), None, opts.clone())
                };
                let g = y.sum().backward();
                let p = if of_input { &xa } else { &wa };
                let _ = p.grad(&g).map(|t| t.into_data());
            });
            (t - if fast { fwd_fast } else { fwd }).max(0.0)
        };
        let row = [
            fwd,
            fwd_fast,
            grad_time(false, true),
            grad_time(true, true),
            grad_time(false, false),
            grad_time(true, false),
        ];
        println!(
            "{ci} {co} {k} {s} {hw} {n} | {:.2} {:.2} | {:.2} {:.2} | {:.2} {:.2}",
            row[0], row[1], row[2], row[3], row[4], row[5]
        );
        for (t, r) in tot.iter_mut().zip(row) {
            *t += r * n as f64;
        }
    }
    println!(
        "TOTAL conv per step (ms): fwd generic {:.1} fast {:.1} | xgrad generic {:.1} fast {:.1} | wgrad generic {:.1} fast {:.1}",
        tot[0], tot[1], tot[2], tot[3], tot[4], tot[5]
    );

    // Batch norm (train) + ReLU, forward + backward, on the largest activation; generic
    // (BatchNorm::forward then relu) and fused; plus an add for scale.
    let shape = [batch, 64, 32, 32];
    let bn = burn::nn::BatchNormConfig::new(64).init(&ad);
    let xa = rnd(shape, &ad).require_grad();
    let bn_relu = |fused: bool| {
        time(reps, || {
            let y = if fused {
                batch_norm_forward(&bn, xa.clone(), true)
            } else {
                burn::tensor::activation::relu(bn.forward(xa.clone()))
            };
            let g = y.sum().backward();
            let _ = xa.grad(&g).map(|t| t.into_data());
        })
    };
    let (generic, fused) = (bn_relu(false), bn_relu(true));
    let x0 = rnd(shape, &dev);
    let x1 = rnd(shape, &dev);
    let add = time(reps, || {
        let _ = (x0.clone() + x1.clone()).into_data();
    });
    println!(
        "{shape:?}: BN(train)+ReLU fwd+bwd generic {generic:.2} ms, fused {fused:.2} ms; add {add:.2} ms"
    );
}
