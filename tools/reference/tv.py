"""torchvision ResNet family rebuilt at a width multiplier, with torchvision's own classes.

torchvision's ResNet hard-codes 64 base channels and the ImageNet stem; we construct it and
rebuild the stem, the four stages (via its own `_make_layer`) and the classifier at base
64*w. The state-dict layout is therefore exactly torchvision's.
"""

from __future__ import annotations

import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

TV_ARCHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2], {}),
    "resnet34": (BasicBlock, [3, 4, 6, 3], {}),
    "resnet50": (Bottleneck, [3, 4, 6, 3], {}),
    "resnet101": (Bottleneck, [3, 4, 23, 3], {}),
    "resnext50_32x4d": (Bottleneck, [3, 4, 6, 3], dict(groups=32, width_per_group=4)),
    "wide_resnet50_2": (Bottleneck, [3, 4, 6, 3], dict(width_per_group=128)),
}


def tv_resnet(arch: str, width: float = 1.0, num_classes: int = 1000, stem: str = "imagenet") -> ResNet:
    block, layers, kw = TV_ARCHS[arch]
    model = ResNet(block, layers, num_classes=num_classes, **kw)
    if width == 1.0 and stem == "imagenet":
        return model
    base = int(round(64 * width))
    if stem == "cifar":
        model.conv1 = nn.Conv2d(3, base, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(base)
    model.inplanes = base
    model.dilation = 1
    model.layer1 = model._make_layer(block, base, layers[0])
    model.layer2 = model._make_layer(block, base * 2, layers[1], stride=2)
    model.layer3 = model._make_layer(block, base * 4, layers[2], stride=2)
    model.layer4 = model._make_layer(block, base * 8, layers[3], stride=2)
    model.fc = nn.Linear(base * 8 * block.expansion, num_classes)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
