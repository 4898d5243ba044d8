//! The Flex fast paths give the same values as Burn's generic operations: forward outputs and
//! gradients of input and weight agree to a relative error of 1e-4. Every comparison also
//! asserts, through `nn::fast::probe`, which kernel each side ran: the fast side its expected
//! kernel (the AVX2 tile kernel where this CPU has AVX2 and FMA), the reference none.

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use densum::nn::conv2d_fast;
use densum::nn::fast::probe::{Kernel, counted};
use densum::nn::fast::{self, Op};

mod common;
use common::{assert_ran, rel_err};

/// Whether the convolutions should take the tile kernel where their shape does: this CPU has
/// AVX2 and FMA (detected here, apart from the library's own check) and the environment does
/// not switch the kernel off (`DENSUM_TILE_GEMM=0`, documented in `nn/fast/mod.rs`).
fn tile_expected() -> bool {
    #[cfg(target_arch = "x86_64")]
    let cpu =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let cpu = false;
    cpu && std::env::var("DENSUM_TILE_GEMM").map_or(true, |v| v != "0")
}

/// The tile kernel runs exactly where the CPU has AVX2 and FMA (unless switched off).
#[test]
fn tile_kernel_is_chosen_by_the_cpu() {
    assert_eq!(fast::tile_kernel_enabled(), tile_expected());
}

/// Where a convolution's shape takes the tile kernel (when [`tile_expected`]): its forward,
/// its input gradient.
#[derive(Clone, Copy)]
struct Tiled {
    forward: bool,
    input_grad: bool,
}

const GEMM: Tiled = Tiled {
    forward: false,
    input_grad: false,
};

/// The forward kernel of a convolution with kernel size `k` whose shape takes the tile kernel
/// when `tiled`.
fn forward_kernel(tiled: bool, k: usize) -> Kernel {
    match (tiled && tile_expected(), k) {
        (false, _) => Kernel::ConvGemm,
        (true, 1) => Kernel::ConvTilePointwise,
        (true, _) => Kernel::ConvTileShifted,
    }
}

/// The weight-gradient kernel of a `c` → `o` convolution with kernel size `k`: 3x3 with at
/// least 16 outputs and at most 1 Mi weights read the input in place (`conv/direct.rs`)
/// where the tile kernel runs.
fn weight_grad_kernel(k: usize, c: usize, o: usize) -> Kernel {
    if tile_expected() && k == 3 && o >= 16 && c * 9 * o <= 1 << 20 {
        Kernel::ConvWeightGradDirect
    } else {
        Kernel::ConvWeightGrad
    }
}

/// The kernels one forward + backward of a `c` → `o` convolution with kernel size `k` runs:
/// `None` for a case the kernels do not cover (Burn's convolution inside the extension, three
/// times).
fn conv_kernels(k: usize, c: usize, o: usize, tiled: Option<Tiled>) -> Vec<(Kernel, u64)> {
    let Some(tiled) = tiled else {
        return vec![(Kernel::ConvGeneric, 3)];
    };
    let forward = forward_kernel(tiled.forward, k);
    let input_grad = if tiled.input_grad && tile_expected() {
        Kernel::ConvInputGradTile
    } else {
        Kernel::ConvInputGradGemm
    };
    vec![
        (forward, 1),
        (input_grad, 1),
        (weight_grad_kernel(k, c, o), 1),
    ]
}

/// Whether a stride-1 3x3 convolution with `c` inputs on an `hw` plane that Winograd does not
/// take runs its input gradient as the direct forward of the rotated weights (`conv/grad.rs`):
/// at least 32 input channels (the direct kernel's lanes) on at most 64 positions.
fn input_grad_direct_expected(c: usize, hw: [usize; 2]) -> bool {
    tile_expected() && c >= 32 && hw[0] * hw[1] <= 64
}

/// Output, input gradient and weight gradient of `conv` on the autodiff Flex device, with an
/// output gradient that is not all ones (so every position is weighted differently).
fn run(
    conv: impl Fn(Tensor<4>, Tensor<4>, ConvOptions<2>) -> Tensor<4>,
    x: &Tensor<4>,
    w: &Tensor<4>,
    dy: &Tensor<4>,
    options: &ConvOptions<2>,
) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let xa = x.clone().require_grad();
    let wa = w.clone().require_grad();
    let y = conv(xa.clone(), wa.clone(), options.clone());
    let grads = (y.clone() * dy.clone()).sum().backward();
    let dx = xa.grad(&grads).expect("input gradient");
    let dw = wa.grad(&grads).expect("weight gradient");
    (y.inner(), dx, dw)
}

#[allow(clippy::too_many_arguments)]
fn check(
    n: usize,
    c: usize,
    o: usize,
    hw: [usize; 2],
    k: usize,
    stride: usize,
    pad: usize,
    tiled: Tiled,
) {
    let options = ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1);
    check_options(n, c, o, hw, k, options, Some(tiled));
}

/// `tiled`: where the shape takes the tile kernel, or `None` when it falls back to Burn's
/// convolution inside the extension.
fn check_options(
    n: usize,
    c: usize,
    o: usize,
    hw: [usize; 2],
    k: usize,
    options: ConvOptions<2>,
    tiled: Option<Tiled>,
) {
    let expected = conv_kernels(k, c / options.groups, o, tiled);
    check_kernels(n, c, o, hw, k, options, &expected);
}

/// Values and both gradients of the fast convolution against Burn's, the fast side running
/// exactly the kernels `expected`.
fn check_kernels(
    n: usize,
    c: usize,
    o: usize,
    hw: [usize; 2],
    k: usize,
    options: ConvOptions<2>,
    expected: &[(Kernel, u64)],
) {
    let device = Device::flex().autodiff();
    assert!(
        fast::enabled(&device),
        "the comparison must exercise the fast path (is DENSUM_FAST_PATHS=0 set?)"
    );
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<4>::random([n, c, hw[0], hw[1]], normal, &device);
    let w = Tensor::<4>::random([o, c / options.groups, k, k], normal, &device);
    let probe = conv2d(x.clone(), w.clone(), None, options.clone());
    let dy = Tensor::<4>::random(probe.dims(), normal, &device);
    let case = format!("n{n} c{c} o{o} {hw:?} k{k} {options:?}");
    let ((y0, dx0, dw0), generic) =
        counted(|| run(|x, w, o| conv2d(x, w, None, o), &x, &w, &dy, &options));
    let ((y1, dx1, dw1), fast) = counted(|| run(conv2d_fast, &x, &w, &dy, &options));
    assert_ran(&generic, &[], &format!("reference {case}"));
    assert_ran(&fast, expected, &case);
    assert_eq!(y1.dims(), y0.dims(), "{case}");
    assert_eq!(dx1.dims(), dx0.dims(), "{case}");
    assert_eq!(dw1.dims(), dw0.dims(), "{case}");
    assert!(rel_err(y1, y0) <= 1e-4, "output differs: {case}");
    assert!(rel_err(dx1, dx0) <= 1e-4, "input gradient differs: {case}");
    assert!(rel_err(dw1, dw0) <= 1e-4, "weight gradient differs: {case}");
}

