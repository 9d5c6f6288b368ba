"""A data set's recorded environment is its own preset's risky env (issue 13 item 4): Minari's
recover_environment() must rebuild the preset's hazard, not the registered id's default."""

import json

import gymnasium as gym
import pytest
import torch

from ramac.data import stochastic_mujoco as datasets
from ramac.datagen import behaviour
from ramac.datagen.sac import SAC, SACConfig, save_policy
from ramac.envs.mujoco import HAZARDS, HazardWrapper, env_spec


def hazard_of(env: gym.Env):
    while not isinstance(env, HazardWrapper):
        env = env.env
    return env.hazard


@pytest.mark.parametrize("preset", sorted(HAZARDS))
def test_the_stored_spec_rebuilds_the_presets_hazard(preset):
    env = gym.make(env_spec(preset))
    try:
        assert hazard_of(env) == HAZARDS[preset]
    finally:
        env.close()


def test_the_presets_differ_where_the_registered_default_would_hide_it():
    # the registered ids carry the medium-expert hazards; both Hopper presets differ from each other
    assert HAZARDS["hopper-medium-replay"] != HAZARDS["hopper-medium-expert"]
    assert HAZARDS["halfcheetah-medium-replay"] != HAZARDS["halfcheetah-medium-expert"]


def test_recover_environment_of_a_built_data_set(tmp_path, monkeypatch):
    import minari

    monkeypatch.setattr(behaviour, "ASSETS", tmp_path / "assets")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    d = behaviour.policy_dir("Hopper-v5")
    (d / "replay").mkdir(parents=True)
    for i, name in enumerate(["medium", "expert", "replay/step00001000"]):
        torch.manual_seed(i)
        save_policy(SAC(SACConfig(env_id="Hopper-v5", hidden=16)), d / f"{name}.pt", {"step": i})
    (d / "provenance.json").write_text(json.dumps({"expert": {"return_mean": 1.0}, "medium": {"return_mean": 0.5}}))
    datasets.make("hopper-medium-replay", size=60, num_envs=2, progress=False)
    data = minari.load_dataset(datasets.dataset_id("hopper-medium-replay"))
    for env in (data.recover_environment(), data.recover_environment(eval_env=True)):
        try:
            assert hazard_of(env) == HAZARDS["hopper-medium-replay"]
        finally:
            env.close()
