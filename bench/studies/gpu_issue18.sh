#!/usr/bin/env bash
# Issue 18's checks on the GPU machine in one call, most important first, each stage bounded so the
# whole stays under DEADLINE_S seconds (keep it below the device call's limit: the archive is written
# at exit). Run from the repository root after the package is installed:
#
#   OUT=/some/folder DEADLINE_S=520 bash bench/studies/gpu_issue18.sh
#
# 1. the differentiable chain's parity tests on the GPU (tests/kernels/test_chain_grad.py) and
#    ramac bench train at batch 256 and 4,096 on graph-kernels, graph-kernels-bf16 and graph-compile-bf16 with the per-step
#    chain (RAMAC_FUSED_CHAIN unset) and the fused chain (=1)
# 2. the quantile-Huber capture check with the unrolled kernel (bench/studies/qh_graph_check.py)
# 3. the IQN op alone against an fp64 yardstick (bench/studies/iqn_critic_gpu.py)
# With ALL=1 first the stages measured on 2026-12-02 (bench/results/issue18-H200/): the fused IQN
# critic's parity tests, ramac bench train with RAMAC_IQN_UNDER_COMPILE=0 and =1, graph-kernels
# against graph-reference, and ramac profile's per-phase table at batch 256.
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
DEADLINE_S=${DEADLINE_S:-520}
START=$SECONDS
R="$OUT/issue18"
mkdir -p "$R"
unset TRITON_INTERPRET || true
finish() { tar czf "$OUT/issue18.tgz" -C "$OUT" issue18; }
trap finish EXIT
stage() {  # stage NAME LIMIT_S command...: run with the smaller of LIMIT_S and the time left
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE_S - (SECONDS - START)))
  ((left < limit)) && limit=$left
  if ((limit < 10)); then echo "skipped $name: no time left" | tee -a "$R/stages.txt"; return; fi
  local t0=$SECONDS
  timeout --signal=INT --kill-after=10 "$limit" "$@" >"$R/$name.log" 2>&1
  echo "$name: rc $? in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$R/stages.txt"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$R/gpu.txt" 2>&1
if [[ ${ALL:-0} == 1 ]]; then
  stage pytest-iqn 150 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_iqn_critic.py
  stage train-iqn0 170 env RAMAC_IQN_UNDER_COMPILE=0 RAMAC_COMBO_KERNELS=0 python3 -m ramac bench train --batch-size 256 16384 \
    --paths graph-compile-bf16 --top-kernels 12 --out "$R/train-iqn0.json"
  stage train-iqn1 170 env RAMAC_IQN_UNDER_COMPILE=1 RAMAC_COMBO_KERNELS=0 python3 -m ramac bench train --batch-size 256 16384 \
    --paths graph-compile-bf16 --top-kernels 12 --out "$R/train-iqn1.json"
  stage train-graph 90 python3 -m ramac bench train --batch-size 256 --paths graph-reference graph-kernels \
    --out "$R/train-graph.json"
  stage profile-256 70 python3 -m ramac profile --out "$R/profile-radac-256"
fi
stage pytest-chain 90 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_chain_grad.py
for fused in 0 1; do
  stage "train-chain$fused" 170 env RAMAC_FUSED_CHAIN=$fused python3 -m ramac bench train --batch-size 256 4096 \
    --paths graph-kernels graph-kernels-bf16 graph-compile-bf16 --top-kernels 12 --out "$R/train-chain$fused.json"
done
stage qh-graph 80 python3 -m bench.studies.qh_graph_check --legacy --out "$R/qh-graph.json"
stage iqn-op 150 python3 -m bench.studies.iqn_critic_gpu --out "$R/iqn-critic.json"
