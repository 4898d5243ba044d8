#!/usr/bin/env python3
"""Run `densum export --onnx` files in onnxruntime and compare their logits with densum's.

    .venv/bin/python tools/check_onnx.py --densum target/debug/densum [--batch dynamic|N] \
        crates/densum/tests/fixtures/tv_resnet18_w025_imagenetstem.safetensors [FIXTURE ...]

Each FIXTURE is a committed parity fixture (tools/make_fixtures.py): weights, the model and
options in its metadata, the normalised input batch `__input__` and PyTorch's logits
`__logits__`. For each one the script

1. exports it with `densum export --onnx FIXTURE --out DIR/NAME.onnx --batch B --input-size S`
   (S the fixture's input side; `dynamic` by default, so the ONNX file is also run on a batch
   size it was not traced with, one image at a time);
2. runs the file in onnxruntime (CPU) on `__input__`;
3. compares those logits with densum's own (`densum predict --format json` on the fixture's
   images, which decode to `__input__`) and with PyTorch's `__logits__`.

Errors are relative: max |onnx - ref| / max |ref| over the batch. Exits non-zero when one
exceeds --tol (default 1e-4) or a step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from safetensors import safe_open


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def check(densum: str, fixture: str, batch: str, out_dir: str) -> dict:
    with safe_open(fixture, framework="numpy") as f:
        meta = f.metadata()
        x = f.get_tensor("__input__").astype(np.float32)
        torch_logits = f.get_tensor("__logits__").astype(np.float32)
    size = x.shape[-1]
    name = os.path.splitext(os.path.basename(fixture))[0]
    path = os.path.join(out_dir, f"{name}.onnx")
    export_batch = batch if batch == "dynamic" else str(x.shape[0])
    subprocess.run([densum, "export", "--onnx", fixture, "--out", path,
                    "--batch", export_batch, "--input-size", str(size)], check=True,
                   stdout=subprocess.DEVNULL)
    onnx.checker.check_model(path, full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    got = sess.run(None, {inp.name: x})[0]
    if batch == "dynamic":
        # Also one image per call: a batch size the export did not trace (it traced 1 and 2,
        # and the fixtures hold 2), to show the batch axis really is symbolic.
        singles = np.concatenate([sess.run(None, {inp.name: x[i:i + 1]})[0]
                                  for i in range(x.shape[0])])
    else:
        singles = got
    images = [os.path.join(os.path.dirname(fixture), p) for p in meta["images"].split(",")]
    pred = subprocess.run([densum, "predict", "--weights", fixture, "--format", "json",
                           "--input-size", str(size), *images],
                          check=True, capture_output=True, text=True).stdout
    densum_logits = np.array([r["logits"] for r in json.loads(pred)], dtype=np.float32)
    return {
        "fixture": name,
        "model": meta["model"],
        "input": list(x.shape),
        "onnx_bytes": os.path.getsize(path),
        "nodes": len(onnx.load(path).graph.node),
        "rel_err_vs_densum": rel_err(got, densum_logits),
        "rel_err_vs_pytorch": rel_err(got, torch_logits),
        "rel_err_single_vs_batched": rel_err(singles, got),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--densum", required=True, help="densum binary built with --features onnx")
    ap.add_argument("--batch", default="dynamic", help="`dynamic` or `fixed` (the fixture's)")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("fixtures", nargs="+")
    a = ap.parse_args()
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}", file=sys.stderr)
    worst = 0.0
    with tempfile.TemporaryDirectory() as out_dir:
        for fixture in a.fixtures:
            r = check(a.densum, fixture, a.batch, out_dir)
            print(json.dumps(r))
            worst = max(worst, r["rel_err_vs_densum"], r["rel_err_vs_pytorch"],
                        r["rel_err_single_vs_batched"])
    if worst > a.tol:
        print(f"FAIL: worst relative error {worst:.3g} > {a.tol:g}", file=sys.stderr)
        return 1
    print(f"ok: worst relative error {worst:.3g} <= {a.tol:g}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
