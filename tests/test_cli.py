"""Command line: help, argument errors, clear messages."""

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


@pytest.mark.parametrize("argv", [
    ["train", "--algo", "sac"],
    ["train", "--task", "pong"],
    ["train", "--steps", "ten"],
    ["frobnicate"],
    [],
])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["train", "--set", "eta=-1", "--device", "cpu"], "eta must be >= 0"),
    (["train", "--set", "eta", "--device", "cpu"], "KEY=VALUE"),
    (["train", "--steps", "0", "--device", "cpu"], "steps must be > 0"),
    (["train", "--device", "tpu"], "device"),
])
def test_bad_values_give_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_eval_of_a_non_run_directory(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err


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
