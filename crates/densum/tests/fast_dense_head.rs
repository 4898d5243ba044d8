//! The recomputing dense-layer head (nn/fast/dense_head.rs) against Burn's composed
//! operations: output and the gradients of every part, gamma, beta and the weight, for one
//! part, a full operation and chained operations, with odd shapes, to a relative error of
//! 1e-4. Each comparison asserts through `nn::fast::probe` that the fused side ran the head's
//! kernels (one forward and one backward per chained operation) and the composed side none.

use burn::module::{Param, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use densum::burn;
use densum::nn::fast::dense_head::{MAX_TERMS, dense_head, dense_head_inference};
use densum::nn::fast::probe::{Kernel, counted};
use densum::nn::fast::{Op, applies};

mod common;
use common::{assert_ran, rel_err};

/// Per-channel mean over images and positions, `[1, C, 1, 1]`.
fn channel_mean(x: Tensor<4>) -> Tensor<4> {
    x.mean_dim(0).mean_dim(2).mean_dim(3)
}

/// `terms` parts `[n, c_i, h, w]` of different widths, means and spreads, so that every slice
/// and the gradient through the statistics matter; and their channel counts.
fn random_parts(
    terms: usize,
    [n, h, w]: [usize; 3],
    device: &Device,
) -> (Vec<Tensor<4>>, Vec<usize>) {
    let chans: Vec<usize> = (0..terms).map(|i| 1 + (i * 3) % 5).collect();
    let parts = chans
        .iter()
        .enumerate()
        .map(|(i, &ci)| {
            let d = Distribution::Normal(i as f64 * 0.3 - 0.5, 0.5 + 0.2 * i as f64);
            Tensor::random([n, ci, h, w], d, device)
        })
        .collect();
    (parts, chans)
}

fn check_head(terms: usize) {
    let device = Device::flex().autodiff();
    let (n, h, w, o) = (3, 5, 7, 5);
    let eps = 1e-5;
    let (parts, chans) = random_parts(terms, [n, h, w], &device);
    let c: usize = chans.iter().sum();
    let normal = Distribution::Normal(0.0, 1.0);
    let weight = Tensor::<4>::random([o, c, 1, 1], normal, &device);
    let gamma = Tensor::<1>::random([c], Distribution::Normal(1.0, 0.5), &device);
    let beta = Tensor::<1>::random([c], Distribution::Normal(0.0, 0.5), &device);
    let dy = Tensor::<4>::random([n, o, h, w], normal, &device);
    assert!(applies(Op::DenseHead, &parts[0]), "must exercise the op");

    let run = |fused: bool| {
        let ps: Vec<Tensor<4>> = parts.iter().map(|p| p.clone().require_grad()).collect();
        let wt = weight.clone().require_grad();
        let g = gamma.clone().require_grad();
        let b = beta.clone().require_grad();
        let x = Tensor::cat(ps.clone(), 1);
        let mean = channel_mean(x.clone());
        let var = channel_mean((x.clone() - mean.clone()).powi_scalar(2));
        let out = if fused {
            let stats = Tensor::stack::<2>(
                vec![mean.reshape([c]).detach(), var.reshape([c]).detach()],
                0,
            );
            dense_head(&ps, wt.clone(), g.clone(), b.clone(), stats, eps)
        } else {
            let xhat = (x - mean) / (var + eps).sqrt();
            let z = relu(xhat * g.clone().reshape([1, c, 1, 1]) + b.clone().reshape([1, c, 1, 1]));
            conv2d(
                z,
                wt.clone(),
                None,
                ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            )
        };
        let grads = (out.clone() * dy.clone()).sum().backward();
        let dps: Vec<Tensor<4>> = ps.iter().map(|p| p.grad(&grads).unwrap()).collect();
        (
            out.inner(),
            wt.grad(&grads).unwrap(),
            g.grad(&grads).unwrap(),
            b.grad(&grads).unwrap(),
            dps,
        )
    };
    let ((o0, dw0, dg0, db0, dps0), composed) = counted(|| run(false));
    let ((o1, dw1, dg1, db1, dps1), fused) = counted(|| run(true));
    let case = format!("{terms} parts of {chans:?} channels");
    assert_ran(&composed, &[], &format!("composed, {case}"));
    let ops = terms.div_ceil(MAX_TERMS) as u64;
    let kernels = [(Kernel::DenseHead, ops), (Kernel::DenseHeadBackward, ops)];
    assert_ran(&fused, &kernels, &case);
    assert!(rel_err(o1, o0) <= 1e-4, "output: {case}");
    assert!(rel_err(dw1, dw0) <= 1e-4, "weight gradient: {case}");
    assert!(rel_err(dg1, dg0) <= 1e-4, "gamma gradient: {case}");
    assert!(rel_err(db1, db0) <= 1e-4, "beta gradient: {case}");
    assert_eq!(dps1.len(), terms);
    for (i, (a, b)) in dps1.into_iter().zip(dps0).enumerate() {
        assert!(rel_err(a, b) <= 1e-4, "gradient of part {i}: {case}");
    }
}

#[test]
fn head_matches_composed() {
    for terms in [1, 2, MAX_TERMS] {
        check_head(terms);
    }
}

#[test]
fn many_parts_chain_head_operations() {
    for terms in [MAX_TERMS + 1, 2 * MAX_TERMS + 3] {
        check_head(terms);
    }
}

/// A batch norm over `c` channels with random parameters and running statistics, so that a
/// fold that mixed up mean, variance, gamma or beta shows.
fn random_norm(c: usize, seed: f64, device: &Device) -> BatchNorm {
    let mut bn = BatchNormConfig::new(c).with_epsilon(1e-3).init(device);
    let d = |mean: f64, sd: f64| Distribution::Normal(mean + seed, sd);
    bn.gamma = Param::from_tensor(Tensor::random([c], d(1.0, 0.4), device));
    bn.beta = Param::from_tensor(Tensor::random([c], d(0.0, 0.5), device));
    bn.running_mean = RunningState::new(Tensor::random([c], d(0.2, 0.6), device));
    bn.running_var =
        RunningState::new(Tensor::random([c], Distribution::Uniform(0.3, 2.0), device));
    bn
}

/// The inference head (`dense_head_inference`: both norms with running statistics, one GEMM
/// over every part) against Burn's concatenation, `BatchNorm::forward` in evaluation mode,
/// ReLU and convolution, with and without the folded second norm, for one part and for more
/// parts than a training head operation takes.
#[test]
fn inference_head_matches_composed() {
    let device = Device::flex();
    let (n, h, w, o) = (3, 5, 7, 6);
    for terms in [1, MAX_TERMS + 3] {
        let (parts, chans) = random_parts(terms, [n, h, w], &device);
        let c: usize = chans.iter().sum();
        let weight = Tensor::<4>::random([o, c, 1, 1], Distribution::Normal(0.0, 1.0), &device);
        let (norm1, norm2) = (random_norm(c, 0.0, &device), random_norm(o, 0.1, &device));
        for second in [false, true] {
            let case = format!("{terms} parts of {chans:?} channels, second norm {second}");
            let (want, composed) = counted(|| {
                let z = relu(norm1.forward(Tensor::cat(parts.clone(), 1)));
                let y = conv2d(
                    z,
                    weight.clone(),
                    None,
                    ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
                );
                if second { relu(norm2.forward(y)) } else { y }
            });
            assert_ran(&composed, &[], &format!("composed, {case}"));
            let (got, fused) =
                counted(|| dense_head_inference(&parts, &weight, &norm1, second.then_some(&norm2)));
            assert_ran(&fused, &[(Kernel::DenseHeadInference, 1)], &case);
            let got = got.expect("the inference head applies on Flex");
            assert_eq!(got.dims(), [n, o, h, w], "{case}");
            assert!(rel_err(got, want) <= 1e-5, "output: {case}");
        }
    }
    // It does not apply to what would need gradients, or to a weight that is not 1x1.
    let ad = Device::flex().autodiff();
    let x = Tensor::<4>::random([1, 4, 3, 3], Distribution::Normal(0.0, 1.0), &ad);
    let norm = random_norm(4, 0.0, &ad);
    let w1 = Tensor::<4>::random([2, 4, 1, 1], Distribution::Normal(0.0, 1.0), &ad);
    assert!(
        dense_head_inference(&[x], &w1, &norm, None).is_none(),
        "autodiff"
    );
    let x = Tensor::<4>::random([1, 4, 3, 3], Distribution::Normal(0.0, 1.0), &device);
    let norm = random_norm(4, 0.0, &device);
    let w3 = Tensor::<4>::random([2, 4, 3, 3], Distribution::Normal(0.0, 1.0), &device);
    assert!(
        dense_head_inference(&[x], &w3, &norm, None).is_none(),
        "3x3 weight"
    );
}
