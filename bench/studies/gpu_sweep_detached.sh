#!/usr/bin/env bash
# Issue 16's sweep as one long stretch over several chained device calls of a session, where
# gpu_sweep.sh fits a stretch into one call (540 s: a unit of five seeds, 500-600 s with its data
# set and second evaluations, no longer fits, and a unit cut off by the call's limit trains again).
#
# The device machine stays warm while calls follow each other within its idle release (30 s), and a
# process that started its own session (setsid) outlives the call that started it. So:
#
#   ACTION=start  OUT=$OUT TOTAL_S=1450 bash bench/studies/gpu_sweep_detached.sh   # first call
#   ACTION=follow OUT=$OUT bash bench/studies/gpu_sweep_detached.sh                 # each next call
#
# start copies the repository to $RUN (outside the tree the next calls replace), installs the
# package and the wheels there (not editable: the next calls' installs do not touch it), and starts
# gpu_sweep.sh detached with LIMIT_S=TOTAL_S (its budget: a unit starts only if its recorded time
# fits what is left of TOTAL_S, so every unit finishes inside it). Then, as follow does, it waits up
# to WAIT_S (default 540) for the sweep to end and archives what is there into $OUT/sweep.tgz: the
# sweep folder without checkpoints and the lane logs. Once the sweep has ended, follow's archive is
# gpu_sweep.sh's own (with the data sets' provenance) and it prints "detached sweep: finished".
# Bring each archive home with `python -m bench.studies.sweep_merge DIR/results/NAME results/NAME`
# (finished runs only: a run in progress is in the next archive).
#
# Keep TOTAL_S below the session's device time left less the machine's start (~90 s) and ~40 s per
# call (install, archive); the calls must follow each other at once (a gap beyond the idle release
# gives the machine back and ends the sweep: the finished runs of the last archive are kept).
# CONFIG, LANES (default auto), STACK pass through to gpu_sweep.sh (given to start; follow archives
# the sweep that start began). RUN: the folder of the detached sweep (default /tmp/ramac-sweep).
set -uo pipefail
OUT=$(realpath -m "${OUT:?set OUT to an output folder}")
ACTION=${ACTION:?set ACTION to start or follow}
RUN=$(realpath -m "${RUN:-/tmp/ramac-sweep}")
WAIT_S=${WAIT_S:-540}

# the detached shell leaves its exit status in $RUN/rc: a sweep runs while its shell lives and has none
running() { [[ -f $RUN/pid && ! -f $RUN/rc ]] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; }

