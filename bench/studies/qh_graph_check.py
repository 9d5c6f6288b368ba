"""The quantile-Huber loss, forward + backward, replayed from a CUDA graph per provider, against the
goal of <= 20 us at B = 16,384, K = K' = 32 (GPU):

    python -m bench.studies.qh_graph_check --legacy --out bench/results/qh-graph-H200.json
    python -m bench.studies.qh_graph_check --providers triton --configs 16x2 32x4 32x4u 64x8 --out ...

Each provider (reference, compile = torch.compile of the reference, triton, and triton-unrolled: the
kernel with its loop over the K' targets unrolled at compile time) and mode (fwd, bwd,
full = fwd + bwd) is timed eagerly and as graph replays through the benchmark harness
(ramac.perf.bench: fresh closures per row, warm-up and capture on one side stream); each graph's
replayed output is compared with an eager call's. --configs adds the kernel at other launch settings,
one provider each: ROWSxWARPS rows per program and warps, a trailing u for the unrolled loop
(provider "triton:16x2u"). --legacy first captures full the way the old
harness did, for quantile_huber and tail_mean, each attempt in a fresh process (the first capture
there, as quantile_huber's was in the old runs): with a forward made before the capture and kept
alive through the same leaf (what the old _modes did for bwd) on the default stream, or on a side
stream (where the leaked capture stream had put tail_mean's), or none (the control); a failing
capture records its first error. The diagnosis to confirm: the forward kept on the default stream
breaks the capture for either op; none, or one on a side stream, does not. Writes JSON with the
device, every row and a verdict. On a CPU it runs the eager rows only (the script's own test).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch

from ramac.kernels.quantile_huber import quantile_huber_loss_ref, quantile_huber_loss_triton
from ramac.kernels.risk import tail_mean_ref
from ramac.perf.bench import _graphed, _measure, _modes, error_text, timeit
from ramac.utils import atomic_write_json, device_name, provenance, resolve_device

PROVIDERS = ("reference", "compile", "triton", "triton-unrolled")  # unrolled: the K' loop unrolled at compile time
MODES = ("fwd", "bwd", "full")
KEPT = ("none", "default", "side")  # where the old harness's kept forward was made (legacy cases)
ROOT = Path(__file__).resolve().parents[2]


def parse_config(text: str) -> dict:
    """ROWSxWARPS[u] (e.g. 16x2u) -> quantile_huber_loss_triton's launch keywords."""
    body = text[:-1] if text.endswith("u") else text
    try:
        rows, warps = (int(v) for v in body.split("x"))
    except ValueError:
        raise SystemExit(f"qh_graph_check: a launch setting is ROWSxWARPS with an optional u (16x2u), got {text!r}")
    return {"block_b": rows, "num_warps": warps, "unroll": text.endswith("u")}


def qh_case(device, B: int, K: int, seed: int = 0, configs=()):
    """(pred leaf, {provider: make_out}) for the loss of (B, K) quantiles against (B, K) targets;
    configs: launch settings of the kernel (parse_config), a provider "triton:SETTING" each."""
    g = torch.Generator(device=device).manual_seed(seed)
    pred = torch.randn(B, K, device=device, generator=g).requires_grad_()
    target = torch.randn(B, K, device=device, generator=g)
    taus = torch.rand(B, K, device=device, generator=g)

    def reference():
        return quantile_huber_loss_ref(pred, taus, target)

    return pred, {"reference": reference, "compile": torch.compile(reference, dynamic=False),
                  "triton": lambda: quantile_huber_loss_triton(pred, taus, target),
                  "triton-unrolled": lambda: quantile_huber_loss_triton(pred, taus, target, unroll=True),
                  **{f"triton:{c}": partial(quantile_huber_loss_triton, pred, taus, target, **parse_config(c))
                     for c in configs}}


def _same(a, b) -> bool:
    a, b = (a if isinstance(a, (tuple, list)) else (a,)), (b if isinstance(b, (tuple, list)) else (b,))
    return len(a) == len(b) and all(torch.allclose(x, y, rtol=1e-4, atol=1e-8) for x, y in zip(a, b))


def graph_row(make_out, params, mode, device, blocks, **fields) -> dict:
    """Time the mode as graph replays and check one replay's output against an eager call."""
    row = dict(fields, mode=mode, launch="graph")
    try:
        replay = _graphed(_modes(make_out, params)[mode])
        timing = timeit(replay, True, blocks=blocks)
        replay()
        torch.cuda.synchronize(device)
        row.update(median_us=timing.median_us, p10_us=timing.p10_us, p90_us=timing.p90_us, calls=timing.calls,
                   grads_match_eager=_same(replay.outputs, _modes(make_out, params)[mode]()))
    except Exception as e:  # noqa: BLE001 - recorded
        row["error"] = error_text(e)
    return row


