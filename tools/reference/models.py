"""Independent PyTorch reference implementations of the densum bottleneck families.

Written from /work/shared/spec/ARCHITECTURES.md (sections 2, 3.1, 3.3, 3.4, 6) and the
project conventions recorded in tools/README.md. These models exist only to make test
fixtures for the Rust crate; they are not a training library.

One backbone (stem, four stages of bottleneck blocks, head) and one stage loop; the papers'
variants differ only in the stage's *connectivity* (how block l combines the stage history)
and the bottleneck's optional *inner* shortcut over its 3x3 conv:

    connectivity  block l >= 1 of a stage (block 0 is always Y_0 = ReLU(X_0 + P(x)))
    ------------  --------------------------------------------------------------------
    "resnet"      Y_l = ReLU(X_l + Y_{l-1})
    "dense"       Y_l = ReLU(X_l + sum_{i<l} Y_i)                  (naive "ResNet-dense")
    "ds_b"        Y_l = ReLU(X_l + sum_{i<l} W_l[i] * N(Y_i))      (DSNet, default)
    "ds_a"        Y_l = ReLU(X_l + sum_{i<l} W_l[i] * N(X_i)), X_0 := Y_0   (DSNet-a)
    "rgs_b"       Y_l = X_l + RG(Y_{l-1})                          (b-RGS, d-RGS)
    "rgs_res"     Y_l = Y_{l-1} + X_l + RG(Y_{l-1})                (Res-RGS)
    "rgs_rbs"     Y_l = X_l + BN(ReLU(Y_{l-1}))                    (RBS ablation)
    "rgs_gs"      Y_l = X_l + GN(Y_{l-1})                          (GS ablation)
    "rgs_rgb"     Y_l = RG(Y_{l-1} + X_l)                          (RGB ablation)

    X_l = branch_l(Y_{l-1});  RG(z) = GroupNorm(G, C, affine=True)(ReLU(z))

    The ablations (spec 3.4) read the general form y_l = h(x_l) + F(x_l), x_{l+1} = f(y_l):
    RBS: h = BatchNorm(ReLU(.)) (affine, running stats), f = identity; GS: h = GroupNorm
    (affine, no ReLU), f = identity; RGB: h = identity, f = RG. "2GN" (branch_gn=True) is
    the plain ResNet connectivity with an affine GroupNorm after each ReLU inside the branch:
    a = GN1(ReLU(BN1(conv1(x)))), b = GN2(ReLU(BN2(conv2(a)))), in every block.

    inner         in every bottleneck whose 3x3 conv has stride 1
    -----         ------------------------------------------------
    None          b = ReLU(BN2(conv2(a)))
    "ds"          b = ReLU(BN2(conv2(a)) + w * N(a))              (DS2Net)
    "rg"          b = ReLU(BN2(conv2(a))) + RG_inner(a)           (d-RGS, Res-RGS)

    a = ReLU(BN1(conv1(x))), branch output X = BN3(conv3(b)).

State-dict names are torchvision's for the backbone plus (spec section 6):
    layer{s}.ds.{l}.weight                 [l, C] (channel) or [l] (scalar), l = 1..n-1
    layer{s}.ds_norm.{i}.running_mean/var  BatchNorm N only, i = 0..n-2
    layer{s}.{b}.inner_ds.weight           [width] (channel) or [1] (scalar)
    layer{s}.{b}.inner_ds_norm.running_*   BatchNorm N only
    layer{s}.{b}.rg.{weight,bias}          b >= 1
    layer{s}.{b}.inner_rg.{weight,bias}    stride-1 bottlenecks of d-/Res-RGS
    layer{s}.{b}.rg.running_mean/var       RBS only (a BatchNorm), b >= 1
    layer{s}.{b}.{gn1,gn2}.{weight,bias}   2GN, every block

`layers` (blocks per stage, any number of stages) replaces the depth's [2,2,2,2] etc., as
densum's `block_config` option does.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-5

BLOCKS = {
    26: [2, 2, 2, 2],
    38: [3, 3, 3, 3],
    50: [3, 4, 6, 3],
    62: [3, 4, 10, 3],
    77: [3, 4, 15, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
    200: [3, 24, 36, 3],
}

NORMS = ("gn", "ln", "in", "bn", "none")
WEIGHTS = ("channel", "scalar", "none")
RGS = ("rgs_b", "rgs_res", "rgs_rbs", "rgs_gs", "rgs_rgb")
CONNECTIVITIES = ("resnet", "dense", "ds_b", "ds_a") + RGS
INNERS = (None, "ds", "rg")


def gn_groups(channels: int, width: float) -> int:
    """G = 32*w, reduced to the largest divisor of `channels` that is <= G."""
    g = max(1, int(round(32 * width)))
    g = min(g, channels)
    while channels % g != 0:
        g -= 1
    return g


def make_norm(kind: str, channels: int, width: float) -> nn.Module:
    """The affine-free normalisation N of dense / inner DS shortcuts."""
    if kind == "gn":
        return nn.GroupNorm(gn_groups(channels, width), channels, eps=EPS, affine=False)
    if kind == "ln":
        return nn.GroupNorm(1, channels, eps=EPS, affine=False)
    if kind == "in":
        return nn.GroupNorm(channels, channels, eps=EPS, affine=False)
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=EPS, affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def make_rg(channels: int, width: float) -> nn.GroupNorm:
    """The GroupNorm of an RG shortcut (applied after a ReLU), with affine parameters."""
    return nn.GroupNorm(gn_groups(channels, width), channels, eps=EPS, affine=True)


class ShortcutWeight(nn.Module):
    """Learnable shortcut weights: `weight` is [rows, C] (channel) or [rows] (scalar).

    `rows` = number of shortcut inputs; for the inner DS2 shortcut rows = 1 and the stored
    shape is [C] (channel) or [1] (scalar).
    """

    def __init__(self, rows: int | None, channels: int, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "channel":
            shape = (channels,) if rows is None else (rows, channels)
        elif kind == "scalar":
            shape = (1,) if rows is None else (rows,)
        else:
            raise ValueError(kind)
        self.weight = nn.Parameter(torch.ones(shape))

    def row(self, i: int | None) -> torch.Tensor:
        w = self.weight if i is None else self.weight[i]
        if self.kind == "channel":
            return w.view(1, -1, 1, 1)
        return w.view(1, 1, 1, 1) if w.dim() == 0 else w.view(1, 1, 1, 1)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, *, width_mult, groups=1, base_width=64,
                 inner=None, inner_norm="gn", inner_weight="channel", downsample=False,
                 branch_gn=False):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out = planes * self.expansion
        self.stride = stride
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=EPS)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=EPS)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out, eps=EPS)
        if downsample:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out, eps=EPS),
            )
        else:
            self.downsample = None
        # inner shortcut only where the 3x3 conv keeps the shape
        self.inner = inner if stride == 1 else None
        if self.inner == "ds":
            self.inner_ds = ShortcutWeight(None, width, inner_weight) if inner_weight != "none" else None
            self.inner_ds_norm = make_norm(inner_norm, width, width_mult)
        elif self.inner == "rg":
            self.inner_rg = make_rg(width, width_mult)
        if branch_gn:
            self.gn1 = make_rg(width, width_mult)
            self.gn2 = make_rg(width, width_mult)
        self.branch_gn = branch_gn
        self.rg = None  # set by the stage for RGS blocks l >= 1

    def shortcut(self, x):
        return x if self.downsample is None else self.downsample(x)

    def branch(self, x):
        a = F.relu(self.bn1(self.conv1(x)))
        if self.branch_gn:
            a = self.gn1(a)
            return self.bn3(self.conv3(self.gn2(F.relu(self.bn2(self.conv2(a))))))
        if self.inner == "ds":
            s = self.inner_ds_norm(a)
            if self.inner_ds is not None:
                s = self.inner_ds.row(None) * s
            b = F.relu(self.bn2(self.conv2(a)) + s)
        elif self.inner == "rg":
            b = F.relu(self.bn2(self.conv2(a))) + self.inner_rg(F.relu(a))
        else:
            b = F.relu(self.bn2(self.conv2(a)))
        return self.bn3(self.conv3(b))


class Stage(nn.Module):
    """Blocks "0".."n-1" plus the stage-level dense-shortcut state ("ds", "ds_norm")."""

    def __init__(self, inplanes, planes, n, stride, *, width_mult, connectivity,
                 ds_norm="gn", ds_weight="channel", inner=None, groups=1, base_width=64,
                 branch_gn=False):
        super().__init__()
        assert connectivity in CONNECTIVITIES, connectivity
        self.n = n
        self.connectivity = connectivity
        out = planes * Bottleneck.expansion
        for b in range(n):
            blk = Bottleneck(
                inplanes if b == 0 else out, planes, stride if b == 0 else 1,
                width_mult=width_mult, groups=groups, base_width=base_width, inner=inner,
                inner_norm=ds_norm, inner_weight=ds_weight,
                downsample=(b == 0 and (stride != 1 or inplanes != out)), branch_gn=branch_gn,
            )
            if connectivity == "rgs_rbs" and b >= 1:
                blk.rg = nn.BatchNorm2d(out, eps=EPS)
            elif connectivity in RGS and b >= 1:
                blk.rg = make_rg(out, width_mult)
            self.add_module(str(b), blk)
        if connectivity in ("ds_a", "ds_b") and n > 1:
            self.ds_norm = nn.ModuleDict({str(i): make_norm(ds_norm, out, width_mult) for i in range(n - 1)})
            if ds_weight != "none":
                self.ds = nn.ModuleDict({str(l): ShortcutWeight(l, out, ds_weight) for l in range(1, n)})
            else:
                self.ds = None
        else:
            self.ds_norm = None
            self.ds = None

    def block(self, b) -> Bottleneck:
        return getattr(self, str(b))

    def _dense_sum(self, l, hist):
        total = None
        for i, h in enumerate(hist):
            t = h if self.ds is None else self.ds[str(l)].row(i) * h
            total = t if total is None else total + t
        return total

    def forward(self, x):
        b0 = self.block(0)
        y = F.relu(b0.branch(x) + b0.shortcut(x))
        c = self.connectivity
        hist = []
        if c in ("ds_a", "ds_b") and self.n > 1:
            hist.append(self.ds_norm["0"](y))  # X_0 := Y_0 in variant a
        elif c == "dense":
            hist.append(y)
        for l in range(1, self.n):
            blk = self.block(l)
            xl = blk.branch(y)
            if c == "resnet":
                y = F.relu(xl + y)
            elif c == "dense":
                y = F.relu(xl + sum(hist))
                hist.append(y)
            elif c in ("ds_a", "ds_b"):
                y = F.relu(xl + self._dense_sum(l, hist))
                if l < self.n - 1:
                    src = y if c == "ds_b" else xl
                    hist.append(self.ds_norm[str(l)](src))
            elif c == "rgs_b":
                y = xl + blk.rg(F.relu(y))
            elif c == "rgs_res":
                y = y + xl + blk.rg(F.relu(y))
            elif c == "rgs_rbs":
                y = xl + blk.rg(F.relu(y))
            elif c == "rgs_gs":
                y = xl + blk.rg(y)
            elif c == "rgs_rgb":
                y = blk.rg(F.relu(y + xl))
        return y


class Net(nn.Module):
    def __init__(self, depth=50, *, width=1.0, num_classes=1000, stem="imagenet",
                 connectivity="resnet", ds_norm="gn", ds_weight="channel", inner=None,
                 groups=1, base_width=64, branch_gn=False, layers=None):
        super().__init__()
        assert ds_norm in NORMS and ds_weight in WEIGHTS and inner in INNERS
        layers = list(layers or BLOCKS[depth])
        self.n_stages = len(layers)
        base = int(round(64 * width))
        self.stem = stem
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False)
        elif stem == "cifar":
            self.conv1 = nn.Conv2d(3, base, 3, stride=1, padding=1, bias=False)
        else:
            raise ValueError(stem)
        self.bn1 = nn.BatchNorm2d(base, eps=EPS)
        inplanes = base
        for s, n in enumerate(layers):
            planes = base * 2 ** s
            stage = Stage(inplanes, planes, n, 1 if s == 0 else 2, width_mult=width,
                          connectivity=connectivity, ds_norm=ds_norm, ds_weight=ds_weight,
                          inner=inner, groups=groups, base_width=base_width, branch_gn=branch_gn)
            self.add_module(f"layer{s + 1}", stage)
            inplanes = planes * Bottleneck.expansion
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.stem == "imagenet":
            x = F.max_pool2d(x, 3, stride=2, padding=1)
        for s in range(1, self.n_stages + 1):
            x = getattr(self, f"layer{s}")(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


# ---------------------------------------------------------------- named variants
# registry name -> (depth-independent) builder arguments
VARIANTS = {
    "resnet": dict(connectivity="resnet"),
    "resnet_dense": dict(connectivity="dense"),
    "dsnet": dict(connectivity="ds_b"),
    "dsnet_a": dict(connectivity="ds_a"),
    "ds2net": dict(connectivity="ds_b", inner="ds"),
    "brgsnet": dict(connectivity="rgs_b"),
    "drgsnet": dict(connectivity="rgs_b", inner="rg"),
    "resrgsnet": dict(connectivity="rgs_res", inner="rg"),
    "brgsnet_rbs": dict(connectivity="rgs_rbs"),
    "brgsnet_gs": dict(connectivity="rgs_gs"),
    "brgsnet_rgb": dict(connectivity="rgs_rgb"),
    "resnet_2gn": dict(connectivity="resnet", branch_gn=True),
}


def parse_name(name: str):
    """'ds2net50' -> ('ds2net', 50); 'resnet50_dense' -> ('resnet_dense', 50); 'dsnet50_a'."""
    import re
    m = re.fullmatch(r"([a-z0-9]*?[a-z])(\d+)(_[a-z0-9]+)?", name)
    if not m:
        raise ValueError(name)
    family, depth, suffix = m.group(1), int(m.group(2)), m.group(3) or ""
    key = family + suffix
    if key not in VARIANTS:
        raise ValueError(f"unknown model {name!r}")
    return key, depth


DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
DATASET_STEM = {"cifar10": "cifar", "cifar100": "cifar", "imagenet": "imagenet"}


def build(name: str, dataset="imagenet", width=1.0, num_classes=None, stem=None,
          ds_norm="gn", ds_weight="channel", layers=None) -> Net:
    """Build a reference model from its densum registry name and options (`layers`:
    densum's `block_config`)."""
    key, depth = parse_name(name)
    return Net(depth, width=width,
               num_classes=num_classes or DATASET_CLASSES[dataset],
               stem=stem or DATASET_STEM[dataset],
               ds_norm=ds_norm, ds_weight=ds_weight, layers=layers, **VARIANTS[key])


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
