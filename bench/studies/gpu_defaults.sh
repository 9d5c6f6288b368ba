#!/usr/bin/env bash
# One device call (~420 s) timing issue 18's defaults: one seed at batch 256 on graph-compile-bf16
# and graph-compile (fp32, what `ramac train` and the sweep run), each with the defaults, and the
# fp32 path without Inductor's shape padding (RAMAC_SHAPE_PAD=0: padding was timed on bf16 only,
# bench/results/clip-pad-H200/) and graph-compile-bf16 with Programmatic Dependent Launch between
# Inductor's kernels (RAMAC_PDL=1); then `ramac profile` of the bf16 update, per phase. Needs the GPU
# to itself (timings). Everything lands in $OUT/defaults.tgz. (The fifth session's version also ran
# GPU tests and the combo-kernel A/B: bench/results/defaults-H200/; the GPU tests are
# bench/studies/gpu_tests.sh now.)
#
#   OUT=/some/folder bash bench/studies/gpu_defaults.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
gpu_study defaults
TRAIN_S=${TRAIN_S:-80}
single=(--batch-size 256 --top-kernels 15)
bench_train bf16-defaults "| 256 | graph-compile-bf16" -- "${single[@]}" --paths graph-compile-bf16
bench_train fp32-defaults "| 256 | graph-compile |" -- "${single[@]}" --paths graph-compile
bench_train fp32-no-pad "| 256 | graph-compile |" RAMAC_SHAPE_PAD=0 -- "${single[@]}" --paths graph-compile
bench_train bf16-pdl "| 256 | graph-compile-bf16" RAMAC_PDL=1 -- "${single[@]}" --paths graph-compile-bf16
# where the bf16 update's time goes now, per phase (the update's pieces compiled, no CUDA graph:
# the kernels a replay runs, with the profiler's per-phase ranges around them)
step profile-bf16 "${PROFILE_S:-90}" python3 -m ramac profile --compile --bf16 --batch-size 256 --top 40 \
  --out "$R/profile-bf16"
