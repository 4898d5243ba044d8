"""Independent PyTorch references of Dense2Net and DelugeNet (spec sections 3.5, 3.6).

Written from /work/shared/spec/ARCHITECTURES.md and the choices documented in the Rust code
(crates/densum/src/zoo/{res2net,delugenet}.rs, block/{dense,res2}.rs, connect/deluge.rs,
connect/transition.rs). They exist to make test fixtures; BN eps 1e-5 everywhere.

Dense2Net (CIFAR stem: a bare conv3x3 to 2k channels; torchvision's DenseNet names):

    dense layer  h = conv1x1_{4k}(ReLU(norm1(cat(inputs))))
                 h = ReLU(norm2(h))
                 h = Res2(h)                 s groups of w = 4k/s channels:
                                             y_1 = K_1(x_1), y_i = K_i(x_i + y_{i-1}) (i < s),
                                             y_s = x_s; K_i = ReLU(BN(conv3x3, groups C))
                 h = SE(h)                   optional: h * sigmoid(fc2(ReLU(fc1(avgpool(h))))),
                                             fc 1x1 convs with bias, max(8, (4k/16 + 4) // 8 * 8)
                 new features = conv1x1_{k}(h)
    transition   avgpool2(conv1x1_{floor(c/2)}(ReLU(norm(x))))
    head         ReLU(norm5(x)) -> global average pool -> classifier

    names: features.conv0, features.denseblock{n}.denselayer{j}.{norm1,conv1,norm2,conv2},
           ...denselayer{j}.res2.{convs,bns}.{i}, ...denselayer{j}.se.{fc1,fc2},
           features.transition{n}.{norm,conv},
           features.norm5, classifier

DelugeNet (CIFAR stem: a bare conv3x3 to C channels):

    stage s      input x (the stem, or the transition's output), H = [x]
                 composite layer l: X_l = preact_bottleneck_l(Y_{l-1}), Y_{-1} = x
                     BN-ReLU-conv1x1(C/4)-BN-ReLU-conv3x3(C/4)-BN-ReLU-conv1x1(C)
                 H += [X_l];  Y_l = sum_i W_l[i] * H_i + b_l   (per channel, W_l: [l+2, C])
                 stage output: the last Y
    transition   conv1x1_{C'}(dwconv3x3_stride2(ReLU(BN(x))))  (before stages 2 and 3)
    head         ReLU(final_bn(x)) -> global average pool -> fc

    names: conv1, layer{s}.{l}.{bn1,conv1,bn2,conv2,bn3,conv3}, layer{s}.transition.{norm,dw,conv},
           layer{s}.deluge.{l}.{weight,bias}, final_bn, fc
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv(cin, cout, k, stride=1, groups=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)


# ----------------------------------------------------------------------------- Dense2Net
class Res2(nn.Module):
    def __init__(self, channels: int, scale: int, groups: int = 1):
        super().__init__()
        self.width = channels // scale
        self.convs = nn.ModuleList(conv(self.width, self.width, 3, groups=groups) for _ in range(scale - 1))
        self.bns = nn.ModuleList(nn.BatchNorm2d(self.width) for _ in range(scale - 1))

    def forward(self, x):
        xs = torch.split(x, self.width, 1)
        out, prev = [], None
        for i, (c, b) in enumerate(zip(self.convs, self.bns)):
            inp = xs[i] if prev is None else xs[i] + prev
            prev = F.relu(b(c(inp)))
            out.append(prev)
        out.append(xs[-1])
        return torch.cat(out, 1)


class SE(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        rd = max(8, int(c / 16 + 4) // 8 * 8)
        self.fc1 = nn.Conv2d(c, rd, 1)
        self.fc2 = nn.Conv2d(rd, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class Dense2Layer(nn.Module):
    def __init__(self, cin: int, k: int, scale: int, groups: int, se: bool = False):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = conv(cin, 4 * k, 1)
        self.norm2 = nn.BatchNorm2d(4 * k)
        self.res2 = Res2(4 * k, scale, groups)
        self.se = SE(4 * k) if se else None
        self.conv2 = conv(4 * k, k, 1)

    def forward(self, inputs):
        h = self.conv1(F.relu(self.norm1(torch.cat(inputs, 1))))
        h = self.res2(F.relu(self.norm2(h)))
        if self.se is not None:
            h = self.se(h)
        return self.conv2(h)


class DenseBlock(nn.ModuleDict):
    def __init__(self, n, cin, k, scale, groups, se):
        super().__init__()
        for j in range(n):
            self[f"denselayer{j + 1}"] = Dense2Layer(cin + j * k, k, scale, groups, se)

    def forward(self, x):
        feats = [x]
        for layer in self.values():
            feats.append(layer(feats))
        return torch.cat(feats, 1)


class Transition(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = conv(cin, cout, 1)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.norm(x))), 2, 2)


class Dense2Net(nn.Module):
    """DenseNet-BC with Res2Net modules; CIFAR stem (bare conv3x3 to 2k)."""

    def __init__(self, block_config=(6, 12, 24, 16), k=32, scale=4, groups=1, num_classes=100,
                 se=False):
        super().__init__()
        c = 2 * k
        feats = nn.Sequential()
        feats.add_module("conv0", conv(3, c, 3))
        for n, layers in enumerate(block_config):
            feats.add_module(f"denseblock{n + 1}", DenseBlock(layers, c, k, scale, groups, se))
            c += layers * k
            if n + 1 < len(block_config):
                feats.add_module(f"transition{n + 1}", Transition(c, c // 2))
                c //= 2
        feats.add_module("norm5", nn.BatchNorm2d(c))
        self.features = feats
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ----------------------------------------------------------------------------- DelugeNet
class CrossLayer(nn.Module):
    """sum_i weight[i] * h_i + bias, per channel."""

    def __init__(self, inputs: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(inputs, channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, hs):
        out = self.bias.view(1, -1, 1, 1)
        for i, h in enumerate(hs):
            out = out + self.weight[i].view(1, -1, 1, 1) * h
        return out


class PreActBottleneck(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        m = c // 4
        self.bn1, self.conv1 = nn.BatchNorm2d(c), conv(c, m, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(m), conv(m, m, 3)
        self.bn3, self.conv3 = nn.BatchNorm2d(m), conv(m, c, 1)

    def forward(self, x):
        h = self.conv1(F.relu(self.bn1(x)))
        h = self.conv2(F.relu(self.bn2(h)))
        return self.conv3(F.relu(self.bn3(h)))


class DelugeTransition(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.dw = conv(cin, cin, 3, stride=2, groups=cin)
        self.conv = conv(cin, cout, 1)

    def forward(self, x):
        return self.conv(self.dw(F.relu(self.norm(x))))


class DelugeStage(nn.Module):
    def __init__(self, n, cin, c):
        super().__init__()
        # blocks are children "0".."n-1" (state-dict names layer{s}.{l}.*)
        for l in range(n):
            self.add_module(str(l), PreActBottleneck(c))
        self.transition = DelugeTransition(cin, c) if cin != c else None
        self.deluge = nn.ModuleList(CrossLayer(l + 2, c) for l in range(n))
        self.n = n

    def forward(self, x):
        if self.transition is not None:
            x = self.transition(x)
        hs, y = [x], x
        for l in range(self.n):
            hs.append(getattr(self, str(l))(y))
            y = self.deluge[l](hs)
        return y


class DelugeNet(nn.Module):
    def __init__(self, layers=(16, 16, 16), c=132, num_classes=10):
        super().__init__()
        self.conv1 = conv(3, c, 3)
        cin = c
        for s, n in enumerate(layers):
            width = c << s
            self.add_module(f"layer{s + 1}", DelugeStage(n, cin, width))
            cin = width
        self.final_bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        self.stages = len(layers)

    def forward(self, x):
        x = self.conv1(x)
        for s in range(self.stages):
            x = getattr(self, f"layer{s + 1}")(x)
        x = F.relu(self.final_bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


if __name__ == "__main__":
    # The registry's full-size counts (crates/densum/tests/params.rs checks the same figures).
    for name, m in [("dense2net121", Dense2Net()), ("delugenet146", DelugeNet()),
                    ("delugenet218", DelugeNet((24, 24, 24))),
                    ("wide_delugenet146", DelugeNet(c=232))]:
        print(f"{name:20s} {count_params(m):>12,}")


# ----------------------------------------------------------------------------- DS2Res2Net
def _res2_branch(self, x):
    """timm's Bottle2neck branch (see crates/densum/src/block/res2.rs) on a reference block."""
    a = F.relu(self.bn1(self.conv1(x)))
    xs = torch.split(a, self.res2_width, 1)
    out, prev = [], None
    for i, (c, b) in enumerate(zip(self.convs, self.bns)):
        inp = xs[i] if (prev is None or self.res2_first) else xs[i] + prev
        prev = F.relu(b(c(inp)))
        out.append(prev)
    last = xs[-1]
    if self.res2_first:
        last = F.avg_pool2d(last, 3, stride=self.stride, padding=1, count_include_pad=True)
    out.append(last)
    return self.bn3(self.conv3(torch.cat(out, 1)))