#[test]
fn pointwise_convolutions_match_generic() {
    check(3, 8, 12, [6, 5], 1, 1, 0, GEMM);
    check(2, 5, 7, [7, 7], 1, 2, 0, GEMM); // ResNet's strided projection (odd size)
}

#[test]
fn spatial_convolutions_match_generic() {
    check(3, 4, 6, [8, 8], 3, 1, 1, GEMM);
    check(2, 3, 5, [5, 9], 3, 1, 1, GEMM); // "same" convolution, non-square (shifted copies)
    check(2, 3, 4, [4, 1], 3, 1, 1, GEMM); // one column: every tap but the centre column wraps
    check(2, 4, 6, [9, 7], 3, 2, 1, GEMM); // stride 2, odd and non-square
    check(2, 3, 5, [11, 11], 7, 2, 3, GEMM); // ImageNet stem
    check(2, 3, 5, [12, 21], 7, 2, 3, GEMM); // even sides: every stride-2 row length
    check(2, 3, 4, [10, 11], 3, 3, 1, GEMM); // stride 3: the general gather and scatter
    check(2, 3, 4, [6, 6], 3, 1, 0, GEMM); // no padding
    check(1, 2, 3, [3, 3], 5, 1, 2, GEMM); // kernel larger than the map's interior
}

/// Column matrices over 1 MB are built and multiplied a band of output rows at a time
/// (forward and weight gradient; `conv/geom.rs`, `Geom::columns`).
#[test]
fn banded_columns_match_generic() {
    // ImageNet-sized stem: 147 x 13,110 columns, bands of 15 output rows (the last 9).
    check(1, 3, 5, [227, 229], 7, 2, 3, GEMM);
    // Stride-1 "same" on a plane too narrow for the tile: bands of 32 rows of shifted copies.
    check(1, 60, 4, [400, 15], 3, 1, 1, GEMM);
}

/// Shapes that take the AVX2 tile kernel where the CPU has it (`nn/fast/conv/tiled.rs`): 1x1
/// with at most 32 outputs, depth ≥ 32 and ≥ 256 positions; stride-1 "same" convolutions on
/// planes at least 16 wide (shifted views of a padded copy), whose input gradients are the
/// same kind of convolution. Odd channel counts and plane widths reach the kernel's row and
/// column tails. Without AVX2 and FMA the same shapes must run on gemm.
#[test]
fn tiled_convolutions_match_generic() {
    let fwd = Tiled {
        forward: true,
        input_grad: false,
    };
    let grad = Tiled {
        forward: false,
        input_grad: true,
    };
    let both = Tiled {
        forward: true,
        input_grad: true,
    };
    check(2, 40, 13, [16, 17], 1, 1, 0, fwd); // input gradient with 40 outputs: gemm
    check(2, 13, 40, [16, 16], 1, 1, 0, grad); // forward with 40 outputs: gemm
    check(1, 40, 9, [32, 33], 1, 1, 0, fwd); // two bands of the copied input (816 + 240 columns)
    check(2, 5, 7, [9, 17], 3, 1, 1, both); // shifted 3x3, non-square
    check(2, 6, 11, [16, 16], 3, 1, 1, both);
    check(1, 3, 5, [18, 16], 5, 1, 2, both); // 5x5, pad 2
    check(2, 4, 6, [16, 16], 3, 2, 1, GEMM); // strided: not tiled, the gemm path
}

/// Whether stride-1 3x3 convolutions with enough channels should run through Winograd's
/// F(2x2, 3x3) or F(4x4, 3x3): the tile kernel runs and `DENSUM_WINOGRAD=0` is not set.
fn winograd_expected() -> bool {
    tile_expected() && std::env::var("DENSUM_WINOGRAD").map_or(true, |v| v != "0")
}

/// Stride-1 3x3 convolutions with padding 1, at least 32 channels each way and planes at least
/// 14 wide run through Winograd's algorithm (`nn/fast/conv/winograd.rs`), forward and input
/// gradient: F(2x2, 3x3) below 28 wide, F(4x4, 3x3) from 28. Odd and non-square planes reach
/// the cropped last tile row and column (of both tile sizes); a batch of 5 makes chunks of tile
/// rows that span images; a one-row plane has every tile cropped. 31 channels and 13-wide
/// planes stay on the direct kernels (and a one-row plane there exercises im2col's fully
/// shifted-out taps). The weight gradient takes F(2x2, 3x3) where `C·O ≥ 32·(C + O)`
/// (`winograd::weight_grad_applies`), at any width from 14: cropped tiles, chunks spanning
/// images (5 images of 15x15), several chunks per thread (16 images of 20x20 and 28x28), one-row
/// planes.
#[test]
fn winograd_convolutions_match_generic() {
    let same = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    for (n, c, o, hw) in [
        (2, 32, 32, [14, 14]),
        (5, 64, 33, [15, 15]),
        (2, 128, 32, [9, 14]),
        (1, 40, 32, [1, 14]),
        (2, 32, 40, [16, 16]),
        (2, 32, 40, [28, 28]),
        (5, 64, 33, [15, 29]),
        (3, 48, 32, [18, 30]),
        (1, 40, 32, [2, 31]),
        (2, 31, 40, [14, 14]),
        (2, 64, 64, [13, 13]),
        (1, 32, 16, [1, 5]),
        (5, 64, 64, [15, 15]),
        (2, 64, 96, [14, 29]),
        (1, 96, 64, [1, 14]),
        (4, 128, 128, [30, 30]),
        (16, 64, 64, [20, 20]),
        (16, 64, 64, [28, 28]),
    ] {
        let expected = if winograd_expected() && hw[1] >= 14 && c.min(o) >= 32 {
            let (forward, input_grad) = if hw[1] >= 28 {
                (Kernel::ConvWinograd4, Kernel::ConvInputGradWinograd4)
            } else {
                (Kernel::ConvWinograd, Kernel::ConvInputGradWinograd)
            };
            vec![
                (forward, 1),
                (input_grad, 1),
                if c * o >= 32 * (c + o)
                    && std::env::var("DENSUM_WINOGRAD_WEIGHT_GRAD").map_or(true, |v| v != "0")
                {
                    (Kernel::ConvWeightGradWinograd, 1)
                } else {
                    (weight_grad_kernel(3, c, o), 1)
                },
            ]
        } else {
            let tiled = hw[1] >= 16;
            let mut expected = conv_kernels(
                3,
                c,
                o,
                Some(Tiled {
                    forward: tiled,
                    input_grad: tiled,
                }),
            );
            if input_grad_direct_expected(c, hw) {
                expected[1] = (Kernel::ConvInputGradDirect, 1);
            }
            expected
        };
        check_kernels(n, c, o, hw, 3, same.clone(), &expected);
    }
}

