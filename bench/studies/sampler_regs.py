"""Registers and spills of the chain sampler's one-block kernel (`_chain_kernel`) per launch
configuration, compiled for a GPU on the CPU (no GPU needed): which configurations are worth timing
with bench/studies/sweep_sampler.py.

    python -m bench.studies.sampler_regs [--arch 90] [--configs 64,32,8,2 128,32,16,2 ...] [--lean 0 1]

Each configuration (BM, BN, warps, stages) is compiled as native/gen_kernels.py compiles it (bf16,
HalfCheetah's H = 256, S_P = 32, A_P = 16, noise given) and assembled by the ptxas Triton itself uses,
with -v; one line each: registers per thread, bytes spilled, the tensor-core instructions in its PTX
(wgmma for Hopper's warp-group products, mma.sync otherwise) and its shared memory.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT = ["16,64,8,3", "64,64,8,2", "64,32,8,2", "64,32,16,2", "128,32,8,2", "128,32,16,2", "128,64,16,2"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--configs", nargs="+", default=DEFAULT, help="BM,BN,warps,stages each")
    ap.add_argument("--lean", type=int, nargs="+", default=[0, 1], choices=(0, 1),
                    help="the kernel's layer order (LEAN: kernels.sampler.lean_enabled); default both")
    args = ap.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "native"))
    import gen_kernels
    import triton
    import triton.backends.nvidia.compiler as nvidia
    from triton.backends.compiler import GPUTarget

    ptxas = nvidia.get_ptxas(args.arch).path
    fn = gen_kernels.kernel("one-block")[0]
    print(f"_chain_kernel, bf16, H=256, S_P=32, A_P=16, sm_{args.arch}, triton {triton.__version__}")
    print("| lean | BM | BN | warps | stages | registers | spill stores (bytes) | wgmma | mma.sync | shared (bytes) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for lean, config in ((lean, config) for lean in args.lean for config in args.configs):
        bm, bn, warps, stages = (int(v) for v in config.split(","))
        constexprs = dict(H=256, A_P=16, S_P=32, BM=bm, BN=bn, HAS_NOISE=True, DOT_PRECISION="tf32", UPCAST=False,
                          STACKED=False, LEAN=bool(lean))
        src = triton.compiler.ASTSource(fn=fn, signature=gen_kernels.signature("bf16", "one-block"),
                                        constexprs=constexprs)
        k = triton.compile(src, target=GPUTarget("cuda", args.arch, 32),
                           options={"num_warps": warps, "num_stages": stages, "enable_fp_fusion": True})
        ptx = k.asm["ptx"]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "k.ptx"
            path.write_text(ptx)
            arch = re.search(r"\.target\s+(sm_\w+)", ptx).group(1)
            done = subprocess.run([ptxas, f"-arch={arch}", "-v", str(path), "-o", str(Path(tmp) / "k.o")],
                                  capture_output=True, text=True)
        regs = re.findall(r"Used (\d+) registers", done.stderr)
        spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
        if done.returncode or not regs:
            print(f"| {lean} | {bm} | {bn} | {warps} | {stages} | ptxas failed: {done.stderr.strip()[-120:]} |||||")
            continue
        print(f"| {lean} | {bm} | {bn} | {warps} | {stages} | {regs[0]} | {spills[0] if spills else '?'} | "
              f"{ptx.count('wgmma.mma_async')} | {ptx.count('mma.sync')} | {k.metadata.shared} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
