"""The differentiable chain's kernels (kernels.chain_grad) by rows per program: forward + backward of
the fused chain at HalfCheetah's shapes (S 17, A 6, hidden 256, T 5) for each block_m, against the
per-step reference chain, replayed from a CUDA graph. Says which block size the forward should use
at each batch (one program per block_m states: at batch 256 and block_m 32 only 8 of an H200's 132
SMs work).

    python -m bench.studies.chain_grad_blocks --out bench/results/chain-grad-blocks-H200.json
"""

from __future__ import annotations

import argparse
import json

import torch

from ramac.diffusion import Diffusion
from ramac.kernels.chain_grad import denoise_chain_ref, denoise_chain_triton
from ramac.nets import Denoiser
from ramac.perf.bench import error_text, timeit
from ramac.utils import provenance


def case(B, S=17, A=6, H=256, T=5, device="cuda"):
    torch.manual_seed(0)
    model = Denoiser(S, A, H).to(device)
    diffusion = Diffusion(T, "vp", max_action=1.0).to(device)
    state = torch.randn(B, S, device=device)
    noise = torch.randn(T + 1, B, A, device=device)
    l1, l2, l3 = model.mid[0], model.mid[2], model.mid[4]
    params = [l1.weight, l1.bias, l2.weight, l2.bias, l3.weight, l3.bias, model.final.weight, model.final.bias]
    return model, diffusion, state, noise, params


def time_chain(B, fn, precision):
    model, diffusion, state, noise, params = case(B)
    g_out = torch.randn(B, noise.shape[2], device=state.device)

    def full():
        t_emb = model.time_mlp(torch.arange(diffusion.T, device=state.device))
        with torch.autocast("cuda", torch.bfloat16, enabled=precision == "bf16"):
            out = fn(state, noise, *params, t_emb, diffusion.coefs, 1.0)
        return torch.autograd.grad(out, params, g_out)

    return timeit(full, True, graph=True).median_us


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096, 16_384])
    p.add_argument("--blocks", type=int, nargs="+", default=[16, 32])
    p.add_argument("--precisions", nargs="+", default=["bf16", "tf32"])
    args = p.parse_args(argv)
    rows = []
    for B in args.batches:
        for precision in args.precisions:
            cases = [("reference", denoise_chain_ref)] + [
                (f"fused bm={bm}", lambda *a, bm=bm, precision=precision: denoise_chain_triton(
                    *a, precision=precision, block_m=bm)) for bm in args.blocks]
            for name, fn in cases:
                row = dict(batch=B, precision=precision, provider=name)
                try:
                    row["median_us"] = time_chain(B, fn, precision)
                except Exception as e:  # noqa: BLE001
                    row["error"] = error_text(e)
                rows.append(row)
                print(row, flush=True)
    with open(args.out, "w") as f:
        json.dump({"command": "python -m bench.studies.chain_grad_blocks " + " ".join(argv or []),
                   "provenance": provenance(torch.device("cuda")), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
