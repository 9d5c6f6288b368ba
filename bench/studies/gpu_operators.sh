#!/usr/bin/env bash
# One device call (~500 s) timing the fused kernels as custom operators inside compiled code
# (issues 16 and 18): the actor's differentiable chain as ramac::denoise_chain
# (RAMAC_CHAIN_UNDER_COMPILE=1) against Inductor's per-step chain, for one seed at batch 256 on
# graph-compile-bf16 and graph-compile (fp32); then 16 stacked seeds at batch 256 on the eager
# graphed path (graph-kernels-bf16, the 3,750 seed-updates/s of bench/results/speed-ab-H200/), on
# the compiled one with its defaults (never timed stacked), and compiled with both operators (the IQN
# critic's, RAMAC_IQN_UNDER_COMPILE=1, folding the seeds into one call, and the chain's). Needs the
# GPU to itself (timings). Everything lands in $OUT/operators.tgz.
#
#   OUT=/some/folder bash bench/studies/gpu_operators.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
gpu_study operators
TRAIN_S=${TRAIN_S:-80}
single=(--batch-size 256 --top-kernels 15)
for chain in 0 1; do
  bench_train "bf16-chain$chain" "| 256 | graph-compile-bf16" RAMAC_CHAIN_UNDER_COMPILE=$chain -- "${single[@]}" \
    --paths graph-compile-bf16
done
for chain in 0 1; do
  bench_train "fp32-chain$chain" "| 256 | graph-compile |" RAMAC_CHAIN_UNDER_COMPILE=$chain -- "${single[@]}" \
    --paths graph-compile
done
stacked=(--seeds 16 --batch-size 256 --layouts stacked --top-kernels 15)
bench_train stacked16-kernels train-seeds -- "${stacked[@]}" --paths graph-kernels-bf16
TRAIN_S=${STACKED_S:-110} bench_train stacked16-compile train-seeds -- "${stacked[@]}" --paths graph-compile-bf16
TRAIN_S=${STACKED_S:-110} bench_train stacked16-compile-ops train-seeds RAMAC_IQN_UNDER_COMPILE=1 \
  RAMAC_CHAIN_UNDER_COMPILE=1 -- "${stacked[@]}" --paths graph-compile-bf16
