#!/usr/bin/env python3
"""Write the deterministic PyTorch fixtures the densum Rust tests compare against.

    .venv/bin/python tools/make_fixtures.py            # small cases -> crates/densum/tests/fixtures/
    .venv/bin/python tools/make_fixtures.py --only dsnet50 ds2net26
    .venv/bin/python tools/make_fixtures.py --verify   # reload every committed file, recheck
    .venv/bin/python tools/make_fixtures.py --large    # full-size torchvision -> tools/fixtures/large/

One safetensors file per case; see tools/README.md for the exact contents and conventions.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)

from reference.dense_families import CrossLayer, DelugeNet, Dense2Net, ds_res2net  # noqa: E402
from reference.models import ShortcutWeight, build, count_params  # noqa: E402
from reference.preact import preact_resnet, wide_resnet  # noqa: E402
from reference.selfcheck import check_counts  # noqa: E402
from reference.tv import tv_resnet  # noqa: E402

GENERATOR = "tools/make_fixtures.py"
OUT_DIR = os.path.join(REPO, "crates", "densum", "tests", "fixtures")
LARGE_DIR = os.path.join(TOOLS, "fixtures", "large")

# spec section 6 normalisation constants
NORMALIZE = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
DEFAULT_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
DEFAULT_STEM = {"cifar10": "cifar", "cifar100": "cifar", "imagenet": "imagenet"}


def case(name, model, options, *, tv=None, grad=False, hw=32, params=None, batch=2, factory=None,
         rename=()):
    """`rename`: (reference, densum) substring pairs for tensor names the reference's own
    class spells differently (applied to the state dict and the gradient names)."""
    return dict(name=name, model=model, options=options, tv=tv, grad=grad, hw=hw,
                params=params, batch=batch, factory=factory, rename=tuple(rename))


def renamed(name: str, pairs, reverse=False) -> str:
    """Reference name -> densum name (`reverse`: back, undoing the pairs in reverse order)."""
    for ref, ours in (reversed(pairs) if reverse else pairs):
        a, b = (ours, ref) if reverse else (ref, ours)
        name = name.replace(a, b)
    return name


def tv_densenet_small():
    """torchvision's own DenseNet class at a small size (BC, 7x7 stem + max-pool)."""
    import torchvision
    return torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2),
                                       num_init_features=16, bn_size=4, num_classes=10)


def timm_res2net_small():
    """timm's ResNet with Bottle2neck (res2net50_26w_4s's block) at 0.125 width, 2-2-1-1 blocks."""
    from timm.models.res2net import Bottle2neck
    from timm.models.resnet import ResNet
    m = ResNet(block=Bottle2neck, layers=[2, 2, 1, 1], base_width=26, block_args=dict(scale=4),
               channels=(8, 16, 32, 64), num_classes=10)
    return narrow_timm_stem(m)


def narrow_timm_stem(m, width=8):
    """timm's plain 7x7 stem is always 64 wide: narrow it (and what reads it) to `width`."""
    m.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(width)
    b = m.layer1[0]
    b.conv1 = nn.Conv2d(width, b.conv1.out_channels, 1, bias=False)
    b.downsample[0] = nn.Conv2d(width, b.downsample[0].out_channels, 1, bias=False)
    return m


def timm_attention_resnet_small(attn_layer):
    """timm's ResNet (Bottleneck, `attn_layer` after bn3) at 0.125 width, 2-2-1-1 blocks, with
    densum's CIFAR stem for 32x32 inputs: conv3x3 s1 to 64 * 0.125 = 8 channels + BN + ReLU, no
    max-pool (timm's 7x7 stem is always 64 wide)."""
    from timm.models.resnet import Bottleneck, ResNet
    m = ResNet(block=Bottleneck, layers=[2, 2, 1, 1], channels=(8, 16, 32, 64), num_classes=10,
               block_args=dict(attn_layer=attn_layer))
    m.conv1 = nn.Conv2d(3, 8, 3, stride=1, padding=1, bias=False)
    m.bn1 = nn.BatchNorm2d(8)
    m.maxpool = nn.Identity()
    b = m.layer1[0]
    b.conv1 = nn.Conv2d(8, b.conv1.out_channels, 1, bias=False)
    b.downsample[0] = nn.Conv2d(8, b.downsample[0].out_channels, 1, bias=False)
    return m


