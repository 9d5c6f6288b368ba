"""Training loop: seeding, progress, periodic evaluation, metrics, atomic checkpoints, resume."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from ..agents import config_class, make_agent
from ..config import TrainConfig, from_dict, to_dict
from .updaters import make_updater
from .tasks import make_task
from ..utils import (atomic_torch_save, atomic_write_bytes, atomic_write_json, progress_bar, provenance,
                    resolve_device, rng_state, seed_everything, set_rng_state)

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf; the message gives the step and the checkpoint that was kept."""


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (exists, or missing for --resume)."""


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
                 log=print, plots: str = "every"):
        """agent_cfg: the config (validated, e.g. by build_configs) of the agent train_cfg.algo names."""
        self.agent_cfg, self.cfg = agent_cfg, train_cfg
        self.run_dir = Path(run_dir)
        if plots not in ("every", "final", "none"):
            raise ValueError(f"plots must be every, final or none, got {plots!r}")
        self.progress, self.log, self.plots = progress, log, plots
        self.device = resolve_device(train_cfg.device)
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        seed_everything(train_cfg.seed)
        self.task = make_task(train_cfg.task, self.device, train_cfg.eval_samples, train_cfg.eval_episodes)
        self.data = self.task.dataset.to(self.device)
        self.agent = make_agent(train_cfg.algo, self.data.state_dim, self.data.action_dim, agent_cfg).to(self.device)
        self.agent.fit_data(self.data)
        self.agent.seed_noise(train_cfg.seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(train_cfg.seed)
        self.step = 0
        self.last_checkpoint = None

    # ---- files ------------------------------------------------------------------------
    def _write_config(self):
        atomic_write_json(self.run_dir / CONFIG, {
            "agent": to_dict(self.agent_cfg), "train": to_dict(self.cfg),
            "provenance": provenance(self.device), "dataset": self.data.meta,
        })

    def save_checkpoint(self):
        atomic_torch_save({
            "step": self.step, "agent": self.agent.full_state(), "rng": rng_state(),
            "dims": (self.data.state_dim, self.data.action_dim),
            "generator": self.generator.get_state(),
            "agent_cfg": to_dict(self.agent_cfg), "train_cfg": to_dict(self.cfg),
        }, self.run_dir / CHECKPOINT)
        self.last_checkpoint = self.step

    def load_checkpoint(self):
        path = self.run_dir / CHECKPOINT
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        self.agent.load_full_state(ckpt["agent"])
        set_rng_state(ckpt["rng"])
        self.generator.set_state(ckpt["generator"])
        self.step = self.last_checkpoint = int(ckpt["step"])
        self._truncate_metrics(self.step)

    def _record(self, row: dict):
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        rows = read_metrics(self.run_dir)
        for kind in ("train", "eval"):
            _write_csv(self.run_dir / f"{kind}.csv", [r for r in rows if r["kind"] == kind])

    def _truncate_metrics(self, step: int):
        rows = [r for r in read_metrics(self.run_dir) if r["step"] <= step]
        atomic_write_bytes(self.run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in rows).encode())

    # ---- loop ----------------------------------------------------------------------------
    def evaluate(self) -> dict:
        metrics = self.task.evaluate(self.agent, seed=self.cfg.seed * 100_003 + self.step)
        self._record({"kind": "eval", "step": self.step, **{k: v for k, v in metrics.items() if k[0] != "_"}})
        if self.plots == "every" or (self.plots == "final" and self.step >= self.cfg.steps):
            self.task.report(metrics, self.run_dir, title=f"{self.cfg.task} / {self.cfg.algo}, step {self.step}")
        return metrics

    def make_updater(self):
        """The graphed (and compiled) fast path on CUDA unless disabled; bf16 autocast where asked
        (on CPU too, eagerly); the plain loop otherwise."""
        cfg = self.cfg
        return make_updater(self.agent, self.data, cfg.batch_size, graph=cfg.graph, bf16=cfg.bf16,
                            compile=cfg.compile, generator=self.generator)

    def start(self) -> None:
        """Open the run directory and build the updater (before the first step_once())."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self.updater, self.t0, self.last_eval = self.make_updater(), time.perf_counter(), None
        self._t_log, self._step_log = self.t0, self.step
        self.bar = progress_bar(total=self.cfg.steps, initial=self.step, disable=not self.progress,
                                desc=f"{self.cfg.task}/{self.cfg.algo}")

    @property
    def done(self) -> bool:
        return self.step >= self.cfg.steps

    def step_once(self) -> None:
        """One update, then whatever falls due at this step: metrics, evaluation, checkpoint."""
        cfg = self.cfg
        self.updater.step()
        self.step += 1
        self.bar.update(1)
        done = self.step == cfg.steps
        do_eval = done or (cfg.eval_every and self.step % cfg.eval_every == 0)
        do_ckpt = done or self.step % cfg.ckpt_every == 0
        if not (done or do_eval or do_ckpt or self.step % cfg.log_every == 0):
            return
        means, first_bad = self.updater.metrics.read()
        if first_bad >= 0:
            raise NonFiniteLossError(
                f"non-finite loss at step {first_bad + 1}; training stopped. The last good checkpoint "
                f"(step {self.last_checkpoint}) is kept at {self.run_dir / CHECKPOINT}"
                if self.last_checkpoint is not None else
                f"non-finite loss at step {first_bad + 1}; training stopped before any checkpoint"
            )
        now = time.perf_counter()
        means["steps_per_s"] = (self.step - self._step_log) / max(now - self._t_log, 1e-9)
        self._t_log, self._step_log = now, self.step
        self._record({"kind": "train", "step": self.step, **means})
        self.bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in means.items()
                              if k in ("critic/loss1", "actor/bc", "actor/risk")})
        self.updater.sync()
        if do_eval:
            self.last_eval = self.evaluate()
            self.bar.write(f"[step {self.step}] {self.task.summary(self.last_eval)}")
        if do_ckpt:
            self.save_checkpoint()

    def finish(self) -> RunResult:
        self.bar.close()
        if self.last_eval is None:  # resumed a finished run
            self.last_eval = self.evaluate()
        final = {k: v for k, v in self.last_eval.items() if k[0] != "_"}
        atomic_write_json(self.run_dir / "eval.json", {"step": self.step, **final})
        return RunResult(self.run_dir, self.step, self.last_eval, time.perf_counter() - self.t0)

    def run(self) -> RunResult:
        self.start()
        try:
            while not self.done:
                self.step_once()
        finally:
            self.bar.close()
        return self.finish()


