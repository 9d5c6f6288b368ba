"""Updaters: how an agent's update runs. They use only the agent contract (ramac.agents.base).

The fast path: GPU-resident data and the agent's whole update as one CUDA graph.

Per step the host does one thing: replay a graph on the current stream (no host
synchronisation; metric reads and evaluation are ordered after it by the stream).
Inside it: mini-batch indices drawn on the device, both critic losses and
Adam steps, the actor loss through the sampling chain and its Adam step,
gradient clipping, the EMA actor on its schedule, Polyak targets, and the
metric sums. Schedules read a step counter that lives on the device, so one
graph serves every step of a phase; the host picks the graph of the agent's
phase (RADAC: BC-only warm-up, or with the risk term) because it knows the step
count without asking the GPU. Metrics are read back every N steps (one synchronisation).

With `graph=False` the same update runs eagerly (the CPU and debugging path);
`bf16=True` runs the networks under bf16 autocast with fp32 master weights (the
quantile-Huber loss is computed in fp32 either way); `compile=True` runs both
losses, the optimiser steps and the averaging through torch.compile first (fewer,
fused kernels inside the graph).
"""

from __future__ import annotations

import contextlib
import os

import torch

from ..agents.base import inductor_options
from ..data import OfflineDataset
from ..cuda_graphs import on_side_stream
from ..nvtx import nvtx_range

LOSS_KEYS = ("critic/loss1", "critic/loss2", "actor/loss")


class DeviceMetrics:
    """Metric sums and the first step (counting from 1) with a non-finite loss, kept on the device
    with in-place ops only. shape: () for one agent, (K,) for K stacked seeds (a sum and a first
    bad step per seed; ramac.train.stacked reads each seed's column)."""

    def __init__(self, shape: tuple = ()):
        self.shape = tuple(shape)
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}  # updates that reported each metric (ORAAC's actor: every 2nd)
        self.first_bad = None
        self.count = 0
        # a data-parallel run: read() combines the processes' sums (every process reads at the same steps)
        self.reduce = None

    def add(self, info: dict, step) -> None:
        """info: one update's metrics; step: the number of updates made so far, that one included.
        The sums and counts of all its metrics in two multi-tensor launches (where one add per
        metric and count took ~20 of an update's ~450 kernels at batch 256)."""
        values = {k: v.detach().float() for k, v in info.items()}
        for k, v in values.items():
            if k not in self.sums:
                self.sums[k] = torch.zeros(self.shape, device=v.device)
                self.counts[k] = torch.zeros(self.shape, device=v.device)
        if values:
            torch._foreach_add_([self.sums[k] for k in values], list(values.values()))
            torch._foreach_add_([self.counts[k] for k in values], 1.0)
        loss = sum(info[k].float() for k in LOSS_KEYS if k in info)
        if self.first_bad is None:
            self.first_bad = torch.full(self.shape, -1, dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss) & (self.first_bad < 0)
        self.first_bad.copy_(torch.where(bad, step, self.first_bad))

    def read(self) -> tuple[dict, int]:
        """(each metric's mean over the updates since the last read that reported it, first step
        with a non-finite loss or -1); one sync. A metric no update reported since is left out."""
        if not self.count:
            return {}, -1
        keys = list(self.sums)
        sums, counts = torch.stack([self.sums[k] for k in keys]), torch.stack([self.counts[k] for k in keys])
        first_bad = self.first_bad
        if self.reduce is not None:
            sums, counts, first_bad = self.reduce(sums, counts, first_bad)
        sums, counts = sums.tolist(), counts.tolist()
        means = {k: s / c for k, s, c in zip(keys, sums, counts) if c > 0}
        first_bad = int(first_bad)
        for v in (*self.sums.values(), *self.counts.values()):
            v.zero_()
        self.first_bad.fill_(-1)
        self.count = 0
        return means, first_bad


def batch_indices(agent, data: OfflineDataset, batch_size: int) -> torch.Tensor:
    """The update's mini-batch: uniform indices from the agent's noise at its device step (so eager,
    graphed and compiled runs, and seeds side by side, read the same batches; with a data-parallel
    shard, this process's part of the global batch)."""
    return agent.noise("data").randint("indices", data.size, (batch_size,))


class EagerUpdater:
    """Plain loop: draw a batch (batch_indices), call agent.update, accumulate metrics."""

    def __init__(self, agent, data: OfflineDataset, batch_size: int):
        self.agent, self.data, self.batch_size = agent, data, batch_size
        self.metrics = DeviceMetrics()

    def _batch(self):
        return self._draw_batch()

    def _draw_batch(self):
        return self.data.gather(batch_indices(self.agent, self.data, self.batch_size))

    def step(self) -> None:
        with nvtx_range("data"):
            batch = self._batch()
        info = self.agent.update(batch)
        self.agent.advanced()
        with nvtx_range("metrics"):
            self.metrics.add(info, self.agent.steps)
        self.metrics.count += 1

    def sync(self) -> None:
        self.agent.sync()


