//! A post-activation block's residual sum fused into its last batch norm: the same values and
//! gradients as the batch norm, the sum and the ReLU one after another. In training the sum
//! joins the batch norm's pass ([`batch_norm_sum_forward`]), in inference the folded
//! convolution's epilogue ([`conv_bn_sum_forward`], every forward kernel), and a ResNet stage
//! runs its blocks through [`Block::forward_summed`]. Every comparison asserts which kernels ran
//! (`nn::fast::probe`).

use burn::module::{Module, Param, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor};
use densum::block::{Activation, Block, BlockArgs, BlockConfig, BlockKind};
use densum::nn::fast::probe::{Kernel, counted};
use densum::nn::{
    AttentionKind, batch_norm_sum_forward, conv, conv_bn_forward, conv_bn_sum_forward,
};

mod common;
use common::{assert_ran, rel_err};

/// A batch norm of `c` channels with random γ, β and running statistics on `device`.
fn random_bn(c: usize, device: &Device) -> BatchNorm {
    let normal = Distribution::Normal(0.0, 1.0);
    BatchNorm {
        gamma: Param::from_tensor(Tensor::random([c], normal, device)),
        beta: Param::from_tensor(Tensor::random([c], normal, device)),
        running_mean: RunningState::new(Tensor::random([c], normal, device)),
        running_var: RunningState::new(Tensor::random(
            [c],
            Distribution::Uniform(0.5, 2.0),
            device,
        )),
        ..BatchNormConfig::new(c).init(device)
    }
}

/// `f(bn(x) + r)` composed of Burn's operations.
fn composed(bn: &BatchNorm, x: Tensor<4>, r: Tensor<4>, f: bool) -> Tensor<4> {
    let y = bn.forward(x) + r;
    if f { relu(y) } else { y }
}

/// Training: output, gradients of the input, the residual, γ and β, and the running statistics
/// left behind; then inference with those statistics. Planes of 20 and 25 values reach the
/// kernels' tails.
#[test]
fn batch_norm_sum_matches_composed() {
    let device = Device::flex().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let c = 5;
    for (f, hw) in [(true, [5, 4]), (true, [5, 5]), (false, [5, 4])] {
        let shape = [3, c, hw[0], hw[1]];
        let bn = random_bn(c, &device);
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.5, 2.0), &device);
        let r = Tensor::<4>::random(shape, normal, &device);
        let dy = Tensor::<4>::random(shape, normal, &device);
        let run = |fused: bool| {
            let bn = bn.clone().train();
            let (xa, ra) = (x.clone().require_grad(), r.clone().require_grad());
            let y = if fused {
                batch_norm_sum_forward(&bn, xa.clone(), ra.clone(), f)
            } else {
                composed(&bn, xa.clone(), ra.clone(), f)
            };
            let grads = (y.clone() * dy.clone()).sum().backward();
            let got = [
                y.inner(),
                xa.grad(&grads).unwrap(),
                ra.grad(&grads).unwrap(),
            ];
            let params = [
                bn.gamma.val().grad(&grads).unwrap(),
                bn.beta.val().grad(&grads).unwrap(),
                bn.running_mean.value().inner(),
                bn.running_var.value().inner(),
            ];
            (got, params, bn)
        };
        let ((want, want_p, bn0), generic) = counted(|| run(false));
        let ((got, got_p, bn1), fused) = counted(|| run(true));
        assert_ran(&generic, &[], "reference");
        // The ReLU's mask is applied inside the batch norm's backward.
        let kernels = [
            (Kernel::BatchNormStats, 1),
            (Kernel::BatchNormSum, 1),
            (Kernel::BatchNormBackward, 1),
        ];
        let case = format!("relu={f} {hw:?}");
        assert_ran(&fused, &kernels, &case);
        for (name, (a, b)) in ["output", "input grad", "residual grad"]
            .iter()
            .zip(got.into_iter().zip(want))
        {
            assert!(rel_err(a, b) <= 1e-4, "{case}: {name}");
        }
        for (name, (a, b)) in ["gamma grad", "beta grad", "running mean", "running var"]
            .iter()
            .zip(got_p.into_iter().zip(want_p))
        {
            assert!(rel_err(a, b) <= 1e-4, "{case}: {name}");
        }

        // Inference with the running statistics the step left.
        let inf = Device::flex();
        let (bn0, bn1) = (bn0.valid(), bn1.valid());
        let xi = Tensor::<4>::random([2, c, 3, 3], normal, &inf);
        let ri = Tensor::<4>::random([2, c, 3, 3], normal, &inf);
        let want = composed(&bn0, xi.clone(), ri.clone(), f);
        let (got, ran) = counted(|| batch_norm_sum_forward(&bn1, xi, ri, f));
        assert_ran(
            &ran,
            &[(Kernel::BatchNormSum, 1)],
            &format!("{case} inference"),
        );
        assert!(rel_err(got, want) <= 1e-5, "{case}: inference output");
    }
}