def train(agent_cfg, train_cfg: TrainConfig, run_dir=None, progress: bool = True) -> RunResult:
    """Start a new run in `run_dir` (refuses a directory that already holds a checkpoint)."""
    run_dir = Path(run_dir) if run_dir else default_run_dir(train_cfg)
    if (run_dir / CHECKPOINT).exists():
        raise RunDirError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
    return Trainer(agent_cfg, train_cfg, run_dir, progress).run()


def resume(run_dir, steps: int | None = None, progress: bool = True) -> RunResult:
    """Continue a run from its checkpoint (optionally to a new total number of steps)."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).exists():
        raise RunDirError(f"nothing to resume: {run_dir / CHECKPOINT} does not exist")
    saved = json.loads((run_dir / CONFIG).read_text())
    train_cfg = from_dict(TrainConfig, saved["train"])
    agent_cfg = from_dict(config_class(train_cfg.algo), saved["agent"])
    if steps is not None:
        train_cfg.steps = steps
    trainer = Trainer(agent_cfg, train_cfg, run_dir, progress)
    trainer.load_checkpoint()
    return trainer.run()


def load_agent(run_dir, device="auto") -> tuple:
    """The agent of a run directory, restored from its checkpoint."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if not path.exists():
        raise RunDirError(f"{run_dir} has no {CHECKPOINT}; is it a ramac run directory?")
    device = resolve_device(device)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    train_cfg = from_dict(TrainConfig, ckpt["train_cfg"])
    agent_cfg = from_dict(config_class(train_cfg.algo), ckpt["agent_cfg"])
    agent = make_agent(train_cfg.algo, *ckpt["dims"], agent_cfg).to(device)
    agent.load_full_state(ckpt["agent"])
    return agent, train_cfg, int(ckpt["step"])


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_csv(path: Path, rows: list[dict]):
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
