#!/usr/bin/env python3
"""densum against PyTorch on the same machine, same shapes, batch, threads and iterations.

Runs `densum bench --json` for the given models, then times the same networks in PyTorch
(torchvision where it has the model, tools/reference otherwise), and prints densum / PyTorch
ratios of throughput for training and inference. Ratios > 1 mean densum is faster.

    .venv/bin/python tools/side_by_side.py resnet50 dsnet50 --dataset cifar100 --width 0.25 --batch 64 --rounds 3

Both sides use every core by default (torch.set_num_threads and RAYON_NUM_THREADS, both set
from --threads), random inputs, SGD with momentum 0.9 for the training step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "reference"))

from models import build as build_reference  # noqa: E402
from tv import TV_ARCHS, tv_resnet  # noqa: E402

CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "imagenet": 1000}


# densum's DenseNet names: densenet121/161/169/201/264 (ImageNet form) and densenet_bc{L}_k{k}
# (CIFAR form: three blocks of (L - 4) / 6 bottleneck layers, a bare 3x3 stem to 2k channels).
# torchvision builds densenet121/161/169/201 by name; DenseNet-264 (growth 32, 64 stem channels)
# it has only as the generic class.
DENSENET264_BLOCKS = (6, 12, 64, 48)


def tv_densenet(name: str, num_classes: int, memory_efficient: bool) -> nn.Module | None:
    """torchvision's DenseNet for a densum DenseNet(-BC) name, or None for another name.

    torchvision only has the bottleneck + compression 0.5 form, so plain DenseNet
    (densenet{L}_k{k}) is refused. The CIFAR form swaps torchvision's 7x7 stem (conv, BN, ReLU,
    max pool) for the papers' single 3x3 convolution, as densum builds it."""
    import torchvision
    if name in ("densenet121", "densenet161", "densenet169", "densenet201"):
        return getattr(torchvision.models, name)(num_classes=num_classes, memory_efficient=memory_efficient)
    if name == "densenet264":
        return torchvision.models.DenseNet(growth_rate=32, block_config=DENSENET264_BLOCKS,
                                           num_init_features=64, num_classes=num_classes,
                                           memory_efficient=memory_efficient)
    m = re.fullmatch(r"densenet_bc(\d+)_k(\d+)", name)
    if m:
        depth, k = int(m[1]), int(m[2])
        n = (depth - 4) // 6
        net = torchvision.models.DenseNet(growth_rate=k, block_config=(n, n, n), num_init_features=2 * k,
                                          num_classes=num_classes, memory_efficient=memory_efficient)
        net.features.conv0 = nn.Conv2d(3, 2 * k, 3, padding=1, bias=False)
        for stem_part in ("norm0", "relu0", "pool0"):
            setattr(net.features, stem_part, nn.Identity())
        return net
    if name.startswith("densenet"):
        raise SystemExit(f"side_by_side: torchvision has no counterpart of {name} "
                         "(only DenseNet-BC: densenet121/161/169/201/264, densenet_bc<L>_k<k>)")
    return None


def pytorch_model(name: str, dataset: str, width: float, memory_efficient: bool = False) -> nn.Module:
    stem = "imagenet" if dataset == "imagenet" else "cifar"
    dense = tv_densenet(name, CLASSES[dataset], memory_efficient)
    if dense is not None:
        return dense
    if name in TV_ARCHS:
        return tv_resnet(name, width=width, num_classes=CLASSES[dataset], stem=stem)
    return build_reference(name, dataset=dataset if dataset != "svhn" else "cifar10", width=width,
                           num_classes=CLASSES[dataset])


