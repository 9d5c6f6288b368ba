"""A run directory: its files, its lock, and the checks that refuse a damaged or busy one.

    RUN_DIR/config.json      the run's settings, provenance and data set (written with each checkpoint)
    RUN_DIR/checkpoint.pt    agent, optimisers, RNG streams and step (replaced atomically)
    RUN_DIR/metrics.jsonl    one row per log or evaluation step, appended (train.csv, eval.csv beside it)
    RUN_DIR/eval.json        the final evaluation (returns.npy: its returns); figures (bandit.png, ...)
    RUN_DIR/eval-again.json  `ramac eval`'s (returns-again.npy; figures NAME-eval.png)
    RUN_DIR/.lock            held (flock) by the run that writes the directory

Every write either completes or leaves the file as it was: whole files are replaced atomically,
and an append that fails is cut back to where it started.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from ..config import TrainConfig, from_dict
from ..agents import config_class
from ..utils import atomic_write_bytes, lock_dir

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
LOCK = ".lock"
RECORDS = (METRICS, "train.csv", "eval.csv", "eval.json")  # what a run writes besides config and checkpoint
RESUMABLE = ("steps", "device")  # the train settings a resume may change
_CKPT_KEYS = ("step", "agent", "rng", "dims", "agent_cfg", "train_cfg")  # (and "generator" before ramac.noise)



class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (in use, not writable, damaged files, other settings)."""


def open_run_dir(run_dir: Path):
    """Create run_dir and lock it for this run (RUN_DIR/.lock, held until the returned file is
    closed); a directory in use or one that cannot be written is refused here."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory; choose another --run-dir")
    try:
        lock = lock_dir(run_dir, LOCK)
    except BlockingIOError:
        raise RunDirError(f"{run_dir} is in use by another ramac run (it holds the lock {run_dir / LOCK}); wait "
                          f"for that run to end or choose another --run-dir") from None
    except OSError as e:
        where = f" ({e.filename})" if e.filename and Path(e.filename) != run_dir else ""
        raise RunDirError(f"cannot create the run directory {run_dir}: {e.strerror}{where}") from None
    try:
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as e:
        lock.close()
        raise RunDirError(f"cannot write into the run directory {run_dir}: {e.strerror}") from None
    return lock


def read_checkpoint(path) -> dict:
    """A checkpoint's contents; RunDirError naming the file when it is truncated or corrupted."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch reports a damaged file with many exception types
        raise RunDirError(f"{path} is truncated or corrupted ({one_line(e)}); restore it from a copy or start a "
                          f"new run in another --run-dir") from None
    missing = [k for k in _CKPT_KEYS if k not in ckpt] if isinstance(ckpt, dict) else list(_CKPT_KEYS)
    if missing:
        raise RunDirError(f"{path} is not a ramac checkpoint (it lacks {', '.join(missing)})")
    return ckpt


