"""Compile the samplers' Triton kernels for an H100/H200 (sm_90) without a GPU: Triton's compiler
and ptxas run on the CPU. Catches what the interpreter cannot (it runs no PTX): type errors in
the compiled paths, e.g. a tf32-only operation reached with bf16 operands. Run by
test_compile_sm90.py in a subprocess (the test session interprets every @triton.jit function).

    python tests/kernels/compile_sm90.py   ->  one line per (kernel, precision): "ok" or the error
"""

import sys

import triton
from triton.backends.compiler import GPUTarget

from ramac.kernels.chain_grad import _chain_bwd_kernel, _chain_fwd_kernel
from ramac.kernels.sampler import _chain_kernel
from ramac.kernels.sampler_split import _chain_split_gemv_kernel, _chain_split_kernel
from ramac.kernels.student import _student_kernel


def _signature(names, dot, ints, floats, constexprs):
    # seed_ptr as the launchers pass it: the seed tensor (int64), or with noise given the output
    # tensor as a placeholder (fp32: the kernel must not type the Philox branch then)
    seed = "*fp32" if constexprs.get("HAS_NOISE") or constexprs.get("HAS_Z") else "*i64"
    sig = {}
    for name in names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in ints:
            sig[name] = "i32"
        elif name in floats:
            sig[name] = "fp32"
        elif name == "seed_ptr":
            sig[name] = seed
        elif name == "bar_ptr":
            sig[name] = "*i32"
        else:  # weight matrices in the dot dtype, every other pointer fp32
            sig[name] = dot if name.startswith("w") else "*fp32"
    return sig


def dot_of(precision: str) -> str:
    return "*bf16" if precision == "bf16" else "*fp32"


def cases():
    for precision in ("bf16", "tf32", "fp32"):
        tl_precision = "ieee" if precision == "fp32" else "tf32"
        for noise in (False, True):  # Philox noise from the seed, or noise given
            tag = "-noise" if noise else ""
            chain = dict(H=256, A_P=16, S_P=32, BM=16, BN=64 if precision == "bf16" else 32, HAS_NOISE=noise,
                         DOT_PRECISION=tl_precision, UPCAST=False)
            yield "chain" + tag, precision, _chain_kernel, chain, ("B", "S", "A", "T"), ("max_action",), (4, 2)
            split = dict(H=256, A_P=16, S_P=32, BM=16, HC=32, NPROG=8, HAS_NOISE=noise, DOT_PRECISION=tl_precision,
                         UPCAST=False)
            yield ("chain-split" + tag, precision, _chain_split_kernel, split, ("B", "S", "A", "T"), ("max_action",),
                   (8, 1))
            gemv = dict(H=256, A_P=16, S_P=32, HC=32, NPROG=8, HAS_NOISE=noise)
            yield ("chain-split-gemv" + tag, precision, _chain_split_gemv_kernel, gemv, ("S", "A", "T"),
                   ("max_action",), (8, 1))
        stacked = dict(H=256, A_P=16, S_P=32, BM=16, BN=64 if precision == "bf16" else 32, HAS_NOISE=True,
                       DOT_PRECISION=tl_precision, UPCAST=False, STACKED=True)  # seeds stacked
        yield "chain-stacked", precision, _chain_kernel, stacked, ("B", "S", "A", "T"), ("max_action",), (4, 2)
        grad = dict(H=256, A_P=16, S_P=32, BM=16, BN=32, PRECISION=tl_precision, UPCAST=False, STACKED=True)
        stages = 2 if precision == "bf16" else 1
        yield ("chain-fwd-stacked", precision, _chain_fwd_kernel, grad, ("B", "S", "A", "T"), ("max_action",),
               (8, stages))
        grad = {k: v for k, v in grad.items() if k != "S_P"}
        yield ("chain-bwd-stacked", precision, _chain_bwd_kernel, grad, ("B", "A", "T"), ("max_action",),
               (8, stages))
        student = dict(L=4, FIRST=1, D_P=32, H=512, A_P=16, BM=32, BN=32 if precision == "bf16" else 16,
                       BK=32 if precision == "bf16" else 16, HAS_Z=True, DOT_PRECISION=tl_precision, UPCAST=False)
        yield "student", precision, _student_kernel, student, ("B", "S", "A"), ("max_action",), (8, 2)


def main() -> int:
    target, bad = GPUTarget("cuda", 90, 32), 0
    for name, precision, kernel, constexprs, ints, floats, (warps, stages) in cases():
        src = triton.compiler.ASTSource(fn=kernel, constexprs=constexprs,
                                        signature=_signature(kernel.arg_names, dot_of(precision), ints, floats,
                                                             constexprs))
        try:
            triton.compile(src, target=target, options={"num_warps": warps, "num_stages": stages})
            print(f"{name} {precision} ok")
        except Exception as e:  # noqa: BLE001 - reported
            bad += 1
            print(f"{name} {precision} FAILED: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
