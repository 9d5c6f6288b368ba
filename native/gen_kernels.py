"""Compile the package's whole-chain sampler (`_chain_kernel`, kernels/sampler.py) ahead of time
and write a C source that embeds the cubins with a table of the variants (run by CMake).

    python native/gen_kernels.py --out-dir build/generated --arch 90 --hidden 256 --state-pad 32 \
        --action-pad 16 --precision bf16

Variants: the split chain for one state (kernels/sampler_split.py: several programs share the
hidden layer; `--one-state gemv`, the default, compiles `_chain_split_gemv_kernel`, its CUDA-core
variant, with fp32 weights (the library uploads an fp32 copy of the dot weights beside a bf16
build's) and launched as sample_chain launches it; `--one-state tile` compiles `_chain_split_kernel`
with B = 1 as the Python sampler's JIT takes it; both take the same run-time arguments; `--one-state
cta` compiles native/src/one_state.cu with nvcc instead: the whole chain in one thread block with
W2 and W3 on chip in fp16, H = 256 only; `--one-state mma` the same kernel with its hidden layers
on the tensor cores, RAMAC_CTA_MMA), then
every launch configuration `_launch_config` picks for some batch size on a GPU of `--sms` SMs
(bf16: 16-row programs while one wave of them covers the batch, then 64-row ones, then 64-row ones
with narrower weight tiles), each with HAS_NOISE true (noise read from a (T + 1, B, A)
buffer) and false (Philox noise in the kernel from a device seed). The library launches the first
variant that serves a batch. T, B, S and A stay run-time arguments; H, A_P and S_P are compiled in.

Why not Triton's own AOT tools (triton/tools/compile.py + link.py): compile.py executes the
kernel's file as a script, which fails on kernels/sampler.py's package-relative imports; its C
template calls exit() on errors, loads on device 0 behind the caller's back and refuses kernels
whose ABI grows (global or profile scratch); and the template's arguments changed between Triton
releases. triton.compile with an explicit GPUTarget is the API under both (3.6 and 3.9): it
compiles on a machine without a GPU, and the library (native/src) owns loading, errors and
launches through the CUDA driver API.

The launch ABI is read from the compiled kernel, not assumed from the Triton version: the PTX
entry's parameter list is the kernel's 19 run-time arguments followed by the trailing pointers a
Triton release appends (global scratch since 3.3, profile scratch since 3.5); the library passes
NULL for each, which is what Triton's launcher passes when their sizes are 0 (checked here).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # the interpreter (set by the test suite) cannot compile

# the kernel's run-time arguments in order with their Triton types ("dot": the weights' tensor-core dtype)
RUNTIME_ARGS = (
    ("state_ptr", "*fp32"), ("noise_ptr", "*fp32"), ("out_ptr", "*fp32"),
    ("w_x_ptr", "dot"), ("w_s_ptr", "dot"), ("c_time_ptr", "*fp32"),
    ("w2_ptr", "dot"), ("b2_ptr", "*fp32"), ("w3_ptr", "dot"), ("b3_ptr", "*fp32"),
    ("w_out_ptr", "dot"), ("b_out_ptr", "*fp32"), ("coef_ptr", "*fp32"), ("seed_ptr", "*i64"),
    ("B", "i32"), ("S", "i32"), ("A", "i32"), ("T", "i32"), ("max_action", "fp32"),
)
# the split kernels': two more pointers (their partials scratch and barrier state, which the library
# allocates), and no B: compiled for one state (the tile kernel with B = 1, as the Python JIT
# specialises it; the GEMV kernel serves one state only)
SPLIT_ARGS = RUNTIME_ARGS[:14] + (("part_ptr", "*fp32"), ("bar_ptr", "*i32")) + RUNTIME_ARGS[15:]
# pointers into the weights the library allocates (256-byte aligned): compiled with 16-byte divisibility
# as the JIT would; the caller's state, noise, action and seed pointers get no alignment assumption
ALIGNED = {"w_x_ptr", "w_s_ptr", "c_time_ptr", "w2_ptr", "b2_ptr", "w3_ptr", "b3_ptr", "w_out_ptr", "b_out_ptr",
           "coef_ptr", "part_ptr", "bar_ptr"}
PTX_KIND = {"*": "u64", "i32": ("u32", "s32"), "fp32": "f32"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, required=True, help="where ramac_kernels.c and ramac_kernels.json go")
    p.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 for sm_90 (default: 90)")
    p.add_argument("--hidden", type=int, default=256, help="denoiser width H (default: 256)")
    p.add_argument("--sms", type=int, default=132, help="SMs of the GPU the batch-size ranges are set for "
                   "(default: 132, an H100/H200 SXM)")
    p.add_argument("--state-pad", type=int, default=32, help="S_P: state dim padded, a power of two >= 16")
    p.add_argument("--action-pad", type=int, default=16, help="A_P: action dim padded, a power of two >= 16")
    p.add_argument("--precision", default="bf16", choices=("bf16", "tf32", "fp32"), help="tensor-core inputs")
    p.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="compiles run side by side")
    p.add_argument("--one-state", default="gemv", choices=("gemv", "tile", *CTA_KINDS),
                   help="the kernel for one state: the split Triton kernels gemv (default, fp32 weights: 32.6 us "
                        "against tile's 69 us on an H200, graphed from Python) or tile, or cta (native/src/"
                        "one_state.cu: one thread block, fp16 weights on chip; H = 256; compiled with nvcc), or "
                        "mma (cta with its hidden layers on the tensor cores)")
    p.add_argument("--nvcc", default=None, help="nvcc for --one-state cta or mma (default: the one on PATH)")
    return p.parse_args(argv)


def check_shapes(a) -> None:
    for name, v in (("--hidden", a.hidden), ("--state-pad", a.state_pad), ("--action-pad", a.action_pad)):
        if v < 16 or v & (v - 1):
            raise SystemExit(f"gen_kernels: {name} must be a power of two >= 16, got {v}")
    if a.sms < 1:
        raise SystemExit(f"gen_kernels: --sms must be >= 1, got {a.sms}")
    if a.one_state in CTA_KINDS and a.hidden != CTA_HIDDEN:
        raise SystemExit(f"gen_kernels: --one-state {a.one_state} is written for --hidden {CTA_HIDDEN}, got "
                         f"{a.hidden}; build with -DRAMAC_ONE_STATE=gemv")
    if a.one_state in CTA_KINDS and a.action_pad > CTA_THREADS // 32:
        raise SystemExit(f"gen_kernels: --one-state {a.one_state} computes each action dimension on one of its "
                         f"{CTA_THREADS // 32} warps, so --action-pad must be at most {CTA_THREADS // 32}, got "
                         f"{a.action_pad}; build with -DRAMAC_ONE_STATE=gemv")


# --one-state cta (and mma): native/src/one_state.cu, its two entries (noise given, Philox from the
# seed), its launch (one block of CTA_THREADS threads, 18 parameters: the run-time arguments with W2
# and W3 as fp16 copies and no B) and its limits; the variant table's `programs` tells the library
# which order the fp16 copies take (CTA_PROGRAMS: [output][input] for cta, the tensor cores'
# fragment order for mma)
CTA_KINDS = ("cta", "mma")
CTA_PROGRAMS = {"cta": -1, "mma": -2}
CTA_SOURCE = Path(__file__).resolve().parent / "src" / "one_state.cu"
CTA_ENTRIES = {True: "ramac_one_state_noise", False: "ramac_one_state_seed"}
CTA_HIDDEN, CTA_THREADS, CTA_W3_SHARED_ROWS, CTA_T_MAX, CTA_PARAMS = 256, 512, 5, 128, 18


def cta_shared(hidden: int, action_pad: int, t_max: int = CTA_T_MAX) -> int:
    """one_state.cu's SHARED: W2 and W3's shared rows (fp16), w_x and w_out (fp32), two activation
    buffers, x_t, T_MAX + 1 steps of noise and T_MAX rows of 8 schedule constants. The kernel checks
    the launch gives it this much."""
    warps = CTA_THREADS // 32
    return 2 * hidden * hidden + 2 * warps * CTA_W3_SHARED_ROWS * hidden + \
        4 * (2 * action_pad * hidden + 2 * hidden + action_pad + (t_max + 1) * action_pad + t_max * 8)


def cta_command(a, nvcc: str, out: Path) -> list[str]:
    """nvcc's command line for the one-CTA kernel's cubin (the shared-memory size the library will
    launch with checked against the kernel's own at compile time)."""
    return [nvcc, "-cubin", f"-arch=sm_{a.arch}", "-O3", f"-DRAMAC_H={a.hidden}", f"-DRAMAC_A_P={a.action_pad}",
            f"-DRAMAC_S_P={a.state_pad}", f"-DRAMAC_T_MAX={CTA_T_MAX}", f"-DRAMAC_CTA_MMA={int(a.one_state == 'mma')}",
            f"-DRAMAC_EXPECT_SHARED={cta_shared(a.hidden, a.action_pad)}", str(CTA_SOURCE), "-o", str(out)]


def compile_cta(a) -> bytes:
    """The one-CTA kernel's cubin, from nvcc."""
    nvcc = a.nvcc or shutil.which("nvcc")
    if not nvcc:
        raise SystemExit(f"gen_kernels: --one-state {a.one_state} needs nvcc (the CUDA toolkit) on PATH, or "
                         f"--nvcc PATH")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "one_state.cubin"
        done = subprocess.run(cta_command(a, nvcc, out), capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"gen_kernels: nvcc failed on {CTA_SOURCE.name}:\n{done.stderr[-3000:]}")
        return out.read_bytes()


def launch_configs(precision: str, sms: int):
    """[(max_batch or None, (BM, BN, warps, stages))]: _launch_config's choices by batch size on a GPU
    of sms SMs."""
    from ramac.kernels.sampler import _launch_config

    ranges, last = [], None
    for b in range(1, 64 * sms + 2):  # its last threshold is one wave of 64-row programs; the last config holds above
        cfg = _launch_config(b, precision, sms)
        if cfg != last:
            if ranges:
                ranges[-1][0] = b - 1
            ranges.append([None, cfg])
            last = cfg
    return [(hi, cfg) for hi, cfg in ranges]


def kernel(kind: str):
    """(Triton kernel, its run-time arguments, its constexpr arguments) of a variant kind."""
    if kind == "split":
        from ramac.kernels.sampler_split import _chain_split_kernel

        return _chain_split_kernel, SPLIT_ARGS, SPLIT_CONSTEXPRS
    if kind == "gemv":
        from ramac.kernels.sampler_split import _chain_split_gemv_kernel

        return _chain_split_gemv_kernel, SPLIT_ARGS, GEMV_CONSTEXPRS
    from ramac.kernels.sampler import _chain_kernel

    return _chain_kernel, RUNTIME_ARGS, CONSTEXPRS


def signature(precision: str, kind: str = "one-block") -> dict:
    fn, runtime_args, constexprs = kernel(kind)
    # the GEMV variant reads fp32 weights whatever the build's dtype, as sample_chain hands it them
    dot = "*bf16" if precision == "bf16" and kind != "gemv" else "*fp32"
    names = [n for n, _ in runtime_args]
    runtime = [n for n in fn.arg_names if n not in constexprs]
    if runtime != names:
        raise SystemExit(f"gen_kernels: {fn.__name__}'s run-time arguments are now {runtime}, this generator "
                         f"and native/src/ramac_sampler.cpp pass {names}: update both")
    sig = {n: (dot if t == "dot" else t) for n, t in runtime_args}
    sig.update({n: "constexpr" for n in constexprs})
    return {n: sig[n] for n in fn.arg_names}


CONSTEXPRS = ("H", "A_P", "S_P", "BM", "BN", "HAS_NOISE", "DOT_PRECISION", "UPCAST", "STACKED", "LEAN")
SPLIT_CONSTEXPRS = ("B", "H", "A_P", "S_P", "BM", "HC", "NPROG", "HAS_NOISE", "DOT_PRECISION", "UPCAST")
GEMV_CONSTEXPRS = ("H", "A_P", "S_P", "HC", "NPROG", "HAS_NOISE")


def split_config(hidden: int):
    """(BM, HC, warps, stages) and the batch sizes of the split variant ("tile", one state), as the
    Python sampler launches it."""
    from ramac.kernels.sampler_split import SPLIT_AUTO_MAX_BATCH, SPLIT_MAX_BATCH, SPLIT_NUM_WARPS, default_programs

    if SPLIT_AUTO_MAX_BATCH != 1:
        raise SystemExit("gen_kernels: the split variant is compiled for one state; sample_chain now takes it for "
                         f"up to {SPLIT_AUTO_MAX_BATCH}: compile B as a run-time argument again")
    return (SPLIT_MAX_BATCH, hidden // default_programs(hidden), SPLIT_NUM_WARPS, 1), SPLIT_AUTO_MAX_BATCH


def gemv_config(hidden: int):
    """(block_m = 1, HC, warps, stages) of the GEMV variant, launched as sample_chain launches it for
    one state: fp32 weights, default_programs x SPLIT_NUM_WARPS (H200, batch 1, T = 5, graphed from
    Python: 32.6 us, against 44.0 us for bf16 weights at their best 16 x 4). block_m 1 sizes the
    library's partials scratch (2 x programs x H)."""
    from ramac.kernels.sampler_split import SPLIT_NUM_WARPS, default_programs

    return 1, hidden // default_programs(hidden), SPLIT_NUM_WARPS, 1


def compile_variant(job):
    """One cubin: (job, metadata dict, cubin bytes, PTX parameter kinds)."""
    import triton
    from triton.backends.compiler import GPUTarget

    a, kind, (bm, bn, warps, stages), has_noise = job
    fn = kernel(kind)[0]
    constexprs = dict(H=a["hidden"], A_P=a["action_pad"], S_P=a["state_pad"], BM=bm, HAS_NOISE=has_noise,
                      DOT_PRECISION="ieee" if a["precision"] == "fp32" else "tf32", UPCAST=False)
    if kind == "gemv":  # fp32 arithmetic whatever the weights' dtype: no tile, precision or interpreter settings
        constexprs = dict(H=a["hidden"], A_P=a["action_pad"], S_P=a["state_pad"], HC=bn, NPROG=a["hidden"] // bn,
                          HAS_NOISE=has_noise)
    elif kind == "split":
        constexprs.update(B=1, HC=bn, NPROG=a["hidden"] // bn)
    else:  # one seed's weights (the stacked launch is Python's)
        constexprs.update(BN=min(bn, a["hidden"]), STACKED=False, LEAN=False)
    sig = signature(a["precision"], kind)
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if n in ALIGNED}
    options = {"num_warps": warps, "num_stages": stages, "enable_fp_fusion": True}  # the JIT's default
    target = GPUTarget("cuda", a["arch"], 32)
    try:
        src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
        k = triton.compile(src, target=target, options=options)
    except Exception as e:  # noqa: BLE001 - a Triton whose attrs take another form: compile without the hints
        print(f"gen_kernels: note: compiling without alignment hints ({type(e).__name__}: {str(e)[:200]})")
        src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=constexprs)
        k = triton.compile(src, target=target, options=options)
    md = k.metadata
    meta = {"name": md.name, "shared": int(md.shared), "num_warps": int(md.num_warps),
            "num_ctas": int(getattr(md, "num_ctas", 1)),
            "global_scratch_size": int(getattr(md, "global_scratch_size", 0) or 0),
            "profile_scratch_size": int(getattr(md, "profile_scratch_size", 0) or 0),
            "launch_cooperative_grid": bool(getattr(md, "launch_cooperative_grid", False)),
            "launch_pdl": bool(getattr(md, "launch_pdl", False)), "tmem_size": int(getattr(md, "tmem_size", 0) or 0)}
    return job, meta, bytes(k.asm["cubin"]), ptx_params(k.asm["ptx"], md.name)


def ptx_params(ptx: str, name: str) -> list[str]:
    """The kinds (u64, u32, f32, ...) of the PTX entry's parameters, in order."""
    m = re.search(r"\.entry\s+" + re.escape(name) + r"\s*\((.*?)\)", ptx, re.S)
    if m is None:
        raise SystemExit(f"gen_kernels: no .entry {name} in the compiled PTX")
    return re.findall(r"\.param\s+\.(\w+)", m.group(1))


def check_abi(meta: dict, params: list[str], variant: str, runtime_args=RUNTIME_ARGS) -> int:
    """Trailing scratch pointers after the run-time arguments (refuses what the library cannot launch)."""
    bad = [k for k in ("global_scratch_size", "profile_scratch_size", "tmem_size") if meta[k]]
    bad += [k for k in ("launch_cooperative_grid", "launch_pdl") if meta[k]]
    if meta["num_ctas"] != 1:
        bad.append(f"num_ctas={meta['num_ctas']}")
    if bad:
        raise SystemExit(f"gen_kernels: {variant} needs {', '.join(bad)}, which native/src/ramac_sampler.cpp does "
                         f"not set up")
    for i, ((name, ty), kind) in enumerate(zip(runtime_args, params)):
        want = PTX_KIND["*" if ty.startswith("*") or ty == "dot" else ty]
        if kind not in (want if isinstance(want, tuple) else (want,)):
            raise SystemExit(f"gen_kernels: {variant}: PTX parameter {i} ({name}) is .{kind}, expected .{want}")
    extra = params[len(runtime_args):]
    if len(params) < len(runtime_args) or any(k != "u64" for k in extra) or len(extra) > 4:
        raise SystemExit(f"gen_kernels: {variant}: unexpected PTX parameter list {params}")
    return len(params)


def c_bytes(data: bytes, width: int = 32) -> str:
    """A C string literal (lines of hex escapes): gcc reads these far faster than an initializer list."""
    hexed = "".join(f"\\x{b:02x}" for b in data)
    step = 4 * width
    return "\n".join(f'    "{hexed[i:i + step]}"' for i in range(0, len(hexed), step))


def write_c(out_dir: Path, a: dict, results, triton_version: str, cta: bytes | None = None,
            one_state: str = "cta") -> None:
    """ramac_kernels.c: the cubins and the variant table; cta: the one-CTA kernel's cubin (one_state
    cta or mma), whose two entries come first (one state)."""
    parts = ["/* Generated by native/gen_kernels.py: do not edit. */", '#include "kernels_table.h"', ""]
    rows = []
    if cta is not None:
        parts.append(f"static const unsigned char cubin_cta[{len(cta) + 1}] =\n{c_bytes(cta)};\n")
        shared = cta_shared(a["hidden"], a["action_pad"])
        for has_noise in (True, False):
            rows.append(f'    {{"{CTA_ENTRIES[has_noise]}", cubin_cta, {len(cta)}, 1, 0, {CTA_THREADS // 32}, 1, '
                        f'{int(has_noise)}, 1, {shared}, {CTA_PARAMS}, {CTA_PROGRAMS[one_state]}, 1, {CTA_T_MAX}}},')
    for i, ((_, kind, (bm, bn, warps, stages), has_noise), max_batch, meta, cubin, n_params) in enumerate(results):
        programs = a["hidden"] // bn if kind in ("split", "gemv") else 0
        parts.append(f"static const unsigned char cubin_{i}[{len(cubin) + 1}] =\n{c_bytes(cubin)};\n")
        rows.append(f'    {{"{meta["name"]}", cubin_{i}, {len(cubin)}, {bm}, {min(bn, a["hidden"])}, {warps}, {stages}, '
                    f'{int(has_noise)}, {max_batch if max_batch is not None else -1}, {meta["shared"]}, {n_params}, '
                    f'{programs}, {int(kind == "gemv")}, 0}},')
    parts.append("const ramac_variant RAMAC_VARIANTS[] = {\n" + "\n".join(rows) + "\n};")
    parts.append(f"const int RAMAC_NUM_VARIANTS = {len(rows)};")
    build = (f"sm_{a['arch']} H={a['hidden']} S_P={a['state_pad']} A_P={a['action_pad']} {a['precision']} "
             f"one-state {one_state if cta is not None else 'triton'} triton {triton_version}")
    parts.append(f'const ramac_build RAMAC_BUILD = {{{a["arch"]}, {a["hidden"]}, {a["state_pad"]}, '
                 f'{a["action_pad"]}, "{a["precision"]}", "{build}"}};\n')
    tmp = out_dir / "ramac_kernels.c.tmp"
    tmp.write_text("\n".join(parts))
    tmp.replace(out_dir / "ramac_kernels.c")


def variants(precision: str, hidden: int, one_state: str = "gemv", sms: int = 132):
    """[(kind, (BM, BN or HC, warps, stages), max_batch or None)] in the order the library tries them."""
    from ramac.kernels.sampler_split import split_fits

    one_block = [("one-block", cfg, hi) for hi, cfg in launch_configs(precision, sms)]
    if one_state in CTA_KINDS:  # one state: the CUDA kernel (compile_cta), ahead of these
        return one_block
    split, most = (gemv_config(hidden), 1) if one_state == "gemv" else split_config(hidden)
    return ([("gemv" if one_state == "gemv" else "split", split, most)] if split_fits(hidden) else []) + one_block


def main(argv=None) -> int:
    a = parse_args(argv)
    check_shapes(a)
    try:
        import triton

        from ramac.kernels.sampler import _chain_kernel  # noqa: F401
        from ramac.kernels.sampler_split import _chain_split_kernel  # noqa: F401
    except Exception as e:  # noqa: BLE001 - one line for the build log
        raise SystemExit(f"gen_kernels: cannot import triton and ramac.kernels ({type(e).__name__}: {e}); "
                         f"install the package first: pip install -e .") from None
    args = {k: getattr(a, k) for k in ("arch", "hidden", "state_pad", "action_pad", "precision")}
    plan = [(kind, cfg, hi, has_noise) for kind, cfg, hi in variants(a.precision, a.hidden, a.one_state, a.sms)
            for has_noise in (True, False)]
    jobs = [(args, kind, cfg, has_noise) for kind, cfg, _, has_noise in plan]
    t0 = time.perf_counter()
    if a.jobs > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(min(a.jobs, len(jobs))) as pool:  # fork: modules already imported
            compiled = pool.map(compile_variant, jobs)
    else:
        compiled = [compile_variant(j) for j in jobs]
    results, manifest = [], []
    for (job, meta, cubin, params), (kind, (bm, bn, warps, stages), max_batch, has_noise) in zip(compiled, plan):
        variant = f"{kind} BM={bm} BN={bn} warps={warps} stages={stages} HAS_NOISE={has_noise}"
        n_params = check_abi(meta, params, variant, kernel(kind)[1])
        results.append((job, max_batch, meta, cubin, n_params))
        manifest.append({"kernel": kind, "block_m": bm, "block_n": min(bn, a.hidden), "num_warps": warps,
                         "num_stages": stages, "programs": a.hidden // bn if kind in ("split", "gemv") else 1,
                         "fp32_weights": kind == "gemv",
                         "has_noise": has_noise, "max_batch": max_batch, "cubin_bytes": len(cubin),
                         "ptx_params": len(params), **meta})
    cta = None
    if a.one_state in CTA_KINDS:
        cta = compile_cta(a)
        manifest[:0] = [{"kernel": a.one_state, "entry": CTA_ENTRIES[n], "block_m": 1, "num_warps": CTA_THREADS // 32,
                         "programs": 1, "has_noise": n, "max_batch": 1, "max_steps": CTA_T_MAX,
                         "shared": cta_shared(a.hidden, a.action_pad), "cubin_bytes": len(cta)} for n in (True, False)]
    a.out_dir.mkdir(parents=True, exist_ok=True)
    write_c(a.out_dir, args, results, triton.__version__, cta, a.one_state)
    (a.out_dir / "ramac_kernels.json").write_text(json.dumps(
        {**args, "one_state": a.one_state, "triton": triton.__version__, "variants": manifest}, indent=1) + "\n")
    print(f"gen_kernels: {len(manifest)} variants of the chain sampler for sm_{a.arch} ({a.precision}, H={a.hidden}, "
          f"S_P={a.state_pad}, A_P={a.action_pad}) with triton {triton.__version__} in "
          f"{time.perf_counter() - t0:.1f} s; {len(params) - len(RUNTIME_ARGS)} trailing scratch pointers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
