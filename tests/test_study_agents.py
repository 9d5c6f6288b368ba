"""`ramac study agents`: a tiny CPU study of two agents writes the table and the figure with the
numbers of the runs' own metrics, a second call trains nothing, and bad input is one line."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from ramac.agents.registry import ALGOS
from ramac.cli import main
from ramac.config import build_configs
from ramac.envs.bandit_family import FAMILY
from ramac.study import plan_runs
from ramac.study_agents import collect, expectation
from ramac.train import read_metrics

STEPS = 40
# radac-only settings (eta_warmup_steps, critic_hidden) go to radac alone; n_timesteps to both
ARGS = ["study", "agents", "--algos", "bc", "radac", "--seeds", "0", "1", "--steps", str(STEPS), "--eval-every", "20",
        "--device", "cpu", "--threads", "1", "--set", "n_timesteps=5", "--set", "eta_warmup_steps=0",
        "--set", "critic_hidden=64"]
T975_DF1 = 12.706  # two seeds: the 95 % t quantile at one degree of freedom


def run_cli(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's errors
        return e.code


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("agents")
    assert main(ARGS + ["--out", str(out)]) == 0
    return out


def final_eval(run_dir):
    """The evaluation at STEPS, read from the run's metrics file (not from the study)."""
    rows = [r for r in read_metrics(run_dir) if r["kind"] == "eval"]
    assert [r["step"] for r in rows] == [20, STEPS]  # an earlier evaluation the table must not take
    return rows[-1]


def test_table_holds_the_runs_final_evaluations(study):
    report = json.loads((study / "agents.json").read_text())
    assert [r["agent"] for r in report["rows"]] == ["bc", "radac"]
    assert report["steps"] == STEPS and report["seeds"] == [0, 1]
    assert report["command"].startswith("ramac study agents --algos bc radac --variants bandit --seeds 0 1 --steps 40")
    assert report["provenance"]["torch"] and report["agent_configs"]["radac"]["eta_warmup_steps"] == 0
    assert "eta_warmup_steps" not in report["agent_configs"]["bc"]  # --set only where the agent has it
    md = (study / "agents.md").read_text()
    table = {r["agent"]: r for r in csv.DictReader((study / "agents.csv").open())}
    for row in report["rows"]:
        evals = [final_eval(study / "runs" / f"bandit-{row['agent']}-seed{s}") for s in (0, 1)]
        modes = [(f"share_{m}", f"share/{m}") for m in ("S", "R", "L1", "L2")]
        for name, key in [("reward_mean", "reward/mean"), ("reward_cvar", "reward/cvar_0.1"),
                          ("outside", "share/outside")] + modes:
            vals = np.array([e[key] for e in evals])
            assert row[name + "_per_seed"] == list(vals), (row["agent"], name)
            assert row[name] == pytest.approx(vals.mean(), abs=1e-12), (row["agent"], name)
            assert row[name + "_ci"] == pytest.approx(T975_DF1 * vals.std(ddof=1) / math.sqrt(2), abs=1e-12)
            assert float(table[row["agent"]][name]) == pytest.approx(vals.mean(), abs=1e-12)
        top = [max(("R", "S", "L1", "L2", "outside"), key=lambda m: e[f"share/{m}"]) for e in evals]
        assert row["top_mode_per_seed"] == top and table[row["agent"]]["top_mode_per_seed"] == " ".join(top)
        out = np.array([e["share/outside"] for e in evals])
        line = next(x for x in md.splitlines() if x.startswith(f"| {row['agent']} |"))
        assert f"| {100 * out.mean():.1f} +- {100 * T975_DF1 * out.std(ddof=1) / math.sqrt(2):.1f} |" in line
    bc, radac = report["rows"]
    assert bc["kind"] == "imitation" and radac["kind"] == "risk-averse" and radac["expected_modes"] == ["S"]
    assert radac["matched_seeds"] == sum(t == "S" for t in radac["top_mode_per_seed"])
    assert (study / "agents.png").stat().st_size > 20_000
    for s in (0, 1):  # the figure's actions: the latest evaluation's, one file per run
        assert np.load(study / "runs" / f"bandit-radac-seed{s}" / "actions.npy").shape == (2000, 2)


