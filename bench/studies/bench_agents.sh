#!/usr/bin/env bash
# `ramac bench train` for several agents, one JSON + table per agent, resumable (an agent whose JSON
# exists is skipped). Usage: bench/studies/bench_agents.sh OUT_DIR AGENT...
# The paths: the plain reference loop, the graphed kernels path, and the fastest (graph + compile + bf16).
set -u
out=$1; shift
mkdir -p "$out"
for algo in "$@"; do
  [ -f "$out/train-$algo.json" ] && { echo "skip $algo (done)"; continue; }
  echo "== $algo $(date +%T)"
  ramac bench train --algo "$algo" --batch-size 256 16384 \
      --paths eager-reference graph-kernels graph-compile-bf16 --out "$out/train-$algo.json" 2>&1 | tail -12
done