def time_pytorch(model: nn.Module, batch: int, size: int, classes: int, warmup: int, iters: int,
                 channels_last: bool = False):
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        # PyTorch's fastest CPU layout for convolutions (oneDNN's NHWC kernels); its default
        # is NCHW. Both are reported, since a user may run either.
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    y = torch.arange(batch) % classes
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    steps = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if i >= warmup:
            steps.append(time.perf_counter() - t0)
    model.eval()
    infer = []
    with torch.no_grad():
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                infer.append(time.perf_counter() - t0)
    return batch / statistics.median(steps), batch / statistics.median(infer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--dataset", default="cifar100")
    ap.add_argument("--width", type=float, default=None,
                    help="width multiplier of the ResNet family (default 0.25); DenseNet has none "
                         "in torchvision, so it is not passed for DenseNet models")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--densum", default=str(ROOT / "target" / "release" / "densum"),
                    help="the densum binary (build it with cargo build --release)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for both sides (torch.set_num_threads, RAYON_NUM_THREADS); on a "
                         "machine shared with other jobs, 1 keeps PyTorch's OpenMP threads from "
                         "spinning against the load")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the whole comparison (densum, then PyTorch) this many times and "
                         "report every round's ratios and their median; on a shared machine one "
                         "round can land in someone else's burst")
    ap.add_argument("--memory-efficient", action="store_true",
                    help="DenseNet: densum's --memory-efficient against torchvision's "
                         "memory_efficient=True (both recompute the concatenation and first BN-ReLU)")
    args = ap.parse_args()

    dense = [m for m in args.models if m.startswith("densenet")]
    if dense and args.width not in (None, 1.0):
        raise SystemExit(f"side_by_side: --width is for the ResNet family; torchvision's DenseNet "
                         f"({', '.join(dense)}) has no width multiplier")
    if dense and len(dense) < len(args.models):
        raise SystemExit("side_by_side: run DenseNet models and the ResNet family in separate "
                         "invocations (one --width applies to every model)")
    args.width = 1.0 if dense else (0.25 if args.width is None else args.width)
    torch.set_num_threads(args.threads)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = [args.densum, "bench", *args.models, "--dataset", args.dataset, "--width", str(args.width),
           "--batch", str(args.batch), "--warmup", str(args.warmup), "--iters", str(args.iters), "--json"]
    if args.memory_efficient:
        cmd.append("--memory-efficient")
    size = 224 if args.dataset == "imagenet" else 32
    print(f"{args.dataset}, width {args.width}, batch {args.batch}, {args.warmup}+{args.iters} iterations, "
          f"{torch.get_num_threads()} threads; images/s")
    print("ratio = densum / PyTorch; NCHW is PyTorch's default layout, NHWC its channels_last")
    header = f"{'model':16} {'mode':6} {'densum':>9} {'pt NCHW':>9} {'ratio':>7} {'pt NHWC':>9} {'ratio':>7}"
    # (model, mode) -> [(ratio vs NCHW, ratio vs NHWC)] over rounds.
    ratios: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for rnd in range(args.rounds):
        if args.rounds > 1:
            print(f"round {rnd + 1} of {args.rounds}, {time.strftime('%H:%M:%S', time.gmtime())} UTC")
        print(header)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        ours = {r["model"]: r for r in json.loads(out)}
        for name in args.models:
            timings = []
            for channels_last in (False, True):
                torch.manual_seed(0)
                model = pytorch_model(name, args.dataset, args.width, args.memory_efficient)
                timings.append(time_pytorch(model, args.batch, size, CLASSES[args.dataset], args.warmup,
                                            args.iters, channels_last))
            (train, infer), (train_cl, infer_cl) = timings
            r = ours[name]
            for mode, theirs, theirs_cl, mine in [
                    ("train", train, train_cl, r["train"]["images_per_s"]),
                    ("infer", infer, infer_cl, r["infer"]["images_per_s"])]:
                print(f"{name:16} {mode:6} {mine:9.1f} {theirs:9.1f} {mine / theirs:7.2f} "
                      f"{theirs_cl:9.1f} {mine / theirs_cl:7.2f}")
                ratios.setdefault((name, mode), []).append((mine / theirs, mine / theirs_cl))
    if args.rounds > 1:
        print(f"median over {args.rounds} rounds [min, max]")
        print(f"{'model':16} {'mode':6} {'vs NCHW':>20} {'vs NHWC':>20}")
        for (name, mode), rs in ratios.items():
            cols = []
            for k in (0, 1):
                v = [r[k] for r in rs]
                cols.append(f"{statistics.median(v):.2f} [{min(v):.2f}, {max(v):.2f}]")
            print(f"{name:16} {mode:6} {cols[0]:>20} {cols[1]:>20}")

if __name__ == "__main__":
    main()
