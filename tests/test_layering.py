"""Layering rules of the package, read from the source with ast (module-level imports only:
imports inside functions are how command modules defer their heavy dependencies)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"ramac.cli", "ramac.perf", "ramac.perf.bench", "ramac.perf.profile", "ramac.study",
            "ramac.study_agents", "ramac.sweep", "ramac.__main__"}
DATAGEN_PACKAGE = "ramac.datagen"  # SAC and the behaviour policies: data-set building only


def _modules() -> dict[str, Path]:
    """Module name -> file, with kernels/ installed as ramac.kernels."""
    out = {}
    for base, prefix in ((ROOT / "ramac", "ramac"), (ROOT / "kernels", "ramac.kernels")):
        for f in base.rglob("*.py"):
            parts = f.relative_to(base).with_suffix("").parts
            name = ".".join((prefix,) + parts)
            out[name.removesuffix(".__init__")] = f
    return out


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """Module -> the ramac modules it imports at module level."""
    modules = modules if modules is not None else _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:  # a name imported from a module counts as the module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def closure(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def cycles(graph) -> list[list[str]]:
    found, state = [], {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def violations(graph) -> list[str]:
    out = []
    for mod, deps in sorted(graph.items()):
        if mod.startswith("ramac.kernels"):
            out += [f"{mod} imports {d}: kernels/ never imports ramac" for d in deps if not d.startswith("ramac.kernels")]
        if mod == "ramac.data" or mod.startswith("ramac.data."):  # loading data sets is on the training path
            out += [f"{mod} imports {d} (data-set building)" for d in deps
                    if d == DATAGEN_PACKAGE or d.startswith(DATAGEN_PACKAGE + ".")]
        if mod.startswith(("ramac.envs", "ramac.data")):
            out += [f"{mod} imports {d}: envs and the data container never import agents"
                    for d in deps if d.startswith("ramac.agents")]
        if mod.startswith("ramac.agents"):
            out += [f"{mod} imports {d}: agents reach kernels only through the public ops of ramac.kernels"
                    for d in deps if d.startswith("ramac.kernels.")]
        if mod.startswith("ramac.agents"):
            out += [f"{mod} imports {d}: agents never import the training loop or the updaters"
                    for d in deps if d == "ramac.train" or d.startswith("ramac.train.")]
        if mod not in COMMANDS:  # a command may build on another (study agents on study bandit)
            out += [f"{mod} imports the command module {d}" for d in deps if d in COMMANDS]
    for start in ("ramac.train", "ramac.train.loop"):
        out += [f"the training path reaches {d} (data-set building)" for d in sorted(closure(graph, start))
                if d == DATAGEN_PACKAGE or d.startswith(DATAGEN_PACKAGE + ".")]
    out += ["import cycle: " + " -> ".join(c) for c in cycles(graph)]
    return out


def test_the_package_keeps_its_layering_rules():
    assert violations(import_graph()) == []


@pytest.mark.parametrize("module, line, rule", [
    ("ramac.kernels.risk", "from ramac.utils import seeded", "kernels/ never imports ramac"),
    ("ramac.envs.bandit", "from ..agents.radac import RADAC", "never import agents"),
    ("ramac.data.container", "from ..agents import make_agent", "never import agents"),
    ("ramac.agents.radac", "from ..kernels.risk import tail_mean_ref", "only through the public ops"),
    ("ramac.agents.base", "from ..train import loop", "never import the training loop"),
    ("ramac.train.loop", "from ..perf.bench import bench_train", "command module"),
    ("ramac.train.tasks", "from ..datagen import behaviour", "data-set building"),
    ("ramac.data.stochastic_mujoco", "from ..datagen.sac import SAC", "data-set building"),
    ("ramac.nvtx", "from .train.updaters import make_updater", "import cycle"),
])
def test_each_rule_catches_a_break(tmp_path, module, line, rule):
    """Copy the sources, add one offending import, and the rule must report it."""
    modules = _modules()
    broken = tmp_path / "broken.py"
    broken.write_text(modules[module].read_text() + "\n" + line + "\n")
    modules[module] = broken  # relative imports resolve against the module's name, as in the real file
    found = violations(import_graph(modules))
    assert any(rule in v for v in found), found


def test_every_package_is_installed():
    """pyproject lists packages by name: one left out is missing from a non-editable install."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ramac").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert "ramac.kernels" in listed
