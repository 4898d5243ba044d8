#!/usr/bin/env python3
"""PyTorch timings of the convolution shapes in crates/densum/examples/op_profile.rs.

Prints the same table (forward, input gradient, weight gradient per call, and totals weighted
by how often each shape occurs in a ResNet-50 0.25x CIFAR training step) so the two can be put
side by side:

    .venv/bin/python tools/op_profile.py --batch 64 --reps 3 [--threads 1]
    .venv/bin/python tools/op_profile.py --net densenet121 --batch 8 --reps 3 --channels-last
    .venv/bin/python tools/op_profile.py --net resnet50 --batch 8 --reps 3 --channels-last

Gradients are timed with torch.nn.grad.conv2d_input / conv2d_weight, which call the same
kernels autograd uses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

# (in channels, out channels, kernel, stride, input side, occurrences per forward pass)
CONVS = [
    (3, 16, 3, 1, 32, 1), (16, 16, 1, 1, 32, 1), (64, 16, 1, 1, 32, 2), (16, 16, 3, 1, 32, 3),
    (16, 64, 1, 1, 32, 4), (64, 32, 1, 1, 32, 1), (32, 32, 3, 2, 32, 1), (64, 128, 1, 2, 32, 1),
    (128, 32, 1, 1, 16, 3), (32, 32, 3, 1, 16, 3), (32, 128, 1, 1, 16, 4), (128, 64, 1, 1, 16, 1),
    (64, 64, 3, 2, 16, 1), (128, 256, 1, 2, 16, 1), (256, 64, 1, 1, 8, 5), (64, 64, 3, 1, 8, 5),
    (64, 256, 1, 1, 8, 6), (256, 128, 1, 1, 8, 1), (128, 128, 3, 2, 8, 1), (256, 512, 1, 2, 8, 1),
    (512, 128, 1, 1, 4, 2), (128, 128, 3, 1, 4, 2), (128, 512, 1, 1, 4, 3),
]

# DenseNet-121 at 224x224, as DENSENET121 in op_profile.rs: the stem, per dense block its 1x1
# convolution at the block's mean input width and its 3x3, and the transitions.
DENSENET121 = [
    (3, 64, 7, 2, 224, 1), (144, 128, 1, 1, 56, 6), (128, 32, 3, 1, 56, 6), (256, 128, 1, 1, 56, 1),
    (304, 128, 1, 1, 28, 12), (128, 32, 3, 1, 28, 12), (512, 256, 1, 1, 28, 1),
    (624, 128, 1, 1, 14, 24), (128, 32, 3, 1, 14, 24), (1024, 512, 1, 1, 14, 1),
    (752, 128, 1, 1, 7, 16), (128, 32, 3, 1, 7, 16),
]

# ResNet-50 (torchvision, stride on the 3x3) at 224x224, as RESNET50 in op_profile.rs.
RESNET50 = [
    (3, 64, 7, 2, 224, 1), (64, 64, 1, 1, 56, 1), (256, 64, 1, 1, 56, 2), (64, 64, 3, 1, 56, 3),
    (64, 256, 1, 1, 56, 4), (256, 128, 1, 1, 56, 1), (128, 128, 3, 2, 56, 1),
    (256, 512, 1, 2, 56, 1), (512, 128, 1, 1, 28, 3), (128, 128, 3, 1, 28, 3),
    (128, 512, 1, 1, 28, 4), (512, 256, 1, 1, 28, 1), (256, 256, 3, 2, 28, 1),
    (512, 1024, 1, 2, 28, 1), (1024, 256, 1, 1, 14, 5), (256, 256, 3, 1, 14, 5),
    (256, 1024, 1, 1, 14, 6), (1024, 512, 1, 1, 14, 1), (512, 512, 3, 2, 14, 1),
    (1024, 2048, 1, 2, 14, 1), (2048, 512, 1, 1, 7, 2), (512, 512, 3, 1, 7, 2),
    (512, 2048, 1, 1, 7, 3),
]

NETS = {"resnet50_cifar": CONVS, "densenet121": DENSENET121, "resnet50": RESNET50}


def timed(reps: int, f) -> float:
    f()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--net", choices=sorted(NETS), default="resnet50_cifar",
                    help="which network's convolution shapes (as op_profile.rs's --net)")
    ap.add_argument("--channels-last", action="store_true", help="time NHWC (oneDNN direct) convolutions")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print("cin cout k s hw n | fwd_ms xgrad_ms wgrad_ms (per call)")
    tf = tx = tw = 0.0
    with torch.no_grad():
        for ci, co, k, s, hw, n in NETS[a.net]:
            x = torch.randn(a.batch, ci, hw, hw)
            w = torch.randn(co, ci, k, k)
            y = F.conv2d(x, w, stride=s, padding=k // 2)
            dy = torch.randn_like(y)
            if a.channels_last:
                cl = torch.channels_last
                x, w, dy = x.to(memory_format=cl), w.to(memory_format=cl), dy.to(memory_format=cl)
            f = timed(a.reps, lambda: F.conv2d(x, w, stride=s, padding=k // 2))
            xg = timed(a.reps, lambda: conv2d_input(x.shape, w, dy, stride=s, padding=k // 2))
            wg = timed(a.reps, lambda: conv2d_weight(x, w.shape, dy, stride=s, padding=k // 2))
            print(f"{ci} {co} {k} {s} {hw} {n} | {f:.2f} {xg:.2f} {wg:.2f}")
            tf += f * n
            tx += xg * n
            tw += wg * n
    print(f"TOTAL conv per step: fwd {tf:.1f} ms, xgrad {tx:.1f} ms, wgrad {tw:.1f} ms")


if __name__ == "__main__":
    main()