/// Strided 3x3 convolutions with at least 32 outputs on output planes of at most 256
/// positions run their forward directly on the tile kernel (`nn/fast/conv/direct.rs`), and
/// 3x3 weight gradients with at least 16 outputs read the input in place the same way (stride
/// 1 and 2): odd, non-square and one-row planes, output counts that leave a partial vector,
/// the bounds either side; the input gradients of strided ones stay on the gemm path. The
/// inference forward with a folded norm too.
#[test]
fn direct_convolutions_match_generic() {
    use burn::module::{Param, RunningState};
    use burn::nn::BatchNormConfig;
    use densum::nn::{conv, conv_bn_forward};

    let strided = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
    let forward = if tile_expected() {
        Kernel::ConvDirect
    } else {
        Kernel::ConvGemm
    };
    for (n, c, o, hw, direct) in [
        (3, 5, 32, [16, 16], true),
        (2, 7, 40, [9, 7], true),
        (2, 3, 33, [1, 5], true),
        (1, 16, 64, [32, 32], true), // 16x16 outputs: the largest plane taken
        (1, 16, 64, [34, 34], false), // 17x17: gemm forward, direct weight gradient
        (2, 4, 31, [16, 16], false), // 31 outputs: gemm forward, direct weight gradient
        (1, 30, 1000, [6, 6], false), // 270,000 weights (over 256 Ki): gemm forward
        (1, 117, 1000, [4, 4], false), // 1,053,000 weights (over 1 Mi): gemm weight gradient
    ] {
        let mut expected = conv_kernels(3, c, o, Some(GEMM));
        if direct {
            expected[0] = (forward, 1);
        }
        if c * 9 * o > 256 * 1024 {
            // Over 1 MB of weights on a small plane: the whole batch's forward and input
            // gradient at once.
            expected[0] = (Kernel::ConvGemmBatch, 1);
            expected[1] = (Kernel::ConvInputGradBatch, 1);
        }
        check_kernels(n, c, o, hw, 3, strided.clone(), &expected);
    }
    // Stride 1: the direct forward and in-place weight gradient where neither Winograd nor
    // the shifted tile takes the forward (planes of at most 64 positions: 8x8, 4x5), the
    // shifted tile where it does (16x16, 16 channels in), gemm forwards for 31 outputs; the
    // input gradient direct too where at least 32 input channels give its lanes enough work.
    let same = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    for (n, c, o, hw, tiled, direct) in [
        (3, 64, 32, [8, 8], false, true),
        (2, 20, 48, [4, 5], false, true),
        (2, 8, 31, [8, 8], false, false),
        (2, 16, 32, [16, 16], true, false),
        (1, 8, 32, [9, 8], false, false), // 72 positions: gemm forward
        (3, 40, 16, [4, 4], false, false), // 16 outputs: only the input gradient direct
        (2, 33, 35, [5, 3], false, true),
        (1, 32, 32, [9, 8], false, false), // 72 positions: only the weight gradient direct
        (2, 8, 12, [8, 8], false, false),  // 12 outputs: gemm weight gradient
    ] {
        let tiled = Tiled {
            forward: tiled,
            input_grad: tiled,
        };
        let mut expected = conv_kernels(3, c, o, Some(tiled));
        if direct {
            expected[0] = (forward, 1);
        }
        if input_grad_direct_expected(c, hw) {
            expected[1] = (Kernel::ConvInputGradDirect, 1);
        }
        assert_eq!(
            expected[2].0 == Kernel::ConvWeightGradDirect,
            tile_expected() && o >= 16
        );
        check_kernels(n, c, o, hw, 3, same.clone(), &expected);
    }
    let device = Device::flex();
    let normal = Distribution::Normal(0.0, 1.0);
    let cv = conv(6, 36, 3, 2, 1, &device);
    let bn = burn::nn::BatchNorm {
        gamma: Param::from_tensor(Tensor::random([36], normal, &device)),
        beta: Param::from_tensor(Tensor::random([36], normal, &device)),
        running_mean: RunningState::new(Tensor::random([36], normal, &device)),
        running_var: RunningState::new(Tensor::random(
            [36],
            Distribution::Uniform(0.5, 2.0),
            &device,
        )),
        ..BatchNormConfig::new(36).init(&device)
    };
    let x = Tensor::<4>::random([3, 6, 11, 12], normal, &device);
    let y0 = burn::tensor::activation::relu(bn.forward(cv.forward(x.clone())));
    let (y1, ran) = counted(|| conv_bn_forward(&cv, &bn, x.clone(), true));
    assert_ran(&ran, &[(Kernel::ConvAffine, 1), (forward, 1)], "folded");
    assert!(rel_err(y1, y0) <= 1e-5);
}

/// Weight and input gradients on small planes (under 256 positions) with weights larger than
/// L2 (over 256 Ki values) are each one product over the whole batch (`weight_grad_batch` and
/// `input_grad_batch` in `nn/fast/conv/grad.rs`), and so is the forward on planes of at most
/// 64 positions (`forward_batch` in `nn/fast/conv/forward.rs`): 1x1 stride 1 (no im2col or
/// col2im), 1x1 stride 2 and 3x3 (im2col and col2im per image), odd plane sizes; the
/// per-image paths are checked by every other case (a 9x9 plane here: 81 positions).
#[test]
fn whole_batch_gradients_match_generic() {
    let options =
        |stride: usize, pad: usize| ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1);
    for (n, c, o, hw, k, stride, pad) in [
        (3, 520, 512, [5, 3], 1, 1, 0),
        (2, 300, 900, [7, 7], 1, 2, 0),
        (2, 300, 100, [6, 7], 3, 1, 1),
        (3, 64, 460, [5, 5], 3, 1, 1),
        (2, 64, 460, [9, 9], 3, 1, 1),
    ] {
        let mut expected = conv_kernels(k, c, o, Some(GEMM));
        if hw
            .map(|side: usize| side.div_ceil(stride))
            .iter()
            .product::<usize>()
            <= 64
        {
            expected[0] = (Kernel::ConvGemmBatch, 1);
        }
        expected[1] = (Kernel::ConvInputGradBatch, 1);
        check_kernels(n, c, o, hw, k, options(stride, pad), &expected);
    }
}