if [[ $ACTION == start ]]; then
  TOTAL_S=${TOTAL_S:?set TOTAL_S, the seconds of the whole sweep across the calls}
  CONFIG=${CONFIG:-sweeps/mujoco-reduced.toml}
  NAME=$(basename "$CONFIG" .toml)
  if running; then echo "gpu_sweep_detached.sh: a detached sweep is already running ($RUN/pid)" >&2; exit 2; fi
  rm -rf "$RUN" && mkdir -p "$RUN/out" "$RUN/repo/bench/studies" "$RUN/repo/results" || exit 2
  echo "$NAME" >"$RUN/name"  # follow archives this sweep's folder whatever CONFIG it is given
  # the sweep's working folder holds no package source, so `python3 -m ramac` imports the copy in
  # $RUN/site (with ramac.kernels inside it), never the tree the next calls replace
  cp -a sweeps "$RUN/repo/" && { [[ ! -d results/$NAME ]] || cp -a "results/$NAME" "$RUN/repo/results/"; } \
    && cp -a bench/studies/gpu_sweep.sh "$RUN/repo/bench/studies/" || exit 2
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$RUN/site" .whl/*.whl >"$RUN/install.log" 2>&1 \
    || echo "gpu_sweep_detached.sh: note: the wheels in .whl/ did not all install ($RUN/install.log)" >&2
  python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target "$RUN/site" . >>"$RUN/install.log" 2>&1 \
    || { echo "gpu_sweep_detached.sh: installing the package into $RUN/site failed ($RUN/install.log)" >&2; exit 2; }
  # provenance: the installed copy is no checkout, so it is told the commit and whether the source differed
  # (ramac.utils.git_state, run from the checkout; "-" where git cannot tell)
  read -r commit dirty < <(python3 -c "from ramac.utils import git_state; c, d = git_state(); \
print(c or '-', {True: 1, False: 0}.get(d, '-'))")
  [[ $commit == - ]] && commit=
  # the data sets where the checkout keeps them (ignored by git: kept between calls on a warm machine)
  export MINARI_DATASETS_PATH=${MINARI_DATASETS_PATH:-$PWD/build/minari}
  # setsid -f: a session of its own (the call's end leaves it running); its shell writes its own pid
  # (under job control setsid forks, so $! would name a parent that has already exited) and, at the
  # end, the sweep's exit status
  (cd "$RUN/repo" && PYTHONPATH="$RUN/site" PYTHONUNBUFFERED=1 RAMAC_GIT_COMMIT="$commit" RAMAC_GIT_DIRTY="$dirty" \
     OUT="$RUN/out" LIMIT_S="$TOTAL_S" CONFIG="$CONFIG" LANES="${LANES:-auto}" STACK="${STACK:-0}" \
     setsid -f bash -c 'echo $$ >"$0/pid"; bash bench/studies/gpu_sweep.sh; echo $? >"$0/rc"' "$RUN" \
     >"$RUN/sweep.log" 2>&1 </dev/null)
  for _ in 1 2 3 4 5; do [[ -s $RUN/pid ]] && break; sleep 1; done
  date +%s >"$RUN/started"
  echo "detached sweep: started (pid $(cat "$RUN/pid"), TOTAL_S=$TOTAL_S, $RUN)"
  WAIT_S=$((WAIT_S > SECONDS ? WAIT_S - SECONDS : 0))  # the copy and the installs came out of this call
elif [[ $ACTION != follow ]]; then
  echo "gpu_sweep_detached.sh: ACTION must be start or follow, got '$ACTION'" >&2; exit 2
elif [[ ! -f $RUN/pid ]]; then
  echo "gpu_sweep_detached.sh: no detached sweep on this machine ($RUN/pid missing: a fresh machine?)" >&2; exit 2
fi
NAME=$(cat "$RUN/name")

waited=0
while running && (( waited < WAIT_S )); do sleep 5; waited=$((waited + 5)); done
elapsed=$(( $(date +%s) - $(cat "$RUN/started") ))
grep -h -e "side by side in" -e "evaluated again" -e "left for the next run" -e "budget spent" \
  "$RUN"/out/sweep-logs/lane-*.log 2>/dev/null | cut -c1-160
if running; then
  mkdir -p "$OUT/sweep-logs" && cp "$RUN"/out/sweep-logs/lane-*.log "$OUT/sweep-logs/" 2>/dev/null
  folder=(); [[ -d $RUN/repo/results/$NAME ]] && folder=(-C "$RUN/repo" "results/$NAME")
  tar czf "$OUT/sweep.tgz" --exclude='checkpoint*' --exclude='*.lock' "${folder[@]}" -C "$OUT" sweep-logs
  echo "detached sweep: running after ${elapsed} s; snapshot in \$OUT/sweep.tgz; follow again at once"
else
  cp -a "$RUN/out/." "$OUT/"
  tail -n 5 "$RUN/sweep.log"
  rc=$(cat "$RUN/rc" 2>/dev/null || echo "unknown (killed?)")
  if [[ -f $OUT/sweep.tgz ]]; then
    echo "detached sweep: finished after ${elapsed} s (exit $rc); gpu_sweep.sh's archive in \$OUT/sweep.tgz"
  else
    echo "detached sweep: finished after ${elapsed} s (exit $rc) without an archive ($RUN/sweep.log)"
  fi
fi
