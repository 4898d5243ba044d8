#!/usr/bin/env python3
"""Grad-CAM of committed fixtures in PyTorch, the reference for densum's `explain::gradcam`.

    /work/main/.venv/bin/python tools/make_gradcam_fixture.py          # writes the fixture
    /work/main/.venv/bin/python tools/make_gradcam_fixture.py --verify # recompute, compare

Reads the weights and images of some cases of tools/make_fixtures.py (already committed under
crates/densum/tests/fixtures/) and writes crates/densum/tests/fixtures/gradcam.safetensors.

Grad-CAM is implemented here with forward hooks and tensor hooks, step for step as
pytorch-grad-cam's `GradCAM` (base_cam.py, grad_cam.py, utils/image.py) computes it for one
target layer and `ClassifierOutputTarget`s:

1. eval mode; A = the target layer's output [N, C, h, w], captured by a forward hook;
2. score = sum over images n of logits[n, c_n] (the raw logit, no softmax), c_n = the
   requested class or the image's arg-max ("top"); one backward of that sum;
   dA = d(score)/dA from a hook on A;
3. alpha[n, c] = mean over (h, w) of dA[n, c];
4. cam[n] = ReLU(sum_c alpha[n, c] * A[n, c])                      ("cam", [N, h, w]);
5. per image: cam -= min(cam); cam /= 1e-7 + max(cam);
6. bilinear resize to the image size (cv2.resize INTER_LINEAR = half-pixel centres, edge
   clamped = F.interpolate(mode="bilinear", align_corners=False) when enlarging);
7. per image again (pytorch-grad-cam's aggregate over target layers, one layer here):
   ReLU, then cam -= min(cam); cam /= 1e-7 + max(cam)               ("map", [N, H, W]).

DenseNet: densum's last feature map is ReLU(norm5(.)), which the classifier's pooling reads
directly. torchvision applies that ReLU inside `forward` (in place, no module to hook), so the
DenseNet is wrapped as `features` -> `relu` (an nn.ReLU module, hooked for the last layer) ->
pool -> `classifier`, which computes the same logits.

Contents (float32 unless noted), per entry (the `entries` metadata, a JSON list of
{"key", "case", "file", "model", "options", "layer", "target"}; the weights `file` next to
this one holds densum model `model` with `options`): `{key}.cam` [N,h,w], `{key}.map`
[N,H,W], `{key}.classes` int64 [N]. One thread, deterministic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)

from make_fixtures import CASES, OUT_DIR, load_input, make_model  # noqa: E402

OUT = os.path.join(OUT_DIR, "gradcam.safetensors")

# (case, layer as densum names it, module path in the PyTorch model, target class or "top")
ENTRIES = [
    ("tv_resnet18_w025_imagenetstem", "layer4", "layer4", "top"),
    ("tv_resnet18_w025_imagenetstem", "layer3", "layer3", "top"),
    ("tv_resnet18_w025_imagenetstem", "layer2", "layer2", 3),
    ("dsnet50", "layer4", "layer4", "top"),
    ("dsnet50", "layer3", "layer3", 7),
    ("tv_densenet_k8_2222", "layer4", "relu", "top"),
    ("tv_densenet_k8_2222", "layer3", "features.denseblock3", 2),
]


class DenseNetRelu(nn.Module):
    """torchvision's DenseNet with its final ReLU as a module (same weights, same logits)."""

    def __init__(self, m):
        super().__init__()
        self.features, self.relu, self.classifier = m.features, nn.ReLU(), m.classifier

    def forward(self, x):
        a = self.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(a, 1), 1))


def load_case(name: str):
    c = next(c for c in CASES if c["name"] == name)
    path = os.path.join(OUT_DIR, f"{name}.safetensors")
    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        images = f.metadata()["images"].split(",")
    model = make_model(c)
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("__")}, strict=True)
    model.eval()
    if name.startswith("tv_densenet"):
        model = DenseNetRelu(model).eval()
    x = load_input([os.path.join(OUT_DIR, p) for p in images], c["options"]["dataset"])
    assert torch.equal(x, tensors["__input__"]), name
    return model, x


def scale(cam: torch.Tensor) -> torch.Tensor:
    """Step 5 / 7: per image, shift to min 0 and divide by 1e-7 + max."""
    flat = cam.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    flat = flat / (1e-7 + flat.max(1, keepdim=True).values)
    return flat.view_as(cam)


def gradcam(model, x, module_path: str, target):
    module = model.get_submodule(module_path)
    store = {}

    def forward_hook(_m, _inp, out):
        store["a"] = out
        out.register_hook(lambda g: store.__setitem__("g", g))

    handle = module.register_forward_hook(forward_hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    if target == "top":
        classes = logits.argmax(1)
    else:
        classes = torch.full((x.shape[0],), target, dtype=torch.int64)
    score = logits.gather(1, classes[:, None]).sum()
    model.zero_grad(set_to_none=True)
    score.backward()
    a, g = store["a"].detach(), store["g"].detach()
    alpha = g.mean((2, 3))
    cam = F.relu((alpha[:, :, None, None] * a).sum(1))
    m = scale(cam)
    m = F.interpolate(m[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    m = scale(F.relu(m))
    return cam, m, classes


def compute():
    torch.set_num_threads(1)
    tensors, entries = {}, []
    for case, layer, path, target in ENTRIES:
        model, x = load_case(case)
        cam, m, classes = gradcam(model, x, path, target)
        # A map that is zero everywhere would test nothing.
        assert cam.flatten(1).max(1).values.min() > 0, (case, layer, target)
        key = f"{case}.{layer}.{target}"
        tensors[f"{key}.cam"] = cam.contiguous()
        tensors[f"{key}.map"] = m.contiguous()
        tensors[f"{key}.classes"] = classes.contiguous()
        c = next(c for c in CASES if c["name"] == case)
        entries.append({"key": key, "case": case, "file": f"{case}.safetensors", "model": c["model"],
                        "options": c["options"], "layer": layer, "target": target})
        print(f"{key}: cam {tuple(cam.shape)} max {cam.max().item():.4g}, classes {classes.tolist()}")
    return tensors, entries


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verify", action="store_true", help="recompute and compare with the committed file")
    args = ap.parse_args()
    tensors, entries = compute()
    if args.verify:
        old = load_file(OUT)
        for k, v in tensors.items():
            err = (old[k].double() - v.double()).abs().max().item()
            assert err <= 1e-6, (k, err)
        print(f"{OUT}: {len(tensors)} tensors match")
        return
    meta = {"generator": "tools/make_gradcam_fixture.py", "entries": json.dumps(entries)}
    save_file(tensors, OUT, metadata=meta)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
