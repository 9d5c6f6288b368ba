"""Benchmarks behind `ramac bench`: kernels and the sampler, each against our reference path.

Every figure is the median over repeated blocks of calls timed with CUDA events
(or a host clock on CPU), after a warm-up. "eager" times what a Python caller
sees (launch overhead included); "graph" captures the call in a CUDA graph and
times replays, which is what the op costs inside the graphed training step.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from .. import kernels
from ..diffusion import Diffusion
from ..cuda_graphs import GraphedSampler, GraphedStudent, capture
from ..kernels.denoise import posterior_step_ref, posterior_step_triton
from ..kernels.iqn_critic import iqn_quantiles_ref, iqn_quantiles_triton
from ..kernels.quantile_huber import quantile_huber_loss_ref, quantile_huber_loss_triton
from ..kernels.risk import distort_ref, distort_triton, tail_mean_ref, tail_mean_triton
from ..kernels.sampler import sample_chain_ref, sample_chain_triton
from ..kernels.sampler_split import SPLIT_AUTO_MAX_BATCH
from ..kernels.student import student_forward_ref, student_forward_triton
from ..nets import Denoiser
from ..utils import atomic_write_json, provenance


@dataclass
class Timing:
    median_us: float
    p10_us: float
    p90_us: float
    calls: int


def timeit(fn, cuda: bool, *, warmup: int = 10, blocks: int = 30, per_block: int = 10,
           graph: bool = False) -> Timing:
    """Median time of one call of fn() in microseconds (CUDA events on the GPU)."""
    if graph:
        fn = _graphed(fn)
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(blocks):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(per_block):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1e3 / per_block)
        else:
            t0 = time.perf_counter()
            for _ in range(per_block):
                fn()
            samples.append((time.perf_counter() - t0) * 1e6 / per_block)
    samples.sort()
    q = statistics.quantiles(samples, n=10)
    return Timing(statistics.median(samples), q[0], q[-1], blocks * per_block)


def _graphed(fn, warmup: int = 3):
    """Capture fn() once in a CUDA graph (cuda_graphs.capture: warm-up and capture on one fresh side
    stream, so that what the warm-up creates lazily, autograd nodes that keep the stream they were
    made on and kernel caches, belongs to it) and return a replay function; its .outputs are what
    the captured call returned (static: each replay overwrites them)."""
    gc.collect()  # autograd graphs of earlier cases, held in cycles, go before this capture
    torch.cuda.synchronize()
    returned = {}

    def call():
        returned["outputs"] = fn()

    graph = capture(call, warmup)
    torch.cuda.synchronize()

    def replay():
        graph.replay()

    # the replay keeps fn alive: what fn holds (bwd's kept forward and its saved tensors) the graph reads
    replay.graph, replay.outputs, replay.fn = graph, returned["outputs"], fn
    return replay


# --------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------
def _modes(make_out, params):
    """fwd, bwd and full (fwd + bwd) closures for an op producing a scalar or vector; each returns
    what it computed. Build one set per measurement.

    Nothing runs here. bwd makes the forward it differentiates on its first call, on the stream
    that call runs on (graphed: the capture's side stream, in the warm-up), and keeps it; full makes
    a fresh forward each call. Why it matters: a leaf's AccumulateGrad node records the stream
    current when it is made and lives as long as any autograd graph through the leaf. The old
    harness made a forward here, on the default stream, and kept it for bwd: every later capture of
    a backward through that leaf then had autograd sync the legacy default stream with the
    capturing one, which invalidates the capture ("operation failed due to a previous error
    during capture"; bench/results/README.md; bench/studies/qh_graph_check.py --legacy checks it).
    """
    state = {}

    def grad_for(out):  # ones for a vector output, made once (outside any capture); a scalar needs none
        if "grad" not in state:
            state["grad"] = torch.ones_like(out) if out.dim() else None
        return state["grad"]

    def fwd():
        with torch.no_grad():
            return make_out()

    def bwd():
        if "out" not in state:
            state["out"] = make_out()
        out = state["out"]
        return torch.autograd.grad(out, params, grad_for(out), retain_graph=True)

    def full():
        out = make_out()
        return torch.autograd.grad(out, params, grad_for(out))

    return {"fwd": fwd, "bwd": bwd, "full": full}


def kernel_cases(device, B=16_384, K=32):
    """(name, shape string, {provider: make_out}, params) for each kernel."""
    g = torch.Generator(device=device).manual_seed(0)
    pred = torch.randn(B, K, device=device, generator=g).requires_grad_()
    target = torch.randn(B, K, device=device, generator=g)
    taus = torch.rand(B, K, device=device, generator=g)
    qh = {
        "reference": lambda: quantile_huber_loss_ref(pred, taus, target),
        "triton": lambda: quantile_huber_loss_triton(pred, taus, target),
    }
    z1 = torch.randn(B, K, device=device, generator=g).requires_grad_()
    z2 = torch.randn(B, K, device=device, generator=g).requires_grad_()
    tail = {"reference": lambda: tail_mean_ref(z1, z2), "triton": lambda: tail_mean_triton(z1, z2)}
    x = torch.randn(B, 6, device=device, generator=g).requires_grad_()
    eps = torch.randn(B, 6, device=device, generator=g).requires_grad_()
    z = torch.randn(B, 6, device=device, generator=g)
    c = kernels.StepCoefs(1.3, 0.7, 0.4, 0.5, 0.2, 1.0)
    post = {"reference": lambda: posterior_step_ref(x, eps, z, c), "triton": lambda: posterior_step_triton(x, eps, z, c)}
    u = torch.rand(B, K, device=device, generator=g)
    dist = {"reference": lambda: distort_ref(u, "wang", -0.7), "triton": lambda: distort_triton(u, "wang", -0.7)}
    E, H, n_cos = 128, 256, K  # halfcheetah-medium-expert's critic (n_cos = n_quantiles, as published)
    trunk = torch.relu(torch.randn(B, E, device=device, generator=g)).requires_grad_()
    iqn_w = [(0.1 * torch.randn(*shape, device=device, generator=g)).requires_grad_()
             for shape in ((E, n_cos), (E,), (H, E), (H,), (1, H), (1,))]  # cos_fc, head_fc, out
    iqn = {"reference": lambda: iqn_quantiles_ref(trunk, taus, *iqn_w),
           "triton": lambda: iqn_quantiles_triton(trunk, taus, *iqn_w)}
    return [
        ("quantile_huber", f"B={B} K=K'={K}", qh, [pred]),
        ("tail_mean", f"B={B} K={K}", tail, [z1, z2]),
        ("posterior_step", f"B={B} A=6", post, [x, eps]),
        ("distort_wang", f"N={B}x{K}", dist, None),
        ("iqn_critic", f"B={B} K={K} emb={E} hidden={H} n_cos={n_cos}", iqn, [trunk, *iqn_w]),
    ]


def bench_kernels(device, B=16_384, K=32, compile_ref=True, graph=True, ops=None) -> list[dict]:
    """Each op of kernel_cases per provider, mode (fwd, bwd, full) and launch (eager; graph on CUDA).

    A failing row keeps its error and the next row runs, unless the failure left the CUDA context
    unusable (a sticky error): the rows after it then say so instead of failing for that reason.
    """
    rows = []
    launches = (False, True) if graph and device.type == "cuda" else (False,)
    broken = None
    for name, shape, providers, params in kernel_cases(device, B, K):
        if ops and name not in ops:
            continue
        if compile_ref:
            providers = dict(providers, compile=torch.compile(providers["reference"], dynamic=False))
        for provider, make_out in providers.items():
            for mode in ("fwd", "bwd", "full") if params else ("fwd",):
                for graphed in launches:
                    if broken:
                        rows.append(dict(op=name, shape=shape, provider=provider, mode=mode,
                                         launch="graph" if graphed else "eager", error=broken))
                        continue
                    # fresh closures per row: no autograd graph of one case lives on into another
                    fn = _modes(make_out, params)[mode] if params else make_out
                    row = _measure(fn, device, graphed, op=name, shape=shape, provider=provider, mode=mode)
                    rows.append(row)
                    del fn
                    if "error" in row and device.type == "cuda" and not _cuda_usable(device):
                        broken = f"not run: the CUDA context was unusable after {name} {provider} {mode}"
    return _with_speedups(rows, ("op", "shape", "mode", "launch"))


def _measure(fn, device, graphed, blocks=30, **fields) -> dict:
    """One row; a failure is recorded (not raised) so one bad case cannot sink a GPU session."""
    row = dict(fields, launch="graph" if graphed else "eager")
    try:
        row.update(asdict(timeit(fn, device.type == "cuda", graph=graphed, blocks=blocks)))
    except Exception as e:  # noqa: BLE001 - reported in the results
        row["error"] = error_text(e)
    return row


def error_text(e: BaseException) -> str:
    """The first error of e's chain, then e when it differs: a capture that fails raises again on
    leaving torch.cuda.graph ("operation failed due to a previous error during capture"), which
    hides what went wrong first."""
    chain = [e]
    while (earlier := chain[-1].__cause__ or chain[-1].__context__) is not None and earlier not in chain:
        chain.append(earlier)

    def line(x):
        text = str(x).strip().splitlines()
        return f"{type(x).__name__}: {text[0][:200] if text else ''}"

    return line(chain[-1]) if len(chain) == 1 else f"{line(chain[-1])} (then {line(e)})"


def _cuda_usable(device) -> bool:
    """Whether the CUDA context still runs work (after a sticky error, nothing in the process can)."""
    try:
        torch.cuda.synchronize(device)
        return torch.ones(1, device=device).add_(1).item() == 2.0
    except Exception:  # noqa: BLE001 - the answer is no
        return False


# --------------------------------------------------------------------------
# sampler
# --------------------------------------------------------------------------
def bench_sampler(device, batches=(1, 256, 4096, 65_536), steps=(5,), state_dim=17, action_dim=6, hidden=256,
                  precisions=("bf16", "tf32"), compile_ref=False) -> list[dict]:
    rows = []
    for T in steps:
        torch.manual_seed(0)
        model = Denoiser(state_dim, action_dim, hidden).to(device)
        diffusion = Diffusion(T, "vp").to(device)
        packed = diffusion.pack(model)
        for B in batches:
            state = torch.randn(B, state_dim, device=device)
            seed = torch.tensor([1], dtype=torch.int64, device=device)
            providers = {
                "reference": lambda: sample_chain_ref(packed, state),
                "module": lambda: diffusion.sample(model, state),
            }
            if compile_ref:
                providers["compile"] = torch.compile(lambda: sample_chain_ref(packed, state), dynamic=False)
            for prec in precisions:
                providers[f"triton-{prec}"] = (lambda prec=prec: sample_chain_triton(packed, state, seed=seed,
                                                                                     precision=prec))
                if B <= SPLIT_AUTO_MAX_BATCH:  # beside the split kernel these batches take: the one-block one
                    providers[f"triton-{prec}-one-block"] = (lambda prec=prec: sample_chain_triton(
                        packed, state, seed=seed, precision=prec, split=False))
                if B == 1:  # and the split one-state GEMV kernel
                    providers[f"triton-{prec}-gemv"] = (lambda prec=prec: sample_chain_triton(
                        packed, state, seed=seed, precision=prec, split="gemv"))
            if device.type == "cuda":  # end to end from Python: copy states in, replay, return the buffer
                graphed = GraphedSampler(diffusion, model, B)
                row = _measure(lambda: graphed(state), device, False, blocks=20 if B > 4096 else 30,
                               op="sampler", T=T, batch=B, provider="graphed-sampler")
                rows.append(_with_rate(row, B))
            for provider, fn in providers.items():
                with torch.no_grad():
                    for graphed in (False, True) if device.type == "cuda" else (False,):
                        row = _measure(fn, device, graphed, blocks=20 if B > 4096 else 30,
                                       op="sampler", T=T, batch=B, provider=provider)
                        rows.append(_with_rate(row, B))
    return _with_speedups(rows, ("op", "T", "batch", "launch"))


# FQL's published student (4 x 512) and a smaller one: 500M actions/s at 4 x 512 would take ~0.8
# PFLOP/s of bf16 (student_flops), ~80 % of an H200's dense peak, so the goal is also timed there
STUDENT_SHAPES = ((512, 4), (256, 3))


def student_flops(state_dim: int, action_dim: int, hidden: int, layers: int) -> int:
    """FLOPs of one student pass (2 per multiply-add; biases, GELU and the clip left out)."""
    return 2 * hidden * (state_dim + action_dim + (layers - 1) * hidden + action_dim)


def bench_student(device, batches=(1, 256, 4096, 65_536), shapes=STUDENT_SHAPES, state_dim=17, action_dim=6,
                  precisions=("bf16", "tf32"), compile_ref=False, radac_steps=5, radac_hidden=256,
                  blocks=None) -> list[dict]:
    """The flow student's one-step sampler (RAFMAC / FQL) per provider and batch, and RADAC's
    chain sampler (T = radac_steps) at the same batches in the same run.

    Each provider draws its noise inside the timed call (triton-bf16-philox draws it in the
    kernel). ratio_vs_radac_sampler: RADAC's graphed end-to-end sampler time over the row's
    (above 1: the student is that many times faster; on CPU the eager chain is the baseline).
    """
    from ..agents.configs import FlowActorConfig
    from ..flow import FlowPolicy

    cuda = device.type == "cuda"
    launches = (False, True) if cuda else (False,)
    rows = []
    torch.manual_seed(0)
    denoiser = Denoiser(state_dim, action_dim, radac_hidden).to(device)
    diffusion = Diffusion(radac_steps, "vp").to(device)
    for B in batches:
        state = torch.randn(B, state_dim, device=device)
        seed = torch.tensor([1], dtype=torch.int64, device=device)
        fields = dict(op="radac-sampler", hidden=radac_hidden, layers=3, T=radac_steps, batch=B)
        nb = blocks or (20 if B > 4096 else 30)
        with torch.no_grad():
            if cuda:  # end to end from Python, as the student's graphed-student row
                graphed = GraphedSampler(diffusion, denoiser, B)
                rows.append(_with_rate(_measure(lambda: graphed(state), device, False, blocks=nb,
                                                provider="graphed-sampler", **fields), B))
            for graph in launches:
                rows.append(_with_rate(_measure(lambda: diffusion.sample_fast(denoiser, state, seed=seed), device,
                                                graph, blocks=nb, provider="sample-chain", **fields), B))

    for hidden, layers in shapes:
        torch.manual_seed(0)
        policy = FlowPolicy(state_dim, action_dim, FlowActorConfig(actor_hidden=hidden, actor_layers=layers))
        policy = policy.to(device)
        packed = policy.pack()
        flops = student_flops(state_dim, action_dim, hidden, layers)
        for B in batches:
            state = torch.randn(B, state_dim, device=device)
            seed = torch.tensor([1], dtype=torch.int64, device=device)

            def noise(B=B):
                return torch.randn(B, action_dim, device=device)

            def reference(state=state, noise=noise):
                return student_forward_ref(packed, state, noise())

            providers = {"reference": reference, "module": lambda state=state: policy.sample(state)}
            if compile_ref:
                providers["compile"] = torch.compile(reference, dynamic=False)
            for prec in precisions:
                providers[f"triton-{prec}"] = (lambda prec=prec, state=state, noise=noise:
                                               student_forward_triton(packed, state, noise(), precision=prec))
            providers["triton-bf16-philox"] = (lambda state=state, seed=seed:
                                               student_forward_triton(packed, state, seed=seed, precision="bf16"))
            fields = dict(op="student", hidden=hidden, layers=layers, T=1, batch=B)
            nb = blocks or (20 if B > 4096 else 30)
            batch_rows = []
            with torch.no_grad():
                if cuda:  # end to end from Python: copy states in, replay, return the buffer
                    graphed = GraphedStudent(policy, B)
                    batch_rows.append(_measure(lambda: graphed(state), device, False, blocks=nb,
                                               provider="graphed-student", **fields))
                for provider, fn in providers.items():
                    for graph in launches:
                        batch_rows.append(_measure(fn, device, graph, blocks=nb, provider=provider, **fields))
            for r in batch_rows:
                if "median_us" in r:
                    _with_rate(r, B)
                    r["tflop_per_s"] = r["actions_per_s"] * flops / 1e12
            rows += batch_rows
    return _with_radac_ratio(_with_speedups(rows, ("op", "hidden", "layers", "batch", "launch")))


def _with_radac_ratio(rows):
    """ratio_vs_radac_sampler on the student's rows: RADAC's graphed-sampler (else eager
    sample-chain) time at the same batch over the row's time."""
    base = {}
    for provider, launch in (("sample-chain", "eager"), ("graphed-sampler", "eager")):  # the latter wins
        base.update({r["batch"]: r["median_us"] for r in rows if r["op"] == "radac-sampler"
                     and r["provider"] == provider and r["launch"] == launch and "median_us" in r})
    for r in rows:
        if r["op"] == "student" and "median_us" in r and r["batch"] in base:
            r["ratio_vs_radac_sampler"] = base[r["batch"]] / r["median_us"]
    return rows


def _with_rate(row, batch):
    if "median_us" in row:
        row["actions_per_s"] = batch / (row["median_us"] * 1e-6)
    return row


def _with_speedups(rows, key_fields):
    """Add speed-up vs the eager reference (and vs torch.compile) measured in the same run."""
    def key(r):
        return tuple(r[k] for k in key_fields if k != "launch")

    rows_ok = [r for r in rows if "median_us" in r]
    ref = {key(r): r["median_us"] for r in rows_ok if r["provider"] == "reference" and r["launch"] == "eager"}
    comp = {key(r): r["median_us"] for r in rows_ok if r["provider"] == "compile" and r["launch"] == "eager"}
    for r in rows_ok:
        if key(r) in ref:
            r["speedup_vs_reference"] = ref[key(r)] / r["median_us"]
        if key(r) in comp:
            r["speedup_vs_compile"] = comp[key(r)] / r["median_us"]
    return rows


def markdown_table(rows, columns) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def top_kernel_tables(rows) -> str:
    """Markdown sections listing each row's costliest kernels (rows measured with top_kernels)."""
    parts = []
    for r in rows:
        if r.get("top_kernels"):
            table = markdown_table(r["top_kernels"], ["us_per_update", "per_update", "name"])
            seeds = f", {r['seeds']} seeds {r['layout']}" if r.get("layout") else ""
            parts.append(f"\n\n### batch {r['batch']}, {r['path']}{seeds}: costliest kernels per update\n\n{table}")
    return "".join(parts)


def write_results(path, kind: str, rows: list[dict], device, settings: dict) -> None:
    atomic_write_json(path, {"kind": kind, "settings": settings, "provenance": provenance(device), "results": rows})


def load_results(path) -> dict:
    with open(path) as f:
        return json.load(f)


# --------------------------------------------------------------------------
# training step
# --------------------------------------------------------------------------
TRAIN_PATHS = {  # name: (kernel backend, CUDA graph, bf16, torch.compile of the update's pieces)
    "eager-reference": ("reference", False, False, False),
    "eager-kernels": ("auto", False, False, False),
    "graph-reference": ("reference", True, False, False),
    "graph-kernels": ("auto", True, False, False),
    "graph-kernels-bf16": ("auto", True, True, False),
    "graph-compile": ("auto", True, False, True),
    "graph-compile-bf16": ("auto", True, True, True),
}


def gpu_activity_per_call(fn, calls: int = 5, top: int = 0) -> dict:
    """GPU kernels (and copies/memsets) per call of fn and their summed busy time, from torch.profiler.

    top > 0 adds the `top` kernel names with the most time per call.
    """
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    out = {"kernels_per_update": len(events) / calls,
           "gpu_busy_us_per_update": sum(e.time_range.elapsed_us() for e in events) / calls}
    if top:
        per_name: dict[str, list] = {}
        for e in events:
            acc = per_name.setdefault(e.name[:120], [0, 0.0])
            acc[0] += 1
            acc[1] += e.time_range.elapsed_us()
        ranked = sorted(per_name.items(), key=lambda kv: -kv[1][1])[:top]
        out["top_kernels"] = [{"name": k, "per_update": n / calls, "us_per_update": t / calls} for k, (n, t) in ranked]
    return out


def bench_train(device, batches=(256, 1024, 4096, 16_384), paths=tuple(TRAIN_PATHS), preset="halfcheetah-medium-expert",
                seconds=2.0, warmup=5, gpu_activity=True, top_kernels=0, algo="radac") -> list[dict]:
    """Updates/s of an agent's full update (RADAC: risk term on) for each path and batch size.

    gpu_activity: also count the GPU kernels of one update and their summed run
    time (torch.profiler), which says whether launches or the kernels themselves
    bound the update; top_kernels > 0 lists the kernels that take the most time.
    """
    from ..agents import make_agent
    from ..config import build_configs, risk_from_step_one
    from ..data.container import synthetic_dataset
    from ..train.updaters import make_updater

    agent_cfg, _ = build_configs(preset, algo, agent_overrides=risk_from_step_one(algo))
    rows = []
    data = synthetic_dataset(device=device)
    for B in batches:
        for name in paths:
            backend, graph, bf16, compiled = TRAIN_PATHS[name]
            row = dict(op="train", batch=B, path=name, provider=name, launch="graph" if graph else "eager")
            try:
                t_setup = time.perf_counter()
                with kernels.use(backend):
                    torch.manual_seed(0)
                    agent = make_agent(algo, data.state_dim, data.action_dim, agent_cfg).to(device)
                    # the trainer's choice of updater: eager paths get exactly its plain loop
                    upd = make_updater(agent, data, B, graph=graph, bf16=bf16, compile=compiled, warmup=warmup)
                    for _ in range(warmup + 2):  # eager warm-up (and compilation), capture, first replays
                        upd.step()
                    torch.cuda.synchronize()
                    row["setup_s"] = time.perf_counter() - t_setup
                    n, elapsed = timed_steps(upd.step, seconds, max_chunk=200)
                    if gpu_activity:
                        row.update(gpu_activity_per_call(upd.step, top=top_kernels))
                    means, first_bad = upd.metrics.read()
                row.update(updates_per_s=n / (elapsed / 1e3), samples_per_s=B * n / (elapsed / 1e3),
                           median_us=elapsed * 1e3 / n, updates=n, finite=first_bad < 0)
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            rows.append(row)
            print({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items() if k != "top_kernels"},
                  flush=True)
            del row
            torch.cuda.empty_cache()
    ref = {r["batch"]: r["median_us"] for r in rows if r["path"] == "eager-reference" and "median_us" in r}
    for r in rows:
        if "median_us" in r and r["batch"] in ref:
            r["speedup_vs_reference"] = ref[r["batch"]] / r["median_us"]
    return rows


def timed_steps(step, seconds: float, max_chunk: int, most: int = 5_000) -> tuple[int, float]:
    """(calls, milliseconds) of step() called in doubling chunks, each timed with CUDA events,
    until `seconds` of GPU time or `most` calls."""
    n, elapsed, chunk = 0, 0.0, 1
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    while elapsed < seconds * 1e3 and n < most:
        start.record()
        for _ in range(chunk):
            step()
        end.record()
        end.synchronize()
        elapsed += start.elapsed_time(end)
        n += chunk
        chunk = min(chunk * 2, max_chunk)
    return n, elapsed


def bench_train_seeds(device, seeds=(1, 2, 4, 8, 16, 32), batches=(256, 4096), path="graph-compile-bf16",
                      preset="halfcheetah-medium-expert", seconds=2.0, warmup=3, algo="radac",
                      layouts=("side", "stacked"), top_kernels=0) -> list[dict]:
    """Seed-updates/s of K seeds for each K, batch size and layout, and the GPU memory they hold.
    top_kernels > 0 also counts one group update's kernels and lists the costliest (as bench_train).
    side: side by side (ramac.train.updaters.SeedsUpdater: on CUDA one graph holds every seed's
    update, a stream each); stacked: one computation over parameters with a seed dimension
    (ramac.train.stacked, RAMAC_STACK_SEEDS=1; K = 1 is not stacked and is left out).

    K = 1 replays the agent's own graph (SeedsUpdater's one-agent case); the single-seed path
    (`bench_train`) is timed in the same call for the ratio."""
    from ..agents import make_agent
    from ..config import build_configs, risk_from_step_one
    from ..data.container import synthetic_dataset
    from ..train.updaters import make_seeds_updater

    backend, graph, bf16, compiled = TRAIN_PATHS[path]
    agent_cfg, _ = build_configs(preset, algo, agent_overrides=risk_from_step_one(algo))
    data = synthetic_dataset(device=device)
    rows = []
    for B in batches:
        single = bench_train(device, batches=(B,), paths=(path,), preset=preset, seconds=seconds, warmup=warmup,
                             gpu_activity=False, algo=algo)[0]
        single.update(op="train-single", seeds=1)
        rows.append(single)
        side = {}
        for layout, K in ((layout, K) for K in seeds for layout in layouts if K > 1 or layout == "side"):
            row = dict(op="train-seeds", batch=B, path=path, seeds=K, layout=layout, algo=algo)
            try:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                t_setup = time.perf_counter()
                with kernels.use(backend), _env("RAMAC_STACK_SEEDS", "1" if layout == "stacked" else "0"):
                    agents = []
                    for k in range(K):
                        torch.manual_seed(k)
                        agent = make_agent(algo, data.state_dim, data.action_dim, agent_cfg).to(device)
                        agent.seed_noise(k)
                        agents.append(agent)
                    group = make_seeds_updater(agents, data, B, graph=graph, bf16=bf16, compile=compiled, warmup=warmup)
                    for _ in range(warmup + 2):
                        group.step()
                    torch.cuda.synchronize()
                    row["setup_s"] = time.perf_counter() - t_setup
                    n, elapsed = timed_steps(group.step, seconds, max_chunk=100)
                    if top_kernels:
                        row.update(gpu_activity_per_call(group.step, top=top_kernels))
                    finite = all(u.metrics.read()[1] < 0 for u in group.updaters)
                row.update(group_updates_per_s=n / (elapsed / 1e3), seed_updates_per_s=K * n / (elapsed / 1e3),
                           samples_per_s=K * B * n / (elapsed / 1e3), median_us=elapsed * 1e3 / n, updates=n,
                           finite=finite, peak_memory_mb=(torch.cuda.max_memory_allocated(device) - base) / 2**20)
                if single.get("updates_per_s"):
                    row["vs_single_seed"] = row["seed_updates_per_s"] / single["updates_per_s"]
                if layout == "side":
                    side[K] = row["seed_updates_per_s"]
                elif side.get(K):
                    row["vs_side_by_side"] = row["seed_updates_per_s"] / side[K]
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            rows.append(row)
            print({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items() if k != "top_kernels"},
                  flush=True)
            agents = group = None
    return rows


@contextlib.contextmanager
def _env(name: str, value: str):
    """os.environ[name] = value inside the block, as it was after."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
