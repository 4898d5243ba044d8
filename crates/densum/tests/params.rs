//! Parameter counts equal the exact figures of torchvision's models and the DSNet paper's;
//! where the papers give rounded figures, the count is within a tolerance of them and equals
//! the exact count pinned here.

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

/// A model, the paper's rounded figure in millions, the tolerance around it, and the exact
/// count densum computes (measured with this test), pinned so that any change of
/// architecture shows. The pre-activation and WRN pins equal the independent references'
/// counts (tools/reference/preact.py; `tools/reference/selfcheck.py` prints them).
type Rounded = (&'static str, f64, f64, usize);

fn within(options: &ModelOptions, table: &[Rounded]) {
    for &(name, millions, tol, pinned) in table {
        let got = params(name, options.clone());
        let want = millions * 1e6;
        let rel = (got as f64 - want).abs() / want;
        assert!(
            rel <= tol,
            "{name}: {got} parameters, paper {millions}M ({:.1}% off)",
            rel * 100.0
        );
        assert_eq!(
            got, pinned,
            "{name}: {got} parameters, pinned {pinned}: the architecture changed"
        );
    }
}

#[test]
fn cifar_models_match_the_papers_rounded_counts() {
    within(
        &ModelOptions::default(),
        &[
            ("resnet110", 1.7, 0.05, 1_730_714),
            ("preact_resnet164", 1.7, 0.05, 1_703_258),
            ("preact_resnet1001", 10.2, 0.05, 10_327_706),
            ("wrn28_10", 36.5, 0.02, 36_479_194),
            ("wrn16_8", 11.0, 0.02, 10_961_370),
            ("wrn40_4", 8.9, 0.02, 8_949_210),
            ("resnext29_8x64d", 34.4, 0.02, 34_426_698),
            ("resnext29_16x64d", 68.1, 0.02, 68_155_210),
        ],
    );
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
    within(
        &ModelOptions::default(),
        &[
            ("densenet40_k12", 1.0, 0.02, 1_019_722),
            ("densenet100_k12", 7.0, 0.02, 6_979_642),
            ("densenet100_k24", 27.2, 0.02, 27_249_082),
            ("densenet_bc250_k24", 15.3, 0.02, 15_324_406),
            ("densenet_bc190_k40", 25.6, 0.02, 25_624_430),
        ],
    );
    // 769,162 with 10 classes (0.77M, which the paper's one decimal rounds to 0.8M); the
    // CIFAR-100 head adds 30,870 (90 more outputs of 342 inputs and a bias), within 2% of 0.8M.
    assert_eq!(
        params("densenet_bc100_k12", ModelOptions::default()),
        769_162
    );
    let c100 = ModelOptions {
        dataset: Some(Dataset::Cifar100),
        ..Default::default()
    };
    within(&c100, &[("densenet_bc100_k12", 0.8, 0.02, 800_032)]);
}

#[test]
fn res2nets_match_timm_and_the_paper() {
    assert_eq!(imagenet("res2net50_26w_4s"), 25_699_120);
    // The paper's CIFAR-100 figure; timm's layout (s - 1 split convolutions, width
    // floor(planes · 24 / 64) · 6 per split) gives 23.7M, 2.4% under it.
    within(
        &ModelOptions::default(),
        &[("res2next29_6cx24wx4s", 24.3, 0.03, 23_705_732)],
    );
}

#[test]
fn delugenets_land_within_5_percent_of_the_paper() {
    within(
        &ModelOptions::default(),
        &[
            ("delugenet146", 6.7, 0.05, 6_608_458),
            ("delugenet218", 10.0, 0.05, 9_907_138),
            ("wide_delugenet146", 20.2, 0.05, 20_129_258),
        ],
    );
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
