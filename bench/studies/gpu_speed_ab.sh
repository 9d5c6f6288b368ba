#!/usr/bin/env bash
# One device call (~350 s typical, at most ~560 s) for issues 17 and 18, each step bounded:
# 1. native/gpu_check.sh (build, ctest, parity, C++ bench, Python bench, ncu), for the one-state GEMV
#    variant with fp32 weights (the library's $OUT/native.tgz);
# 2. the single seed at batch 256 on graph-compile-bf16 with and without RAMAC_IQN_UNDER_COMPILE=1
#    (torch.compile'd code calling the fused IQN kernels, now that their launches are tuned);
# 3. the same with RAMAC_COMBO_KERNELS=1 (Inductor's horizontal fusion);
# 4. 16 stacked seeds at batch 256 on graph-kernels-bf16 (the fused chain for stacked seeds is now
#    the default), with the kernel table, with the chain backward's weight-gradient products in
#    exact fp32 (RAMAC_CHAIN_WGRAD_TF32=0) and in TF32 (the default).
# Everything else lands in $OUT/speed-ab.tgz.
#
#   OUT=/some/folder bash bench/studies/gpu_speed_ab.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
gpu_study speed-ab
native_check 170
single=(--batch-size 256 --paths graph-compile-bf16 --top-kernels 12)
TRAIN_S=${TRAIN_S:-70}  # at most 200 + 5 x 70 s: within a 600 s call
bench_train compile-base "| 256 | graph-compile-bf16" RAMAC_IQN_UNDER_COMPILE=0 RAMAC_COMBO_KERNELS=0 -- "${single[@]}"
bench_train compile-iqn "| 256 | graph-compile-bf16" RAMAC_IQN_UNDER_COMPILE=1 RAMAC_COMBO_KERNELS=0 -- "${single[@]}"
bench_train compile-combo "| 256 | graph-compile-bf16" RAMAC_IQN_UNDER_COMPILE=0 RAMAC_COMBO_KERNELS=1 -- "${single[@]}"
for tf32 in 0 1; do
  bench_train "stacked16-wgrad-tf32-$tf32" train-seeds RAMAC_CHAIN_WGRAD_TF32=$tf32 -- \
    --seeds 16 --batch-size 256 --paths graph-kernels-bf16 --layouts stacked --top-kernels 16
done
