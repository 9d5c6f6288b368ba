"""CUDA-graph helpers: capture a callable once on a side stream and replay it."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def on_side_stream(stream: torch.cuda.Stream | None):
    """Run the block on `stream`, after the current stream's queued work and before its later work.

    Warm-up and capture of a CUDA graph share one side stream (eager work on the
    capturing stream right before capture makes it fail); replays then run on the
    current stream. stream=None (the CPU path) runs the block as it is.
    """
    if stream is None:
        yield
        return
    current = torch.cuda.current_stream()
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        yield
    current.wait_stream(stream)


def weights_version(params) -> tuple:
    """A key that changes when any of these parameters is replaced or updated in place eagerly
    (their storages and version counters). CUDA-graph replays do not bump version counters, so
    code that replays updates drops what it keyed on this (the samplers' forget_packs). None for
    weights that are one seed's slice inside torch.func.vmap (seeds stacked): they have no storage
    of their own, and what was packed from them must not outlive the call; callers cache nothing then."""
    params = list(params)
    if any(torch._C._functorch.is_functorch_wrapped_tensor(p) for p in params):
        return None
    return tuple((p.data_ptr(), p._version) for p in params)


def capture(fn, warmup: int = 3) -> torch.cuda.CUDAGraph:
    """Warm fn() up on a side stream, then capture one call into a CUDA graph on the same stream.

    The caller's current stream is restored whatever happens: torch.cuda.graph leaves its capture
    stream current when the capture fails, and all later work would then run on that dead stream.
    """
    caller = torch.cuda.current_stream()
    stream = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    try:
        with on_side_stream(stream):
            for _ in range(warmup):
                fn()
        with torch.cuda.graph(graph, stream=stream):
            fn()
    finally:
        torch.cuda.set_stream(caller)
    return graph


class GraphedSampler:
    """The one-launch chain sampler behind a CUDA graph, for a fixed batch size.

    A call copies the states into a static buffer, replays the graph (fresh
    Philox noise each replay: the seed buffer advances inside the graph) and
    returns the static output buffer, overwritten by the next call.
    """

    def __init__(self, diffusion, model, batch: int, device=None):
        device = device or next(model.parameters()).device
        self.diffusion, self.model = diffusion, model
        self.state = torch.zeros(batch, model.state_dim, device=device)
        self.seed = torch.randint(0, 2**31 - 1, (1,), dtype=torch.int64, device=device)
        self.packed = diffusion.pack(model)
        self.out = None

        def step():
            self.out = diffusion.sample_fast(model, self.state, seed=self.seed)
            self.seed.add_(1)

        self.graph = capture(step)

    @torch.no_grad()
    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        if self.diffusion.pack(self.model) is not self.packed:
            raise RuntimeError("the model's weights changed since capture; build a new GraphedSampler")
        self.state.copy_(state, non_blocking=True)
        self.graph.replay()
        return self.out


class GraphedStudent:
    """The flow policy's one-step student (`policy.sample_fast`) behind a CUDA graph, for a fixed
    batch size, as GraphedSampler: a call copies the states into a static buffer, replays (fresh
    torch noise each replay) and returns the static output buffer, overwritten by the next call.

    The weight check compares the parameters' versions recorded at capture (a few microseconds;
    walking `parameters()` for `policy.pack()` costs more than the graph replay at batch 1).
    """

    def __init__(self, policy, batch: int, device=None):
        device = device or next(policy.parameters()).device
        self.params = list(policy.actor.student.parameters())
        self.state = torch.zeros(batch, policy.actor.state_dim, device=device)
        self.packed = policy.pack()  # packed (and cast in warm-up) before capture: the graph reads it
        self.out = None

        def step():
            self.out = policy.sample_fast(self.state)

        self.graph = capture(step)
        self.key = weights_version(self.params)

    @torch.no_grad()
    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        if weights_version(self.params) != self.key:
            raise RuntimeError("the student's weights changed since capture; build a new GraphedStudent")
        self.state.copy_(state, non_blocking=True)
        self.graph.replay()
        return self.out