def timm_cbam_resnet_small():
    """timm's CbamModule brought to densum's documented CBAM (nn/attention.rs): the MLP's
    reduced width by the SE rule (`rd_divisor=8`: C/16 rounded to a multiple of 8, at least 8;
    timm's CBAM default rounds to 1) and the spatial 7x7 conv without timm's BatchNorm after it.
    Forward (avg+max channel MLP, then conv over [mean, max] across channels) is timm's."""
    from functools import partial

    from timm.layers.cbam import CbamModule
    m = timm_attention_resnet_small(partial(CbamModule, rd_divisor=8))
    for blk in m.modules():
        if isinstance(blk, CbamModule):
            blk.spatial.conv.bn = nn.Identity()
    return m


# timm's CBAM lives in the block's `se` slot as `se.channel.{fc1,fc2}`, `se.spatial.conv.conv`
CBAM_NAMES = ((".se.channel.", ".cbam."), (".se.spatial.conv.conv.", ".cbam.spatial."))

C10_0125 = {"dataset": "cifar10", "width": 0.125, "num_classes": 10}
DS_DEFAULT = {"ds_norm": "gn", "ds_weight": "channel"}

CASES = [
    # torchvision's own classes, rebuilt at width 0.25
    case("tv_resnet18_w025_c10", "resnet18",
         {"dataset": "cifar10", "width": 0.25, "num_classes": 10}, tv="resnet18", grad=True),
    case("tv_resnet50_w025_c100", "resnet50",
         {"dataset": "cifar100", "width": 0.25, "num_classes": 100}, tv="resnet50", params=1_530_356),
    case("tv_resnext50_32x4d_w025_c10", "resnext50_32x4d",
         {"dataset": "cifar10", "width": 0.25, "num_classes": 10}, tv="resnext50_32x4d"),
    case("tv_resnet18_w025_imagenetstem", "resnet18",
         {"dataset": "imagenet", "width": 0.25, "num_classes": 10}, tv="resnet18", hw=64),
    # own references (tools/reference/models.py), width 0.125, CIFAR-10
    case("dsnet50", "dsnet50", {**C10_0125, **DS_DEFAULT}),
    case("dsnet50_a", "dsnet50_a", {**C10_0125, **DS_DEFAULT}),
    case("ds2net50", "ds2net50", {**C10_0125, **DS_DEFAULT}),
    case("resnet50_dense", "resnet50_dense", dict(C10_0125)),
    case("dsnet50_bn_scalar", "dsnet50", {**C10_0125, "ds_norm": "bn", "ds_weight": "scalar"}),
    case("brgsnet50", "brgsnet50", dict(C10_0125)),
    case("drgsnet50", "drgsnet50", dict(C10_0125)),
    case("resrgsnet50", "resrgsnet50", dict(C10_0125)),
    case("ds2net26", "ds2net26", {**C10_0125, **DS_DEFAULT}, grad=True),
    case("resrgsnet26", "resrgsnet26", dict(C10_0125), grad=True),
    # torchvision DenseNet and timm Res2Net classes at small sizes (64x64, ImageNet stem)
    case("tv_densenet_k8_2222", "densenet121",
         {"dataset": "imagenet", "num_classes": 10, "growth_rate": 8, "block_config": [2, 2, 2, 2],
          "init_features": 16}, factory=tv_densenet_small, grad=True, hw=64),
    case("timm_res2net50_w0125_2211", "res2net50_26w_4s",
         {"dataset": "imagenet", "width": 0.125, "num_classes": 10, "block_config": [2, 2, 1, 1]},
         factory=timm_res2net_small, grad=True, hw=64),
    # own references (tools/reference/dense_families.py), CIFAR-10
    case("dense2net_k8_2222", "dense2net121",
         {"dataset": "cifar10", "num_classes": 10, "growth_rate": 8, "block_config": [2, 2, 2, 2]},
         factory=lambda: Dense2Net(block_config=(2, 2, 2, 2), k=8, scale=4, num_classes=10), grad=True),
    case("dense2net_k8_2222_c2_se", "dense2net121",
         {"dataset": "cifar10", "num_classes": 10, "growth_rate": 8, "block_config": [2, 2, 2, 2],
          "cardinality": 2, "attention": "se"},
         factory=lambda: Dense2Net(block_config=(2, 2, 2, 2), k=8, scale=4, groups=2, num_classes=10,
                                   se=True)),
    case("ds2res2net_w00625_2222", "ds2res2net50",
         {"dataset": "cifar10", "width": 0.0625, "num_classes": 10, "block_config": [2, 2, 2, 2],
          **DS_DEFAULT},
         factory=lambda: ds_res2net(26, width=0.0625, num_classes=10)),
    case("delugenet_w0125_222", "delugenet146",
         {"dataset": "cifar10", "width": 0.125, "num_classes": 10, "block_config": [2, 2, 2]},
         factory=lambda: DelugeNet(layers=(2, 2, 2), c=16, num_classes=10), grad=True),
    # pre-activation ResNets and a CIFAR Wide ResNet (tools/reference/preact.py)
    case("preact_resnet18_w0125_imagenetstem", "preact_resnet18",
         {"dataset": "imagenet", "width": 0.125, "num_classes": 10},
         factory=lambda: preact_resnet(18, width=0.125, num_classes=10, stem="imagenet"), hw=64),
    case("preact_resnet164_w05_222", "preact_resnet164",
         {"dataset": "cifar10", "width": 0.5, "num_classes": 10, "block_config": [2, 2, 2]},
         factory=lambda: preact_resnet(164, width=0.5, num_classes=10, layers=[2, 2, 2]), grad=True),
    case("wrn16_4_w0125", "wrn16_4", dict(C10_0125),
         factory=lambda: wide_resnet(16, 4, width=0.125, num_classes=10), grad=True),
    # timm's ResNet with SE / CBAM block attention, CIFAR stem
    case("timm_se_resnet26_w0125_2211", "se_resnet26", {**C10_0125, "block_config": [2, 2, 1, 1]},
         factory=lambda: timm_attention_resnet_small("se")),
    case("timm_cbam_resnet26_w0125_2211", "cbam_resnet26", {**C10_0125, "block_config": [2, 2, 1, 1]},
         factory=timm_cbam_resnet_small, rename=CBAM_NAMES, grad=True),
    # RGSNet ablations (tools/reference/models.py), three stages of 3, 2, 2 bottlenecks
    case("brgsnet26_rbs_322", "brgsnet26_rbs", {**C10_0125, "block_config": [3, 2, 2]}, grad=True),
    case("brgsnet26_gs_322", "brgsnet26_gs", {**C10_0125, "block_config": [3, 2, 2]}),
    case("brgsnet26_rgb_322", "brgsnet26_rgb", {**C10_0125, "block_config": [3, 2, 2]}),
    case("resnet26_2gn_322", "resnet26_2gn", {**C10_0125, "block_config": [3, 2, 2]}),
]

