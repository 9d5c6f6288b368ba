"""The time budget of a sweep's metered stretches: how long each (task, agent) unit took on a device
(OUT/unit-times.json), predictions for units never timed, how many of a unit's seeds fit what is
left of a budget, and the data sets built on demand within it (ramac.sweep uses these; a unit's
cells are ramac.sweep.Cell, read here for their task, agent and train_cfg.steps)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from .utils import atomic_write_json

DATA_WORKERS = 8  # --make-data's rollout processes: fixed, as the data set depends on it (not the core count)
EVAL_GUESS_S = 30.0  # a cell's second evaluation (100 episodes and the OOD detectors, H200: ~20-30 s)
UNCERTAIN_MARGIN = 1.25  # a unit never timed is guessed from others and assumed this much longer (stretch 11:
# two units guessed at 450 and 479 s trained in 454 and 475 s, then needed ~100 s more for their evaluations)
FIXED_SEEDS = 5.0  # a unit's fixed time in seeds' worth of its per-seed time (seed_scaling)


def seed_scaling(recorded: int, seeds: int) -> float:
    """A unit of `seeds` seeds over one of `recorded` seeds (same task, agent and steps), each
    taken as a fixed time (compilation, evaluation set-up, a GPU not yet full) plus a time per
    seed, the fixed one worth FIXED_SEEDS seeds. On an H200 RADAC took 0.61-0.63 as long with 1
    seed as with 5 (results/mujoco-reduced/unit-times.json: 171 / 271 s, 271 / 445 s); (5 + 1) /
    (5 + 5) = 0.6."""
    return (FIXED_SEEDS + seeds) / (FIXED_SEEDS + recorded)


class UnitTimes:
    """Seconds each (task, agent) unit took on a device, training and second evaluation together,
    kept in OUT/unit-times.json so that a later stretch of machine time can tell which units fit
    what is left of its budget. A unit never timed on the device is guessed from the units that
    were (predict: UNCERTAIN_MARGIN longer, other seed counts scaled by seed_scaling), else not at
    all. The seeds' layout is part of the key ("5 seeds" side by side, "5 seeds stacked" with
    RAMAC_STACK_SEEDS=1): the layouts' times differ, and one never predicts the other (one seed
    trains alone either way: its time scales to either)."""

    def __init__(self, path: Path, device_name: str, stacked: bool | None = None):
        self.path, self.device_name = Path(path), device_name
        self.stacked = os.environ.get("RAMAC_STACK_SEEDS") == "1" if stacked is None else stacked

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _key(self, task: str, agent: str, seeds: int, steps: int) -> str:
        # (one seed is never stacked: make_seeds_updater trains it alone)
        stacked = " stacked" if self.stacked and seeds > 1 else ""
        return f"{self.device_name} | {task} | {agent} | {seeds} seeds{stacked} | {steps} steps"

    def recorded(self, task: str, agent: str, seeds: int, steps: int) -> bool:
        """Whether this unit's own time is recorded (predict then returns it, not a guess)."""
        return self._key(task, agent, seeds, steps) in self._read()

    def predict(self, task: str, agent: str, seeds: int, steps: int) -> float | None:
        """The unit's recorded seconds; else a guess from other units on this device with the same
        steps and layout, times UNCERTAIN_MARGIN: the longest of the first of these that has any,
        (1) the same task and agent at other seed counts, scaled to this one (seed_scaling); (2) the
        agent at this seed count on other tasks; (3) the agent at other counts, scaled; (4) every
        agent at this count (an untimed agent is assumed as slow as the slowest one timed); (5)
        every unit, scaled. None when there is none."""
        known = self._read()
        if (exact := known.get(self._key(task, agent, seeds, steps))) is not None:
            return float(exact)
        _, _, _, size, length = self._key(task, agent, seeds, steps).split(" | ")
        layout = size.split(" ", 1)[1]  # "seeds" or "seeds stacked"
        tiers: list[list[float]] = [[] for _ in range(5)]
        for k, v in known.items():
            device, their_task, other, n, their_length = k.split(" | ")
            count, their_layout = n.split(" ", 1)
            if device != self.device_name or their_length != length or not count.isdigit():
                continue
            if n == size:
                tiers[1 if other == agent else 3].append(float(v))
            elif their_layout == layout or int(count) == 1:  # one seed trains alone either way
                guess = float(v) * seed_scaling(int(count), seeds)
                tiers[(0 if their_task == task else 2) if other == agent else 4].append(guess)
        if mine := next((t for t in tiers if t), None):
            return UNCERTAIN_MARGIN * max(mine)
        return None

    def _data_key(self, task: str) -> str:  # five fields, as a unit's key (never matched as one)
        return f"{self.device_name} | {task} | data set | {DATA_WORKERS} workers | build"

    def predict_data(self, task: str) -> float | None:
        """Seconds the task's data set took to build on this device, if recorded."""
        seconds = self._read().get(self._data_key(task))
        return None if seconds is None else float(seconds)

    def record_data(self, task: str, seconds: float) -> None:
        self._write(self._data_key(task), seconds)

    def record(self, task: str, agent: str, seeds: int, steps: int, seconds: float) -> None:
        self._write(self._key(task, agent, seeds, steps), seconds)

    def _write(self, key: str, seconds: float) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:  # the processes of a torchrun
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            known = self._read()  # read under the lock: another process may have written meanwhile
            known[key] = round(seconds, 1)
            atomic_write_json(self.path, dict(sorted(known.items())))


