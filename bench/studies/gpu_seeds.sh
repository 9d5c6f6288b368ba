#!/usr/bin/env bash
# Issue 16 on the GPU machine: the seeds-side-by-side and counter-based-noise tests on CUDA, then
# `ramac bench train --seeds K` (K = 1..32 at batch 256 and 4096). Every log and JSON goes into
# $OUT/seeds.tgz. Run from the repository root after the package is installed:
#
#   OUT=/some/folder PART=tests|bench256|bench4096|stacked|table|all bash bench/studies/gpu_seeds.sh
#
# PART=table (one 600 s call): the stacked scaling table, K = 1..32 seeds stacked at batch 256 and
# 4,096 on graph-kernels-bf16 (the fused IQN critic's path; K = 1 is the single-seed path).
#
# PART=stacked (one 600 s call): the stacked-seeds tests on CUDA (graphs, the compiled stack, the
# stacked chain kernel), then K = 4 and 16 side by side and stacked at batch 256, eager-graphed
# (graph-kernels-bf16) and compiled (graph-compile-bf16), each in one run for the ratio.
#
# A failing step is reported and the script goes on; the archive is written whatever happens.
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
PART=${PART:-all}
WORK="$OUT/seeds"
mkdir -p "$WORK/logs"
unset TRITON_INTERPRET || true
export OMP_NUM_THREADS=4
say() { printf '[%3d s] %s\n' "$SECONDS" "$*" | tee -a "$WORK/summary.txt"; }
trap 'say "done"; tar czf "$OUT/seeds-$PART.tgz" -C "$OUT" seeds' EXIT
step() {
  local name=$1 limit=$2 rc=0 t0=$SECONDS
  shift 2
  say "$name: start (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1 || rc=$?
  say "$name: exit $rc in $((SECONDS - t0)) s"
  tail -n 6 "$WORK/logs/$name.log" | sed 's/^/    /' | tee -a "$WORK/summary.txt"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$WORK/gpu.txt" 2>&1
if [[ $PART == tests || $PART == all ]]; then
  step pytest-cuda 300 python3 -m pytest -q -x -p no:cacheprovider tests/test_noise.py tests/test_seeds.py \
    tests/test_fast.py tests/test_agents.py tests/test_stacked.py
fi
for B in 256 4096; do
  if [[ $PART == bench$B || $PART == all ]]; then
    step "bench-seeds-$B" "${LIMIT:-280}" python3 -m ramac bench train --seeds 1 2 4 8 16 32 --batch-size "$B" \
      --out "$WORK/bench-train-seeds-$B.json"
  fi
done
if [[ $PART == stacked ]]; then
  step pytest-stacked 200 python3 -m pytest -q -x -p no:cacheprovider tests/test_stacked.py \
    tests/kernels/test_sampler_stacked.py
  for P in graph-kernels-bf16 graph-compile-bf16; do
    step "bench-stacked-$P" "${LIMIT:-170}" python3 -m ramac bench train --seeds 4 16 --batch-size 256 --paths "$P" \
      --layouts side stacked --out "$WORK/bench-train-stacked-$P.json"
  done
fi
if [[ $PART == table ]]; then
  for B in 256 4096; do
    step "bench-stacked-table-$B" "${LIMIT:-270}" python3 -m ramac bench train --seeds 2 4 8 16 32 --batch-size "$B" \
      --paths graph-kernels-bf16 --layouts stacked --out "$WORK/bench-train-stacked-table-$B.json"
  done
fi
