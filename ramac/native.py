"""The native sampler (libramac_sampler, built by the top-level CMakeLists.txt) from Python through
ctypes: the same chain as `kernels.sample_chain` (the same Triton kernel, compiled ahead of time),
launched from C on torch's current CUDA stream. The Python package works without it.

    with NativeSampler("export_dir") as s:       # `ramac export RUN_DIR --out export_dir`
        actions = s.sample(states)                # (B, S) CUDA tensor -> (B, A), Philox noise from seed=0
        actions = s.sample(states, noise=noise)   # noise (T + 1, B, A), as kernels.sample_chain takes
        actions = s.act(obs, seed=1)              # raw observations, normalised as the agent's act() does

The library: $RAMAC_NATIVE_LIB, else build/libramac_sampler.so of this checkout.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import torch

DEFAULT_LIB = Path(__file__).resolve().parents[1] / "build" / "libramac_sampler.so"
STATUS = {1: "bad argument", 2: "cannot read", 3: "bad format", 4: "other shapes", 5: "no CUDA device",
          6: "CUDA error"}


class NativeError(RuntimeError):
    """A call into libramac_sampler failed (code: ramac_status of ramac_sampler.h)."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{message} ({STATUS.get(code, 'error')}, code {code})")
        self.code = code


class _Info(ctypes.Structure):
    _fields_ = [("state_dim", ctypes.c_int), ("action_dim", ctypes.c_int), ("hidden", ctypes.c_int),
                ("n_steps", ctypes.c_int), ("max_action", ctypes.c_float),
                ("obs_mean", ctypes.POINTER(ctypes.c_float)), ("obs_std", ctypes.POINTER(ctypes.c_float)),
                ("agent", ctypes.c_char_p)]


_LIBS: dict = {}


def library_path() -> Path:
    return Path(os.environ.get("RAMAC_NATIVE_LIB") or DEFAULT_LIB)


def load_library(path=None) -> ctypes.CDLL:
    """The library with its functions' argument types declared (cached per path)."""
    path = Path(path or library_path())
    if path in _LIBS:
        return _LIBS[path]
    if not path.exists():
        raise FileNotFoundError(f"no native sampler library at {path}: build it with `cmake -S . -B build && "
                                f"cmake --build build`, or set RAMAC_NATIVE_LIB")
    lib = ctypes.CDLL(str(path))
    p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64
    for name, args in (("ramac_sampler_load", (ctypes.c_char_p, ctypes.POINTER(p))),
                       ("ramac_sampler_sample", (p, p, i, f, p, p)),
                       ("ramac_sampler_sample_seed_dev", (p, p, i, p, p, p)),
                       ("ramac_sampler_sample_noise", (p, p, i, p, p, p)),
                       ("ramac_sampler_get_info", (p, ctypes.POINTER(_Info)))):
        getattr(lib, name).argtypes, getattr(lib, name).restype = args, i
    lib.ramac_sampler_free.argtypes, lib.ramac_sampler_free.restype = (p,), None
    for name in ("ramac_sampler_last_error", "ramac_sampler_build_info"):
        getattr(lib, name).argtypes, getattr(lib, name).restype = (), ctypes.c_char_p
    _LIBS[path] = lib
    return lib


class NativeSampler:
    """One loaded export on the GPU (device 0's primary context: torch's own)."""

    def __init__(self, export_dir, lib=None):
        self._lib, self._handle = load_library(lib), ctypes.c_void_p()
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # torch's context exists and is current on this thread
        self._check(self._lib.ramac_sampler_load(str(export_dir).encode(), ctypes.byref(self._handle)))
        info = _Info()
        self._check(self._lib.ramac_sampler_get_info(self._handle, ctypes.byref(info)))
        self.state_dim, self.action_dim, self.hidden, self.n_steps = (info.state_dim, info.action_dim, info.hidden,
                                                                      info.n_steps)
        self.max_action, self.agent = info.max_action, info.agent.decode()
        self.obs_mean = torch.tensor(info.obs_mean[:info.state_dim])
        self.obs_std = torch.tensor(info.obs_std[:info.state_dim])

    @property
    def build_info(self) -> str:
        return self._lib.ramac_sampler_build_info().decode()

    def _check(self, rc: int) -> None:
        if rc:
            raise NativeError(rc, self._lib.ramac_sampler_last_error().decode())

    def sample(self, states: torch.Tensor, noise: torch.Tensor | None = None, seed=0) -> torch.Tensor:
        """Actions (B, A) fp32 for states (B, S) on a CUDA device, queued on torch's current stream.
        noise: (T + 1, B, A) with noise[T] = x_T; else Philox noise in the kernel from seed (an int,
        or a 1-element int64 CUDA tensor read when the kernel runs, e.g. inside a CUDA graph)."""
        if not self._handle:
            raise ValueError("this NativeSampler was closed")
        if not states.is_cuda or states.dim() != 2 or states.shape[1] != self.state_dim:
            raise ValueError(f"states must be a (B, {self.state_dim}) CUDA tensor, got {tuple(states.shape)} on "
                             f"{states.device}")
        states = states.float().contiguous()
        B = states.shape[0]
        out = torch.empty(B, self.action_dim, device=states.device, dtype=torch.float32)
        stream = torch.cuda.current_stream(states.device).cuda_stream
        if noise is not None:
            want = (self.n_steps + 1, B, self.action_dim)
            if tuple(noise.shape) != want or noise.device != states.device:
                raise ValueError(f"noise must be {want} on {states.device}, got {tuple(noise.shape)} on {noise.device}")
            noise = noise.float().contiguous()
            rc = self._lib.ramac_sampler_sample_noise(self._handle, states.data_ptr(), B, noise.data_ptr(),
                                                      out.data_ptr(), stream)
        elif torch.is_tensor(seed):
            if seed.dtype != torch.int64 or seed.device != states.device or seed.numel() != 1:
                raise ValueError("a seed tensor must hold one int64 on the states' device")
            rc = self._lib.ramac_sampler_sample_seed_dev(self._handle, states.data_ptr(), B, seed.data_ptr(),
                                                         out.data_ptr(), stream)
        else:
            rc = self._lib.ramac_sampler_sample(self._handle, states.data_ptr(), B, int(seed) % 2**64,
                                                out.data_ptr(), stream)
        self._check(rc)
        return out

    def act(self, obs: torch.Tensor, seed=0) -> torch.Tensor:
        """sample() of raw observations, normalised with the export's obs_mean / obs_std."""
        norm = (obs.float() - self.obs_mean.to(obs.device)) / self.obs_std.to(obs.device)
        return self.sample(norm, seed=seed)

    def close(self) -> None:
        if self._handle:
            self._lib.ramac_sampler_free(self._handle)
            self._handle = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_handle", None):
            self.close()
