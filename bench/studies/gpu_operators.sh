#!/usr/bin/env bash
# Device calls timing the fused kernels as custom operators inside compiled code (issues 16 and 18).
# PART=single (~330 s): the actor's differentiable chain as ramac::denoise_chain
# (RAMAC_CHAIN_UNDER_COMPILE=1) against Inductor's per-step chain, one seed at batch 256 on
# graph-compile-bf16 and graph-compile (fp32), and the bf16 update with the next-action sampler in
# its lean layer order (RAMAC_SAMPLER_LEAN=1: no spills in a CPU compile, bench/results/sampler-regs-cpu.md).
# PART=stacked (~270 s): 16 stacked seeds at batch 256 on the eager graphed path (graph-kernels-bf16,
# the 3,750 seed-updates/s of bench/results/speed-ab-H200/), on the compiled one with its defaults
# (never timed stacked), and compiled with both operators (the IQN critic's, RAMAC_IQN_UNDER_COMPILE=1,
# folding the seeds into one call, and the chain's). PART=all (default) runs both (~600 s: more than
# one call beside anything else). Needs the GPU to itself (timings). Everything lands in
# $OUT/operators-PART.tgz.
#
#   OUT=/some/folder PART=single bash bench/studies/gpu_operators.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
PART=${PART:-all}
[[ $PART =~ ^(single|stacked|all)$ ]] || { echo "gpu_operators.sh: PART must be single, stacked or all, got '$PART'" >&2; exit 2; }
gpu_study "operators-$PART"
TRAIN_S=${TRAIN_S:-80}
single=(--batch-size 256 --top-kernels 15)
stacked=(--seeds 16 --batch-size 256 --layouts stacked --top-kernels 15)
if [[ $PART != stacked ]]; then
for chain in 0 1; do
  bench_train "bf16-chain$chain" "| 256 | graph-compile-bf16" RAMAC_CHAIN_UNDER_COMPILE=$chain -- "${single[@]}" \
    --paths graph-compile-bf16
done
for chain in 0 1; do
  bench_train "fp32-chain$chain" "| 256 | graph-compile |" RAMAC_CHAIN_UNDER_COMPILE=$chain -- "${single[@]}" \
    --paths graph-compile
done
bench_train bf16-lean "| 256 | graph-compile-bf16" RAMAC_SAMPLER_LEAN=1 -- "${single[@]}" --paths graph-compile-bf16
fi
[[ $PART == single ]] && exit 0
bench_train stacked16-kernels train-seeds -- "${stacked[@]}" --paths graph-kernels-bf16
TRAIN_S=${STACKED_S:-110} bench_train stacked16-compile train-seeds -- "${stacked[@]}" --paths graph-compile-bf16
TRAIN_S=${STACKED_S:-110} bench_train stacked16-compile-ops train-seeds RAMAC_IQN_UNDER_COMPILE=1 \
  RAMAC_CHAIN_UNDER_COMPILE=1 -- "${stacked[@]}" --paths graph-compile-bf16
