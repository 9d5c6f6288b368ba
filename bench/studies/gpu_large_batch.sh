#!/usr/bin/env bash
# One device call (~230 s) for issue 18's batch-16,384 goal (4M samples/s; last measured 1.48M): the
# compiled bf16 update at batch 16,384 with the critics' quantile head traced for Inductor (the
# default: the fused IQN operator is taken only up to B x K = 16,384 rows, where it was timed) and
# with the fused kernels as the opaque operator (RAMAC_IQN_UNDER_COMPILE=1; 7 % slower before their
# launch rules were tuned on 131,072-row problems, bench/results/issue18-H200/). The reference
# writes (B, K, hidden) activations to HBM that the kernels never do. Needs the GPU to itself
# (timings). Everything lands in $OUT/large-batch.tgz.
#
#   OUT=/some/folder bash bench/studies/gpu_large_batch.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
gpu_study large-batch
TRAIN_S=${TRAIN_S:-110}
large=(--batch-size 16384 --top-kernels 15 --paths graph-compile-bf16)
for mode in auto 1; do
  bench_train "iqn-$mode" "| 16384 | graph-compile-bf16 |" RAMAC_IQN_UNDER_COMPILE=$mode -- "${large[@]}"
done
