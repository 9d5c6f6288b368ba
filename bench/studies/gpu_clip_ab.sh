#!/usr/bin/env bash
# One device call (~200 s; 192 s on an H200) for issue 18: the compiled update clipping gradient
# norms with ramac.agents.policy.clip_grad_norm (RAMAC_CLIP_COMPILED=1: ops Inductor compiles) against torch's
# clip_grad_norm_ (whose torch._foreach_norm is an ATen fallback: 6 multi_tensor_apply launches,
# 46 us of the 1,160 us update in bench/results/defaults-H200/), one seed at batch 256, on
# graph-compile-bf16 and on graph-compile (fp32, what `ramac train` runs by default); and, on
# graph-compile-bf16, Inductor padding every unaligned matrix product (RAMAC_SHAPE_PAD=1: cuBLAS's
# sm_75 align1 kernels, 120 us of that update, then get 16-byte-aligned operands). Needs the
# GPU to itself (timings). Everything lands in $OUT/clip-ab.tgz. Both settings are the defaults
# since (bench/results/clip-pad-H200/): each run sets both, as the A/B ran them then.
#
#   OUT=/some/folder bash bench/studies/gpu_clip_ab.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
gpu_study clip-ab
TRAIN_S=${TRAIN_S:-65}
single=(--batch-size 256 --top-kernels 12)
for path in graph-compile-bf16 graph-compile; do
  for clip in 0 1; do
    bench_train "$path-clip$clip" "| 256 | $path |" RAMAC_CLIP_COMPILED=$clip RAMAC_SHAPE_PAD=0 -- "${single[@]}" \
      --paths "$path"
  done
  if [[ $path == graph-compile-bf16 ]]; then  # padding may take Inductor longer to compile
    TRAIN_S=$((TRAIN_S + 15)) bench_train "$path-pad" "| 256 | $path |" RAMAC_SHAPE_PAD=1 RAMAC_CLIP_COMPILED=0 -- \
      "${single[@]}" --paths "$path"
  fi
done
