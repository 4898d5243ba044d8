#!/usr/bin/env python3
"""PyTorch checkpoints as users have them, for `densum convert`'s tests, and the export check.

    .venv/bin/python tools/make_checkpoints.py           # small cases -> crates/densum/tests/fixtures/checkpoints/
    .venv/bin/python tools/make_checkpoints.py --large   # ResNet-50, DenseNet-121 training checkpoints
                                                         #   -> tools/fixtures/large/checkpoints/ (not committed)
    .venv/bin/python tools/make_checkpoints.py --names   # torchvision / timm state_dict names and shapes
                                                         #   -> .../checkpoints/export_names.json

Each case is a torchvision / timm model class with random weights (make_fixtures.randomize),
saved the way a training script or a model zoo saves it (zip or legacy container, nested
under "state_dict" / "model", `module.` prefixes, f16 / bf16), and its eval-mode logits on the
fixture images. manifest.json lists the cases; expected.safetensors holds `{case}.input` and
`{case}.logits`. For f16 / bf16 cases the logits are those of the rounded weights.

The hostile cases are refused by densum: `hostile_*` call os.system when unpickled by
torch.load(weights_only=False); this script checks that they do (the command creates
HOSTILE_MARKER, which is removed again), so the Rust test asserting that the file does not
appear after `densum convert` tests something real. `absurd_*` declare a tensor far larger
than its storage, or an offset beyond it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import sys

import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)

from make_fixtures import (  # noqa: E402
    canonicalize_header, image_paths, load_input, narrow_timm_stem, randomize, seed_of,
    timm_res2net_small, tv_densenet_small,
)
from reference.tv import tv_resnet  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT_DIR = os.path.join(REPO, "crates", "densum", "tests", "fixtures", "checkpoints")
LARGE_DIR = os.path.join(TOOLS, "fixtures", "large", "checkpoints")
IMAGES_DIR = os.path.join(REPO, "crates", "densum", "tests", "fixtures")
HOSTILE_MARKER = "/tmp/densum-hostile-checkpoint-ran"


def timm_seresnet_small():
    """timm's seresnet50 class (Bottleneck + SE, attn_layer='se') at 0.125 width, 1-1-1-1 blocks."""
    from timm.models.resnet import Bottleneck, ResNet
    m = ResNet(block=Bottleneck, layers=[1, 1, 1, 1], block_args=dict(attn_layer="se"),
               channels=(8, 16, 32, 64), num_classes=10)
    return narrow_timm_stem(m)


def tv_resnet18_small():
    return tv_resnet("resnet18", 0.125, 10, "cifar")


def tv_wrn_small():
    return tv_resnet("wide_resnet50_2", 0.0625, 10, "cifar")


C10_W0125 = {"dataset": "cifar10", "width": 0.125, "num_classes": 10}


def case(name, model, options, factory, *, file, wrap, dtype=torch.float32, legacy=False,
         old_densenet_names=False, hw=32, batch=2):
    return dict(name=name, model=model, options=options, factory=factory, file=file, wrap=wrap,
                dtype=dtype, legacy=legacy, old_densenet_names=old_densenet_names, hw=hw, batch=batch)


