"""Run the chain sampler a few times for Nsight Compute (GPU):

    ncu --set full -k regex:_chain_kernel -s 2 -c 1 python -m bench.studies.profile_sampler --batch-size 65536
"""

import argparse

import torch

from ramac.diffusion import Diffusion
from ramac.kernels.sampler import sample_chain_triton
from ramac.nets import Denoiser


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=65_536)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--block-m", type=int)
    ap.add_argument("--block-n", type=int)
    ap.add_argument("--warps", type=int)
    ap.add_argument("--stages", type=int)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    p = Diffusion(5, "vp").cuda().pack(Denoiser(17, 6, 256).cuda())
    state = torch.randn(args.batch_size, 17, device="cuda")
    for _ in range(4):
        sample_chain_triton(p, state, seed=1, precision=args.precision, block_m=args.block_m, block_n=args.block_n,
                            num_warps=args.warps, num_stages=args.stages)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