def set_optimizer_kernels(optimizers, capturable: bool, fused: bool) -> None:
    """capturable: Adam keeps its step counts on the device (CUDA graphs); fused: one kernel
    per optimiser step instead of the multi-tensor path."""
    for opt in optimizers:
        for group in opt.param_groups:
            group["capturable"] = capturable
            if fused:
                group["fused"], group["foreach"] = True, False


class FastUpdater:
    """An agent's updates replayed from CUDA graphs (one per phase) over a device-resident data set.

    indices="device": batch indices drawn inside the graph (batch_indices);
    indices="given": the caller passes them to step() (equivalence tests).
    """

    def __init__(self, agent, data: OfflineDataset, batch_size: int, graph: bool = True, bf16: bool = False,
                 indices: str = "device", warmup: int = 3, compile: bool = False):
        if indices not in ("device", "given"):
            raise ValueError(f"indices must be 'device' or 'given', got {indices!r}")
        device = data.obs.device
        if graph and device.type != "cuda":
            raise ValueError("CUDA graphs need the data set on a CUDA device")
        self.agent, self.data, self.batch_size = agent, data, batch_size
        self.graph, self.bf16, self.indices, self.warmup = graph, bf16, indices, warmup
        # the mini-batch: indices drawn from the device step and the five gathers, one compiled
        # function where the update compiles (Inductor fuses the draw's integer hashing, ~25 eager
        # kernels, and the gathers)
        self._draw = (torch.compile(self._draw_batch, dynamic=False, options=inductor_options(bf16)) if compile
                      else self._draw_batch)
        if compile:  # compiled on the first (eager warm-up) step of each phase
            agent.compile_update(bf16=bf16)
        self.device = device
        # on CUDA: capturable and fused Adam; RAMAC_ADAM=foreach keeps the multi-tensor path (to
        # measure what fusing gains); compiled updates trace the multi-tensor path, which Inductor fuses
        fused = device.type == "cuda" and os.environ.get("RAMAC_ADAM", "fused") == "fused" and not compile
        set_optimizer_kernels(agent.optimizers(), capturable=device.type == "cuda", fused=fused)
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.metrics = DeviceMetrics()
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.graphs: dict = {}
        self.eager_runs: dict = {}

    def _update(self) -> None:
        """One update, written to be capturable: no host reads; the agent's schedules read its device step."""
        with nvtx_range("data"):
            b = self._batch()
        # cache_enabled=False: autocast's weight-cast cache does not survive graph replays
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False) if self.bf16
                    else contextlib.nullcontext())
        with autocast:
            info = self.agent.update(b)
        with nvtx_range("metrics"):
            self.metrics.add(info, self.agent.step_t)  # the device step, advanced by the update

    def _batch(self):
        if self.indices == "device":
            return self._draw()
        return self.data.gather(self.idx)

    def _draw_batch(self):
        self.idx.copy_(batch_indices(self.agent, self.data, self.batch_size))
        return self.data.gather(self.idx)

    def step(self, indices: torch.Tensor | None = None) -> None:
        """One update on the current stream: eager (CPU, warm-up) or a graph replay."""
        if (indices is None) != (self.indices == "device"):
            raise ValueError("pass indices to step() exactly when the updater was built with indices='given'")
        phase = self.agent.phase()
        if indices is not None:
            self.idx.copy_(indices, non_blocking=True)
        if not self.graph:
            self._update()
        elif self.eager_runs.get(phase, 0) < self.warmup:  # real steps that warm the graph's memory up
            if self.graphs:  # after replays of another phase's graph: drop what they made stale (packs)
                self.agent.sync()
            with on_side_stream(self.stream):
                self._update()
            self.eager_runs[phase] = self.eager_runs.get(phase, 0) + 1
        else:
            if phase not in self.graphs:
                self.graphs[phase] = self._capture()
            self.graphs[phase].replay()
        self.agent.advanced()
        self.metrics.count += 1

    def _capture(self) -> torch.cuda.CUDAGraph:
        self.agent.before_capture()
        graph = torch.cuda.CUDAGraph()
        with on_side_stream(self.stream), torch.cuda.graph(graph, stream=self.stream):
            self._update()  # recorded, not run: the agent's device step does not advance here
        return graph

    def sync(self) -> None:
        """Before evaluating or saving: the agent drops what graph replays made stale.

        Replays run on the current stream, so later work (metric reads, evaluation,
        checkpoints) is ordered after them without waiting here.
        """
        self.agent.sync()


def fast_path(data: OfflineDataset, graph: bool, bf16: bool, compile: bool) -> tuple[bool, bool, bool]:
    """(whether the fast path applies, graph, compile) on the data's device: graph and compile only
    on CUDA, bf16 anywhere; without any of them the plain loop runs."""
    cuda = data.obs.device.type == "cuda"
    graph, compile = graph and cuda, compile and cuda
    return graph or bf16 or compile, graph, compile


def make_updater(agent, data: OfflineDataset, batch_size: int, *, graph: bool = True, bf16: bool = False,
                 compile: bool = True, warmup: int = 3):
    """The fast path where one of its features applies (fast_path), else the plain loop."""
    fast, graph, compile = fast_path(data, graph, bf16, compile)
    if fast:
        return FastUpdater(agent, data, batch_size, graph=graph, bf16=bf16, warmup=warmup, compile=compile)
    return EagerUpdater(agent, data, batch_size)


