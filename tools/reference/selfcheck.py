"""Self-checks of the reference models: spec parameter counts and torchvision equivalence.

    .venv/bin/python tools/reference/selfcheck.py
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reference.models import build, count_params  # noqa: E402
from reference.preact import preact_resnet, wide_resnet  # noqa: E402
from reference.tv import tv_resnet  # noqa: E402

# spec section 3.1 / 3.3 targets
TARGETS = [
    # (name, kwargs, expected trainable params)
    ("resnet50", dict(dataset="imagenet"), 25_557_032),
    ("dsnet50", dict(dataset="imagenet"), 25_582_376),
    ("ds2net50", dict(dataset="imagenet"), 25_585_256),
    ("resnet50", dict(dataset="cifar100", width=0.25), 1_530_356),
    ("dsnet50", dict(dataset="cifar100", width=0.25), 1_536_692),
    ("ds2net50", dict(dataset="cifar100", width=0.25), 1_537_412),
]


def check_counts(verbose=True):
    for name, kw, want in TARGETS:
        got = count_params(build(name, **kw))
        if verbose:
            print(f"  {name:10s} {kw}: {got:,} (spec {want:,})")
        assert got == want, (name, kw, got, want)
    # torchvision at the same settings
    assert count_params(tv_resnet("resnet50")) == 25_557_032
    assert count_params(tv_resnet("resnet50", 0.25, 100, "cifar")) == 1_530_356
    assert count_params(tv_resnet("resnext50_32x4d")) == 25_028_904
    assert count_params(tv_resnet("wide_resnet50_2")) == 68_883_240


# spec section 3.1, rounded to 0.1M by the papers (CIFAR-10 heads)
ROUNDED = [
    ("preact_resnet164", lambda: preact_resnet(164), 1.7),
    ("preact_resnet1001", lambda: preact_resnet(1001), 10.2),
    ("wrn28_10", lambda: wide_resnet(28, 10), 36.5),
    ("wrn16_8", lambda: wide_resnet(16, 8), 11.0),
    ("wrn40_4", lambda: wide_resnet(40, 4), 8.9),
]


def check_rounded_counts(verbose=True):
    """The pre-activation references land on the papers' rounded figures (within 2%)."""
    for name, make, millions in ROUNDED:
        got = count_params(make())
        if verbose:
            print(f"  {name:17s}: {got:,} (paper {millions}M)")
        assert abs(got - millions * 1e6) <= 0.02 * millions * 1e6, (name, got, millions)


def check_torchvision_equivalence():
    """Our plain 'resnet50' has torchvision's exact state-dict and computes the same thing."""
    for width, stem, k, hw in [(0.25, "cifar", 100, 32), (0.125, "imagenet", 10, 64)]:
        torch.manual_seed(0)
        tv = tv_resnet("resnet50", width, k, stem).eval()
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.uniform_(m.weight, 0.5, 1.5)
                torch.nn.init.normal_(m.bias, 0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        ours = build("resnet50", dataset="imagenet", width=width, num_classes=k, stem=stem).eval()
        sd_tv, sd_ours = tv.state_dict(), ours.state_dict()
        assert list(sd_tv.keys()) == list(sd_ours.keys()), set(sd_tv) ^ set(sd_ours)
        for key in sd_tv:
            assert sd_tv[key].shape == sd_ours[key].shape, key
        ours.load_state_dict(sd_tv, strict=True)
        x = torch.randn(2, 3, hw, hw)
        with torch.no_grad():
            d = (tv(x) - ours(x)).abs().max().item()
        print(f"  resnet50 w={width} {stem}: max |tv - ours| = {d:.2e}")
        assert d < 1e-4


def check_shapes():
    """Spot checks of the extra tensor names and shapes."""
    sd = build("dsnet50", dataset="cifar10", width=0.125).state_dict()
    c = 32  # 4 * 64 * 0.125
    assert sd["layer1.ds.1.weight"].shape == (1, c)
    assert sd["layer1.ds.2.weight"].shape == (2, c)
    assert sd["layer3.ds.5.weight"].shape == (5, 4 * c)
    assert "layer1.ds.0.weight" not in sd and not any("ds_norm" in k for k in sd)
    sd = build("dsnet50", dataset="cifar10", width=0.125, ds_norm="bn", ds_weight="scalar").state_dict()
    assert sd["layer3.ds.5.weight"].shape == (5,)
    assert sd["layer3.ds_norm.4.running_var"].shape == (4 * c,)
    assert "layer3.ds_norm.5.running_var" not in sd
    sd = build("ds2net50", dataset="cifar10", width=0.125).state_dict()
    assert sd["layer1.0.inner_ds.weight"].shape == (8,)
    assert "layer2.0.inner_ds.weight" not in sd and sd["layer2.1.inner_ds.weight"].shape == (16,)
    sd = build("resrgsnet50", dataset="cifar10", width=0.125).state_dict()
    assert sd["layer1.1.rg.weight"].shape == (c,) and "layer1.0.rg.weight" not in sd
    assert sd["layer1.0.inner_rg.bias"].shape == (8,) and "layer4.0.inner_rg.bias" not in sd
    sd = build("brgsnet50", dataset="cifar10", width=0.125).state_dict()
    assert not any("inner" in k for k in sd)
    sd = build("brgsnet50_rbs", dataset="cifar10", width=0.125).state_dict()
    assert sd["layer1.1.rg.running_var"].shape == (c,) and "layer1.0.rg.weight" not in sd
    sd = build("resnet50_2gn", dataset="cifar10", width=0.125).state_dict()
    assert sd["layer1.0.gn1.weight"].shape == (8,) and sd["layer4.2.gn2.bias"].shape == (64,)
    assert not any(".rg." in k for k in sd)
    sd = build("resnet50_dense", dataset="cifar10", width=0.125).state_dict()
    assert set(sd) == set(build("resnet50", dataset="cifar10", width=0.125).state_dict())


def check_identities():
    """DSNet-b with N = none and W = 1 is exactly the naive dense identity ("ResNet-dense")."""
    torch.manual_seed(1)
    dense = build("resnet50_dense", dataset="cifar10", width=0.125).eval()
    ds = build("dsnet50", dataset="cifar10", width=0.125, ds_norm="none", ds_weight="none").eval()
    ds.load_state_dict(dense.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(dense(x), ds(x))


def main():
    torch.set_num_threads(1)
    print("parameter counts:")
    check_counts()
    check_rounded_counts()
    print("torchvision equivalence:")
    check_torchvision_equivalence()
    check_shapes()
    check_identities()
    print("selfcheck OK")


if __name__ == "__main__":
    main()