class DataSets:
    """The missing data sets of a single-process sweep, built on demand: a task's just before its
    first unit that is to train, so that a metered stretch spends no time building the data of
    tasks it will not reach. With a budget a unit then needs its own recorded time plus its data
    set's (OUT/unit-times.json; an unrecorded build counts as 0 s). build: task -> None (default
    `ramac data make TASK --workers DATA_WORKERS`)."""

    def __init__(self, missing, times: UnitTimes | None = None, log=print, build=None):
        self.missing, self.times, self.log = list(missing), times, log
        self.build = build or self._make

    @staticmethod
    def _make(task: str) -> None:
        from .data import stochastic_mujoco

        stochastic_mujoco.make(task, progress=False, workers=DATA_WORKERS)

    def predict(self, task: str) -> float:
        """Seconds still to spend on the task's data set before it can train."""
        if task not in self.missing:
            return 0.0
        return (self.times.predict_data(task) if self.times else None) or 0.0

    def ensure(self, task: str) -> None:
        import time

        if task not in self.missing:
            return
        self.log(f"building the data set of {task} (ramac data make {task} --workers {DATA_WORKERS})")
        t = time.perf_counter()
        self.build(task)
        self.missing.remove(task)
        if self.times is not None:
            self.times.record_data(task, time.perf_counter() - t)


def planning_times(out, timed_on: str | None = None) -> UnitTimes:
    """OUT/unit-times.json read for timed_on, default the device named most there."""
    times = UnitTimes(Path(out) / "unit-times.json", timed_on or "")
    if timed_on is None:
        counts = Counter(k.split(" | ")[0] for k in times._read())
        times.device_name = counts.most_common(1)[0][0] if counts else ""
    return times


def unit_seconds(times: UnitTimes, todo: list, evaluations: int) -> float | None:
    """Predicted seconds of a unit's work (None when nothing predicts its training)."""
    train = times.predict(todo[0].task, todo[0].agent, len(todo), todo[0].train_cfg.steps) if todo else 0.0
    return None if train is None else train + EVAL_GUESS_S * evaluations


def fitting_seeds(times: UnitTimes, todo: list, room: float) -> int:
    """How many of a unit's seeds (the first n, side by side) are predicted to train and be
    evaluated again within `room` seconds: all when the unit fits or nothing predicts it (a unit
    never timed starts while any budget is left), else the most that fit, else 0."""
    c = todo[0]
    for n in range(len(todo), 0, -1):
        need = times.predict(c.task, c.agent, n, c.train_cfg.steps)
        if need is None and n == len(todo) or need is not None and need <= room:
            return n
    return 0
