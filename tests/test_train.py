"""Training loop reliability: resume, atomic files, run directories (bad input: test_bad_input.py)."""

import errno
import json
import os
import stat
import subprocess
import sys

import pytest
import torch

from ramac.agents.radac import RADAC
from ramac.config import build_configs
from ramac.train import RunDirError, load_agent, read_metrics, resume, train
from ramac.train.rundir import open_run_dir
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
    assert (result.run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"  # the learning curves


def test_curves_draw_what_the_rows_hold():
    from ramac.train.curves import curves_png

    assert curves_png([]) is None
    rows = [{"kind": "train", "step": s, "critic/loss1": 1.0 / s, "actor/bc": 0.5} for s in (10, 20)]
    rows.append({"kind": "eval", "step": 20, "reward/mean": 2.0, "reward/cvar_0.1": -1.0, "share/best_tail": 0.9})
    png = curves_png(rows, title="t")
    assert png[:4] == b"\x89PNG" and len(png) > 10_000


def test_atomic_write_gives_the_usual_mode_and_leaves_no_temporary(tmp_path, monkeypatch):
    modes, old = [], os.umask(0o027)
    try:
        for umask in (0o027, 0o002):
            os.umask(umask)
            atomic_write_bytes(tmp_path / "new.bin", b"y")
            modes.append(stat.S_IMODE(os.stat(tmp_path / "new.bin").st_mode))
    finally:
        os.umask(old)
    assert modes == [0o640, 0o664]  # 0o666 less the umask, as open() gives (mkstemp alone gives 0o600)

    def killed(fd):
        raise KeyboardInterrupt  # ^C between writing and renaming
    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "new.bin", b"z")
    assert sorted(os.listdir(tmp_path)) == ["new.bin"] and (tmp_path / "new.bin").read_bytes() == b"y"


def test_atomic_write_removes_the_temporaries_of_killed_writers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".f.bin.{dead.pid}-abc.tmp"  # what a writer killed mid-write leaves
    live = tmp_path / f".f.bin.{os.getppid()}-abc.tmp"  # a writer still at work (here: our parent)
    other = tmp_path / f".g.bin.{dead.pid}-abc.tmp"  # another file's
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    atomic_write_bytes(tmp_path / "f.bin", b"data")
    assert sorted(os.listdir(tmp_path)) == sorted(["f.bin", live.name, other.name])


def test_a_run_holds_its_directory_for_its_life(tmp_path, monkeypatch):
    agent_cfg, train_cfg = tiny(steps=2)
    original, refused = RADAC.update, []

    def update(self, batch):
        with pytest.raises(RunDirError, match="in use by another ramac run") as e:
            open_run_dir(tmp_path / "r")
        refused.append(str(e.value))
        return original(self, batch)

    monkeypatch.setattr(RADAC, "update", update)
    train(agent_cfg, train_cfg, tmp_path / "r", progress=False)
    assert len(refused) == 2
    open_run_dir(tmp_path / "r").close()  # released at the end


def test_a_fresh_run_starts_over_the_records_of_one_that_died_before_its_first_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "r"
    run.mkdir()
    for name, text in (("metrics.jsonl", json.dumps({"kind": "eval", "step": 999}) + "\n"), ("eval.json", "{}"),
                       ("train.csv", "kind,step\ntrain,999\n"), ("eval.csv", "kind,step\neval,999\n")):
        (run / name).write_text(text)
    agent_cfg, train_cfg = tiny(steps=20)

    def crash(self, batch):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # the new run dies at once too: the old records are gone all the same
        m.setattr(RADAC, "update", crash)
        with pytest.raises(KeyboardInterrupt):
            train(agent_cfg, train_cfg, run, progress=False)
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.json"]
    train(agent_cfg, train_cfg, run, progress=False)
    assert [r["step"] for r in read_metrics(run)] == [10, 20, 20]


def test_the_checkpoint_is_written_before_the_evaluation_that_falls_due_with_it(tmp_path, monkeypatch):
    from ramac.train.loop import Trainer

    agent_cfg, train_cfg = tiny(steps=40)
    evaluate = Trainer.evaluate

    def failing_at_20(self):
        if self.step == 20:
            raise RuntimeError("evaluation failed")
        return evaluate(self)

    monkeypatch.setattr(Trainer, "evaluate", failing_at_20)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        train(agent_cfg, train_cfg, tmp_path / "r", progress=False)
    assert torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)["step"] == 20
    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    resume(tmp_path / "r", progress=False)  # evaluates step 20 first, then goes on
    assert [r["step"] for r in read_metrics(tmp_path / "r") if r["kind"] == "eval"] == [20, 40]