# wrap: "plain" (state dict at the root), "train" ({"epoch", "arch", "state_dict": {"module.*"},
# "optimizer", "best_acc1"}, as the PyTorch ImageNet example saves), "model" ({"model": sd}).
CASES = [
    case("resnet18_zip_train", "resnet18", C10_W0125, tv_resnet18_small,
         file="resnet18_zip_train.pth", wrap="train"),
    case("resnet18_legacy_plain", "resnet18", C10_W0125, tv_resnet18_small,
         file="resnet18_legacy_plain.pth", wrap="plain", legacy=True),
    case("resnet18_f16_model", "resnet18", C10_W0125, tv_resnet18_small,
         file="resnet18_f16_model.pt", wrap="model", dtype=torch.float16),
    case("resnet18_bf16_legacy", "resnet18", C10_W0125, tv_resnet18_small,
         file="resnet18_bf16_legacy.pt", wrap="model", dtype=torch.bfloat16, legacy=True),
    case("wide_resnet50_2_zip", "wide_resnet50_2", {**C10_W0125, "width": 0.0625}, tv_wrn_small,
         file="wide_resnet50_2_zip.pth", wrap="train"),
    case("densenet_old_names_legacy", "densenet121",
         {"dataset": "imagenet", "num_classes": 10, "growth_rate": 8, "block_config": [2, 2, 2, 2],
          "init_features": 16}, tv_densenet_small,
         file="densenet_old_names_legacy.pth", wrap="plain", legacy=True, old_densenet_names=True, hw=64),
    # A 21-character file stem: zip 9.1 to 9.8.2 could not read such archives (Cargo.toml).
    case("densenet_epoch90_best", "densenet121",
         {"dataset": "imagenet", "num_classes": 10, "growth_rate": 8, "block_config": [2, 2, 2, 2],
          "init_features": 16}, tv_densenet_small, file="densenet_epoch90_best.pth", wrap="train", hw=64),
    case("seresnet_timm_zip", "se_resnet50",
         {"dataset": "imagenet", "width": 0.125, "num_classes": 10, "block_config": [1, 1, 1, 1]},
         timm_seresnet_small, file="seresnet_timm_zip.pth", wrap="train", hw=64),
    case("res2net_timm_safetensors", "res2net50_26w_4s",
         {"dataset": "imagenet", "width": 0.125, "num_classes": 10, "block_config": [2, 2, 1, 1]},
         timm_res2net_small, file="res2net_timm.safetensors", wrap="plain", hw=64),
]


def tv_full(arch):
    import torchvision
    return getattr(torchvision.models, arch)()


LARGE_CASES = [
    case("resnet50_imagenet_train", "resnet50", {"dataset": "imagenet"}, lambda: tv_full("resnet50"),
         file="resnet50_train.pth", wrap="train", hw=224, batch=1),
    case("densenet121_imagenet_train", "densenet121", {"dataset": "imagenet"},
         lambda: tv_full("densenet121"), file="densenet121_train.pth", wrap="train", hw=224, batch=1),
]


def old_densenet_name(name: str) -> str:
    """torchvision < 0.3 names: denselayerN.norm1 -> denselayerN.norm.1 (what its loader undoes)."""
    parts = name.split(".")
    for i, p in enumerate(parts[:-1]):
        if p.startswith("denselayer") and parts[i + 1][:-1] in ("norm", "conv", "relu") \
                and parts[i + 1][-1] in "12":
            parts[i + 1] = parts[i + 1][:-1] + "." + parts[i + 1][-1]
    return ".".join(parts)


def wrapped(c, sd, model):
    if c["wrap"] == "plain":
        return sd
    if c["wrap"] == "model":
        return {"model": sd, "epoch": 7}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return {
        "epoch": 90,
        "arch": c["model"],
        "state_dict": collections.OrderedDict((f"module.{k}", v) for k, v in sd.items()),
        "best_acc1": torch.tensor(76.1),
        "optimizer": opt.state_dict(),
    }


def generate(c, out_dir, images_dir, expected):
    torch.manual_seed(seed_of(c["name"]))
    model = c["factory"]()
    randomize(model)
    model.eval()
    sd = collections.OrderedDict((k, v.detach().clone().contiguous()) for k, v in model.state_dict().items())
    if c["dtype"] != torch.float32:
        sd = collections.OrderedDict((k, v.to(c["dtype"]) if v.is_floating_point() else v) for k, v in sd.items())
        # The logits PyTorch gives for the rounded weights.
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    dataset = c["options"]["dataset"]
    x = load_input(image_paths(images_dir, c["hw"], c["batch"]), dataset)
    with torch.no_grad():
        logits = model(x)
    if c["old_densenet_names"]:
        sd = collections.OrderedDict((old_densenet_name(k), v) for k, v in sd.items())
        assert any(".norm.1." in k for k in sd), "no old-style names written"
    path = os.path.join(out_dir, c["file"])
    if path.endswith(".safetensors"):
        save_file(dict(sd), path)
    else:
        torch.save(wrapped(c, sd, model), path, _use_new_zipfile_serialization=not c["legacy"])
    expected[f"{c['name']}.input"] = x.contiguous()
    expected[f"{c['name']}.logits"] = logits.contiguous()
    entry = {k: c[k] for k in ("name", "model", "options", "file", "wrap", "legacy")}
    entry["dtype"] = str(c["dtype"]).removeprefix("torch.")
    entry["tensors"] = len(sd)
    print(f"{c['name']:28} {os.path.getsize(path) / 1e6:6.2f} MB  {path}")
    return entry