#[test]
fn unsupported_cases_fall_back_to_generic() {
    // Grouped and dilated convolutions take Burn's path inside the extension.
    let grouped = ConvOptions::new([1, 1], [1, 1], [1, 1], 4);
    check_options(2, 8, 8, [6, 6], 3, grouped, None);
    let dilated = ConvOptions::new([1, 1], [2, 2], [2, 2], 1);
    check_options(2, 4, 4, [8, 8], 3, dilated, None);
}

#[test]
fn inference_device_matches_generic() {
    let device = Device::flex();
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<4>::random([2, 4, 8, 8], normal, &device);
    let w = Tensor::<4>::random([6, 4, 3, 3], normal, &device);
    let options = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
    let (a, ran) = counted(|| conv2d_fast(x.clone(), w.clone(), options.clone()));
    assert_ran(&ran, &[(Kernel::ConvGemm, 1)], "inference convolution");
    let b = conv2d(x, w, None, options);
    assert!(rel_err(a, b) <= 1e-5);
}

/// The fused batch norm (+ ReLU) when `fused`, else `BatchNorm::forward` (+ `relu`).
fn norm(bn: &burn::nn::BatchNorm, x: Tensor<4>, relu: bool, fused: bool) -> Tensor<4> {
    if fused {
        return densum::nn::batch_norm_forward(bn, x, relu);
    }
    let y = bn.forward(x);
    if relu {
        burn::tensor::activation::relu(y)
    } else {
        y
    }
}

/// Fused batch norm (+ ReLU) against `BatchNorm::forward` (+ `relu`): output, gradients of
/// input, γ and β, and the running statistics it leaves behind.
/// Planes of `hw` values: [5, 4] (20) and [5, 5] (25) reach every tail branch of the
/// kernels' 16- and 8-wide reductions.
fn check_norm(relu: bool, hw: [usize; 2]) {
    use burn::module::{Module, Param};
    use burn::nn::BatchNormConfig;
    use densum::nn::batch_norm_forward;

    let device = Device::flex().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let c = 5;
    let base = BatchNormConfig::new(c).init(&device);
    // Non-trivial γ, β so that their gradients and the ReLU mask are exercised.
    let bn = burn::nn::BatchNorm {
        gamma: Param::from_tensor(Tensor::random([c], normal, &device)),
        beta: Param::from_tensor(Tensor::random([c], normal, &device)),
        ..base
    };
    let x = Tensor::<4>::random(
        [3, c, hw[0], hw[1]],
        Distribution::Normal(0.5, 2.0),
        &device,
    );
    let dy = Tensor::<4>::random([3, c, hw[0], hw[1]], normal, &device);
    assert!(fast::applies(Op::Norm, &x), "must exercise the fused path");
    let run = |fused: bool| {
        let bn = bn.clone().train();
        let xa = x.clone().require_grad();
        let y = norm(&bn, xa.clone(), relu, fused);
        let grads = (y.clone() * dy.clone()).sum().backward();
        let dx = xa.grad(&grads).unwrap();
        let dg = bn.gamma.val().grad(&grads).unwrap();
        let db = bn.beta.val().grad(&grads).unwrap();
        let rm = bn.running_mean.value();
        let rv = bn.running_var.value();
        (y.inner(), dx, dg, db, rm.inner(), rv.inner(), bn)
    };
    let ((y0, dx0, dg0, db0, rm0, rv0, bn0), generic) = counted(|| run(false));
    let ((y1, dx1, dg1, db1, rm1, rv1, bn1), fused) = counted(|| run(true));
    assert_ran(&generic, &[], "reference batch norm");
    let training = [
        (Kernel::BatchNormStats, 1),
        (Kernel::BatchNormApply, 1),
        (Kernel::BatchNormBackward, 1),
    ];
    assert_ran(&fused, &training, &format!("batch norm, relu={relu}"));
    assert!(rel_err(y1, y0) <= 1e-4, "output, relu={relu}");
    assert!(rel_err(dx1, dx0) <= 1e-4, "input gradient, relu={relu}");
    assert!(rel_err(dg1, dg0) <= 1e-4, "gamma gradient, relu={relu}");
    assert!(rel_err(db1, db0) <= 1e-4, "beta gradient, relu={relu}");
    assert!(rel_err(rm1, rm0) <= 1e-5, "running mean, relu={relu}");
    assert!(rel_err(rv1, rv0) <= 1e-5, "running variance, relu={relu}");

    // Inference (no autodiff) with the running statistics the training step produced.
    let inf = Device::flex();
    let xi = Tensor::<4>::random([2, c, 3, 3], normal, &inf);
    let (bn0, bn1) = (bn0.valid(), bn1.valid());
    let y0 = bn0.forward(xi.clone());
    let y0 = if relu {
        burn::tensor::activation::relu(y0)
    } else {
        y0
    };
    let (y1, ran) = counted(|| batch_norm_forward(&bn1, xi, relu));
    assert_ran(&ran, &[(Kernel::BatchNormApply, 1)], "inference batch norm");
    assert!(rel_err(y1, y0) <= 1e-5, "inference output, relu={relu}");
}

#[test]
fn fused_batch_norm_matches_generic() {
    check_norm(false, [5, 4]);
    check_norm(false, [5, 5]);
}

#[test]
fn fused_batch_norm_relu_matches_generic() {
    check_norm(true, [5, 4]);
    check_norm(true, [5, 5]);
}

