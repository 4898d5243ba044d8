#!/usr/bin/env python3
"""Load densum weight files into the matching torchvision / timm model with strict=True.

    .venv/bin/python tools/check_export.py FILE.safetensors [FILE ...]

The model is the one the file's metadata names (`densum init` / `densum convert` write it):
full-size torchvision ResNet / ResNeXt / Wide ResNet / DenseNet, timm Res2Net and SE-ResNet
(densum `se_resnet50` = timm `seresnet50`), with the file's class count; and the small
make_checkpoints.py cases, recognised by their options. Each file must load with
`load_state_dict(strict=True)` (every name and shape, `num_batches_tracked` included), and the
loaded model must give finite logits on a random image. Exits non-zero naming the first file
that fails.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from safetensors.torch import load_file, safe_open

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)

TORCHVISION = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
               "densenet121", "densenet161", "densenet169", "densenet201"}
TIMM = {"res2net50_26w_4s": "res2net50_26w_4s", "res2net101_26w_4s": "res2net101_26w_4s",
        "res2net50_48w_2s": "res2net50_48w_2s", "se_resnet50": "seresnet50",
        "se_resnet101": "seresnet101", "se_resnet152": "seresnet152"}


def build(model: str, options: dict):
    """The PyTorch model a densum file of `model` with `options` corresponds to."""
    k = options.get("num_classes", 1000)
    full_size = set(options) <= {"dataset", "num_classes"} and options.get("dataset", "imagenet") == "imagenet"
    if full_size and model in TORCHVISION:
        import torchvision
        return getattr(torchvision.models, model)(num_classes=k), 224
    if full_size and model in TIMM:
        import timm
        return timm.create_model(TIMM[model], num_classes=k), 224
    # A small make_checkpoints.py case with these options.
    import make_checkpoints
    for c in make_checkpoints.CASES:
        if c["model"] == model and c["options"] == options:
            return c["factory"](), c["hw"]
    raise SystemExit(f"no torchvision / timm counterpart known for {model} with options {options}")


def check(path: str):
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if "model" not in meta:
        raise SystemExit(f"{path}: no `model` in the metadata; not a densum weight file")
    options = json.loads(meta.get("options", "{}"))
    model, hw = build(meta["model"], options)
    sd = load_file(path)
    model.load_state_dict(sd, strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, hw, hw))
    assert torch.isfinite(logits).all(), f"{path}: non-finite logits"
    print(f"{path}: {meta['model']} {options} -> {type(model).__module__}.{type(model).__name__}: "
          f"{len(sd)} tensors, strict load OK, logits {tuple(logits.shape)}")


def main():
    torch.set_num_threads(1)
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for path in sys.argv[1:]:
        check(path)


if __name__ == "__main__":
    main()
