#!/usr/bin/env bash
# Issue 13 item 1 on the GPU machine: Walker2d medium-expert, a short run of bc, neutral and
# radac with today's code and with the code of commit 69f0cf1 (before each agent had its own
# evaluation policy: bc and neutral then inherited the preset's top_k = 1, i.e. the best of 10
# candidates by a CVaR_0.1 critic), each evaluated over 50 episodes with `ramac eval`.
#   bash scripts/gpu_walker_eval.sh OUT_DIR [STEPS]      (.whl/old.tar: `git archive 69f0cf1`)
# The old code runs from /tmp (run from the checkout, python would import the checkout's ramac).
set -euo pipefail
OUT=$1; STEPS=${2:-5000}
export MINARI_DATASETS_PATH=/tmp/minari
mkdir -p /tmp/oldsrc /tmp/w "$OUT"
tar xf .whl/old.tar -C /tmp/oldsrc
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/oldpkg /tmp/oldsrc >/dev/null 2>&1
python3 -m ramac.cli data make walker2d-medium-expert --size 20000 > /dev/null
COMMON=(--task walker2d-medium-expert --steps "$STEPS" --eval-every 0 --ckpt-every "$STEPS" --no-compile --no-progress)
for algo in bc neutral radac; do
  warm=(); [ "$algo" != bc ] && warm=(--set eta_warmup_steps=$((STEPS / 2)))
  python3 -m ramac.cli train "${COMMON[@]}" --algo $algo "${warm[@]}" --run-dir /tmp/w/new-$algo | tail -2
  python3 -m ramac.cli eval /tmp/w/new-$algo --episodes 50 --seed 12345 | tail -1
  (cd /tmp && PYTHONPATH=/tmp/oldpkg:${PYTHONPATH:-} python3 -m ramac.cli train "${COMMON[@]}" --algo $algo "${warm[@]}" \
     --run-dir /tmp/w/old-$algo | tail -2)
  (cd /tmp && PYTHONPATH=/tmp/oldpkg:${PYTHONPATH:-} python3 -m ramac.cli eval /tmp/w/old-$algo --episodes 50 \
     --seed 12345 | tail -1)
done
(cd /tmp && PYTHONPATH=/tmp/oldpkg:${PYTHONPATH:-} python3 -c "import ramac, sys; print('old code from', ramac.__file__)")
python3 - "$OUT" <<'PY'
import json, sys, pathlib
rows = []
for algo in ("bc", "neutral", "radac"):
    for code in ("old", "new"):
        d = pathlib.Path(f"/tmp/w/{code}-{algo}")
        e = json.loads((d / "eval-again.json").read_text())
        a = json.loads((d / "config.json").read_text())["agent"]
        sel = a.get("eval_select", "top_k" if a.get("top_k", 0) else "none")
        rows.append(dict(algo=algo, code=code, eval_policy=sel, **{k: e[k] for k in
                    ("return/mean", "return/mean_ci95", "return/cvar_0.1", "return/cvar_0.1_ci95", "risky_rate", "episodes")}))
pathlib.Path(sys.argv[1], "walker-eval.json").write_text(json.dumps(rows, indent=1))
for r in rows:
    print(r)
PY
