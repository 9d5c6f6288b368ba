"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_python_example_runs_verbatim(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    match = re.search(r"<!-- python-api -->\n```python\n(.*?)```", text, re.S)
    assert match, "the README lost its Python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(match.group(1), "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "runs" / "my-run" / "checkpoint.pt").exists()
    printed = capsys.readouterr().out.split()
    assert len(printed) >= 2 and all(float(v) < 0 for v in printed[-2:])  # MountainCar's costs, no goal