class SeedsUpdater:
    """The updates of several agents (one per seed) made together: on CUDA, one CUDA graph per
    phase holds every agent's whole update, each on a stream of its own, so that the GPU runs
    the agents' small kernels side by side (one launch for all of them); elsewhere one after
    another. Each agent keeps its own updater (`updaters`: its batches, metrics and, through
    ramac.noise, its own random numbers), so agent i computes what it computes alone.

    step(active): one update of the agents whose indices are in `active` (default: all).
    """

    def __init__(self, updaters: list, graph: bool = True, warmup: int = 3):
        self.updaters, self.warmup = list(updaters), warmup
        cuda = all(isinstance(u, FastUpdater) and u.device.type == "cuda" for u in self.updaters)
        self.graph = graph and cuda
        # one agent that graphs its own updates (make_seeds_updater builds it so): its updater steps
        # alone, without the fork and join of the side streams (the group path measured 14 % slower
        # than the single-seed one at K = 1, batch 256, H200)
        self.single = self.graph and len(self.updaters) == 1 and self.updaters[0].graph
        if self.graph and not self.single:
            device = self.updaters[0].device
            self.stream = torch.cuda.Stream(device)
            self.streams = [torch.cuda.Stream(device) for _ in self.updaters]
        self.graphs: dict = {}
        self.eager_runs: dict = {}

    def step(self, active=None) -> None:
        active = tuple(range(len(self.updaters))) if active is None else tuple(active)
        if self.single:
            if active:
                self.updaters[0].step()
            return
        if not self.graph:
            for i in active:
                self.updaters[i].step()
            return
        key = tuple((i, self.updaters[i].agent.phase()) for i in active)
        if self.eager_runs.get(key, 0) < self.warmup:
            if self.graphs:  # after replays of other graphs: drop what they made stale (packs)
                for i in active:
                    self.updaters[i].agent.sync()
            with on_side_stream(self.stream):
                self._update(active)
            self.eager_runs[key] = self.eager_runs.get(key, 0) + 1
        else:
            if key not in self.graphs:
                self.graphs[key] = self._capture(active)
            self.graphs[key].replay()
        for i in active:
            self.updaters[i].agent.advanced()
            self.updaters[i].metrics.count += 1

    def _update(self, active) -> None:
        """Each agent's update on its own stream, forked from and joined back to the current one."""
        here = torch.cuda.current_stream()
        for i in active:
            self.streams[i].wait_stream(here)
            with torch.cuda.stream(self.streams[i]):
                self.updaters[i]._update()
        for i in active:
            here.wait_stream(self.streams[i])

    def _capture(self, active) -> torch.cuda.CUDAGraph:
        for i in active:
            self.updaters[i].agent.before_capture()
        graph = torch.cuda.CUDAGraph()
        with on_side_stream(self.stream), torch.cuda.graph(graph, stream=self.stream):
            self._update(active)
        return graph

    def sync(self) -> None:
        for u in self.updaters:
            u.sync()


def make_seeds_updater(agents, data: OfflineDataset, batch_size, *, graph: bool = True, bf16: bool = False,
                       compile: bool = True, warmup: int = 3, stack: bool = True):
    """make_updater's choice for each agent, stepped together (see SeedsUpdater); batch_size: one
    for all, or one per agent. With RAMAC_STACK_SEEDS=1 and stack (the runs start and end at the
    same steps), agents of one class and settings are stacked instead (one computation over
    parameters with a seed dimension: ramac.train.stacked). Compiled, each
    agent's methods are a guarded entry of the same compiled code (Inductor's cache makes the second
    and later ones cheap): the recompile limits grow with the number of agents."""
    cuda = data.obs.device.type == "cuda"
    if compile and cuda:
        cfg = torch._dynamo.config
        cfg.recompile_limit = max(cfg.recompile_limit, 64, 4 * len(agents) + 8)
        if hasattr(cfg, "accumulated_recompile_limit"):
            cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 32 * len(agents) + 256)
    sizes = [batch_size] * len(agents) if isinstance(batch_size, int) else list(batch_size)
    if stack and os.environ.get("RAMAC_STACK_SEEDS") == "1" and len(set(sizes)) == 1:
        from .stacked import StackedSeedsUpdater, unstackable

        if unstackable(agents) is None:  # else side by side, as below
            return StackedSeedsUpdater(agents, data, sizes[0], graph=graph, bf16=bf16, compile=compile, warmup=warmup)
    fast, graph, compile = fast_path(data, graph, bf16, compile)
    alone = graph and len(agents) == 1  # one agent graphs its own updates
    updaters = [FastUpdater(a, data, b, graph=alone, bf16=bf16, compile=compile, warmup=warmup) if fast
                else EagerUpdater(a, data, b) for a, b in zip(agents, sizes)]
    return SeedsUpdater(updaters, graph=graph, warmup=warmup)
