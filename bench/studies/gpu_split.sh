#!/usr/bin/env bash
# The split chain sampler (kernels/sampler_split.py) on the GPU machine, in one device call: its
# parity tests and the one-block kernel's, the programs x warps study, the Python sampler bench at
# small batches with graphed torch.compile beside it, then native/gpu_check.sh (build, ctest,
# native parity, C++ bench, ncu). Everything lands in $OUT/split.tgz and $OUT/native.tgz. Run from
# the repository root after the package is installed:
#
#   OUT=/some/folder bash bench/studies/gpu_split.sh     # ~560 s: a 600 s device call
#
# (2026-12-03 ran QUICK=1 PYTEST_S=100 NATIVE_BUDGET_S=130 in a 281 s call; the study's 100 s limit
# then stopped it during batch 16.)
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
gpu_study split

say "parity tests"
if [[ -n ${QUICK:-} ]]; then tests=(tests/kernels/test_sampler_split.py); else
  tests=(tests/kernels/test_sampler_split.py tests/kernels/test_sampler.py); fi
timeout "${PYTEST_S:-150}" python3 -m pytest -q -p no:cacheprovider "${tests[@]}" >"$R/pytest.log" 2>&1
say "pytest exit $?: $(tail -n 1 "$R/pytest.log")"
# QUICK=1 (a short device call): the split tests only, bf16, batch 1 and 16, the native check's budget
if [[ -n ${QUICK:-} ]]; then study=(--batch-size 1 16 --precision bf16); small=(1); else
  study=(--batch-size 1 4 --precision bf16); small=(1 16); fi
timeout "${STUDY_S:-150}" python3 -m bench.studies.split_sampler --out "$R/split.jsonl" "${study[@]}" >"$R/split.txt" 2>&1
say "study exit $?"; cat "$R/split.txt" | tee -a "$R/summary.txt"
timeout 90 python3 -m ramac bench sampler --batch-size "${small[@]}" --steps 5 --out "$R/bench_sampler_small.json" \
  >"$R/bench_sampler_small.log" 2>&1
say "bench sampler exit $?"
native_check 170
