#!/usr/bin/env bash
# The split chain sampler (kernels/sampler_split.py) on the GPU machine, in one device call: its
# parity tests and the one-block kernel's, the programs x warps study, the Python sampler bench at
# small batches with graphed torch.compile beside it, then native/gpu_check.sh (build, ctest,
# native parity, C++ bench, ncu). Everything lands in $OUT/split.tgz and $OUT/native.tgz. Run from
# the repository root after the package is installed:
#
#   OUT=/some/folder bash bench/studies/gpu_split.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
R="$OUT/split"
mkdir -p "$R"
unset TRITON_INTERPRET || true
trap 'nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$R/gpu.txt" 2>&1; tar czf "$OUT/split.tgz" -C "$OUT" split' EXIT
say() { printf '[%3d s] %s\n' "$SECONDS" "$*" | tee -a "$R/summary.txt"; }

say "parity tests"
timeout 200 python3 -m pytest -q -x -p no:cacheprovider tests/kernels/test_sampler_split.py \
  tests/kernels/test_sampler.py >"$R/pytest.log" 2>&1
say "pytest exit $?: $(tail -n 1 "$R/pytest.log")"
timeout 100 python3 -m bench.studies.split_sampler --out "$R/split.jsonl" >"$R/split.txt" 2>&1
say "study exit $?"; cat "$R/split.txt" | tee -a "$R/summary.txt"
timeout 90 python3 -m ramac bench sampler --batch-size 1 16 --steps 5 --out "$R/bench_sampler_small.json" \
  >"$R/bench_sampler_small.log" 2>&1
say "bench sampler exit $?"
OUT=$OUT BUDGET_S=${NATIVE_BUDGET_S:-170} bash native/gpu_check.sh >"$R/native.log" 2>&1
say "native check exit $?"