def test_a_full_disk_at_a_checkpoint_names_the_file_and_keeps_the_last_one(tmp_path, monkeypatch):
    agent_cfg, train_cfg = tiny(steps=40)
    train(agent_cfg, train_cfg, tmp_path / "r", progress=False)
    kept = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    fsync = os.fsync

    def full_for_checkpoints(fd):
        if "checkpoint.pt" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_for_checkpoints)
    with pytest.raises(RunDirError, match=r"could not write .*r/checkpoint.pt: No space left on device; the last good "
                                          r"checkpoint \(step 40\) is kept at .*r/checkpoint.pt"):
        resume(tmp_path / "r", steps=60, progress=False)
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == kept
    assert not [p for p in os.listdir(tmp_path / "r") if p.endswith(".tmp")]


def test_metrics_are_appended_and_a_failed_append_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    from ramac.train.rundir import METRICS, MetricsLog

    log = MetricsLog(tmp_path)
    log.reset([])
    log.append({"kind": "train", "step": 1, "a": 1.0})
    first, inode = (tmp_path / METRICS).read_bytes(), os.stat(tmp_path / METRICS).st_ino
    log.append({"kind": "train", "step": 2, "a": 2.0})
    assert (tmp_path / METRICS).read_bytes().startswith(first)
    assert os.stat(tmp_path / METRICS).st_ino == inode  # appended in place, not rewritten
    assert (tmp_path / "train.csv").read_text().splitlines() == ["kind,step,a", "train,1,1.0", "train,2,2.0"]
    log.append({"kind": "train", "step": 3, "a": 3.0, "b": 0.5})  # a new column: the CSV gets it
    assert (tmp_path / "train.csv").read_text().splitlines()[0] == "kind,step,a,b"
    assert (tmp_path / "train.csv").read_text().splitlines()[1] == "train,1,1.0,"
    log.append({"kind": "eval", "step": 3, "r": 1.0})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="metrics.jsonl"):
        log.append({"kind": "train", "step": 4, "a": 4.0})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()
    again = MetricsLog(tmp_path)
    again.load(log.rows)
    again.append({"kind": "train", "step": 4, "a": 4.0, "b": 1.0})
    assert (tmp_path / "train.csv").read_text().splitlines()[-1] == "train,4,4.0,1.0"


def test_provenance_records_the_ramac_switches_and_whether_the_tree_differs(monkeypatch, tmp_path):
    """Every RAMAC_* switch in force (the seeds' layout, kernel choices) and whether tracked files
    differ from the recorded commit: a copied work tree can carry an older .git."""
    from ramac import utils

    monkeypatch.setenv("RAMAC_STACK_SEEDS", "1")
    monkeypatch.delenv("RAMAC_FUSED_CHAIN_STACKED", raising=False)
    info = utils.provenance(torch.device("cpu"))
    assert info["env"].get("RAMAC_STACK_SEEDS") == "1" and "RAMAC_FUSED_CHAIN_STACKED" not in info["env"]
    assert all(k.startswith("RAMAC_") for k in info["env"])
    if info["git_commit"]:  # a checkout: its source clean or not, as git says (results do not count)
        root = os.path.dirname(os.path.dirname(utils.__file__))
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *utils.SOURCE_PATHS],
                             capture_output=True, text=True, cwd=root).stdout
        assert info["git_dirty"] == bool(out.strip())


def test_provenance_of_an_installed_copy_comes_from_the_environment(monkeypatch):
    """An installed copy (no checkout: bench/studies/gpu_sweep_detached.sh) records the commit and
    dirty flag its launcher read from the checkout; a checkout's own git answers first."""
    from ramac import utils

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(utils.subprocess, "run", no_git)
    monkeypatch.setenv("RAMAC_GIT_COMMIT", "abc123")
    monkeypatch.setenv("RAMAC_GIT_DIRTY", "1")
    info = utils.provenance(torch.device("cpu"))
    assert (info["git_commit"], info["git_dirty"]) == ("abc123", True)
    monkeypatch.delenv("RAMAC_GIT_COMMIT")
    monkeypatch.delenv("RAMAC_GIT_DIRTY")
    info = utils.provenance(torch.device("cpu"))
    assert (info["git_commit"], info["git_dirty"]) == (None, None)
