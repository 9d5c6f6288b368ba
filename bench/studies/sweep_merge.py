"""Bring a sweep stretch's results home: copy the run folders that a GPU stretch finished (trained and
evaluated again at the final step) from an unpacked sweep.tgz into the repository's sweep folder,
and merge its unit-times.json (the stretch's records win). Run folders already here are never
touched; a diverged run counts as finished (the sweep never trains it again); a folder the
stretch trained but did not evaluate again is copied only with --all (for a
next call that follows at once on the same warm machine, which still holds its checkpoint:
bench/studies/gpu_sweep.sh). Prints what it copied.

    python -m bench.studies.sweep_merge /tmp/gpu/call2/results/mujoco-reduced results/mujoco-reduced
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ramac.sweep import run_evaluated_again
from ramac.utils import atomic_write_json


def finished(run: Path) -> bool:
    """Whether a run folder is done as the sweep counts it (ramac.sweep.run_evaluated_again): its
    second evaluation at the step its training ended, or stopped on non-finite values."""
    config = run / "config.json"
    return config.exists() and run_evaluated_again(run, json.loads(config.read_text())["train"]["steps"])


def merge(src: Path, dst: Path, everything: bool = False) -> dict:
    """Copy src/runs/* not in dst/runs (finished ones, or all with everything) and merge
    unit-times.json; returns {"copied": [...], "skipped": [...], "times": number of keys updated}."""
    if not (src / "runs").is_dir():
        raise SystemExit(f"sweep_merge: {src} has no runs/ folder (point it at results/NAME inside sweep.tgz)")
    (dst / "runs").mkdir(parents=True, exist_ok=True)
    copied, skipped = [], []
    for run in sorted(p for p in (src / "runs").iterdir() if p.is_dir()):
        if (dst / "runs" / run.name).exists():
            continue
        if everything or finished(run):
            shutil.copytree(run, dst / "runs" / run.name, ignore=shutil.ignore_patterns("checkpoint*", "*.lock"))
            copied.append(run.name)
        else:
            skipped.append(run.name)
    changed = 0
    if (src / "unit-times.json").exists():
        theirs = json.loads((src / "unit-times.json").read_text())
        ours = json.loads((dst / "unit-times.json").read_text()) if (dst / "unit-times.json").exists() else {}
        changed = sum(ours.get(k) != v for k, v in theirs.items())
        atomic_write_json(dst / "unit-times.json", dict(sorted((ours | theirs).items())))
    return {"copied": copied, "skipped": skipped, "times": changed}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="results/NAME from an unpacked sweep.tgz")
    p.add_argument("dst", type=Path, help="the repository's results/NAME")
    p.add_argument("--all", action="store_true", help="also the runs not yet evaluated again (a warm next call)")
    args = p.parse_args(argv)
    out = merge(args.src, args.dst, args.all)
    for name in out["copied"]:
        print(f"copied {name}")
    for name in out["skipped"]:
        print(f"not finished, left out: {name}", file=sys.stderr)
    print(f"{len(out['copied'])} run(s) copied, {len(out['skipped'])} left out, {out['times']} unit time(s) updated")
    return out


if __name__ == "__main__":
    main()
