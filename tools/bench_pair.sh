#!/usr/bin/env bash
# Training-step time of model B against model A on a shared machine: `densum bench` with the
# two models in both orders, RUNS times each, printing B / A (ratio of the median step times
# within each run; `densum bench` runs the two models' steps in turn, A, B, A, B, ..., so both
# see the same load) per run and the median over all runs.
#
#   tools/bench_pair.sh resnet50 dsnet50 [RUNS] [extra densum bench options...]
#
# The bench options default to CIFAR-100, width 0.25, batch 64, 2 warm-up + 8 measured
# steps; options given after RUNS replace them all. Needs target/release/densum
# (cargo build --release -p densum-cli).
set -euo pipefail
a=${1:?model A}
b=${2:?model B}
runs=${3:-4}
shift $(( $# < 3 ? $# : 3 ))
root=$(cd "$(dirname "$0")/.." && pwd)
densum=${DENSUM:-$root/target/release/densum}
opts=(--dataset cifar100 --width 0.25 --batch 64 --warmup 2 --iters 8)
if [ $# -gt 0 ]; then opts=("$@"); fi
ratios=()
for _ in $(seq "$runs"); do
  for order in "$a $b" "$b $a"; do
    # densum's own error (unknown model, bad option) stops the script here.
    # shellcheck disable=SC2086
    out=$("$densum" bench $order "${opts[@]}" --mode train --json)
    r=$(python3 -c '
import json, sys
a, b = sys.argv[1], sys.argv[2]
runs = {m["model"]: m["train"]["step_ms"]["median"] for m in json.load(sys.stdin)}
print(f"{runs[b] / runs[a]:.3f}")' "$a" "$b" <<<"$out")
    echo "$order: $b / $a = $r"
    ratios+=("$r")
  done
done
printf '%s\n' "${ratios[@]}" | python3 -c '
import statistics, sys
v = [float(x) for x in sys.stdin]
print(f"median {statistics.median(v):.3f} over {len(v)} runs [{min(v):.3f}, {max(v):.3f}]")'
