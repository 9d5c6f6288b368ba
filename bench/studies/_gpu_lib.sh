# Sourced by the GPU study scripts (bench/studies/gpu_*.sh): `gpu_study NAME` makes $R = $OUT/NAME
# and, on exit whatever happens, writes the GPU's name into $R/gpu.txt and archives $R into
# $OUT/NAME.tgz (a device call returns only a few files). `say` adds a timed line to
# $R/summary.txt; `step NAME LIMIT_S COMMAND...` runs COMMAND within LIMIT_S seconds, logs it to
# $R/NAME.log and says its exit status and last line; a failing step never stops the script.
gpu_study() {
  GPU_STUDY=$1
  R="$OUT/$GPU_STUDY"
  mkdir -p "$R"
  unset TRITON_INTERPRET || true
  trap 'nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$R/gpu.txt" 2>&1
        tar czf "$OUT/$GPU_STUDY.tgz" -C "$OUT" "$GPU_STUDY"' EXIT
}
say() { printf '[%3d s] %s\n' "$SECONDS" "$*" | tee -a "$R/summary.txt"; }
step() {
  local name=$1 limit=$2 rc=0
  shift 2
  timeout --signal=INT --kill-after=10 "$limit" "$@" >"$R/$name.log" 2>&1 || rc=$?
  say "$name: exit $rc: $(tail -n 1 "$R/$name.log")"
}
# bench_train NAME ROW [VAR=VALUE...] -- ARGS...: `ramac bench train ARGS --out $R/NAME.json` with
# those environment settings as a step (limit TRAIN_S, default 80 s), then the log's last ROW line
# (a pattern: "train-seeds", or "| 256 | graph-compile-bf16" for a single-seed run) into the summary
bench_train() {
  local name=$1 row=$2 envs=()
  shift 2
  while [[ $# -gt 0 && $1 != -- ]]; do
    envs+=("$1")
    shift
  done
  shift
  step "$name" "${TRAIN_S:-80}" env "${envs[@]}" python3 -m ramac bench train "$@" --out "$R/$name.json"
  grep -e "$row" "$R/$name.log" | tail -1 | tee -a "$R/summary.txt"
}
# native_check BUDGET_S: native/gpu_check.sh (its own $OUT/native.tgz) with that budget for its
# optional steps (NATIVE_BUDGET_S overrides), bounded from outside too (NATIVE_S, default the budget
# + 30 s: its required steps' own limits add up to more than a device call has), logged to
# $R/native.log; says its exit status and its closing line
native_check() {
  local budget=${NATIVE_BUDGET_S:-$1}
  OUT=$OUT BUDGET_S=$budget timeout --kill-after=10 "${NATIVE_S:-$((budget + 30))}" bash native/gpu_check.sh \
    >"$R/native.log" 2>&1
  say "native check exit $?: $(grep 'done:' "$R/native.log")"
}
