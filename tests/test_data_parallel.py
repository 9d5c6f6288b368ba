"""Data-parallel training (ramac.train.distributed) with 2 gloo processes on the CPU, launched by
torchrun as a user would: the processes keep identical weights (checked at every checkpoint by
the trainer itself) and compute what one process computes on the combined batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ramac.data.container import synthetic_dataset
from ramac.train.distributed import Shard, local_batch

TINY = ["--set", "actor_hidden=16", "--set", "critic_hidden=16", "--set", "embedding_dim=8", "--set",
        "n_quantiles=4", "--set", "n_risk_quantiles=4", "--set", "eta_warmup_steps=10", "--set", "n_timesteps=3"]


def ramac_train(args, nproc=1, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                 "-m", "ramac"] if nproc > 1 else [sys.executable, "-m", "ramac"])
    threads = [] if "--resume" in args else ["--threads", "1"]  # (OMP_NUM_THREADS holds it on a resume)
    out = subprocess.run([*launcher, "train", *args, "--device", "cpu", *threads, "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["agent"]["model"]


def assert_same_weights(a, b, tol=2e-4):
    want, got = weights(a), weights(b)
    for k in want:
        torch.testing.assert_close(got[k].float(), want[k].float(), atol=tol, rtol=tol, msg=k)


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory):
    """A data set with non-terminal transitions (so the TD target samples next actions) and no env."""
    path = tmp_path_factory.mktemp("data") / "synthetic.npz"
    synthetic_dataset(5, 2, 512, terminal_rate=0.1).save_npz(path)
    return ["--task", "halfcheetah-medium-expert", "--algo", "radac", "--dataset", str(path), *TINY]


def test_two_processes_compute_one_process_on_the_combined_batch(tmp_path, bootstrapped):
    """RADAC across its warm-up and risk phases, with bootstrapped TD targets: 2 x 32 = 1 x 64.
    Without the gradient all-reduce the processes part and the trainer stops at its first
    checkpoint (tried)."""
    common = [*bootstrapped, "--steps", "30", "--batch-size", "64", "--ckpt-every", "10", "--log-every", "10"]
    ramac_train([*common, "--data-parallel", "--run-dir", str(tmp_path / "two")], nproc=2)
    ramac_train([*common, "--run-dir", str(tmp_path / "one")])
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # one writer: process 0
    # the logged losses are the global batch's (the mean over both slices), not process 0's slice
    logged = {name: [r for r in map(json.loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines())
                     if r["kind"] == "train"] for name in ("one", "two")}
    assert [r["step"] for r in logged["one"]] == [r["step"] for r in logged["two"]] == [10, 20, 30]
    for one, two in zip(logged["one"], logged["two"]):
        for key in ("critic/loss1", "critic/loss2", "actor/bc", "critic/z_mean"):
            assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), (one["step"], key)


def test_a_data_parallel_run_resumes_on_another_number_of_processes(tmp_path):  # ~35 s of torchrun
    """The bandit: 20 steps on 2 processes, on to 40 in one process, on to 60 on 2 processes again
    (the other process reads the checkpoint while process 0 holds the run directory's lock) = 60
    steps in one process."""
    common = ["--steps", "20", "--batch-size", "32", "--ckpt-every", "10", "--eval-every", "20",
              "--eval-samples", "100"]
    ramac_train([*common, "--data-parallel", "--run-dir", str(tmp_path / "moved")], nproc=2)
    ramac_train(["--resume", str(tmp_path / "moved"), "--steps", "40"])
    ramac_train(["--resume", str(tmp_path / "moved"), "--steps", "60", "--data-parallel"], nproc=2)
    ramac_train([*common[2:], "--steps", "60", "--run-dir", str(tmp_path / "one")])
    assert_same_weights(tmp_path / "one", tmp_path / "moved")


@pytest.mark.parametrize("args, message", [
    (["--data-parallel", "--run-dir", "R"], "runs under torchrun"),
    (["--data-parallel"], "needs --run-dir"),
    (["--data-parallel", "--seeds", "0-1", "--run-dir", "R"], "one of them"),
    (["--data-parallel", "--resume", "SEEDS"], "holds seeds side by side"),
])
def test_bad_data_parallel_requests_get_one_line(args, message, tmp_path):
    seeds = tmp_path / "seeds"  # a `ramac train --seeds` directory (each process would train every seed)
    for n in (0, 1):
        (seeds / f"seed{n}").mkdir(parents=True)
        (seeds / f"seed{n}" / "checkpoint.pt").write_bytes(b"")
    stamps = {p: p.stat().st_mtime_ns for p in seeds.rglob("*")}
    out = ramac_train([{"R": str(tmp_path / "r"), "SEEDS": str(seeds)}.get(a, a) for a in args], check=False)
    assert out.returncode != 0 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() and stamps == {p: p.stat().st_mtime_ns for p in seeds.rglob("*")}


def test_a_global_batch_that_does_not_split_is_refused():
    with pytest.raises(ValueError, match="does not split into 2"):
        local_batch(33, Shard(rank=1, world=2))
    assert local_batch(32, Shard(rank=1, world=2)) == 16
