#!/usr/bin/env bash
# The kernels' parity tests and the GPU-path tests on the GPU machine, each file group a bounded
# step (the groups side by side) so a cut-off call still returns what ran: every Triton kernel
# against its reference (tests/kernels), the compiled and graphed updates against the eager one
# (test_fast, test_updates), stacked seeds against single ones (test_stacked, test_seeds). Timings are not taken, so it may
# share the GPU with a running sweep (gpu_sweep_detached.sh's follow calls):
#
#   OUT=$OUT bash bench/studies/gpu_tests.sh & ACTION=follow OUT=$OUT bash bench/studies/gpu_sweep_detached.sh; wait
#
# Everything lands in $OUT/gpu-tests.tgz; summary.txt has one line per step (its last pytest line).
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
gpu_study gpu-tests
# the four groups run side by side (the GPU and the machine's 16 cores have room; one after another
# they need ~10 min, more than a call holds beside the sweep), each within STEP_S; STEPS picks some
S=${STEP_S:-420}
STEPS=${STEPS:-kernels-a kernels-b kernels-c updates}
# CPU threads per group: four pytest processes and a sweep on 16 cores (each taking all 16, the
# CPU-bound bandit training of test_sampler's distribution test took 237 s in the seventh session)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
pt=(python3 -m pytest -q -p no:cacheprovider -x --no-header -rfE --durations=10)
declare -A files=(
  [kernels-a]="tests/kernels/test_quantile_huber.py tests/kernels/test_risk.py tests/kernels/test_iqn_critic.py tests/kernels/test_fold_seeds.py"
  [kernels-b]="tests/kernels/test_sampler.py tests/kernels/test_sampler_split.py tests/kernels/test_sampler_stacked.py tests/kernels/test_student.py tests/kernels/test_denoise.py"
  [kernels-c]="tests/kernels/test_chain_grad.py"
  [updates]="tests/test_fast.py tests/test_updates.py tests/test_stacked.py tests/test_seeds.py"
)
for name in $STEPS; do
  [[ -n ${files[$name]:-} ]] || { echo "gpu_tests.sh: no step $name (steps: ${!files[*]})" >&2; exit 2; }
  # shellcheck disable=SC2086  # the file list splits into arguments
  step "$name" "$S" "${pt[@]}" ${files[$name]} &
done
wait
