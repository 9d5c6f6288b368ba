"""`ramac sweep CONFIG.toml`: tasks x agents x seeds (with settings per agent), one run directory
per cell, sharded over the processes of a torchrun launch, resumable, and a table per task.

    name = "mujoco-small"                 # results/NAME/ unless --out
    tasks = ["halfcheetah-medium-replay", "hopper-medium-replay"]
    agents = ["radac", "bc"]
    seeds = [0, 1, 2, 3, 4]
    [train]                               # run settings (TrainConfig) of every cell
    steps = 30000
    eval_every = 10000
    [set]                                 # agent settings for every agent that has them
    grad_norm = 5.0
    [set.radac]                           # ... and for one agent (after the common ones)
    eta = 0.05
    [eval]                                # optional: evaluate each finished run again (`ramac eval`)
    episodes = 100                        # MuJoCo episodes (bandit: samples = ...)
    ood = true                            # MuJoCo: the OOD-action rate of each detector

Cells are ordered task, agent, seed. The seeds of one task and agent are one unit of work, trained
side by side in one process (`ramac train --seeds`: on a GPU one CUDA graph makes every seed's
update; each seed its own run directory); process `rank` of `world` takes units rank, rank +
world, ... (one process per GPU under torchrun, gloo on CPUs, NCCL on GPUs), each with its own
device. A finished cell (its final evaluation written) is skipped; an interrupted one continues
from its checkpoint; so the same command, rerun, finishes a sweep across separate stretches of machine
time. With an [eval] table each process evaluates each unit's runs again once the unit is trained
(eval-again.json, skipped where it exists for the final step), and first of all the runs an
earlier stretch trained but had no time to evaluate again. When every process is done, process 0 writes
OUT/TASK.md / .csv / .json (mean and 95 % bootstrap interval over seeds per agent: `ramac
report`'s aggregation), OUT/TASK-risk.png (risk profile per agent) and OUT/TASK-curves.png
(evaluation curves, mean over seeds), plus OUT/sweep.json (the resolved cells, versions, the
config file's text).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .agents.registry import ALGOS
from .config import TrainConfig, agent_shares, build_configs, preset_of, task_names
from .sweep_budget import DataSets, UnitTimes, fitting_seeds, planning_times, unit_seconds
from .utils import atomic_write_bytes, atomic_write_json, device_name, provenance, resolve_device, save_figure


class SweepError(ValueError):
    """A sweep configuration that cannot run (one line, before anything trains)."""


@dataclass
class SweepSpec:
    name: str
    tasks: list[str]
    agents: list[str]
    seeds: list[int]
    train: dict = field(default_factory=dict)
    common: dict = field(default_factory=dict)  # [set] keys that are not agent names
    per_agent: dict = field(default_factory=dict)  # [set.AGENT]
    eval: dict = field(default_factory=dict)  # [eval]: reevaluate()'s episodes, samples, seed, ood
    text: str = ""  # the file's text, kept with the results


def load_spec(path) -> SweepSpec:
    path = Path(path)
    if not path.exists():
        raise SweepError(f"sweep config {path} does not exist")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path} is not valid TOML: {e}") from None
    return parse_spec(raw, text, default_name=path.stem)


def parse_spec(raw: dict, text: str = "", default_name: str = "sweep") -> SweepSpec:
    known = {"name", "tasks", "agents", "seeds", "train", "set", "eval"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SweepError(f"unknown sweep key(s) {unknown}; known: {sorted(known)}")
    for key in ("tasks", "agents", "seeds"):
        if not isinstance(raw.get(key), list) or not raw[key]:
            raise SweepError(f"sweep needs a non-empty list '{key}'")
    bad_tasks = [t for t in raw["tasks"] if t not in task_names()]
    if bad_tasks:
        raise SweepError(f"unknown task(s) {bad_tasks}; known: {', '.join(task_names())}")
    bad_agents = [a for a in raw["agents"] if a not in ALGOS]
    if bad_agents:
        raise SweepError(f"unknown agent(s) {bad_agents}; known: {', '.join(ALGOS)}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw["seeds"]):
        raise SweepError(f"seeds must be integers >= 0, got {raw['seeds']}")
    if len(set(raw["seeds"])) != len(raw["seeds"]):
        raise SweepError(f"seeds must differ, got {raw['seeds']}")
    train = dict(raw.get("train", {}))
    fixed = {"task", "algo", "seed", "dataset", "env"} & set(train)
    if fixed:
        raise SweepError(f"[train] cannot set {sorted(fixed)}: the sweep sets them per cell")
    train_fields = {f.name for f in fields(TrainConfig)}
    if set(train) - train_fields:
        raise SweepError(f"unknown [train] setting(s) {sorted(set(train) - train_fields)}")
    sets = dict(raw.get("set", {}))
    per_agent = {k: sets.pop(k) for k in list(sets) if k in ALGOS}
    for agent, values in per_agent.items():
        if not isinstance(values, dict):
            raise SweepError(f"[set.{agent}] must be a table of settings")
        if agent not in raw["agents"]:
            raise SweepError(f"[set.{agent}] names an agent the sweep does not train")
    nested = [k for k, v in sets.items() if isinstance(v, dict)]
    if nested:
        raise SweepError(f"[set.{nested[0]}]: {nested[0]!r} is not an agent; known: {', '.join(ALGOS)}")
    orphans = agent_shares(sets, raw["agents"])[1]
    if orphans:
        raise SweepError(f"[set] setting(s) {orphans} belong to none of the agents {raw['agents']}")
    evaluation = dict(raw.get("eval", {}))
    kinds = {"episodes": int, "samples": int, "seed": int, "ood": bool}
    for key, value in evaluation.items():
        if key not in kinds:
            raise SweepError(f"unknown [eval] setting {key!r}; known: {sorted(kinds)}")
        if type(value) is not kinds[key] or (kinds[key] is int and value < (0 if key == "seed" else 1)):
            raise SweepError(f"[eval] {key} must be {'true or false' if key == 'ood' else 'a positive integer'}, "
                             f"got {value!r}")
    spec = SweepSpec(str(raw.get("name", default_name)), list(raw["tasks"]), list(raw["agents"]),
                     [int(s) for s in raw["seeds"]], train, sets, per_agent, evaluation, text)
    plan(spec, Path("."), "cpu", full=True)  # every cell's settings resolve (and validate) before anything runs
    return spec


@dataclass
class Cell:
    task: str
    agent: str
    seed: int
    run_dir: Path
    agent_cfg: object
    train_cfg: TrainConfig


def plan(spec: SweepSpec, runs_dir: Path, device: str, full: bool = False) -> list[Cell]:
    """Every (task, agent, seed) with its resolved settings, in sweep order (CPU-sized presets on
    a CPU unless full, as `ramac train`)."""
    cpu_sized = resolve_device(str(device)).type == "cpu" and not full
    cells, shares = [], agent_shares(spec.common, spec.agents)[0]
    for task in spec.tasks:
        for agent in spec.agents:
            overrides = shares[agent] | spec.per_agent.get(agent, {})
            for seed in spec.seeds:
                try:
                    agent_cfg, train_cfg = build_configs(
                        task, agent, cpu_sized=cpu_sized, agent_overrides=overrides,
                        train_overrides={**spec.train, "seed": seed, "device": str(device)})
                except ValueError as e:
                    raise SweepError(f"{task} / {agent}: {e}") from None
                cells.append(Cell(task, agent, seed, runs_dir / f"{task}-{agent}-seed{seed}", agent_cfg, train_cfg))
    return cells


def units(cells: list[Cell]) -> list[list[Cell]]:
    """The cells grouped by (task, agent), in sweep order: the seeds trained side by side."""
    grouped: dict = defaultdict(list)
    for c in cells:
        grouped[(c.task, c.agent)].append(c)
    return list(grouped.values())


def unit_work(unit: list[Cell], with_eval: bool) -> tuple[list[Cell], int]:
    """(the unit's cells to train, how many only await their second evaluation). A cell trained but
    not evaluated again is work too: its evaluation where its checkpoint is here (a warm
    machine), else its training again (set_aside_unevaluable)."""
    from .train.rundir import CHECKPOINT

    todo, evaluations = [], 0
    for c in unit:
        if not settled(c):
            todo.append(c)
        elif with_eval and not evaluated_again(c):
            if (c.run_dir / CHECKPOINT).exists():
                evaluations += 1
            else:
                todo.append(c)
    return todo, evaluations


def lanes(spec: SweepSpec, out, n: int, device: str = "auto", full: bool = False,
          timed_on: str | None = None) -> list[list[str]]:
    """The sweep's tasks that still have cells to train, dealt to n processes side by side on one
    GPU (bench/studies/gpu_sweep.sh's LANES): the task with the most predicted seconds left (each
    unit's work, unit_work, in OUT/unit-times.json on timed_on, default the device named most
    there; an untimed unit as UnitTimes predicts it, else as the longest recorded; a cell awaiting
    only its second evaluation EVAL_GUESS_S) goes to the lane with the least so far. Fewer lanes
    when fewer tasks are left; none when the sweep is done."""
    if n < 1:
        raise SweepError(f"--lanes must be at least 1, got {n}")
    times = planning_times(out, timed_on)
    longest = max(map(float, times._read().values()), default=1.0)
    left: dict = defaultdict(float)
    for unit in units(plan(spec, Path(out) / "runs", device, full=full)):
        todo, evaluations = unit_work(unit, bool(spec.eval))
        if todo or evaluations:
            seconds = unit_seconds(times, todo, evaluations)
            left[unit[0].task] += longest if seconds is None else seconds
    dealt: list[list] = [[0.0, []] for _ in range(n)]
    for task in sorted(left, key=lambda t: (-left[t], spec.tasks.index(t))):
        lane = min(dealt, key=lambda d: d[0])
        lane[0] += left[task]
        lane[1].append(task)
    return [tasks for _, tasks in dealt if tasks]


def cell_state(c: Cell, with_eval: bool) -> str:
    """A cell's state for `ramac sweep --dry-run`."""
    from .study import is_finished
    from .train.group import diverged
    from .train.rundir import CHECKPOINT

    held = (c.run_dir / CHECKPOINT).exists()
    if (d := diverged(c.run_dir)) is not None:
        return f"diverged at step {d.step}"
    if not is_finished(c.run_dir, c.train_cfg.steps):
        return "resumes from its checkpoint" if held else "to train"
    if not with_eval or evaluated_again(c):
        return "finished"
    return "trained, to evaluate again" if held else "trained, its checkpoint gone: trains again"


def describe(spec: SweepSpec, out, device: str = "auto", full: bool = False, timed_on: str | None = None) -> list[str]:
    """`ramac sweep --dry-run`: each cell and its state, then each unit with work left and its
    predicted seconds (recorded or guessed, on the device most recorded in OUT/unit-times.json)."""
    out = Path(out)
    cells = plan(spec, out / "runs", device, full=full)
    lines = [f"{c.task:28s} {c.agent:14s} seed {c.seed:<3d} {cell_state(c, bool(spec.eval))}" for c in cells]
    times = planning_times(out, timed_on)
    total, left = 0.0, 0
    for unit in units(cells):
        todo, evaluations = unit_work(unit, bool(spec.eval))
        if not (todo or evaluations):
            continue
        left += 1
        seconds = unit_seconds(times, todo, evaluations)
        exact = bool(todo) and times.recorded(todo[0].task, todo[0].agent, len(todo), todo[0].train_cfg.steps)
        work = ", ".join(([f"{len(todo)} seed(s) to train"] if todo else [])
                         + ([f"{evaluations} to evaluate again"] if evaluations else []))
        said = ("nothing recorded predicts it" if seconds is None else
                f"{seconds:.0f} s ({'recorded' if exact else 'guessed'})")
        lines.append(f"unit {unit[0].task} / {unit[0].agent}: {work}; {said}")
        total += seconds or 0.0
    if left:
        where = f" on {times.device_name}" if times.device_name else ""
        lines.append(f"{left} unit(s) with work left, about {total:.0f} s{where} one after another")
    else:
        lines.append("every cell is finished")
    return lines


def shard(cells: list[Cell], rank: int, world: int) -> list[Cell]:
    """This process's cells: the units rank, rank + world, ..."""
    return [c for unit in units(cells)[rank::world] for c in unit]


def train_units(cells: list[Cell], log=print, plots: str = "final", time_limit_s: float | None = None,
                after_unit=None, budget_s: float | None = None, times: UnitTimes | None = None,
                t0: float | None = None, data: DataSets | None = None) -> None:
    """Train the unfinished cells, the seeds of each (task, agent) side by side (continuing any
    that hold a checkpoint). time_limit_s: start no unit after that many seconds of training (a
    unit under way runs to its end). budget_s: start only units predicted (by `times`: recorded, or
    guessed from other units) to end, second evaluation included, within that many seconds of t0;
    a unit that would not trains its first seeds that would (fitting_seeds), or none, and later
    units may go first (a unit nothing predicts starts while any budget is left); so a metered
    stretch of GPU time ends on finished cells. after_unit: called with each unit's cells once they are
    trained (the sweep's second evaluation). times: where each unit's duration is recorded.
    data: the missing data sets, each built before the first unit of its task that trains (and
    counted in the budget)."""
    import time

    from .train.group import Diverged, train_seeds
    from .train.rundir import CHECKPOINT

    t_train = time.perf_counter()  # --time-limit counts training only; the budget counts from t0
    t0 = t_train if t0 is None else t0
    for unit in units(cells):
        todo = [c for c in unit if not settled(c)]
        if not todo:
            continue
        first = todo[0]
        if time_limit_s is not None and time.perf_counter() - t_train >= time_limit_s:
            log(f"  time limit reached ({time_limit_s:.0f} s): {unit[0].task} / {unit[0].agent} and later units "
                f"left for the next run")
            return
        if budget_s is not None:
            left = budget_s - (time.perf_counter() - t0)
            if left <= 0:
                log(f"  budget spent ({budget_s:.0f} s): {first.task} / {first.agent} and later units left for "
                    f"the next run")
                return
            build = data.predict(first.task) if data else 0.0
            n = fitting_seeds(times, todo, left - build) if times else len(todo)
            if n == 0:
                need = times.predict(first.task, first.agent, len(todo), first.train_cfg.steps)
                one = times.predict(first.task, first.agent, 1, first.train_cfg.steps)
                log(f"  {first.task} / {first.agent} left for the next run: predicted {need:.0f} s"
                    + (f" after {build:.0f} s for its data set" if build else "")
                    + f", {max(left, 0):.0f} s of the budget are left"
                    + (f" (one seed alone: {one:.0f} s)" if len(todo) > 1 else ""))
                continue
            if n < len(todo):
                log(f"  {first.task} / {first.agent}: {n} of its {len(todo)} seeds fit the budget "
                    f"({max(left, 0):.0f} s left); the other seeds are left for the next run")
                todo = todo[:n]
        if data is not None:
            data.ensure(first.task)
        t_unit = time.perf_counter()
        fresh = not any((c.run_dir / CHECKPOINT).exists() for c in todo)  # a resumed unit's time says less
        results = train_seeds(first.agent_cfg, first.train_cfg, [c.seed for c in todo], [c.run_dir for c in todo],
                              progress=False, resume=True, log=lambda *a: None, plots=plots)
        for c, r in zip(todo, results):
            said = f"diverged at step {r.step} ({r.error})" if isinstance(r, Diverged) else _summary(r.final_eval)
            log(f"  {c.task} {c.agent} seed {c.seed}: {said}")
        log(f"  {first.task} / {first.agent}: {len(todo)} seeds x {first.train_cfg.steps} steps side by side in "
            f"{time.perf_counter() - t_unit:.0f} s ({time.perf_counter() - t0:.0f} s so far)")
        if after_unit is not None:
            after_unit(unit)
        if times is not None and fresh:
            times.record(first.task, first.agent, len(todo), first.train_cfg.steps, time.perf_counter() - t_unit)


def settled(c: Cell) -> bool:
    """Whether a cell needs no more training: finished, or stopped on non-finite values (its draws
    are a function of its seed: training it again would diverge again)."""
    from .study import is_finished
    from .train.group import diverged

    return is_finished(c.run_dir, c.train_cfg.steps) or diverged(c.run_dir) is not None


def set_aside_unevaluable(c: Cell, log=print) -> bool:
    """A cell trained to its end whose second evaluation is missing and whose checkpoint is gone
    (a stretch of GPU time ended between the two, and only the run's records were kept) can never
    be evaluated again: its folder is renamed to NAME.no-checkpoint (nothing is deleted) so the
    cell trains again from its seed. Returns whether it was set aside."""
    from .study import is_finished
    from .train.rundir import CHECKPOINT

    if (not is_finished(c.run_dir, c.train_cfg.steps) or evaluated_again(c)
            or (c.run_dir / CHECKPOINT).exists()):
        return False
    aside = c.run_dir.with_name(c.run_dir.name + ".no-checkpoint")
    n = 1
    while aside.exists():
        n += 1
        aside = c.run_dir.with_name(f"{c.run_dir.name}.no-checkpoint{n}")
    c.run_dir.rename(aside)
    log(f"  {c.task} {c.agent} seed {c.seed}: trained but never evaluated again and its checkpoint is gone; "
        f"kept as {aside.name}, training it again")
    return True


def evaluated_again(c: Cell) -> bool:
    """Whether a cell holds [eval]'s evaluation of its final step (or needs none: it diverged)."""
    return run_evaluated_again(c.run_dir, c.train_cfg.steps)


def run_evaluated_again(run_dir, steps: int) -> bool:
    """evaluated_again for a run folder trained for `steps` updates."""
    from .train.group import diverged

    again = Path(run_dir) / "eval-again.json"
    return diverged(run_dir) is not None or (again.exists() and json.loads(again.read_text()).get("step") == steps)


def _summary(metrics: dict) -> str:
    from .evaluation import summary_line
    from .envs import bandit

    return bandit.summary_line(metrics) if "share/best_tail" in metrics else summary_line(metrics)


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------
def dist_context():
    """(rank, world, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def missing_data(spec: SweepSpec) -> list[str]:
    """The sweep's Stochastic MuJoCo tasks whose data set is not built here (`ramac data make`)."""
    from .data import stochastic_mujoco

    return [t for t in spec.tasks if preset_of(t) != "bandit" and not stochastic_mujoco.exists(t)]


def run_sweep(spec: SweepSpec, out, device: str = "auto", full: bool = False, log=print, plots: str = "final",
              make_data: bool = False, time_limit_s: float | None = None, tasks: list[str] | None = None,
              budget_s: float | None = None) -> dict | None:
    """Train this process's cells, wait for the others, and (process 0) write the tables of every
    task whose cells have all finished. Returns the report on process 0 (its "unfinished" lists
    the cells left), None elsewhere. plots: each run's own figures ("final", "every" evaluation
    or "none"). make_data: build the missing MuJoCo data sets first (process 0; the others wait),
    else a missing one is an error before anything trains. time_limit_s: no unit starts after
    that many seconds of training (train_units). budget_s: seconds for the whole run from this
    call on (data sets included): a unit starts only if its recorded duration on this device
    (OUT/unit-times.json) fits what is left. tasks: train only these of the sweep's tasks (the
    tables still cover every complete task)."""
    import time

    import torch

    t_start = time.perf_counter()

    if tasks is not None:
        foreign = [t for t in tasks if t not in spec.tasks]
        if foreign or not tasks:
            raise SweepError(f"--tasks {foreign or tasks} not among the sweep's tasks: {', '.join(spec.tasks)}")
    training = [t for t in spec.tasks if tasks is None or t in tasks]
    rank, world, local_rank = dist_context()
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    group = None
    if world > 1:
        import torch.distributed as dist

        from .train.distributed import TIMEOUT

        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=TIMEOUT)
        group = dist
    try:
        missing = [t for t in missing_data(spec) if t in training]
        if missing and not make_data:
            raise SweepError(f"no data set for {', '.join(missing)}; build them with `ramac data make NAME` "
                             f"or pass --make-data")
        out = Path(out)
        times = UnitTimes(out / "unit-times.json", device_name(dev))
        # one process: each data set built when its task's first unit is to train; several: all
        # of them first, by process 0, while the others wait
        data = DataSets(missing, times, log)
        if world > 1:
            for task in missing if rank == 0 else ():
                data.ensure(task)
            data = None
        if group is not None:
            group.barrier()
        cells = plan(spec, out / "runs", str(dev), full)
        mine = shard([c for c in cells if c.task in training], rank, world)
        done = sum(settled(c) for c in mine)
        log(f"[rank {rank}/{world}] sweep {spec.name}: {len(cells)} cells, {len(mine)} here "
            f"({done} finished already), on {dev}")
        rank_log = (lambda msg: log(f"[rank {rank}] {msg}")) if world > 1 else log
        if spec.eval:
            for c in mine:
                set_aside_unevaluable(c, rank_log)
        ood_cache: dict = {}  # the data-set OOD detectors, fitted once per task

        def evaluate_pending():  # the finished cells not yet evaluated again (their detectors read the data set)
            pending = [c for c in mine if settled(c) and not evaluated_again(c)]
            for task in dict.fromkeys(c.task for c in pending) if data is not None else ():
                data.ensure(task)
            reevaluate_cells(pending, spec.eval, dev, rank_log, ood_cache)

        if spec.eval:  # first what an earlier stretch trained but had no time to evaluate again (cheap)
            evaluate_pending()
        again = (lambda unit: reevaluate_cells(unit, spec.eval, dev, rank_log, ood_cache)) if spec.eval else None
        train_units(mine, rank_log, plots, time_limit_s, after_unit=again, budget_s=budget_s, times=times,
                    t0=t_start, data=data)
        finished = [str(c.run_dir) for c in mine if settled(c)]
        if spec.eval:  # and any this run trained whose evaluation after its unit did not happen
            evaluate_pending()
        if group is not None:  # every process's finished cells reach process 0
            gathered = [None] * world
            group.all_gather_object(gathered, finished)
            finished = [d for part in gathered for d in part]
        if rank != 0:
            group.barrier()  # until process 0 has written the tables: the processes end together
            return None
        done = set(finished)  # and the cells of tasks this run did not train, finished in an earlier one
        done |= {str(c.run_dir) for c in cells if c.task not in training and settled(c)}
        report = _tables_of_complete_tasks(spec, cells, done, out, world, log)
        if group is not None:  # (an abort at exit was seen when process 1 tore gloo down alone)
            group.barrier()
        if report["unfinished"]:
            log(f"{_left(spec, report)}; rerun the same command to go on")
        return report
    finally:
        if group is not None:
            group.destroy_process_group()


