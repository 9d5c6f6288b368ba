"""Every bad input a user can give, through `ramac.cli.main` as the command line runs it: one line
on stderr naming the problem, exit status 2, and every file that existed before byte-identical
afterwards (no temporary files left either).

Cases that need a run start from a copy of one tiny finished bandit run (2 steps, checkpoint at
step 2), built once for the module. Data-set cases feed `ramac train --task hopper-medium-expert`
a local data set: a real Minari one where Minari can store the fault, else a .npz file through
the task's loader (the faults Minari's own format cannot hold: missing keys, wrong dtypes, ...).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from ramac.agents.radac import RADAC
from ramac.cli import main

TINY = ["--set", "actor_hidden=16", "--set", "critic_hidden=16", "--set", "embedding_dim=8", "--set", "n_quantiles=4",
        "--set", "n_risk_quantiles=4", "--set", "n_timesteps=3"]
CPU = ["--device", "cpu", "--no-progress"]
RESUME = ["train", "--resume", "{run}", "--steps", "4", "--no-progress"]
MUJOCO = ["train", "--task", "hopper-medium-expert", "--steps", "2", *CPU, "--run-dir", "{tmp}/new"]


@dataclass
class Case:
    argv: list  # "{run}": a copy of the finished run; "{tmp}": the case's folder
    message: str  # a regex the one stderr line must match (after "ramac COMMAND: error: ")
    setup: Callable | None = None  # setup(tmp, run, monkeypatch) -> what must stay alive during the call


def run_cli(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's errors and --help
        return e.code


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("base") / "run"
    argv = ["train", "--run-dir", str(run), "--steps", "2", "--log-every", "2", "--ckpt-every", "2", "--eval-every",
            "2", "--eval-samples", "50", *TINY, *CPU]
    assert main(argv) == 0
    return run


# ---- setups ------------------------------------------------------------------------------
def edit_config(change):
    def setup(tmp, run, mp):
        cfg = json.loads((run / "config.json").read_text())
        change(cfg)
        (run / "config.json").write_text(json.dumps(cfg, indent=2))
    return setup


def rewrite(name, edit):
    def setup(tmp, run, mp):
        (run / name).write_bytes(edit((run / name).read_bytes()))
    return setup


def hold_lock(tmp, run, mp):
    import fcntl

    f = open(run / ".lock", "a")  # another open of the lock file: flock treats it as another process
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def make_file(name):
    def setup(tmp, run, mp):
        (tmp / name).write_text("not a directory\n")
    return setup


def full_disk(tmp, run, mp):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    mp.setattr(os, "fsync", fsync)


def nan_in_ema(tmp, run, mp):
    """After the third update the EMA actor holds a NaN; no loss reads the EMA actor."""
    update = RADAC.update

    def poisoned(self, batch):
        info = update(self, batch)
        if self.steps >= 2:
            with torch.no_grad():
                next(self.actor_ema.parameters()).view(-1)[0] = float("nan")
        return info
    mp.setattr(RADAC, "update", poisoned)


def nan_loss(tmp, run, mp):
    critic_loss = RADAC.critic_loss

    def poisoned(self, b):
        loss1, loss2, info = critic_loss(self, b)
        if self.steps >= 2:  # the third update
            loss1 = loss1 * float("nan")
            info = {**info, "critic/loss1": loss1.detach()}
        return loss1, loss2, info
    mp.setattr(RADAC, "critic_loss", poisoned)


def arrays(n=20, s=11, a=3):
    rng = np.random.default_rng(0)
    f32 = lambda x: x.astype(np.float32)  # noqa: E731
    return {"obs": f32(rng.standard_normal((n, s))), "action": f32(rng.uniform(-1, 1, (n, a))),
            "reward": f32(rng.standard_normal(n)), "next_obs": f32(rng.standard_normal((n, s))),
            "terminal": rng.random(n) < 0.1, "timeout": np.zeros(n, dtype=np.int64)}


def data_file(mutate=None, name="data.npz"):
    """The task loads {tmp}/NAME: Hopper-shaped arrays with one fault put in by `mutate` (a .npz),
    a .csv, or no file at all (mutate=None)."""
    def setup(tmp, run, mp):
        from ramac.data import OfflineDataset

        if name.endswith(".csv"):
            (tmp / name).write_text("1,2\n")
        elif mutate is not None:
            a = arrays()
            mutate(a)
            np.savez(tmp / name, **a)
        mp.setattr("ramac.data.stochastic_mujoco.load", lambda preset: OfflineDataset.load(tmp / name))
    return setup


def minari_set(obs_dim=11, action_bound=1.0):
    """A real local Minari data set for hopper-medium-expert (one episode) in MINARI_DATASETS_PATH."""
    def setup(tmp, run, mp):
        import gymnasium as gym
        import minari
        from minari.data_collector import EpisodeBuffer

        from ramac.data.stochastic_mujoco import dataset_id

        rng, n = np.random.default_rng(0), 8
        episode = EpisodeBuffer(
            id=0, observations=rng.standard_normal((n + 1, obs_dim)).astype(np.float32),
            actions=rng.uniform(-action_bound, action_bound, (n, 3)).astype(np.float32),
            rewards=list(rng.standard_normal(n)), terminations=[False] * (n - 1) + [True], truncations=[False] * n,
            infos={})
        minari.create_dataset_from_buffers(
            dataset_id("hopper-medium-expert"), [episode],
            observation_space=gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            action_space=gym.spaces.Box(-action_bound, action_bound, (3,), np.float32),
            ref_min_score=0.0, ref_max_score=1.0)
    return setup


def setitem(key, index, value):
    return lambda a: a[key].__setitem__(index, value)


CASES = {
    # -- arguments (argparse) -------------------------------------------------------------
    "unknown algo": Case(["train", "--algo", "sac"], r"argument --algo: invalid choice: 'sac'"),
    "unknown task": Case(["train", "--task", "pong"], r"argument --task: invalid choice: 'pong'"),
    "steps not a number": Case(["train", "--steps", "ten"], r"invalid int value: 'ten'"),
    "unknown command": Case(["frobnicate"], r"invalid choice: 'frobnicate'"),
    "no command": Case([], r"the following arguments are required: COMMAND"),
    "unknown data preset": Case(["data", "make", "pong"], r"invalid choice: 'pong'"),
    # -- settings ------------------------------------------------------------------------------
    "negative eta": Case(["train", "--set", "eta=-1", *CPU], r"eta must be >= 0"),
    "--set without =": Case(["train", "--set", "eta", *CPU], r"--set expects KEY=VALUE, got 'eta'"),
    "unknown setting": Case(["train", "--set", "etta=1", *CPU], r"unknown agent setting 'etta'; known: .*eta"),
    "setting not a number": Case(["train", "--set", "eta=lots", *CPU], r"setting eta='lots' is not a valid float"),
    "zero steps": Case(["train", "--steps", "0", *CPU], r"steps must be > 0, got 0"),
    "negative batch size": Case(["train", "--batch-size", "-5", *CPU], r"batch_size must be > 0, got -5"),
    "unknown device": Case(["train", "--device", "tpu"], r"unknown device 'tpu'"),
    "unknown preset": Case(["presets", "pong"], r"unknown task/preset 'pong'"),
    # -- data sets -------------------------------------------------------------------------------
    "data make --size 0": Case(["data", "make", "hopper-medium-expert", "--size", "0"],
                               r"--size must be at least 1, got 0"),
    "data make --size -3": Case(["data", "make", "hopper-medium-expert", "--size", "-3"], r"--size must be at least 1"),
    "data make --num-envs 0": Case(["data", "make", "hopper-medium-expert", "--num-envs", "0"],
                                   r"--num-envs must be at least 1, got 0"),
    "data make --threads 0": Case(["data", "make", "hopper-medium-expert", "--threads", "0"],
                                  r"--threads must be at least 1, got 0"),
    "data make --seed -1": Case(["data", "make", "hopper-medium-expert", "--seed", "-1"], r"--seed must be >= 0"),
    "data make over an existing set": Case(["data", "make", "hopper-medium-expert", "--size", "10"],
                                           r"already exists .*pass --overwrite", minari_set()),
    "data info of a missing set": Case(["data", "info", "hopper-medium-expert"],
                                       r"no local data set .*build it with: ramac data make hopper-medium-expert"),
    "train without its data set": Case(MUJOCO, r"no local data set .*ramac data make hopper-medium-expert"),
    "data set of another env": Case(MUJOCO, r"'obs' has dim 5 but Hopper-v5 .* has obs dim 11", minari_set(obs_dim=5)),
    "actions outside [-1, 1]": Case(MUJOCO, r"'action' values lie in \[-1.\d+, 1.\d+\] .*rescale",
                                    minari_set(action_bound=2.0)),
    "actions outside [-1, 1] (npz)": Case(MUJOCO, r"data.npz: 'action' values lie in \[.*, 3\] \(first outside "
                                          r"\[-1, 1\] at row 4\)", data_file(setitem("action", (4, 1), 3.0))),
    "missing key": Case(MUJOCO, r"data.npz: missing key\(s\) \['reward'\]", data_file(lambda a: a.pop("reward"))),
    "obs not 2-D": Case(MUJOCO, r"'obs' must be 2-D", data_file(lambda a: a.update(obs=a["obs"][:, :, None]))),
    "reward not 1-D": Case(MUJOCO, r"'reward' must be 1-D", data_file(lambda a: a.update(reward=np.ones((20, 2))))),
    "next_obs dim": Case(MUJOCO, r"'next_obs' has dim 2 but 'obs' has dim 11",
                         data_file(lambda a: a.update(next_obs=a["next_obs"][:, :2]))),
    "mismatched lengths": Case(MUJOCO, r"'action' has 15 rows but 'obs' has 20",
                               data_file(lambda a: a.update(action=a["action"][:15]))),
    "text obs": Case(MUJOCO, r"'obs' has dtype <U\d+; expected a real numeric dtype",
                     data_file(lambda a: a.update(obs=a["obs"].astype(str)))),
    "complex reward": Case(MUJOCO, r"'reward' has dtype complex64",
                           data_file(lambda a: a.update(reward=a["reward"].astype(np.complex64)))),
    "terminal not 0/1": Case(MUJOCO, r"'terminal' must hold only 0/1",
                             data_file(lambda a: a.update(terminal=np.full(20, 2)))),
    "NaN obs": Case(MUJOCO, r"'obs' has NaN or inf values \(first at row 3\)",
                    data_file(setitem("obs", (3, 1), np.nan))),
    "inf reward": Case(MUJOCO, r"'reward' has NaN or inf values \(first at row 7\)",
                       data_file(setitem("reward", 7, np.inf))),
    "empty data set": Case(MUJOCO, r"the data set is empty",
                           data_file(lambda a: [a.update({k: v[:0]}) for k, v in list(a.items())])),
    "data file missing": Case(MUJOCO, r"no data set file at .*gone.npz", data_file(name="gone.npz")),
    "data file of another type": Case(MUJOCO, r"data.csv: unsupported file type '.csv'",
                                      data_file(name="data.csv")),
    # -- run directories ------------------------------------------------------------------------
    "train over a run": Case(["train", "--run-dir", "{run}", *CPU], r"already holds a run; pass --resume"),
    "run dir is a file": Case(["train", "--run-dir", "{tmp}/afile", *CPU], r"afile is a file, not a run directory",
                              make_file("afile")),
    "run dir under a file": Case(["train", "--run-dir", "{tmp}/afile/run", *CPU],
                                 r"cannot create the run directory .*afile/run: Not a directory", make_file("afile")),
    "run dir under a file, data set missing too": Case([*MUJOCO[:-1], "{tmp}/afile/run"],
                                                      r"cannot create the run directory", make_file("afile")),
    "run dir in use (train)": Case(["train", "--run-dir", "{run}", *CPU], r"is in use by another ramac run", hold_lock),
    "run dir in use (resume)": Case(RESUME, r"run is in use by another ramac run .*\.lock", hold_lock),
    "resume nothing": Case(["train", "--resume", "{tmp}/empty"], r"nothing to resume: .*empty/checkpoint.pt"),
    "resume with --set": Case([*RESUME, "--set", "eta=2"], r"--set would change them \(only --steps, --device"),
    "resume with --batch-size and --algo": Case([*RESUME, "--batch-size", "8", "--algo", "bc"],
                                                r"--algo, --batch-size would change them"),
    "resume with --run-dir": Case([*RESUME, "--run-dir", "{tmp}/other"], r"--run-dir would change them"),
    "resume below the step reached": Case(["train", "--resume", "{run}", "--steps", "1"],
                                          r"is at step 2 already; .*at least 2"),
    "config.json edited (eta)": Case(RESUME, r"config.json was changed after the run started: agent.eta = 0.7 in "
                                     r"config.json but 0.5 in the checkpoint",
                                     edit_config(lambda c: c["agent"].update(eta=0.7))),
    "config.json edited (network size)": Case(RESUME, r"agent.actor_hidden = 64 in config.json but 16",
                                              edit_config(lambda c: c["agent"].update(actor_hidden=64))),
    "config.json not JSON": Case(RESUME, r"config.json cannot be read \(JSONDecodeError",
                                 rewrite("config.json", lambda b: b[:-20])),
    "checkpoint truncated (resume)": Case(RESUME, r"checkpoint.pt is truncated or corrupted",
                                          rewrite("checkpoint.pt", lambda b: b[: len(b) // 2])),
    "checkpoint corrupted (eval)": Case(["eval", "{run}", "--device", "cpu"],
                                        r"checkpoint.pt is truncated or corrupted",
                                        rewrite("checkpoint.pt", lambda b: b[:100] + bytes(200) + b[300:])),
    "checkpoint of something else": Case(RESUME, r"checkpoint.pt is not a ramac checkpoint \(it lacks step, agent",
                                         lambda tmp, run, mp: torch.save({"weights": 1}, run / "checkpoint.pt")),
    "metrics line damaged": Case(RESUME, r"metrics.jsonl line 1 is not a metrics row",
                                 rewrite("metrics.jsonl", lambda b: b"{oops\n" + b)),
    "disk full": Case(RESUME, r"could not write .*run/metrics.jsonl: No space left on device; the last good "
                      r"checkpoint \(step 2\) is kept at .*run/checkpoint.pt", full_disk),
    "NaN in the EMA actor": Case(RESUME, r"non-finite values in the agent's policy.actor_ema\..* at step 4 \(finite "
                                 r"at step 2\); training stopped; the last good checkpoint \(step 2\) is kept",
                                 nan_in_ema),
    "NaN loss": Case(RESUME, r"non-finite loss at step 3; training stopped; the last good checkpoint \(step 2\) is "
                     r"kept", nan_loss),
    # -- other commands -------------------------------------------------------------------------
    "eval of a non-run directory": Case(["eval", "{tmp}"], r"has no checkpoint.pt; is it a ramac run directory"),
    "eval --samples 0": Case(["eval", "{run}", "--samples", "0"], r"--samples must be at least 1, got 0"),
    "eval --seed -1": Case(["eval", "{run}", "--seed", "-1"], r"--seed must be >= 0"),
    "eval --threads 0": Case(["eval", "{run}", "--threads", "0"], r"--threads must be at least 1, got 0"),
    "study of an unknown variant": Case(["study", "bandit", "--variants", "pong", "--device", "cpu", "--out",
                                         "{tmp}/s"], r"unknown bandit variant\(s\) \['pong'\]"),
    "study --steps 0": Case(["study", "bandit", "--steps", "0"], r"--steps must be at least 1, got 0"),
    "study --seeds -1": Case(["study", "bandit", "--seeds", "0", "-1"], r"--seeds must be at least 0, got 0 -1"),
    "study --eval-every 0": Case(["study", "bandit", "--eval-every", "0"], r"--eval-every must be at least 1"),
    "behaviour --threads -2": Case(["behaviour", "train", "Hopper-v5", "--threads", "-2", "--out", "{tmp}/sac"],
                                   r"--threads must be at least 1, got -2"),
    "behaviour --num-envs 0": Case(["behaviour", "train", "Hopper-v5", "--num-envs", "0", "--out", "{tmp}/sac"],
                                   r"num_envs must be >= 1, got 0"),
    "behaviour pick of a non-run": Case(["behaviour", "pick", "Hopper-v5", "{tmp}"], r"is not a `ramac behaviour "
                                        r"train` run directory"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_line_and_changes_nothing(name, finished_run, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    monkeypatch.chdir(tmp_path)  # a default run directory would land here
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    held = case.setup(tmp_path, run, monkeypatch) if case.setup else None
    before = snapshot(tmp_path)
    capsys.readouterr()

    code = run_cli([a.format(run=run, tmp=tmp_path) for a in case.argv])

    err = capsys.readouterr().err
    if held is not None:
        held.close()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    prefix = re.match(r"ramac( [a-z]+){0,2}: error: ", err)
    assert prefix, err
    assert re.search(case.message, err[prefix.end():]), err
    after = snapshot(tmp_path)
    assert [p for p in before if after.get(p) != before[p]] == []
    assert sorted(set(after) - set(before)) == []  # no temporary files, no half-made run directories
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not any(p.iterdir())) == []


def test_a_cut_last_metrics_line_is_dropped_with_one_warning(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    rows = (run / "metrics.jsonl").read_bytes()
    (run / "metrics.jsonl").write_bytes(rows + b'{"kind": "train", "st')  # a writer killed mid-line
    capsys.readouterr()

    assert main(["train", "--resume", str(run), "--steps", "4", "--no-progress"]) == 0

    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and re.match(r"ramac train: warning: the last line of .*metrics.jsonl is cut off",
                                                    err), err
    after = (run / "metrics.jsonl").read_bytes()
    assert after.startswith(rows)  # nothing written before the cut line is lost
    assert [json.loads(line)["step"] for line in after.splitlines()] == [2, 2, 4, 4]
