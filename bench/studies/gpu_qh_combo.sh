#!/usr/bin/env bash
# One device call (~430 s; ~280 s with SAMPLER_S=0; +200 s with step 3) for issues 18 and 16, each step bounded:
# 1. the quantile-Huber kernel's parity tests on the GPU (the per-pair arithmetic rewritten: c =
#    min(|u|, kappa), loss m (|u| - c/2), gradient +-m), then qh_graph_check at the goal's shape
#    (B = 16,384, K = K' = 32) for the default launch and other launch settings (--configs);
# 2. the compiled-vs-eager update tests with RAMAC_IQN_UNDER_COMPILE=1 and RAMAC_COMBO_KERNELS=1,
#    then the single seed at batch 256 on graph-compile-bf16 with both together, against neither
#    (each alone was +7 % and +13 % in bench/results/speed-ab-H200/).
# 4. (SAMPLER_S) the chain sampler's 16- against 64-row programs at batch 256-4,096; 3. (SEEDS_S, last)
#    16 seeds side by side and stacked on the compiled path: see below.
# Everything lands in $OUT/qh-combo.tgz.
#
#   SEEDS_S=0 OUT=/some/folder bash bench/studies/gpu_qh_combo.sh              # steps 1, 2 and 4: ~430 s
#   SEEDS_S=0 SAMPLER_S=0 OUT=/some/folder bash bench/studies/gpu_qh_combo.sh  # steps 1 and 2: ~280 s
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
gpu_study qh-combo
step pytest-qh "${PYTEST_S:-90}" python3 -m pytest -q -p no:cacheprovider tests/kernels/test_quantile_huber.py \
  tests/kernels/test_fold_seeds.py
# shellcheck disable=SC2086
step qh-graph "${QH_S:-120}" python3 -m bench.studies.qh_graph_check --providers compile triton triton-unrolled \
  --configs ${CONFIGS:-8x2 16x2 16x4 32x2 64x4 64x8 16x2u 32x4u} --out "$R/qh-graph.json"
grep -e "summary" "$R/qh-graph.log" | tail -1 | tee -a "$R/summary.txt"
[[ ${ONLY_QH:-0} == 1 ]] && exit 0  # ONLY_QH=1: step 1 only (~150 s)
# the compiled update with both settings on equals the eager one (as without them), before timing it
step pytest-combo "${PYTEST_S:-90}" env RAMAC_IQN_UNDER_COMPILE=1 RAMAC_COMBO_KERNELS=1 python3 -m pytest -q \
  -p no:cacheprovider tests/test_fast.py -k "matches_eager or bf16"
single=(--batch-size 256 --paths graph-compile-bf16 --top-kernels 12)
TRAIN_S=${TRAIN_S:-70}
if [[ ${BASE:-1} != 0 ]]; then  # BASE=0: only the pair (the base measured in speed-ab-H200: 713 updates/s)
  bench_train compile-base "| 256 | graph-compile-bf16" RAMAC_IQN_UNDER_COMPILE=0 RAMAC_COMBO_KERNELS=0 -- "${single[@]}"
fi
bench_train compile-iqn-combo "| 256 | graph-compile-bf16" RAMAC_IQN_UNDER_COMPILE=1 RAMAC_COMBO_KERNELS=1 -- "${single[@]}"
# 4. the chain sampler's launch settings at the next-action sampler's batch sizes, 16- against 64-row
#    programs (at batch 256 the default's 64-row programs use 4 SMs); SAMPLER_S=0 skips it
if [[ ${SAMPLER_S:-150} != 0 ]]; then
  step sampler-sweep "${SAMPLER_S:-150}" python3 -m bench.studies.sweep_sampler --out "$R/sampler-sweep.jsonl" \
    --batch-size 256 2048 4096 --block-m 16 64
  grep -e "^best" "$R/sampler-sweep.log" | tee -a "$R/summary.txt"
fi
# 3. last, if the call has time left: 16 seeds side by side and stacked on the compiled path
#    (graph-compile-bf16), the comparison the stacked layout's default waits for
#    (SEEDS_S=0 skips it)
if [[ ${SEEDS_S:-200} != 0 ]]; then
  step seeds16-compile "${SEEDS_S:-200}" python3 -m ramac bench train --seeds 16 --batch-size 256 \
    --paths graph-compile-bf16 --layouts side stacked --out "$R/seeds16-compile.json"
  grep -e "train-seeds" "$R/seeds16-compile.log" | tail -2 | tee -a "$R/summary.txt"
fi
