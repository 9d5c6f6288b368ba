"""Stochastic MuJoCo data sets in Minari format, built locally from the shipped behaviour policies.

medium-expert: half the transitions from the medium policy, half from the expert
(D4RL's construction), rolled out in the preset's risky environment.
medium-replay: what a learner's replay buffer held on its way to medium level:
the SAC snapshots saved every `replay_every` steps up to the medium policy each
contribute an equal share of the transitions, in training order, rolled out in
the risky environment (so the hazard and its penalties are in the data, which a
replay buffer of the plain task would not have).

Actions are the policies' sampled (stochastic) actions. Every step stores obs,
action, reward (penalty included), termination, truncation, and in `infos` the
risky flag and the penalty. Same preset, size and seed give the same data set.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from ..envs.mujoco import D4RL_REF, HAZARDS, env_spec, make_risky_env
from ..utils import atomic_write_json, progress_bar

VERSION = "v0"
D4RL_SIZES = {
    "halfcheetah-medium-expert": 2_000_000, "hopper-medium-expert": 1_999_906, "walker2d-medium-expert": 1_999_995,
    "halfcheetah-medium-replay": 202_000, "hopper-medium-replay": 402_000, "walker2d-medium-replay": 302_000,
}
PROVENANCE = "ramac-provenance.json"


def dataset_id(preset: str) -> str:
    return f"ramac/{preset}-{VERSION}"


def datasets_root() -> Path:
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


def dataset_dir(preset: str) -> Path:
    return datasets_root() / dataset_id(preset)


def exists(preset: str) -> bool:
    return (dataset_dir(preset) / "data").exists()


def rollout(actor, preset: str, n_steps: int, seed: int, num_envs: int = 8, bar=None) -> list:
    """Episodes (Minari EpisodeBuffers) totalling exactly n_steps transitions of `actor` in the risky env.

    Gymnasium's vector env resets a finished sub-environment on its next step
    (returning the new first observation); that step is not a transition.
    """
    from minari.data_collector import EpisodeBuffer

    envs = gym.vector.SyncVectorEnv([lambda: make_risky_env(preset) for _ in range(num_envs)])
    gen = torch.Generator().manual_seed(seed)
    obs, _ = envs.reset(seed=seed)
    open_eps = [_new_episode(obs[i]) for i in range(num_envs)]
    resetting = np.zeros(num_envs, bool)  # the next step of this env is gymnasium's autoreset
    done_eps, total = [], 0
    try:
        while total < n_steps:
            with torch.no_grad():  # the policy's sampled action, its noise from `gen` (reproducible)
                act = actor(torch.as_tensor(obs, dtype=torch.float32), generator=gen)[0].numpy()
            obs, r, term, trunc, info = envs.step(act)
            for i in range(num_envs):
                if resetting[i]:  # autoreset step: obs is the first of a new episode
                    open_eps[i] = _new_episode(obs[i])
                    resetting[i] = False
                    continue
                if total >= n_steps:
                    continue
                ep = open_eps[i]
                ep["actions"].append(act[i])
                ep["observations"].append(obs[i])
                ep["rewards"].append(float(r[i]))
                ep["terminations"].append(bool(term[i]))
                ep["truncations"].append(bool(trunc[i]))
                ep["risky"].append(bool(info["risky"][i]))
                ep["penalty"].append(float(info["penalty"][i]))
                total += 1
                if bar is not None:
                    bar.update(1)
                if term[i] or trunc[i]:
                    done_eps.append(ep)
                    resetting[i] = True
    finally:
        envs.close()
    for ep in open_eps:  # episodes cut by the size limit end truncated
        if ep["actions"]:
            ep["truncations"][-1] = True
            done_eps.append(ep)
    return [EpisodeBuffer(
        observations=np.asarray(ep["observations"], np.float32), actions=np.asarray(ep["actions"], np.float32),
        rewards=ep["rewards"], terminations=ep["terminations"], truncations=ep["truncations"],
        infos={"risky": np.asarray([False] + ep["risky"]), "penalty": np.asarray([0.0] + ep["penalty"])},
    ) for ep in done_eps]


def _new_episode(first_obs):
    return {"observations": [first_obs], "actions": [], "rewards": [], "terminations": [], "truncations": [],
            "risky": [], "penalty": []}


def sources(preset: str, size: int) -> list[tuple[str, int]]:
    """(policy name, transitions) per behaviour policy of a preset (behaviour.load(base, name))."""
    from ..datagen import behaviour  # building only: loading a data set never imports SAC

    if preset.endswith("medium-expert"):
        return [("medium", size // 2), ("expert", size - size // 2)]
    snaps = behaviour.replay_snapshots(HAZARDS[preset].base_env)
    return [(p.name, n) for p, n in zip(snaps, _split(size, len(snaps))) if n > 0]


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def pieces(preset: str, size: int, seed: int, workers: int) -> list[tuple[int, str, int, int]]:
    """(source index, policy, transitions, rollout seed) of each piece: every source split into
    `workers` pieces rolled out apart. Piece 0 of source k has seed seed * 1000 + k (so one worker
    gives the data set a single rollout per source gives); piece j adds j * 1_000_003."""
    return [(k, name, part, seed * 1_000 + k + j * 1_000_003)
            for k, (name, n) in enumerate(sources(preset, size))
            for j, part in enumerate(_split(n, workers)) if part > 0]


def _rollout_piece(preset: str, policy: str, n: int, seed: int, num_envs: int) -> list:
    """One piece in a worker process (one torch thread): the policy loaded there."""
    from ..datagen import behaviour

    torch.set_num_threads(1)
    return rollout(behaviour.load(HAZARDS[preset].base_env, policy), preset, n, seed, num_envs)


def make(preset: str, size: int | None = None, seed: int = 0, num_envs: int = 8, progress: bool = True,
         overwrite: bool = False, workers: int = 1) -> dict:
    """Build (and store with Minari) the data set of a preset; returns its provenance record.
    workers > 1: each behaviour policy's share is split into that many pieces rolled out in as
    many processes (`pieces`); the data set depends on workers (recorded), not on timing."""
    from ..datagen import behaviour

    import minari

    if preset not in HAZARDS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(HAZARDS)}")
    size = size or D4RL_SIZES[preset]
    if size < 1:
        raise ValueError(f"--size must be positive, got {size}")
    if workers < 1:
        raise ValueError(f"--workers must be positive, got {workers}")
    did = dataset_id(preset)
    if exists(preset):
        if not overwrite:
            raise FileExistsError(f"data set {did} already exists in {datasets_root()}; pass --overwrite to rebuild")
        minari.delete_dataset(did)
    hazard = HAZARDS[preset]
    t0 = time.perf_counter()
    todo = pieces(preset, size, seed, workers)
    bar = progress_bar(total=size, disable=not progress, desc=f"data {preset}", unit="step")
    if workers == 1:
        results = [rollout(behaviour.load(hazard.base_env, name), preset, n, s, num_envs, bar=bar)
                   for _, name, n, s in todo]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_rollout_piece, preset, name, n, s, num_envs) for _, name, n, s in todo]
            results = []
            for f, (_, _, n, _) in zip(futures, todo):  # in piece order: the data set does not depend on timing
                results.append(f.result())
                bar.update(n)
    bar.close()
    episodes, parts = [], []
    for k, (name, n) in enumerate(sources(preset, size)):
        eps = [e for (src, *_), piece in zip(todo, results) if src == k for e in piece]
        episodes += eps
        parts.append({"policy": name, "transitions": n, "episodes": len(eps)})
    base_dir = behaviour.policy_dir(hazard.base_env)
    prov_policies = json.loads((base_dir / "provenance.json").read_text()) if (base_dir / "provenance.json").exists() else {}
    record = {
        "dataset_id": did, "preset": preset, "size": size, "seed": seed, "workers": workers,
        "num_envs": num_envs, "hazard": hazard.__dict__,
        "parts": parts, "policy_hashes": {f: behaviour.file_hash(p) for f, p in _policy_files(base_dir)},
        "behaviour_provenance": {k: prov_policies.get(k) for k in ("expert", "medium")},
        "mujoco": _version("mujoco"), "gymnasium": gym.__version__, "minari": _version("minari"),
        "build_seconds": None,
    }
    lo, hi = D4RL_REF[hazard.base_env]
    minari.create_dataset_from_buffers(
        did, episodes, env=env_spec(preset), eval_env=env_spec(preset), algorithm_name="ramac SAC behaviour policies",
        author="ramac", author_email="none@ramac.local", code_permalink="https://ramac.invalid",
        ref_min_score=lo, ref_max_score=hi, description=json.dumps(record), data_format="hdf5",
    )
    record["build_seconds"] = time.perf_counter() - t0
    atomic_write_json(dataset_dir(preset) / PROVENANCE, record)
    return record


def _policy_files(base_dir: Path):
    for p in sorted(base_dir.rglob("*.pt")):
        yield str(p.relative_to(base_dir)), p


def _version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def info(preset: str) -> dict:
    if not exists(preset):
        raise FileNotFoundError(missing_message(preset))
    path = dataset_dir(preset) / PROVENANCE
    return json.loads(path.read_text()) if path.exists() else {"dataset_id": dataset_id(preset)}


def list_local() -> list[str]:
    root = datasets_root() / "ramac"
    return sorted(p.name for p in root.iterdir() if (p / "data").exists()) if root.exists() else []


def missing_message(preset: str) -> str:
    return (f"no local data set {dataset_id(preset)} (looked in {datasets_root()}); build it with:\n"
            f"    ramac data make {preset}")


def load(preset: str):
    """The preset's data set as an OfflineDataset (with its provenance as meta)."""
    from .container import OfflineDataset

    if not exists(preset):
        raise FileNotFoundError(missing_message(preset))
    data = OfflineDataset.from_minari(dataset_id(preset))
    data.meta.update(info(preset))
    return data
