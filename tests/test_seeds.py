"""Seeds side by side (ramac.train.group, SeedsUpdater): seed i of a K-seed run computes what a
single run of seed i computes, on CPU (one after another) and on CUDA (one graph for all K)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ramac.config import build_configs
from ramac.train import train
from ramac.train.group import parse_seeds, resume_seeds, train_seeds
from ramac.train.updaters import FastUpdater, SeedsUpdater, make_seeds_updater, make_updater
from ramac.utils import seeded

from test_agents import B, build, dataset, flat

SEEDS = (0, 1, 2)


def seeded_agent(algo, seed, device):
    with seeded(seed, torch.device("cpu")):
        agent = build(algo, device)  # build seeds torch with 0: reseed its weights by hand below
    with seeded(1000 + seed, torch.device("cpu")):
        for p in agent.parameters():
            p.data.add_(0.01 * torch.randn(p.shape).to(device))
    agent.seed_noise(seed)
    return agent


@pytest.mark.parametrize("algo", ["radac", "rafmac", "codac", "oraac", "bc"])
def test_seed_i_of_k_side_by_side_equals_seed_i_alone(algo, device):
    """Six updates across the warm-up and the risk phase (on CUDA: eager warm-up, then one captured
    graph with a stream per seed). Fails when a draw comes from a stream the seeds share (tried: the
    critic's fractions from torch's stream)."""
    data = dataset(device)
    together = [seeded_agent(algo, s, device) for s in SEEDS]
    group = make_seeds_updater(together, data, B, graph=True, compile=False, warmup=2)
    for _ in range(6):
        group.step()
    group.sync()
    if device.type == "cuda":
        assert group.graphs  # the steps after the warm-up were replays of one graph
    for seed, agent in zip(SEEDS, together):
        alone = seeded_agent(algo, seed, device)
        upd = make_updater(alone, data, B, graph=True, compile=False, warmup=2)
        for _ in range(6):
            upd.step()
        upd.sync()
        assert agent.steps == alone.steps == 6
        torch.testing.assert_close(flat(agent), flat(alone), atol=1e-5, rtol=1e-5)
    assert not torch.equal(flat(together[0]), flat(together[1]))


def test_a_finished_seed_stops_while_the_others_go_on(device):
    data = dataset(device)
    agents = [seeded_agent("bc", s, device) for s in SEEDS]
    group = make_seeds_updater(agents, data, B, graph=True, compile=False, warmup=1)
    for n in range(5):
        group.step([0, 1, 2] if n < 3 else [1, 2])
    group.sync()
    assert [a.steps for a in agents] == [3, 5, 5]
    assert [int(a.step_t) for a in agents] == [3, 5, 5]


def test_the_group_updater_picks_each_agents_path(device):
    agents = [seeded_agent("bc", s, device) for s in SEEDS[:2]]
    group = make_seeds_updater(agents, dataset(device), B)
    assert isinstance(group, SeedsUpdater) and group.graph == (device.type == "cuda")
    assert all(isinstance(u, FastUpdater) for u in group.updaters) == (device.type == "cuda")


def _bandit(steps, seed=0):
    agent_cfg, train_cfg = build_configs("bandit", "radac", cpu_sized=True, train_overrides=dict(
        steps=steps, eval_every=steps, eval_samples=200, log_every=20, ckpt_every=20, device="cpu", seed=seed,
        threads=1))
    return agent_cfg, train_cfg


def _params(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["agent"]["model"]


def test_train_seeds_writes_each_seeds_single_run(tmp_path):
    """The files of a single run per seed, and seed 1's numbers equal `ramac train --seed 1`'s."""
    agent_cfg, train_cfg = _bandit(40)
    dirs = [tmp_path / "group" / f"seed{s}" for s in (0, 1)]
    results = train_seeds(agent_cfg, train_cfg, [0, 1], dirs, progress=False, log=lambda *a: None)
    assert [r.steps for r in results] == [40, 40]
    for d in dirs:
        assert {"checkpoint.pt", "config.json", "metrics.jsonl", "eval.json"} <= {p.name for p in d.iterdir()}
    assert json.loads((dirs[1] / "config.json").read_text())["train"]["seed"] == 1
    _, alone_cfg = _bandit(40, seed=1)
    train(agent_cfg, alone_cfg, tmp_path / "alone", progress=False)
    want, got = _params(tmp_path / "alone"), _params(dirs[1])
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=0, rtol=0, msg=k)
    assert json.loads((dirs[1] / "eval.json").read_text()) == json.loads((tmp_path / "alone" / "eval.json").read_text())
    assert not torch.equal(_params(dirs[0])["critic1.out.weight"], got["critic1.out.weight"])


def test_resumed_seeds_continue_as_if_never_stopped(tmp_path):
    agent_cfg, train_cfg = _bandit(40)
    straight = [tmp_path / "straight" / f"seed{s}" for s in (0, 1)]
    train_seeds(agent_cfg, train_cfg, [0, 1], straight, progress=False, log=lambda *a: None)
    _, short_cfg = _bandit(20)
    parts = [tmp_path / "parts" / f"seed{s}" for s in (0, 1)]
    train_seeds(agent_cfg, short_cfg, [0, 1], parts, progress=False, log=lambda *a: None)
    results = resume_seeds(tmp_path / "parts", steps=40, progress=False, log=lambda *a: None)
    assert [r.steps for r in results] == [40, 40]
    for a, b in zip(straight, parts):
        want, got = _params(a), _params(b)
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=0, rtol=0, msg=k)


@pytest.mark.parametrize("text, want", [("0-3", [0, 1, 2, 3]), ("0,3,7", [0, 3, 7]), ("2-4,8,3", [2, 3, 4, 8]),
                                        (" 5 ", [5])])
def test_parse_seeds(text, want):
    assert parse_seeds(text) == want


@pytest.mark.parametrize("text", ["", "a-b", "3-1", "1,,2", "-1"])
def test_parse_seeds_refuses_nonsense(text):
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds(text)


@pytest.mark.parametrize("args, message", [(["--seeds", "0-x"], "--seeds takes"),
                                           (["--seeds", "0-1", "--seed", "3"], "--seed or --seeds")])
def test_cli_refuses_bad_seeds_in_one_line(args, message, tmp_path):
    out = subprocess.run([sys.executable, "-m", "ramac", "train", *args, "--run-dir", str(tmp_path / "r")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_diverging_run_stops_alone_and_stays_stopped(tmp_path, capsys):
    """Two runs side by side, the second with absurd learning rates: it stops on non-finite values
    (diverged.json), the first trains to its end and equals its run alone; a resume leaves the
    diverged one as it is; the CLI's report says so and exits 1."""
    import dataclasses

    from ramac.cli import _report_seeds
    from ramac.train.group import DIVERGED, Diverged, train_group

    agent_cfg, train_cfg = _bandit(40)
    train_cfg = dataclasses.replace(train_cfg, log_every=5)
    bad_cfg = dataclasses.replace(agent_cfg, lr_actor=1e30, lr_critic=1e30)
    dirs = [tmp_path / "g" / "seed0", tmp_path / "g" / "seed1"]
    said = []
    runs = [(agent_cfg, train_cfg, dirs[0]), (bad_cfg, dataclasses.replace(train_cfg, seed=1), dirs[1])]
    good, bad = train_group(runs, progress=False, log=said.append)
    assert isinstance(bad, Diverged) and 0 < bad.step < 40 and "non-finite" in bad.error
    assert json.loads((dirs[1] / DIVERGED).read_text())["step"] == bad.step
    assert good.steps == 40 and json.loads((dirs[0] / "eval.json").read_text())["step"] == 40
    assert any("non-finite" in line for line in said)
    train(agent_cfg, train_cfg, tmp_path / "alone", progress=False)
    want, got = _params(tmp_path / "alone"), _params(dirs[0])
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=0, rtol=0, msg=k)
    stamp = {q.name: q.stat().st_mtime_ns for q in dirs[1].iterdir()}
    again = train_group([(a, dataclasses.replace(c, steps=60), d) for a, c, d in runs], progress=False,
                        resume=True, log=said.append)
    assert isinstance(again[1], Diverged) and again[1].step == bad.step and again[0].steps == 60
    assert {q.name: q.stat().st_mtime_ns for q in dirs[1].iterdir()} == stamp
    assert _report_seeds(again) == 1
    assert f"seed1: diverged at step {bad.step}" in capsys.readouterr().out
