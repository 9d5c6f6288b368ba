"""Several seeds of one agent trained side by side in one process: one trainer per seed (its own
run directory, with the files of a single run, so `ramac eval`, `--resume` and the reports work
per seed), one data set on the device for all of them, and one updater that makes every seed's
update together (on CUDA one graph per phase: ramac.train.updaters.SeedsUpdater).

Seed i computes what `ramac train --seed i` computes: its initial weights come from its seed
alone, and every random number of its updates (batches included) from ramac.noise with its seed.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

from ..config import TrainConfig
from ..utils import atomic_write_json, progress_bar
from .loop import NonFiniteLossError, RunResult, Trainer, default_run_dir
from .rundir import CHECKPOINT, RunDirError, open_run_dir, read_checkpoint
from .updaters import make_seeds_updater

DIVERGED = "diverged.json"  # written into a run directory whose run stopped on non-finite values


@dataclasses.dataclass
class Diverged:
    """A run of a group that stopped on non-finite values while the others went on (its run
    directory keeps the last good checkpoint and DIVERGED says where and why)."""
    run_dir: Path
    step: int
    error: str


def diverged(run_dir: Path) -> Diverged | None:
    """The divergence recorded in run_dir, if any."""
    path = Path(run_dir) / DIVERGED
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    return Diverged(Path(run_dir), int(rec["step"]), str(rec["error"]))


def parse_seeds(text: str) -> list[int]:
    """'0-15', '0,3,7' or '0-3,8' -> the seeds, in order, without repeats."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ValueError(f"--seeds takes seeds and ranges such as 0-15 or 0,3,7; got {text!r}")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi < lo:
            raise ValueError(f"--seeds range {part.strip()!r} runs backwards")
        seeds += [s for s in range(lo, hi + 1) if s not in seeds]
    return seeds


def seed_dirs(run_dir: Path | None, train_cfg: TrainConfig, seeds: list[int]) -> list[Path]:
    """RUN_DIR/seedN for each seed (RUN_DIR defaults to runs/TASK-ALGO-seedsA-B-STAMP)."""
    if run_dir is None:
        base = default_run_dir(train_cfg)
        run_dir = base.with_name(base.name.replace(f"-seed{train_cfg.seed}-", f"-seeds{seeds[0]}-{seeds[-1]}-"))
    return [Path(run_dir) / f"seed{s}" for s in seeds]


def train_seeds(agent_cfg, train_cfg: TrainConfig, seeds: list[int], run_dirs: list[Path], progress: bool = True,
                resume: bool = False, log=print, plots: str = "every") -> list[RunResult | Diverged]:
    """Train (or, with resume, continue from their checkpoints where they have one) the seeds side
    by side; returns one RunResult per seed, or a Diverged for a seed whose run stopped on
    non-finite values (the others go on; a resume leaves it stopped: its draws are a function of
    the seed, so it would diverge again). Directories holding a run are refused unless resume.
    plots: each run's figures at every evaluation, the final one, or none (Trainer's)."""
    if len(seeds) != len(run_dirs) or not seeds:
        raise ValueError("give one run directory per seed, and at least one seed")
    runs = [(agent_cfg, dataclasses.replace(train_cfg, seed=s), d) for s, d in zip(seeds, run_dirs)]
    return train_group(runs, progress, resume, log, plots)


def train_group(runs: list[tuple], progress: bool = True, resume: bool = False, log=print,
                plots: str = "every") -> list[RunResult | Diverged]:
    """train_seeds for any runs (agent config, train config, run directory) of one task and data
    settings, the agents alike or not (a sweep's methods and seeds of one task side by side); the
    batch size and the update's path (graph, bf16, compile) are the first run's."""
    stopped = {i: rec for i, (_, _, d) in enumerate(runs) if resume and (rec := diverged(d)) is not None}
    for rec in stopped.values():
        log(f"{rec.run_dir}: diverged at step {rec.step} before; left as it is ({DIVERGED})")
    going = [r for i, r in enumerate(runs) if i not in stopped]
    results = iter(_train_group(going, progress, resume, log, plots) if going else [])
    return [stopped[i] if i in stopped else next(results) for i in range(len(runs))]