def test_second_call_trains_nothing(study, capsys):
    files = sorted(p for p in (study / "runs").rglob("*") if p.name in ("metrics.jsonl", "checkpoint.pt"))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    rows = json.loads((study / "agents.json").read_text())["rows"]
    assert main(ARGS + ["--out", str(study)]) == 0
    assert "4 already finished" in capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before
    assert json.loads((study / "agents.json").read_text())["rows"] == rows


@pytest.mark.parametrize("argv, message", [
    (["--algos", "bc", "pong"], r"unknown agent\(s\) \['pong'\]; known: radac, bc, "),
    (["--variants", "bandit-x7"], r"unknown bandit variant\(s\) \['bandit-x7'\]; known: bandit, "),
    (["--algos", "bc", "--set", "eta=0.3"], r"--set eta: no chosen agent has this setting"),
    (["--seeds", "-1"], r"--seeds must name at least one seed, each >= 0"),
    (["--seeds"], r"--seeds: expected at least one argument"),
    (["--steps", "0"], r"--steps must be at least 1, got 0"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    import re

    out = tmp_path / "out"
    assert run_cli(["study", "agents", "--device", "cpu", "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()  # nothing planned, nothing trained


# SPEC 2.5's expectation by agent, which the study derives from each agent's settings
SPEC_2_5 = {"radac": ["S"], "rafmac": ["S"], "codac": ["S"], "oraac": ["S", "outside"], "diffusion-ql": ["R"], "fql": ["R"],
            "cql": ["R"], "neutral": ["R"], "bc": ["R", "S", "L1", "L2"]}


@pytest.mark.parametrize("algo", ALGOS)
def test_expectation_from_the_settings_is_spec_2_5s(algo):
    expect = expectation(build_configs("bandit", algo, True)[0], FAMILY["bandit"])
    if algo in SPEC_2_5:
        assert expect["modes"] == SPEC_2_5[algo]
    assert (expect["kind"] == "imitation") == (algo == "bc")
    assert (expect["more_outside_than"] == "radac") == (algo == "oraac")


def test_matched_and_the_outside_comparison(tmp_path):
    """Hand-written final evaluations: every radac seed in S; oraac in S but less outside than radac."""
    plan = [r for algo in ("radac", "oraac") for r in plan_runs(["bandit"], algo, (0, 1), 10, 10, {}, tmp_path)]
    shares = {"radac": dict(S=0.9, R=0.02, L1=0.0, L2=0.0, outside=0.08),
              "oraac": dict(S=0.95, R=0.0, L1=0.0, L2=0.0, outside=0.05)}
    for _, seed, run_dir, (_, train) in plan:
        run_dir.mkdir(parents=True)
        row = {"kind": "eval", "step": 10, "reward/mean": 1.0 + seed, "reward/cvar_0.1": -1.0,
               **{f"share/{k}": v for k, v in shares[train.algo].items()}}
        (run_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    radac, oraac = collect(plan, 10)
    assert radac["matched"] == "yes" and radac["reward_mean"] == pytest.approx(1.5)
    assert oraac["comparison"] == {"more_outside_than": "radac", "held": False}
    assert oraac["matched"] == "partly (2/2 seeds; outside not above radac)"


def test_a_perturbation_actor_off_the_support_matches(tmp_path):
    """SPEC 2.5: ORAAC drifts off the support. Seeds mostly outside (more than radac) match; a seed
    in a low mode does not."""
    plan = [r for algo in ("radac", "oraac") for r in plan_runs(["bandit"], algo, (0, 1, 2), 10, 10, {}, tmp_path)]
    for _, seed, run_dir, (_, train) in plan:
        run_dir.mkdir(parents=True)
        top = "S" if train.algo == "radac" else ("outside", "L1", "outside")[seed]
        row = {"kind": "eval", "step": 10, "reward/mean": 0.0, "reward/cvar_0.1": 0.0,
               **{f"share/{k}": float(k == top) for k in ("R", "S", "L1", "L2", "outside")}}
        (run_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    _, oraac = collect(plan, 10)
    assert oraac["comparison"]["held"] is True and oraac["matched"] == "partly (2/3 seeds)"


def test_help_names_every_registry_agent(capsys):
    assert run_cli(["study", "agents", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(algo in text for algo in ALGOS) and "agents.png" in text
