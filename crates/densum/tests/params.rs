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

#[test]
fn densenets_match_torchvision() {
    assert_eq!(imagenet("densenet121"), 7_978_856);
    assert_eq!(imagenet("densenet169"), 14_149_480);
    assert_eq!(imagenet("densenet201"), 20_013_928);
    assert_eq!(imagenet("densenet264"), 33_337_704);
}

#[test]
fn cifar_densenets_match_the_papers_rounded_counts() {
    let c10 = |n: &str| params(n, ModelOptions::default());
    within("densenet40_k12", c10("densenet40_k12"), 1.0, 0.02);
    within("densenet100_k12", c10("densenet100_k12"), 7.0, 0.02);
    within("densenet100_k24", c10("densenet100_k24"), 27.2, 0.02);
    // 769,162 with 10 classes (0.77M, which the paper's one decimal rounds to 0.8M); the
    // CIFAR-100 head adds 30,780, within 2% of 0.8M.
    let c100 = |n: &str| {
        params(
            n,
            ModelOptions {
                dataset: Some(Dataset::Cifar100),
                ..Default::default()
            },
        )
    };
    assert_eq!(c10("densenet_bc100_k12"), 769_162);
    within("densenet_bc100_k12", c100("densenet_bc100_k12"), 0.8, 0.02);
    within("densenet_bc250_k24", c10("densenet_bc250_k24"), 15.3, 0.02);
    within("densenet_bc190_k40", c10("densenet_bc190_k40"), 25.6, 0.02);
}

#[test]
fn res2nets_match_timm_and_the_paper() {
    assert_eq!(imagenet("res2net50_26w_4s"), 25_699_120);
    // The paper's CIFAR-100 figure; timm's layout (s - 1 split convolutions, width
    // floor(planes · 24 / 64) · 6 per split) gives 23.7M, 2.4% under it.
    within(
        "res2next29_6cx24wx4s",
        params("res2next29_6cx24wx4s", ModelOptions::default()),
        24.3,
        0.03,
    );
}

#[test]
fn delugenets_land_within_5_percent_of_the_paper() {
    let c10 = |n: &str| params(n, ModelOptions::default());
    within("delugenet146", c10("delugenet146"), 6.7, 0.05);
    within("delugenet218", c10("delugenet218"), 10.0, 0.05);
    within("wide_delugenet146", c10("wide_delugenet146"), 20.2, 0.05);
}

#[test]
fn densenet_options_compose_the_paper_variants() {
    // DenseNet-BC without B and C, with the plain nets' 16-channel stem, is the plain net.
    let plain_from_bc = params(
        "densenet_bc100_k12",
        ModelOptions {
            bottleneck: Some(false),
            compression: Some(1.0),
            init_features: Some(16),
            block_config: Some(vec![32, 32, 32]),
            ..Default::default()
        },
    );
    assert_eq!(
        plain_from_bc,
        params("densenet100_k12", ModelOptions::default())
    );
    // The growth rate option reproduces the k = 24 variant.
    let k24 = params(
        "densenet100_k12",
        ModelOptions {
            growth_rate: Some(24),
            ..Default::default()
        },
    );
    assert_eq!(k24, params("densenet100_k24", ModelOptions::default()));
    // Dropout reaches every dense layer.
    let spec = zoo::resolve(
        "densenet121",
        &ModelOptions {
            block_dropout: Some(0.2),
            ..Default::default()
        },
    )
    .unwrap();
    let net = Net::new(&spec.config, &Device::default());
    for stage in &net.layers {
        for block in &stage.blocks {
            match block {
                densum::block::Block::DenseLayer(d) => assert_eq!(d.dropout.prob, 0.2),
                _ => panic!("densenet121 holds dense layers only"),
            }
        }
    }
}
