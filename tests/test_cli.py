"""Command line: help, the files `ramac eval` writes, light imports (bad input: test_bad_input.py)."""

import pytest

from ramac.cli import build_parser, main


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    for action in train._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 15, action.dest
            assert action.option_strings[-1] in out


def test_eval_writes_its_own_figure_beside_the_runs(tmp_path, capsys):
    """`ramac eval` leaves the training run's bandit.png as it is and writes bandit-eval.png."""
    from ramac.config import build_configs
    from ramac.train import train

    agent_cfg, train_cfg = build_configs("bandit", "radac", cpu_sized=True, agent_overrides=dict(
        actor_hidden=16, critic_hidden=16, embedding_dim=8, n_quantiles=4, n_risk_quantiles=4, n_timesteps=3),
        train_overrides=dict(steps=2, eval_samples=50, device="cpu"))
    run = train(agent_cfg, train_cfg, tmp_path / "run", progress=False).run_dir
    figure = (run / "bandit.png").read_bytes()
    assert main(["eval", str(run), "--samples", "50", "--device", "cpu"]) == 0
    assert "wrote eval-again.json, bandit-eval.png" in capsys.readouterr().out
    assert (run / "bandit.png").read_bytes() == figure
    assert (run / "bandit-eval.png").stat().st_size > 0 and (run / "eval-again.json").exists()
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_presets_command(capsys):
    assert main(["presets"]) == 0
    assert "halfcheetah-medium-expert" in capsys.readouterr().out
    assert main(["presets", "bandit", "--algo", "neutral"]) == 0
    assert '"risk": "neutral"' in capsys.readouterr().out


def test_building_the_cli_imports_no_heavy_package():
    """`ramac --help` stays instant: neither `import ramac` nor building the parser imports torch,
    torch._dynamo, gymnasium, mujoco or minari (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys, ramac, ramac.cli; ramac.cli.build_parser(); "
            "print(','.join(m for m in ('torch', 'torch._dynamo', 'gymnasium', 'mujoco', 'minari') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported while building the CLI: {out}"


def test_every_subcommand_has_help(capsys):
    import pytest

    from ramac.cli import build_parser
    from ramac.config import preset_names
    from ramac.envs.mujoco import HAZARDS

    assert sorted(HAZARDS) == [n for n in preset_names() if n != "bandit"]  # the CLI lists these without gymnasium
    for argv in (["--help"], ["train", "--help"], ["eval", "--help"], ["study", "bandit", "--help"],
                 ["data", "make", "--help"], ["bench", "--help"], ["profile", "--help"], ["presets", "--help"]):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(argv)
        assert e.value.code == 0
        assert "usage: ramac" in capsys.readouterr().out