LARGE_CASES = [
    case(f"tv_{arch}_imagenet", arch, {"dataset": "imagenet", "width": 1.0, "num_classes": 1000},
         tv=arch, hw=224, batch=1, params=p)
    for arch, p in [("resnet50", 25_557_032), ("resnext50_32x4d", 25_028_904),
                    ("wide_resnet50_2", 68_883_240)]
] + [
    case("tv_densenet121_imagenet", "densenet121", {"dataset": "imagenet", "num_classes": 1000},
         factory=lambda: __import__("torchvision").models.densenet121(), hw=224, batch=1,
         params=7_978_856),
    case("timm_res2net50_26w_4s_imagenet", "res2net50_26w_4s",
         {"dataset": "imagenet", "num_classes": 1000},
         factory=lambda: __import__("timm").create_model("res2net50_26w_4s"), hw=224, batch=1,
         params=25_699_120),
]


# ----------------------------------------------------------------------------- images
def synth_image(index: int, hw: int) -> np.ndarray:
    """Deterministic RGB uint8 image: seeded noise over a colour gradient, a box and a disc."""
    rng = np.random.default_rng(1000 + 17 * index + hw)
    yy, xx = np.mgrid[0:hw, 0:hw].astype(np.float32) / max(hw - 1, 1)
    img = np.stack([255 * xx, 255 * yy, 255 * (1 - xx) * (0.3 + 0.7 * index)], -1)
    img = 0.6 * img + 0.4 * rng.integers(0, 256, size=(hw, hw, 3))
    a, b = hw // 8, hw // 2
    img[a + index * 2:b, a:b + index * 3, :] = (200, 40 + 100 * index, 30)
    disc = (xx - 0.7) ** 2 + (yy - 0.65 + 0.1 * index) ** 2 < 0.04
    img[disc] = (20, 180, 230 - 150 * index)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def image_paths(out_dir: str, hw: int, batch: int):
    """images/img{i}.png for 32x32; images/img{i}_{hw}.png otherwise (written once)."""
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)
    paths = []
    for i in range(batch):
        fname = f"img{i}.png" if hw == 32 else f"img{i}_{hw}.png"
        path = os.path.join(img_dir, fname)
        if not os.path.exists(path):
            Image.fromarray(synth_image(i, hw)).save(path)
        paths.append(path)
    return paths