def _tables_of_complete_tasks(spec: SweepSpec, cells: list[Cell], done: set, out: Path, world: int, log,
                              **extra) -> dict:
    """write_tables for the tasks all of whose cells are done (extra: more keys for sweep.json); the
    report lists the others' cells."""
    # with [eval], a cell counts once its second evaluation is there (a table never mixes the
    # training run's last evaluation with the second one's)
    unfinished = [c for c in cells if str(c.run_dir) not in done or (spec.eval and not evaluated_again(c))]
    left = {c.task for c in unfinished}
    report = write_tables(spec, [c for c in cells if c.task not in left], out, world, log, **extra)
    report["unfinished"] = [str(c.run_dir) for c in unfinished]
    report["unfinished_tasks"] = [t for t in spec.tasks if t in left]
    return report


def _left(spec: SweepSpec, report: dict) -> str:
    return (f"{len(report['unfinished'])} cell(s) not finished yet, in {', '.join(report['unfinished_tasks'])}; "
            f"tables written for the {len(report['tasks'])} complete task(s)")


def sweep_tables(spec: SweepSpec, out, full: bool = True, log=print) -> dict:
    """The tables of every complete task from the run directories already in OUT/runs, nothing
    trained, no data set or GPU needed: for a sweep trained elsewhere (stretches of GPU time whose
    run directories were copied back). full: the runs' lengths are the full-size presets' (a GPU
    run, or `--full` on a CPU), else the CPU-sized ones' (matters only where the file sets no
    [train] steps). sweep.json's provenance is then this machine's; each run's own (config.json)
    says where it trained."""
    out = Path(out)
    if not (out / "runs").is_dir():
        raise SweepError(f"{out / 'runs'} does not exist: no run directories to tabulate")
    cells = plan(spec, out / "runs", "cpu", full=full)
    other = [c for c in cells if (c.run_dir / "eval.json").exists() and not settled(c)]
    if other:
        log(f"{len(other)} run(s) evaluated at another length than {other[0].train_cfg.steps} steps "
            f"(e.g. {other[0].run_dir.name}): trained with {'CPU-sized' if full else 'full-size'} presets? "
            f"{'drop' if full else 'add'} --full")
    report = _tables_of_complete_tasks(spec, cells, {str(c.run_dir) for c in cells if settled(c)}, out, 1, log,
                                       tables_only=True)
    if report["unfinished"]:
        log(_left(spec, report))
    return report


