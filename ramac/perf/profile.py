"""`ramac profile`: where an update's time goes, per phase of the update and per kernel.

A short training run on synthetic data of HalfCheetah's shape. Warm-up steps (compilation,
graph capture) run first, outside every window. Then
  1. a timed window of `steps` updates; on CUDA bracketed by cudaProfilerStart/Stop, with the
     NVTX ranges of ramac.nvtx, for Nsight Systems / Compute;
  2. a window of `table_steps` updates under torch.profiler (CUDA activity on a GPU, CPU ops
     otherwise) whose kernels are grouped by phase of the update.

The phases are the ranges of ramac.nvtx, which open a torch.profiler.record_function of the
same name when recording is on: annotations named like log keys (`critic/loss`, `ema_targets`).
Inside a `*/step` range torch's own markers split the backward (autograd::engine::evaluate_function)
and the optimiser step (Optimizer.step#...) from the rest (gradient clipping, the gradients'
contiguous copies). A kernel belongs to the innermost range open when the op that launched it
started, on whichever thread (CUDA backward runs on autograd's device thread, while the
caller waits inside its range). RADAC's phases, in order: data, critic/loss (target critics,
critics, quantile-Huber loss), critic/next_action (the EMA actor's next action, inside
critic/loss), critic/backward, critic/optimizer, critic/step, actor/loss, actor/sample (the
chain with gradients), actor/backward, actor/optimizer, actor/step, ema_targets, metrics and
update/other (the rest of the update: schedules, the step counter).

With graph=True an update is one CUDA-graph replay, launched outside the phase ranges (they ran
at capture): every kernel lands in update/other and only the kernels table says where the time
goes. The per-phase table needs the ungraphed path (the default). With compile=True the ranges
inside compiled methods (actor/sample, critic/next_action) are traced by torch.compile, which
drops them (or breaks the graph there): their kernels may count to the enclosing range.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left, bisect_right

import torch

from ..nvtx import enable, nvtx_range

WINDOW = "update"  # the range around each profiled update is "update {i}"
OTHER = "update/other"  # in an update, outside every phase range
OUTSIDE = "(outside the updates)"
_PHASE_NAME = re.compile(r"[a-z_]+(/[a-z_]+)*")  # log-key names: ours, not torch's own annotations
_BACKWARD = "autograd::engine::evaluate_function"
_OPTIMIZER = ("Optimizer.step#", "Optimizer.zero_grad#")
GRAPH_NOTE = ("graph=True: each update is one CUDA-graph replay, launched outside the phase ranges (they ran "
              "at capture), so every kernel is counted in update/other: per-phase attribution is lost. Profile "
              "without --graph for the per-phase table; the kernels table holds either way.")


def run_profile(preset: str = "halfcheetah-medium-expert", batch: int = 256, warmup: int = 20, steps: int = 50,
                graph: bool = False, bf16: bool = False, device="cuda", compile: bool = False,
                algo: str = "radac", table_steps: int = 10, top: int = 15, tables: bool = True,
                overrides: dict | None = None) -> dict:
    """Warm-up, a timed window (Nsight's on CUDA), then the per-phase tables of a torch.profiler
    window (tables=False skips it: under Nsight, which holds CUPTI itself).

    The update is the fast updater's (fused capturable Adam on CUDA, as in training), replayed
    from a CUDA graph with graph=True, else run eagerly. Returns the window's wall-clock figures
    and, with tables, "phases", "top_kernels", "window" and "notes" (see phase_tables).
    """
    from ..agents import make_agent
    from ..config import build_configs, risk_from_step_one
    from ..data.container import synthetic_dataset
    from ..train.updaters import FastUpdater

    device = torch.device(device)
    cuda = device.type == "cuda"
    if graph and not cuda:
        raise ValueError("--graph replays CUDA graphs: it needs a CUDA device")
    # record_function ranges from the start: compiled code guards on the switch, so turning it on
    # after the warm-up would recompile inside the profiled window
    enable(True, record=tables)
    try:
        agent_cfg, _ = build_configs(preset, algo, agent_overrides={**risk_from_step_one(algo), **(overrides or {})})
        data = synthetic_dataset(device=device)
        torch.manual_seed(0)
        agent = make_agent(algo, data.state_dim, data.action_dim, agent_cfg).to(device)
        agent.fit_data(data)
        updater = FastUpdater(agent, data, batch, graph=graph, bf16=bf16, compile=compile)
        for _ in range(warmup):
            updater.step()
        _sync(device)
        if cuda:
            torch.cuda.cudart().cudaProfilerStart()
        t0 = time.perf_counter()
        with nvtx_range("steady"):
            for i in range(steps):
                with nvtx_range(f"{WINDOW} {i}"):
                    updater.step()
            updater.sync()
            with nvtx_range("eval/act"):
                agent.act(data.obs[:batch])
            _sync(device)
        wall = time.perf_counter() - t0
        if cuda:
            torch.cuda.cudart().cudaProfilerStop()
        out = {"algo": algo, "preset": preset, "device": str(device), "steps": steps, "batch": batch, "graph": graph,
               "bf16": bf16, "compile": compile, "wall_s": wall, "updates_per_s": steps / wall if steps else None}
        if tables:
            out.update(_profiled_window(updater, device, table_steps, top))
            if graph:
                out["notes"].insert(0, GRAPH_NOTE)
        return out
    finally:
        enable(False)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _profiled_window(updater, device, steps: int, top: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for i in range(steps):
            with nvtx_range(f"{WINDOW} {i}"):
                updater.step()
        _sync(device)
        wall = time.perf_counter() - t0
    out = phase_tables(prof.events(), steps, device_time=cuda, top=top)
    out["window"]["profiled_wall_us_per_update"] = wall * 1e6 / max(steps, 1)
    return out


def phase_tables(events, steps: int, device_time: bool, top: int = 15) -> dict:
    """Group a torch.profiler window's kernels by phase of the update.

    events: the window's profiler events (prof.events()) over `steps` updates, each inside an
    "update {i}" range; device_time: count the CUDA kernels (and copies) each op launched, else
    the CPU ops' self time (on CPU, the ops are the kernels).
    Returns {"phases": [{phase, kernels_per_update, us_per_update, percent}] in order of first
    launch, "top_kernels": [{name, calls_per_update, us_per_update, percent}] (the `top` costliest),
    "window": {...totals...}, "notes": [...]}. The window's total is counted apart from the
    phases (all device events; on CPU the summed self times of the window's ops), so that the
    phases summing to it checks that every kernel was counted once.
    """
    cpu = torch.autograd.DeviceType.CPU
    # names of record_function ranges: with CUDA activity the profiler may also show each range as a
    # span on the GPU timeline (gpu_user_annotation), which is no kernel
    annotations = {e.name for e in events if e.is_user_annotation}
    ranges = []
    for e in events:
        if e.is_user_annotation and e.device_type == cpu:
            if e.name.startswith(WINDOW + " "):
                ranges.append((e.time_range.start, e.time_range.end, OTHER))
            elif _PHASE_NAME.fullmatch(e.name):
                ranges.append((e.time_range.start, e.time_range.end, e.name))
    phase_at = _innermost(ranges)

    phases: dict[str, list] = {}  # name -> [kernels, us, first start]
    kernels: dict[str, list] = {}  # name -> [calls, us]
    for e in events:
        if e.device_type != cpu or e.is_async:
            continue
        if device_time:
            launched = [(k.name, k.duration) for k in e.kernels if k.name not in annotations]
        else:
            launched = [] if e.is_user_annotation else [(e.name, e.self_cpu_time_total)]
        if not launched:
            continue
        start = e.time_range.start
        name = _sub_phase(phase_at(start) or OUTSIDE, _part(e))
        acc = phases.setdefault(name, [0, 0.0, start])
        acc[2] = min(acc[2], start)
        for kname, us in launched:
            acc[0] += 1
            acc[1] += us
            k = kernels.setdefault(kname[:160], [0, 0.0])
            k[0] += 1
            k[1] += us

    total = _window_total(events, device_time, annotations)
    attributed = sum(acc[1] for acc in phases.values())
    n = max(steps, 1)

    def pct(us):
        return 100.0 * us / total if total > 0 else 0.0

    rows = [{"phase": name, "kernels_per_update": acc[0] / n, "us_per_update": acc[1] / n, "percent": pct(acc[1])}
            for name, acc in sorted(phases.items(), key=lambda kv: kv[1][2])]
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]
    top_rows = [{"name": name, "calls_per_update": c / n, "us_per_update": us / n, "percent": pct(us)}
                for name, (c, us) in ranked]
    notes = []
    if device_time and total == 0:
        notes.append("no CUDA activity was recorded (another profiler, such as Nsight, may hold CUPTI: "
                     "use --no-tables under Nsight)")
    if total > 0 and abs(total - attributed) > 0.01 * total:
        notes.append(f"{total - attributed:.0f} us of the window's {total:.0f} us were launched by no op the "
                     "profiler recorded (not in any phase)")
    window = {"activity": "cuda" if device_time else "cpu", "steps": steps,
              "total_us_per_update": total / n, "attributed_us_per_update": attributed / n,
              "kernels_per_update": sum(acc[0] for acc in phases.values()) / n}
    return {"phases": rows, "top_kernels": top_rows, "window": window, "notes": notes}


def _innermost(ranges):
    """t -> the label of the innermost of `ranges` ((start, end, label), nested or disjoint)
    that holds t, or None."""
    bounds = sorted({x for s, e, _ in ranges for x in (s, e)})
    labels = [None] * len(bounds)  # labels[i]: the interval [bounds[i], bounds[i + 1])
    for s, e, label in sorted(ranges, key=lambda r: r[0] - r[1]):  # outer (longer) first, inner overwrite
        i, j = bisect_left(bounds, s), bisect_left(bounds, e)
        labels[i:j] = [label] * (j - i)

    def at(t):
        i = bisect_right(bounds, t) - 1
        return labels[i] if 0 <= i < len(labels) else None

    return at


def _part(e):
    """"backward" or "optimizer" when the op ran inside torch's marker of either (the nearest one
    below the phase range), else None."""
    while e is not None:
        if e.name.startswith(_BACKWARD):
            return "backward"
        if e.name.startswith(_OPTIMIZER):
            return "optimizer"
        if e.is_user_annotation and _PHASE_NAME.fullmatch(e.name):
            return None
        e = e.cpu_parent
    return None


def _sub_phase(phase: str, part) -> str:
    if part is None:
        return phase
    if phase.endswith("/step"):  # critic/step -> critic/backward, critic/optimizer
        return phase[: -len("step")] + part
    return f"{phase} ({part})"


def _window_total(events, device_time: bool, annotations: set) -> float:
    """All device events of the window (kernels, copies, memsets), or on CPU the summed self time
    of its ops from the profiler's own aggregation."""
    if device_time:
        return sum(e.time_range.elapsed_us() for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                   and not e.is_user_annotation and e.name not in annotations)
    return sum(a.self_cpu_time_total for a in events.key_averages() if a.key not in annotations)


def markdown(result: dict) -> str:
    """The per-phase and kernels tables of run_profile's result, as markdown."""
    w = result["window"]
    unit = "GPU" if w["activity"] == "cuda" else "CPU"
    head = "| {} | {} / update | us / update | % of update |"
    lines = [f"## Phases of the update ({unit} time per update, {w['steps']} profiled updates, "
             f"batch {result['batch']})", "", head.format("phase", "kernels"), "|---|---|---|---|"]
    for r in result["phases"]:
        lines.append(f"| {r['phase']} | {r['kernels_per_update']:.1f} | {r['us_per_update']:.1f} | "
                     f"{r['percent']:.1f} |")
    lines.append(f"| total | {w['kernels_per_update']:.1f} | {w['total_us_per_update']:.1f} | 100 |")
    lines += ["", f"## Costliest kernels ({unit} time per update)", "", head.format("kernel", "calls"),
              "|---|---|---|---|"]
    for r in result["top_kernels"]:
        lines.append(f"| `{r['name']}` | {r['calls_per_update']:.1f} | {r['us_per_update']:.1f} | "
                     f"{r['percent']:.1f} |")
    lines.append("")
    line = f"Wall clock per update: {w['profiled_wall_us_per_update']:.0f} us under the profiler"
    if result.get("updates_per_s"):
        line += (f", {1e6 / result['updates_per_s']:.0f} us in the timed window of {result['steps']} updates "
                 "(with one evaluation call at its end)")
    lines.append(line + ".")
    lines += [f"\nNote: {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"
