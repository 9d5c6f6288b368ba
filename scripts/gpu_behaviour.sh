#!/usr/bin/env bash
# Train the three SAC behaviour policies side by side on one GPU machine (a device call).
# Usage: [ENVS="HalfCheetah-v5 ..."] scripts/gpu_behaviour.sh MINUTES [STEPS]
# Runs live in .sac-runs/ENV (ignored; kept while the machine stays warm). When a run is
# missing there but .sac-back/ENV/state-small.pt exists (carried), it resumes from that.
# Each run's history, compact state and snapshots come back as $OUT/ENV.tar.
set -u
MIN=${1:?minutes}; STEPS=${2:-1000000}; ENVS=${ENVS:-HalfCheetah-v5 Hopper-v5 Walker2d-v5}
mkdir -p .sac-runs
for ENV in $ENVS; do
  if [ ! -e .sac-runs/$ENV/state.pt ] && [ -e .sac-back/$ENV/state-small.pt ]; then
    mkdir -p .sac-runs/$ENV && cp .sac-back/$ENV/* .sac-runs/$ENV/
  fi
  OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1 ramac behaviour train $ENV --steps $STEPS --device cuda \
    --out .sac-runs/$ENV --max-minutes $MIN > .sac-runs/$ENV.log 2>&1 &
done
wait
for ENV in $ENVS; do
  grep -a "step\|Error\|error" .sac-runs/$ENV.log | tr '\r' '\n' | grep -a "^\[\|rror\|resumed\|stopping" | tail -4
  tar -cf $OUT/$ENV.tar -C .sac-runs $ENV/history.json $ENV/state-small.pt $ENV/config.json $ENV/snapshots $ENV.log
done
nvidia-smi --query-gpu=name --format=csv,noheader
