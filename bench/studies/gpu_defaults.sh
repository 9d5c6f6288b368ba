#!/usr/bin/env bash
# One device call (~300 s) for issue 18's new defaults (combo kernels, the IQN operator under
# torch.compile where the speed rule takes it, the quantile-Huber and sampler launch rules):
# 1. the compiled-vs-eager update tests, the sampler's and the IQN critic's GPU tests with them;
# 2. one seed at batch 256: graph-compile-bf16 (defaults), graph-compile (fp32, what `ramac train`
#    and the sweep run) with the defaults and with RAMAC_COMBO_KERNELS=0 (its A/B: the fp32 path
#    was not measured with combo kernels).
# Everything lands in $OUT/defaults.tgz.
#
#   OUT=/some/folder bash bench/studies/gpu_defaults.sh
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
source "$(dirname "$0")/_gpu_lib.sh"
gpu_study defaults
step pytest "${PYTEST_S:-120}" python3 -m pytest -q -p no:cacheprovider tests/test_fast.py tests/kernels/test_sampler.py \
  tests/kernels/test_iqn_critic.py -k "matches_eager or bf16 or under_compile or test_sampler"
TRAIN_S=${TRAIN_S:-75}
single=(--batch-size 256 --top-kernels 12)
bench_train bf16-defaults "| 256 | graph-compile-bf16" -- "${single[@]}" --paths graph-compile-bf16
bench_train fp32-defaults "| 256 | graph-compile |" -- "${single[@]}" --paths graph-compile
bench_train fp32-no-combo "| 256 | graph-compile |" RAMAC_COMBO_KERNELS=0 -- "${single[@]}" --paths graph-compile
