#!/usr/bin/env bash
# Issue 16's experiment on the GPU machine, one stretch of it: build the missing data sets of TASKS
# (`ramac sweep --make-data`: 8 rollout processes), train the sweep's unfinished cells of TASKS within
# a budget of LIMIT_S seconds less a margin for the archive (`--budget`: a unit starts only if its
# recorded duration on this GPU, results/NAME/unit-times.json, fits what is left; each unit is
# evaluated again as soon as it is trained), stop the sweep outright after LIMIT_S seconds, then
# archive the sweep's folder without its checkpoints into $OUT/sweep.tgz with the log and the data
# sets' provenance. MINUTES (optional) also stops starting units after that many minutes. Run from
# the repository root after the package is installed; rerun it (next stretch) to go on. Keep LIMIT_S
# under the device call's own limit, or the archive is never written:
#
#   OUT=/some/folder TASKS="halfcheetah-medium-replay hopper-medium-replay" LIMIT_S=520 \
#     bash bench/studies/gpu_sweep.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
TASKS=${TASKS:?set TASKS to the sweep tasks to train}
MINUTES=${MINUTES:-}
LIMIT_S=${LIMIT_S:-520}
BUDGET_MIN=$(python3 -c "print(max(1, ${LIMIT_S} - 25) / 60)")  # 25 s for the archive after the sweep
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
  python3 -m ramac sweep "$CONFIG" --tasks $TASKS --budget "$BUDGET_MIN" ${MINUTES:+--time-limit "$MINUTES"} \
    --make-data 2>&1 \
  | grep --line-buffered -v -e settotalmass -e '^$' | tee "$OUT/sweep-logs/sweep-$(date +%H%M%S).log"
