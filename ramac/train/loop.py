"""Training loop: seeding, progress, periodic evaluation, metrics, atomic checkpoints, resume.

A run directory belongs to one run at a time (an exclusive lock on RUN_DIR/.lock while it
writes), every file in it is replaced atomically, and whatever a run refuses (a directory in
use or not writable, a damaged checkpoint, resuming with other settings) is refused before the
data set loads and before anything is written.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from ..agents import make_agent
from ..config import TrainConfig, to_dict
from ..utils import (atomic_torch_save, atomic_write_bytes, atomic_write_json, progress_bar, provenance,
                     resolve_device, rng_state, seed_everything, seeded, set_rng_state)
from .rundir import (CHECKPOINT, CONFIG, LOCK, METRICS, RECORDS, MetricsLog, RunDirError, check_config_file,
                     load_agent_state, open_run_dir, parse_metrics, read_checkpoint, read_metrics,
                     save_returns, settings_of, warn as warn_line, write_figures)
from .curves import curves_png
from .distributed import Shard, local_batch, metrics_over_processes, same_everywhere, shard_agent
from .tasks import make_task
from .tensorboard import TensorBoardLog, check_available as check_tensorboard, remove as remove_tensorboard
from .updaters import make_updater

class NonFiniteLossError(RuntimeError):
    """A loss, or the agent's state, became NaN/inf; the message gives the step and the checkpoint kept."""


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    final_eval: dict
    wall_time_s: float


