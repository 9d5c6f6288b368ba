#!/usr/bin/env bash
# Issue 16's experiment on the GPU machine, one stretch of it: build the missing data sets of TASKS
# (`ramac sweep --make-data`: 8 rollout processes), train the sweep's unfinished cells of TASKS for
# at most MINUTES (no (task, agent) unit starts later; each unit is evaluated again as soon as it
# is trained), stop the sweep outright after LIMIT_S seconds, then archive the sweep's folder without
# its checkpoints into $OUT/sweep.tgz with the log and the data sets' provenance. Run from the
# repository root after the package is installed; rerun it (next stretch) to go on. Keep LIMIT_S
# under the device call's own limit, or the archive is never written:
#
#   OUT=/some/folder TASKS="halfcheetah-medium-replay hopper-medium-replay" MINUTES=4 LIMIT_S=520 \
#     bash bench/studies/gpu_sweep.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
TASKS=${TASKS:?set TASKS to the sweep tasks to train}
MINUTES=${MINUTES:-4}
LIMIT_S=${LIMIT_S:-520}
CONFIG=${CONFIG:-sweeps/mujoco-reduced.toml}
NAME=$(basename "$CONFIG" .toml)
export MINARI_DATASETS_PATH=${MINARI_DATASETS_PATH:-$PWD/build/minari}  # ignored: kept while the machine is
unset TRITON_INTERPRET || true
mkdir -p "$OUT/sweep-logs"
finish() {
  for t in $TASKS; do python3 -m ramac data info "$t" >"$OUT/sweep-logs/data-$t.json" 2>&1; done
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/sweep-logs/gpu.txt" 2>&1
  tar czf "$OUT/sweep.tgz" --exclude='checkpoint*' "results/$NAME" -C "$OUT" sweep-logs
}
trap finish EXIT
# shellcheck disable=SC2086
timeout --signal=INT --kill-after=15 "$LIMIT_S" \
  python3 -m ramac sweep "$CONFIG" --tasks $TASKS --time-limit "$MINUTES" --make-data 2>&1 \
  | grep --line-buffered -v -e settotalmass -e '^$' | tee "$OUT/sweep-logs/sweep-$(date +%H%M%S).log"
