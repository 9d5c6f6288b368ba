#!/usr/bin/env bash
# One device call: build a preset's data set, train RADAC and BC on it side by side (plus the
# full bandit preset), evaluate both over 100 episodes with OOD rates; results tarred to $OUT.
# Usage: scripts/gpu_compare.sh PRESET STEPS
set -u
PRESET=${1:?preset}; STEPS=${2:?steps}
export MINARI_DATASETS_PATH=/tmp/minari PYTHONUNBUFFERED=1
mkdir -p runs
( time ramac data make $PRESET ) > runs/data.log 2>&1
tail -3 runs/data.log
for ALGO in radac bc; do
  ramac train --task $PRESET --algo $ALGO --steps $STEPS --eval-every $STEPS --ckpt-every $STEPS \
    --run-dir runs/$PRESET-$ALGO --no-progress > runs/$PRESET-$ALGO.log 2>&1 &
done
ramac train --run-dir runs/bandit-gpu --no-progress > runs/bandit-gpu.log 2>&1 &
wait
tail -4 runs/bandit-gpu.log
for ALGO in radac bc; do
  tail -2 runs/$PRESET-$ALGO.log
  ramac eval runs/$PRESET-$ALGO --episodes 100 --ood > runs/$PRESET-$ALGO.eval.log 2>&1 &
done
wait
for ALGO in radac bc; do tail -3 runs/$PRESET-$ALGO.eval.log; done
ramac data info $PRESET > runs/data-info.txt 2>&1
rm -f runs/*/checkpoint.pt
tar -cf $OUT/compare.tar runs
nvidia-smi --query-gpu=name --format=csv,noheader
