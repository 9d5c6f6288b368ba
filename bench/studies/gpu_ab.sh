#!/usr/bin/env bash
# A/B on the GPU machine: the same `ramac train` command with the code of an earlier commit (arm A)
# and the working tree's (arm B), SEEDS side by side, each run's log and metrics into $OUT/ab.tgz.
# For questions like "does this change move the results?" (results/mujoco-reduced/README.md).
#
# Here, before the device call (the earlier code travels as an ignored folder, package and kernels):
#   rm -rf .ab-old && mkdir .ab-old && git archive REV ramac kernels | tar -x -C .ab-old \
#     && mv .ab-old/kernels .ab-old/ramac/kernels && rm -rf .ab-old/ramac/assets
#   (and `echo /.ab-old/ >> .git/info/exclude` once; pass carry [".whl", ".ab-old"])
# There (after the package is installed, MINARI_DATASETS_PATH holding the data set):
#   OUT=/some/folder SEEDS="0 1" LIMIT_S=400 bash bench/studies/gpu_ab.sh \
#     --task halfcheetah-medium-replay --algo radac --steps 30000 --eval-every 5000 --set eta_warmup_steps=10000 \
#     --no-compile
# (--no-compile: code before f96d7b5 fails a compiled optimiser step's stride assertion where the risk
# term starts after a warm-up; graphs without compile do not)
#
# ARM_C="--set eta_warmup_steps=0" adds an arm C: the working tree's code with these arguments after the
# shared ones (a later --set wins), to separate a code change from a protocol change in one call.
#
# Arm A runs from inside .ab-old: `python -m ramac` imports the package of the current folder before
# PYTHONPATH, so running both arms from the repository root would run the working tree's code twice.
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
SEEDS=${SEEDS:-0 1}
LIMIT_S=${LIMIT_S:-400}
ARM_C=${ARM_C:-}
ROOT=$PWD
[[ -d .ab-old/ramac ]] || { echo "gpu_ab.sh: no .ab-old/ramac (see the header)" >&2; exit 2; }
unset TRITON_INTERPRET || true
mkdir -p "$OUT/ab"
for s in $SEEDS; do
  (cd "$ROOT/.ab-old" && timeout "$LIMIT_S" python3 -m ramac train "$@" --seed "$s" --no-progress \
     --run-dir "$OUT/ab/A-seed$s" >"$OUT/ab/A-seed$s.log" 2>&1) &
  (timeout "$LIMIT_S" python3 -m ramac train "$@" --seed "$s" --no-progress \
     --run-dir "$OUT/ab/B-seed$s" >"$OUT/ab/B-seed$s.log" 2>&1) &
  if [[ -n "$ARM_C" ]]; then
    # shellcheck disable=SC2086
    (timeout "$LIMIT_S" python3 -m ramac train "$@" $ARM_C --seed "$s" --no-progress \
       --run-dir "$OUT/ab/C-seed$s" >"$OUT/ab/C-seed$s.log" 2>&1) &
  fi
done
echo "arm C: ${ARM_C:-none}" >"$OUT/ab/arms.txt"
wait
(cd "$ROOT/.ab-old" && python3 -c "import ramac, ramac.kernels; print('arm A:', ramac.__file__, ramac.kernels.__file__)") \
  >"$OUT/ab/which.txt" 2>&1
python3 -c "import ramac, ramac.kernels; print('arm B:', ramac.__file__, ramac.kernels.__file__)" >>"$OUT/ab/which.txt" 2>&1
for f in "$OUT"/ab/*.log; do
  echo "== $(basename "$f")"
  grep -v -e settotalmass -e '^$' "$f" | grep -e '^\[step' -e 'Error' | tail -8
done | tee "$OUT/ab/summary.txt"
tar czf "$OUT/ab.tgz" --exclude='checkpoint*' -C "$OUT" ab && rm -rf "$OUT/ab"