def reevaluate_cells(cells: list[Cell], settings: dict, device, log=print, ood_cache: dict | None = None) -> None:
    """`ramac eval` on each finished cell (with [eval]'s settings) that has no eval-again.json for
    its final step yet; ood_cache keeps each task's data-set detectors for the next cell."""
    import time

    from .study import is_finished
    from .train.reevaluate import reevaluate

    ood_cache = {} if ood_cache is None else ood_cache
    for c in cells:
        if not is_finished(c.run_dir, c.train_cfg.steps) or evaluated_again(c):
            continue
        t = time.perf_counter()
        step, metrics, _ = reevaluate(c.run_dir, device, **settings, ood_cache=ood_cache)
        log(f"  evaluated again {c.task} {c.agent} seed {c.seed} (step {step}, {time.perf_counter() - t:.0f} s): "
            + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                        if isinstance(v, float) and (k.startswith(("return/", "reward/", "ood/")))))


# --------------------------------------------------------------------------------------------
# tables and figures
# --------------------------------------------------------------------------------------------
def write_tables(spec: SweepSpec, cells: list[Cell], out: Path, world: int = 1, log=print, **extra) -> dict:
    from .report import aggregate, markdown, read_run

    out.mkdir(parents=True, exist_ok=True)  # (nothing may have trained in this run)

    report = {"name": spec.name, "tasks": {}, "config": spec.text, "world_size": world,
              "provenance": provenance(resolve_device(cells[0].train_cfg.device if cells else "cpu")),
              "cells": [{"task": c.task, "agent": c.agent, "seed": c.seed, "run_dir": str(c.run_dir)} for c in cells],
              **extra}
    from .train.group import diverged

    report["diverged"] = []
    state = {c.run_dir: diverged(c.run_dir) for c in cells}
    for task in [t for t in spec.tasks if any(c.task == t for c in cells)]:
        stopped = [(c, state[c.run_dir]) for c in cells if c.task == task and state[c.run_dir] is not None]
        report["diverged"] += [{"task": c.task, "agent": c.agent, "seed": c.seed, "step": d.step} for c, d in stopped]
        runs = [read_run(c.run_dir) for c in cells if c.task == task and state[c.run_dir] is None]
        rows = aggregate(runs)
        text = markdown(rows) + f"\n\nSweep `{spec.name}`, {len(spec.seeds)} seeds per agent; config in sweep.json.\n"
        if stopped:
            text += ("\nLeft out of the statistics, stopped on non-finite values: "
                     + "; ".join(f"{c.agent} seed {c.seed} (step {d.step})" for c, d in stopped) + ".\n")
        atomic_write_bytes(out / f"{task}.md", text.encode())
        atomic_write_json(out / f"{task}.json", rows)
        atomic_write_bytes(out / f"{task}.csv", _csv(rows).encode())
        _plot_task(task, runs, [c for c in cells if c.task == task], out)
        report["tasks"][task] = rows
        log(f"wrote {out / task}.md, .csv, .json, -risk.png, -curves.png")
    atomic_write_json(out / "sweep.json", report)
    return report


