#!/usr/bin/env bash
# Issue 16's experiment on the GPU machine, one stretch of it: train the sweep's unfinished cells of
# the tasks, each missing data set built just before its task's first unit that trains (`ramac sweep
# --make-data`: 8 rollout processes; the budget counts its recorded build time), within a budget of LIMIT_S seconds less a margin for the archive (`--budget`: a unit starts
# only if its recorded duration on this GPU, results/NAME/unit-times.json, fits what is left; each
# unit is evaluated again as soon as it is trained), stop the sweeps outright after LIMIT_S seconds,
# then archive the sweep's folder without its checkpoints into $OUT/sweep.tgz with the logs and the
# data sets' provenance. MINUTES (optional) also stops starting units after that many minutes. Run
# from the repository root after the package is installed; rerun it (next stretch) to go on. Keep
# LIMIT_S under the device call's own limit less ~40 s (the install, the lanes' 3 s starts, the
# 15 s kill grace, the data-set records and the archive come on top of it), or the archive is never
# written: LIMIT_S=540 for a 600 s call.
#
# TASKS: the tasks of one sweep process. LANES: several processes side by side on the one GPU, their
# task lists separated by ";" (two lanes gain ~15 % over one: at 5 seeds the graphed update already
# keeps an H200 busy, but one lane's evaluations and data building then overlap the other's
# training). Each lane logs to $OUT/sweep-logs/lane-N.log; unit-times.json is shared (locked).
#
#   OUT=/some/folder TASKS="halfcheetah-medium-replay" LIMIT_S=540 bash bench/studies/gpu_sweep.sh
#   OUT=/some/folder LANES="hopper-medium-replay;walker2d-medium-replay" LIMIT_S=540 \
#     bash bench/studies/gpu_sweep.sh
#   OUT=/some/folder LANES=auto LIMIT_S=540 bash bench/studies/gpu_sweep.sh   # `ramac sweep --lanes 2` picks them
#
# Chaining stretches: checkpoints under results/ are ignored by git, so a machine still warm from
# the previous call (the next call within its idle release) keeps them. Then copy all of
# results/NAME back from sweep.tgz before that call (`python -m bench.studies.sweep_merge
# DIR/results/NAME results/NAME --all`; without --all it copies only the finished runs) (cells cut off mid-training resume from their
# checkpoints and need their records; cells trained but not evaluated again are evaluated first);
# on a fresh machine the sweep sets the latter aside (NAME.no-checkpoint) and trains them again,
# so copy back only finished cells (with eval-again.json) when the next call will not be at once.
# A unit too long for the budget trains the first seeds that fit.
#
# A whole session as one stretch, across chained calls: bench/studies/gpu_sweep_detached.sh.
#
# STACK=1: each unit's seeds stacked (`ramac sweep --stack-seeds`), timed under their own keys in
# unit-times.json.
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
LANES=${LANES:-${TASKS:?set TASKS (one process) or LANES (processes side by side, task lists separated by ;)}}
MINUTES=${MINUTES:-}
STACK_FLAG=$([[ ${STACK:-0} == 1 ]] && echo --stack-seeds)
LIMIT_S=${LIMIT_S:-520}
BUDGET_MIN=$(python3 -c "print(max(1, ${LIMIT_S} - 25) / 60)")  # 25 s for the archive after the sweep
CONFIG=${CONFIG:-sweeps/mujoco-reduced.toml}
NAME=$(basename "$CONFIG" .toml)
export MINARI_DATASETS_PATH=${MINARI_DATASETS_PATH:-$PWD/build/minari}  # ignored: kept while the machine is
unset TRITON_INTERPRET || true
mkdir -p "$OUT/sweep-logs"
if [[ $LANES == auto ]]; then  # the tasks with cells left, balanced over LANE_COUNT processes by unit times
  LANES=$(python3 -m ramac sweep "$CONFIG" --lanes "${LANE_COUNT:-2}" --full $STACK_FLAG) || exit 2
  [[ -n $LANES ]] || { echo "gpu_sweep.sh: every cell of $CONFIG is finished" >&2; exit 0; }
  echo "gpu_sweep.sh: LANES=\"$LANES\""
fi
IFS=';' read -r -a lanes <<<"$LANES"
for i in "${!lanes[@]}"; do
  [[ -z ${lanes[$i]// /} ]] && { echo "gpu_sweep.sh: lane $i names no task (LANES=\"$LANES\")" >&2; exit 2; }
done
finish() {
  for t in ${LANES//;/ }; do python3 -m ramac data info "$t" >"$OUT/sweep-logs/data-$t.json" 2>&1; done
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/sweep-logs/gpu.txt" 2>&1
  tar czf "$OUT/sweep.tgz" --exclude='checkpoint*' --exclude='*.lock' "results/$NAME" -C "$OUT" sweep-logs
}
trap finish EXIT
lane() {  # $1: lane number, $2: its tasks
  # shellcheck disable=SC2086
  timeout --signal=INT --kill-after=15 "$LIMIT_S" \
    python3 -m ramac sweep "$CONFIG" --tasks $2 --budget "$BUDGET_MIN" ${MINUTES:+--time-limit "$MINUTES"} \
      --make-data $STACK_FLAG 2>&1 \
    | grep --line-buffered -v -e settotalmass -e '^$' >"$OUT/sweep-logs/lane-$1.log"
}
pids=()
for i in "${!lanes[@]}"; do
  lane "$i" "${lanes[$i]}" &
  pids+=($!)
  sleep 3  # the lanes' first writes of the sweep folder do not race
done
rc=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { rc=1; echo "gpu_sweep.sh: lane $i ended with an error (sweep-logs/lane-$i.log)" >&2; }
done
grep -h -e "side by side in" -e "left for the next run" -e "budget spent" "$OUT"/sweep-logs/lane-*.log
exit $rc
