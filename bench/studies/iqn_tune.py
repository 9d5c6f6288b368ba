"""Launch configurations of the fused IQN critic's three kernels (kernels/iqn_critic.py: forward,
backward "rows", backward "head") timed on a GPU at the training shapes, and the rules that pick
the fastest, in the form kernels.iqn_launch.launch_configs reads (RAMAC_IQN_TUNING=FILE.json).

    python -m bench.studies.iqn_tune --out bench/results/iqn-tune-H200.json --rules tuning.json

Shapes: one critic call of RADAC on halfcheetah (batch 256, K = 32 fractions, emb 128, n_cos 32,
hidden 256, bf16 trunk) with C = 1 stack entry (one critic of one seed), C = 2 (a seed's two
critics in one launch, which the timed rules left to the 16-seed rule), and C = 16 and 32 (seeds
stacked: every seed's critic in one launch). For each kernel kind every candidate (block_m, block_n, warps,
stages) is compiled first in parallel worker processes (Triton's cache then serves the timing
process), then timed alone, replayed from a CUDA graph, with the other two kinds at the rules in
force; each candidate's outputs are checked against the default configuration's. Then the
backward programs (one value for both backward kinds) are timed at the best blocks. A candidate
that does not compile (shared memory) or disagrees is reported and skipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import torch

SHAPES = [(1, 256, 32, 128, 32, 256), (2, 256, 32, 128, 32, 256), (16, 256, 32, 128, 32, 256),
          (32, 256, 32, 128, 32, 256)]  # C, B, K, E, N, H
CANDIDATES = {
    "fwd": list(itertools.product((32, 64, 128, 256), (32, 64, 128), (4, 8), (1, 2))),
    "rows": list(itertools.product((32, 64, 128), (32, 64, 128), (4, 8), (1, 2))),
    "head": list(itertools.product((32, 64, 128), (32, 64, 128, 256), (4, 8), (1, 2))),
}
PROGRAMS = (128, 256, 512, 1024, 2048, 4096)
DEVICE = "cuda"


def inputs(C, B, K, E, N, H, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)

    def r(*shape, scale=0.1):
        return torch.randn(C, *shape, generator=g, device=DEVICE) * scale

    trunk = torch.relu(torch.randn(C, B, E, generator=g, device=DEVICE)).bfloat16()
    taus = torch.rand(C, B, K, generator=g, device=DEVICE)
    params = [r(E, N), r(E), r(H, E), r(H), r(1, H, scale=0.05), r(1)]
    dq = torch.randn(C, B, K, generator=g, device=DEVICE)
    return trunk, taus, params, dq


def run_kind(kind, shape, config=None, programs=None):
    """A callable launching `kind` (fwd: q; rows/head: their gradients) with `config` for it and
    `programs` backward programs over all stack entries (None: the rules')."""
    from ramac.kernels.iqn_critic import _Plan

    trunk, taus, params, dq = inputs(*shape)
    plan = _Plan(trunk, taus, *params, None, None, None, tuning={kind: config} if config else None)
    plan.default_programs = programs or plan.default_programs
    if kind == "fwd":
        return plan.forward
    return lambda: plan.backward(dq, rows=kind == "rows", head=kind == "head")


def flat(out):
    if torch.is_tensor(out):
        return [out.float()]
    return [t.float() for part in out if part is not None for t in part]


def _warm(jobs):
    """Worker: compile each (kind, config) at each shape (one launch); returns the failures."""
    failed = []
    for kind, config in jobs:
        for shape in SHAPES:
            try:
                run_kind(kind, shape, config)()
                if DEVICE == "cuda":
                    torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001 - out of resources and the like: reported, skipped
                failed.append((kind, config, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"))
                break
    return failed


def warm_all(workers: int) -> dict:
    jobs = [(k, c) for k, cands in CANDIDATES.items() for c in cands]
    chunks = [jobs[i::workers] for i in range(workers)]
    ctx = torch.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        failed = [f for part in pool.map(_warm, chunks) for f in part]
    return {(k, tuple(c)): why for k, c, why in failed}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON of every timing")
    ap.add_argument("--rules", required=True, help="the rules file to write (RAMAC_IQN_TUNING's form)")
    ap.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("iqn_tune: needs a CUDA GPU", file=sys.stderr)
        return 2
    from ramac.perf.bench import timeit
    from ramac.utils import provenance

    t0 = time.time()
    failed = warm_all(args.workers)
    print(f"compiled {sum(map(len, CANDIDATES.values()))} candidates in {time.time() - t0:.0f} s, "
          f"{len(failed)} failed", flush=True)
    rows, best = [], {}
    for shape in SHAPES:
        C, B, K = shape[:3]
        best[shape] = {}
        for kind, cands in CANDIDATES.items():
            want = flat(run_kind(kind, shape)())
            timed = []
            for config in dict.fromkeys([default_config(shape, kind), *cands]):  # the default always timed
                row = dict(C=C, B=B, K=K, kind=kind, config=list(config))
                if (kind, config) in failed:
                    rows.append({**row, "error": failed[(kind, config)]})
                    continue
                fn = run_kind(kind, shape, config)
                got = flat(fn())
                err = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item() for a, b in zip(got, want))
                if err > 2e-2:
                    rows.append({**row, "error": f"disagrees with the default configuration: rel err {err:.2e}"})
                    continue
                us = timeit(fn, DEVICE == "cuda", warmup=3, blocks=10, per_block=10, graph=DEVICE == "cuda").median_us
                rows.append({**row, "us": us, "rel_err": err})
                timed.append((us, config))
            timed.sort()
            best[shape][kind] = timed[0]
            print(f"C={C:2d} {kind:4s}: best {timed[0][1]} {timed[0][0]:8.1f} us (default {default_us(rows, shape, kind):8.1f})"
                  f"  [{len(timed)} timed]", flush=True)
        programs = []
        for P in PROGRAMS:
            tuning = {k: best[shape][k][1] for k in ("rows", "head")}
            us = 0.0
            for kind in ("rows", "head"):
                fn = run_kind(kind, shape, tuning[kind], programs=P)
                us += timeit(fn, DEVICE == "cuda", warmup=3, blocks=10, per_block=10, graph=DEVICE == "cuda").median_us
            rows.append(dict(C=C, B=B, K=K, kind="rows+head", programs=P, us=us))
            programs.append((us, P))
        best[shape]["programs"] = min(programs)
        print(f"C={C:2d} backward programs: best {best[shape]['programs'][1]} ({best[shape]['programs'][0]:.1f} us "
              f"for rows + head)", flush=True)
    rules = make_rules(best)
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    with open(args.rules, "w") as f:
        json.dump({"rules": rules, "made_by": "python -m bench.studies.iqn_tune", "device": name}, f, indent=1)
    with open(args.out, "w") as f:
        json.dump({"kind": "iqn-tune", "device": name, "provenance": provenance(torch.device(DEVICE)),
                   "shapes": SHAPES, "rules": rules, "results": rows}, f, indent=1)
    print(f"wrote {args.out} and {args.rules} in {time.time() - t0:.0f} s")
    return 0


def default_config(shape, kind) -> tuple:
    """The configuration the rules in force give `kind` at `shape`."""
    from ramac.kernels.iqn_critic import _pow2
    from ramac.kernels.iqn_launch import launch_configs

    C, B, K, E = shape[:4]
    return tuple(launch_configs(torch.bfloat16, _pow2(E, 16), C * B * K)[0][kind])


def default_us(rows, shape, kind):
    C = shape[0]
    config = list(default_config(shape, kind))
    for r in rows:
        if (r["C"], r["kind"], r.get("config")) == (C, kind, config) and "us" in r:
            return r["us"]
    return float("nan")


def make_rules(best) -> list[dict]:
    """One rule per measured shape, by rows (C x B x K): up to the smallest's rows its best, ..., the
    largest's best for any larger problem."""
    from ramac.kernels.iqn_critic import _pow2

    rules = []
    shapes = sorted(best, key=lambda s: s[0] * s[1] * s[2])
    for i, shape in enumerate(shapes):
        C, B, K, E = shape[:4]
        rule = {"dtype": "bfloat16", "emb": _pow2(E, 16)}
        if i < len(shapes) - 1:
            rule["max_rows"] = C * B * K
        rule.update({k: list(best[shape][k][1]) for k in ("fwd", "rows", "head")})
        rule["programs"] = best[shape]["programs"][1]
        rules.append(rule)
    return rules


if __name__ == "__main__":
    sys.exit(main())
