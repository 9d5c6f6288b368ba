"""TensorBoard event files beside metrics.jsonl (`ramac train --tensorboard`): every metrics row
as scalars, training rows under their own names (critic/loss1, actor/risk, ...), evaluation rows
under eval/ (eval/reward/mean, eval/reward/cvar_0.1, ...). Needs the optional `tensorboard`
package (pip install "ramac[tensorboard]"); `tensorboard --logdir RUN_DIR` shows them."""

from __future__ import annotations

import shutil
from pathlib import Path

from .rundir import RunDirError

TENSORBOARD = "tensorboard"  # the event files' folder in a run directory


def check_available() -> None:
    """One clear error before training when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (imports tensorboard)
    except ImportError as e:
        raise ValueError('--tensorboard needs the tensorboard package: pip install "ramac[tensorboard]" '
                         f"(or pip install tensorboard); {e}") from None


class TensorBoardLog:
    """A SummaryWriter on RUN_DIR/tensorboard. Continuing a run from a checkpoint at step N purges
    the events after N (they are written again, as the metrics rows are)."""

    def __init__(self, run_dir, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(run_dir) / TENSORBOARD
        try:
            self.writer = SummaryWriter(str(folder), purge_step=None if resume_step is None else resume_step + 1)
        except OSError as e:
            raise RunDirError(f"cannot write TensorBoard events into {folder}: {e}") from None

    def add(self, row: dict) -> None:
        prefix = "" if row["kind"] == "train" else row["kind"] + "/"
        for key, value in row.items():
            if key not in ("kind", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(prefix + key, value, row["step"])

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def remove(run_dir) -> None:
    """Drop the events of a run that is started over."""
    shutil.rmtree(Path(run_dir) / TENSORBOARD, ignore_errors=True)
