#!/usr/bin/env bash
# Paired A/B timing of two densum binaries on a shared machine: runs `densum bench` with A,
# then B, RUNS times, and prints each pair's medians and B / A, then the median of the paired
# ratios. Consecutive runs see nearly the same machine, so the paired ratio is steadier than
# either side's own figures.
#
#   tools/ab.sh A_BINARY B_BINARY RUNS MODE bench-args...
#   tools/ab.sh /tmp/densum-old target/release/densum 8 train resnet50 --dataset cifar100 \
#       --width 0.25 --batch 64 --warmup 1 --iters 6
#
# MODE is train (median training step) or infer (median inference pass). Both sides run with
# RAYON_NUM_THREADS (default 2) threads. Build each side first, e.g. `git worktree add
# /tmp/old <commit> && cargo build --release -p densum-cli --manifest-path
# /tmp/old/Cargo.toml`.
set -euo pipefail
a=${1:?binary A}
b=${2:?binary B}
runs=${3:?runs}
mode=${4:?train or infer}
shift 4
case $mode in
  train | infer) ;;
  *) echo "MODE must be train or infer, not $mode" >&2; exit 2 ;;
esac
threads=${RAYON_NUM_THREADS:-2}
median() {
  python3 -c '
import json, sys
mode = sys.argv[1]
r = json.load(sys.stdin)[0]
print(r["train"]["step_ms"]["median"] if mode == "train" else r["infer"]["forward_ms"]["median"])' "$mode"
}
ratios=()
for _ in $(seq "$runs"); do
  ta=$(RAYON_NUM_THREADS=$threads "$a" bench "$@" --mode "$mode" --json | median)
  tb=$(RAYON_NUM_THREADS=$threads "$b" bench "$@" --mode "$mode" --json | median)
  r=$(python3 -c "print(f'{$tb / $ta:.3f}')")
  printf '%.1f ms  %.1f ms  B/A %s\n' "$ta" "$tb" "$r"
  ratios+=("$r")
done
python3 -c '
import statistics, sys
r = [float(x) for x in sys.argv[1:]]
print(f"median B/A {statistics.median(r):.3f} over {len(r)} pairs [{min(r):.3f}, {max(r):.3f}]")' "${ratios[@]}"
