//! Parameter counts equal the spec's exact figures (ARCHITECTURES.md sections 3.1 and 3.3).

use densum::weights::count_params;
use densum::zoo::{self, Dataset, ModelOptions};
use densum::{Device, Net};

fn params(name: &str, options: ModelOptions) -> usize {
    let spec = zoo::resolve(name, &options).unwrap();
    count_params(&Net::new(&spec.config, &Device::default()))
}

fn imagenet(name: &str) -> usize {
    params(name, ModelOptions::default())
}

fn cifar100_quarter(name: &str) -> usize {
    params(
        name,
        ModelOptions {
            dataset: Some(Dataset::Cifar100),
            width: Some(0.25),
            ..Default::default()
        },
    )
}

#[test]
fn imagenet_resnets_match_torchvision() {
    assert_eq!(imagenet("resnet50"), 25_557_032);
    assert_eq!(imagenet("resnet101"), 44_549_160);
    assert_eq!(imagenet("resnet152"), 60_192_808);
    assert_eq!(imagenet("resnext50_32x4d"), 25_028_904);
    assert_eq!(imagenet("wide_resnet50_2"), 68_883_240);
    assert_eq!(imagenet("se_resnet50"), 28_088_024);
    assert_eq!(imagenet("resnet18"), 11_689_512);
    assert_eq!(imagenet("resnet34"), 21_797_672);
}

#[test]
fn dsnet_counts_match_the_spec() {
    assert_eq!(imagenet("dsnet50"), 25_582_376);
    assert_eq!(imagenet("ds2net50"), 25_585_256);
    assert_eq!(cifar100_quarter("resnet50"), 1_530_356);
    assert_eq!(cifar100_quarter("dsnet50"), 1_536_692);
    assert_eq!(cifar100_quarter("ds2net50"), 1_537_412);
}

fn within(name: &str, got: usize, millions: f64, tol: f64) {
    let want = millions * 1e6;
    let rel = (got as f64 - want).abs() / want;
    assert!(
        rel <= tol,
        "{name}: {got} parameters, paper {millions}M ({:.1}% off)",
        rel * 100.0
    );
}

#[test]
fn cifar_models_match_the_papers_rounded_counts() {
    let c10 = |n: &str| params(n, ModelOptions::default());
    within("resnet110", c10("resnet110"), 1.7, 0.05);
    within("preact_resnet164", c10("preact_resnet164"), 1.7, 0.05);
    within("preact_resnet1001", c10("preact_resnet1001"), 10.2, 0.05);
    within("wrn28_10", c10("wrn28_10"), 36.5, 0.02);
    within("wrn16_8", c10("wrn16_8"), 11.0, 0.02);
    within("wrn40_4", c10("wrn40_4"), 8.9, 0.02);
    within("resnext29_8x64d", c10("resnext29_8x64d"), 34.4, 0.02);
    within("resnext29_16x64d", c10("resnext29_16x64d"), 68.1, 0.02);
}
