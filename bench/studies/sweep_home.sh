#!/usr/bin/env bash
# Bring one device call's sweep archive home (gpu_sweep.sh's or gpu_sweep_detached.sh's sweep.tgz):
# unpack it, copy its finished runs and unit times into results/NAME (bench/studies/sweep_merge.py),
# write the tables of the tasks now complete (`ramac sweep CONFIG --tables-only --full`: no training,
# no GPU) and the interim table of every finished cell (`ramac report`), and keep the lane logs as
# results/NAME/logs/stretch-LABEL{a,b,...}-H200.log and the data sets' provenance beside them. Run
# from the repository root; then read the logs, update results/NAME/README.md and commit.
#
#   bash bench/studies/sweep_home.sh FOLDER_WITH_SWEEP_TGZ LABEL [CONFIG]    # e.g. /work/.device/7 13
#
# ALL=1 copies every run, finished or not (sweep_merge --all: for a gpu_sweep.sh call that a next
# call on the same warm machine resumes at once).
set -euo pipefail
FROM=${1:?usage: sweep_home.sh FOLDER_WITH_SWEEP_TGZ LABEL [CONFIG]}
LABEL=${2:?usage: sweep_home.sh FOLDER_WITH_SWEEP_TGZ LABEL [CONFIG]}
CONFIG=${3:-sweeps/mujoco-reduced.toml}
NAME=$(basename "$CONFIG" .toml)
[[ -f $FROM/sweep.tgz ]] || { echo "sweep_home.sh: no sweep.tgz in $FROM" >&2; exit 2; }
[[ -f $CONFIG ]] || { echo "sweep_home.sh: no sweep config $CONFIG (run from the repository root)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar xzf "$FROM/sweep.tgz" -C "$tmp"
mkdir -p "results/$NAME/logs"
if [[ -d $tmp/results/$NAME ]]; then
  python3 -m bench.studies.sweep_merge "$tmp/results/$NAME" "results/$NAME" ${ALL:+--all}
else
  echo "sweep_home.sh: the archive holds no results/$NAME yet (a snapshot before the first unit): logs only"
fi
letters=(a b c d e f g h)
for log in "$tmp"/sweep-logs/lane-*.log; do
  [[ -f $log ]] || continue
  i=${log##*/lane-}; i=${i%.log}
  cp "$log" "results/$NAME/logs/stretch-$LABEL${letters[$i]}-H200.log"
done
for data in "$tmp"/sweep-logs/data-*.json; do
  [[ -f $data ]] && cp "$data" "results/$NAME/logs/"
done
python3 -m ramac sweep "$CONFIG" --tables-only --full
runs=("results/$NAME"/runs/*-seed[0-9])
[[ -e ${runs[0]} ]] && python3 -m ramac report "${runs[@]}" --out "results/$NAME/interim"
echo "sweep_home.sh: lane logs in results/$NAME/logs/stretch-$LABEL*-H200.log"
