#!/usr/bin/env bash
# One device call (~570 s): the sampler kernels' GPU parity (both noise paths) and the agents'
# critics-as-constants check on CUDA, then the fused IQN critic's launch configurations
# (bench/studies/iqn_tune.py -> $OUT/tune/iqn-tuning.json) and `ramac bench train` of 16 stacked
# seeds at batch 256 (graph-kernels-bf16, the path the fused critic runs on) without and with the
# tuned rules (RAMAC_IQN_TUNING), in that order, each bounded. Everything lands in $OUT/tune.tgz.
#
#   OUT=/some/folder bash bench/studies/gpu_tune.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
gpu_study tune
step pytest-sampler "${PYTEST_S:-120}" python3 -m pytest -q -p no:cacheprovider tests/kernels/test_sampler.py \
  tests/kernels/test_sampler_split.py
step pytest-agents 90 python3 -m pytest -q -p no:cacheprovider tests/test_agents.py -k "constants or alike"
step iqn-tune "${TUNE_S:-200}" python3 -m bench.studies.iqn_tune --out "$R/iqn-tune.json" --rules "$R/iqn-tuning.json"
grep -e "best" -e compiled "$R/iqn-tune.log" | tee -a "$R/summary.txt"
for tuned in 0 1; do
  env=()
  [[ $tuned == 1 && -f $R/iqn-tuning.json ]] && env=(RAMAC_IQN_TUNING="$R/iqn-tuning.json")
  [[ $tuned == 1 && ! -f $R/iqn-tuning.json ]] && { say "no tuning file: skipped the tuned bench"; break; }
  step "train-tuned$tuned" "${TRAIN_S:-75}" env "${env[@]}" python3 -m ramac bench train --seeds 16 --batch-size 256 \
    --paths graph-kernels-bf16 --layouts stacked --top-kernels 12 --out "$R/train-tuned$tuned.json"
  grep -e "train-" "$R/train-tuned$tuned.log" | head -4 | tee -a "$R/summary.txt"
done
