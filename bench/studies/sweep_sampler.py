"""Sweep launch configurations of the chain sampler on the GPU (block sizes, warps, stages).

    python -m bench.studies.sweep_sampler --out FILE.jsonl [--batch-size 1 65536] [--block-m 16 64] \
        [--block-n 32 64] [--warps 4 8] [--stages 1 2 3] [--lean 0 1]

Appends one JSON line per configuration as it goes (so a cut-off run keeps what it
measured) and prints the best configuration per batch size and precision.
"""

import argparse
import itertools
import json
import os

import torch

from ramac.perf.bench import timeit
from ramac.diffusion import Diffusion
from ramac.kernels import sampler
from ramac.nets import Denoiser


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[1, 65_536])
    ap.add_argument("--precision", nargs="+", default=["bf16"])
    ap.add_argument("--block-m", type=int, nargs="+", help="rows per program to try (default: 16 for up to 16 "
                    "states, else 16, 32, 64 and 128: at a few hundred states 16 rows spread the chain over more SMs)")
    ap.add_argument("--block-n", type=int, nargs="+", default=[32, 64], help="weight-tile widths (default: 32 64)")
    ap.add_argument("--warps", type=int, nargs="+", default=[4, 8], help="warps per program (default: 4 8; 16 gives "
                    "a 128-row program's activations 512 threads at large batch)")
    ap.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3], help="pipeline stages (default: 1 2 3)")
    ap.add_argument("--lean", type=int, nargs="+", default=[0], choices=(0, 1),
                    help="the kernel's layer order: 0 the default, 1 RAMAC_SAMPLER_LEAN's (default: 0)")
    args = ap.parse_args()
    torch.manual_seed(0)
    p = Diffusion(5, "vp").cuda().pack(Denoiser(17, 6, 256).cuda())
    seed = torch.tensor([1], dtype=torch.int64, device="cuda")
    best = {}
    with open(args.out, "a") as log:
        for B in args.batch_size:
            state = torch.randn(B, 17, device="cuda")
            bms = args.block_m or ((16,) if B <= 16 else (16, 32, 64, 128))
            for bm, bn, nw, ns, prec, lean in itertools.product(bms, args.block_n, args.warps, args.stages,
                                                                args.precision, args.lean):
                row = dict(batch=B, bm=bm, bn=bn, warps=nw, stages=ns, precision=prec, lean=lean)
                os.environ["RAMAC_SAMPLER_LEAN"] = str(lean)  # read at each launch
                try:
                    fn = lambda: sampler.sample_chain_triton(  # noqa: E731
                        p, state, seed=seed, precision=prec, block_m=bm, block_n=bn, num_warps=nw, num_stages=ns)
                    t = timeit(fn, True, blocks=8, per_block=5, warmup=3)
                    row.update(us=t.median_us, actions_per_s=B / t.median_us * 1e6)
                    key = (B, prec)
                    if key not in best or row["us"] < best[key]["us"]:
                        best[key] = row
                except Exception as e:  # noqa: BLE001
                    row["error"] = str(e).splitlines()[0][:120]
                log.write(json.dumps(row) + "\n")
                log.flush()
    for row in best.values():
        print("best", row)


if __name__ == "__main__":
    main()
