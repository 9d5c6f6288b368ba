"""--tensorboard: the event files hold the metrics rows, once each, also across an interruption."""

import sys

import pytest

from ramac.agents.radac import RADAC
from ramac.train import read_metrics, resume, train

from test_train import tiny


def events(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_match_the_metrics_rows_across_a_resume(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    agent_cfg, train_cfg = tiny(tensorboard=True)
    original = RADAC.update

    def crash_at_37(self, batch):  # after the rows of step 30, before the checkpoint of step 40
        if self.steps == 37:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(RADAC, "update", crash_at_37)
    with pytest.raises(KeyboardInterrupt):
        train(agent_cfg, train_cfg, tmp_path / "r", progress=False)
    monkeypatch.setattr(RADAC, "update", original)
    assert [s for s, _ in events(tmp_path / "r")["critic/loss1"]] == [10, 20, 30]
    resume(tmp_path / "r", progress=False)

    got, rows = events(tmp_path / "r"), read_metrics(tmp_path / "r")
    for kind, prefix in (("train", ""), ("eval", "eval/")):
        want = [r for r in rows if r["kind"] == kind]
        assert want
        for key in ("critic/loss1", "actor/bc") if kind == "train" else ("reward/mean", "share/S"):
            # the step-30 event of the interrupted run was purged and written again: one per row
            assert [s for s, _ in got[prefix + key]] == [r["step"] for r in want], key
            assert [v for _, v in got[prefix + key]] == pytest.approx([r[key] for r in want], rel=1e-6), key


def test_tensorboard_is_off_by_default(tmp_path):
    agent_cfg, train_cfg = tiny(steps=10)
    train(agent_cfg, train_cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "tensorboard").exists()


def test_tensorboard_without_the_package_is_one_clear_error_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    agent_cfg, train_cfg = tiny(tensorboard=True)
    with pytest.raises(ValueError, match=r"--tensorboard needs the tensorboard package: pip install"):
        train(agent_cfg, train_cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()