def default_run_dir(train_cfg: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{train_cfg.task}-{train_cfg.algo}-seed{train_cfg.seed}-{stamp}"


class Trainer:
    def __init__(self, agent_cfg, train_cfg: TrainConfig, run_dir: Path, progress: bool = True,
                 log=print, plots: str = "every", lock=None, source: Trainer | None = None,
                 shard: Shard | None = None):
        """agent_cfg: the config (validated, e.g. by build_configs) of the agent train_cfg.algo names;
        lock: the run directory's lock when the caller took it already (see open_run_dir);
        source: a trainer of the same task and data settings whose task and device-resident data
        this one shares (seeds side by side, ramac.train.group); shard: this process's part of a
        data-parallel run (ramac.train.distributed; train_cfg.batch_size is the global batch)."""
        self.agent_cfg, self.cfg = agent_cfg, train_cfg
        self.run_dir = Path(run_dir)
        if plots not in ("every", "final", "none"):
            raise ValueError(f"plots must be every, final or none, got {plots!r}")
        self.progress, self.log, self.plots = progress, log, plots
        self.device = resolve_device(train_cfg.device)
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        seed_everything(train_cfg.seed)
        if source is not None:
            if data_settings(source.cfg) != data_settings(train_cfg):
                raise ValueError("a trainer shares the data of another only with the same task, data set, env, "
                                 "device and observation normalisation")
            self.task, data, self.obs_norm = source.task, source.data, source.obs_norm
        else:
            self.task = make_task(train_cfg.task, self.device, train_cfg.eval_samples, train_cfg.eval_episodes,
                                  dataset=train_cfg.dataset, env=train_cfg.env)
            data = self.task.dataset
            data = data.check_dims(*self.task.env_dims) if self.task.env_dims else data
            self.obs_norm = data.obs_stats() if train_cfg.obs_norm else None
            if self.obs_norm is not None:
                data = data.normalised(*self.obs_norm)
        with seeded(train_cfg.seed, torch.device("cpu")):  # the initial weights: the seed's alone
            self.agent = make_agent(train_cfg.algo, data.state_dim, data.action_dim, agent_cfg)
        if self.obs_norm is not None:
            self.agent.set_obs_norm(*self.obs_norm)
        self.data, self.agent = data.to(self.device), self.agent.to(self.device)
        self.shard = shard or Shard()
        self.batch_size = local_batch(train_cfg.batch_size, self.shard)
        shard_agent(self.agent, self.shard)
        self.agent.fit_data(self.data)
        self.agent.seed_noise(train_cfg.seed)  # batches and the update's noise (ramac.noise)
        self.step = self._finite_at = 0
        self.last_checkpoint = None
        self.log_file = MetricsLog(self.run_dir)  # metrics written so far
        self.tensorboard = None  # a TensorBoardLog while running, with --tensorboard
        if train_cfg.tensorboard:
            check_tensorboard()
        self._lock, self._config_written = lock, False

    # ---- files ------------------------------------------------------------------------
    def _write_config(self):
        atomic_write_json(self.run_dir / CONFIG, {
            "agent": to_dict(self.agent_cfg), "train": to_dict(self.cfg),
            "provenance": provenance(self.device), "dataset": self.data.meta,
        })
        self._config_written = True

    def save_checkpoint(self):
        if self.shard.world > 1 and not same_everywhere(weights_checksum(self.agent)):
            raise RuntimeError(f"data-parallel processes hold different weights at step {self.step} (they take "
                               f"the same averaged step and should not); {self._kept()}")
        if not self._config_written:  # a resumed run records its new settings with its first checkpoint
            self._write_config()
        atomic_torch_save({
            "step": self.step, "agent": self.agent.full_state(), "rng": rng_state(),
            "dims": (self.data.state_dim, self.data.action_dim),
            "agent_cfg": to_dict(self.agent_cfg), "train_cfg": to_dict(self.cfg),
        }, self.run_dir / CHECKPOINT)
        self.last_checkpoint = self.step
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def load_checkpoint(self):
        self.restore(read_checkpoint(self.run_dir / CHECKPOINT))

    def restore(self, ckpt: dict):
        """Continue from a checkpoint (read_checkpoint's): agent, RNG streams, step; the metrics
        rows written after it (and a cut last line) are dropped, to be written again."""
        self._hold()
        path = self.run_dir / CHECKPOINT
        dims = tuple(ckpt["dims"])
        if dims != (self.data.state_dim, self.data.action_dim):
            raise RunDirError(f"{path} was trained on (obs, action) dims {dims} but the data set of {self.cfg.task} "
                              f"has {(self.data.state_dim, self.data.action_dim)}; start a new run")
        load_agent_state(self.agent, ckpt, path)
        self.agent.seed_noise(self.cfg.seed)  # checkpoints from before ramac.noise lack it
        set_rng_state(ckpt["rng"])
        self.step = self.last_checkpoint = self._finite_at = int(ckpt["step"])
        with self._writing():  # the records as of the checkpoint (the CSVs rebuilt with them)
            self.log_file.reset([r for r in read_metrics(self.run_dir) if r["step"] <= self.step])

    @property
    def rows(self) -> list[dict]:
        return self.log_file.rows

    def _record(self, row: dict):
        self.log_file.append(row)
        if self.tensorboard is not None:
            self.tensorboard.add(row)

    @contextlib.contextmanager
    def _writing(self):
        """A failed write into the run directory (a full disk, say) as one line naming the file
        and the checkpoint that is kept."""
        try:
            yield
        except OSError as e:
            if not e.filename or self.run_dir.resolve() not in Path(e.filename).resolve().parents:
                raise
            raise RunDirError(f"could not write {e.filename}: {e.strerror or e}; {self._kept()}") from e

    def _kept(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was written yet"
        return (f"the last good checkpoint (step {self.last_checkpoint}) is kept at {self.run_dir / CHECKPOINT} "
                f"(continue it with: ramac train --resume {self.run_dir})")

    # ---- loop ----------------------------------------------------------------------------
    def evaluate(self) -> dict:
        metrics = self.task.evaluate(self.agent, seed=self.cfg.seed * 100_003 + self.step)
        self._record({"kind": "eval", "step": self.step, **{k: v for k, v in metrics.items() if k[0] != "_"}})
        if self.plots == "every" or (self.plots == "final" and self.step >= self.cfg.steps):
            title = f"{self.cfg.task} / {self.cfg.algo}, step {self.step}"
            write_figures(self.task, metrics, self.run_dir, title=title)
            png = curves_png(self.rows, title=f"{self.cfg.task} / {self.cfg.algo}, seed {self.cfg.seed}")
            if png is not None:
                atomic_write_bytes(self.run_dir / "curves.png", png)
        return metrics

    def make_updater(self):
        """The graphed (and compiled) fast path on CUDA unless disabled; bf16 autocast where asked
        (on CPU too, eagerly); the plain loop otherwise."""
        cfg = self.cfg
        return make_updater(self.agent, self.data, self.batch_size, graph=cfg.graph, bf16=cfg.bf16,
                            compile=cfg.compile)

    def start(self, updater=None) -> None:
        """Open the run directory and build the updater (before the first step_once()); `updater`:
        one whose step() the caller makes (seeds side by side), read by this trainer for metrics."""
        self._hold()
        self.updater = updater if updater is not None else self.make_updater()
        if self.shard.world > 1:
            self.updater.metrics.reduce = metrics_over_processes
        self.t0, self.last_eval = time.perf_counter(), None
        self._t_log, self._step_log = self.t0, self.step
        self.bar = progress_bar(total=self.cfg.steps, initial=self.step, disable=not self.progress,
                                desc=f"{self.cfg.task}/{self.cfg.algo}")
        with self._writing():
            if self.last_checkpoint is None:
                self._start_over()
                self._write_config()
            if self.cfg.tensorboard:  # before any record: a resumed run re-evaluating below writes one
                self.tensorboard = TensorBoardLog(self.run_dir, self.last_checkpoint)
            if self.last_checkpoint is not None and self._eval_due(self.step) and not self.done and not any(
                    r["kind"] == "eval" and r["step"] == self.step for r in self.rows):
                self.last_eval = self.evaluate()  # the run stopped while evaluating at its checkpoint

    def _start_over(self):
        """A fresh run: records of a run that stopped before its first checkpoint are replaced."""
        old = [name for name in RECORDS if (self.run_dir / name).exists()]
        for name in old:
            (self.run_dir / name).unlink()
        self.log_file.load([])
        remove_tensorboard(self.run_dir)
        if old:
            self.log(f"{self.run_dir} held {', '.join(old)} but no checkpoint (a run that stopped before its first "
                     f"checkpoint): starting them over")

    @property
    def done(self) -> bool:
        return self.step >= self.cfg.steps

    def _eval_due(self, step: int) -> bool:
        return step == self.cfg.steps or bool(self.cfg.eval_every and step % self.cfg.eval_every == 0)

    def step_once(self) -> None:
        """One update, then whatever falls due at this step: metrics, checkpoint, evaluation (the
        checkpoint first, so that a failing evaluation cannot cost the steps before it)."""
        self.updater.step()
        self.stepped()

    def stepped(self) -> None:
        """After an update made by the updater: count it, then what falls due (step_once's second half)."""
        cfg = self.cfg
        self.step += 1
        self.bar.update(1)
        do_eval = self._eval_due(self.step)
        do_ckpt = self.step == cfg.steps or self.step % cfg.ckpt_every == 0
        if not (do_eval or do_ckpt or self.step % cfg.log_every == 0):
            return
        means, first_bad = self.updater.metrics.read()
        if first_bad >= 0:
            raise NonFiniteLossError(f"non-finite loss at step {first_bad}; training stopped; {self._kept()}")
        self.updater.sync()
        bad = first_non_finite(self.agent)  # EMA actor and targets: no loss sees them
        if bad is not None:
            raise NonFiniteLossError(f"non-finite values in the agent's {bad} at step {self.step} (finite at step "
                                     f"{self._finite_at}); training stopped; {self._kept()}")
        self._finite_at = self.step
        now = time.perf_counter()
        means["steps_per_s"] = (self.step - self._step_log) / max(now - self._t_log, 1e-9)
        self._t_log, self._step_log = now, self.step
        with self._writing():
            self._record({"kind": "train", "step": self.step, **means})
            self.bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in means.items()
                                  if k in ("critic/loss1", "actor/bc", "actor/risk")})
            if do_ckpt:
                self.save_checkpoint()
            if do_eval:
                self.last_eval = self.evaluate()
                self.bar.write(f"[step {self.step}] {self.task.summary(self.last_eval)}")

    def finish(self) -> RunResult:
        self.bar.close()
        with self._writing():
            if self.last_eval is None:  # resumed a finished run
                self.last_eval = self.evaluate()
            final = {k: v for k, v in self.last_eval.items() if k[0] != "_"}
            atomic_write_json(self.run_dir / "eval.json", {"step": self.step, **final})
            save_returns(self.run_dir / "returns.npy", self.last_eval)
        self.close()
        return RunResult(self.run_dir, self.step, self.last_eval, time.perf_counter() - self.t0)

    def _hold(self) -> None:
        if self._lock is None:
            self._lock = open_run_dir(self.run_dir)

    def close(self) -> None:
        """Release the run directory (finish() does; run() does on failure too)."""
        if getattr(self, "bar", None) is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def run(self) -> RunResult:
        try:
            self.start()
            while not self.done:
                self.step_once()
            return self.finish()
        finally:
            self.close()


