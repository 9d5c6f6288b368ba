"""Training loop reliability: resume, non-finite losses, atomic files, run directories."""

import json
import os

import pytest
import torch

from ramac.agents.radac import RADAC
from ramac.config import build_configs
from ramac.train import NonFiniteLossError, RunDirError, load_agent, read_metrics, resume, train
from ramac.utils import atomic_write_bytes

TINY = dict(actor_hidden=16, critic_hidden=16, embedding_dim=8, n_quantiles=4, n_risk_quantiles=4,
            n_timesteps=3, eta_warmup_steps=10, ema_start=5, ema_every=2)


def tiny(steps=40, **train_over):
    return build_configs("bandit", "radac", cpu_sized=True, agent_overrides=TINY,
                         train_overrides=dict(steps=steps, eval_every=20, log_every=10, ckpt_every=20,
                                              eval_samples=200, device="cpu", **train_over))


def params(agent):
    return {k: v.clone() for k, v in agent.state_dict().items()}


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, monkeypatch):
    agent_cfg, train_cfg = tiny()
    straight = train(agent_cfg, train_cfg, tmp_path / "straight", progress=False)

    original = RADAC.update

    def crash_at_27(self, batch):
        if self.steps == 27:
            raise KeyboardInterrupt  # the user pressed ^C (or the machine went away)
        return original(self, batch)

    monkeypatch.setattr(RADAC, "update", crash_at_27)
    with pytest.raises(KeyboardInterrupt):
        train(agent_cfg, train_cfg, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(RADAC, "update", original)
    assert json.loads(json.dumps(torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"])) == 20

    resumed = resume(tmp_path / "resumed", progress=False)
    assert resumed.steps == 40
    a, _, _ = load_agent(straight.run_dir, "cpu")
    b, _, _ = load_agent(resumed.run_dir, "cpu")
    pa, pb = params(a), params(b)
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    steps = [r["step"] for r in read_metrics(resumed.run_dir) if r["kind"] == "train"]
    assert steps == [10, 20, 30, 40]  # rows written after the last checkpoint were dropped, not duplicated
    assert straight.final_eval["share/S"] == resumed.final_eval["share/S"]


def test_resume_can_extend_a_finished_run(tmp_path):
    agent_cfg, train_cfg = tiny(steps=20)
    train(agent_cfg, train_cfg, tmp_path / "r", progress=False)
    assert resume(tmp_path / "r", steps=30, progress=False).steps == 30


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    agent_cfg, train_cfg = tiny()
    original = RADAC.critic_loss

    def poisoned(self, b):
        loss1, loss2, info = original(self, b)
        if self.steps >= 25:
            loss1 = loss1 * float("nan")
        return loss1, loss2, info

    monkeypatch.setattr(RADAC, "critic_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 26.*step 20"):
        train(agent_cfg, train_cfg, tmp_path / "nan", progress=False)
    ckpt = torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 20
    assert all(torch.isfinite(v).all() for v in ckpt["agent"]["model"].values())


def test_refuses_to_overwrite_a_run(tmp_path):
    agent_cfg, train_cfg = tiny(steps=10)
    train(agent_cfg, train_cfg, tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with pytest.raises(RunDirError, match="already holds a run"):
        train(agent_cfg, train_cfg, tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before
    with pytest.raises(RunDirError, match="nothing to resume"):
        resume(tmp_path / "empty")


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]  # no temp file left behind


def test_run_directory_contents(tmp_path):
    agent_cfg, train_cfg = tiny(steps=20)
    result = train(agent_cfg, train_cfg, tmp_path / "r", progress=False)
    cfg = json.loads((result.run_dir / "config.json").read_text())
    assert cfg["agent"]["actor_hidden"] == 16 and cfg["train"]["seed"] == 0
    assert cfg["provenance"]["torch"] == torch.__version__
    assert cfg["dataset"]["seed"] == 0
    rows = read_metrics(result.run_dir)
    assert {r["kind"] for r in rows} == {"train", "eval"}
    header = (result.run_dir / "train.csv").read_text().splitlines()[0]
    assert "critic/loss1" in header and "steps_per_s" in header
