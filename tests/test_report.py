"""`ramac report`: per-seed evaluations grouped by task and method, bootstrap CIs over seeds."""

import json

import numpy as np
import pytest

from ramac.report import ReportError, aggregate, bootstrap_mean_ci, markdown, read_run, write_report


def fake_run(root, name, task, algo, seed, metrics, returns=None, again=None):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"agent": {}, "train": {"task": task, "algo": algo, "seed": seed}}))
    (d / "eval.json").write_text(json.dumps({"step": 100, **metrics}))
    if again is not None:
        (d / "eval-again.json").write_text(json.dumps({"step": 100, "seed": 12345, **again}))
    if returns is not None:
        np.save(d / "returns.npy", np.asarray(returns))
    return d


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_agreement():
    lo, hi = bootstrap_mean_ci([1.0, 2.0, 3.0, 4.0])
    assert lo < 2.5 < hi
    tight = bootstrap_mean_ci([2.4, 2.5, 2.6, 2.5])
    assert tight[1] - tight[0] < (hi - lo) / 5
    assert np.isnan(bootstrap_mean_ci([1.0])[0])
    assert bootstrap_mean_ci([1.0, 5.0], seed=3) == bootstrap_mean_ci([1.0, 5.0], seed=3)


def test_groups_by_task_and_method_with_per_seed_values(tmp_path):
    runs = []
    for seed, (tail, cvar) in enumerate([(0.99, 2.0), (0.95, 1.5), (0.97, 1.8)]):
        runs.append(fake_run(tmp_path, f"r{seed}", "bandit", "radac", seed,
                             {"share/best_tail": tail, "share/outside": 0.01, "reward/mean": 3.0, "reward/cvar_0.1": cvar}))
    runs.append(fake_run(tmp_path, "b0", "bandit", "bc", 0,
                         {"share/best_tail": 0.25, "share/outside": 0.02, "reward/mean": 2.0, "reward/cvar_0.1": -20.0}))
    rows = aggregate([read_run(r) for r in runs])
    assert [(r["task"], r["method"], r["seeds"]) for r in rows] == [("bandit", "bc", [0]), ("bandit", "radac", [0, 1, 2])]
    radac = rows[1]["metrics"]["reward/cvar_0.1"]
    assert radac["per_seed"] == [2.0, 1.5, 1.8] and radac["mean"] == pytest.approx(1.7667, abs=1e-3)
    assert radac["ci95"][0] <= radac["mean"] <= radac["ci95"][1]
    table = markdown(rows)
    assert "| radac | 3 |" in table and "| bc | 1 |" in table
    assert "97.00 [" in table  # shares in percent, with the interval


def test_a_re_evaluation_replaces_the_training_evaluation(tmp_path):
    d = fake_run(tmp_path, "r", "bandit", "radac", 0, {"reward/mean": 1.0}, again={"reward/mean": 2.0})
    run = read_run(d)
    assert run["source"] == "eval-again.json" and run["metrics"]["reward/mean"] == 2.0


def test_writes_markdown_json_and_a_risk_profile(tmp_path):
    runs = [fake_run(tmp_path, f"r{s}", "hopper-medium-replay", "radac", s,
                     {"return/mean": 100.0 + s, "return/cvar_0.1": 50.0 + s, "risky_rate": 0.2},
                     returns=np.random.default_rng(s).normal(100, 10, 50)) for s in range(3)]
    out = write_report(runs, tmp_path / "report" / "table")
    assert (tmp_path / "report" / "table.md").read_text().startswith("### hopper-medium-replay")
    saved = json.loads((tmp_path / "report" / "table.json").read_text())
    assert saved["rows"][0]["metrics"]["return/mean"]["per_seed"] == [100.0, 101.0, 102.0]
    assert out["figure"] and (tmp_path / "report" / "table.png").stat().st_size > 0


def test_bad_run_directories_name_the_problem(tmp_path):
    with pytest.raises(ReportError, match="no config.json"):
        read_run(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"train": {"task": "bandit", "algo": "radac", "seed": 0}}))
    with pytest.raises(ReportError, match="has not finished an evaluation"):
        read_run(tmp_path)
    a = fake_run(tmp_path, "a", "bandit", "radac", 0, {"reward/mean": 1.0})
    b = fake_run(tmp_path, "b", "bandit", "radac", 0, {"reward/mean": 2.0})
    with pytest.raises(ReportError, match=r"seed\(s\) \[0\] appear in more than one"):
        aggregate([read_run(a), read_run(b)])


def test_ramac_report_on_trained_runs(tmp_path, capsys):
    from ramac.cli import main

    tiny = ["--device", "cpu", "--no-progress", "--steps", "3", "--eval-every", "0", "--eval-samples", "200",
            "--set", "actor_hidden=16", "--set", "critic_hidden=16", "--set", "embedding_dim=8",
            "--set", "n_quantiles=4", "--set", "n_risk_quantiles=4", "--set", "n_timesteps=2"]
    for seed in (0, 1):
        assert main(["train", *tiny, "--seed", str(seed), "--run-dir", str(tmp_path / f"s{seed}")]) == 0
        assert (tmp_path / f"s{seed}" / "returns.npy").exists()
    assert main(["eval", str(tmp_path / "s1"), "--samples", "300", "--device", "cpu"]) == 0
    assert (tmp_path / "s1" / "returns-again.npy").exists()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "r" / "table")]) == 0
    out = capsys.readouterr().out
    assert "| radac | 2 |" in out and (tmp_path / "r" / "table.png").exists()
    rows = json.loads((tmp_path / "r" / "table.json").read_text())["rows"]
    assert rows[0]["seeds"] == [0, 1]
    assert main(["report", str(tmp_path / "r")]) == 2  # not a run directory: one line
    assert "no config.json" in capsys.readouterr().err


def test_the_risk_profile_names_methods_alone_when_every_run_is_of_one_task(monkeypatch, tmp_path):
    """One task: its methods' profiles and histograms; several: a panel per task (each method's
    seeds pooled within its task only)."""
    import ramac.evaluation
    import ramac.report
    from ramac.report import plot

    seen = []
    monkeypatch.setattr(ramac.evaluation, "plot_risk_profile", lambda curves, path, title="": seen.append((curves, title)))
    runs = [{"task": t, "algo": a, "returns": np.arange(4.0) + i}
            for i, (t, a) in enumerate([("hop", "radac"), ("hop", "bc"), ("hop", "radac")])]
    assert plot(runs, tmp_path / "a.png")
    curves, title = seen[-1]
    assert sorted(curves) == ["bc", "radac"] and title.startswith("hop: ")
    assert len(curves["radac"]) == 8  # the seeds' returns pooled
    more = runs + [{"task": "cheetah", "algo": "bc", "returns": np.zeros(2)}]
    assert plot(more, tmp_path / "b.png") and len(seen) == 1 and (tmp_path / "b.png").stat().st_size > 0
    panels = []
    monkeypatch.setattr(ramac.report, "_plot_tasks", lambda tasks, returns, path: panels.append((tasks, returns)))
    assert plot(more, tmp_path / "b.png")
    tasks, returns = panels[-1]
    assert tasks == ["cheetah", "hop"] and sorted(returns) == [("cheetah", "bc"), ("hop", "bc"), ("hop", "radac")]
    assert len(returns["hop", "radac"]) == 8 and len(returns["cheetah", "bc"]) == 2
    assert not plot([{"task": "hop", "algo": "bc", "returns": None}], tmp_path / "c.png")