def data_settings(cfg: TrainConfig) -> tuple:
    """The settings that make a trainer's task and device-resident data set."""
    return (cfg.task, cfg.dataset, cfg.env, cfg.device, cfg.obs_norm, cfg.eval_samples, cfg.eval_episodes)


def train(agent_cfg, train_cfg: TrainConfig, run_dir=None, progress: bool = True,
          shard: Shard | None = None) -> RunResult:
    """Start a new run in `run_dir` (refuses a directory that holds a checkpoint or is in use);
    shard: this process's part of a data-parallel run (only process 0 writes run_dir)."""
    if shard is not None and not shard.main:
        return _follow(agent_cfg, train_cfg, None, shard)
    run_dir = Path(run_dir) if run_dir else default_run_dir(train_cfg)
    created = not run_dir.exists()
    lock = open_run_dir(run_dir)  # before the data set loads: a busy or unwritable directory is reported first
    try:
        if (run_dir / CHECKPOINT).exists():
            raise RunDirError(f"{run_dir} already holds a run; pass --resume to continue it or choose another "
                              f"--run-dir")
        trainer = Trainer(agent_cfg, train_cfg, run_dir, progress, lock=lock, shard=shard)
    except BaseException:
        if created and [p.name for p in run_dir.iterdir()] == [LOCK]:  # leave no empty directory behind
            (run_dir / LOCK).unlink()
            run_dir.rmdir()
        lock.close()
        raise
    return trainer.run()


