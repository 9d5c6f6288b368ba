"""Small shared helpers: devices, seeding, RNG state, atomic files, directory locks, provenance."""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import platform
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch


def progress_bar(**kwargs):
    """tqdm that redraws at most every 30 s when stderr is not a terminal (log files stay small)."""
    import sys

    from tqdm.auto import tqdm

    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(dynamic_ncols=True, **kwargs)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Run a block with its own seed, leaving the global RNG streams untouched."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_figure(fig, path, **kwargs) -> None:
    """fig.savefig written atomically (atomic_write_bytes): a reader, or another process writing
    the same figure (sweep lanes side by side), never sees half a file. PNGs as figure_png."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    if fmt == "png":
        atomic_write_bytes(path, figure_png(fig, **kwargs))
        return
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def figure_png(fig, **kwargs) -> bytes:
    """fig as PNG bytes in a 256-colour palette (no dithering): a third of matplotlib's RGBA size
    for our line plots and colour maps, so the committed figures stay small enough to travel."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **kwargs)
    return png_palette(Image.open(buf))


def png_palette(image) -> bytes:
    """A PIL image as optimised PNG bytes in a 256-colour median-cut palette, no dithering."""
    from PIL import Image

    out = io.BytesIO()
    image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, "PNG", optimize=True)
    return out.getvalue()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    The file gets the mode a plain open() would give it (0o666 less the umask; mkstemp's own
    is 0o600). Temporary names carry the writer's pid, so a writer removes the temporaries
    that killed writers of the same file left behind. An OSError names `path`.
    """
    path = Path(path)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:  # name the file asked for, not the temporary
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask() sets it, which races with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale_temps(path: Path) -> None:
    """Delete `.NAME.PID-*.tmp` files of `path` whose writer (PID) is no longer running."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        pid = tmp.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def lock_dir(directory, name: str = ".lock"):
    """Create `directory` if needed and take an exclusive lock on directory/name (fcntl.flock).

    Returns the open lock file: the lock lasts until it is closed (or the process ends). Raises
    BlockingIOError at once when another process, or another open of the file, holds the lock.
    """
    import fcntl

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    f = open(directory / name, "a")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        f.close()
        raise
    return f


def atomic_torch_save(obj, path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (Path, torch.device, torch.dtype)):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


SOURCE_PATHS = ("ramac", "kernels", "native", "bench", "sweeps", "pyproject.toml", "CMakeLists.txt")


def env_switch(name: str, default: bool) -> bool:
    """An on/off setting from the environment: "1" or "0", unset the default; any other value is
    an error naming the variable."""
    value = os.environ.get(name, "1" if default else "0")
    if value not in ("0", "1"):
        raise ValueError(f"{name} must be 0 or 1, got {value!r}")
    return value == "1"


def git_state() -> tuple[str | None, bool | None]:
    """(commit, whether the source differs from it) of the checkout this package runs from; an
    installed copy, which is no checkout (bench/studies/gpu_sweep_detached.sh), is told them by
    RAMAC_GIT_COMMIT and RAMAC_GIT_DIRTY (1 or 0)."""
    commit, dirty = None, {"1": True, "0": False}.get(os.environ.get("RAMAC_GIT_DIRTY", ""))
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
    except Exception:
        pass
    commit = commit or os.environ.get("RAMAC_GIT_COMMIT") or None
    try:  # the source only: runs and sweeps rewrite the tracked results; no index lock (lanes side by side)
        changed = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no",
                                  "--", *SOURCE_PATHS], cwd=root, capture_output=True, text=True, timeout=10)
        if changed.returncode == 0 and commit:
            dirty = bool(changed.stdout.strip())
    except Exception:
        pass
    return commit, dirty


def provenance(device: torch.device) -> dict:
    """Versions, machine, source revision (and whether tracked files differ from it: a copied work
    tree, as on a lent GPU machine, can carry an older .git), and every RAMAC_* switch in force
    (the seeds' layout, kernel choices, tuning files), recorded with every run and benchmark."""
    import ramac

    info = {
        "ramac": ramac.__version__, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "device": str(device), "device_name": device_name(device),
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    info["git_commit"], info["git_dirty"] = git_state()
    info["env"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith("RAMAC_")}
    return info
