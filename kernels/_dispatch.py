"""The one switch that picks Triton kernels or plain-PyTorch reference ops.

Algorithm code calls the public ops in `ramac.kernels` and never branches on
the backend itself. Triton runs only on CUDA tensors; everything else (CPU
tensors, no Triton installed, backend "reference") takes the reference op.
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch

BACKENDS = ("auto", "triton", "reference")

try:  # Triton is optional at run time: the reference path needs only torch.
    import triton  # noqa: F401

    HAS_TRITON = True
except Exception:  # pragma: no cover - depends on the machine
    HAS_TRITON = False

_state = threading.local()


def _current() -> str:
    chosen = getattr(_state, "backend", None)  # set_backend / use win over the environment
    return chosen if chosen is not None else os.environ.get("RAMAC_KERNELS", "auto")


def env_switch(name: str, default: bool) -> bool:
    """An on/off setting of the kernels from the environment: "1" or "0", unset the default; any other
    value is an error naming the variable (ramac.utils.env_switch's rule; kernels import no ramac)."""
    value = os.environ.get(name, "1" if default else "0")
    if value not in ("0", "1"):
        raise ValueError(f"{name} must be 0 or 1, got {value!r}")
    return value == "1"


def get_backend() -> str:
    """The selected backend: "auto" (Triton on CUDA), "triton" or "reference"."""
    name = _current()
    if name not in BACKENDS:
        raise ValueError(f"RAMAC_KERNELS={name!r} is not one of {BACKENDS}")
    return name


def set_backend(name: str) -> None:
    """Select the backend for this thread until changed again."""
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {BACKENDS}")
    _state.backend = name


@contextlib.contextmanager
def use(name: str):
    """Context manager: `with ramac.kernels.use("reference"): ...`."""
    previous = getattr(_state, "backend", None)
    set_backend(name)
    try:
        yield
    finally:
        _state.backend = previous


def use_triton(*tensors: torch.Tensor, vmap_rule: bool = False) -> bool:
    """True when the Triton kernel should run for these tensors.

    Under torch.compile the reference op is traced instead: Inductor fuses it
    with its neighbours (and generates its own Triton code on CUDA). Under
    torch.func.vmap (seeds stacked) only ops with a vmap rule (vmap_rule=True:
    a kernel over a leading seed dimension) take Triton; the others trace their
    reference op, which vmap batches.
    """
    if not HAS_TRITON or torch.compiler.is_compiling() or get_backend() == "reference":
        return False
    if not vmap_rule and any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors):
        return False
    return all(t.is_cuda for t in tensors)


def seeds_first(batch_size: int, tensors, in_dims) -> list:
    """A vmap rule's inputs with the vmapped (seed) dimension first: moved there, or, for a tensor
    shared by the seeds (in_dim None), expanded to batch_size along a new first dimension; None
    stays None."""
    return [t if t is None else t.movedim(d, 0) if d is not None else t.expand(batch_size, *t.shape)
            for t, d in zip(tensors, in_dims)]



def sm_count(device: torch.device) -> int:
    """The GPU's streaming multiprocessors (1 off CUDA, where launch rules count no waves)."""
    device = torch.device(device)
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def is_vmapped(*tensors) -> bool:
    """Whether any of these tensors is batched by torch.func.vmap (seeds stacked)."""
    return any(t is not None and torch._C._functorch.is_batchedtensor(t) for t in tensors)


class _FoldSeeds(torch.autograd.Function):
    """An op with a vmap rule that folds the vmapped (seed) dimension into the op's own batch-like
    leading dimension: under torch.func.vmap the op runs once, on the stacked tensors, and autograd
    records the op's own backward there. Outside vmap it is the plain op."""

    @staticmethod
    def forward(plain, fold, *args):
        return plain(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):  # pragma: no cover - fold_seeds calls the plain op outside vmap
        raise RuntimeError("_FoldSeeds is applied under torch.func.vmap only")

    @staticmethod
    @torch.compiler.disable  # an eager op: where a compiled function runs a vmap eagerly (a graph break
    # in its body), torch.compile would otherwise trace this rule's kernel launches as a frame of its own
    def vmap(info, in_dims, plain, fold, *args):
        return fold(info.batch_size, in_dims[2:], *args), 0


def fold_seeds(plain, fold, *args):
    """plain(*args); under torch.func.vmap, fold(K, in_dims, *args) on the stacked tensors instead:
    it returns the K results stacked on dimension 0, computed by one call of the op over the seeds
    folded into a batch dimension (the ops' vmap rules: quantile-Huber loss, tail mean, IQN critic)."""
    if not is_vmapped(*(a for a in args if torch.is_tensor(a))):
        return plain(*args)
    return _FoldSeeds.apply(plain, fold, *args)
