//! The Flex fast paths give the same values as Burn's generic operations: forward outputs and
//! gradients of input and weight agree to a relative error of 1e-4.

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use densum::nn::conv2d_fast;
use densum::nn::fast_conv::fast_conv_applies;

mod common;
use common::rel_err;

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

fn check(n: usize, c: usize, o: usize, hw: [usize; 2], k: usize, stride: usize, pad: usize) {
    check_options(
        n,
        c,
        o,
        hw,
        k,
        ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1),
    );
}

fn check_options(n: usize, c: usize, o: usize, hw: [usize; 2], k: usize, options: ConvOptions<2>) {
    let device = Device::flex().autodiff();
    assert!(
        fast_conv_applies(&device),
        "the comparison must exercise the fast path"
    );
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<4>::random([n, c, hw[0], hw[1]], normal, &device);
    let w = Tensor::<4>::random([o, c / options.groups, k, k], normal, &device);
    let probe = conv2d(x.clone(), w.clone(), None, options.clone());
    let dy = Tensor::<4>::random(probe.dims(), normal, &device);
    let (y0, dx0, dw0) = run(|x, w, o| conv2d(x, w, None, o), &x, &w, &dy, &options);
    let (y1, dx1, dw1) = run(conv2d_fast, &x, &w, &dy, &options);
    let case = format!("n{n} c{c} o{o} {hw:?} k{k} {options:?}");
    assert_eq!(y1.dims(), y0.dims(), "{case}");
    assert_eq!(dx1.dims(), dx0.dims(), "{case}");
    assert_eq!(dw1.dims(), dw0.dims(), "{case}");
    assert!(rel_err(y1, y0) <= 1e-4, "output differs: {case}");
    assert!(rel_err(dx1, dx0) <= 1e-4, "input gradient differs: {case}");
    assert!(rel_err(dw1, dw0) <= 1e-4, "weight gradient differs: {case}");
}

#[test]
fn pointwise_convolutions_match_generic() {
    check(3, 8, 12, [6, 5], 1, 1, 0);
    check(2, 5, 7, [7, 7], 1, 2, 0); // ResNet's strided projection (odd size)
}

#[test]
fn spatial_convolutions_match_generic() {
    check(3, 4, 6, [8, 8], 3, 1, 1);
    check(2, 3, 5, [5, 9], 3, 1, 1); // "same" convolution, non-square (shifted copies)
    check(2, 3, 4, [4, 1], 3, 1, 1); // one column: every tap but the centre column wraps
    check(2, 4, 6, [9, 7], 3, 2, 1); // stride 2, odd and non-square
    check(2, 3, 5, [11, 11], 7, 2, 3); // ImageNet stem
    check(2, 3, 4, [6, 6], 3, 1, 0); // no padding
    check(1, 2, 3, [3, 3], 5, 1, 2); // kernel larger than the map's interior
}

/// Shapes that take the AVX2 tile kernel where the CPU has it (`nn/tile_gemm.rs`): 1x1 with
/// at most 32 outputs, depth ≥ 32 and ≥ 256 positions; stride-1 "same" convolutions on planes
/// at least 16 wide (shifted views of a padded copy), whose input gradients are the same kind
/// of convolution. Odd channel counts and plane widths reach the kernel's row and column tails.
#[test]
fn tiled_convolutions_match_generic() {
    check(2, 40, 13, [16, 17], 1, 1, 0); // pointwise forward; input gradient with 40 outputs
    check(2, 13, 40, [16, 16], 1, 1, 0); // pointwise input gradient on the tile kernel
    check(1, 40, 9, [32, 33], 1, 1, 0); // two bands of the copied input (816 + 240 columns)
    check(2, 5, 7, [9, 17], 3, 1, 1); // shifted 3x3, non-square
    check(2, 6, 11, [16, 16], 3, 1, 1);
    check(1, 3, 5, [18, 16], 5, 1, 2); // 5x5, pad 2
    check(2, 4, 6, [16, 16], 3, 2, 1); // strided: not tiled, the gemm path
}

#[test]
fn unsupported_cases_fall_back_to_generic() {
    // Grouped and dilated convolutions take Burn's path inside the extension.
    check_options(
        2,
        8,
        8,
        [6, 6],
        3,
        ConvOptions::new([1, 1], [1, 1], [1, 1], 4),
    );
    check_options(
        2,
        4,
        4,
        [8, 8],
        3,
        ConvOptions::new([1, 1], [2, 2], [2, 2], 1),
    );
}

#[test]
fn inference_device_matches_generic() {
    let device = Device::flex();
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<4>::random([2, 4, 8, 8], normal, &device);
    let w = Tensor::<4>::random([6, 4, 3, 3], normal, &device);
    let options = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
    let a = conv2d_fast(x.clone(), w.clone(), options.clone());
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
    assert!(
        densum::nn::fast_norm::fast_norm_applies(&x),
        "must exercise the fused path"
    );
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
    let (y0, dx0, dg0, db0, rm0, rv0, bn0) = run(false);
    let (y1, dx1, dg1, db1, rm1, rv1, bn1) = run(true);
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
    let y1 = batch_norm_forward(&bn1, xi, relu);
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
        assert!(densum::nn::fast_norm::fast_norm_applies(&x));
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
        let (y0, dx0) = run(false);
        let (y1, dx1) = run(true);
        assert!(rel_err(y1, y0) <= 1e-4, "output, groups={groups}");
        assert!(rel_err(dx1, dx0) <= 1e-4, "input gradient, groups={groups}");
    }
    // Inference device.
    let inf = Device::flex();
    let gn = GroupNormConfig::new(2, 4).with_affine(false).init(&inf);
    let x = Tensor::<4>::random([2, 4, 3, 3], normal, &inf);
    assert!(rel_err(group_norm_forward(&gn, x.clone()), gn.forward(x)) <= 1e-5);
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
    // (in, out, kernel, stride, groups)
    for (c, o, k, stride, groups) in [
        (8, 12, 1, 1, 1),
        (5, 7, 1, 2, 1),
        (4, 6, 3, 1, 1),
        (4, 6, 3, 2, 1),
        (3, 5, 7, 2, 1),
        (8, 8, 3, 1, 4),
        (40, 12, 1, 1, 1), // tiled 1x1 (with the 16x16 plane below)
        (4, 6, 3, 1, 1),   // tiled shifted 3x3 (with the 16x16 plane below)
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
                let y1 = conv_bn_forward(&cv, &bn, x.clone(), relu);
                let case = format!("c{c} o{o} k{k} s{stride} g{groups} {hw:?} relu={relu}");
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
    let y1 = batch_norm_forward(&fused, x, false);
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
    assert!(densum::nn::fast_norm::fast_norm_applies(&a));
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
    let (y0, da0, db0) = run(false);
    let (y1, da1, db1) = run(true);
    assert!(rel_err(y1, y0) <= 1e-6, "output");
    assert!(rel_err(da1, da0) <= 1e-6, "first input's gradient");
    assert!(rel_err(db1, db0) <= 1e-6, "second input's gradient");

    // One tensor used twice: its gradient is the sum of both contributions.
    let aa = a.clone().require_grad();
    let g1 = (add_relu(aa.clone(), aa.clone()) * dy.clone())
        .sum()
        .backward();
    let ab = a.clone().require_grad();
    let g0 = (relu(ab.clone() + ab.clone()) * dy.clone())
        .sum()
        .backward();
    assert!(rel_err(aa.grad(&g1).unwrap(), ab.grad(&g0).unwrap()) <= 1e-6);
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
