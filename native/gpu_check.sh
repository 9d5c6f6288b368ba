#!/usr/bin/env bash
# The native sampler on a GPU machine: build, ctest, the Python parity tests, the C++ bench, the
# Python sampler bench beside it, an ncu summary of the kernel; every log and JSON into
# $OUT/native.tgz. Run from the repository root after `python3 -m pip install -q --no-deps
# --no-build-isolation -e .`:
#
#   OUT=/some/folder bash native/gpu_check.sh
#
# A failing step is reported and the script goes on; the archive is written whatever happens.
# Budget: ~5 minutes (the optional steps are skipped when time runs short). It also builds
# -DRAMAC_ONE_STATE=cta and =mma (native/src/one_state.cu, the one-CTA kernels for one state: CUDA
# cores and tensor cores) into build-cta/ and build-mma/ and runs their ctest, the Python parity
# tests against each and their batch-1 bench (ONE_STATES="cta" or "mma" picks one, CTA=0 none);
# DEFAULT=0 skips the default library's build, tests and bench.
set -euo pipefail

OUT=${OUT:?set OUT to an output folder}
BUDGET_S=${BUDGET_S:-225}
WORK="$OUT/native"
mkdir -p "$WORK/logs"
SUMMARY="$WORK/summary.txt"
: >"$SUMMARY"
BUILD="$PWD/build"
EXPORT="$WORK/export"
PY=$(command -v python3)
export RAMAC_NATIVE_LIB="$BUILD/libramac_sampler.so" OMP_NUM_THREADS=4
unset TRITON_INTERPRET || true
FAILED=0

say() { printf '[%3d s] %s\n' "$SECONDS" "$*" | tee -a "$SUMMARY"; }

finish() {
  say "done: $FAILED step(s) failed; archive $OUT/native.tgz"
  cp "$BUILD/generated/ramac_kernels.json" "$WORK/" 2>/dev/null || true
  tar czf "$OUT/native.tgz" -C "$OUT" native && rm -rf "$WORK" || echo "tar failed"
}
trap finish EXIT

# step NAME LIMIT_S COMMAND...: run with a time limit, log to logs/NAME.log, report, never abort
step() {
  local name=$1 limit=$2 rc=0 t0=$SECONDS
  shift 2
  say "$name: start (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1 || rc=$?
  if ((rc == 0)); then
    say "$name: ok in $((SECONDS - t0)) s"
  elif ((rc == 77)); then
    say "$name: skipped (no CUDA device)"
  else
    FAILED=$((FAILED + 1))
    local why=""
    if ((rc == 124)); then why=", timed out"; fi
    say "$name: FAILED (exit $rc$why) in $((SECONDS - t0)) s; last lines:"
    tail -n 15 "$WORK/logs/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
  fi
}

# optional NAME LIMIT_S COMMAND...: a step run only if it fits in what is left of the budget
optional() {
  if ((SECONDS + $2 > BUDGET_S)); then
    say "$1: skipped (would pass the ${BUDGET_S} s budget)"
  else
    step "$@"
  fi
}

ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d '. ' || true)
ARCH=${ARCH:-90}
say "native check on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || echo 'no GPU?'), sm_$ARCH"
step env 30 bash -c "nvidia-smi; $PY -c 'import torch, triton; print(\"torch\", torch.__version__, torch.version.cuda, \"triton\", triton.__version__)'; cmake --version | head -n1; nvcc --version | tail -n2; gcc --version | head -n1; git log -1 --oneline || true"

if [[ ${DEFAULT:-1} == 1 ]]; then  # DEFAULT=0: the one-state CUDA kernels alone (their builds need the export only)
  step configure 60 cmake -S . -B "$BUILD" -DRAMAC_ARCH="$ARCH" -DRAMAC_PYTHON="$PY"
  step build 120 cmake --build "$BUILD" -j 8
  step ctest 60 ctest --test-dir "$BUILD" -V
  # (not the CMake builds test_native.py makes itself: the build and ctest steps do that here, for the
  # default library above and the one-state CUDA kernels' below)
  step pytest 120 "$PY" -m pytest tests/test_native.py -q -rs -p no:cacheprovider -k "not cmake_builds"
fi
step export 60 env OMP_NUM_THREADS=1 "$PY" native/make_test_export.py "$EXPORT"
if [[ ${DEFAULT:-1} == 1 ]]; then
  step bench_native 60 "$BUILD/ramac_sampler_bench" --export "$EXPORT" --batch 1 16 256 4096 65536 --iters 200 \
    --launch both --out "$WORK/bench_native.json"
  step bench_native_noise 45 "$BUILD/ramac_sampler_bench" --export "$EXPORT" --batch 1 16 256 4096 65536 --iters 100 \
    --launch both --noise --out "$WORK/bench_native_noise.json"
fi
# the one-state CUDA kernels (native/src/one_state.cu): cta on the CUDA cores, mma on the tensor cores;
# ONE_STATES picks (CTA=0, as before, none); each into build-KIND/ with its ctest, the Python parity
# tests against it, its batch-1 bench and an ncu summary with the warps' stall reasons
[[ ${CTA:-1} == 1 ]] || ONE_STATES=""
for kind in ${ONE_STATES-cta mma}; do
  KIND_BUILD="$PWD/build-$kind"
  step "configure_$kind" 60 cmake -S . -B "$KIND_BUILD" -DRAMAC_ARCH="$ARCH" -DRAMAC_PYTHON="$PY" \
    -DRAMAC_ONE_STATE="$kind"
  step "build_$kind" 120 cmake --build "$KIND_BUILD" -j 8
  step "ctest_$kind" 60 ctest --test-dir "$KIND_BUILD" -V
  step "pytest_$kind" 90 env RAMAC_NATIVE_LIB="$KIND_BUILD/libramac_sampler.so" "$PY" -m pytest tests/test_native.py \
    -q -rs -p no:cacheprovider -k "native_equals or seed_path"
  step "bench_$kind" 45 "$KIND_BUILD/ramac_sampler_bench" --export "$EXPORT" --batch 1 --iters 1000 --launch both \
    --out "$WORK/bench_$kind.json"
  step "bench_${kind}_noise" 45 "$KIND_BUILD/ramac_sampler_bench" --export "$EXPORT" --batch 1 --iters 1000 \
    --launch both --noise --out "$WORK/bench_${kind}_noise.json"
  if command -v ncu >/dev/null; then
    optional "ncu_${kind}_B1" 40 ncu --kernel-name regex:ramac_one_state.* --launch-skip 3 --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis \
      --section WarpStateStats --section InstructionStats \
      "$KIND_BUILD/ramac_sampler_bench" --export "$EXPORT" --batch 1 --iters 3 --warmup 2 --launch plain \
      --out "$WORK/ncu_${kind}_B1.json"
  fi
done
optional bench_python 100 "$PY" -m ramac bench sampler --batch-size 1 16 256 4096 65536 --steps 5 --no-compile \
  --out "$WORK/bench_python_sampler.json"
if command -v ncu >/dev/null; then
  for B in 1 65536; do
    optional "ncu_B$B" 40 ncu --kernel-name regex:_chain_.*kernel --launch-skip 3 --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis \
      "$BUILD/ramac_sampler_bench" --export "$EXPORT" --batch "$B" --iters 3 --warmup 2 --launch plain \
      --out "$WORK/ncu_bench_B$B.json"
  done
else
  say "ncu: not installed, skipped"
fi
cp "$WORK"/logs/bench_native.log "$WORK/bench_native.txt" 2>/dev/null || true