def legacy_case(op: str, kept: str, device, B: int, K: int) -> str:
    """Capture fwd + bwd of op after making a forward through the same leaves on the `kept` stream
    and keeping it alive ("none": no such forward): "captured", or the first error."""
    if op == "quantile_huber":
        pred, providers = qh_case(device, B, K, seed=1)
        make_out, params = providers["reference"], [pred]
    else:
        z1, z2 = (torch.randn(B, K, device=device).requires_grad_() for _ in range(2))
        make_out, params = (lambda: tail_mean_ref(z1, z2)), [z1, z2]
    stale = None
    if kept == "default":
        stale = make_out()  # its AccumulateGrad nodes record the default stream
    elif kept == "side":
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            stale = make_out()
        torch.cuda.synchronize()
    try:
        _graphed(_modes(make_out, params)["full"])
        return "captured"
    except Exception as e:  # noqa: BLE001 - the finding
        return error_text(e)
    finally:
        del stale


def legacy_diagnosis(device, B: int, K: int) -> list[dict]:
    """legacy_case for quantile_huber and tail_mean, each kept-forward variant in a fresh process."""
    out = []
    for op in ("quantile_huber", "tail_mean"):
        for kept in KEPT:
            cmd = [sys.executable, "-m", "bench.studies.qh_graph_check", "--legacy-case", op, kept,
                   "--device", str(device), "--batch-size", str(B), "--k", str(K)]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            result = (json.loads(lines[-1])["result"] if lines else
                      f"no result (exit {proc.returncode}): {' '.join(proc.stderr.strip().splitlines()[-1:])}")
            out.append({"op": op, "forward_kept_on": kept, "result": result})
            print(out[-1], flush=True)
    return out


def verdict(rows, goal_us: float, cuda: bool) -> dict:
    full = {r["provider"]: r["median_us"] for r in rows
            if r["mode"] == "full" and r["launch"] == "graph" and "median_us" in r}
    failed = sorted(r["provider"] for r in rows if r["mode"] == "full" and r["launch"] == "graph" and "error" in r)
    if not cuda:
        summary = "no CUDA device here: eager rows only; run on a GPU for the graphed figures"
    elif not full:
        summary = f"no provider's fwd + bwd was captured (failed: {', '.join(failed)})"
    else:
        best = min(full, key=full.get)
        summary = (f"best graphed fwd + bwd: {best} {full[best]:.1f} us, "
                   f"{'within' if full[best] <= goal_us else 'above'} the goal of {goal_us:g} us")
    return {"graph_full_us": full, "meets_goal": {p: t <= goal_us for p, t in full.items()},
            "capture_failed": failed, "summary": summary}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=16_384)
    p.add_argument("--k", type=int, default=32, help="K = K' (predicted and target quantiles)")
    p.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    p.add_argument("--configs", nargs="+", default=[], metavar="ROWSxWARPS[u]",
                   help="also the kernel at these launch settings (16x2: 16 rows per program, 2 warps; u: unrolled)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--blocks", type=int, default=30, help="timed blocks of 10 calls per row")
    p.add_argument("--goal-us", type=float, default=20.0)
    p.add_argument("--legacy", action="store_true", help="also reproduce the old harness's capture (GPU)")
    p.add_argument("--out", type=Path, help="JSON file to write")
    p.add_argument("--legacy-case", nargs=2, metavar=("OP", "KEPT"), help=argparse.SUPPRESS)  # one, in this process
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    B, K = args.batch_size, args.k
    if args.legacy_case:
        op, kept = args.legacy_case
        result = {"op": op, "forward_kept_on": kept, "result": legacy_case(op, kept, device, B, K)}
        print(json.dumps(result))
        return result
    result = {"device": device_name(device), "provenance": provenance(device),
              "shape": {"B": B, "K": K, "K_target": K}, "goal_us": args.goal_us}
    if args.legacy and cuda:
        result["legacy"] = legacy_diagnosis(device, B, K)
    pred, providers = qh_case(device, B, K, configs=args.configs)
    rows = []
    for provider in [*args.providers, *(f"triton:{c}" for c in args.configs)]:
        make_out = providers[provider]
        for mode in args.modes:
            rows.append(_measure(_modes(make_out, [pred])[mode], device, False, blocks=args.blocks,
                                 provider=provider, mode=mode))
            rows[-1]["grads_match_eager"] = None
            if cuda:
                rows.append(graph_row(make_out, [pred], mode, device, args.blocks, provider=provider))
            for r in rows[-2 if cuda else -1:]:
                print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    for r in rows:
        if "median_us" in r and r["mode"] == "full" and r["launch"] == "graph":
            r["meets_goal"] = r["median_us"] <= args.goal_us
    result["rows"] = rows
    result["verdict"] = verdict(rows, args.goal_us, cuda)
    print(json.dumps(result["verdict"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