def load_input(paths, dataset: str) -> torch.Tensor:
    """Decode PNGs with Pillow -> f32 [N,3,H,W]: (pixel/255 - mean) / std, all in float32."""
    mean, std = NORMALIZE[dataset]
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    xs = []
    for p in paths:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        x = arr.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        xs.append((x - mean) / std)
    return torch.from_numpy(np.ascontiguousarray(np.stack(xs), dtype=np.float32))


# ----------------------------------------------------------------------------- models
def seed_of(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def make_model(c) -> nn.Module:
    o = c["options"]
    stem = o.get("stem", DEFAULT_STEM[o["dataset"]])
    k = o.get("num_classes", DEFAULT_CLASSES[o["dataset"]])
    if c["factory"]:
        return c["factory"]()
    if c["tv"]:
        return tv_resnet(c["tv"], o["width"], k, stem)
    return build(c["model"], dataset=o["dataset"], width=o["width"], num_classes=k, stem=stem,
                 ds_norm=o.get("ds_norm", "gn"), ds_weight=o.get("ds_weight", "channel"),
                 layers=o.get("block_config"))


@torch.no_grad()
def randomize(model: nn.Module):
    """Non-trivial weights so that wiring bugs show (see tools/README.md)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            if m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        elif isinstance(m, nn.GroupNorm) and m.affine:
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
        elif isinstance(m, ShortcutWeight):
            m.weight.uniform_(0.5, 1.5)
        elif isinstance(m, CrossLayer):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
        # nn.Linear keeps PyTorch's default init


def train_pass(model, x, labels):
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return logits.detach(), loss.detach(), grads


def metadata(c):
    return {"model": c["model"], "options": json.dumps(c["options"]), "generator": GENERATOR,
            "images": ",".join(c["images"])}


def generate(c, out_dir: str) -> str:
    o = c["options"]
    torch.manual_seed(seed_of(c["name"]))
    model = make_model(c)
    randomize(model)
    if c["params"] is not None:
        assert count_params(model) == c["params"], (c["name"], count_params(model))
    paths = image_paths(out_dir, c["hw"], c["batch"])
    c["images"] = [os.path.relpath(p, out_dir) for p in paths]
    x = load_input(paths, o["dataset"])
    k = o.get("num_classes", DEFAULT_CLASSES[o["dataset"]])
    labels = torch.randint(0, k, (c["batch"],), dtype=torch.int64)

    model.eval()
    rn = c["rename"]
    tensors = {renamed(n, rn): t.detach().clone().contiguous() for n, t in model.state_dict().items()}
    with torch.no_grad():
        logits = model(x)
    tensors["__input__"] = x.clone()
    tensors["__logits__"] = logits.clone()
    tensors["__labels__"] = labels.clone()
    if c["grad"]:
        tlogits, loss, grads = train_pass(model, x, labels)
        tensors["__train_logits__"] = tlogits
        tensors["__loss__"] = loss.reshape(1)
        for n, g in grads.items():
            tensors[f"__grad__.{renamed(n, rn)}"] = g.contiguous()
    for n, t in tensors.items():
        if t.is_floating_point():
            assert t.dtype == torch.float32, n
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, c["name"] + ".safetensors")
    save_file(tensors, path, metadata=metadata(c))
    canonicalize_header(path)
    return path


def canonicalize_header(path: str):
    """safetensors writes the metadata dict in hash order; sort it so reruns are byte-identical."""
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        raw = f.read(n)
        text = raw.decode("utf-8")
        header = json.loads(text)
        meta = header.get("__metadata__")
        if not meta:
            return
        old = '"__metadata__":' + json.dumps(meta, separators=(",", ":"), ensure_ascii=False)
        new = '"__metadata__":' + json.dumps(dict(sorted(meta.items())), separators=(",", ":"), ensure_ascii=False)
        if old not in text or len(old.encode()) != len(new.encode()):
            return
        out = text.replace(old, new, 1).encode("utf-8")
        if len(out) == n and json.loads(out) == header:
            f.seek(8)
            f.write(out)


def verify(c, path: str):
    """Reload the file into a freshly built model and reproduce logits (and loss / grads)."""
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["model"] == c["model"] and json.loads(meta["options"]) == c["options"], meta
    assert meta["generator"] == GENERATOR
    torch.manual_seed(12345)  # different from generation on purpose
    model = make_model(c)
    rn = c["rename"]
    sd = {renamed(k, rn, reverse=True): v for k, v in t.items() if not k.startswith("__")}
    model.load_state_dict(sd, strict=True)
    model.eval()
    x = t["__input__"]
    assert x.shape == (c["batch"], 3, c["hw"], c["hw"]) and x.dtype == torch.float32
    ref_x = load_input([os.path.join(os.path.dirname(path), p) for p in meta["images"].split(",")],
                       c["options"]["dataset"])
    assert torch.equal(x, ref_x), "input differs from the decoded PNGs"
    with torch.no_grad():
        logits = model(x)
    err = (logits - t["__logits__"]).abs().max().item()
    assert err <= 1e-5 * max(1.0, t["__logits__"].abs().max().item()), (c["name"], err)
    msg = f"eval |dlogit| {err:.1e}"
    if c["grad"]:
        grad_names = {k[len("__grad__."):] for k in t if k.startswith("__grad__.")}
        assert grad_names == {renamed(n, rn) for n, _ in model.named_parameters()}
        tlogits, loss, grads = train_pass(model, x, t["__labels__"])
        assert torch.allclose(tlogits, t["__train_logits__"], rtol=1e-5, atol=1e-5)
        assert torch.allclose(loss.reshape(1), t["__loss__"], rtol=1e-6, atol=1e-6)
        gerr = max((grads[n] - t[f"__grad__.{renamed(n, rn)}"]).abs().max().item() for n in grads)
        assert gerr < 1e-5, gerr
        msg += f", loss {loss.item():.4f}, |dgrad| {gerr:.1e}"
    return msg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", action="store_true", help="full-size torchvision ImageNet models (not committed)")
    ap.add_argument("--only", nargs="*", help="case names to (re)generate")
    ap.add_argument("--verify", action="store_true", help="only reload and check existing files")
    ap.add_argument("--out", help="output folder (default: the tests/fixtures or tools/fixtures/large)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    cases = LARGE_CASES if args.large else CASES
    out_dir = args.out or (LARGE_DIR if args.large else OUT_DIR)
    if args.only:
        known = {c["name"] for c in cases}
        unknown = set(args.only) - known
        if unknown:
            sys.exit(f"unknown case(s) {sorted(unknown)}; known: {sorted(known)}")
        cases = [c for c in cases if c["name"] in args.only]
    if not args.large and not args.verify:
        check_counts(verbose=False)

    total = 0
    manifest = []
    for c in cases:
        path = os.path.join(out_dir, c["name"] + ".safetensors")
        if args.verify:
            with safe_open(path, "pt") as f:
                c["images"] = f.metadata()["images"].split(",")
        else:
            generate(c, out_dir)
        msg = verify(c, path)
        size = os.path.getsize(path)
        total += size
        print(f"{c['name']:32s} {size / 1e6:7.2f} MB  {c['model']:16s} {json.dumps(c['options'])}"
              f"{'  [grad]' if c['grad'] else ''}  {msg}", flush=True)
        manifest.append({"case": c["name"], "file": c["name"] + ".safetensors", "model": c["model"],
                         "options": c["options"], "grad": c["grad"], "input": [c["batch"], 3, c["hw"], c["hw"]],
                         "images": c["images"]})
    print(f"total {total / 1e6:.2f} MB in {out_dir}")
    if not args.verify and not args.only:
        with open(os.path.join(out_dir, "manifest.json"), "w") as f:
            f.write('{"generator": "%s", "cases": [\n' % GENERATOR)
            f.write(",\n".join("  " + json.dumps(m) for m in manifest))
            f.write("\n]}\n")


if __name__ == "__main__":
    main()