/// The fused batch norm + ReLU's backward recomputes the ReLU's mask from its input: its
/// input gradient must equal, to the bit, the plain fused batch norm's with the output
/// gradient masked where the forward's output is zero.
#[test]
fn fused_batch_norm_relu_mask_is_the_forwards() {
    use burn::module::{Module, Param};
    use burn::nn::BatchNormConfig;
    use densum::nn::batch_norm_forward;

    let device = Device::flex().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let c = 4;
    let bn = burn::nn::BatchNorm {
        gamma: Param::from_tensor(Tensor::random([c], normal, &device)),
        beta: Param::from_tensor(Tensor::random([c], normal, &device)),
        ..BatchNormConfig::new(c).init(&device)
    }
    .train();
    let x = Tensor::<4>::random([3, c, 6, 5], Distribution::Normal(0.3, 2.0), &device);
    let dy = Tensor::<4>::random([3, c, 6, 5], normal, &device);
    let input_grad = |relu: bool, dy: Tensor<4>| {
        let xa = x.clone().require_grad();
        let y = batch_norm_forward(&bn, xa.clone(), relu);
        let grads = (y.clone() * dy).sum().backward();
        (y.inner(), xa.grad(&grads).unwrap())
    };
    let (y, with_relu) = input_grad(true, dy.clone());
    let masked = dy.inner().mask_fill(y.lower_equal_elem(0.0), 0.0);
    let (_, without) = input_grad(false, Tensor::from_inner(masked));
    let (a, b) = (with_relu.into_data(), without.into_data());
    assert_eq!(a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
}

#[test]
fn fused_group_norm_matches_generic() {
    use burn::nn::GroupNormConfig;
    use densum::nn::group_norm_forward;

    let device = Device::flex().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    // GroupNorm, LayerNorm (one group) and InstanceNorm (a group per channel), no affine.
    for groups in [3, 1, 6] {
        let gn = GroupNormConfig::new(groups, 6)
            .with_affine(false)
            .init(&device);
        let x = Tensor::<4>::random([2, 6, 5, 3], Distribution::Normal(1.0, 3.0), &device);
        let dy = Tensor::<4>::random([2, 6, 5, 3], normal, &device);
        assert!(fast::applies(Op::Norm, &x), "must exercise the fused path");
        let run = |fused: bool| {
            let xa = x.clone().require_grad();
            let y = if fused {
                group_norm_forward(&gn, xa.clone())
            } else {
                gn.forward(xa.clone())
            };
            let grads = (y.clone() * dy.clone()).sum().backward();
            (y.inner(), xa.grad(&grads).unwrap())
        };
        let ((y0, dx0), generic) = counted(|| run(false));
        let ((y1, dx1), fused) = counted(|| run(true));
        assert_ran(&generic, &[], "reference group norm");
        let kernels = [(Kernel::GroupNorm, 1), (Kernel::GroupNormBackward, 1)];
        assert_ran(&fused, &kernels, &format!("group norm, groups={groups}"));
        assert!(rel_err(y1, y0) <= 1e-4, "output, groups={groups}");
        assert!(rel_err(dx1, dx0) <= 1e-4, "input gradient, groups={groups}");
    }
    // Inference device.
    let inf = Device::flex();
    let gn = GroupNormConfig::new(2, 4).with_affine(false).init(&inf);
    let x = Tensor::<4>::random([2, 4, 3, 3], normal, &inf);
    let (y, ran) = counted(|| group_norm_forward(&gn, x.clone()));
    assert_ran(&ran, &[(Kernel::GroupNorm, 1)], "inference group norm");
    assert!(rel_err(y, gn.forward(x)) <= 1e-5);
}

/// Inference convolution with its batch norm folded in (`conv_bn_forward` on a device without
/// autodiff) against `BatchNorm::forward(Conv2d::forward(x))` (+ `relu`), with non-trivial
/// running statistics, γ and β, for pointwise, strided, padded and grouped (fallback) shapes.
#[test]
fn folded_conv_batch_norm_inference_matches_generic() {
    use burn::module::{Param, RunningState};
    use burn::nn::BatchNormConfig;
    use densum::nn::{conv, conv_bn_forward};

    let device = Device::flex();
    let normal = Distribution::Normal(0.0, 1.0);
    // (in, out, kernel, stride, groups, whether the 16x16 plane below takes the tile kernel)
    for (c, o, k, stride, groups, tiled) in [
        (8, 12, 1, 1, 1, false),
        (5, 7, 1, 2, 1, false),
        (4, 6, 3, 1, 1, true),
        (4, 6, 3, 2, 1, false),
        (3, 5, 7, 2, 1, false),
        (8, 8, 3, 1, 4, false), // grouped: Burn's convolution inside the extension
        (40, 12, 1, 1, 1, true), // tiled 1x1
    ] {
        let cv = conv(c, o, k, stride, groups, &device);
        let base = BatchNormConfig::new(o).init(&device);
        let bn = burn::nn::BatchNorm {
            gamma: Param::from_tensor(Tensor::random([o], normal, &device)),
            beta: Param::from_tensor(Tensor::random([o], normal, &device)),
            running_mean: RunningState::new(Tensor::random([o], normal, &device)),
            running_var: RunningState::new(Tensor::random(
                [o],
                Distribution::Uniform(0.5, 2.0),
                &device,
            )),
            ..base
        };
        for hw in [[9, 8], [16, 16]] {
            let x = Tensor::<4>::random([3, c, hw[0], hw[1]], normal, &device);
            for relu in [false, true] {
                let y0 = bn.forward(cv.forward(x.clone()));
                let y0 = if relu {
                    burn::tensor::activation::relu(y0)
                } else {
                    y0
                };
                let (y1, ran) = counted(|| conv_bn_forward(&cv, &bn, x.clone(), relu));
                let case = format!("c{c} o{o} k{k} s{stride} g{groups} {hw:?} relu={relu}");
                let forward = forward_kernel(tiled && hw == [16, 16], k);
                let folded = [(Kernel::ConvAffine, 1), (forward, 1)];
                let generic = [(Kernel::ConvGeneric, 1)];
                assert_ran(&ran, if groups == 1 { &folded } else { &generic }, &case);
                assert_eq!(y1.dims(), y0.dims(), "{case}");
                assert!(rel_err(y1, y0) <= 1e-5, "{case}");
            }
        }
    }
}

/// The one-pass statistics stay exact when the mean is large against the spread (where a
/// plain sum of squares would cancel in f32): normalised outputs and running variance match.
#[test]
fn fused_batch_norm_statistics_survive_a_large_mean() {
    use burn::module::Module;
    use burn::nn::BatchNormConfig;
    use densum::nn::batch_norm_forward;

    let device = Device::flex().autodiff();
    let bn = BatchNormConfig::new(3).init(&device).train();
    let x = Tensor::<4>::random([4, 3, 6, 6], Distribution::Normal(1000.0, 0.5), &device);
    let y0 = bn.clone().forward(x.clone());
    let fused = bn.clone();
    let (y1, ran) = counted(|| batch_norm_forward(&fused, x, false));
    let kernels = [(Kernel::BatchNormStats, 1), (Kernel::BatchNormApply, 1)];
    assert_ran(&ran, &kernels, "batch norm, large mean");
    assert!(rel_err(y1.inner(), y0.inner()) <= 1e-3, "normalised output");
    let (v0, v1) = (bn.running_var.value(), fused.running_var.value());
    assert!(rel_err(v1.inner(), v0.inner()) <= 1e-3, "running variance");
}

/// The fused residual sum + ReLU against `relu(a + b)`: output and both inputs' gradients,
/// including the case where both inputs are the same tensor.
#[test]
fn fused_add_relu_matches_generic() {
    use burn::tensor::activation::relu;
    use densum::nn::add_relu;

    let device = Device::flex().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let a = Tensor::<4>::random([3, 4, 5, 6], normal, &device);
    let b = Tensor::<4>::random([3, 4, 5, 6], normal, &device);
    let dy = Tensor::<4>::random([3, 4, 5, 6], normal, &device);
    assert!(
        fast::applies(Op::AddRelu, &a),
        "must exercise the fused path"
    );
    let run = |fused: bool| {
        let (aa, ba) = (a.clone().require_grad(), b.clone().require_grad());
        let y = if fused {
            add_relu(aa.clone(), ba.clone())
        } else {
            relu(aa.clone() + ba.clone())
        };
        let grads = (y.clone() * dy.clone()).sum().backward();
        (
            y.inner(),
            aa.grad(&grads).unwrap(),
            ba.grad(&grads).unwrap(),
        )
    };
    let ((y0, da0, db0), generic) = counted(|| run(false));
    let ((y1, da1, db1), fused) = counted(|| run(true));
    let kernels = [(Kernel::AddRelu, 1), (Kernel::AddReluBackward, 1)];
    assert_ran(&generic, &[], "reference add + relu");
    assert_ran(&fused, &kernels, "add + relu");
    assert!(rel_err(y1, y0) <= 1e-6, "output");
    assert!(rel_err(da1, da0) <= 1e-6, "first input's gradient");
    assert!(rel_err(db1, db0) <= 1e-6, "second input's gradient");

    // One tensor used twice: its gradient is the sum of both contributions.
    let aa = a.clone().require_grad();
    let (g1, ran) = counted(|| {
        (add_relu(aa.clone(), aa.clone()) * dy.clone())
            .sum()
            .backward()
    });
    assert_ran(&ran, &kernels, "add + relu of one tensor");
    let ab = a.clone().require_grad();
    let g0 = (relu(ab.clone() + ab.clone()) * dy.clone())
        .sum()
        .backward();
    assert!(rel_err(aa.grad(&g1).unwrap(), ab.grad(&g0).unwrap()) <= 1e-6);
}

/// `with_generic` sends one operation to the generic path on this thread, for the closure
/// only, and leaves the others fast.
#[test]
fn with_generic_sends_one_operation_to_the_generic_path() {
    use burn::nn::BatchNormConfig;
    use densum::nn::batch_norm_forward;

    let device = Device::flex();
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<4>::random([2, 4, 8, 8], normal, &device);
    let w = Tensor::<4>::random([6, 4, 3, 3], normal, &device);
    let bn = BatchNormConfig::new(4).init(&device);
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let both = || {
        let y = batch_norm_forward(&bn, x.clone(), true);
        conv2d_fast(y, w.clone(), options.clone())
    };
    let (fast_y, ran) = counted(both);
    let kernels = [(Kernel::BatchNormApply, 1), (Kernel::ConvGemm, 1)];
    assert_ran(&ran, &kernels, "both fast");
    let (generic_y, ran) = counted(|| fast::with_generic(Op::Norm, both));
    assert_ran(&ran, &[(Kernel::ConvGemm, 1)], "batch norm generic");
    assert!(rel_err(generic_y, fast_y) <= 1e-5);
    let ((), ran) = counted(|| {
        fast::with_generic(Op::Conv, || {
            fast::with_generic(Op::Norm, || {
                both();
            })
        })
    });
    assert_ran(&ran, &[], "both generic");
    let ((), ran) = counted(|| {
        both();
    });
    assert_ran(&ran, &kernels, "both fast again");
}

/// With `DENSUM_FAST_PATHS=0` every operation takes Burn's generic path: the convolutions,
/// norms and residual sums directly, DSNet's dense shortcuts and the memory-efficient
/// DenseNet's head in whole models, training and inference. The switch is read once per
/// process, so the check runs in a child process of this test binary.
#[test]
fn environment_switch_sends_every_operation_to_the_generic_path() {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "no_fast_kernel_runs_when_switched_off",
            "--include-ignored",
        ])
        .env("DENSUM_FAST_PATHS", "0")
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran the check: {stdout}"
    );
}