def ds_res2net(depth=26, *, width=1.0, num_classes=10, stem="cifar", base_width=26, scale=4,
               ds_norm="gn", ds_weight="channel"):
    """DSNet's dense shortcuts (tools/reference/models.py, variant b) on Res2Net bottlenecks:
    every reference bottleneck's branch is rebuilt as timm's Bottle2neck branch (names
    conv1, bn1, convs.{i}, bns.{i}, conv3, bn3); stage connectivity and shortcuts unchanged."""
    import types

    from reference.models import Net

    net = Net(depth, width=width, num_classes=num_classes, stem=stem, connectivity="ds_b",
              ds_norm=ds_norm, ds_weight=ds_weight)
    for s in range(1, 5):
        stage = getattr(net, f"layer{s}")
        for b in range(stage.n):
            blk = stage.block(b)
            inplanes, planes = blk.conv1.in_channels, blk.conv3.out_channels // 4
            w = int(planes * base_width / 64)
            blk.conv1 = nn.Conv2d(inplanes, w * scale, 1, bias=False)
            blk.bn1 = nn.BatchNorm2d(w * scale)
            del blk.conv2, blk.bn2
            blk.convs = nn.ModuleList(conv(w, w, 3, stride=blk.stride) for _ in range(scale - 1))
            blk.bns = nn.ModuleList(nn.BatchNorm2d(w) for _ in range(scale - 1))
            blk.conv3 = nn.Conv2d(w * scale, planes * 4, 1, bias=False)
            blk.res2_width = w
            blk.res2_first = blk.stride > 1 or blk.downsample is not None
            blk.branch = types.MethodType(_res2_branch, blk)
    return net