def _train_group(runs: list[tuple], progress: bool, resume: bool, log, plots: str) -> list[RunResult | Diverged]:
    locks, trainers = [], []
    try:
        for _, _, run_dir in runs:  # every directory is checked before any data set loads
            locks.append(open_run_dir(run_dir))
            if (run_dir / CHECKPOINT).exists() and not resume:
                raise RunDirError(f"{run_dir} already holds a run; continue the seeds with --resume or choose "
                                  f"another --run-dir")
        for (agent_cfg, cfg, run_dir), lock in zip(runs, locks):
            trainer = Trainer(agent_cfg, cfg, run_dir, progress=False, log=log, plots=plots, lock=lock,
                              source=trainers[0] if trainers else None)
            if resume and (run_dir / CHECKPOINT).exists():
                trainer.restore(read_checkpoint(run_dir / CHECKPOINT))
            trainers.append(trainer)
        return _run(trainers, runs[0][1], progress, log)
    finally:
        for trainer in trainers:
            trainer.close()
        for lock in locks[len(trainers):]:
            lock.close()


def _run(trainers: list[Trainer], cfg: TrainConfig, progress: bool, log=print) -> list[RunResult | Diverged]:
    first = trainers[0]
    updater = make_seeds_updater([t.agent for t in trainers], first.data, [t.batch_size for t in trainers],
                                 graph=cfg.graph, bf16=cfg.bf16, compile=cfg.compile,
                                 # stacked seeds step together: only runs that start and end together
                                 stack=len({(t.step, t.cfg.steps) for t in trainers}) == 1)
    for trainer, own in zip(trainers, updater.updaters):
        trainer.start(updater=own)
    total = sum(t.cfg.steps for t in trainers)
    algos = sorted({t.cfg.algo for t in trainers})
    bar = progress_bar(total=total, initial=sum(t.step for t in trainers), disable=not progress,
                       desc=f"{cfg.task}/{'+'.join(algos)} x{len(trainers)} runs", unit="run-step")
    t0 = time.perf_counter()
    failed: dict[int, Diverged] = {}
    try:
        while True:
            active = [i for i, t in enumerate(trainers) if not t.done and i not in failed]
            if not active:
                break
            updater.step(active)
            for i in active:
                try:
                    trainers[i].stepped()
                except NonFiniteLossError as e:  # this run stops; the others go on
                    failed[i] = Diverged(trainers[i].run_dir, trainers[i].step, str(e))
                    atomic_write_json(trainers[i].run_dir / DIVERGED, {"step": trainers[i].step, "error": str(e)})
                    log(f"{trainers[i].run_dir}: {e}")
            bar.update(len(active))
    finally:
        bar.close()
    results = [failed[i] if i in failed else t.finish() for i, t in enumerate(trainers)]
    wall = time.perf_counter() - t0
    return [r if isinstance(r, Diverged) else dataclasses.replace(r, wall_time_s=wall) for r in results]


def seed_runs_in(run_dir: Path) -> list[Path]:
    """The seed directories (seedN, each with a checkpoint) of a side-by-side run, by seed."""
    found = [p for p in Path(run_dir).glob("seed*") if re.fullmatch(r"seed\d+", p.name) and (p / CHECKPOINT).exists()]
    return sorted(found, key=lambda p: int(p.name[4:]))


def resume_seeds(run_dir: Path, steps: int | None = None, progress: bool = True, device: str | None = None,
                 log=print) -> list[RunResult]:
    """Continue every seed of a side-by-side run (RUN_DIR/seedN) from its checkpoint, together."""
    from .rundir import settings_of

    dirs = seed_runs_in(run_dir)
    if not dirs:
        raise RunDirError(f"{run_dir} holds no seedN/{CHECKPOINT}; is it a `ramac train --seeds` directory?")
    settings = [settings_of(read_checkpoint(d / CHECKPOINT), d / CHECKPOINT) for d in dirs]
    agent_cfg, train_cfg = settings[0]
    for (a, t), d in zip(settings, dirs):
        if a != agent_cfg or dataclasses.replace(t, seed=train_cfg.seed) != train_cfg:
            raise RunDirError(f"{d} was trained with other settings than {dirs[0]}; resume it on its own")
    if steps is not None:
        train_cfg = dataclasses.replace(train_cfg, steps=steps)
    if device is not None:
        train_cfg = dataclasses.replace(train_cfg, device=device)
    return train_seeds(agent_cfg, train_cfg, [t.seed for _, t in settings], dirs, progress, resume=True, log=log)