#[test]
#[ignore = "run with DENSUM_FAST_PATHS=0 by environment_switch_sends_every_operation_to_the_generic_path"]
fn no_fast_kernel_runs_when_switched_off() {
    use burn::nn::{BatchNormConfig, GroupNormConfig};
    use densum::Net;
    use densum::nn::{add_relu, batch_norm_forward, conv, conv_bn_forward, group_norm_forward};
    use densum::zoo::{self, Dataset, ModelOptions};

    assert_eq!(
        std::env::var("DENSUM_FAST_PATHS").as_deref(),
        Ok("0"),
        "this check needs DENSUM_FAST_PATHS=0"
    );
    let (inference, training) = (Device::flex(), Device::flex().autodiff());
    assert!(!fast::enabled(&inference) && !fast::enabled(&training));
    let normal = Distribution::Normal(0.0, 1.0);
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let ((), ran) = counted(|| {
        for device in [&inference, &training] {
            let x = Tensor::<4>::random([2, 4, 16, 16], normal, device);
            let cv = conv(4, 4, 3, 1, 1, device);
            let bn = BatchNormConfig::new(4).init(device);
            let gn = GroupNormConfig::new(2, 4).with_affine(false).init(device);
            let x = if device.is_autodiff() {
                x.require_grad()
            } else {
                x
            };
            let y = conv2d_fast(x.clone(), cv.weight.val(), options.clone());
            let y = batch_norm_forward(&bn, y, true);
            let y = add_relu(group_norm_forward(&gn, y), x.clone());
            if device.is_autodiff() {
                let _ = y.sum().backward();
            } else {
                let _ = y + conv_bn_forward(&cv, &bn, x, true);
            }
        }
        let dsnet = ModelOptions {
            dataset: Some(Dataset::Cifar100),
            width: Some(0.125),
            ..Default::default()
        };
        let densenet = ModelOptions {
            dataset: Some(Dataset::Cifar10),
            growth_rate: Some(6),
            block_config: Some(vec![3, 3]),
            memory_efficient: Some(true),
            ..Default::default()
        };
        for (model, options) in [("dsnet26", dsnet), ("densenet121", densenet)] {
            let spec = zoo::resolve(model, &options).unwrap();
            let net = burn::module::Module::train(Net::new(&spec.config, &training));
            let x = Tensor::<4>::random([2, 3, 16, 16], normal, &training);
            let _ = net.forward(x).sum().backward();
        }
    });
    assert_ran(&ran, &[], "DENSUM_FAST_PATHS=0");
}

