"""The chain sampler over several programs (kernels/sampler_split.py: the tile kernel, and at batch 1
the GEMV kernel) against the one-block kernel, on the GPU: programs x warps per batch size and
precision, each launch graphed (HalfCheetah shapes, T = 5, H = 256). Picks default_programs and
the warps from the measurements.

    python -m bench.studies.split_sampler --out FILE.jsonl [--batch-size 1 4 16]

Appends one JSON line per case as it goes and prints the best split case per batch and precision
beside the one-block kernel's time.
"""

import argparse
import itertools
import json

import torch

from ramac.diffusion import Diffusion
from ramac.kernels import sampler
from ramac.nets import Denoiser
from ramac.perf.bench import timeit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--precision", nargs="+", default=["bf16", "tf32"])
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    p = Diffusion(args.steps, "vp").cuda().pack(Denoiser(17, 6, 256).cuda())
    seed = torch.tensor([1], dtype=torch.int64, device="cuda")
    best, one_block = {}, {}
    with open(args.out, "a") as log, torch.no_grad():
        for B, prec in itertools.product(args.batch_size, args.precision):
            state = torch.randn(B, 17, device="cuda")
            cases = [(False, None, None)] + [(kind, n, w) for kind in (("tile", "gemv") if B == 1 else ("tile",))
                                                  for n, w in itertools.product((2, 4, 8, 16), (4, 8))]
            for kind, programs, warps in cases:
                row = dict(batch=B, T=args.steps, precision=prec, programs=programs, warps=warps,
                           kernel=kind or "one-block")
                try:
                    fn = (lambda: sampler.sample_chain_triton(  # noqa: E731
                        p, state, seed=seed, precision=prec, split=kind, programs=programs, num_warps=warps))
                    t = timeit(fn, True, graph=True, blocks=10, per_block=20, warmup=5)
                    row.update(us=t.median_us)
                    if not kind:
                        one_block[(B, prec)] = t.median_us
                    elif (B, prec, kind) not in best or t.median_us < best[(B, prec, kind)]["us"]:
                        best[(B, prec, kind)] = row
                except Exception as e:  # noqa: BLE001 - recorded
                    row["error"] = str(e).splitlines()[0][:160]
                log.write(json.dumps(row) + "\n")
                log.flush()
    for (B, prec, kind), row in best.items():
        print(f"batch {B} {prec}: best split {kind} {row['us']:.1f} us (programs {row['programs']}, warps "
              f"{row['warps']}); one block {one_block.get((B, prec), float('nan')):.1f} us")


if __name__ == "__main__":
    main()
