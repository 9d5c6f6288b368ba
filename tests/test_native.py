"""`ramac export` and the native sampler (native/, libramac_sampler through ramac.native).

CPU: the export holds Diffusion.pack's tensors of the EMA actor, a chain computed from the files
alone equals the reference op, the CLI's bad input, and (when the library is built) its host-side
checks through ctypes. GPU (with the library built): native vs Python sampler on the same weights.
The CMake build itself is the slow test (cmake configure, build, ctest into a temporary folder).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ramac import export
from ramac.agents.configs import RADACConfig, RAFMACConfig
from ramac.agents.registry import make_agent
from ramac.cli import main
from ramac.kernels import sample_chain_ref

from kernels.helpers import GPU_FLOOR, precision_atol  # tests/kernels (tests/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()


def tiny_radac(S=5, A=3, hidden=32, T=4, seed=0):
    torch.manual_seed(seed)
    agent = make_agent("radac", S, A, RADACConfig(actor_hidden=hidden, n_timesteps=T, critic_hidden=16,
                                                  embedding_dim=8, n_quantiles=4, n_risk_quantiles=4).validate())
    agent.set_obs_norm(torch.randn(S), 0.5 + torch.rand(S))
    with torch.no_grad():  # the EMA actor apart from the trained one: the export must hold the EMA's
        for p in agent.policy.actor_ema.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return agent


def chain_from_files(header, t, states, noise):
    """The chain from an export's documented contents alone (native/FORMAT.md), in plain torch."""
    S, A, T, m = header["state_dim"], header["action_dim"], header["n_steps"], header["max_action"]
    s_part, x = states @ t["w_s"][:S], noise[T]
    for step in reversed(range(T)):
        h = F.mish(x @ t["w_x"][:A] + s_part + t["c_time"][step])
        h = F.mish(F.mish(h @ t["w2"] + t["b2"]) @ t["w3"] + t["b3"])
        eps = h @ t["w_out"][:, :A] + t["b_out"][:A]
        recip, recipm1, mean1, mean2, sigma = t["coefs"][step, :5]
        x0 = (recip * x - recipm1 * eps).clamp(-m, m)
        x = mean1 * x0 + mean2 * x + sigma * noise[step]
    return x.clamp(-m, m)


def test_export_holds_the_packed_ema_actor(tmp_path):
    agent = tiny_radac()
    export.write_export(agent, tmp_path / "x", source={"algo": "radac", "step": 3})
    header, tensors = export.read_export(tmp_path / "x")
    packed = agent.policy.diffusion.pack(agent.policy.actor_ema)
    for name in export.TENSORS:
        assert torch.equal(tensors[name], getattr(packed, name)), name
    assert not torch.equal(tensors["w2"], agent.policy.diffusion.pack(agent.policy.actor).w2)
    assert (header["state_dim"], header["action_dim"], header["hidden"], header["n_steps"]) == (5, 3, 32, 4)
    assert (header["state_pad"], header["action_pad"], header["agent"], header["source"]["step"]) == (16, 16, "radac", 3)
    assert torch.equal(torch.tensor(header["obs_mean"], dtype=torch.float32), agent.obs_mean)
    assert torch.equal(torch.tensor(header["obs_std"], dtype=torch.float32), agent.obs_std)
    assert header["coefs"] == [list(row[:5]) for row in packed.coefs_host]
    offsets = [t["offset"] for t in header["tensors"]]
    assert all(o % export.ALIGN == 0 for o in offsets) and offsets == sorted(offsets)