/// Evaluation mode with gradients (Grad-CAM): running statistics on an autodiff device. The
/// input gradient is the per-channel scale γ/σ (masked by the ReLU), as Burn's inference
/// BatchNorm gives it, not the training gradient through batch statistics.
#[test]
fn batch_norm_with_running_statistics_differentiates_as_inference() {
    use burn::module::{Module, Param};
    use burn::nn::BatchNormConfig;

    let device = Device::flex().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let c = 4;
    let base = BatchNormConfig::new(c).init(&device);
    let bn = burn::nn::BatchNorm {
        gamma: Param::from_tensor(Tensor::random([c], normal, &device)),
        running_mean: burn::module::RunningState::new(Tensor::random([c], normal, &device)),
        ..base
    }
    .valid();
    let x = Tensor::<4>::random([2, c, 5, 4], Distribution::Normal(0.5, 2.0), &device);
    let dy = Tensor::<4>::random([2, c, 5, 4], normal, &device);
    for relu in [false, true] {
        let grad = |fused: bool| {
            let xa = x.clone().require_grad();
            let y = norm(&bn, xa.clone(), relu, fused);
            let grads = (y * dy.clone()).sum().backward();
            xa.grad(&grads).unwrap()
        };
        assert!(rel_err(grad(true), grad(false)) <= 1e-5, "relu={relu}");
    }
}