# ----------------------------------------------------------------------------- hostile files
class RunsCommand:
    """Unpickling calls os.system(cmd): what a hostile checkpoint does under torch.load."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class AbsurdTensor:
    """A tensor whose size (or offset) its 4-element storage cannot hold."""

    def __init__(self, size, offset):
        self.size, self.offset = size, offset

    def __reduce__(self):
        storage = torch.zeros(4).storage()
        return (torch._utils._rebuild_tensor_v2,
                (storage, self.offset, self.size, (1,) * len(self.size), False, collections.OrderedDict()))


def write_hostile(out_dir):
    small = {"conv1.weight": torch.zeros(8, 3, 3, 3)}
    cmd = f"touch {HOSTILE_MARKER}"
    files = {
        "hostile_system_zip.pth": lambda p: torch.save({"state_dict": small, "extra": RunsCommand(cmd)}, p),
        "hostile_system_legacy.pth": lambda p: torch.save(
            {"state_dict": small, "extra": RunsCommand(cmd)}, p, _use_new_zipfile_serialization=False),
        "hostile_system_plain.pkl": lambda p: open(p, "wb").write(pickle.dumps(RunsCommand(cmd), protocol=2)),
        "absurd_size.pth": lambda p: torch.save({"conv1.weight": AbsurdTensor((10 ** 12,), 0)}, p),
        "absurd_offset.pth": lambda p: torch.save({"conv1.weight": AbsurdTensor((4,), 2 ** 60)}, p),
    }
    for name, write in files.items():
        path = os.path.join(out_dir, name)
        write(path)
        if name.startswith("hostile"):
            if os.path.exists(HOSTILE_MARKER):
                os.remove(HOSTILE_MARKER)
            try:
                if name.endswith(".pkl"):
                    with open(path, "rb") as f:
                        pickle.load(f)
                else:
                    torch.load(path, weights_only=False)
            except Exception:
                pass
            assert os.path.exists(HOSTILE_MARKER), f"{name} did not run its command under torch.load"
            os.remove(HOSTILE_MARKER)
            # And PyTorch's own safe loader refuses it too.
            if not name.endswith(".pkl"):
                try:
                    torch.load(path, weights_only=True)
                    raise AssertionError(f"torch.load(weights_only=True) accepted {name}")
                except pickle.UnpicklingError:
                    pass
        print(f"{name:28} {os.path.getsize(path):8d} B")


# ----------------------------------------------------------------------------- export names
def export_models():
    import timm
    import torchvision
    return {
        "resnet50": ("torchvision.models.resnet50", torchvision.models.resnet50),
        "resnext50_32x4d": ("torchvision.models.resnext50_32x4d", torchvision.models.resnext50_32x4d),
        "wide_resnet50_2": ("torchvision.models.wide_resnet50_2", torchvision.models.wide_resnet50_2),
        "densenet121": ("torchvision.models.densenet121", torchvision.models.densenet121),
        "res2net50_26w_4s": ("timm res2net50_26w_4s", lambda: timm.create_model("res2net50_26w_4s")),
        "se_resnet50": ("timm seresnet50", lambda: timm.create_model("seresnet50")),
    }


def write_names(out_dir):
    out = {}
    for name, (source, make) in export_models().items():
        sd = make().state_dict()
        out[name] = {"source": source,
                     "tensors": [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in sd.items()]}
        print(f"{name:20} {len(sd)} tensors ({source})")
    path = os.path.join(out_dir, "export_names.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} B)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", action="store_true")
    ap.add_argument("--names", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out_dir = LARGE_DIR if args.large else OUT_DIR
    os.makedirs(out_dir, exist_ok=True)
    if args.names:
        write_names(OUT_DIR)
        return
    expected, entries = {}, []
    for c in LARGE_CASES if args.large else CASES:
        # The small cases read the committed fixture images; --large writes its 224 px one beside it.
        entries.append(generate(c, out_dir, out_dir if args.large else IMAGES_DIR, expected))
    exp_path = os.path.join(out_dir, "expected.safetensors")
    save_file(expected, exp_path, metadata={"generator": "tools/make_checkpoints.py"})
    canonicalize_header(exp_path)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump({"generator": "tools/make_checkpoints.py", "hostile_marker": HOSTILE_MARKER,
                   "cases": entries}, f, indent=1)
        f.write("\n")
    if not args.large:
        write_hostile(out_dir)


if __name__ == "__main__":
    main()