def resume(run_dir, steps: int | None = None, progress: bool = True, device: str | None = None,
           warn=None, shard: Shard | None = None) -> RunResult:
    """Continue a run from its checkpoint, optionally to a new total number of steps or on another
    device (its other settings are the checkpoint's). Damaged files, a config.json that differs
    from the checkpoint and a busy directory are refused before the data set loads; a cut last
    line of metrics.jsonl is dropped with a warning (`warn`, default: a line on stderr)."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if not path.exists():
        raise RunDirError(f"nothing to resume: {path} does not exist")
    follower = shard is not None and not shard.main  # reads the checkpoint only: process 0 holds the lock
    lock = None if follower else open_run_dir(run_dir)
    try:
        ckpt = read_checkpoint(path)
        agent_cfg, train_cfg = settings_of(ckpt, path)
        check_config_file(run_dir / CONFIG, ckpt)
        if steps is not None:
            if steps < ckpt["step"]:
                raise RunDirError(f"{run_dir} is at step {ckpt['step']} already; --steps is the total to reach, "
                                  f"so give at least {ckpt['step']}")
            train_cfg.steps = steps
        if device is not None:
            train_cfg.device = device
        cut = None if follower else parse_metrics(run_dir / METRICS)[1]
        if cut is not None:
            (warn or warn_line)(f"the last line of {run_dir / METRICS} is cut off ({cut[:40]!r}), as a run killed while "
                            f"writing it leaves it; dropping it")
        if follower:
            return _follow(agent_cfg, train_cfg, ckpt, shard)
        trainer = Trainer(agent_cfg, train_cfg, run_dir, progress, lock=lock, shard=shard)
        trainer.restore(ckpt)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    return trainer.run()


def _follow(agent_cfg, train_cfg: TrainConfig, ckpt: dict | None, shard: Shard) -> RunResult:
    """A data-parallel process other than 0: trains alongside process 0 (the same steps, so the
    same collectives), its records in a private directory that is removed at the end."""
    with tempfile.TemporaryDirectory(prefix=f"ramac-rank{shard.rank}-") as scratch:
        trainer = Trainer(agent_cfg, train_cfg, Path(scratch), progress=False, log=lambda *a: None, shard=shard)
        if ckpt is not None:
            trainer.restore(ckpt)
        return trainer.run()


def load_agent(run_dir, device="auto") -> tuple:
    """The agent of a run directory, restored from its checkpoint."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if not path.exists():
        raise RunDirError(f"{run_dir} has no {CHECKPOINT}; is it a ramac run directory?")
    device = resolve_device(device)
    ckpt = read_checkpoint(path)
    agent_cfg, train_cfg = settings_of(ckpt, path)
    agent = make_agent(train_cfg.algo, *ckpt["dims"], agent_cfg).to(device)
    load_agent_state(agent, ckpt, path)
    return agent, train_cfg, int(ckpt["step"])


def weights_checksum(module: torch.nn.Module) -> torch.Tensor:
    """(sum, sum of squares, sum of index-weighted values) of every parameter and buffer, float64."""
    flat = torch.cat([v.detach().double().reshape(-1) for v in module.state_dict().values() if v.is_floating_point()])
    ramp = torch.arange(flat.numel(), device=flat.device, dtype=torch.float64) / flat.numel()
    return torch.stack([flat.sum(), flat.square().sum(), (flat * ramp).sum()])


def first_non_finite(module: torch.nn.Module) -> str | None:
    """Name of the first parameter or buffer holding a NaN or inf (one read-back), or None."""
    named = [(k, v) for k, v in module.state_dict().items() if v.is_floating_point()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(v).all() for _, v in named]).cpu()
    bad = (~finite).nonzero()
    return named[int(bad[0, 0])][0] if len(bad) else None
