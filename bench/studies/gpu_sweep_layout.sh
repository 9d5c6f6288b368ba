#!/usr/bin/env bash
# One device call (~200 s): which layout should the sweep train its units in? Five seeds of RADAC at
# batch 256 on graph-compile (fp32: what `ramac sweep` runs) side by side (one CUDA graph, a stream
# per seed: the sweep's default) and stacked (one computation over a seed dimension, STACK=1 of
# gpu_sweep.sh; timed so far on the eager graphed path only), and the same for RAFMAC (the slowest
# unit left). Needs the GPU to itself (timings). Everything lands in $OUT/sweep-layout.tgz.
#
#   OUT=/some/folder bash bench/studies/gpu_sweep_layout.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
gpu_study sweep-layout
TRAIN_S=${TRAIN_S:-100}
for algo in radac rafmac; do
  bench_train "seeds5-$algo" train-seeds -- --algo "$algo" --seeds 5 --batch-size 256 --layouts side stacked \
    --paths graph-compile
done
