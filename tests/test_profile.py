"""`ramac profile`'s per-phase tables (CPU: the ops' self time stands for the kernels' time)."""

import json

import pytest

from ramac.cli import main
from ramac.perf.profile import OTHER, OUTSIDE, _innermost, run_profile

SMALL = {"actor_hidden": 32, "critic_hidden": 32, "embedding_dim": 16, "n_quantiles": 8, "n_risk_quantiles": 8,
         "n_timesteps": 3}
# RADAC's update with the risk term on (risk_from_step_one): every phase launches work
PHASES = ("data", "critic/loss", "critic/next_action", "critic/backward", "critic/optimizer", "actor/loss",
          "actor/sample", "actor/backward", "actor/optimizer", "ema_targets", "metrics")


@pytest.fixture(scope="module")
def profiled():
    return run_profile(batch=16, warmup=1, steps=1, device="cpu", table_steps=2, top=5, overrides=SMALL)


def test_the_phases_are_there_and_sum_to_the_window(profiled):
    phases = {r["phase"]: r for r in profiled["phases"]}
    assert set(PHASES) <= set(phases), sorted(phases)
    assert OUTSIDE not in phases  # every op of the window ran inside an update
    for name in PHASES:
        assert phases[name]["us_per_update"] > 0 and phases[name]["kernels_per_update"] > 0, name
    window = profiled["window"]
    assert window["activity"] == "cpu" and window["steps"] == 2
    # the total is counted apart from the phases (all ops' self time): each op was counted once
    assert sum(r["us_per_update"] for r in phases.values()) == pytest.approx(window["total_us_per_update"], rel=1e-6)
    assert sum(r["percent"] for r in phases.values()) == pytest.approx(100.0, abs=0.1)
    assert profiled["notes"] == []


def test_the_kernels_table_ranks_the_costliest(profiled):
    top = profiled["top_kernels"]
    assert len(top) == 5
    assert all(r["calls_per_update"] > 0 and r["us_per_update"] > 0 for r in top)
    assert [r["us_per_update"] for r in top] == sorted((r["us_per_update"] for r in top), reverse=True)
    assert sum(r["percent"] for r in top) <= 100.0 + 1e-6


def test_innermost_range():
    at = _innermost([(0, 10, OTHER), (1, 4, "critic/loss"), (2, 3, "critic/next_action"), (5, 9, "actor/loss")])
    assert [at(t) for t in (0.5, 1, 2.5, 3.5, 4.5, 6, 9.5, 10, -1)] == [
        OTHER, "critic/loss", "critic/next_action", "critic/loss", OTHER, "actor/loss", OTHER, None, None]


def test_cli_writes_the_tables(tmp_path, capsys):
    sets = [x for k, v in SMALL.items() for x in ("--set", f"{k}={v}")]
    out = tmp_path / "prof" / "radac"
    assert main(["profile", "--device", "cpu", "--batch-size", "8", "--warmup", "1", "--steps", "1",
                 "--table-steps", "1", "--top", "3", "--out", str(out), *sets]) == 0
    printed = capsys.readouterr().out
    assert "| critic/backward |" in printed and "Costliest kernels" in printed
    saved = json.loads(out.with_suffix(".json").read_text())
    assert {"phases", "top_kernels", "window", "notes", "provenance"} <= set(saved)
    assert len(saved["top_kernels"]) == 3
    assert out.with_suffix(".md").read_text().startswith("# ramac profile on ")


def test_graph_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        run_profile(batch=8, warmup=0, steps=0, device="cpu", graph=True, overrides=SMALL)
