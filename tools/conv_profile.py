#!/usr/bin/env python3
"""Per-shape convolution time inside a whole network: densum against PyTorch, same run.

Runs `densum bench <model> --conv-profile --json` (every fast convolution of the measured
iterations timed by shape), then profiles the same network in PyTorch (torch.profiler, self
CPU time of aten::mkldnn_convolution and aten::convolution_backward grouped by input shape)
and prints, per shape, milliseconds per training step (forward; backward = input + weight
gradient, since PyTorch computes both in one call) and per inference pass, with the ratio
densum / PyTorch (> 1: densum is slower on that shape).

    .venv/bin/python tools/conv_profile.py resnet50 --dataset cifar100 --width 0.25 --batch 64
    .venv/bin/python tools/conv_profile.py resnet50 --dataset imagenet --batch 8 --channels-last

Why: a convolution timed alone (tools/op_profile.py, examples/op_profile.rs) runs with hot
caches and can be 2-3x faster than inside a step, so only in-network figures show which shapes
to work on. PyTorch's profiler adds some microseconds per operation, which makes its small
shapes look slower than they are; compare totals with tools/side_by_side.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from side_by_side import CLASSES, pytorch_model  # noqa: E402


def densum_times(args) -> dict:
    """{(mode, key): {pass: ms per iteration}} from densum bench --conv-profile --json."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = [args.densum, "bench", args.model, "--dataset", args.dataset, "--width", str(args.width),
           "--batch", str(args.batch), "--warmup", "1", "--iters", str(args.iters), "--json",
           "--conv-profile"]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
    times: dict = defaultdict(lambda: defaultdict(float))
    for mode in ("train", "infer"):
        for t in (out[0].get(mode) or {}).get("convolutions", []):
            s = t["shape"]
            key = (s["c"], s["o"], s["kernel"][0], s["input"][0])
            times[(mode, key)][t["pass"]] += t["ms"]
    return times


def pytorch_times(args) -> dict:
    """{(mode, key): {"forward"|"backward": ms per iteration}} from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.threads)
    size = 224 if args.dataset == "imagenet" else 32
    model = pytorch_model(args.model, args.dataset, args.width)
    x = torch.randn(args.batch, 3, size, size)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    y = torch.arange(args.batch) % CLASSES[args.dataset]
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    times: dict = defaultdict(lambda: defaultdict(float))

    def collect(prof, mode):
        for e in prof.key_averages(group_by_input_shape=True):
            shapes = e.input_shapes
            if e.key == "aten::mkldnn_convolution":
                xs, ws, what = shapes[0], shapes[1], "forward"
            elif e.key == "aten::convolution_backward":
                xs, ws, what = shapes[1], shapes[2], "backward"
            else:
                continue
            key = (ws[1], ws[0], ws[2], xs[2])
            times[(mode, key)][what] += e.self_cpu_time_total / 1e3 / args.iters

    model.train()
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.iters):
            step()
    collect(prof, "train")
    model.eval()
    with torch.no_grad():
        model(x)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(args.iters):
                model(x)
    collect(prof, "infer")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--dataset", default="cifar10", choices=sorted(CLASSES))
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--channels-last", action="store_true", help="PyTorch in channels_last (NHWC)")
    ap.add_argument("--densum", default=str(ROOT / "target" / "release" / "densum"),
                    help="the densum binary (build it with cargo build --release)")
    args = ap.parse_args()
    ours, theirs = densum_times(args), pytorch_times(args)
    layout = "channels_last" if args.channels_last else "NCHW"
    print(f"{args.model}, {args.dataset}, width {args.width}, batch {args.batch}, {args.threads} threads, "
          f"PyTorch {torch.__version__} {layout}; ms per iteration, ratio = densum / PyTorch")
    for mode in ("train", "infer"):
        keys = sorted({k for (m, k) in set(ours) | set(theirs) if m == mode})
        if not keys:
            continue
        print(f"\n{mode}: in->out k @side | densum fwd  bwd | PyTorch fwd  bwd | ratio")
        tot = [0.0] * 4
        rows = []
        for key in keys:
            o, t = ours.get((mode, key), {}), theirs.get((mode, key), {})
            of = o.get("forward", 0.0) + o.get("inference", 0.0)
            ob = o.get("input_grad", 0.0) + o.get("weight_grad", 0.0)
            tf, tb = t.get("forward", 0.0), t.get("backward", 0.0)
            for i, v in enumerate((of, ob, tf, tb)):
                tot[i] += v
            rows.append((of + ob, key, of, ob, tf, tb))
        for _, (c, oc, k, h), of, ob, tf, tb in sorted(rows, reverse=True):
            ratio = (of + ob) / (tf + tb) if tf + tb > 0 else float("nan")
            print(f"{c:>5}->{oc:<5} {k}x{k} @{h:<4} | {of:8.2f} {ob:8.2f} | {tf:8.2f} {tb:8.2f} | {ratio:5.2f}")
        ratio = (tot[0] + tot[1]) / max(tot[2] + tot[3], 1e-9)
        print(f"{'total':21} | {tot[0]:8.1f} {tot[1]:8.1f} | {tot[2]:8.1f} {tot[3]:8.1f} | {ratio:5.2f}")


if __name__ == "__main__":
    main()
