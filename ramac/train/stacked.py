"""Seeds stacked: K agents of one class and settings, whose seeds alone differ, updated as one
computation (issue "Many seeds in one graph", item 1: stacked parameters and optimiser states).

One *stack* agent (a copy of the first) holds every parameter and buffer with a leading seed
dimension K; its update() is the agent's own, with three changes:
  - the methods that compute losses (the agent's `losses`, see ramac.agents.base) run under
    torch.func.vmap over the seeds: each seed's slice of the parameters, buffers and batch, so
    every draw of ramac.noise comes from that seed's noise seed, and a loss becomes K losses;
  - set_grads differentiates their sum: seed k's parameters get seed k's gradient alone;
  - the optimiser steps clip each seed's gradient norm on its own (one norm per seed, as
    clip_grad_norm_ on one run) and take one Adam step over the stacked tensors, which is K
    independent Adam steps (Adam is elementwise; every seed is at the same step).
EMA, Polyak averaging and the step counter are elementwise or shared, so they run as written.
The kernels count of an update is then about one seed's, each kernel K times wider.

The K agents stay: their parameters, buffers and optimiser states become views into the stack's
tensors (evaluation, checkpoints, `ramac eval` and resume work per seed as before; a checkpoint
saves its own seed's slice: Agent.full_state compacts views). Seed i computes what it computes
alone up to float rounding (tests/test_stacked.py).

Compiled (torch.compile), the optimiser steps and averaging compile as for one agent, and each
vmapped loss method compiles on its own, checked against its eager call (_PerSeed.compiled, which
Agent._compile_methods uses in place of torch.compile).

Opt in with RAMAC_STACK_SEEDS=1 (ramac.train.updaters.make_seeds_updater): on an H200 it pays
on the eager graphed path (graph-kernels-bf16: 16 seeds 1.45-2x side by side), but the compiled
path, ramac train's default, is not yet measured stacked against side by side (`ramac bench train
--seeds K --layouts side stacked --paths graph-compile-bf16`).
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict

import torch
from torch.nn.utils.stateless import _reparametrize_module

from ..data import Batch
from .updaters import DeviceMetrics, EagerUpdater, FastUpdater, batch_indices, fast_path

SHARED_BUFFERS = ("step_t",)  # one step counter for all seeds: they update together


def unstackable(agents) -> str | None:
    """Why these agents cannot be stacked (None: they can)."""
    first = agents[0]
    if len(agents) < 2:
        return "one seed"
    if not type(first).losses:
        return f"{type(first).__name__} does not name its loss methods (Agent.losses)"
    for a in agents[1:]:
        if type(a) is not type(first) or a.cfg != first.cfg:
            return "the agents differ in class or settings"
        if a.steps != first.steps:
            return "the agents are at different steps"
    if any(a.grad_sync is not None for a in agents):
        return "data-parallel agents"
    return None


class SeedStack:
    """The stack agent of K agents (see the module's docstring); `stack.agent` is the one the
    updater steps; `call(fn, *args)` runs fn(*args) once per seed under vmap, each seed's slice
    of the stack agent's state in place of the stacked one."""

    def __init__(self, agents: list):
        why = unstackable(agents)
        if why is not None:
            raise ValueError(f"cannot stack these seeds: {why}")
        self.agents, self.K = list(agents), len(agents)
        stack = copy.deepcopy(agents[0])
        stack.sync()  # no weight pack of the first agent's is kept
        named = [dict(a.named_parameters()) for a in agents]
        self.params: dict[str, torch.nn.Parameter] = {}
        replaced = {}
        for name, old in list(stack.named_parameters()):
            value = torch.stack([n[name].detach() for n in named])
            new = torch.nn.Parameter(value, requires_grad=old.requires_grad)
            _set(stack, name, new, parameter=True)
            self.params[name], replaced[id(old)] = new, new
        buffers = [dict(a.named_buffers()) for a in agents]
        self.buffers: dict[str, torch.Tensor] = {}
        for name, _ in list(stack.named_buffers()):
            if name.rsplit(".", 1)[-1] not in SHARED_BUFFERS:
                self.buffers[name] = torch.stack([b[name] for b in buffers])
                _set(stack, name, self.buffers[name], parameter=False)
        for opt in stack.optimizers():
            for group in opt.param_groups:
                group["params"] = [replaced[id(p)] for p in group["params"]]
            opt.state.clear()
        self.agent = stack
        self._wrap_losses()
        stack._optimise = optimise_per_seed
        self._bind_agents()

    # ---- the vmapped calls ----------------------------------------------------------
    def call(self, fn, *args, pack: tuple = (), **kwargs):
        """fn(*args, **kwargs) for each seed, under torch.func.vmap: positional Batch arguments and
        tensors with a leading dimension are taken per seed (a loss method's batch, a penalty made
        by another loss method), 0-d tensors, python values and keyword arguments are shared (eta,
        flags); the outputs get a leading seed dimension. pack: the flat indices of the outputs that
        are per-seed float scalars without a gradient (metrics), returned as one stacked output
        inside vmap (see _checked_compile). Kernels: the ops with a vmap rule launch once for all
        seeds (the chain sampler); the others take their reference ops, which vmap batches
        (ramac.kernels.use_triton)."""
        dims = tuple(0 if isinstance(a, Batch) or (torch.is_tensor(a) and a.dim() > 0) else None for a in args)
        state = {**self.params, **self.buffers}
        spec = []

        def one(state, *args):
            with _reparametrize_module(self.agent, state):
                return _pack_metrics(fn(*args, **kwargs), pack, spec)

        # (traced by torch.compile, the patch is already in place: _checked_compile's call)
        with contextlib.nullcontext() if torch.compiler.is_compiling() else linear_follows_autocast():
            out = torch.func.vmap(one, in_dims=(0, *dims), randomness="error")(state, *args)
        return _unpack_metrics(out, spec)

    def _wrap_losses(self) -> None:
        """Each loss method of the stack agent runs per seed (a loss method must not call another:
        that one would be vmapped twice)."""
        for name in type(self.agent).losses:
            setattr(self.agent, name, _PerSeed(self, getattr(self.agent, name), f"{type(self.agent).__name__}.{name}"))

    # ---- the K agents as views ------------------------------------------------------
    def _bind_agents(self) -> None:
        """Each agent's parameters, buffers and optimiser states become views of its seed's slice."""
        step = self.agent.step_t
        for k, a in enumerate(self.agents):
            # new Parameters on the slices (not p.data = slice): they share the stack's version
            # counter, so the weight-pack caches (ramac.cuda_graphs.weights_version) see eager updates
            new = {}
            for name, p in list(a.named_parameters()):
                q = torch.nn.Parameter(self.params[name].detach()[k], requires_grad=p.requires_grad)
                _set(a, name, q, parameter=True)
                new[id(p)] = q
            for opt in a.optimizers():
                for group in opt.param_groups:
                    group["params"] = [new.get(id(p), p) for p in group["params"]]
                opt.state = defaultdict(dict, {new.get(id(p), p): s for p, s in opt.state.items()})
            for name, _ in list(a.named_buffers()):
                shared = name.rsplit(".", 1)[-1] in SHARED_BUFFERS
                _set(a, name, step if shared else self.buffers[name][k], parameter=False)
            a.sync()

    def init_optimizer_states(self) -> None:
        """The stack's optimiser states: stacked from the agents' (a resumed run) or fresh, in the
        layout the optimisers' flags ask for; then each agent's state becomes views of its slice.
        Call after the optimisers' kernels are chosen (capturable, fused)."""
        for opt_i, opt in enumerate(self.agent.optimizers()):
            own = [a.optimizers()[opt_i] for a in self.agents]
            for g_i, group in enumerate(opt.param_groups):
                own_params = [o.param_groups[g_i]["params"] for o in own]
                for o in own:  # the stack's kernel flags: a seed's checkpoint resumes alone as it would
                    o.param_groups[g_i].update({k: group[k] for k in ("capturable", "fused", "foreach") if k in group})
                for p_i, p in enumerate(group["params"]):
                    states = [o.state.get(ps[p_i]) for o, ps in zip(own, own_params)]
                    opt.state[p] = _stacked_state(states, p, group)
                    for k, (o, ps) in enumerate(zip(own, own_params)):
                        o.state[ps[p_i]] = {key: v if key == "step" else v[k] for key, v in opt.state[p].items()}


class _PerSeed:
    """A loss method of the stack agent, called per seed (SeedStack.call)."""

    def __init__(self, seeds: SeedStack, method, name: str):
        self.seeds, self.method, self.name = seeds, method, name

    def __call__(self, *args, pack: tuple = (), **kwargs):
        return self.seeds.call(self.method, *args, pack=pack, **kwargs)

    def compiled(self, **compile_kw):
        """What Agent._compile_methods puts in its place: compiled, checked (_checked_compile)."""
        return _checked_compile(self, **compile_kw)


def _checked_compile(per_seed: _PerSeed, **compile_kw):
    """torch.compile of a vmapped loss method, checked once per kind of call (the arguments' types
    and shapes, the keyword arguments' values: one per phase) against the eager call: where any
    output differs in value or in whether it carries a gradient, that kind of call runs eagerly from
    then on, with a warning. Why: compiled over vmap, torch 2.13 returned a loss without its gradient
    when metrics (a detached copy of it among them) came back as separate outputs, which would
    silently train nothing; the eager call says which outputs are gradient-free metrics, and the
    compiled one returns those as one stacked output (`pack`), which keeps the loss's gradient
    (RADAC, RAFMAC, ORAAC, BC on the CPU: the same weights as eager). The loss methods draw from the
    counter-based ramac.noise and change no state, so the two calls compute the same thing."""
    import warnings

    compiled = torch.compile(per_seed, **compile_kw)
    verdicts: dict = {}

    def call(*args, **kwargs):
        key = (tuple((type(a).__name__, tuple(a.shape) if torch.is_tensor(a) else None) for a in args),
               tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        verdict = verdicts.get(key)
        if verdict is False:
            return per_seed(*args, **kwargs)
        if verdict is not None:
            with linear_follows_autocast():
                return compiled(*args, pack=verdict, **kwargs)
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"{per_seed.name}: the first compiled call of a phase is checked against an eager "
                               f"one, which a CUDA-graph capture cannot hold: warm the updater up (warmup >= 1)")
        want = per_seed(*args, **kwargs)
        leaves = torch.utils._pytree.tree_leaves(want)
        pack = tuple(i for i, v in enumerate(leaves) if torch.is_tensor(v) and v.dim() == 1 and v.is_floating_point()
                     and not v.requires_grad)
        with linear_follows_autocast():
            out = compiled(*args, pack=pack, **kwargs)
        if _same_outputs(out, want, loose=torch.is_autocast_enabled(_device_of(want))):
            verdicts[key] = pack
            return out
        verdicts[key] = False
        warnings.warn(f"{per_seed.name} compiled over stacked seeds differs from its eager form; it runs eagerly "
                      f"for this kind of call", RuntimeWarning, stacklevel=2)
        return want
    return call


_LINEAR = torch.nn.functional.linear


def _linear_in_autocast_dtype(input, weight, bias=None):
    if bias is not None and torch._C._functorch.is_batchedtensor(bias):
        device = input.device.type
        if torch.is_autocast_enabled(device):
            bias = bias.to(torch.get_autocast_dtype(device))
    return _LINEAR(input, weight, bias)


@contextlib.contextmanager
def linear_follows_autocast():
    """F.linear (every nn.Linear) with per-seed weights computes in autocast's dtype, as one seed's
    does. Under vmap, torch adds the bias after the batched product, in fp32, so the output and
    everything after it came back fp32 under bf16 autocast (pytorch/pytorch#192617): the stack then
    ran its elementwise work in fp32, cast between the two at every layer and missed the bf16-only
    fused IQN critic. Casting a per-seed bias to autocast's dtype first (what autocast does to it
    outside vmap) keeps the product and the sum in bf16; one seed's own linear layers are untouched."""
    F = torch.nn.functional
    before, F.linear = F.linear, _linear_in_autocast_dtype
    try:
        yield
    finally:
        F.linear = before


def _device_of(out) -> str:
    leaves = [v for v in torch.utils._pytree.tree_leaves(out) if torch.is_tensor(v)]
    return leaves[0].device.type if leaves else "cpu"


def _same_outputs(a, b, loose: bool = False) -> bool:
    """Same structure, the same gradient flags, and values equal to float rounding (under bf16
    autocast, to bf16's: compiled and eager round differently)."""
    rtol, atol = (5e-2, 5e-2) if loose else (1e-3, 1e-4)
    la, ta = torch.utils._pytree.tree_flatten(a)
    lb, tb = torch.utils._pytree.tree_flatten(b)
    if ta != tb:
        return False
    for x, y in zip(la, lb):
        if torch.is_tensor(x) != torch.is_tensor(y):
            return False
        if torch.is_tensor(x) and (x.requires_grad != y.requires_grad or x.shape != y.shape or not torch.allclose(
                x.detach().float(), y.detach().float(), rtol=rtol, atol=atol, equal_nan=True)):
            return False
    return True


def _pack_metrics(out, pack: tuple, spec: list):
    """(out's leaves but those at the flat indices `pack`, those stacked into one tensor); spec
    records out's structure for _unpack_metrics."""
    leaves, tree = torch.utils._pytree.tree_flatten(out)
    spec[:] = [tree, pack, len(leaves)]
    rest = [v for i, v in enumerate(leaves) if i not in pack]
    return rest, (torch.stack([leaves[i].float() for i in pack]) if pack else torch.zeros(0))


def _unpack_metrics(packed, spec: list):
    """_pack_metrics undone on the vmapped outputs (a leading seed dimension each)."""
    tree, pack, n = spec
    rest, stacked = packed
    rest, stacked = iter(rest), stacked.detach()  # gradient-free by choice of `pack`
    leaves = [stacked[:, pack.index(i)] if i in pack else next(rest) for i in range(n)]
    return torch.utils._pytree.tree_unflatten(leaves, tree)


def _stacked_state(states, p, group) -> dict:
    """Adam's state for the stacked parameter p: the agents' stacked (all have one) or zeros."""
    if all(s for s in states):
        out = {key: torch.stack([s[key] for s in states]).to(p.device) for key in states[0] if key != "step"}
        step = states[0]["step"]
    elif not any(states):
        out = {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        if group.get("amsgrad"):
            out["max_exp_avg_sq"] = torch.zeros_like(p)
        step = torch.zeros(())
    else:
        raise ValueError("some seeds have optimiser states and some do not: resume them on their own")
    on_device = group.get("capturable") or group.get("fused")
    out["step"] = step.detach().clone().float().to(p.device if on_device else "cpu")
    return out


def _set(module, name: str, value, parameter: bool) -> None:
    """Replace the parameter or buffer `name` (dotted) of module."""
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    (module._parameters if parameter else module._buffers)[leaf] = value


def optimise_per_seed(groups, grad_norm: float) -> dict:
    """ramac.agents.policy.optimise for stacked parameters: each seed's gradient norm clipped on
    its own (clip_grad_norm_'s arithmetic, per seed), then one optimiser step for all seeds; the
    pre-clip norms (K,) by metric key."""
    norms = {}
    for opt, net, key in groups:
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if grad_norm > 0 and grads:
            sq = torch.stack([g.float().square().reshape(g.shape[0], -1).sum(1) for g in grads]).sum(0)
            norms[key] = sq.sqrt()
            coef = (grad_norm / (norms[key] + 1e-6)).clamp(max=1.0)
            for g in grads:
                g.mul_(coef.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))
        opt.step()
    return norms


class SeedMetrics:
    """Seed k's column of the stacked updater's DeviceMetrics (shape (K,)), read as DeviceMetrics is."""

    def __init__(self, stacked: DeviceMetrics, k: int):
        self.stacked, self.k, self.count, self.reduce = stacked, k, 0, None

    def read(self) -> tuple[dict, int]:
        s, k = self.stacked, self.k
        if not self.count or not s.sums:
            return {}, -1
        keys = list(s.sums)
        col = torch.stack([torch.stack([s.sums[key][k], s.counts[key][k]]) for key in keys]).tolist()
        means = {key: total / n for key, (total, n) in zip(keys, col) if n > 0}
        first_bad = int(s.first_bad[k])
        for v in (*s.sums.values(), *s.counts.values()):
            v[k] = 0.0
        s.first_bad[k] = -1
        self.count = 0
        return means, first_bad


class _Stacked:
    """What the stacked updaters change in theirs: each seed's batch from its own draws (K, B, ...),
    and the metrics, a sum per seed."""

    def _stack_init(self, seeds: SeedStack) -> None:
        self.seeds = seeds
        seeds.init_optimizer_states()
        self.metrics = DeviceMetrics((seeds.K,))

    def _draw_batch(self):  # (compiled with the update where it compiles: FastUpdater._draw)
        stack = self.seeds
        return self.data.gather(stack.call(lambda: batch_indices(stack.agent, self.data, self.batch_size)))


class StackedFastUpdater(_Stacked, FastUpdater):
    """FastUpdater (CUDA graphs per phase, bf16, torch.compile) over the stack agent."""

    def __init__(self, seeds: SeedStack, data, batch_size: int, **kw):
        if kw.get("indices", "device") != "device":
            raise ValueError("stacked seeds draw their own batches (indices='device')")
        super().__init__(seeds.agent, data, batch_size, **kw)
        self._stack_init(seeds)


class StackedEagerUpdater(_Stacked, EagerUpdater):
    """EagerUpdater over the stack agent (CPU)."""

    def __init__(self, seeds: SeedStack, data, batch_size: int):
        super().__init__(seeds.agent, data, batch_size)
        self._stack_init(seeds)


class SeedView:
    """Seed k of a stacked updater, as a trainer sees its updater (metrics, sync)."""

    def __init__(self, agent, metrics: SeedMetrics, stack_agent):
        self.agent, self.metrics, self._stack_agent = agent, metrics, stack_agent

    def sync(self) -> None:
        self._stack_agent.sync()
        self.agent.sync()


class StackedSeedsUpdater:
    """SeedsUpdater's interface (step(active), updaters, sync) over one stacked updater: every step
    updates every seed (the seeds of a stack are at the same step; a seed that stopped on non-finite
    values goes on being computed, unread, beside the others, which it cannot touch)."""

    def __init__(self, agents, data, batch_size: int, *, graph: bool, bf16: bool, compile: bool, warmup: int):
        self.seeds = SeedStack(agents)
        fast, graph, compile = fast_path(data, graph, bf16, compile)
        if fast:
            self.inner = StackedFastUpdater(self.seeds, data, batch_size, graph=graph, bf16=bf16, warmup=warmup,
                                            compile=compile)
        else:
            self.inner = StackedEagerUpdater(self.seeds, data, batch_size)
        self.updaters = [SeedView(a, SeedMetrics(self.inner.metrics, k), self.seeds.agent)
                         for k, a in enumerate(agents)]

    def step(self, active=None) -> None:
        active = range(len(self.updaters)) if active is None else active
        if not len(active):
            return
        self.inner.step()
        for i in range(len(self.updaters)):
            self.updaters[i].agent.advanced()
            self.updaters[i].metrics.count += 1

    def sync(self) -> None:
        for u in self.updaters:
            u.sync()
