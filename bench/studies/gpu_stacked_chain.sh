#!/usr/bin/env bash
# One device call (~400 s): the fused chain for stacked seeds (kernels/chain_grad.py; RAMAC_FUSED_CHAIN_STACKED,
# then opt-in, now the default) on the GPU: its tests, then `ramac bench train` of 16 stacked seeds
# at batch 256 (graph-kernels-bf16) without and with it, then the GEMV native library's check.
# Everything lands in $OUT/stacked-chain.tgz (and native/gpu_check.sh's $OUT/native.tgz).
#
#   OUT=/some/folder bash bench/studies/gpu_stacked_chain.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
gpu_study stacked-chain
step pytest 150 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_chain_grad.py tests/test_stacked.py \
  -k "chain or seed_i or constants"
for fused in 0 1; do
  bench_train "train-fused-stacked$fused" train-seeds RAMAC_FUSED_CHAIN_STACKED=$fused -- \
    --seeds 16 --batch-size 256 --paths graph-kernels-bf16 --layouts stacked --top-kernels 12
done
native_check 150