def settings_of(ckpt: dict, path) -> tuple:
    """(agent config, train config) saved in a checkpoint."""
    try:
        train_cfg = from_dict(TrainConfig, ckpt["train_cfg"])
        return from_dict(config_class(train_cfg.algo), ckpt["agent_cfg"]), train_cfg
    except (ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{path} holds settings this version cannot use ({one_line(e)})") from None


def load_agent_state(agent, ckpt: dict, path) -> None:
    try:
        agent.load_full_state(ckpt["agent"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise RunDirError(f"{path} does not fit a {type(agent).__name__} with its saved settings "
                          f"({one_line(e)})") from None


def check_config_file(path: Path, ckpt: dict) -> None:
    """config.json must hold the checkpoint's settings (but steps and device, which a resume changes)."""
    if not path.exists():
        return  # the checkpoint holds the settings; config.json is written again with the next checkpoint
    try:
        saved = json.loads(path.read_text())
        written = {part: dict(saved[part]) for part in ("train", "agent")}
    except (ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{path} cannot be read ({type(e).__name__}: {one_line(e)}); put it back as it was, or "
                          f"delete it (the checkpoint holds the run's settings)") from None
    held = json.loads(json.dumps({"train": ckpt["train_cfg"], "agent": ckpt["agent_cfg"]}, default=str))
    diffs = []
    for part in ("train", "agent"):
        for key in sorted(set(written[part]) | set(held[part])):
            edited, kept = written[part].get(key, "(absent)"), held[part].get(key, "(absent)")
            if edited != kept and not (part == "train" and key in RESUMABLE):
                diffs.append(f"{part}.{key} = {edited!r} in config.json but {kept!r} in the checkpoint")
    if diffs:
        raise RunDirError(f"{path} was changed after the run started: {'; '.join(diffs[:3])}"
                          f"{f' (and {len(diffs) - 3} more)' if len(diffs) > 3 else ''}. A resumed run keeps its "
                          f"settings: put config.json back as it was, or start a new run with --set")


def read_metrics(run_dir) -> list[dict]:
    """The rows of RUN_DIR/metrics.jsonl; a cut last line (a writer killed mid-line) is left out."""
    return parse_metrics(Path(run_dir) / METRICS)[0]


def parse_metrics(path: Path) -> tuple[list[dict], str | None]:
    """(rows, the cut last line or None); RunDirError for a damaged line before the last."""
    if not path.exists():
        return [], None
    lines = [(i, line) for i, line in enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), 1)
             if line.strip()]
    rows = []
    for i, line in lines:
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and "kind" in row and isinstance(row.get("step"), int)
        except ValueError:
            ok = False
        if not ok:
            if i == lines[-1][0]:
                return rows, line
            raise RunDirError(f"{path} line {i} is not a metrics row ({line[:40]!r}): the file was edited or damaged; "
                              f"repair or delete that line")
        rows.append(row)
    return rows, None


def write_figures(task, metrics: dict, run_dir, title: str, suffix: str = "") -> list[str]:
    """The task's figures in run_dir as NAME{suffix}.png, each replaced atomically (Task.report
    draws into a folder under fixed names, so it draws into a temporary one); returns the names."""
    names = []
    with tempfile.TemporaryDirectory(prefix="ramac-figures-") as tmp:
        task.report(metrics, tmp, title=title)
        for figure in sorted(Path(tmp).iterdir()):
            names.append(f"{figure.stem}{suffix}{figure.suffix}")
            atomic_write_bytes(Path(run_dir) / names[-1], figure.read_bytes())
    return names


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def append_bytes(path: Path, data: bytes) -> None:
    """Append data and fsync; on failure the file is cut back to where it was (an OSError naming it)."""
    path = Path(path)
    with open(path, "ab") as f:
        start = f.tell()
        try:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        except OSError as e:
            f.truncate(start)
            raise OSError(e.errno, e.strerror, str(path)) from e


def _csv_bytes(columns: list[str], rows: list[dict], header: bool) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, restval="")
    if header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


class MetricsLog:
    """metrics.jsonl and its CSV views (train.csv, eval.csv). A row is appended to each (the cost
    of a record does not grow with the run); a CSV is rewritten whole only when a row brings a
    column it lacks (the risk term's metrics appear after the warm-up), or when the log starts over."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.rows: list[dict] = []
        self._columns: dict[str, list[str] | None] = {}

    def load(self, rows: list[dict]) -> None:
        """Continue the log whose files hold these rows."""
        self.rows = list(rows)
        self._columns = {kind: self._columns_of(kind) for kind in ("train", "eval")}

    def reset(self, rows: list[dict]) -> None:
        """Write every file anew (atomically) for these rows."""
        self.rows = list(rows)
        atomic_write_bytes(self.run_dir / METRICS, jsonl(self.rows))
        for kind in ("train", "eval"):
            self._rewrite_csv(kind)

    def append(self, row: dict) -> None:
        append_bytes(self.run_dir / METRICS, jsonl([row]))
        self.rows.append(row)
        kind, columns = row["kind"], self._columns.get(row["kind"])
        if columns is not None and set(row) <= set(columns) and (self.run_dir / f"{kind}.csv").exists():
            append_bytes(self.run_dir / f"{kind}.csv", _csv_bytes(columns, [row], header=False))
        else:
            self._rewrite_csv(kind)

    def _columns_of(self, kind: str) -> list[str] | None:
        keys = list(dict.fromkeys(k for r in self.rows if r["kind"] == kind for k in r))
        return keys or None

    def _rewrite_csv(self, kind: str) -> None:
        path, rows = self.run_dir / f"{kind}.csv", [r for r in self.rows if r["kind"] == kind]
        self._columns[kind] = self._columns_of(kind)
        if not rows:
            path.unlink(missing_ok=True)
            return
        atomic_write_bytes(path, _csv_bytes(self._columns[kind], rows, header=True))


def save_returns(path: Path, metrics: dict) -> None:
    """An evaluation's per-episode returns (per-draw rewards on the bandit) as .npy, for
    `ramac report`'s risk profile; nothing when the evaluation has none."""
    if "_returns" not in metrics:
        return
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(metrics["_returns"], dtype=np.float32))
    atomic_write_bytes(path, buf.getvalue())
