"""`ramac sweep`: cells from a TOML file, one line per bad file, tables equal to the runs'
evaluations, resume (finished cells skipped, shorter runs continued), and a 2-process torchrun
launch on CPUs (gloo) that deals the cells out and reports once."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from ramac.cli import main
from ramac.sweep import SweepError, load_spec, parse_spec, plan, run_sweep, sweep_tables
from ramac.sweep_budget import UNCERTAIN_MARGIN, UnitTimes, seed_scaling
from ramac.utils import device_name

TINY = """
name = "tiny"
tasks = ["bandit"]
agents = ["bc", "radac"]
seeds = [0, 1]
[train]
steps = STEPS
eval_every = 20
eval_samples = 200
log_every = 20
ckpt_every = 20
threads = 1
[set]
actor_hidden = 16
n_timesteps = 3
[set.radac]
critic_hidden = 16
embedding_dim = 8
n_quantiles = 4
n_risk_quantiles = 4
eta_warmup_steps = 10
"""


def write(tmp_path, steps=40, text=TINY, name="tiny.toml"):
    path = tmp_path / name
    path.write_text(text.replace("STEPS", str(steps)))
    return path


def evals(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "eval"]


def test_the_cells_and_their_settings(tmp_path):
    spec = load_spec(write(tmp_path))
    cells = plan(spec, tmp_path / "runs", "cpu")
    assert [(c.task, c.agent, c.seed) for c in cells] == [("bandit", a, s) for a in ("bc", "radac") for s in (0, 1)]
    bc, radac = cells[0], cells[2]
    assert bc.agent_cfg.actor_hidden == radac.agent_cfg.actor_hidden == 16  # [set] reaches every agent
    assert radac.agent_cfg.n_quantiles == 4 and not hasattr(bc.agent_cfg, "n_quantiles")  # [set.radac] only radac
    assert bc.train_cfg.steps == 40 and cells[1].train_cfg.seed == 1
    assert cells[3].run_dir == tmp_path / "runs" / "bandit-radac-seed1"


@pytest.mark.parametrize("edit, message", [
    (('tasks = ["bandit"]', 'tasks = ["bandit", "pong"]'), r"unknown task\(s\) \['pong'\]"),
    (('agents = ["bc", "radac"]', 'agents = ["bc", "sac"]'), r"unknown agent\(s\) \['sac'\]"),
    (("seeds = [0, 1]", "seeds = []"), "non-empty list 'seeds'"),
    (("seeds = [0, 1]", "seeds = [1, 1]"), "seeds must differ"),
    (("steps = STEPS", "seed = 3"), r"cannot set \['seed'\]"),
    (("n_timesteps = 3", "n_timestep = 3"), r"\['n_timestep'\] belong to none of the agents"),
    (("[set.radac]", "[set.fql]"), "names an agent the sweep does not train"),
    (("eta_warmup_steps = 10", "eta_warmup_steps = -1"), "bandit / radac: eta_warmup_steps must be >= 0"),
    (("[train]", "[trian]"), r"unknown sweep key\(s\) \['trian'\]"),
    (("[set]", "[eval]\nepisodes = 0\n[set]"), "episodes must be a positive integer"),
    (("[set]", "[eval]\nood = 1\n[set]"), "ood must be true or false"),
])
def test_a_bad_file_is_one_line_and_nothing_is_written(tmp_path, capsys, edit, message):
    import re

    path = write(tmp_path, text=TINY.replace(*edit).replace("STEPS", "40"))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(SweepError, match="not valid TOML"):
        load_spec(write(tmp_path, text="tasks = [bandit"))
    with pytest.raises(SweepError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    with pytest.raises(SweepError, match="non-empty list 'tasks'"):
        parse_spec({"agents": ["bc"], "seeds": [0]})


def test_sweep_tables_hold_the_runs_evaluations_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "out"
    # a shorter sweep first: the longer one continues its runs from their checkpoints
    run_sweep(load_spec(write(tmp_path, steps=20)), out, "cpu", log=lambda *a: None, plots="none")
    first = {d.name: evals(d) for d in (out / "runs").iterdir()}
    report = run_sweep(load_spec(write(tmp_path, steps=40)), out, "cpu", log=lambda *a: None, plots="none")
    rows = {r["method"]: r for r in report["tasks"]["bandit"]}
    for agent in ("bc", "radac"):
        finals = []
        for seed in (0, 1):
            run = out / "runs" / f"bandit-{agent}-seed{seed}"
            ev = evals(run)
            assert [e["step"] for e in ev] == [20, 40]
            assert ev[0] == first[run.name][0]  # the step-20 evaluation was kept, not trained again
            finals.append(ev[-1]["reward/mean"])
        stat = rows[agent]["metrics"]["reward/mean"]
        assert stat["per_seed"] == finals and stat["mean"] == pytest.approx(sum(finals) / 2)
    for name in ("bandit.md", "bandit.csv", "bandit.json", "bandit-risk.png", "bandit-curves.png", "sweep.json"):
        assert (out / name).exists(), name
    assert "radac" in (out / "bandit.md").read_text()
    # a rerun trains nothing: the finished runs are left as they are
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("metrics.jsonl")}
    run_sweep(load_spec(write(tmp_path, steps=40)), out, "cpu", log=lambda *a: None, plots="none")
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("metrics.jsonl")}
    # a second task under a time limit that lets no unit start: the complete task's tables are
    # written again, the error names what is left, and nothing of the new task is trained
    (out / "bandit.md").unlink()
    two = write(tmp_path, steps=40, text=TINY.replace('tasks = ["bandit"]', 'tasks = ["bandit", "bandit-x5"]'),
                name="two.toml")
    said = []
    report = run_sweep(load_spec(two), out, "cpu", log=said.append, plots="none", time_limit_s=0)
    assert list(report["tasks"]) == ["bandit"] and len(report["unfinished"]) == 4
    assert "4 cell(s) not finished yet, in bandit-x5; tables written for the 1 complete task" in said[-1]
    assert (out / "bandit.md").exists() and not (out / "bandit-x5.md").exists()
    with pytest.raises(SweepError, match="not among the sweep's tasks"):
        run_sweep(load_spec(two), out, "cpu", log=said.append, plots="none", tasks=["bandit-x2"])
    # --tasks: only bandit is trained (it is finished: nothing runs), bandit-x5 needs no data check
    assert run_sweep(load_spec(two), out, "cpu", log=said.append, plots="none", tasks=["bandit"])["unfinished"]
    assert not list((out / "runs").glob("bandit-x5-*"))
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("metrics.jsonl")}


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_two_processes_share_the_cells_and_report_once(tmp_path):
    path, out = write(tmp_path), tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "ramac", "sweep", str(path),
                           "--out", str(out), "--device", "cpu"], env=env, capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).parents[1])
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    assert "[rank 0/2] sweep tiny: 4 cells, 2 here" in text and "[rank 1/2] sweep tiny: 4 cells, 2 here" in text
    assert text.count("wrote ") >= 1 and text.count("bandit.md") == 1  # process 0 alone writes the tables
    # the seeds of an agent side by side, the agents dealt round-robin: process 0 bc, process 1 radac
    trained = {(line.split("]")[0] + "]", " ".join(line.split("]")[1].split()[:4]).rstrip(":"))
               for line in text.splitlines() if line.startswith("[rank ") and "] " in line and ": R " in line}
    assert trained == {("[rank 0]", "bandit bc seed 0"), ("[rank 0]", "bandit bc seed 1"),
                       ("[rank 1]", "bandit radac seed 0"), ("[rank 1]", "bandit radac seed 1")}, text[-3000:]
    rows = json.loads((out / "bandit.json").read_text())
    assert sorted(r["method"] for r in rows) == ["bc", "radac"] and all(r["seeds"] == [0, 1] for r in rows)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "sweeps").glob("*.toml")), ids=lambda p: p.name)
def test_the_committed_sweeps_resolve(path):
    spec = load_spec(path)
    cells = plan(spec, Path("runs"), "cpu", full=True)
    assert len(cells) == len(spec.tasks) * len(spec.agents) * len(spec.seeds)


MUJOCO = """
name = "mj"
tasks = ["hopper-medium-replay"]
agents = ["bc", "oraac"]
seeds = [0]
[train]
steps = 20
eval_every = 20
eval_episodes = 2
log_every = 10
ckpt_every = 20
threads = 1
[set]
actor_hidden = 16
[eval]
episodes = 3
ood = false
"""


def test_a_mujoco_sweep_needs_its_data_and_then_reports_returns(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    path, out = write(tmp_path, text=MUJOCO), tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no data set for hopper-medium-replay" in err and not out.exists()
    from ramac.data import stochastic_mujoco

    stochastic_mujoco.make("hopper-medium-replay", size=600, progress=False)
    report = run_sweep(load_spec(path), out, "cpu", log=lambda *a: None, plots="none")
    rows = {r["method"]: r for r in report["tasks"]["hopper-medium-replay"]}
    assert set(rows) == {"bc", "oraac"} and all("return/cvar_0.1" in r["metrics"] for r in rows.values())
    assert "return/mean" in (out / "hopper-medium-replay.md").read_text()
    for agent in ("bc", "oraac"):  # the table reads the second evaluation ([eval]: 3 episodes)
        again = json.loads((out / "runs" / f"hopper-medium-replay-{agent}-seed0" / "eval-again.json").read_text())
        assert again["step"] == 20 and again["episodes"] == 3
        assert rows[agent]["metrics"]["return/mean"]["per_seed"] == [again["return/mean"]]
    # a cell without its second evaluation (a stretch stopped between training and evaluating it)
    # keeps its task out of the tables until a run evaluates it: no table mixes the two evaluations
    (out / "runs" / "hopper-medium-replay-bc-seed0" / "eval-again.json").unlink()
    (out / "hopper-medium-replay.md").unlink()
    monkeypatch.setattr("ramac.sweep.reevaluate_cells", lambda *a, **k: None)
    report = run_sweep(load_spec(path), out, "cpu", log=lambda *a: None, plots="none")
    assert report["tasks"] == {} and report["unfinished"] == [str(out / "runs" / "hopper-medium-replay-bc-seed0")]
    assert not (out / "hopper-medium-replay.md").exists()


def test_diverged_cells_are_left_out_named_and_not_trained_again(tmp_path):
    text = TINY.replace("eta_warmup_steps = 10", "eta_warmup_steps = 10\nlr_critic = 1e30\nlr_actor = 1e30")
    path, out = write(tmp_path, steps=40, text=text.replace("log_every = 20", "log_every = 5")), tmp_path / "out"
    said = []
    report = run_sweep(load_spec(path), out, "cpu", log=said.append, plots="none")
    assert {(d["agent"], d["seed"]) for d in report["diverged"]} == {("radac", 0), ("radac", 1)}
    assert report["unfinished"] == [] and [r["method"] for r in report["tasks"]["bandit"]] == ["bc"]
    assert "stopped on non-finite values: radac seed 0 (step" in (out / "bandit.md").read_text()
    assert sum("diverged at step" in line for line in said) == 2
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    run_sweep(load_spec(path), out, "cpu", log=lambda *a: None, plots="none")
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}


def test_a_trained_cell_whose_checkpoint_is_gone_before_its_second_evaluation_trains_again(tmp_path):
    # a metered stretch of GPU time can end between training a cell and evaluating it again; only
    # the run's records (no checkpoint) are kept, so the next stretch must train it again, keep the
    # old folder, and (same seed) get the same numbers
    text = TINY + "[eval]\nsamples = 100\n"
    path, out = write(tmp_path, steps=20, text=text), tmp_path / "out"
    run_sweep(load_spec(path), out, "cpu", log=lambda *a: None, plots="none")
    cell = out / "runs" / "bandit-bc-seed0"
    first = json.loads((cell / "eval-again.json").read_text())
    (cell / "eval-again.json").unlink()
    (cell / "checkpoint.pt").unlink()
    said = []
    report = run_sweep(load_spec(path), out, "cpu", log=said.append, plots="none")
    aside = out / "runs" / "bandit-bc-seed0.no-checkpoint"
    assert (aside / "eval.json").exists() and not (aside / "eval-again.json").exists()
    assert any("kept as bandit-bc-seed0.no-checkpoint" in line for line in said)
    again = json.loads((cell / "eval-again.json").read_text())
    assert again == first and report["unfinished"] == []


def test_cells_trained_but_not_evaluated_again_are_evaluated_before_any_unit_trains(tmp_path):
    # a stretch cut off after training a unit but before its second evaluations: the next stretch
    # (its machine still holding the checkpoints) evaluates those cells first, as they are cheap
    text = TINY + "[eval]\nsamples = 100\n"
    path, out = write(tmp_path, steps=20, text=text), tmp_path / "out"
    run_sweep(load_spec(path), out, "cpu", log=lambda *a: None, plots="none")
    (out / "runs" / "bandit-bc-seed1" / "eval-again.json").unlink()
    for seed in (0, 1):
        shutil.rmtree(out / "runs" / f"bandit-radac-seed{seed}")
    said = []
    run_sweep(load_spec(path), out, "cpu", log=said.append, plots="none")
    order = [i for i, line in enumerate(said) if "evaluated again bandit bc seed 1" in line or "bandit / radac:" in line]
    assert len(order) == 2 and "evaluated again bandit bc seed 1" in said[order[0]], said
    assert (out / "runs" / "bandit-bc-seed1" / "eval-again.json").exists()


def test_a_budget_starts_only_the_units_whose_recorded_time_fits(tmp_path):
    path, out = write(tmp_path, steps=20), tmp_path / "out"
    out.mkdir()
    key = f"{device_name(torch.device('cpu'))} | bandit | {{}} | 2 seeds | 20 steps"
    # 0.05 s: recorded times are rounded to 0.1 s, so bc's real time can never come out equal to it
    (out / "unit-times.json").write_text(json.dumps({key.format("bc"): 0.05, key.format("radac"): 1e6}))
    said = []
    report = run_sweep(load_spec(path), out, "cpu", log=said.append, plots="none", budget_s=600)
    assert (out / "runs" / "bandit-bc-seed1" / "eval.json").exists()  # bc fits and trains,
    assert not (out / "runs" / "bandit-radac-seed0").exists()  # radac would not fit: it waits
    assert any("bandit / radac left for the next run: predicted 1000000 s" in line for line in said)
    assert len(report["unfinished"]) == 2
    times = json.loads((out / "unit-times.json").read_text())
    assert 0 <= times[key.format("bc")] < 600 and times[key.format("bc")] != 0.05  # bc's real time replaces the old one
    run_sweep(load_spec(path), out, "cpu", log=lambda *a: None, plots="none")  # no budget: radac trains
    assert json.loads((out / "unit-times.json").read_text())[key.format("radac")] < 1e6
    assert main(["sweep", str(path), "--out", str(out), "--budget", "0"]) == 2
    said, other = [], tmp_path / "other"  # a spent budget starts nothing, timed or not
    run_sweep(load_spec(path), other, "cpu", log=said.append, plots="none", budget_s=1e-9)
    assert not list(other.glob("runs/*/eval.json")) and any("budget spent" in line for line in said)


def test_tables_only_rebuilds_the_tables_from_the_run_directories_and_trains_nothing(tmp_path, capsys):
    path, out = write(tmp_path, steps=20), tmp_path / "out"
    report = run_sweep(load_spec(path), out, "cpu", log=lambda *a: None, plots="none")
    want = json.loads((out / "bandit.json").read_text())
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    for name in ("bandit.md", "bandit.csv", "bandit.json", "bandit-risk.png", "sweep.json"):
        (out / name).unlink()
    assert main(["sweep", str(path), "--out", str(out), "--tables-only"]) == 0
    assert json.loads((out / "bandit.json").read_text()) == want == report["tasks"]["bandit"]
    assert (out / "bandit-risk.png").exists() and json.loads((out / "sweep.json").read_text())["tables_only"]
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}  # nothing trained
    assert "1 complete tasks; 0 cells left" in capsys.readouterr().out
    # a cell gone: its task is incomplete, its table not written, and the cell named as left
    shutil.rmtree(out / "runs" / "bandit-radac-seed1")
    (out / "bandit.md").unlink()
    assert main(["sweep", str(path), "--out", str(out), "--tables-only"]) == 0
    assert not (out / "bandit.md").exists() and "0 complete tasks; 1 cells left" in capsys.readouterr().out
    assert not (out / "runs" / "bandit-radac-seed1").exists()
    assert main(["sweep", str(path), "--out", str(tmp_path / "nowhere"), "--tables-only"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # runs of another length than the file's (e.g. full-size presets read with CPU-sized ones): said
    said = []
    report = sweep_tables(load_spec(write(tmp_path, steps=40, name="longer.toml")), out, full=False, log=said.append)
    assert not report["tasks"] and any("3 run(s) evaluated at another length than 40 steps" in s for s in said)


def test_lanes_deal_the_tasks_with_cells_left_by_their_recorded_times(tmp_path, capsys):
    """`ramac sweep --lanes N` (gpu_sweep.sh's LANES=auto): finished tasks are left out, the unit
    times recorded for the device decide the balance, and a unit with some seeds finished is
    predicted at its remaining seeds' size."""
    text = TINY.replace('tasks = ["bandit"]', 'tasks = ["bandit", "bandit-x2", "bandit-x5", "bandit-ring"]')
    path, out = write(tmp_path, steps=20, text=text), tmp_path / "out"
    out.mkdir()
    key = "GPU | {} | {} | {} seeds | 20 steps"
    times = {key.format("bandit-x2", "radac", 2): 900, key.format("bandit-x5", "radac", 2): 500,
             key.format("bandit-ring", "radac", 1): 300, "OTHER | bandit-x5 | radac | 2 seeds | 20 steps": 1}
    times |= {key.format(t, "bc", 2): 100 for t in ("bandit", "bandit-x2", "bandit-x5", "bandit-ring")}
    (out / "unit-times.json").write_text(json.dumps(times))
    spec = load_spec(path)
    for c in plan(spec, out / "runs", "cpu"):  # bandit all finished, bandit-ring's radac seed 0 too
        if c.task == "bandit" or (c.task, c.agent, c.seed) == ("bandit-ring", "radac", 0):
            c.run_dir.mkdir(parents=True)
            (c.run_dir / "eval.json").write_text(json.dumps({"step": 20}))
    # left: x2 1000 s, x5 600 s, ring 100 + 300 (radac's one seed left) = 400 s
    assert main(["sweep", str(path), "--out", str(out), "--lanes", "2"]) == 0
    assert capsys.readouterr().out.strip() == "bandit-x2;bandit-x5 bandit-ring"
    assert main(["sweep", str(path), "--out", str(out), "--lanes", "5"]) == 0  # fewer tasks than lanes
    assert capsys.readouterr().out.strip() == "bandit-x2;bandit-x5;bandit-ring"
    assert main(["sweep", str(path), "--out", str(out), "--lanes", "0"]) == 2


def test_lanes_count_cells_awaiting_their_second_evaluation(tmp_path):
    """A task whose cells are all trained but one is not evaluated again still gets a lane: its
    evaluation where the checkpoint is there, its training again where it is gone."""
    from ramac.sweep import lanes

    text = TINY.replace('tasks = ["bandit"]', 'tasks = ["bandit", "bandit-x2"]') + "[eval]\nsamples = 100\n"
    path, out = write(tmp_path, steps=20, text=text), tmp_path / "out"
    out.mkdir()
    key = "GPU | {} | {} | {} seeds | 20 steps"
    (out / "unit-times.json").write_text(json.dumps({key.format(t, a, n): 1000.0 * n for t in ("bandit", "bandit-x2")
                                                     for a in ("bc", "radac") for n in (1, 2)}))
    spec = load_spec(path)
    for c in plan(spec, out / "runs", "cpu"):
        c.run_dir.mkdir(parents=True)
        (c.run_dir / "eval.json").write_text(json.dumps({"step": 20}))
        (c.run_dir / "checkpoint.pt").write_text("")
        if (c.task, c.agent, c.seed) != ("bandit", "radac", 1):
            (c.run_dir / "eval-again.json").write_text(json.dumps({"step": 20}))
    assert lanes(spec, out, 2, "cpu", timed_on="GPU") == [["bandit"]]  # its one evaluation left
    (out / "runs" / "bandit-radac-seed1" / "checkpoint.pt").unlink()
    for seed in (0, 1):  # x2: two evaluations left
        (out / "runs" / f"bandit-x2-bc-seed{seed}" / "eval-again.json").unlink()
    # bandit: 1,000 s of training again, x2: two evaluations (2 x EVAL_GUESS_S)
    assert lanes(spec, out, 1, "cpu", timed_on="GPU") == [["bandit", "bandit-x2"]]


def test_unit_times_keep_the_seeds_layouts_apart(tmp_path):
    """A stacked unit is not predicted by side-by-side times (nor the other way), and each layout
    records under its own key."""
    path = tmp_path / "unit-times.json"
    side, stacked = UnitTimes(path, "GPU", stacked=False), UnitTimes(path, "GPU", stacked=True)
    m = UNCERTAIN_MARGIN  # a guess from other units is taken as this much longer
    side.record("task", "radac", 5, 100, 445.0)
    assert side.predict("task", "radac", 5, 100) == 445.0
    assert side.predict("other", "radac", 5, 100) == pytest.approx(445.0 * m)  # the agent's longest, same layout
    assert stacked.predict("task", "radac", 5, 100) is None
    stacked.record("task", "bc", 5, 100, 90.0)
    assert stacked.predict("task", "radac", 5, 100) == pytest.approx(90.0 * m)  # the longest stacked unit that size
    assert side.predict("task", "bc", 5, 100) == pytest.approx(445.0 * m)
    stacked.record("task", "bc", 1, 100, 30.0)  # one seed trains alone whatever the switch says
    assert side.predict("task", "bc", 1, 100) == 30.0
    assert sorted(json.loads(path.read_text())) == ["GPU | task | bc | 1 seeds | 100 steps",
                                                    "GPU | task | bc | 5 seeds stacked | 100 steps",
                                                    "GPU | task | radac | 5 seeds | 100 steps"]


def test_unit_times_guess_other_seed_counts_by_seed_scaling(tmp_path):
    """A seed count never timed is guessed from the same task and agent's other counts (fixed time
    plus a time per seed), before the agent's units of that count on other tasks and other
    agents' units."""
    times = UnitTimes(tmp_path / "unit-times.json", "GPU", stacked=False)
    times.record("task", "radac", 5, 100, 400.0)
    assert seed_scaling(5, 1) == pytest.approx(0.6) and seed_scaling(1, 5) == pytest.approx(1 / 0.6)
    assert times.predict("task", "radac", 3, 100) == pytest.approx(400.0 * 0.8 * UNCERTAIN_MARGIN)
    assert times.predict("task", "radac", 1, 100) == pytest.approx(400.0 * 0.6 * UNCERTAIN_MARGIN)
    times.record("task", "bc", 3, 100, 50.0)  # the agent's own time, scaled, goes before another agent's
    assert times.predict("task", "radac", 3, 100) == pytest.approx(400.0 * 0.8 * UNCERTAIN_MARGIN)
    assert times.predict("task", "sac", 3, 100) == pytest.approx(50.0 * UNCERTAIN_MARGIN)  # then this count's
    times.record("other", "radac", 3, 100, 600.0)  # the agent on another task at this count, before (3)
    assert times.predict("third", "radac", 3, 100) == pytest.approx(600.0 * UNCERTAIN_MARGIN)
    assert times.predict("task", "radac", 5, 200) is None  # other steps: nothing to go on


def test_a_unit_too_long_for_the_budget_trains_the_seeds_that_fit(tmp_path):
    """When a whole unit would overrun the budget, the first seeds that fit train side by side (and
    are evaluated again), the rest wait for the next stretch; a unit whose one seed does not fit
    waits whole."""
    from ramac.sweep import train_units

    path, out = write(tmp_path, steps=20, text=TINY.replace("seeds = [0, 1]", "seeds = [0, 1, 2]")), tmp_path / "out"
    cells = plan(load_spec(path), out / "runs", "cpu")
    times = UnitTimes(out / "unit-times.json", device_name(torch.device("cpu")))
    times.record("bandit", "bc", 3, 20, 800.0)  # so 2 seeds ~ 800 x 7/8 x margin = 875 s, 1 seed ~ 750 s
    times.record("bandit", "radac", 3, 20, 1e6)
    said, again = [], []
    train_units(cells, said.append, "none", budget_s=780, times=times, after_unit=again.append)
    done = sorted(p.parent.name for p in out.glob("runs/*/eval.json"))
    assert done == ["bandit-bc-seed0"], (done, said)
    assert any("bandit / bc: 1 of its 3 seeds fit the budget" in s for s in said)
    assert any("bandit / radac left for the next run: predicted 1000000 s" in s and "one seed alone" in s for s in said)
    assert [[c.seed for c in unit] for unit in again] == [[0, 1, 2]]  # the unit's cells, each evaluated if finished
    assert times.predict("bandit", "bc", 1, 20) < 100.0  # the one seed's own time, recorded


def test_a_unit_nothing_predicts_starts_whole_while_budget_is_left(tmp_path):
    """With no unit timed on the device (a first stretch), every seed of a unit starts: nothing
    says it would not fit."""
    from ramac.sweep import train_units
    from ramac.sweep_budget import fitting_seeds

    path, out = write(tmp_path, steps=20), tmp_path / "out"
    cells = [c for c in plan(load_spec(path), out / "runs", "cpu") if c.agent == "bc"]
    times = UnitTimes(out / "unit-times.json", device_name(torch.device("cpu")))
    assert fitting_seeds(times, cells, room=1.0) == 2
    train_units(cells, lambda *a: None, "none", budget_s=600, times=times)
    assert sorted(p.parent.name for p in out.glob("runs/*/eval.json")) == ["bandit-bc-seed0", "bandit-bc-seed1"]


def test_a_missing_data_set_is_built_just_before_the_first_unit_that_fits_with_it(tmp_path):
    """One process builds a task's data set only when a unit of that task is to train, and the
    budget counts the build's recorded time: a stretch that cannot train the task builds nothing."""
    from ramac.sweep import train_units
    from ramac.sweep_budget import DataSets

    path, out = write(tmp_path, steps=20), tmp_path / "out"
    cells = plan(load_spec(path), out / "runs", "cpu")
    times = UnitTimes(out / "unit-times.json", device_name(torch.device("cpu")))
    times.record("bandit", "bc", 2, 20, 0.05)
    times.record("bandit", "radac", 2, 20, 1e6)
    built, said = [], []

    def build(task):  # the data set is there only once built
        assert not list(out.glob("runs/*/eval.json"))
        built.append(task)

    times.record_data("bandit", 900.0)  # bc (0.05 s) would fit 600 s, but not after a 900 s build
    train_units(cells, said.append, "none", budget_s=600, times=times, data=DataSets(["bandit"], times, said.append, build))
    assert built == [] and not list(out.glob("runs/*/eval.json"))
    assert any("bandit / bc left for the next run: predicted 0 s after 900 s for its data set" in s for s in said)
    times.record_data("bandit", 100.0)
    data = DataSets(["bandit"], times, said.append, build)
    train_units(cells, said.append, "none", budget_s=600, times=times, data=data)
    assert built == ["bandit"] and data.missing == [] and data.predict("bandit") == 0.0  # built once, before bc
    assert (out / "runs" / "bandit-bc-seed1" / "eval.json").exists() and not (out / "runs" / "bandit-radac-seed0").exists()
    assert times.predict_data("bandit") < 100.0  # the build's own time replaces the old record
    assert times.predict("bandit", "bc", 2, 20) != times.predict_data("bandit")  # the keys never mix


def test_sweep_merge_brings_home_only_finished_runs_and_merges_unit_times(tmp_path, capsys):
    """bench/studies/sweep_merge.py: a stretch's finished runs are copied (without checkpoints; a
    diverged run counts as finished), a run not yet evaluated again only with --all, a run already here is never touched, and the
    stretch's unit times win."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_merge", Path(__file__).parents[1] / "bench/studies/sweep_merge.py")
    sweep_merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep_merge)
    src, dst = tmp_path / "stretch", tmp_path / "repo"

    def run(root, name, again_step=None, text="stretch"):
        d = root / "runs" / name
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"train": {"steps": 50}}))
        (d / "metrics.jsonl").write_text(text)
        (d / "checkpoint.pt").write_text("weights")
        if again_step is not None:
            (d / "eval-again.json").write_text(json.dumps({"step": again_step}))

    run(src, "t-a-seed0", 50)
    run(src, "t-a-seed1")  # trained, not evaluated again
    run(src, "t-a-seed2", 40)  # evaluated again at an earlier step only
    run(src, "t-b-seed0", 50)
    run(dst, "t-b-seed0", 50, text="ours")
    run(src, "t-c-seed0")  # stopped on non-finite values: done, as the sweep counts it
    (src / "runs" / "t-c-seed0" / "diverged.json").write_text(json.dumps({"step": 7, "error": "nan"}))
    (src / "unit-times.json").write_text(json.dumps({"k1": 2.0, "k2": 3.0}))
    (dst / "unit-times.json").write_text(json.dumps({"k1": 1.0, "k0": 5.0}))
    out = sweep_merge.main([str(src), str(dst)])
    assert out["copied"] == ["t-a-seed0", "t-c-seed0"] and out["skipped"] == ["t-a-seed1", "t-a-seed2"]
    assert out["times"] == 2
    assert not (dst / "runs" / "t-a-seed0" / "checkpoint.pt").exists()
    assert (dst / "runs" / "t-b-seed0" / "metrics.jsonl").read_text() == "ours"
    assert json.loads((dst / "unit-times.json").read_text()) == {"k0": 5.0, "k1": 2.0, "k2": 3.0}
    assert sweep_merge.main([str(src), str(dst), "--all"])["copied"] == ["t-a-seed1", "t-a-seed2"]
    with pytest.raises(SystemExit, match="no runs/ folder"):
        sweep_merge.main([str(tmp_path / "nothing"), str(dst)])


def test_dry_run_names_each_cells_state_and_each_units_predicted_time(tmp_path, capsys):
    """`ramac sweep --dry-run`: finished, to train, resumable, awaiting its second evaluation (or,
    its checkpoint gone, training again), then each unit with work and its predicted seconds."""
    text = TINY + "[eval]\nsamples = 100\n"
    path, out = write(tmp_path, steps=20, text=text), tmp_path / "out"
    key = "GPU | bandit | {} | {} seeds | 20 steps"
    out.mkdir()
    (out / "unit-times.json").write_text(json.dumps({key.format("bc", 2): 100.0}))
    cells = {(c.agent, c.seed): c for c in plan(load_spec(path), out / "runs", "cpu")}

    def make(agent, seed, again=False, checkpoint=False, finished=True):
        d = cells[(agent, seed)].run_dir
        d.mkdir(parents=True)
        if finished:
            (d / "eval.json").write_text(json.dumps({"step": 20}))
        if again:
            (d / "eval-again.json").write_text(json.dumps({"step": 20}))
        if checkpoint:
            (d / "checkpoint.pt").write_text("")

    make("bc", 0, again=True)
    make("bc", 1, checkpoint=True)  # trained, checkpoint here: evaluate again
    make("radac", 0)  # trained, checkpoint gone: train again
    make("radac", 1, checkpoint=True, finished=False)  # interrupted: resumes
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(maxsplit=4)[-1] for line in lines[:4]] == [
        "finished", "trained, to evaluate again", "trained, its checkpoint gone: trains again",
        "resumes from its checkpoint"]
    assert "unit bandit / bc: 1 to evaluate again; 30 s (guessed)" in lines  # EVAL_GUESS_S, nothing to train
    radac = next(line for line in lines if line.startswith("unit bandit / radac"))
    assert "2 seed(s) to train" in radac and "guessed" in radac  # from bc's 2-seed record, with the margin
    assert lines[-1].startswith("2 unit(s) with work left") and lines[-1].endswith("on GPU one after another")


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid (util-linux)")
def test_detached_sweep_script_starts_and_follows(tmp_path):
    """bench/studies/gpu_sweep_detached.sh (the GPU machine's sweep across chained device calls),
    here on the CPU: start returns while the sweep runs on detached from an installed copy, follow
    waits for it and hands over gpu_sweep.sh's archive with the runs, whose provenance names the
    checkout's commit."""
    root = Path(__file__).resolve().parents[1]
    config = write(tmp_path, steps=20)
    env = {**os.environ, "RUN": str(tmp_path / "run"), "CONFIG": str(config), "TOTAL_S": "300"}
    env.pop("TRITON_INTERPRET", None)
    script = ["bash", "bench/studies/gpu_sweep_detached.sh"]
    start = subprocess.run(script, cwd=root, env={**env, "ACTION": "start", "OUT": str(tmp_path / "o1"), "WAIT_S": "0"},
                           capture_output=True, text=True, timeout=300)
    assert start.returncode == 0 and "detached sweep: started" in start.stdout, start.stdout + start.stderr
    follow = subprocess.run(script, cwd=root, env={**env, "ACTION": "follow", "OUT": str(tmp_path / "o2"),
                                                   "WAIT_S": "240"}, capture_output=True, text=True, timeout=300)
    assert "detached sweep: finished" in follow.stdout and "(exit 0)" in follow.stdout, follow.stdout + follow.stderr
    subprocess.run(["tar", "xzf", str(tmp_path / "o2" / "sweep.tgz"), "-C", str(tmp_path)], check=True)
    runs = sorted(p.name for p in (tmp_path / "results" / "tiny" / "runs").iterdir())
    assert runs == [f"bandit-{a}-seed{s}" for a in ("bc", "radac") for s in (0, 1)]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    provenance = json.loads((tmp_path / "results/tiny/runs/bandit-bc-seed0/config.json").read_text())["provenance"]
    assert provenance["git_commit"] == (commit or None)
    again = subprocess.run(script, cwd=root, env={**env, "ACTION": "follow", "OUT": str(tmp_path / "o3"),
                                                  "RUN": str(tmp_path / "none")}, capture_output=True, text=True)
    assert again.returncode == 2 and "no detached sweep on this machine" in again.stderr
