"""NVTX ranges named like the log keys, free when profiling is off (a leaf module).

`ramac profile` switches them on; Nsight Systems / Compute then show the update
as critic/..., actor/..., targets/... ranges. Off (the default), `nvtx_range`
returns one shared null context: no allocation, no call into NVTX.
"""

from __future__ import annotations

import contextlib

import torch

_NULL = contextlib.nullcontext()
_enabled = False


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = bool(on) and torch.cuda.is_available()


def enabled() -> bool:
    return _enabled


def nvtx_range(name: str):
    if not _enabled:
        return _NULL
    return torch.cuda.nvtx.range(name)