def test_a_chain_from_the_files_alone_equals_the_reference_op(tmp_path):
    agent = tiny_radac(S=7, A=2, T=5)
    export.write_export(agent, tmp_path / "x")
    header, tensors = export.read_export(tmp_path / "x")
    g = torch.Generator().manual_seed(1)
    states, noise = 3 * torch.randn(37, 7, generator=g), torch.randn(6, 37, 2, generator=g)
    want = sample_chain_ref(agent.policy.diffusion.pack(agent.policy.actor_ema), states, noise)
    torch.testing.assert_close(chain_from_files(header, tensors, states, noise), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(sample_chain_ref(export.packed_from_export(tmp_path / "x"), states, noise), want,
                               atol=0, rtol=0)


def test_only_diffusion_actors_are_exported(tmp_path):
    agent = make_agent("rafmac", 3, 2, RAFMACConfig(actor_hidden=16, critic_hidden=16, embedding_dim=8,
                                                    n_quantiles=4, n_risk_quantiles=4).validate())
    with pytest.raises(ValueError, match="not a diffusion actor"):
        export.write_export(agent, tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-step runs on the bandit: a RADAC one and a RAFMAC one (a flow actor)."""
    from ramac.config import build_configs
    from ramac.train import train

    out, small = tmp_path_factory.mktemp("runs"), dict(actor_hidden=16, critic_hidden=16, embedding_dim=8,
                                                        n_quantiles=4, n_risk_quantiles=4)
    dirs = {}
    for algo, extra in (("radac", dict(n_timesteps=3)), ("rafmac", {})):
        agent_cfg, train_cfg = build_configs("bandit", algo, cpu_sized=True, agent_overrides={**small, **extra},
                                             train_overrides=dict(steps=2, eval_samples=20, device="cpu"))
        dirs[algo] = train(agent_cfg, train_cfg, out / algo, progress=False).run_dir
    return dirs


def test_cli_export_writes_and_keeps_an_existing_export(runs, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(runs["radac"]), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    header = json.loads((out / "header.json").read_text())
    assert (header["agent"], header["source"]["step"], header["n_steps"]) == ("radac", 2, 3)
    before = (out / "weights.bin").read_bytes()
    (out / "weights.bin").write_bytes(b"edited")
    assert main(["export", str(runs["radac"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert (out / "weights.bin").read_bytes() == b"edited"
    assert main(["export", str(runs["radac"]), "--out", str(out), "--overwrite"]) == 0
    assert (out / "weights.bin").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary folder left behind


@pytest.mark.parametrize("case", ["no run dir", "no checkpoint", "flow actor", "foreign --out"])
def test_cli_export_bad_input_is_one_line_and_writes_nothing(case, runs, tmp_path, capsys):
    run, out, extra = runs["radac"], tmp_path / "export", []
    if case == "no run dir":
        run = tmp_path / "missing"
    elif case == "no checkpoint":
        run = tmp_path / "empty"
        run.mkdir()
    elif case == "flow actor":
        run = runs["rafmac"]
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        extra = ["--overwrite"]
    assert main(["export", str(run), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ramac export: error: ") and err.count("\n") == 1, err
    held = sorted(p.name for p in out.iterdir()) if out.exists() else None
    assert held == (["notes.txt"] if case == "foreign --out" else None)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _library():
    from ramac.native import library_path

    return library_path() if library_path().exists() else None


needs_library = pytest.mark.skipif(_library() is None, reason="libramac_sampler not built (cmake -S . -B build && "
                                                               "cmake --build build)")


@needs_library
def test_library_checks_an_export_before_touching_the_gpu(tmp_path):
    from ramac.native import NativeError, NativeSampler

    with pytest.raises(NativeError, match="header.json") as e:
        NativeSampler(tmp_path / "missing")
    assert e.value.code == 2
    export.write_export(tiny_radac(hidden=32), tmp_path / "small")
    with pytest.raises(NativeError, match="-DRAMAC_HIDDEN=32") as e:
        NativeSampler(tmp_path / "small")
    assert e.value.code == 4
    if not CUDA:  # a fitting export gets as far as the driver
        export.write_export(tiny_radac(S=17, A=6, hidden=256, T=5), tmp_path / "fits")
        with pytest.raises(NativeError, match="CUDA") as e:
            NativeSampler(tmp_path / "fits")
        assert e.value.code == 5


@pytest.fixture(scope="module")
def halfcheetah_export(tmp_path_factory):
    """A fresh RADAC actor in the shapes the library is built for by default (S=17, A=6, H=256, T=5)."""
    out = tmp_path_factory.mktemp("native") / "export"
    export.write_export(tiny_radac(S=17, A=6, hidden=256, T=5), out)
    return out


gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
BF16_ATOL = GPU_FLOOR["bf16"]  # native vs the Triton kernel: the same bf16 arithmetic


@gpu
@needs_library
@pytest.mark.parametrize("B", [1, 16, 17, 300])
def test_native_equals_python_sampler_on_the_same_noise(B, halfcheetah_export):
    from ramac.kernels.sampler import sample_chain_triton
    from ramac.kernels.sampler_split import launch_split
    from ramac.native import NativeSampler

    p = export.packed_from_export(halfcheetah_export, "cuda")
    g = torch.Generator(device="cuda").manual_seed(B)
    states = 3 * torch.randn(B, 17, device="cuda", generator=g)
    noise = torch.randn(6, B, 6, device="cuda", generator=g)
    with NativeSampler(halfcheetah_export) as native:
        got = native.sample(states, noise=noise)
        cta = "one-state cta" in native.build_info or "one-state mma" in native.build_info
    # the library's kernel for B: at one state its GEMV variant (RAMAC_ONE_STATE), fp32 weights,
    # against Python's GEMV launch (sample_chain's for one state); elsewhere the one-block kernel;
    # the one-CTA CUDA kernels (fp16 W2 and W3; cta or mma) have no Python twin: the reference check below
    if B == 1 and cta:
        pass
    elif B == 1:  # the same kernel, launch and fp32 weights: the same numbers up to fp32 rounding
        same = torch.empty_like(got)
        launch_split(p, p.weights_as(torch.float32), states, noise, None, same, "bf16", "gemv")
        torch.testing.assert_close(got, same, atol=1e-5, rtol=0)
    else:
        same = sample_chain_triton(p, states, noise, precision="bf16")
        torch.testing.assert_close(got, same, atol=BF16_ATOL, rtol=0)
    want = sample_chain_ref(p, states, noise)  # fp32: the kernel tests' rule, twice torch's own bf16 error
    atol = precision_atol(lambda: sample_chain_ref(p, states, noise), "bf16", states.device, want)
    torch.testing.assert_close(got, want, atol=atol, rtol=0)


@gpu
@needs_library
@pytest.mark.parametrize("B", [1, 3, 300])  # 1: the one-state kernel (its own Philox port with -DRAMAC_ONE_STATE=cta)
def test_native_seed_path_is_the_kernels_philox_stream(B, halfcheetah_export):
    from ramac.kernels.sampler import sample_chain_triton
    from ramac.native import NativeSampler

    p = export.packed_from_export(halfcheetah_export, "cuda")
    states = torch.randn(B, 17, device="cuda")
    with NativeSampler(halfcheetah_export) as native:
        first, again, other = (native.sample(states, seed=s) for s in (5, 5, 6))
        from_tensor = native.sample(states, seed=torch.tensor([5], dtype=torch.int64, device="cuda"))
        obs = torch.randn(B, 17, device="cuda")
        acted = native.act(obs, seed=5)
        normed = native.sample((obs - native.obs_mean.cuda()) / native.obs_std.cuda(), seed=5)
    assert torch.equal(first, again) and torch.equal(first, from_tensor) and torch.equal(acted, normed)
    assert not torch.equal(first, other)
    torch.testing.assert_close(first, sample_chain_triton(p, states, seed=5, precision="bf16"), atol=BF16_ATOL, rtol=0)
    assert first.abs().max() <= 1.0


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("nvcc") is None,
                    reason="needs cmake and the CUDA toolkit")
@pytest.mark.parametrize("one_state", ["gemv", "cta", "mma"])  # the default, and the one-CTA CUDA kernels
def test_cmake_builds_and_ctest_passes_or_skips(tmp_path, one_state):
    """The top-level CMakeLists.txt: configure, build (cubins compiled on the CPU), ctest (~30 s on
    2 cores; in CI, so a kernel change that breaks the ahead-of-time build fails there). The one-CTA
    kernels' rows tell the library the order of their fp16 weights (programs -1 or -2)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    build = tmp_path / "build"
    for cmd in (["cmake", "-S", str(ROOT), "-B", str(build), f"-DRAMAC_PYTHON={sys.executable}",
                 f"-DRAMAC_ONE_STATE={one_state}"],
                ["cmake", "--build", str(build), "-j", "2"]):
        subprocess.run(cmd, check=True, env=env, capture_output=True)
    assert (build / "libramac_sampler.so").exists() and (build / "ramac_sampler_bench").exists()
    table = (build / "generated" / "ramac_kernels.c").read_text()
    rows = re.findall(r'\{"ramac_one_state_\w+", cubin_cta, \d+, (?:-?\d+, ){8}(-?\d+), 1, \d+\},', table)
    assert rows == {"gemv": [], "cta": ["-1"] * 2, "mma": ["-2"] * 2}[one_state], table[-1500:]
    assert f"one-state {one_state if one_state != 'gemv' else 'triton'}" in table
    r = subprocess.run(["ctest", "--test-dir", str(build)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sampler_errors ...................   Passed" in r.stdout
    assert ("Skipped" in r.stdout) != CUDA, r.stdout


def _gen_kernels():
    """native/gen_kernels.py as a module."""
    interpret = os.environ.get("TRITON_INTERPRET")  # the generator drops it on import (it compiles)
    sys.path.insert(0, str(ROOT / "native"))
    try:
        import gen_kernels
    finally:
        sys.path.remove(str(ROOT / "native"))
        if interpret is not None:  # the tests after this one still interpret their kernels
            os.environ["TRITON_INTERPRET"] = interpret
    return gen_kernels


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs the CUDA toolkit")
@pytest.mark.parametrize("one_state", ["cta", "mma"])  # CUDA cores, and tensor cores (RAMAC_CTA_MMA)
def test_the_one_state_cuda_kernel_compiles_unspilled_with_the_librarys_arguments(tmp_path, one_state):
    """native/src/one_state.cu (-DRAMAC_ONE_STATE=cta or mma) as the build compiles it for an H200:
    ptxas spills nothing (W3's registers are sized to the 128 a thread has), the shared memory the
    library launches with is the kernel's own count (a static_assert in the kernel), each entry
    takes the 18 parameters the library passes, and mma's hidden layers are 2 x 16 mma.sync a step."""
    gen_kernels = _gen_kernels()
    for bad, why in ((["--hidden", "512"], "--hidden 256"), (["--action-pad", "32"], "at most 16")):
        with pytest.raises(SystemExit, match=why):  # what the kernel is not written for: one line, no nvcc
            gen_kernels.check_shapes(gen_kernels.parse_args(["--out-dir", str(tmp_path), "--one-state", one_state,
                                                             *bad]))
    a = gen_kernels.parse_args(["--out-dir", str(tmp_path), "--one-state", one_state])
    cmd = gen_kernels.cta_command(a, shutil.which("nvcc"), tmp_path / "k.cubin")
    done = subprocess.run(cmd + ["-Xptxas", "-v"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning" not in done.stderr, done.stderr[-2000:]
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert len(spills) >= 2 and set(spills) == {"0"}, done.stderr
    ptx = tmp_path / "k.ptx"
    subprocess.run([c if c != "-cubin" else "-ptx" for c in cmd[:-1]] + [str(ptx)], check=True, capture_output=True)
    for entry in gen_kernels.CTA_ENTRIES.values():
        body = re.search(r"\.entry\s+" + entry + r"\s*\((.*?)\)(.*?)\n}\n", ptx.read_text(), re.S)
        assert body and len(re.findall(r"\.param\s", body.group(1))) == gen_kernels.CTA_PARAMS, entry
        assert body.group(2).count("mma.sync.aligned.m16n8k16") == (32 if one_state == "mma" else 0), entry


@pytest.mark.skipif(shutil.which("nvcc") is None or not __import__("ramac").kernels.HAS_TRITON,
                    reason="needs the CUDA toolkit and Triton")
def test_the_one_state_kernels_philox_is_tritons_randn(tmp_path):
    """The one-CTA kernel's seed path draws tl.randn(seed, offset) itself (a C++ port): run on the
    CPU (nvcc's host side), it equals the Triton interpreter's stream up to the float rounding of
    log, cos and sqrt, for a small and a 64-bit seed."""
    import triton
    import triton.language as tl

    harness = tmp_path / "philox.cu"
    harness.write_text(f'#include "{ROOT / "native/src/one_state.cu"}"\n#include <cstdio>\n#include <cstdlib>\n'
                       "int main(int, char** v) { const uint64_t s = strtoull(v[1], 0, 10);\n"
                       '  for (uint32_t i = 0; i < 256; ++i) std::printf("%.9g\\n", triton_randn(s, i)); }\n')
    subprocess.run([shutil.which("nvcc"), "-O2", str(harness), "-o", str(tmp_path / "philox")], check=True,
                   capture_output=True)

    @triton.jit
    def randn(seed_ptr, out_ptr, N: tl.constexpr):
        offs = tl.arange(0, N)
        tl.store(out_ptr + offs, tl.randn(tl.load(seed_ptr), offs))

    for seed in (5, 12_345_678_901_234):
        run = subprocess.run([str(tmp_path / "philox"), str(seed)], check=True, capture_output=True, text=True)
        got = torch.tensor([float(v) for v in run.stdout.split()])
        dev = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"  # interpreted, or compiled on a GPU
        want = torch.empty(256, device=dev)
        randn[(1,)](torch.tensor([seed], dtype=torch.int64, device=dev), want, 256)
        torch.testing.assert_close(got, want.cpu(), atol=1e-6, rtol=0)


def _mma_tiles(packed, xb, warp, kt, H):
    """The 16 x 16 A tile and 16 x 8 B tile one mma.m16n8k16 of `warp` at k-tile kt multiplies, put
    together from what each lane l = 4 g + t hands it as PTX lays the fragments out: chunk
    ((warp * H / 16 + kt) * 32 + l) of the packed weights as a0..a7 (rows g, g + 8; columns 2t + (i & 1)
    + 8 (i >> 2)) and the 8 bytes at (4 kt + t) * 4 halves of the input as b0..b3 (rows 2t + (i & 1)
    + 8 (i >> 1), column g)."""
    A = torch.full((16, 16), float("nan"), dtype=torch.float64)
    B = torch.full((16, 8), float("nan"), dtype=torch.float64)
    for lane in range(32):
        g, t = divmod(lane, 4)
        chunk = packed[((warp * (H // 16) + kt) * 32 + lane) * 8:][:8]
        for i in range(8):
            A[g + 8 * ((i >> 1) & 1), 2 * t + (i & 1) + 8 * (i >> 2)] = chunk[i]
        b = xb[(4 * kt + t) * 4:][:4]
        for i in range(4):
            B[2 * t + (i & 1) + 8 * (i >> 1), g] = b[i]
    return A, B


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_the_tensor_core_kernels_orders_compute_each_layer(tmp_path):
    """The tensor-core one-CTA kernel (-DRAMAC_ONE_STATE=mma) takes W2 and W3 in the A fragment order
    the library packs (one_state_layout.h's a_fragment) and its input in the B order (b_slot), W3's
    last k-tiles in shared memory (w3_shared_source / w3_shared_chunk): run on the CPU, those orders
    put every element of every mma's tiles where PTX's fragment layout needs it, every B column is
    the input, and each warp's 16 mma give its 16 outputs of W x."""
    H, regs = 256, 11  # one_state.cu's H and W3_REGS
    harness = tmp_path / "layout.cpp"
    shared = 16 * (16 - regs) * 32  # chunks of W3 in shared memory
    harness.write_text(f'#include "{ROOT / "native/src/one_state_layout.h"}"\n#include <cstdio>\n'
                       "#define P(v) std::printf(\"%d\\n\", v)\n"
                       "int main() { using namespace ramac_layout; int j, k;\n"
                       f"  for (int n = 0; n < {H * H}; ++n) {{ a_fragment(n, {H}, j, k); P(j); P(k); }}\n"
                       f"  for (int i = 0; i < {H}; ++i) P(b_slot(i));\n"
                       f"  for (int i = 0; i < {shared}; ++i) P(w3_shared_source(i, {H}, {regs}));\n"
                       f"  for (int w = 0; w < 16; ++w) for (int kt = {regs}; kt < 16; ++kt)\n"
                       f"    for (int l = 0; l < 32; ++l) P(w3_shared_chunk(w, kt, l, {H}, {regs})); }}\n")
    subprocess.run([shutil.which("g++"), "-O1", str(harness), "-o", str(tmp_path / "layout")], check=True,
                   capture_output=True)
    out = [int(v) for v in subprocess.run([str(tmp_path / "layout")], check=True, capture_output=True,
                                          text=True).stdout.split()]
    pairs = torch.tensor(out[:2 * H * H]).view(-1, 2)
    slots = torch.tensor(out[2 * H * H:][:H])
    shared_source = torch.tensor(out[2 * H * H + H:][:shared])
    shared_chunk = torch.tensor(out[2 * H * H + H + shared:]).view(16, 16 - regs, 32)
    assert len(set(map(tuple, pairs.tolist()))) == H * H and pairs.min() == 0 and pairs.max() == H - 1  # a permutation
    assert sorted(slots.tolist()) == list(range(H))
    gen = torch.Generator().manual_seed(0)
    W, x = torch.randn(H, H, generator=gen, dtype=torch.float64), torch.randn(H, generator=gen, dtype=torch.float64)
    packed = W[pairs[:, 0], pairs[:, 1]]  # what the library uploads: the n-th half is W[j][k]
    xb = torch.empty(H, dtype=torch.float64)
    xb[slots] = x  # what a layer writes for the next: input j at b_slot(j)
    want = W @ x
    for warp in range(16):
        out_rows = torch.zeros(16, 8, dtype=torch.float64)
        for kt in range(16):
            A, B = _mma_tiles(packed, xb, warp, kt, H)
            assert not A.isnan().any() and not B.isnan().any()
            assert (B == x[16 * kt:16 * kt + 16, None]).all()  # every column the same input
            out_rows += A @ B
        torch.testing.assert_close(out_rows, want[16 * warp:16 * warp + 16, None].expand(16, 8))
    # W3's k-tiles past the registers: the chunk a lane reads in shared memory is the one it needs
    need = torch.tensor([[[(w * 16 + kt) * 32 + lane for lane in range(32)] for kt in range(regs, 16)]
                         for w in range(16)])
    assert torch.equal(shared_source[shared_chunk], need)


@pytest.mark.skipif(not __import__("ramac").kernels.HAS_TRITON, reason="needs Triton")
def test_the_generator_knows_every_argument_of_the_chain_kernel():
    """native/gen_kernels.py names the chain kernel's run-time and constexpr arguments itself; a new
    kernel argument it does not know stops the GPU build (a stacked-seeds constexpr did), so check
    here, on any machine, that its signature covers the kernel's."""
    gen_kernels = _gen_kernels()
    from ramac.kernels.sampler import _chain_kernel
    from ramac.kernels.sampler_split import _chain_split_gemv_kernel, _chain_split_kernel

    for precision in ("bf16", "fp32"):
        assert list(gen_kernels.signature(precision)) == list(_chain_kernel.arg_names)
        assert list(gen_kernels.signature(precision, "split")) == list(_chain_split_kernel.arg_names)
        assert list(gen_kernels.signature(precision, "gemv")) == list(_chain_split_gemv_kernel.arg_names)
        # the GEMV variant reads fp32 weights whatever the build's dtype; the others the build's
        assert gen_kernels.signature(precision, "gemv")["w2_ptr"] == "*fp32"
        assert gen_kernels.signature(precision, "split")["w2_ptr"] == ("*bf16" if precision == "bf16" else "*fp32")
    # the library launches both split kernels with one argument list
    assert gen_kernels.kernel("gemv")[1] == gen_kernels.kernel("split")[1]
    # the one-block variants cover every batch size with the launch setting sample_chain picks there
    from ramac.kernels.sampler import _launch_config

    for precision, sms in (("bf16", 132), ("bf16", 78), ("fp32", 132)):
        ranges = gen_kernels.launch_configs(precision, sms)
        assert ranges[-1][0] is None and all(hi is not None for hi, _ in ranges[:-1])
        first = 1
        for hi, cfg in ranges:
            last = hi or 64 * sms * 4
            assert {_launch_config(b, precision, sms) for b in (first, (first + last) // 2, last)} == {cfg}
            first = last + 1
    assert len(gen_kernels.launch_configs("bf16", 132)) == 3  # 16-row, 64 x 64 and 64 x 32 tiles
