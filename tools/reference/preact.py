"""Independent PyTorch reference of the pre-activation ResNets and CIFAR Wide ResNets.

Written from /work/shared/spec/ARCHITECTURES.md (sections 2, 3.1) and the choices README.md
documents ("Choices where the papers leave room"), after He et al. 2016b ("Identity mappings
in deep residual networks") and Zagoruyko & Komodakis 2016 (WRN). Only for test fixtures.

    block        a = ReLU(BN1(x))                       (pre-activation of the block input)
                 basic:      X = conv3x3_2(ReLU(BN2(conv3x3_1(a))))          (stride on conv1)
                 bottleneck: X = conv1x1_3(ReLU(BN3(conv3x3_2(ReLU(BN2(conv1x1_1(a)))))))
                             (width m, output 4m, stride on the 3x3)
                 Y = X + shortcut, shortcut = x (same shape) or conv1x1(a) (stride of the
                 stage, no BN: the projection reads the pre-activated input); nothing after
                 the addition
    stem         imagenet: conv7x7 s2 + BN + ReLU + maxpool 3x3 s2 (spec section 2)
                 cifar:    a bare conv3x3 (the first block pre-activates it)
    head         ReLU(final_bn(x)) -> global average pool -> fc

    ResNet-style (`preact_resnet{18,34,50,...}`): base 64w, planes 64w * 2^s, stem 64w.
    CIFAR (`preact_resnet164/1001`): base 16w, bottlenecks, 3 stages, stem 16w.
    WRN-d-k (`wrn{d}_{k}`): basic blocks, planes 16kw * 2^s, (d-4)/6 per stage, stem 16w.
    Stage strides 1, 2, 2, ...; eps 1e-5.

    names: conv1, bn1 (imagenet stem only), layer{s}.{b}.{bn1,conv1,bn2,conv2[,bn3,conv3]},
           layer{s}.0.downsample.0 (the projection's conv), final_bn, fc
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-5


def conv(cin, cout, k, stride=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class PreActBlock(nn.Module):
    def __init__(self, cin, planes, stride, bottleneck):
        super().__init__()
        out = planes * (4 if bottleneck else 1)
        self.bn1 = nn.BatchNorm2d(cin, eps=EPS)
        if bottleneck:
            self.conv1 = conv(cin, planes, 1)
            self.bn2 = nn.BatchNorm2d(planes, eps=EPS)
            self.conv2 = conv(planes, planes, 3, stride)
            self.bn3 = nn.BatchNorm2d(planes, eps=EPS)
            self.conv3 = conv(planes, out, 1)
        else:
            self.conv1 = conv(cin, planes, 3, stride)
            self.bn2 = nn.BatchNorm2d(planes, eps=EPS)
            self.conv2 = conv(planes, planes, 3)
        self.bottleneck = bottleneck
        project = stride != 1 or cin != out
        self.downsample = nn.Sequential(conv(cin, out, 1, stride)) if project else None
        self.out = out

    def forward(self, x):
        a = F.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(a)
        h = self.conv2(F.relu(self.bn2(self.conv1(a))))
        if self.bottleneck:
            h = self.conv3(F.relu(self.bn3(h)))
        return h + shortcut


class PreActNet(nn.Module):
    def __init__(self, layers, *, planes, stem_channels, bottleneck, stem, num_classes):
        super().__init__()
        self.stem = stem
        if stem == "imagenet":
            self.conv1 = conv(3, stem_channels, 7, 2)
            self.bn1 = nn.BatchNorm2d(stem_channels, eps=EPS)
        elif stem == "cifar":
            self.conv1 = conv(3, stem_channels, 3)
        else:
            raise ValueError(stem)
        c = stem_channels
        self.n_stages = len(layers)
        for s, n in enumerate(layers):
            stage = nn.Sequential()
            for b in range(n):
                blk = PreActBlock(c, planes << s, 2 if (s > 0 and b == 0) else 1, bottleneck)
                stage.add_module(str(b), blk)
                c = blk.out
            self.add_module(f"layer{s + 1}", stage)
        self.final_bn = nn.BatchNorm2d(c, eps=EPS)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        if self.stem == "imagenet":
            x = F.max_pool2d(F.relu(self.bn1(x)), 3, stride=2, padding=1)
        for s in range(1, self.n_stages + 1):
            x = getattr(self, f"layer{s}")(x)
        x = F.relu(self.final_bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ImageNet-style depths (spec 3.1): depth -> (bottleneck, blocks per stage)
IMAGENET = {18: (False, [2, 2, 2, 2]), 34: (False, [3, 4, 6, 3]), 50: (True, [3, 4, 6, 3]),
            101: (True, [3, 4, 23, 3]), 152: (True, [3, 8, 36, 3]), 200: (True, [3, 24, 36, 3])}
CIFAR = {164: 18, 1001: 111}  # bottlenecks per stage, 3 stages


def scaled(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def preact_resnet(depth, *, width=1.0, num_classes=10, stem="cifar", layers=None):
    """`preact_resnet{depth}`; `layers` replaces the blocks per stage (densum's block_config)."""
    if depth in CIFAR:
        bottleneck, default, base = True, [CIFAR[depth]] * 3, 16
    else:
        (bottleneck, default), base = IMAGENET[depth], 64
    return PreActNet(list(layers or default), planes=scaled(base, width),
                     stem_channels=scaled(base, width), bottleneck=bottleneck, stem=stem,
                     num_classes=num_classes)


def wide_resnet(depth, k, *, width=1.0, num_classes=10, layers=None):
    """WRN-d-k on CIFAR: (d-4)/6 basic blocks per stage, planes 16k, 32k, 64k (times w)."""
    n = (depth - 4) // 6
    return PreActNet(list(layers or [n, n, n]), planes=scaled(16 * k, width),
                     stem_channels=scaled(16, width), bottleneck=False, stem="cifar",
                     num_classes=num_classes)
