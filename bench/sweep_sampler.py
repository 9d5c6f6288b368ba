"""Sweep launch configurations of the chain sampler on the GPU (block sizes, warps, stages).

    python bench/sweep_sampler.py [--out FILE]

Prints a table of median times per configuration for batch 1 and a large batch.
"""

import argparse
import itertools
import json

import torch

from ramac.bench import timeit
from ramac.diffusion import Diffusion
from ramac.kernels import sampler
from ramac.nets import Denoiser


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 65_536])
    args = ap.parse_args()
    torch.manual_seed(0)
    p = Diffusion(5, "vp").cuda().pack(Denoiser(17, 6, 256).cuda())
    seed = torch.tensor([1], dtype=torch.int64, device="cuda")
    rows = []
    for B in args.batch:
        state = torch.randn(B, 17, device="cuda")
        configs = itertools.product((16, 32, 64, 128), (32, 64, 128), (4, 8), ("bf16", "tf32"))
        for bm, bn, nw, prec in configs:
            if B <= 16 and bm > 16:
                continue
            try:
                t = timeit(lambda: sample_chain(p, state, seed, prec, bm, bn, nw), True, blocks=10)
                rows.append(dict(batch=B, bm=bm, bn=bn, warps=nw, precision=prec, us=t.median_us,
                                 actions_per_s=B / t.median_us * 1e6))
            except Exception as e:  # noqa: BLE001
                rows.append(dict(batch=B, bm=bm, bn=bn, warps=nw, precision=prec, error=str(e)[:120]))
            print(rows[-1], flush=True)
    best = {}
    for r in rows:
        if "us" in r and (r["batch"], r["precision"]) not in best or ("us" in r and r["us"] < best[(r["batch"], r["precision"])]["us"]):
            best[(r["batch"], r["precision"])] = r
    print("best:", *best.values(), sep="\n")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


def sample_chain(p, state, seed, prec, bm, bn, nw):
    return sampler.sample_chain_triton(p, state, seed=seed, precision=prec, block_m=bm, block_n=bn, num_warps=nw)


if __name__ == "__main__":
    main()
