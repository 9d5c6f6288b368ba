"""NVTX ranges named like the log keys, free when profiling is off (a leaf module).

`ramac profile` switches them on; Nsight Systems / Compute then show the update
as critic/..., actor/..., ema_targets ranges. With record=True each range is also a
torch.profiler.record_function of the same name (on any device), by which
`ramac profile` groups the kernels of a torch.profiler window into phases. Off (the
default), `nvtx_range` returns one shared null context: no allocation, no call
into NVTX or the profiler.
"""

from __future__ import annotations

import contextlib

import torch

_NULL = contextlib.nullcontext()
_nvtx = False  # NVTX ranges (only where CUDA is available)
_record = False  # torch.profiler.record_function ranges


def enable(on: bool = True, record: bool = False) -> None:
    """on: NVTX ranges where CUDA is available; record: also record_function ranges (any device)."""
    global _nvtx, _record
    _nvtx = bool(on) and torch.cuda.is_available()
    _record = bool(on) and bool(record)


def enabled() -> bool:
    return _nvtx or _record


def nvtx_range(name: str):
    if not (_nvtx or _record):
        return _NULL
    if not _record:
        return torch.cuda.nvtx.range(name)
    if not _nvtx:
        return torch.profiler.record_function(name)
    return _both(name)


@contextlib.contextmanager
def _both(name: str):
    with torch.cuda.nvtx.range(name), torch.profiler.record_function(name):
        yield