/// Block average pooling (DenseNet's transition pool) against Burn's `AvgPool2d`: output and
/// input gradient, for even and odd sides (the dropped row and column get no gradient) and
/// windows of 2 and 3; overlapping or padded windows keep Burn's operation.
#[test]
fn block_average_pooling_matches_generic() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::pool::AvgPool2dConfig;
    use densum::nn::avg_pool_forward;

    let device = Device::flex().autodiff();
    for (s, h, w) in [(2, 8, 6), (2, 7, 9), (3, 10, 7)] {
        let pool = AvgPool2dConfig::new([s, s]).init();
        let x = Tensor::<4>::random([2, 3, h, w], Distribution::Normal(0.0, 1.0), &device);
        let dy = Tensor::<4>::random(
            [2, 3, h / s, w / s],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let run = |fast_path: bool| {
            let x = x.clone().require_grad();
            let y = if fast_path {
                avg_pool_forward(&pool, x.clone())
            } else {
                pool.forward(x.clone())
            };
            let g = (y.clone() * dy.clone()).sum().backward();
            (y.inner(), x.grad(&g).unwrap())
        };
        let case = format!("window {s}, {h}x{w}");
        let ((y0, dx0), generic) = counted(|| run(false));
        let ((y1, dx1), fused) = counted(|| run(true));
        assert_ran(&generic, &[], &format!("generic, {case}"));
        let kernels = [(Kernel::BlockAvgPool, 1), (Kernel::BlockAvgPoolBackward, 1)];
        assert_ran(&fused, &kernels, &case);
        assert_eq!(y1.dims(), y0.dims(), "{case}");
        assert!(rel_err(y1, y0) <= 1e-6, "output: {case}");
        assert!(rel_err(dx1, dx0) <= 1e-6, "input gradient: {case}");
    }
    let x = Tensor::<4>::random([1, 2, 6, 6], Distribution::Normal(0.0, 1.0), &device);
    for pool in [
        AvgPool2dConfig::new([3, 3]).with_strides([1, 1]).init(),
        AvgPool2dConfig::new([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(),
    ] {
        let (y, ran) = counted(|| avg_pool_forward(&pool, x.clone()));
        assert_ran(&ran, &[], "overlapping or padded windows");
        assert!(rel_err(y, pool.forward(x.clone())) <= 1e-6);
    }
}

/// Window max pooling (the ImageNet stem's 3x3 stride-2 pool with padding 1, and others)
/// against Burn's `MaxPool2d`: output and input gradient, with padded edges, odd sides and
/// ties (a plane of repeated values, where the first maximum takes the gradient in both).
#[test]
fn window_max_pooling_matches_generic() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::pool::MaxPool2dConfig;
    use densum::nn::max_pool_forward;

    let device = Device::flex().autodiff();
    let cases = [
        (3, 2, 1, 9, 8),
        (3, 2, 1, 12, 12),
        (2, 2, 0, 7, 6),
        (3, 1, 1, 5, 6),
    ];
    for (k, s, p, h, w) in cases {
        let pool = MaxPool2dConfig::new([k, k])
            .with_strides([s, s])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .init();
        let random = Tensor::<4>::random([2, 3, h, w], Distribution::Normal(0.0, 1.0), &device);
        // Values from a few levels, so that windows hold ties.
        let tied = (random.clone() * 2.0).round();
        for (name, x) in [("random", random), ("tied", tied)] {
            let out = Tensor::<4>::zeros(pool.forward(x.clone()).dims(), &device);
            let dy = Tensor::<4>::random(out.dims(), Distribution::Normal(0.0, 1.0), &device);
            let run = |fast_path: bool| {
                let x = x.clone().require_grad();
                let y = if fast_path {
                    max_pool_forward(&pool, x.clone())
                } else {
                    pool.forward(x.clone())
                };
                let g = (y.clone() * dy.clone()).sum().backward();
                (y.inner(), x.grad(&g).unwrap())
            };
            let case = format!("{name}: kernel {k}, stride {s}, padding {p}, {h}x{w}");
            let ((y0, dx0), generic) = counted(|| run(false));
            let ((y1, dx1), fused) = counted(|| run(true));
            assert_ran(&generic, &[], &format!("generic, {case}"));
            let kernels = [
                (Kernel::WindowMaxPool, 1),
                (Kernel::WindowMaxPoolBackward, 1),
            ];
            assert_ran(&fused, &kernels, &case);
            assert_eq!(y1.dims(), y0.dims(), "{case}");
            assert!(rel_err(y1, y0) <= 1e-6, "output: {case}");
            assert!(rel_err(dx1, dx0) <= 1e-6, "input gradient: {case}");
        }
    }
    // Inference: the same values without keeping the positions.
    let inference = Device::flex();
    let pool = MaxPool2dConfig::new([3, 3])
        .with_strides([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init();
    let x = Tensor::<4>::random([2, 4, 11, 10], Distribution::Normal(0.0, 1.0), &inference);
    let (y, ran) = counted(|| max_pool_forward(&pool, x.clone()));
    assert_ran(&ran, &[(Kernel::WindowMaxPool, 1)], "inference max pool");
    assert!(rel_err(y, pool.forward(x)) <= 1e-6, "inference max pool");
}

/// The in-network convolution profile (`densum bench --conv-profile`) counts every call of a
/// shape and pass while on, per iteration, and nothing once stopped.
#[test]
fn convolution_profile_counts_calls_by_shape_and_pass() {
    use densum::nn::fast::conv::profile::{self, Pass};
    let device = Device::flex().autodiff();
    let options = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
    let x = Tensor::<4>::random([2, 3, 9, 9], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<4>::random([5, 3, 3, 3], Distribution::Normal(0.0, 1.0), &device);
    let (x, w) = (x.require_grad(), w.require_grad());
    profile::start();
    for _ in 0..4 {
        let grads = conv2d_fast(x.clone(), w.clone(), options.clone())
            .sum()
            .backward();
        assert!(w.grad(&grads).is_some());
    }
    let times = profile::stop(2);
    // Other tests of this file may run convolutions meanwhile: look for this shape only.
    let this_shape =
        |t: &&profile::ConvTime| t.shape.c == 3 && t.shape.o == 5 && t.shape.input == [9, 9];
    let ours: Vec<_> = times.iter().filter(this_shape).collect();
    let pass = |p: Pass| ours.iter().find(|t| t.pass == p);
    for p in [Pass::Forward, Pass::InputGrad, Pass::WeightGrad] {
        let t = pass(p).unwrap_or_else(|| panic!("{p:?} not profiled: {times:?}"));
        assert_eq!(t.calls, 2.0, "4 calls over 2 iterations");
        assert_eq!(t.shape.stride, [2, 2]);
        assert_eq!(t.shape.macs(25), 2 * 5 * 3 * 9 * 25);
        assert!(t.ms > 0.0 && t.gmacs > 0.0);
    }
    assert!(pass(Pass::Inference).is_none());
    let table = profile::table(&times);
    assert!(table.contains("3->5 3x3 /2 @9x9, 2"), "{table}");
    // Stopped: nothing more is counted (of this shape: another test's convolution that began
    // while the profile was on may still finish into it).
    let _ = conv2d_fast(x.clone(), w.clone(), options.clone()).into_data();
    assert!(!profile::stop(1).iter().any(|t| this_shape(&t)));
}

/// SGD's one fused pass (nn/fast/sgd.rs) against Burn's composed operations: momentum
/// (first step and later), Nesterov (both), none, weight decay on and off, a clipping scale,
/// on a small tensor (one task) and one over the parallel split (32 Ki values).
#[test]
fn sgd_update_matches_composed() {
    for shape in [[3, 5, 7], [4, 100, 101]] {
        sgd_update_matches_composed_on(shape);
    }
}

fn sgd_update_matches_composed_on(shape: [usize; 3]) {
    use densum::nn::fast::sgd::{SgdStep, sgd_update};
    let device = Device::flex();
    let normal = Distribution::Normal(0.0, 1.0);
    let p = Tensor::<3>::random(shape, normal, &device);
    let g = Tensor::<3>::random(shape, normal, &device);
    let v = Tensor::<3>::random(shape, normal, &device);
    let base = SgdStep {
        scale: 1.0,
        weight_decay: 5e-4,
        momentum: 0.9,
        lr: 0.1,
        nesterov: false,
    };
    let cases = [
        (base, true),
        (base, false),
        (
            SgdStep {
                nesterov: true,
                ..base
            },
            true,
        ),
        (
            SgdStep {
                nesterov: true,
                ..base
            },
            false,
        ),
        (
            SgdStep {
                momentum: 0.0,
                ..base
            },
            false,
        ),
        (
            SgdStep {
                weight_decay: 0.0,
                scale: 0.25,
                ..base
            },
            true,
        ),
    ];
    // Fresh copies own their buffers (updated in place, as between training steps); shared
    // ones (cloned handles) are not, and the update writes new ones.
    let fresh = |t: &Tensor<3>| Tensor::<3>::from_data(t.to_data(), &device);
    for ((step, has_buffer), owned) in cases.into_iter().flat_map(|c| [(c, true), (c, false)]) {
        let run = || {
            let (pa, ga, va) = if owned {
                (fresh(&p), fresh(&g), fresh(&v))
            } else {
                (p.clone(), g.clone(), v.clone())
            };
            sgd_update(pa, ga, has_buffer.then_some(va), step)
        };
        let ((v0, p0), composed) = counted(|| fast::with_generic(Op::Sgd, run));
        let ((v1, p1), fused) = counted(run);
        assert_ran(&composed, &[], "composed update");
        assert_ran(&fused, &[(Kernel::Sgd, 1)], "fused update");
        let what = format!("{step:?}, buffer {has_buffer}, owned {owned}");
        assert!(rel_err(p1, p0) <= 1e-6, "{what}: parameter");
        assert_eq!(v0.is_some(), v1.is_some(), "{what}: buffer kept");
        if let (Some(a), Some(b)) = (v1, v0) {
            assert!(rel_err(a, b) <= 1e-6, "{what}: momentum buffer");
        }
    }
    // Against the definition, once: p − lr·(m·v + g + wd·p).
    let (_, p1) = sgd_update(p.clone(), g.clone(), Some(v.clone()), base);
    let want = p.clone() - (v * 0.9 + g + p * 5e-4) * 0.1;
    assert!(rel_err(p1, want) <= 1e-6, "the momentum step");
}