def _csv(rows: list[dict]) -> str:
    keys = sorted({k for r in rows for k in r["metrics"]})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task", "method", "seeds"] + [f"{k}{s}" for k in keys for s in ("", "_lo", "_hi")])
    for r in rows:
        vals = []
        for k in keys:
            stat = r["metrics"].get(k)
            vals += [stat["mean"], *stat["ci95"]] if stat else ["", "", ""]
        w.writerow([r["task"], r["method"], " ".join(map(str, r["seeds"]))] + vals)
    return buf.getvalue()


def _plot_task(task: str, runs: list[dict], cells: list[Cell], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import plot
    from .train import read_metrics

    plot(runs, out / f"{task}-risk.png")
    key = "reward/mean" if preset_of(task) == "bandit" else "return/mean"
    curves = defaultdict(dict)
    for c in cells:
        for row in read_metrics(c.run_dir):
            if row.get("kind") == "eval" and key in row:
                curves[c.agent].setdefault(row["step"], []).append(row[key])
    fig, ax = plt.subplots(figsize=(6, 4))
    for agent, points in sorted(curves.items()):  # sorted: each method's colour as in the risk figure
        steps = sorted(points)
        mean = np.array([np.mean(points[s]) for s in steps])
        lo = np.array([np.min(points[s]) for s in steps])
        hi = np.array([np.max(points[s]) for s in steps])
        line, = ax.plot(steps, mean, label=agent)
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("step"), ax.set_ylabel(f"{key} (mean over seeds; band: min..max)"), ax.set_title(task)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / f"{task}-curves.png", dpi=100)  # (lanes side by side may write it at once)
    plt.close(fig)
