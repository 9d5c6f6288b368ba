"""The fused IQN critic op (kernels.iqn_critic) on a GPU: parity with the reference op at the
training shapes (values, all gradients, fp32 and bf16, one and two stacked critics), bitwise
repeatability of the backward, and the time of forward + backward against the reference op and
torch.compile of it, eager and replayed from a CUDA graph.

    python -m bench.studies.iqn_critic_gpu --out bench/results/iqn-critic-H200.json

Shapes: the trunk and head of halfcheetah-medium-replay (K 16, emb 64) and -expert (K 32, emb 128)
at batch 256 (the training update) and 16,384; hidden 256, n_cos = K (SPEC 2.6).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ramac.kernels.iqn_critic import iqn_quantiles_ref, iqn_quantiles_triton
from ramac.perf.bench import timeit
from ramac.utils import provenance

SHAPES = [  # (B, K, emb, hidden)
    (256, 16, 64, 256),
    (256, 32, 128, 256),
    (16_384, 16, 64, 256),
    (16_384, 32, 128, 256),
]


def inputs(B, K, E, H, C, dtype, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)

    def r(*shape, scale=0.1):
        return (torch.randn(*shape, generator=g, device=device) * scale).requires_grad_()

    lead = (C,) if C > 1 else ()
    trunk = torch.relu(torch.randn(*lead, B, E, generator=g, device=device)).to(dtype).requires_grad_()
    taus = torch.rand(B, K, generator=g, device=device)
    params = [r(*lead, E, K), r(*lead, E), r(*lead, H, E), r(*lead, H), r(*lead, 1, H, scale=0.01), r(*lead, 1)]
    dq = torch.randn(*lead, B, K, generator=g, device=device)
    return trunk, taus, params, dq


def exact_ref(trunk, taus, cos_w, cos_b, head_w, head_b, out_w, out_b):
    """The same math in the inputs' own dtype throughout (the reference op keeps its output layer
    in fp32 whatever the inputs: this one does not, for an fp64 yardstick)."""
    if trunk.dim() == 3:
        return torch.stack([exact_ref(trunk[c], taus, cos_w[c], cos_b[c], head_w[c], head_b[c], out_w[c], out_b[c])
                            for c in range(trunk.shape[0])])
    freqs = torch.pi * torch.arange(cos_w.shape[-1], dtype=trunk.dtype, device=trunk.device)
    phi = torch.relu(torch.cos(taus.to(trunk.dtype)[..., None] * freqs) @ cos_w.T + cos_b)
    h = torch.relu((trunk[:, None, :] * phi) @ head_w.T + head_b)
    return (h @ out_w.T + out_b).squeeze(-1)


def grads(op, trunk, taus, params, dq):
    q = op(trunk, taus, *params)
    return [q.detach()] + list(torch.autograd.grad(q, [trunk, *params], dq))


def parity(device) -> list[dict]:
    rows = []
    for B, K, E, H in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            for C in (1, 2):
                trunk, taus, params, dq = inputs(B, K, E, H, C, dtype, device)
                got = grads(iqn_quantiles_triton, trunk, taus, params, dq)
                again = grads(iqn_quantiles_triton, trunk, taus, params, dq)
                want = grads(iqn_quantiles_ref, trunk, taus, params, dq)
                # the yardstick: the reference one precision up (fp64 for fp32 inputs, fp32 for bf16), so
                # the error of torch's own op in the inputs' dtype is measured beside the kernel's
                up = torch.float64 if dtype == torch.float32 else torch.float32
                t_up = trunk.detach().to(up).requires_grad_()
                p_up = [p.detach().to(up).requires_grad_() for p in params]
                exact = grads(exact_ref, t_up, taus.to(up), p_up, dq.to(up))
                names = ["q", "trunk", "cos_w", "cos_b", "head_w", "head_b", "out_w", "out_b"]
                errs = {}
                for n, a, b, e in zip(names, got, want, exact):
                    scale = float(e.float().abs().max().clamp_min(1e-12))
                    errs[n] = {"kernel_vs_exact": float((a.double() - e.double()).abs().max()) / scale,
                               "torch_vs_exact": float((b.double() - e.double()).abs().max()) / scale}
                rows.append({"B": B, "K": K, "emb": E, "hidden": H, "C": C, "dtype": str(dtype).split(".")[-1],
                             "rel_err": errs, "bitwise_repeatable": all(torch.equal(a, b) for a, b in zip(got, again))})
                worst = max(v["kernel_vs_exact"] for v in errs.values())
                print(f"parity B={B} K={K} emb={E} C={C} {rows[-1]['dtype']}: worst rel err {worst:.2e} "
                      f"(torch {max(v['torch_vs_exact'] for v in errs.values()):.2e}), "
                      f"repeatable {rows[-1]['bitwise_repeatable']}", flush=True)
    return rows


def timings(device, blocks: int = 30) -> list[dict]:
    rows = []
    for B, K, E, H in [s for s in SHAPES if s[:2] != (16_384, 16)]:
        for dtype in (torch.bfloat16, torch.float32):  # bf16 first: the kernel's case
            for C in (1, 2):
                if dtype == torch.float32 and B > 256 and C > 1:
                    continue  # the fp32 kernel took 36-72 ms here (2026-12-02): nothing to learn for the time
                trunk, taus, params, dq = inputs(B, K, E, H, C, dtype, device)
                providers = [("reference", iqn_quantiles_ref), ("triton", iqn_quantiles_triton)]
                if C == 1:  # one compilation per shape and dtype (each takes a while)
                    providers.insert(1, ("compile", torch.compile(iqn_quantiles_ref, dynamic=False)))
                for name, op in providers:
                    for graph in (False, True) if device.type == "cuda" else (False,):
                        def full():
                            q = op(trunk, taus, *params)
                            return torch.autograd.grad(q, [trunk, *params], dq)

                        row = {"B": B, "K": K, "emb": E, "hidden": H, "C": C, "dtype": str(dtype).split(".")[-1],
                               "provider": name, "graph": graph, "mode": "fwd+bwd"}
                        try:
                            t = timeit(full, device.type == "cuda", graph=graph, blocks=blocks)
                            row["median_us"], row["p10_us"], row["p90_us"] = t.median_us, t.p10_us, t.p90_us
                        except Exception as e:  # a provider that cannot be captured is a result too
                            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                        rows.append(row)
                        print(f"time B={B} K={K} C={C} {row['dtype']} {name} graph={graph}: "
                              f"{row.get('median_us', row.get('error'))}", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--skip-timing", action="store_true")
    a = p.parse_args(argv)
    device = torch.device("cuda")
    result = {"command": "python -m bench.studies.iqn_critic_gpu " + " ".join(sys.argv[1:] if argv is None else argv),
              "provenance": provenance(device), "parity": parity(device)}
    if not a.skip_timing:
        result["timings"] = timings(device)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