/// Inference: the residual sum in the folded convolution's epilogue, for each forward kernel
/// (the ones the CPU offers): `gemm` over the image (1x1) or an im2col (strided, 7x7), or
/// over the whole batch (a 7x7 plane with 270,000 weights), the
/// tile kernel over 1x1 bands and shifted views, Winograd (2x2 and 4x4 tiles), and the direct
/// small-plane kernel.
#[test]
fn folded_convolution_with_residual_matches_composed() {
    let device = Device::flex();
    let normal = Distribution::Normal(0.0, 1.0);
    // (in, out, kernel, stride, input side)
    for (c, o, k, stride, side) in [
        (8, 12, 1, 1, 9),
        (8, 64, 1, 1, 40),
        (300, 900, 1, 1, 7),
        (5, 7, 1, 2, 9),
        (3, 5, 7, 2, 16),
        (40, 12, 1, 1, 16),
        (4, 6, 3, 1, 16),
        (32, 32, 3, 1, 15),
        (32, 40, 3, 1, 28),
        (64, 32, 3, 1, 8),
        (8, 32, 3, 2, 8),
    ] {
        let cv = conv(c, o, k, stride, 1, &device);
        let bn = random_bn(o, &device);
        let x = Tensor::<4>::random([3, c, side, side], normal, &device);
        let y = cv.forward(x.clone());
        let r = Tensor::<4>::random(y.dims(), normal, &device);
        for f in [true, false] {
            let want = composed(&bn, y.clone(), r.clone(), f);
            let (got, ran) = counted(|| conv_bn_sum_forward(&cv, &bn, x.clone(), r.clone(), f));
            let case = format!("c{c} o{o} k{k} s{stride} side {side} relu={f}");
            // Which forward kernel ran is the folded convolution's own (checked in
            // fast_paths.rs): the same one as without the residual.
            let (_, alone) = counted(|| conv_bn_forward(&cv, &bn, x.clone(), f));
            assert_eq!(ran, alone, "{case}: same kernels as without the residual");
            assert_eq!(ran.get(Kernel::ConvAffine), 1, "{case}");
            assert!(rel_err(got, want) <= 1e-5, "{case}");
        }
    }
}

/// A block of `kind` (planes 8, so bottlenecks have 32 outputs) entered with `in_ch`
/// channels at `stride`, with attention `attention`.
fn block(
    kind: BlockKind,
    in_ch: usize,
    stride: usize,
    attention: AttentionKind,
    d: &Device,
) -> Block {
    let cfg = BlockConfig {
        kind,
        cardinality: 1,
        base_width: 64,
        attention,
        inner: None,
        branch_gn: false,
        dropout: 0.0,
        zero_init_last: false,
        gn_base: 32,
        scale: 1,
        memory_efficient: false,
    };
    let args = BlockArgs {
        in_ch,
        planes: 8,
        stride,
        drop_path: 0.0,
    };
    Block::new(&cfg, &args, d)
}

/// `f(branch + shortcut)` from the block's two outputs.
fn unfused(b: &Block, x: Tensor<4>) -> Tensor<4> {
    let out = b.forward(x);
    b.activation().sum(out.branch, out.shortcut)
}

/// `Block::forward_summed` against the branch and shortcut summed: basic blocks and
/// bottlenecks with and without a projection, in training (output, input gradient, the last
/// batch norm's γ gradient) and inference; a block with attention keeps the separate sum.
#[test]
fn blocks_fuse_their_residual_sum() {
    let normal = Distribution::Normal(0.0, 1.0);
    let train = Device::flex().autodiff();
    for (kind, in_ch, stride, fuses) in [
        (BlockKind::Basic, 8, 1, true),
        (BlockKind::Basic, 4, 2, true),
        (BlockKind::Bottleneck, 32, 1, true),
        (BlockKind::Bottleneck, 16, 2, true),
        (BlockKind::PreActBasic, 8, 1, false),
    ] {
        let case = format!("{kind:?} in {in_ch} stride {stride}");
        let b = block(kind, in_ch, stride, AttentionKind::None, &train);
        assert_eq!(b.activation() == Activation::Relu, fuses, "{case}");
        let x = Tensor::<4>::random([2, in_ch, 8, 8], normal, &train);
        let side = 8 / stride;
        let dy = Tensor::<4>::random([2, 8 * kind.expansion(), side, side], normal, &train);
        let run = |fused: bool| {
            let xa = x.clone().require_grad();
            let y = if fused {
                b.forward_summed(xa.clone())
            } else {
                unfused(&b, xa.clone())
            };
            let grads = (y.clone() * dy.clone()).sum().backward();
            (y.inner(), xa.grad(&grads).unwrap())
        };
        let ((y0, dx0), plain) = counted(|| run(false));
        let ((y1, dx1), ran) = counted(|| run(true));
        let sums = if fuses { 1 } else { 0 };
        assert_eq!(ran.get(Kernel::BatchNormSum), sums, "{case}");
        assert_eq!(plain.get(Kernel::BatchNormSum), 0, "{case}");
        assert_eq!(ran.get(Kernel::AddRelu), 0, "{case}: no separate sum");
        assert!(rel_err(y1, y0) <= 1e-4, "{case}: output");
        assert!(rel_err(dx1, dx0) <= 1e-4, "{case}: input gradient");

        let inf = Device::flex();
        let b = b.valid().to_device(&inf);
        let x = Tensor::<4>::random([2, in_ch, 8, 8], normal, &inf);
        let want = unfused(&b, x.clone());
        let (got, ran) = counted(|| b.forward_summed(x));
        assert!(rel_err(got, want) <= 1e-5, "{case}: inference");
        assert_eq!(
            ran.get(Kernel::AddRelu),
            0,
            "{case}: inference, no separate sum"
        );
    }
    // Squeeze-and-excitation sits between the last batch norm and the sum: not fused.
    let b = block(BlockKind::Bottleneck, 32, 1, AttentionKind::Se, &train);
    let x = Tensor::<4>::random([2, 32, 8, 8], normal, &train);
    let (y, ran) = counted(|| b.forward_summed(x.clone()));
    assert_eq!(ran.get(Kernel::BatchNormSum), 0, "SE block");
    assert_eq!(ran.get(Kernel::AddRelu), 1, "SE block");
    assert!(
        rel_err(y.inner(), unfused(&b, x).inner()) <= 1e-5,
        "SE block"
    );
}
