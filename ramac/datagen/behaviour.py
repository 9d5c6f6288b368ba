"""Shipped behaviour policies: where they live, how they were chosen, how to load them.

Layout (inside the package, `ramac/assets/behaviour/<env>/`):
    expert.pt, medium.pt          fp16 SAC actors
    replay/stepXXXXXXXX.pt        snapshots on the way to the medium policy (medium-replay data)
    provenance.json               command, seed, steps, evaluated returns, file hashes

`pick(run_dir, ...)` chooses them from a SAC run's snapshots: the expert is the
best-evaluated snapshot, the medium the latest snapshot whose return lies in
[1/3, 1/2] of the expert's (else the one closest to 40 %), and the replay series
all snapshots up to the medium one.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch

from .sac import evaluate_policy, history, load_policy
from ..utils import atomic_write_json

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "behaviour"


def policy_dir(base_env: str) -> Path:
    return ASSETS / base_env


def file_hash(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def available(base_env: str) -> bool:
    d = policy_dir(base_env)
    return (d / "expert.pt").exists() and (d / "medium.pt").exists()


def require(base_env: str) -> Path:
    d = policy_dir(base_env)
    if not available(base_env):
        raise FileNotFoundError(
            f"no shipped behaviour policies for {base_env} in {d}; train them with "
            f"`ramac behaviour train {base_env}` and install them with `ramac behaviour pick {base_env} RUN_DIR`"
        )
    return d


def load(base_env: str, which: str, device="cpu"):
    """'expert', 'medium', or a replay snapshot file name."""
    d = require(base_env)
    path = d / f"{which}.pt" if which in ("expert", "medium") else d / "replay" / which
    return load_policy(path, device)


def replay_snapshots(base_env: str) -> list[Path]:
    return sorted((require(base_env) / "replay").glob("step*.pt"))


def evaluate_file(path, base_env: str, episodes: int = 20, seed: int = 123) -> tuple[float, float]:
    """(mean, std) return of a snapshot's deterministic policy over full 1000-step episodes."""
    actor = load_policy(path)

    def act(obs):
        with torch.no_grad():
            return actor(torch.as_tensor(obs, dtype=torch.float32), deterministic=True)[0].numpy()

    rets = evaluate_policy(act, base_env, episodes, seed)
    return float(rets.mean()), float(rets.std())


def pick(run_dir, base_env: str, command: str, dest: Path | None = None, episodes: int = 20) -> dict:
    """Copy expert, medium and the replay series of a SAC run into the package assets.

    Training-time evaluations (10 episodes) are noisy, so candidates are
    re-evaluated over `episodes` episodes: the expert is the best re-evaluated of
    the three best-scoring snapshots; the medium is the latest earlier snapshot
    that is steady (std <= half the mean) and re-evaluates within [1/3, 1/2] of
    the expert's return (10 % slack), else the re-evaluated candidate closest to 40 %.
    """
    run_dir = Path(run_dir)
    hist = history(run_dir)
    if not hist:
        raise ValueError(f"{run_dir} has no evaluated snapshots yet")
    snap = lambda r: run_dir / "snapshots" / f"step{r['step']:08d}.pt"  # noqa: E731
    scores = {}

    def score(r):
        if r["step"] not in scores:
            scores[r["step"]] = evaluate_file(snap(r), base_env, episodes)
        return scores[r["step"]]

    top = sorted(hist, key=lambda r: r["return_mean"])[-3:]
    expert = max(top, key=lambda r: score(r)[0])
    e_ret = score(expert)[0]
    lo, hi = 0.9 * e_ret / 3, 1.1 * e_ret / 2
    steady = lambda m, sd: sd <= 0.5 * abs(m)  # noqa: E731
    cands = [r for r in hist if r["step"] < expert["step"] and lo <= r["return_mean"] <= hi
             and steady(r["return_mean"], r["return_std"])]
    medium = next((r for r in reversed(cands) if lo <= score(r)[0] <= hi and steady(*score(r))), None)
    if medium is None:
        pool = cands or sorted(hist[:hist.index(expert)], key=lambda r: abs(r["return_mean"] - 0.4 * e_ret))[:3]
        medium = min(pool, key=lambda r: abs(score(r)[0] - 0.4 * e_ret))
    dest = Path(dest) if dest else policy_dir(base_env)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "replay").mkdir(parents=True)
    shutil.copy(snap(expert), dest / "expert.pt")
    shutil.copy(snap(medium), dest / "medium.pt")
    replay = [r for r in hist if r["step"] <= medium["step"]]
    for r in replay:
        shutil.copy(snap(r), dest / "replay" / snap(r).name)
    run_cfg = (run_dir / "config.json").read_text() if (run_dir / "config.json").exists() else "{}"
    def entry(r, name):
        mean, std = score(r)
        return {"step": r["step"], "return_mean": mean, "return_std": std, "episodes": episodes,
                "return_at_training_eval": r["return_mean"], "sha256_16": file_hash(dest / f"{name}.pt")}

    record = {
        "env": base_env, "command": command, "sac_run_config": run_cfg,
        "expert": entry(expert, "expert"), "medium": entry(medium, "medium"),
        "replay": [{"step": r["step"], "return_mean": r["return_mean"], "file": snap(r).name} for r in replay],
        "replay_every": replay[1]["step"] - replay[0]["step"] if len(replay) > 1 else replay[0]["step"],
    }
    atomic_write_json(dest / "provenance.json", record)
    return record
